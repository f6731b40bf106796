"""``mammocad train`` and ``mammocad predict``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.markup import escape

from mammocad.cli.common import console, error_console, parse_assignments, user_errors
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
        if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) > 0:
            return  # a DDP worker (RANK: torchrun's global rank, over every machine): rank 0 reports
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
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Write .csv or .json (default: print; CSV when stdout is not a terminal)."
    ),
    which: str | None = typer.Option(
        None, help="best or last weights (default: those the run ended with, normally best)."
    ),
    box: list[str] | None = typer.Option(
        None, help="Lesion box x0,y0,x1,y1 (original pixels), once per image in order; ROI-trained runs need it."
    ),
) -> None:
    """Per-image calibrated class probabilities from a trained run.

    Each row's ``label`` is the top class, or ``indeterminate`` when the top probability or its margin
    over the runner-up is below the run's thresholds (calibration.json); images with no breast, or
    that are not mammograms, are refused (``refused``, reason in ``error``). A header names what the
    model is fit for; rows of a model trained on synthetic data carry a ``caveat``.

    Exit status: 0 every image was read (refused ones included), 1 some could not be read (the other
    rows are still written), 2 a usage error (bad option, no such run)."""
    from mammocad.io import atomic_write_text
    from mammocad.training.model_card import model_card
    from mammocad.training.predict import load_run, predict_paths

    # No -o and stdout not a terminal (a pipe, a file): the table goes to stdout as CSV, every other line to
    # stderr, so that `mammocad predict RUN *.png > out.csv` and `| csvlook` get the table alone.
    as_csv = output is None and not sys.stdout.isatty()
    notes = error_console if as_csv else console
    with user_errors():
        boxes = [_parse_box(b) for b in box] if box else None  # before loading the model: a typo fails fast
        loaded = load_run(run, which)
        card = model_card(run)
        serious = any(not w.startswith("Research software") for w in card["warnings"])
        colour = "bold red" if serious else "bold"
        notes.print(f"[{colour}]{escape(card['run']['name'])}: {escape(card['headline'])}[/]", soft_wrap=True)
        for warning in card["warnings"]:
            notes.print(f"  [yellow]warning:[/] {escape(warning)}", soft_wrap=True)
        table = predict_paths(loaded, list(images), lesion_boxes=boxes)
        if as_csv:
            sys.stdout.write(table.to_csv(index=False))
            sys.stdout.flush()
        elif output is None:
            # soft_wrap: long paths run past the edge rather than breaking every row in two.
            console.print(table.to_string(index=False), markup=False, highlight=False, soft_wrap=True)
        elif output.suffix == ".json":
            atomic_write_text(output, table.to_json(orient="records", indent=2))
        else:
            atomic_write_text(output, table.to_csv(index=False))
        refused = int(table["refused"].fillna(False).astype(bool).sum())
        failed = int(table["error"].notna().sum()) - refused
        if refused:
            notes.print(
                f"[yellow]{refused} image(s) refused[/] (no breast found / not a mammogram); see the error column"
            )
        if failed:
            notes.print(f"[yellow]{failed} image(s) could not be read[/]; see the error column")
        undecided = int((table["label"] == "indeterminate").sum())
        if undecided:
            notes.print(f"[yellow]{undecided} prediction(s) indeterminate[/]: no class is clearly more probable")
        if output is not None:
            notes.print(f"[green]wrote[/] {output}")
    if failed:
        raise typer.Exit(1)  # the rows of the images that were read are written; scripts see the failure


def calibrate(
    run: Path = typer.Argument(..., help="Run directory."),
    min_probability: float | None = typer.Option(
        None, min=0.0, max=1.0, help="Top probability below which a prediction is 'indeterminate' (default: kept)."
    ),
    min_margin: float | None = typer.Option(
        None, min=0.0, max=1.0, help="Margin between the top two below which it is 'indeterminate' (default: kept)."
    ),
) -> None:
    """(Re)fit a run's temperature scaling on its validation split; writes RUN/calibration.json."""
    from mammocad.training.recalibration import calibrate_run
    from mammocad.training.run_dir import RunDir

    with user_errors():
        thresholds = {
            k: v for k, v in (("min_probability", min_probability), ("min_margin", min_margin)) if v is not None
        }
        document = calibrate_run(run, thresholds)
        console.print(f"temperature: {document['temperature']:.4f} (fitted on {document['n_val']} val images)")
        if "nll_before" in document:
            console.print(
                f"val NLL {document['nll_before']:.4f} -> {document['nll_after']:.4f}, "
                f"ECE {document['ece_before']:.4f} -> {document['ece_after']:.4f}"
            )
        marks = document["indeterminate"]
        console.print(
            f"indeterminate below top probability {marks['min_probability']:.2f} or margin {marks['min_margin']:.2f}"
        )
        if document.get("note"):
            console.print(f"[yellow]note:[/] {escape(document['note'])}")
        console.print(f"[green]wrote[/] {RunDir(run).calibration_path}")


def _parse_box(text: str) -> tuple[int, int, int, int]:
    try:
        return parse_box(text, "--box")
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
