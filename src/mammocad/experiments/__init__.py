"""The ``experiments`` stage: cross-validation, hyperparameter search and ablation studies.

It orchestrates the earlier stages (training runs, their evaluation) and adds the statistics that
compare repeated runs; nothing earlier imports it.
"""
