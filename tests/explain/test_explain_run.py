"""`mammocad explain` end to end on a tiny run: files, geometry, bad inputs, the CLI and report galleries."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from mammocad.cli.main import app
from mammocad.data.manifest import read_manifest, resolve_path
from mammocad.evaluation.evaluate import evaluate_run
from mammocad.explain import (
    compare_activations,
    explain_images,
    explain_split,
    gallery_overlays,
    gallery_pictures_for,
)
from mammocad.io import atomic_write_png
from mammocad.training.predict import load_run
from mammocad.training.run import train
from tests.browser import render
from tests.conftest import config


@pytest.fixture(scope="module")
def run_dir(dataset, tmp_path_factory):
    return train(config(dataset, tmp_path_factory.mktemp("explain"), **{"train.epochs": 1}), progress=False).run_dir


def test_cam_on_a_split_maps_back_to_the_original_geometry(run_dir, dataset, tmp_path):
    result = explain_split(run_dir, "test", limit=3, method="gradcam", out_dir=tmp_path / "out")
    document = json.loads((result.out_dir / "explanations.json").read_text())
    assert len(document["items"]) == 3 and not result.failed
    assert document["layer"] == "backbone.block4" and document["target"] == "predicted class"
    manifest = read_manifest(dataset).set_index("image_id")
    for item in document["items"]:
        heat = np.load(result.out_dir / item["map"], allow_pickle=False)
        row = manifest.loc[item["source"]]
        assert heat.shape == (row["height"], row["width"])  # the original image's grid
        assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1 and heat.max() > 0
        assert (result.out_dir / item["overlay"]).exists() and (result.out_dir / item["input_overlay"]).exists()
        assert set(item["probabilities"]) == {"normal", "abnormal"}
    assert (result.out_dir / "report.html").exists()
    # the colours' meaning, and a colour bar
    assert document["class_agnostic"] is False and document["meaning"] == "relative contribution to predicted class"
    assert all(item["meaning"] == f"relative contribution to {item['target']}" for item in document["items"])
    assert (result.out_dir / "colorbar.png").read_bytes().startswith(b"\x89PNG")
    agnostic = explain_split(run_dir, "test", limit=1, method="eigencam", out_dir=tmp_path / "eigen")
    document = json.loads((agnostic.out_dir / "explanations.json").read_text())
    assert document["class_agnostic"] is True and "class-agnostic" in document["meaning"]
    assert "class-agnostic" in (agnostic.out_dir / "report.html").read_text()


def test_image_files_bad_ones_are_reported_and_the_good_ones_kept(run_dir, dataset, tmp_path):
    manifest = read_manifest(dataset)
    good = resolve_path(dataset, manifest["image_path"].iloc[0])
    rgb = tmp_path / "colour.png"
    grey = cv2.imread(str(good), cv2.IMREAD_UNCHANGED)
    atomic_write_png(rgb, np.dstack([grey[:300, :200]] * 3).astype(np.uint8))  # other size, 3 channels
    corrupt = tmp_path / "corrupt.dcm"
    corrupt.write_bytes(b"DICM" + b"\0" * 40)
    missing = tmp_path / "missing.png"
    result = explain_images(
        run_dir, [good, rgb, corrupt, missing], method="hirescam", target="abnormal", out_dir=tmp_path / "o"
    )
    ok = [i for i in result.items if i["status"] == "ok"]
    assert [i["name"] for i in ok] == [good.stem, "colour"]
    assert all(i["target"] == "abnormal" for i in ok)
    assert np.load(result.out_dir / ok[1]["map"]).shape == (300, 200)
    reasons = {i["source"]: i["reason"] for i in result.failed}
    assert set(reasons) == {str(corrupt), str(missing)} and all(reasons.values())


def test_activation_maps_at_every_layer_group_and_a_run_comparison(run_dir, tmp_path):
    result = explain_split(run_dir, "test", limit=2, method="activation", out_dir=tmp_path / "a")
    item = result.items[0]
    maps = np.load(result.out_dir / item["maps"])
    assert sorted(maps.files) == [f"backbone.block{k}" for k in range(1, 5)]
    assert maps["backbone.block1"].shape == (32, 32) and (maps["backbone.block1"] >= 0).all()
    out, document = compare_activations(
        [run_dir, run_dir], "test", labels=["kt", "ft"], limit=3, out_dir=tmp_path / "c"
    )
    assert (out / "activation-comparison.png").exists()
    distances = [d for d in document["distance"]["kt"] if d is not None]
    assert distances and document["distance"]["kt"] == document["distance"]["ft"]  # the same run twice
    assert all(0 <= d <= 2 for d in distances)


def test_cli_errors_name_the_choices(run_dir):
    runner = CliRunner()
    bad_method = runner.invoke(app, ["explain", str(run_dir), "--split", "test", "-m", "smoothgrad"])
    assert bad_method.exit_code == 2 and "gradcam++" in bad_method.output and "lesion-background" in bad_method.output
    bad_layer = runner.invoke(app, ["explain", str(run_dir), "--split", "test", "--layer", "denseblock4"])
    assert bad_layer.exit_code == 2 and "backbone.block4" in bad_layer.output
    bad_target = runner.invoke(app, ["explain", str(run_dir), "--split", "test", "--target", "cat", "--limit", "1"])
    assert bad_target.exit_code == 2 and "normal, abnormal" in bad_target.output
    neither = runner.invoke(app, ["explain", str(run_dir)])
    assert neither.exit_code == 2


def test_cli_explains_files(run_dir, dataset, tmp_path):
    image = resolve_path(dataset, read_manifest(dataset)["image_path"].iloc[1])
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["explain", str(run_dir), str(image), "-m", "gradcam++", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / f"{image.stem}.gradcam++.png").exists()


def test_evaluation_galleries_carry_heatmaps(run_dir, tmp_path):
    plain = evaluate_run(run_dir, split="test", out_dir=tmp_path / "plain", n_resamples=0, tsne=False)
    rows = plain.predictions.frame.head(3)
    pictures = gallery_overlays(load_run(run_dir), rows)
    assert all(p.ndim == 3 and p.shape[2] == 3 and p.dtype == np.uint8 for p in pictures)
    assert any(not np.allclose(p[..., 0], p[..., 2]) for p in pictures)  # colour: a heatmap was drawn
    heat = evaluate_run(
        run_dir, split="test", out_dir=tmp_path / "heat", n_resamples=0, tsne=False, gallery_pictures=gallery_overlays
    )
    html = (heat.out_dir / "report.html").read_text()
    assert "critical errors" in html or "correct, high confidence" in html
    assert html != (plain.out_dir / "report.html").read_text()
    gallery = evaluate_run(
        run_dir,
        split="test",
        out_dir=tmp_path / "eigen",
        n_resamples=0,
        tsne=False,
        gallery_pictures=gallery_pictures_for("eigencam"),
    )
    assert "class-agnostic: where the network responds" in (gallery.out_dir / "report.html").read_text()
    render(heat.out_dir / "report.html", tmp_path)


def test_lesion_background_on_a_split_uses_the_lesion_masks(run_dir, tmp_path):
    result = explain_split(run_dir, "test", limit=6, method="lesion-background", out_dir=tmp_path / "lb")
    assert not result.failed
    for item in result.items:
        cells = json.loads((result.out_dir / item["cells"]).read_text())
        assert cells["grid"] == [4, 4] and len(cells["cells"]) == 16  # the baseline CNN's own grid at 64²
        assert item["lesion_cells"] + item["background_cells"] == 16
        assert all(c["label"] in ("lesion", "background") for c in cells["cells"])
        assert (result.out_dir / item["figure"]).read_bytes()[:4] == b"\x89PNG"
