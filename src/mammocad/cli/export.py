"""``mammocad export``: a run's model as ONNX (plus preprocessing metadata), checked against PyTorch."""

from __future__ import annotations

from pathlib import Path

import typer

from mammocad.cli.common import console, user_errors


def export(
    run: Path = typer.Argument(..., help="Run directory (from mammocad train)."),
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="Export to ONNX (the one format so far)."),
    out: Path | None = typer.Option(
        None, "-o", "--out", help="Output directory (default: RUN/export; never overwritten)."
    ),
    which: str | None = typer.Option(None, help="best or last weights (default: the weights the run ended with)."),
    # 20: the newest opset PyTorch's TorchScript-based exporter (the one used here) writes.
    opset: int = typer.Option(17, min=13, max=20, help="ONNX opset (13 to 20)."),
) -> None:
    """Export RUN to ONNX; `mammocad serve` and the dashboard then predict with ONNX Runtime."""
    from mammocad.serve.export import TOLERANCE, export_onnx

    with user_errors():
        if not onnx:
            raise typer.BadParameter("nothing to export: --onnx is the only format")
        with console.status("exporting to ONNX and checking it against PyTorch"):
            result = export_onnx(run, out_dir=out, which=which, opset=opset)
        console.print(
            f"[green]exported[/] {result.onnx_path.resolve()} · max |ONNX - PyTorch| logit "
            f"{result.max_abs_diff:.1e} (limit {TOLERANCE:.0e}) · metadata {result.meta_path.name}"
        )
