"""``mammocad export``: a run's model as ONNX (plus preprocessing metadata), checked against PyTorch;
optionally an int8 variant, checked for parity against fp32 on the run's test split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from mammocad.cli.common import console, user_errors
from mammocad.extras import require


def export(
    run: Path = typer.Argument(..., help="Run directory (from mammocad train)."),
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="Export to ONNX (the one format so far)."),
    int8: bool = typer.Option(
        False,
        "--int8",
        help="Also write model.int8.onnx: static int8 quantisation calibrated on the run's validation images, "
        "checked against fp32 on its test split (needs the run's dataset and preprocessing cache). Added to an "
        "existing current export when there is one.",
    ),
    calibration_images: int = typer.Option(
        64, min=1, max=10_000, help="Most validation images that calibrate the int8 variant."
    ),
    out: Path | None = typer.Option(
        None, "-o", "--out", help="Output directory (default: RUN/export; never overwritten)."
    ),
    which: str | None = typer.Option(None, help="best or last weights (default: the weights the run ended with)."),
    # 20: the newest opset PyTorch's TorchScript-based exporter (the one used here) writes.
    opset: int = typer.Option(17, min=13, max=20, help="ONNX opset (13 to 20)."),
) -> None:
    """Export RUN to ONNX; `mammocad serve` and the dashboard then predict with ONNX Runtime.

    With --int8 an int8 variant is written too, with its parity check (macro AUC change, probability
    change, top-class agreement) in model.json; `mammocad serve RUN --onnx-variant int8` serves it
    only when the check passed.
    """
    with user_errors():
        require("serve", "onnx", "onnxruntime", command="mammocad export")
    from mammocad.serve.export import TOLERANCE, add_variants, default_export_dir, export_onnx

    with user_errors():
        if not onnx:
            raise typer.BadParameter("nothing to export: --onnx is the only format")
        variants = ("int8",) if int8 else ()
        folder = out if out is not None else default_export_dir(run)
        added = bool(variants) and folder.exists()
        with console.status("exporting to ONNX and checking it against PyTorch") as status:
            if added:
                # Only the variant is new: the fp32 export (which must be current) is left as it is.
                result = add_variants(run, variants, out, which, calibration_images, progress=status.update)
            else:
                result = export_onnx(
                    run,
                    out_dir=out,
                    which=which,
                    opset=opset,
                    variants=variants,
                    calibration_images=calibration_images,
                    progress=status.update,
                )
        if added:
            console.print(f"[green]current export[/] {result.onnx_path.resolve()} · added {', '.join(variants)}")
        else:
            console.print(
                f"[green]exported[/] {result.onnx_path.resolve()} · max |ONNX - PyTorch| logit "
                f"{result.max_abs_diff:.1e} (limit {TOLERANCE:.0e}) · metadata {result.meta_path.name}"
            )
        for name, entry in result.variants.items():
            console.print(_variant_line(name, entry))


def _variant_line(name: str, entry: dict[str, Any]) -> str:
    """One line per variant: its file and its parity numbers, and whether it may be served."""
    check = entry["parity"]
    auc = "AUC undefined" if check["auc_change"] is None else f"ΔAUC {check['auc_change']:+.4f}"
    verdict = (
        "[green]fit to serve[/]"
        if entry["fit"]
        else "[bold red]NOT fit: never served[/] (" + "; ".join(check.get("reasons", [])) + ")"
    )
    return (
        f"{name}: {entry['file']} · parity vs fp32 on {check['n_images']} {check['split']} images: {auc}, "
        f"top class agrees {check['argmax_agreement']:.1%}, max |Δprob| {check['max_abs_prob_diff']:.3f} · {verdict}"
    )
