"""``mammocad preprocess``: breast crop, CLAHE, resize / mass-centred ROIs into the dataset's cache."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mammocad.cli.common import CONSOLE_ITEMS, console, user_errors

if TYPE_CHECKING:
    from mammocad.preprocess import PreprocessConfig


def load_preprocess_config(path: Path | None, overrides: dict[str, Any]) -> PreprocessConfig:
    """Config from a YAML/JSON file (its ``preprocess:`` section, or plain keys), then CLI overrides."""
    from mammocad.io import read_config_file
    from mammocad.preprocess import PreprocessConfig

    values: dict[str, Any] = {}
    if path is not None:
        loaded = read_config_file(path)
        values = dict(loaded.get("preprocess", loaded))
    values.update(overrides)
    return PreprocessConfig(**values)


def preprocess(
    dataset: Path = typer.Argument(..., help="Dataset directory (from `mammocad data import`)."),
    config: Path | None = typer.Option(None, "--config", help="YAML/JSON with a `preprocess:` section."),
    mode: str | None = typer.Option(None, help="full (whole breast) or roi (mass-centred crops)."),
    image_size: int | None = typer.Option(None, help="Output side in pixels (square)."),
    crop: bool | None = typer.Option(None, "--crop/--no-crop", help="Crop to the breast region."),
    clahe: bool | None = typer.Option(None, "--clahe/--no-clahe", help="Apply CLAHE."),
    clahe_clip_limit: float | None = typer.Option(None, help="CLAHE clip limit."),
    flip_to: str | None = typer.Option(None, help="left, right or none: side for every chest wall."),
    roi_min_size: int | None = typer.Option(None, help="Minimum ROI side before resizing."),
    output_bits: int | None = typer.Option(None, help="8 or 16."),
    workers: int = typer.Option(2, min=1, help="Worker processes."),
) -> None:
    """Preprocess DATASET into DATASET/cache/<config key>/ (reused on the next call)."""
    from mammocad.preprocess import preprocess_dataset

    with user_errors():
        overrides = {
            "mode": mode,
            "image_size": image_size,
            "crop_breast": crop,
            "clahe": clahe,
            "clahe_clip_limit": clahe_clip_limit,
            "roi_min_size": roi_min_size,
            "output_bits": output_bits,
        }
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if flip_to is not None:
            overrides["flip_to"] = None if flip_to.lower() == "none" else flip_to
        cfg = load_preprocess_config(config, overrides)
        columns = (TextColumn("preprocessing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("preprocess", total=None)
            result = preprocess_dataset(
                dataset,
                cfg,
                workers=workers,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        console.print(escape(result.to_text(limit=CONSOLE_ITEMS).rstrip()), highlight=False, soft_wrap=True)
        if len(result.skipped) > CONSOLE_ITEMS:
            console.print(f"full list of skipped items: {result.skipped_path}")
        console.print(f"[green]cache[/] {result.cache_dir}")
