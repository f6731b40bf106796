"""The ``training`` stage: Lightning loop, imbalance handling, run directories, inference."""
