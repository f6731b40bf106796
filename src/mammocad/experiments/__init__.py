"""The ``experiments`` stage: cross-validation, hyperparameter search and ablation studies.

It orchestrates the earlier stages (training runs, their evaluation) and adds the statistics that
compare repeated runs; nothing earlier imports it.

Modules: ``cv`` (folds trained, resumed, spread over workers) and ``cv_summary`` (mean ± std,
pooled out-of-fold predictions, report); ``compare_cv``; ``ablate`` (running a study),
``ablation_variants`` (toggles, ablations file) and ``ablation_summary`` (table, tests, report);
``work_queue`` (the shared queue of ``cv``/``ablate`` workers); ``layout`` (the CV, ablation and
comparison folders' files); ``tune`` and its helpers; ``figures``.
"""
