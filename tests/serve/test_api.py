"""The REST API: every endpoint, every kind of bad input (4xx, never 5xx), auth, privacy, fuzzing, concurrency."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from typer.testing import CliRunner

from mammocad.serve.api import create_app
from mammocad.serve.engine import InferenceEngine
from mammocad.serve.loadtest import load_test, serve_in_thread

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-12345"
TEXT = b"hello world, this is not an image at all\n" * 10


def dicom_bytes(shape: tuple[int, int] = (256, 192)) -> bytes:
    """A valid 16-bit mammography DICOM carrying patient identifiers."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("upload", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.random.default_rng(0).integers(0, 4096, size=shape, dtype=np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def engine(served_run) -> InferenceEngine:
    return InferenceEngine(served_run)


def files(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    # The declared content type is deliberately wrong: the server must sniff the content.
    return [("files", (name, data, "text/plain")) for name, data in items]


def still_serving(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_health_and_model_card(client, engine):
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "model": "baseline_cnn", "version": engine.version, "backend": "onnx"}
    assert health.headers["x-request-id"]
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    card = client.get("/model").json()
    assert card["classes"] == ["normal", "abnormal"] and card["input"] == {"channels": 1, "height": 64, "width": 64}
    assert card["needs_lesion_box"] is False and "gradcam" in card["explain_methods"]


def test_openapi_schema_and_docs(client):
    schema = client.get("/openapi.json").json()
    assert schema["info"]["title"] == "mammocad inference API" and "baseline_cnn" in schema["info"]["description"]
    assert {"/health", "/model", "/predict", "/explain"} <= set(schema["paths"])
    assert {"PredictResponse", "PredictionItem", "ExplainResponse", "ModelInfo", "ErrorResponse"} <= set(
        schema["components"]["schemas"]
    )
    assert "415" in schema["paths"]["/predict"]["post"]["responses"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_predict_one_image(client, upload_png):
    response = client.post("/predict", files=files(("mammo.png", upload_png)))
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "baseline_cnn" and body["backend"] == "onnx"
    (item,) = body["results"]
    assert item["index"] == 0 and item["filename"] == "mammo.png" and "error" not in item
    assert set(item["probabilities"]) == {"normal", "abnormal"}
    assert abs(sum(item["probabilities"].values()) - 1) < 1e-4
    assert item["prediction"] == max(item["probabilities"], key=item["probabilities"].get)


def test_batch_with_a_bad_file_predicts_the_good_ones_in_one_batch(client, engine, upload_png, monkeypatch):
    calls = []
    real_predict = engine.predict
    monkeypatch.setattr(engine, "predict", lambda images: calls.append(len(images)) or real_predict(images))
    response = client.post("/predict", files=files(("a.png", upload_png), ("notes.png", TEXT), ("c", upload_png)))
    assert response.status_code == 200
    first, bad, third = response.json()["results"]
    assert calls == [2]
    assert bad == {"index": 1, "filename": "notes.png", "error": bad["error"], "status": 415}
    assert "not a supported image" in bad["error"] and "notes.png" not in bad["error"]
    assert first["probabilities"] == third["probabilities"] and third["filename"] == "c"


def test_a_batch_of_only_bad_files_is_an_error(client):
    response = client.post("/predict", files=files(("a.png", TEXT), ("b.png", b"")))
    assert response.status_code == 422
    assert response.json()["detail"].startswith("no file could be used: file 1:")
    assert client.post("/predict", files=files(("a", TEXT), ("b", TEXT))).status_code == 415
    still_serving(client)


def test_explain_json(client, upload_png):
    data = {"method": "gradcam", "target": "abnormal", "opacity": "0.3"}
    response = client.post("/explain", files={"file": ("m.png", upload_png)}, data=data)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["target"] == "abnormal" and body["method"] == "gradcam" and body["layer"] == "backbone.block4"
    assert body["filename"] == "m.png" and body["version"] and body["heatmap_shape"] == [512, 384]
    assert base64.b64decode(body["overlay_png"]).startswith(b"\x89PNG")
    assert base64.b64decode(body["input_overlay_png"]).startswith(b"\x89PNG")
    assert body["class_agnostic"] is False and body["meaning"] == "relative contribution to abnormal"


def test_explain_png(client, upload_png):
    response = client.post("/explain", files={"file": ("m.png", upload_png)}, data={"format": "png", "target": "0"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png" and response.content.startswith(b"\x89PNG")
    summary = json.loads(response.headers["x-mammocad-explanation"])
    assert summary["target"] == "normal" and set(summary["probabilities"]) == {"normal", "abnormal"}


def _truncated_png(png: bytes) -> bytes:
    return png[: len(png) // 2]


@pytest.mark.parametrize(
    ("upload", "status", "reason"),
    [
        (lambda png: b"", 422, "empty"),
        (lambda png: TEXT, 415, "not a supported image"),
        (_truncated_png, 422, "PNG"),
        (lambda png: dicom_bytes()[:-5000], 422, "truncated"),
        (lambda png: dicom_bytes()[:200], 422, "DICOM"),
    ],
    ids=["empty", "text-named-png", "truncated-png", "truncated-dicom-pixels", "truncated-dicom-header"],
)
@pytest.mark.parametrize("endpoint", ["/predict", "/explain"])
def test_bad_uploads_are_4xx_with_a_one_line_reason(client, upload_png, upload, status, reason, endpoint):
    field = "files" if endpoint == "/predict" else "file"
    response = client.post(endpoint, files={field: ("scan.png", upload(upload_png), "image/png")})
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and reason in detail
    assert PATIENT_NAME not in detail and PATIENT_ID not in detail
    still_serving(client)


def test_images_over_the_pixel_limit_are_413(client, engine, upload_png, monkeypatch):
    monkeypatch.setattr(engine, "max_pixels", 10_000)
    response = client.post("/predict", files=files(("big.png", upload_png)))
    assert response.status_code == 413 and "over the limit of 10,000" in response.json()["detail"]
    still_serving(client)


def test_uploads_over_the_size_limit_are_413(engine, upload_png):
    small = TestClient(create_app(engine, max_upload_bytes=1000))
    # Within the request's body cap: refused per file while reading it back.
    response = small.post("/predict", files=files(("a.png", upload_png[:5000])))
    assert response.status_code == 413 and "upload limit of 1,000" in response.json()["detail"]
    # Over the body cap: refused from the Content-Length header, before the body is read.
    response = small.post("/explain", files={"file": ("a.png", upload_png * 4)})
    assert response.status_code == 413 and "request body is" in response.json()["detail"]

    # No Content-Length (chunked): refused while the body streams in.
    def chunks():
        yield b"--xyz\r\nContent-Disposition: form-data; name=file; filename=a.png\r\n\r\n"
        for _ in range(100):
            yield b"\0" * 10_000

    response = small.post("/explain", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert response.status_code == 413 and "over the limit" in response.json()["detail"]
    still_serving(small)


def test_more_files_than_the_batch_limit_are_413(engine, upload_png):
    small = TestClient(create_app(engine, max_batch=2))
    response = small.post("/predict", files=files(("a", upload_png), ("b", upload_png), ("c", upload_png)))
    assert response.status_code == 413 and "limit is 2" in response.json()["detail"]
    assert small.post("/predict", files=files(("a", upload_png), ("b", upload_png))).status_code == 200


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"method": "saliency"}, "unknown method"),
        ({"target": "cancer"}, "unknown target class"),
        ({"target": "7"}, "out of range"),
        ({"opacity": "1.5"}, "opacity"),
        ({"opacity": "dense"}, "opacity"),
        ({"opacity": "nan"}, "opacity"),
        ({"box": "1,2,3"}, "four integers"),
        ({"box": "10,10,5,5"}, "x1 > x0"),
        ({"layer": "no.such.layer"}, "layer"),
        ({"format": "gif"}, "format"),
    ],
)
def test_bad_explain_fields_are_422(client, upload_png, data, reason):
    response = client.post("/explain", files={"file": ("m.png", upload_png)}, data=data)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and reason in detail
    still_serving(client)


def test_missing_files_and_bad_boxes_are_422(client, upload_png):
    assert client.post("/predict", data={"x": "1"}).json()["detail"].startswith("files:")
    response = client.post("/predict", files=files(("a", upload_png)), data={"boxes": ["1,2,30,40", "1,2,30,40"]})
    assert response.status_code == 422 and "2 boxes for 1 files" in response.json()["detail"]
    response = client.post("/predict", files=files(("a", upload_png)), data={"boxes": "a,b,c,d"})
    assert response.status_code == 422 and "four integers" in response.json()["detail"]


def test_roi_runs_need_a_box(client, engine, upload_png, monkeypatch):
    monkeypatch.setattr(engine.run, "preprocess", engine.run.preprocess.model_copy(update={"mode": "roi"}))
    assert client.get("/model").json()["needs_lesion_box"] is True
    response = client.post("/predict", files=files(("a", upload_png)))
    assert response.status_code == 422 and "lesion box" in response.json()["detail"]
    response = client.post("/explain", files={"file": ("a", upload_png)})
    assert response.status_code == 422 and "lesion box" in response.json()["detail"]
    response = client.post("/predict", files=files(("a", upload_png)), data={"boxes": "100,100,228,228"})
    assert response.status_code == 200 and "prediction" in response.json()["results"][0]


def test_bearer_token_guards_everything_but_health(engine, upload_png):
    secured = TestClient(create_app(engine, token="s3cret-token"))
    assert secured.get("/health").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
        response = secured.get("/model", headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert secured.post("/predict", files=files(("a", upload_png)), headers=headers).status_code == 401
        assert secured.post("/explain", files={"file": ("a", upload_png)}, headers=headers).status_code == 401
    good = {"Authorization": "Bearer s3cret-token"}
    assert secured.get("/model", headers=good).status_code == 200
    assert secured.post("/predict", files=files(("a", upload_png)), headers=good).status_code == 200
    assert "HTTPBearer" in json.dumps(secured.get("/openapi.json").json()["components"])


def test_no_patient_identifiers_in_responses_or_logs(client, caplog):
    upload = dicom_bytes()
    assert PATIENT_NAME.encode() in upload and PATIENT_ID.encode() in upload
    with caplog.at_level(logging.DEBUG):
        predicted = client.post("/predict", files=files(("study.dcm", upload)))
        explained = client.post("/explain", files={"file": ("study.dcm", upload)}, data={"format": "png"})
        broken = client.post("/predict", files=files(("study.dcm", upload[:-3000])))
        named = client.post("/predict", files=files((f"{PATIENT_NAME} {PATIENT_ID}.dcm", upload)))
    assert predicted.status_code == 200 and "prediction" in predicted.json()["results"][0]
    assert explained.status_code == 200 and broken.status_code == 422 and named.status_code == 200
    for response in (predicted, explained, broken):
        exposed = response.text + json.dumps(dict(response.headers))
        assert PATIENT_NAME not in exposed and PATIENT_ID not in exposed and "Doe" not in exposed
    assert named.json()["results"][0]["filename"] == f"{PATIENT_NAME} {PATIENT_ID}.dcm"  # echoed to its sender only
    assert "dicom" in caplog.text and "/predict" in caplog.text  # the request lines are there...
    assert PATIENT_NAME not in caplog.text and PATIENT_ID not in caplog.text and "Doe" not in caplog.text  # ...clean


def test_unexpected_errors_are_a_generic_500(client, engine, upload_png, monkeypatch):
    def broken(images):
        raise RuntimeError("internal detail the client must not see")

    monkeypatch.setattr(engine, "predict", broken)
    response = client.post("/predict", files=files(("a", upload_png)))
    assert response.status_code == 500
    assert response.json()["detail"].startswith("internal server error (request id ")
    assert "internal detail" not in response.text
    still_serving(client)


@st.composite
def uploads(draw: st.DrawFn, png: bytes) -> bytes:
    """Random bytes, a PNG cut short and/or with flipped bytes, or DICOM magic over garbage."""
    kind = draw(st.sampled_from(["random", "png", "dicom"]))
    if kind == "random":
        return draw(st.binary(max_size=2048))
    if kind == "dicom":
        return b"\0" * 128 + b"DICM" + draw(st.binary(max_size=2048))
    data = bytearray(png[: draw(st.integers(0, len(png)))])
    for _ in range(draw(st.integers(0, 6)) if data else 0):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


def test_fuzzed_uploads_never_cause_a_5xx(client, upload_png):
    examples = int(os.environ.get("MAMMOCAD_FUZZ_EXAMPLES", "0") or 0) or 60  # a longer soak when set

    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(data=uploads(upload_png))
    def check(data: bytes) -> None:
        response = client.post("/predict", files=files(("fuzz.png", data)))
        assert response.status_code == 200 or 400 <= response.status_code < 500, response.text

    check()
    still_serving(client)


def test_concurrent_requests_give_identical_answers(engine, upload_png):
    app = create_app(engine)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as http:

        def one(_: int) -> tuple[int, dict | None]:
            response = http.post("/predict", files=files(("a.png", upload_png)))
            return response.status_code, response.json()["results"][0].get("probabilities")

        with ThreadPoolExecutor(max_workers=16) as pool:
            outcomes = list(pool.map(one, range(200)))
    assert all(status == 200 for status, _ in outcomes)
    assert all(probs == outcomes[0][1] for _, probs in outcomes)


def test_load_test_helper(engine, upload_png):
    stats = load_test(create_app(engine), upload_png, requests=40, concurrency=8)
    assert stats["requests"] == 40 and stats["concurrency"] == 8
    assert stats["errors_5xx"] == 0 and stats["errors_other"] == 0
    assert 0 < stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"] and stats["throughput_rps"] > 0


def test_serve_cli_refuses_runs_it_cannot_serve(served_run, tmp_path, monkeypatch):
    from mammocad.cli.main import app

    runner = CliRunner()
    result = runner.invoke(app, ["serve", str(tmp_path)])
    assert result.exit_code == 2 and "not a run directory" in " ".join(result.output.split())
    copy = tmp_path / "run"
    shutil.copytree(served_run, copy, ignore=shutil.ignore_patterns("checkpoints"))
    result = runner.invoke(app, ["serve", str(copy)])
    assert result.exit_code == 2 and "checkpoint" in " ".join(result.output.split())
    started = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **options: started.update(app=app, **options))
    monkeypatch.delenv("MAMMOCAD_API_TOKEN", raising=False)
    result = runner.invoke(
        app, ["serve", str(served_run), "--port", "8123", "--max-upload-mb", "2"], env={"MAMMOCAD_API_TOKEN": "t"}
    )
    assert result.exit_code == 0, result.output
    assert (
        started["port"] == 8123
        and started["host"] == "127.0.0.1"
        and "auth: bearer token" in " ".join(result.output.split())
    )
    served = TestClient(started["app"])
    assert served.get("/model").status_code == 401
    assert served.get("/model", headers={"Authorization": "Bearer t"}).json()["backend"] == "onnx"
