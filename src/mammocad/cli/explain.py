"""``mammocad explain``: heatmaps, activation maps and Lesion/Background interpretation of a run."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from mammocad.cli.common import console, stepper, user_errors
from mammocad.cli.train import _parse_box


def explain(
    run: Path = typer.Argument(..., help="Run directory (from mammocad train)."),
    images: list[Path] | None = typer.Argument(None, help="Image files (DICOM, PNG, JPEG, PGM, TIFF)."),
    method: str = typer.Option(
        "gradcam",
        "--method",
        "-m",
        help="gradcam, gradcam++, hirescam, eigencam, layercam, activation, lesion-background.",
    ),
    target: str | None = typer.Option(None, help="Class (name or index) to explain; default: the predicted class."),
    layer: str | None = typer.Option(
        None, help="Layer (a layer group such as features.denseblock4, or -1 for the last); default: the last group."
    ),
    box: list[str] | None = typer.Option(
        None, help="Lesion box x0,y0,x1,y1 (original pixels), once per image in order; ROI-trained runs need it."
    ),
    split: str | None = typer.Option(
        None, help="Explain this split of the run's dataset (train/val/test/blind/all) instead of image files."
    ),
    data: Path | None = typer.Option(None, "--data", help="Dataset for --split (default: the run's own)."),
    limit: int | None = typer.Option(None, min=1, help="With --split: the first N samples only."),
    compare: list[Path] | None = typer.Option(
        None, help="With --method activation and --split: more runs whose activation maps go beside RUN's."
    ),
    opacity: float = typer.Option(0.45, min=0.0, max=1.0, help="Heatmap opacity in the overlays."),
    out: Path | None = typer.Option(None, "-o", "--out", help="Output directory (default: RUN/explain/<method>)."),
) -> None:
    """Grad-CAM family heatmaps at the original geometry, activation maps, or Lesion/Background cells.

    Exit status: 0 every input explained, 1 some skipped (the rest are written), 2 a usage error."""
    from mammocad.explain.layout import ActivationComparisonDir
    from mammocad.explain.run import compare_activations, explain_images, explain_split

    with user_errors():
        if bool(images) == bool(split):
            raise typer.BadParameter("give image files or --split, not both or neither")
        if compare:
            if method != "activation" or not split:
                raise typer.BadParameter("--compare needs --method activation and --split")
            folder, document = compare_activations(
                [run, *compare], split, dataset=data, limit=limit or 8, layer=layer, out_dir=out
            )
            for name, value in document["mean_distance"].items():
                shown = "no masks" if value is None else f"{value:.3f}"
                console.print(f"{name}: mean d(mask, ROI activation) = {shown}")
            console.print(f"[green]done[/] · {ActivationComparisonDir(folder.resolve()).figure_path}")
            return
        with console.status("explain") as status:
            progress = stepper(status, "explain")
            if split:
                result = explain_split(
                    run, split, dataset=data, limit=limit, method=method, target=target, layer=layer,
                    out_dir=out, opacity=opacity, progress=progress,
                )  # fmt: skip
            else:
                boxes = [_parse_box(b) for b in box] if box else None
                result = explain_images(
                    run, list(images or []), method=method, target=target, layer=layer, boxes=boxes,
                    out_dir=out, opacity=opacity, progress=progress,
                )  # fmt: skip
        done = len(result.items) - len(result.failed)
        for item in result.failed:
            line = f"{item['source']}: {item['reason']}"
            console.print(f"[yellow]skipped[/] {escape(line)}", soft_wrap=True)
        console.print(f"[green]{done} explained[/] · report: [bold]{result.report.resolve()}[/]")
        if result.failed:
            raise typer.Exit(1)  # exit 1 when any input failed (the others' heatmaps and report are written)
