"""`bench train` runs the Keras reference in the same invocation, alternating the order, and reports
medians, spread, machine load and ratios; without Keras it says the ratios are unavailable."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mammocad.benchmarks import training as bench
from mammocad.cli.main import app

runner = CliRunner()
QUICK = ["--warmup", "1", "--min-steps", "2", "--min-seconds", "0", "--min-infer-seconds", "0.2", "--in-chans", "1"]


def _fake_keras(tmp_path: Path) -> Path:
    """A stand-in for keras_bench.py: logs its turn and prints the reference script's JSON fields."""
    script = tmp_path / "keras_bench.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json, sys, time
            args = sys.argv[1:]
            bf16 = "--bf16" in args
            with open({str(tmp_path / "order.log")!r}, "a") as log:
                log.write("keras " + " ".join(args) + "\\n")
            print("some TensorFlow chatter")
            print(json.dumps({{"framework": "keras" + ("_bf16" if bf16 else ""), "arch": args[1],
                "train_img_per_s": 8.0 if bf16 else 4.0, "infer_b32_img_per_s": 10.0,
                "x_tffunc_infer_b32_img_per_s": 20.0 if bf16 else 16.0, "infer_b1_ms_p50": 50.0,
                "other_cpu_share": 0.01}}))
            """
        )
    )
    return script


def test_side_by_side_alternates_and_reports_ratios(tmp_path, monkeypatch):
    script = _fake_keras(tmp_path)
    order: list[str] = []
    doc = bench.side_by_side(
        ["baseline_cnn"],
        repetitions=2,
        keras=bench.KerasReference(Path(sys.executable), script),
        in_chans=1,
        mammocad_options=[*QUICK, "--infer-backends", "torch,ort_fp32"],
        on_result=lambda what, result: order.append(what),
    )
    # Keras first in the first repetition, mammocad first in the second.
    assert order == [
        "baseline_cnn keras_fp32 #1",
        "baseline_cnn keras_bf16 #1",
        "baseline_cnn mammocad #1",
        "baseline_cnn mammocad #2",
        "baseline_cnn keras_fp32 #2",
        "baseline_cnn keras_bf16 #2",
    ]
    assert (tmp_path / "order.log").read_text().splitlines()[0] == "keras --arch baseline_cnn"
    entry = doc["models"]["baseline_cnn"]
    mine = entry["mammocad"]["train_img_per_s"]
    assert mine["n"] == 2 and mine["min"] <= mine["median"] <= mine["max"] and mine["min"] > 0
    assert entry["keras_bf16"]["train_img_per_s"]["median"] == 8.0
    ratios = entry["ratios"]
    assert ratios["train_vs_keras_fp32"] == pytest.approx(mine["median"] / 4.0, rel=1e-3)
    assert ratios["train_vs_keras_bf16"] == pytest.approx(mine["median"] / 8.0, rel=1e-3)
    # Inference is compared with Keras's fastest tf.function mode.
    assert ratios["infer_b32_torch_vs_keras_tffunc_best"] == pytest.approx(
        entry["mammocad"]["infer_b32_img_per_s"]["median"] / 20.0, rel=1e-3
    )
    assert ratios["infer_b32_ort_fp32_vs_keras_tffunc_best"] == pytest.approx(
        entry["mammocad"]["infer_b32_img_per_s_ort_fp32"]["median"] / 20.0, rel=1e-3
    )
    raw = entry["raw"]["mammocad"][0]
    assert raw["precision"] in ("bf16-mixed", "32-true") and raw["channels_last"] is True
    assert 0 <= raw["data_wait_share"] < 1 and "train_other_cpu_share" in raw
    assert len(doc["load_average_at_start"]) == 3


def test_without_keras_ratios_are_unavailable(tmp_path, monkeypatch):
    real = bench.side_by_side

    def quick(*args, **kwargs):  # the CLI's own run, with shorter timing in the child
        kwargs["mammocad_options"] = [*kwargs["mammocad_options"], *QUICK, "--no-infer"]
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "side_by_side", quick)
    out = tmp_path / "train.json"
    result = runner.invoke(app, ["bench", "train", "--model", "baseline_cnn", "--reps", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["models"]["baseline_cnn"]["ratios"] == bench.UNAVAILABLE
    assert "unavailable" in result.output and "20" not in json.dumps(doc["models"]["baseline_cnn"]["ratios"])


def test_a_failing_keras_is_reported_not_fatal(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("import sys; print('ImportError: No module named tensorflow', file=sys.stderr); sys.exit(1)")
    doc = bench.side_by_side(
        ["baseline_cnn"],
        repetitions=1,
        keras=bench.KerasReference(Path(sys.executable), broken),
        keras_modes=("fp32",),
        in_chans=1,
        mammocad_options=[*QUICK, "--no-infer"],
    )
    entry = doc["models"]["baseline_cnn"]
    assert "tensorflow" in entry["keras_fp32"]["errors"][0]
    assert entry["mammocad"]["train_img_per_s"]["n"] == 1
    assert isinstance(entry["ratios"], str) and "failed" in entry["ratios"]


def test_bench_infer_judges_the_target_against_this_runs_keras(tmp_path):
    script = _fake_keras(tmp_path)
    out = tmp_path / "infer.json"
    args = ["bench", "infer", "--model", "baseline_cnn", "--rounds", "1", "--in-chans", "1", "-o", str(out)]
    result = runner.invoke(app, [*args, "--keras", sys.executable, "--keras-script", str(script)])
    assert result.exit_code == 0, result.output
    entry = json.loads(out.read_text())["models"]["baseline_cnn"]
    assert entry["keras_b32_img_s"] == 20.0  # the faster tf.function mode of the two the fake reported
    for backend in ("torch_fp32", "torch_bf16", "ort_fp32", "ort_int8"):
        timing = entry[backend]
        assert timing["vs_keras"] == pytest.approx(timing["img_s"] / 20.0, abs=0.01)
        assert timing["meets_target"] == (timing["img_s"] >= 30.0)
    assert entry["best"]["backend"] in entry
    # Without Keras the speed half of the target is unavailable, never judged against copied numbers.
    result = runner.invoke(app, [*args[:-1], str(tmp_path / "alone.json")])
    alone = json.loads((tmp_path / "alone.json").read_text())
    assert alone["models"]["baseline_cnn"]["best"]["meets_target"] is None and "unavailable" in alone["keras"]


def test_bad_keras_options_are_refused_before_anything_runs(tmp_path):
    script = _fake_keras(tmp_path)
    missing = tmp_path / "no-such-python"
    result = runner.invoke(app, ["bench", "train", "--keras", str(missing), "--keras-script", str(script)])
    assert result.exit_code == 2 and "no such interpreter" in result.output
    result = runner.invoke(app, ["bench", "infer", "--keras", sys.executable, "--keras-script", str(tmp_path / "x.py")])
    assert result.exit_code == 2 and "script not found" in result.output
    args = ["bench", "train", "--keras", sys.executable, "--keras-script", str(script), "--keras-mode", "fp8"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "fp8" in result.output
    assert not (tmp_path / "order.log").exists()  # Keras never ran
