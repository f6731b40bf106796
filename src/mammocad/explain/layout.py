"""The explain stage's output folders: every file name they hold, spelled once.

``mammocad explain`` writes an :class:`ExplainDir` (default ``RUN/explain/<method>``);
``mammocad explain --compare`` writes an :class:`ActivationComparisonDir`
(default ``RUN/explain/activation-comparison``). Per-input files are named after the input and the method
(``<name>.<method>.png``...; see :mod:`mammocad.explain.run`).
"""

from __future__ import annotations

from pathlib import Path

from mammocad.folders import Folder, ReportFolder


class ExplainDir(ReportFolder):
    """One ``mammocad explain`` output folder."""

    #: Below the run: ``RUN/explain/<method>``.
    ROOT = "explain"
    EXPLANATIONS = "explanations.json"
    COLORBAR = "colorbar.png"

    @classmethod
    def default(cls, run_dir: str | Path, method: str) -> Path:
        """Where a run's ``method`` explanations go unless told (made unique by the caller)."""
        return Path(run_dir) / cls.ROOT / method

    @property
    def explanations_path(self) -> Path:
        return self.path / self.EXPLANATIONS

    @property
    def colorbar_path(self) -> Path:
        return self.path / self.COLORBAR


class ActivationComparisonDir(Folder):
    """One ``mammocad explain --compare`` output folder: the side-by-side figure and its distances."""

    NAME = "activation-comparison"
    FIGURE = f"{NAME}.png"
    DOCUMENT = f"{NAME}.json"

    @classmethod
    def default(cls, run_dir: str | Path) -> Path:
        """Where a comparison led by ``run_dir`` goes unless told (made unique by the caller)."""
        return Path(run_dir) / ExplainDir.ROOT / cls.NAME

    @property
    def figure_path(self) -> Path:
        return self.path / self.FIGURE

    @property
    def document_path(self) -> Path:
        return self.path / self.DOCUMENT
