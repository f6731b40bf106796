"""Serving under hostile uploads: decode bombs and over-budget images are 413s, decoder panics 422s, a
batch reports the bad file and predicts the rest, decodes share the memory budget, /health stays up;
batch prediction from paths goes on past the same files."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

import mammocad.serve.engine as engine_module
from mammocad.data.synth.hostile import (
    BOMB_FORMATS,
    bomb_bytes,
    write_bomb,
    write_corrupt_png,
    write_panicking_rle_dicom,
    write_rgb16_png,
    write_truncated_png,
)
from mammocad.serve.api import ServeSettings, create_app_from_settings
from mammocad.training.predict import load_run, predict_paths


def upload(name: str, data: bytes, field: str = "files") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(field, (name, data, "application/octet-stream"))]


def one_line_without_paths(response) -> str:
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail
    assert "/tmp" not in detail and "mammocad-upload" not in detail and "<path>" not in detail
    return detail


@pytest.mark.parametrize("fmt", BOMB_FORMATS)
@pytest.mark.parametrize("endpoint", ["/predict", "/explain"])
def test_header_only_bombs_are_413(client, fmt, endpoint):
    field = "files" if endpoint == "/predict" else "file"
    response = client.post(endpoint, files=upload(f"bomb.{fmt}", bomb_bytes(fmt), field))
    assert response.status_code == 413, response.text
    assert one_line_without_paths(response).startswith("file 1: too large to decode: ~")
    assert client.get("/health").status_code == 200


def test_panicking_rle_dicom_is_422_and_corrupt_png_too(client, tmp_path):
    for path in (write_panicking_rle_dicom(tmp_path / "panics.dcm"), write_corrupt_png(tmp_path / "bad.png")):
        for endpoint, field in (("/predict", "files"), ("/explain", "file")):
            response = client.post(endpoint, files=upload(path.name, path.read_bytes(), field))
            assert response.status_code == 422, response.text
            assert "could not be decoded" in one_line_without_paths(response)
    assert client.get("/health").status_code == 200


def test_image_over_the_budget_is_413_and_the_budget_comes_from_the_settings(served_run, tmp_path):
    data = write_rgb16_png(tmp_path / "rgb16.png", side=400).read_bytes()  # ~3 MB to decode
    small = create_app_from_settings(ServeSettings(run=served_run, backend="torch", decode_budget_mb=2))
    assert small.state.engine.decode_budget_mb == 2
    client = TestClient(small)
    assert client.get("/model").json()["decode_budget_mb"] == 2
    response = client.post("/predict", files=upload("rgb16.png", data))
    assert response.status_code == 413
    assert one_line_without_paths(response) == "file 1: too large to decode: ~3 MB needed > budget 2 MB"
    # Decoding for a heatmap needs more: refused at a budget that lets predictions through.
    roomy = TestClient(create_app_from_settings(ServeSettings(run=served_run, backend="torch", decode_budget_mb=8)))
    assert roomy.post("/predict", files=upload("rgb16.png", data)).status_code == 200
    explained = roomy.post("/explain", files=upload("rgb16.png", data, "file"))
    assert explained.status_code == 413 and "(with a heatmap)" in one_line_without_paths(explained)
    assert client.get("/health").status_code == 200


def test_a_batch_reports_each_bad_file_and_predicts_the_others(client, upload_png, tmp_path):
    bad = {
        "bomb.tiff": (bomb_bytes("tiff"), 413),
        "panics.dcm": (write_panicking_rle_dicom(tmp_path / "p.dcm").read_bytes(), 422),
        "cut.png": (write_truncated_png(tmp_path / "cut.png").read_bytes(), 422),
    }
    parts = upload("good1.png", upload_png) + [p for name, (data, _) in bad.items() for p in upload(name, data)]
    response = client.post("/predict", files=[*parts, *upload("good2.png", upload_png)])
    assert response.status_code == 200
    results = {item["filename"]: item for item in response.json()["results"]}
    assert results["good1.png"]["prediction"] and results["good2.png"]["prediction"]
    for name, (_, status) in bad.items():
        assert results[name]["status"] == status and "prediction" not in results[name]
        assert results[name]["error"].startswith(f"file {list(results).index(name) + 1}:")


def test_decodes_at_once_share_the_budget(engine, upload_png, monkeypatch, tmp_path):
    """Three uploads each needing more than half the budget decode one at a time; with room, at once."""
    running, peak = 0, 0
    lock = threading.Lock()
    real = engine_module.prepare_image

    def slow_prepare(*args, **kwargs):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.3)
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(engine_module, "prepare_image", slow_prepare)
    assert engine.decode(upload_png, keep_original=False).original is None  # predictions keep no original
    (tmp_path / "upload").write_bytes(upload_png)
    info = engine_module.probe_image(tmp_path / "upload")
    share_mb = engine_module.decode_estimate(info, len(upload_png)) / (1 << 20)  # what one decode reserves
    for budget_mb, expected in ((share_mb * 1.5, 1), (share_mb * 3.5, 3)):
        monkeypatch.setattr(engine, "_gate", engine_module.DecodeGate(budget_mb))
        monkeypatch.setattr(engine, "decode_budget_mb", budget_mb)
        peak = 0
        with ThreadPoolExecutor(3) as pool:
            images = list(pool.map(lambda _: engine.decode(upload_png, keep_original=False), range(3)))
        assert len(images) == 3 and peak == expected and engine._gate.in_use == 0


def test_an_image_holds_its_heatmap_share_until_explained_or_dropped(engine, upload_png):
    image = engine.decode(upload_png)
    assert engine._gate.in_use > 0
    engine.explain(image)
    assert engine._gate.in_use == 0
    image = engine.decode(upload_png)
    assert engine._gate.in_use > 0
    del image  # dropped unexplained
    assert engine._gate.in_use == 0


def test_predict_paths_reports_bad_files_and_predicts_the_rest(served_run, upload_png, tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(upload_png)
    paths = [
        good,
        write_bomb(tmp_path / "bomb.jpg", "jpeg"),
        write_panicking_rle_dicom(tmp_path / "panics.dcm"),
        write_corrupt_png(tmp_path / "corrupt.png"),
        write_truncated_png(tmp_path / "cut.png"),
        good,
    ]
    table = predict_paths(load_run(served_run), paths, batch_size=2)
    assert table["prediction"].notna().tolist() == [True, False, False, False, False, True]
    errors = table["error"].tolist()
    assert errors[1].startswith("too large to decode")
    assert "PanicException" in errors[2]
    assert "could not be decoded" in errors[3]
    assert "truncated" in errors[4]


def test_mutated_uploads_never_make_the_api_fail(served_run, tmp_path):
    """Every fuzzed file posted to /predict: an answer or a 4xx, never a 5xx."""
    from mammocad.benchmarks.fuzz import run_fuzz

    result = run_fuzz(80, seed=3, run_dir=served_run, keep_dir=tmp_path / "crashes")
    assert result["crashes"] == 0, result["crash_cases"]
    assert all(int(status) < 500 for status in result["api_status"]), result["api_status"]
    assert sum(result["api_status"].values()) == 80
