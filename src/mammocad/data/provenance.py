"""Where a dataset came from, and whether it is synthetic: light (json only, no pandas at import).

``mammocad synth`` (and the demo, which calls it) writes :data:`SYNTHETIC_MARKER` at the top of every
dataset it writes; ``mammocad data import`` copies the fact into the imported dataset's
``classes.json`` (``"synthetic": true``). :func:`synthetic_evidence` reads it back, also for datasets
imported before the marker existed (it then looks at the import source, when it is still there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mammocad.io import read_json_object

#: File written at the top of every synthetic source folder by ``mammocad synth``.
SYNTHETIC_MARKER = "SYNTHETIC.json"
#: Text the synthetic writers put into the source files they write (MIAS ``Info.txt`` header).
_SYNTHETIC_TEXT = "SYNTHETIC PHANTOM"


def marker_content(fmt: str, seed: int) -> dict[str, Any]:
    """What :data:`SYNTHETIC_MARKER` holds."""
    return {
        "synthetic": True,
        "generator": "mammocad synth",
        "format": fmt,
        "seed": seed,
        "note": "SYNTHETIC phantom images, not patient data; models trained on them say nothing about real mammograms.",
    }


def source_marker(source: str | Path) -> Path | None:
    """The synthetic marker of an import source (a folder or a file inside the synthetic folder), if any."""
    path = Path(source)
    for folder in [path, *list(path.parents)[:2]]:
        candidate = folder / SYNTHETIC_MARKER
        try:
            if candidate.is_file():
                return candidate
        except OSError:
            continue
    return None


def synthetic_evidence(dataset_dir: str | Path) -> str | None:
    """Why ``dataset_dir`` counts as synthetic phantom data (a short phrase), or None when nothing says so."""
    dataset_dir = Path(dataset_dir)
    if read_json_object(dataset_dir / "classes.json").get("synthetic") is True:
        return "classes.json marks the dataset synthetic (imported from `mammocad synth` output)"
    if (dataset_dir / SYNTHETIC_MARKER).is_file():
        return f"{SYNTHETIC_MARKER} in the dataset folder"
    summary = read_json_object(dataset_dir / "import_summary.json")
    source = summary.get("source")
    if summary.get("synthetic") is True:
        return "import_summary.json marks the dataset synthetic"
    if isinstance(source, str) and source:
        marker = source_marker(source)
        if marker is not None:
            return f"its import source carries {marker.name}"
        info = Path(source) / "Info.txt"
        try:
            if info.is_file() and _SYNTHETIC_TEXT in info.read_text(errors="replace")[:2000]:
                return "its import source's Info.txt says SYNTHETIC PHANTOM IMAGES"
        except OSError:
            pass
    return None


def dataset_provenance(dataset_dir: str | Path) -> dict[str, Any]:
    """Name, source format(s), synthetic flag and import counts of an imported dataset (no manifest read)."""
    dataset_dir = Path(dataset_dir)
    classes = read_json_object(dataset_dir / "classes.json")
    summary = read_json_object(dataset_dir / "import_summary.json")
    evidence = synthetic_evidence(dataset_dir)
    fmt = classes.get("source") or summary.get("format")
    return {
        "dataset": dataset_dir.name,
        "path": str(dataset_dir.resolve()) if dataset_dir.exists() else str(dataset_dir),
        "source": [fmt] if isinstance(fmt, str) else list(fmt or []),
        "import_source": summary.get("source"),
        "synthetic": evidence is not None,
        "synthetic_evidence": evidence,
        "imported_images": summary.get("n_images"),
        "imported_patients": summary.get("n_patients"),
    }


__all__ = ["SYNTHETIC_MARKER", "dataset_provenance", "marker_content", "source_marker", "synthetic_evidence"]
