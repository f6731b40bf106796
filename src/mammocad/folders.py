"""The base of every output-folder layout: a folder path whose file names are spelled once.

Each folder a command writes (a run, an evaluation, a CV or ablation, a tune study, a preprocessing
cache, an explanation, a reader study) is a small class deriving from :class:`Folder`: its file names
are class constants, its properties turn them into paths, and its methods read and write them. What
every layout shares lives here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mammocad.io import atomic_write_bytes


@dataclass(frozen=True)
class Folder:
    """A folder at ``path`` (not checked: the subclass says what makes it valid).

    Immutable, hashable and comparable by class and path; usable wherever a path is (``os.fspath``).
    """

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name


class ReportFolder(Folder):
    """A folder with an HTML report and its figures (an evaluation, a comparison, a CV, a study...)."""

    REPORT = "report.html"
    FIGURES = "figures"

    @property
    def report_path(self) -> Path:
        return self.path / self.REPORT

    @property
    def figures_dir(self) -> Path:
        return self.path / self.FIGURES

    def figure_path(self, name: str) -> Path:
        """``figures/<name>.png``."""
        return self.figures_dir / f"{name}.png"

    def write_figure(self, name: str, png: bytes) -> Path:
        return atomic_write_bytes(self.figure_path(name), png)


__all__ = ["Folder", "ReportFolder"]
