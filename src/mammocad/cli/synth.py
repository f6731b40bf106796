"""``mammocad synth``: write a synthetic (phantom) dataset in any importable format."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer
from rich.table import Table

from mammocad.cli.common import console, print_table, user_errors
from mammocad.defaults import SYNTH_FORMATS as FORMATS

# What the class counts become in formats that label differently.
_LABEL_NOTES = {
    "kaumds": "labels are BI-RADS: normal -> 1, benign -> 3 (every fourth benign patient 2), malignant -> 4 or 5",
    "ddsm-tfrecord": "patches; label_normal 0/1 (default) or label 0..4 (import with --label-field label)",
}


def _import_options(fmt: str) -> list[str]:
    """Importer options the written layout needs (kaumds: this generator writes some BI-RADS 2 images)."""
    from mammocad.data.synth.writers import FOLDERS_PATIENT_REGEX

    return {"folders": ["--patient-regex", FOLDERS_PATIENT_REGEX], "kaumds": ["--include-birads2"]}.get(fmt, [])


def synth(
    out: Path = typer.Option(..., "-o", "--out", help="New directory to write the dataset into (never overwritten)."),
    fmt: str = typer.Option("csv", "--format", help="Source format to write: " + ", ".join(FORMATS)),
    normal: int = typer.Option(20, min=0, help="Number of normal images."),
    benign: int = typer.Option(20, min=0, help="Number of benign images."),
    malignant: int = typer.Option(20, min=0, help="Number of malignant images."),
    seed: int = typer.Option(0, help="Seed: the same seed writes the same dataset."),
    height: int = typer.Option(512, min=64, max=8192, help="Image height in pixels."),
    width: int = typer.Option(
        384, min=64, max=8192, help="Image width in pixels (mias writes square height x height images)."
    ),
) -> None:
    """Write SYNTHETIC phantom mammograms (not patient data) in a real dataset format."""
    from mammocad.data.synth import plan_images, write_synthetic_dataset, written_counts

    with user_errors():
        if fmt not in FORMATS:
            raise typer.BadParameter(
                f"unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}", param_hint="--format"
            )
        requested = {"normal": normal, "benign": benign, "malignant": malignant}
        counts = written_counts(fmt, requested)
        try:
            path = write_synthetic_dataset(out, fmt, n_per_class=requested, seed=seed, height=height, width=width)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        views = ("MLO",) if fmt == "mias" else ("CC", "MLO")
        patients = len({item.patient for item in plan_images(counts, seed, views)})

        table = Table(title=f"{fmt} dataset", caption="SYNTHETIC phantoms, not patient data")
        table.add_column("class")
        table.add_column("images", justify="right")
        for name, count in counts.items():
            table.add_row(name, str(count))
        table.add_row("[bold]total[/]", f"[bold]{sum(counts.values())}[/]")
        print_table(table)
        size = f"{height}x{height}" if fmt == "mias" else f"{height}x{width}"
        console.print(f"patients: {patients}   image size: {size}   seed: {seed}")
        if counts["normal"] != normal:
            console.print(
                f"[yellow]note:[/] {fmt} has no normal images; {normal} requested normal image(s) not written"
            )
        if fmt in _LABEL_NOTES:
            console.print(f"[yellow]note:[/] {_LABEL_NOTES[fmt]}")
        console.print(f"[green]wrote[/] {out}")
        command = ["mammocad", "data", "import", fmt, str(path), "-o", f"{out}-dataset", *_import_options(fmt)]
        console.print("import it with:")
        console.print("  " + shlex.join(command), markup=False, soft_wrap=True)
