"""Explain stage: class activation maps (pytorch-grad-cam), activation maps per layer group, and the
Lesion/Background interpretation of report D. Imports models, preprocess and training (to load a run);
nothing from serve or dashboard."""
