"""``mammocad train`` and ``mammocad predict``."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.markup import escape

from mammocad.cli.common import console, parse_assignments, user_errors
from mammocad.errors import ConfigError
from mammocad.parse import parse_box, parse_int


def train(
    config: Path | None = typer.Option(None, "--config", help="Run config (YAML)."),
    option: list[str] | None = typer.Option(None, "--set", help="Override a config field: section.field=value."),
    dataset: Path | None = typer.Option(None, help="Shortcut for --set data.dataset=..."),
    model: str | None = typer.Option(None, help="Shortcut for --set model.name=..."),
    epochs: int | None = typer.Option(None, help="Shortcut for --set train.epochs=..."),
    devices: str | None = typer.Option(None, help="Lightning devices (e.g. 4, or auto)."),
    strategy: str | None = typer.Option(None, help="Lightning strategy (e.g. ddp)."),
    resume: Path | None = typer.Option(
        None,
        help="Continue an interrupted run directory from its last checkpoint (a run killed before its first "
        "checkpoint starts again from epoch 0); lists and removes what the killed run left.",
    ),
    run_dir: Path | None = typer.Option(None, help="The new run directory (default: runs_dir/<name>-<time>)."),
) -> None:
    """Train a classifier; every run gets a new directory under output.runs_dir."""
    from mammocad.training.run import train_from_file

    with user_errors():
        overrides = {key.replace("__", "."): value for key, value in parse_assignments(option).items()}
        shortcuts = {"data.dataset": dataset, "model.name": model, "train.epochs": epochs, "train.strategy": strategy}
        if devices is not None:
            count = parse_int(devices)  # ASCII digits only: "²".isdigit() is True but int("²") raises
            shortcuts["train.devices"] = count if count is not None else devices
        overrides.update({k: (str(v) if isinstance(v, Path) else v) for k, v in shortcuts.items() if v is not None})
        if config is None and resume is None and "data.dataset" not in overrides:
            raise typer.BadParameter("give --config run.yaml, --dataset DIR or --resume RUN_DIR")
        # A resume says what it found: an interrupted run, a killed run's temporary files, a restart at epoch 0.
        result = train_from_file(config, overrides, resume, run_dir, notify=_notice)
        if int(os.environ.get("LOCAL_RANK", "0")) > 0:
            return  # a DDP worker: rank 0 reports
        best = result.history.loc[result.history["epoch"] == result.best_epoch].iloc[0]
        console.print(
            f"best epoch {result.best_epoch}: val_loss={best['val_loss']:.4f} val_acc={best['val_acc']:.3f} "
            f"val_f1_macro={best['val_f1_macro']:.3f} val_auc_macro={best['val_auc_macro']:.3f}"
        )
        console.print(f"[green]run[/] {result.run_dir}")


def _notice(message: str) -> None:
    console.print(f"[yellow]resume:[/] {escape(message)}", highlight=False, soft_wrap=True)


def predict(
    run: Path = typer.Argument(..., help="Run directory."),
    images: list[Path] = typer.Argument(..., help="Image files (DICOM, PNG, JPEG, PGM, TIFF)."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Write .csv or .json (default: print)."),
    which: str | None = typer.Option(
        None, help="best or last weights (default: those the run ended with, normally best)."
    ),
    box: list[str] | None = typer.Option(
        None, help="Lesion box x0,y0,x1,y1 (original pixels), once per image in order; ROI-trained runs need it."
    ),
) -> None:
    """Per-image class probabilities from a trained run."""
    from mammocad.io import atomic_write_text
    from mammocad.training.predict import load_run, predict_paths

    with user_errors():
        boxes = [_parse_box(b) for b in box] if box else None  # before loading the model: a typo fails fast
        loaded = load_run(run, which)
        table = predict_paths(loaded, list(images), lesion_boxes=boxes)
        if output is None:
            console.print(table.to_string(index=False))
        elif output.suffix == ".json":
            atomic_write_text(output, table.to_json(orient="records", indent=2))
        else:
            atomic_write_text(output, table.to_csv(index=False))
        failed = table["error"].notna().sum()
        if failed:
            console.print(f"[yellow]{failed} image(s) could not be read[/]; see the error column")
        if output is not None:
            console.print(f"[green]wrote[/] {output}")


def _parse_box(text: str) -> tuple[int, int, int, int]:
    try:
        return parse_box(text, "--box")
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
