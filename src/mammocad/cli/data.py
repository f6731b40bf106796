"""``mammocad data ...``: import sources into a manifest, split it, describe it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mammocad.cli.common import (
    CONSOLE_ITEMS,
    console,
    max_decode_mb_option,
    parse_assignments,
    print_table,
    user_errors,
)
from mammocad.data.importers import IMPORTERS
from mammocad.defaults import DEFAULT_BLIND_SIZE, DEFAULT_MAX_PIXELS
from mammocad.errors import MammocadError

if TYPE_CHECKING:
    from mammocad.io import Leftover

app = typer.Typer(help="Import datasets into one manifest table, split them, describe them.", no_args_is_help=True)

FORMATS_HELP = "one of: " + ", ".join(IMPORTERS)


@app.command("import")
def import_command(
    fmt: str = typer.Argument(..., metavar="FORMAT", help=FORMATS_HELP),
    source: Path = typer.Argument(..., help="The dataset as downloaded (folder or file, per format)."),
    out: Path = typer.Option(..., "-o", "--out", help="New dataset directory to create (never overwritten)."),
    patient_regex: str | None = typer.Option(None, help="folders: regex on file names; group 1 = patient id."),
    include_birads2: bool = typer.Option(False, help="kaumds: keep BI-RADS 2 images (excluded by default)."),
    abnormality: str | None = typer.Option(None, help="cbis-ddsm: mass, calc or both."),
    label_field: str | None = typer.Option(None, help="ddsm-tfrecord: label_normal (default) or label."),
    option: list[str] | None = typer.Option(None, "--set", help="Any other importer option, as key=value."),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, min=1, help="Refuse images with more pixels than this."),
    keep_duplicates: bool = typer.Option(False, help="Keep files whose content duplicates another file."),
    workers: int = typer.Option(4, min=1, help="Threads that check the image files."),
    max_decode_mb: float | None = max_decode_mb_option(
        "Refuse images whose decoding would need more memory (MiB), from their header"
    ),
) -> None:
    """Import a dataset in FORMAT from SOURCE into a new dataset directory with one manifest."""
    from mammocad.data.images import decode_budget_override
    from mammocad.data.importers import import_dataset

    with user_errors():
        options = parse_assignments(option)
        named = {
            "patient_regex": patient_regex,
            "include_birads2": include_birads2 or None,
            "abnormality": abnormality,
            "label_field": label_field,
        }
        options.update({k: v for k, v in named.items() if v is not None})
        with decode_budget_override(max_decode_mb), _progress() as progress:
            task = progress.add_task("checking images", total=None)
            summary = import_dataset(
                fmt,
                source,
                out,
                max_pixels=max_pixels,
                keep_duplicates=keep_duplicates,
                workers=workers,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
                **options,
            )
        # Escape: file names may contain [brackets] that rich would read as markup.
        console.print(escape(summary.to_text(limit=CONSOLE_ITEMS).rstrip()), highlight=False, soft_wrap=True)
        if len(summary.skipped) > CONSOLE_ITEMS:
            console.print(f"full list of skipped items: {out}/import_summary.txt")
        console.print(f"[green]wrote[/] {out}/manifest.parquet")


@app.command("split")
def split_command(
    dataset: Path = typer.Argument(..., help="Dataset directory (from `mammocad data import`)."),
    test_size: float = typer.Option(0.2, "--test", help="Fraction of images for the test split."),
    val_size: float = typer.Option(0.2, "--val", help="Fraction of the remaining images for validation."),
    blind: bool = typer.Option(False, "--blind", help=f"Hold out a blind-test set ({DEFAULT_BLIND_SIZE} images)."),
    blind_size: int | None = typer.Option(None, min=0, help="Size of the blind-test holdout (implies --blind)."),
    folds: int = typer.Option(0, min=0, help="Also assign k patient-grouped stratified folds (0 = none, else >= 2)."),
    seed: int = typer.Option(0, help="Random seed."),
    name: str = typer.Option("default", help="Name of the split (splits/<name>.parquet)."),
) -> None:
    """Split a dataset by patient, stratified by label: train/val/test [+ blind] [+ k folds]."""
    from mammocad.data.manifest import read_classes
    from mammocad.data.split import SplitSpec, split_dataset

    with user_errors():
        size = blind_size if blind_size is not None else (DEFAULT_BLIND_SIZE if blind else 0)
        spec = SplitSpec(test_size=test_size, val_size=val_size, blind_size=size, folds=folds, seed=seed)
        path = split_dataset(dataset, spec, name=name)
        summary = json.loads(path.with_suffix(".json").read_text())
        table = Table(title=f"split {name!r} (no patient on two sides)")
        classes = read_classes(dataset)
        table.add_column("split")
        table.add_column("patients", justify="right")
        for cls in classes:
            table.add_column(cls, justify="right")
        for split, counts in summary["images"].items():
            table.add_row(split, str(summary["patients"][split]), *(str(counts.get(c, 0)) for c in classes))
        print_table(table)
        console.print(f"[green]wrote[/] {path}")


@app.command("info")
def info_command(dataset: Path = typer.Argument(..., help="Dataset directory.")) -> None:
    """Describe a dataset: classes, counts, patients, sources, lesions, splits, leftovers of killed commands."""
    from mammocad.data.manifest import read_classes, read_manifest

    with user_errors():
        try:
            frame = read_manifest(dataset)
        except MammocadError:
            _print_leftovers(dataset)  # a killed import leaves no dataset, only its staging folder
            raise
        classes = read_classes(dataset)
        console.print(f"[bold]{dataset}[/]: {len(frame)} images, {frame['patient_id'].nunique()} patients")
        counts = frame["label_name"].value_counts()
        console.print("classes: " + ", ".join(f"{c}={int(counts.get(c, 0))}" for c in classes))
        console.print("sources: " + ", ".join(f"{k}={v}" for k, v in frame["source"].value_counts().items()))
        console.print(
            f"lesions: {int(frame['n_lesions'].sum())}, images with masks: {int(frame['mask_path'].notna().sum())}"
        )
        splits = sorted(p.stem for p in (Path(dataset) / "splits").glob("*.parquet"))
        console.print("splits: " + (", ".join(splits) if splits else "none (run `mammocad data split`)"))
        _print_leftovers(dataset)


def _print_leftovers(dataset: Path) -> None:
    """What killed commands left: staging folders beside the dataset, temporary files inside it."""
    from mammocad.io import find_leftovers

    dataset = Path(dataset).expanduser().resolve()
    beside = find_leftovers(dataset.parent, recursive=False, kinds=("partial",))
    inside = find_leftovers(dataset) if dataset.is_dir() else []
    found = [(item, dataset.parent) for item in beside] + [(item, dataset) for item in inside]
    if not found:
        return
    stale = sum(item.stale for item, _ in found)
    console.print(f"[yellow]leftovers of interrupted commands[/]: {len(found)} ({stale} whose process is gone)")
    for item, root in found[:CONSOLE_ITEMS]:
        line = item.describe(root)
        if item.stale:
            line += f": {_cleaned_by(item, dataset)}"
        console.print(f"  {escape(line)}", highlight=False, soft_wrap=True)
    if len(found) > CONSOLE_ITEMS:
        console.print(f"  ... and {len(found) - CONSOLE_ITEMS} more")


def _cleaned_by(item: Leftover, dataset: Path) -> str:
    if item.path.parent == dataset.parent:
        return "removed by the next `mammocad data import` into this folder"
    from mammocad.preprocess.cache_dir import CACHE_DIR

    if (dataset / CACHE_DIR) in item.path.parents:
        return "removed by the next `mammocad preprocess` (or training) with that cache's config"
    return "safe to delete"


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
