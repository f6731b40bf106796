"""The API as an integrator meets it offline: self-hosted docs, a schema "Try it out" can use, boxes only
where they mean something, heatmap shapes that match the PNG, files counted from 1, a /model with limits."""

from __future__ import annotations

import base64
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mammocad.serve import api
from mammocad.serve.api import DOCS_ASSETS, DOCS_ASSETS_URL, DOCS_CSP, create_app
from mammocad.serve.engine import png_shape
from tests.serve.test_api import TEXT, dicom_bytes, files

CHROMIUM = Path("/usr/bin/chromium")
PAGE_TIMEOUT_MS = 60_000


def needs_docs_assets() -> None:
    if api.docs_assets_dir() is None:
        pytest.skip("fastapi-offline (Swagger UI and ReDoc assets) is not installed")


# ---- docs without a CDN ---------------------------------------------------------------------------


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_local_assets(client, page):
    needs_docs_assets()
    html = client.get(page)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    # The browser may fetch nothing but this server (ReDoc's bundle links a logo on a CDN).
    assert html.headers["content-security-policy"] == DOCS_CSP and "default-src 'self'" in DOCS_CSP
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", html.text)
    assert urls, html.text
    assert not re.search(r"https?://|//cdn|jsdelivr|unpkg|googleapis", html.text), html.text
    for url in urls:
        assert url.startswith("/"), url
        response = client.get(url)
        assert response.status_code == 200, url
    scripts = [url for url in urls if url.endswith(".js")]
    assert scripts and all(url.startswith(DOCS_ASSETS_URL) for url in scripts)
    for url in scripts:
        response = client.get(url)
        assert "javascript" in response.headers["content-type"] and len(response.content) > 100_000, url


def test_docs_assets_are_off_with_the_docs(engine):
    closed = TestClient(create_app(engine, docs=False))
    for name in DOCS_ASSETS:
        assert closed.get(f"{DOCS_ASSETS_URL}/{name}").status_code == 404


def test_without_the_assets_docs_say_so_and_load_nothing_remote(engine, monkeypatch):
    monkeypatch.setattr(api, "docs_assets_dir", lambda: None)
    bare = TestClient(create_app(engine))
    for page in ("/docs", "/redoc"):
        response = bare.get(page)
        assert response.status_code == 200 and "fastapi-offline" in response.text
        assert "<script" not in response.text and "http" not in response.text
    assert bare.get("/openapi.json").status_code == 200


# ---- a schema Swagger UI's "Try it out" can fill in -------------------------------------------------


def form_schema(client: TestClient, path: str) -> dict:
    schema = client.get("/openapi.json").json()
    body = schema["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    return schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]


def test_form_fields_have_types_swagger_can_show_and_no_placeholder_defaults(client):
    explain = form_schema(client, "/explain")
    predict = form_schema(client, "/predict")
    for name, field in {**explain["properties"], **predict["properties"]}.items():
        text = json.dumps(field)
        # A nullable (anyOf [..., null]) field has no single type: Swagger UI fills it with "string".
        assert "anyOf" not in field and '"null"' not in text, (name, field)
        assert '"string"' not in json.dumps(field.get("default")) and "example" not in text, (name, field)
    for name in ("target", "box", "layer"):
        assert explain["properties"][name]["default"] == "" and name not in explain.get("required", []), name
    assert explain["properties"]["file"]["format"] == "binary" and explain["required"] == ["file"]
    assert predict["properties"]["files"]["items"]["format"] == "binary" and predict["required"] == ["files"]
    assert (
        predict["properties"]["boxes"]["items"]["type"] == "string" and predict["properties"]["boxes"]["default"] == []
    )
    assert explain["properties"]["format"]["enum"] == ["json", "png"]


def test_empty_optional_fields_count_as_absent(client, upload_png):
    # What "Try it out" sends for fields left empty.
    data = {"target": "", "box": "", "layer": "", "method": "gradcam", "opacity": "0.45", "format": "json"}
    response = client.post("/explain", files={"file": ("m.png", upload_png)}, data=data)
    assert response.status_code == 200, response.text
    assert response.json()["target"] == response.json()["prediction"]
    batch = client.post("/predict", files=files(("a", upload_png), ("b", upload_png)), data={"boxes": ["", ""]})
    assert batch.status_code == 200, batch.text
    one_empty = client.post("/predict", files=files(("a", upload_png), ("b", upload_png)), data={"boxes": [""]})
    assert one_empty.status_code == 200, one_empty.text


def test_a_text_part_where_a_file_belongs_says_so(client, upload_png):
    # What "Try it out" sends for an array item added and left without a file.
    response = client.post("/predict", files=files(("a", upload_png)), data={"files": ""})
    assert response.status_code == 422
    assert (
        response.json()["detail"] == "files: entry 1 not a file; send an image as a file part (curl -F files=@scan.dcm)"
    )


# ---- a box on a whole-film run ------------------------------------------------------------------


def test_a_box_for_a_whole_film_run_is_refused(client, engine, upload_png):
    assert engine.needs_box is False
    explained = client.post("/explain", files={"file": ("m.png", upload_png)}, data={"box": "0,0,10,10"})
    assert explained.status_code == 422
    assert explained.json()["detail"].startswith("box: this model was trained on whole films")
    predicted = client.post(
        "/predict", files=files(("a", upload_png), ("b", upload_png)), data={"boxes": ["", "1,2,30,40"]}
    )
    assert predicted.status_code == 422 and predicted.json()["detail"].startswith("boxes: this model was trained")
    # A malformed box still says what a box looks like.
    malformed = client.post("/explain", files={"file": ("m.png", upload_png)}, data={"box": "1,2"})
    assert malformed.status_code == 422 and "x0,y0,x1,y1" in malformed.json()["detail"]


# ---- heatmap shapes -----------------------------------------------------------------------------


def png_size(data: bytes) -> list[int]:
    with Image.open(io.BytesIO(data)) as image:
        return [image.height, image.width]


@pytest.mark.parametrize(
    ("kind", "shape"),
    [("dicom", (3000, 1600)), ("dicom", (256, 192)), ("png", (2600, 1400)), ("png", None)],
)
def test_heatmap_shape_is_the_returned_pngs_for_dicom_and_png(client, upload_png, kind, shape):
    if kind == "dicom":
        data = dicom_bytes(shape)
    elif shape is None:
        data = upload_png
    else:
        buffer = io.BytesIO()
        pixels = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, format="PNG")
        data = buffer.getvalue()
    original = list(shape) if shape is not None else png_size(upload_png)
    response = client.post("/explain", files={"file": ("x", data)})
    assert response.status_code == 200, response.text
    body = response.json()
    overlay = base64.b64decode(body["overlay_png"])
    assert body["heatmap_shape"] == png_size(overlay) == list(png_shape(overlay))
    assert body["original_shape"] == original
    # Scaled to at most 2048 a side, keeping the aspect ratio.
    assert max(body["heatmap_shape"]) == min(2048, max(original))
    ratio = original[0] / original[1]
    assert abs(body["heatmap_shape"][0] / body["heatmap_shape"][1] - ratio) < 0.01
    raw = client.post("/explain", files={"file": ("x", data)}, data={"format": "png"})
    summary = json.loads(raw.headers["x-mammocad-explanation"])
    assert summary["heatmap_shape"] == png_size(raw.content) and summary["original_shape"] == original


# ---- files counted from 1 -----------------------------------------------------------------------


def test_errors_count_files_from_one(client, upload_png):
    response = client.post("/predict", files=files(("a", upload_png), ("b", TEXT), ("c", b"")))
    results = response.json()["results"]
    assert [item["index"] for item in results] == [0, 1, 2]
    assert results[1]["error"].startswith("file 2: ") and results[2]["error"].startswith("file 3: ")
    single = client.post("/explain", files={"file": ("a", TEXT)})
    assert single.status_code == 415 and single.json()["detail"].startswith("file 1: ")
    example = client.get("/openapi.json").json()["components"]["schemas"]["ErrorResponse"]
    assert "file 1:" in json.dumps(example) and "file 0" not in json.dumps(example)


# ---- /model: provenance and limits --------------------------------------------------------------


def test_model_has_limits_and_a_card_without_server_paths(engine, served_run):
    client = TestClient(create_app(engine, token="t" * 20, max_upload_bytes=5_000_000, max_batch=3))
    card = client.get("/model", headers={"Authorization": "Bearer " + "t" * 20}).json()
    assert card["limits"] == {
        "max_upload_bytes": 5_000_000,
        "max_batch": 3,
        "max_pixels": engine.max_pixels,
        "decode_budget_mb": engine.decode_budget_mb,
        "accepted_formats": ["DICOM", "PNG", "JPEG", "PGM", "TIFF", "BMP"],
        "auth_required": True,
    }
    assert TestClient(create_app(engine)).get("/model").json()["limits"]["auth_required"] is False
    run_card = card["card"]
    assert run_card["source"] in ("model_card", "run files")
    if run_card["source"] == "model_card":
        assert {"run", "model", "trained_on", "evaluation", "warnings", "headline"} <= set(run_card)
        assert run_card["run"]["name"] == served_run.name and "path" not in run_card["run"]
        assert run_card["model"]["classes"] == engine.classes and run_card["trained_on"]["n_images"]
    else:
        assert run_card["run"]["name"] == served_run.name and run_card["run"]["status"] == "completed"
        assert run_card["trained_on"]["classes"] == engine.classes and run_card["trained_on"]["counts"]
        assert "test" in run_card["evaluation"]
    text = json.dumps(card)
    for folder in {str(served_run), str(served_run.resolve()), str(served_run.parent), str(Path.home())}:
        assert folder not in text
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert {"limits", "card"} <= set(schema["ModelInfo"]["properties"]) and "ApiLimits" in schema


def test_a_failing_model_card_leaves_the_run_files_card(engine, monkeypatch):
    import mammocad.training as training

    module = type(os)("mammocad.training.model_card")

    def broken(run_dir):
        raise RuntimeError(f"{run_dir} is broken")

    module.model_card = broken
    monkeypatch.setitem(__import__("sys").modules, "mammocad.training.model_card", module)
    monkeypatch.setattr(training, "model_card", module, raising=False)
    card = TestClient(create_app(engine)).get("/model").json()["card"]
    assert card["source"] == "run files" and "RuntimeError" in card["warnings"][0]


# ---- the docs in a browser with no internet -------------------------------------------------------


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (CI installs Debian's chromium)")
def test_swagger_ui_renders_offline_in_chromium(engine, upload_png, tmp_path):
    needs_docs_assets()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from mammocad.serve.loadtest import serve_in_thread

    remote: list[str] = []

    def only_local(route) -> None:
        url = route.request.url
        if url.startswith(("http://127.0.0.1", "http://localhost", "data:", "blob:")):
            route.continue_()
        else:
            remote.append(url)
            route.abort()

    shots = [tmp_path] + (
        [Path(os.environ["MAMMOCAD_SCREENSHOT_DIR"])] if os.environ.get("MAMMOCAD_SCREENSHOT_DIR") else []
    )
    with serve_in_thread(create_app(engine)) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.route("**/*", only_local)
            page.goto(f"{url}/docs", wait_until="networkidle")
            page.wait_for_selector(".opblock", timeout=PAGE_TIMEOUT_MS)
            paths = page.locator(".opblock-summary-path").all_inner_texts()
            assert {"/health", "/model", "/predict", "/explain"} <= {p.strip().replace("\u200b", "") for p in paths}
            # "Try it out" on /explain: the optional text fields start empty, not as the placeholder "string".
            page.locator("#operations-model-explain_explain_post .opblock-summary").click()
            page.locator("#operations-model-explain_explain_post button.try-out__btn").click()
            inputs = page.locator("#operations-model-explain_explain_post .parameters input[type=text]")
            page.wait_for_timeout(500)
            values = [inputs.nth(k).input_value() for k in range(inputs.count())]
            assert "string" not in values, values
            explain = page.locator("#operations-model-explain_explain_post")
            assert explain.locator("input[type=file]").count() == 1
            upload = tmp_path / "mammo.png"
            upload.write_bytes(upload_png)
            explain.locator("input[type=file]").set_input_files(str(upload))
            explain.locator("button.execute").click()
            status = explain.locator(".live-responses-table tr.response .response-col_status").first
            status.wait_for(timeout=PAGE_TIMEOUT_MS)
            assert status.inner_text().strip().startswith("200"), explain.locator(".live-responses-table").inner_text()
            # /predict: a batch of files picked one per item, boxes left out.
            predict = page.locator("#operations-model-predict_predict_post")
            predict.locator(".opblock-summary").click()
            predict.locator("button.try-out__btn").click()
            if predict.locator("input[type=file]").count() == 0:  # Swagger UI starts the array with one item
                predict.get_by_role("button", name=re.compile("Add .*item")).first.click()
            predict.locator("input[type=file]").first.set_input_files(str(upload))
            predict.locator("button.execute").click()
            status = predict.locator(".live-responses-table tr.response .response-col_status").first
            status.wait_for(timeout=PAGE_TIMEOUT_MS)
            assert status.inner_text().strip().startswith("200"), predict.locator(".live-responses-table").inner_text()
            for folder in shots:
                folder.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(folder / "api-docs-offline.png"), full_page=True)
            page.goto(f"{url}/redoc", wait_until="networkidle")
            page.wait_for_selector("text=/explain", timeout=PAGE_TIMEOUT_MS)
            for folder in shots:
                page.screenshot(path=str(folder / "api-redoc-offline.png"))
        finally:
            browser.close()
    assert remote == [], remote
