"""``mammocad synth``: write a synthetic (phantom) dataset in any importable format."""

from __future__ import annotations

from pathlib import Path

import typer

from mammocad.cli.common import console, user_errors
from mammocad.data.synth import FORMATS, write_synthetic_dataset


def synth(
    out: Path = typer.Option(..., "-o", "--out", help="New directory to write the dataset into."),
    fmt: str = typer.Option("csv", "--format", help="Source format to write: " + ", ".join(FORMATS)),
    normal: int = typer.Option(20, min=0, help="Number of normal images."),
    benign: int = typer.Option(20, min=0, help="Number of benign images."),
    malignant: int = typer.Option(20, min=0, help="Number of malignant images."),
    seed: int = typer.Option(0, help="Seed: the same seed writes the same dataset."),
    height: int = typer.Option(512, min=64, help="Image height in pixels."),
    width: int = typer.Option(384, min=64, help="Image width in pixels (mias writes square images)."),
) -> None:
    """Write SYNTHETIC phantom mammograms (not patient data) in a real dataset format."""
    with user_errors():
        if fmt not in FORMATS:
            raise typer.BadParameter(
                f"unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}", param_hint="--format"
            )
        counts = {"normal": normal, "benign": benign, "malignant": malignant}
        path = write_synthetic_dataset(out, fmt, n_per_class=counts, seed=seed, height=height, width=width)
        console.print(f"[green]wrote[/] synthetic {fmt} dataset ({sum(counts.values())} images requested) to {out}")
        console.print(f"import it with: mammocad data import {fmt} {path} -o <dataset_dir>")
