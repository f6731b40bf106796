"""REST API hardening: every form field, query parameter and header value is a 4xx (never a 5xx), no
response carries a server path, no redirect echoes the Host header, the docs can be switched off, and
``mammocad serve`` takes its token only from the environment or an owner-only file.

The property test's example count is ``$MAMMOCAD_FUZZ_EXAMPLES`` when set (a longer soak), else small
enough for the default suite.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mammocad.errors import ConfigError, ImageReadError, MammocadError
from mammocad.serve.api import TOKEN_ENV, create_app
from mammocad.serve.engine import InferenceEngine

TOKEN = "fuzz-token-0123456789abcdef"
FUZZ_EXAMPLES = int(os.environ.get("MAMMOCAD_FUZZ_EXAMPLES", "0") or 0)
#: Digits that str.isdigit() (and sometimes int()) accept but no client means as numbers.
UNICODE_DIGITS = ["²", "٣", "１", "߃", "𝟗", "Ⅻ", "¾"]
EXPLAIN_FIELDS = ("method", "target", "opacity", "box", "layer", "format")
FIELDS = ("boxes", *EXPLAIN_FIELDS, "files", "file", "x")
NASTY = [
    "",
    " ",
    *UNICODE_DIGITS,
    "-1",
    "0",
    "+1",
    "--1",
    "1e309",
    "-1e309",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "0x10",
    "1_0",
    "9" * 5000,
    "-" + "9" * 30,
    "\x00",
    "a\r\nb",
    "/tmp/x",
    "../../etc/passwd",
    "~/secret",
    "C:\\Windows\\x",
    "%s%n{0}",
    "null",
    "[]",
    "²,0,10,10",
    "0,0,٣0,10",
    "１,2,30,40",
    "0,0,10,10",
    "10,10,0,0",
    "1,2,3",
    "0,0,999999999,999999999",
    "-5,-5,5,5",
    "head",
    "head.fc",
    "head.pool",
    "backbone",
    "-1",
    "-99",
    "normal",
    "abnormal",
    "gradcam",
    "GRADCAM++",
    "lesion",
    "json",
    "png",
    "x" * 70_000,
]


def examples(default: int) -> int:
    return FUZZ_EXAMPLES or default


@pytest.fixture(scope="module")
def engine(served_run) -> InferenceEngine:
    return InferenceEngine(served_run)


@pytest.fixture(scope="module")
def secured(engine) -> TestClient:
    return TestClient(create_app(engine, token=TOKEN))


@pytest.fixture(scope="module")
def server_paths(served_run) -> list[str]:
    """Folders of this server that no response may name."""
    paths = {str(served_run), str(served_run.resolve()), tempfile.gettempdir(), str(Path.home()), os.getcwd()}
    return sorted(path for path in paths if len(path.strip("/")) > 1)


def assert_clean(response, server_paths: list[str]) -> None:
    """Not a 5xx; a JSON error is one line; no server path or traceback in any text the client gets."""
    assert response.status_code < 500, response.text[:500]
    kind = response.headers.get("content-type", "")
    if kind.startswith("image/"):
        return
    if response.status_code >= 400:
        assert kind == "application/json"
    if kind.startswith("text/html"):  # /docs, /redoc
        text = response.text
    else:
        body = response.json()
        if response.status_code >= 400:
            assert set(body) == {"detail"} and isinstance(body["detail"], str)
            assert "\n" not in body["detail"] and len(body["detail"]) <= 2000
        elif "overlay_png" in body:  # base64 can spell anything, /tmp included
            body = {key: value for key, value in body.items() if not key.endswith("_png")}
        text = json.dumps(body, ensure_ascii=False)
    text += json.dumps(dict(response.headers))
    for path in server_paths:
        assert path not in text, (path, text[:500])
    assert "Traceback" not in text


# ---- Unicode digits and other bad field values: 422 naming the field and the accepted form ----------


@pytest.mark.parametrize(
    ("endpoint", "field", "value", "expected"),
    [
        *[("/predict", "boxes", f"{d},0,10,10", ["boxes", "x0,y0,x1,y1"]) for d in UNICODE_DIGITS],
        ("/predict", "boxes", "0,0,٣0,10", ["boxes", "x0,y0,x1,y1"]),
        ("/predict", "boxes", "--1,0,10,10", ["boxes", "x0,y0,x1,y1"]),
        ("/predict", "boxes", "9" * 5000 + ",0,1,1", ["boxes", "x0,y0,x1,y1"]),
        *[("/explain", "box", f"0,0,10,{d}", ["box", "x0,y0,x1,y1"]) for d in UNICODE_DIGITS],
        *[("/explain", "target", d, ["target", "class name", "index 0-1"]) for d in UNICODE_DIGITS],
        ("/explain", "target", "9" * 5000, ["target", "class name"]),
        ("/explain", "target", "-1", ["target", "out of range"]),
        *[("/explain", "layer", d, ["layer", "layer groups"]) for d in UNICODE_DIGITS],
        ("/explain", "layer", "head", ["layer 'head'", "convolutional layer"]),
        ("/explain", "layer", "head.fc", ["layer 'head.fc'", "convolutional layer"]),
        ("/explain", "layer", "head.pool", ["layer 'head.pool'", "not a spatial feature map"]),
        ("/explain", "layer", "-99", ["layer", "layer groups"]),
        ("/explain", "opacity", "٠.٥", ["opacity", "number"]),
        ("/explain", "opacity", "1e999", ["opacity", "less than or equal to 1"]),
        ("/explain", "opacity", "-inf", ["opacity"]),
        ("/explain", "method", "²", ["method", "choose from"]),
        ("/explain", "method", "x" * 100_000, ["method", "choose from"]),
        ("/explain", "format", "²", ["format", "json", "png"]),
    ],
)
def test_bad_field_values_are_422_naming_the_field(client, upload_png, server_paths, endpoint, field, value, expected):
    upload = {"files" if endpoint == "/predict" else "file": ("scan.png", upload_png)}
    response = client.post(endpoint, files=upload, data={field: value})
    assert response.status_code == 422, response.text[:300]
    assert_clean(response, server_paths)
    detail = response.json()["detail"]
    for fragment in expected:
        assert fragment in detail, detail
    assert len(detail) < 400  # the value is echoed cut short, not whole


def test_dashboard_and_cli_share_the_ascii_box_parser():
    from mammocad.dashboard.logic import parse_box
    from mammocad.parse import parse_int

    assert parse_box("1, 2,30,40") == (1, 2, 30, 40)
    for digit in UNICODE_DIGITS:
        assert parse_int(digit) is None
        with pytest.raises(ConfigError, match="four integers"):
            parse_box(f"{digit},2,30,40")
    assert parse_int(" -12 ") == -12 and parse_int("9" * 19) is None


def test_non_ascii_headers_are_4xx(secured, server_paths):
    for value in ("Bearer ²", "Bearer " + "ÿ" * 100, "²", "Bearer"):
        response = secured.get("/model", headers={"Authorization": value.encode("latin-1")})
        assert response.status_code == 401
        assert_clean(response, server_paths)
    response = secured.get("/health", headers={"X-Request-ID": ("²" * 10).encode("latin-1")})
    assert response.status_code == 200 and re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


# ---- no server paths in any response --------------------------------------------------------------


def test_error_texts_never_carry_server_paths(client, engine, upload_png, served_run, server_paths, monkeypatch):
    bad_requests = [
        ("post", "/predict", {"files": [("files", ("a.png", b"not an image"))]}),
        ("post", "/predict", {"files": [("files", ("a.png", b""))]}),
        ("post", "/predict", {"data": {"boxes": "1"}}),
        ("post", "/explain", {"files": {"file": ("a.png", upload_png[:100])}}),
        ("post", "/explain", {"files": {"file": ("a.png", upload_png)}, "data": {"layer": "/tmp/x"}}),
        ("post", "/explain", {"files": {"file": ("a.png", upload_png)}, "data": {"target": str(served_run)}}),
        ("post", "/explain", {"files": {"file": ("a.png", upload_png)}, "data": {"method": str(Path.home())}}),
        ("post", "/explain", {"content": b"--x\r\nbroken", "headers": {"Content-Type": "multipart/form-data"}}),
        ("get", "/no/such/path", {}),
        ("get", f"/{tempfile.gettempdir()}/x", {}),
        ("put", "/predict", {}),
        ("get", "/predict", {}),
    ]
    for method, url, options in bad_requests:
        response = client.request(method.upper(), url, **options)
        assert response.status_code >= 400, url
        assert_clean(response, server_paths)

    # Errors from deeper down that do carry server paths: the paths are replaced, the reason stays.
    upload_dir = Path(tempfile.gettempdir()) / "mammocad-upload-x1y2"
    raised = [
        ImageReadError(upload_dir / "upload", "broken"),
        MammocadError(f"{served_run}/model.json: something about the run"),
        MammocadError(f"cannot open {Path.home()}/.cache/x (no such file)"),
        MammocadError("reading /srv/data/weights.bin failed"),
    ]
    for error in raised:

        def fail(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(engine, "decode", fail)
        response = client.post("/predict", files={"files": ("a.png", upload_png)})
        assert response.status_code == 422 and "<path>" in response.json()["detail"]
        assert_clean(response, server_paths)
    monkeypatch.undo()

    def broken_explain(*args, **kwargs):
        raise ConfigError(f"layer file {served_run}/explain/x.pt is missing")

    monkeypatch.setattr(engine, "explain", broken_explain)
    response = client.post("/explain", files={"file": ("a.png", upload_png)})
    assert response.status_code == 422 and "layer file <path> is missing" in response.json()["detail"]
    assert_clean(response, server_paths)


def test_unexpected_errors_are_a_generic_500_and_the_detail_goes_to_the_log(
    client, engine, upload_png, served_run, monkeypatch, caplog
):
    def broken(images):
        raise RuntimeError(f"weights at {served_run} are gone")

    monkeypatch.setattr(engine, "predict", broken)
    with caplog.at_level(logging.ERROR, logger="mammocad.serve"):
        response = client.post("/predict", files={"files": ("a.png", upload_png)})
    assert response.status_code == 500
    request_id = response.headers["x-request-id"]
    assert response.json() == {"detail": f"internal server error (request id {request_id})"}
    assert f"request {request_id}: unexpected RuntimeError" in caplog.text


# ---- redirects, docs ------------------------------------------------------------------------------


def test_no_response_echoes_a_hostile_host_header(client):
    hostile = {"Host": "evil.example:666", "X-Forwarded-Host": "evil.example"}
    for method, path in [
        ("GET", "/health/"),
        ("GET", "/docs/"),
        ("GET", "/redoc/"),
        ("GET", "/"),
        ("GET", "//evil.example/"),
        ("GET", "/model/"),
        ("POST", "/predict/"),
        ("POST", "/explain/"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("GET", "/health"),
    ]:
        response = client.request(method, path, headers=hostile, follow_redirects=False)
        assert not 300 <= response.status_code < 400, (path, response.headers)
        assert "evil" not in response.text and "evil" not in json.dumps(dict(response.headers)), path
    assert client.get("/health/", follow_redirects=False).status_code == 404


def test_docs_can_be_switched_off(engine):
    closed = TestClient(create_app(engine, docs=False))
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        response = closed.get(path)
        assert response.status_code == 404 and response.json() == {"detail": "Not Found"}, path
    assert closed.get("/health").status_code == 200
    opened = TestClient(create_app(engine))
    assert all(opened.get(path).status_code == 200 for path in ("/docs", "/redoc", "/openapi.json"))


# ---- the property test -------------------------------------------------------------------------------


def text_values(nasty: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(nasty),
        st.text(max_size=40),
        st.text(alphabet=st.characters(categories=["Nd", "No", "Nl", "Pd", "Zs"]), max_size=12),
        st.integers().map(str),
        st.floats().map(repr),
        st.lists(st.one_of(st.integers(-(10**12), 10**12).map(str), st.sampled_from(UNICODE_DIGITS)), max_size=5).map(
            ",".join
        ),
    )


field_values = text_values(NASTY)
# A URL over 64 KiB is refused by the client itself, before it reaches the server.
query_values = text_values([value for value in NASTY if len(value) < 10_000])
header_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"))


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, dict, bool]:
    """(method, path, httpx options, secured): any endpoint, any query, any form fields, odd headers.

    Uploads are named ("png", "junk", ...) and filled in by the test, to keep failing examples readable.
    """
    path = draw(st.sampled_from(["/predict", "/explain", "/model", "/health", "/docs", "/openapi.json"]))
    options: dict = {"params": draw(st.dictionaries(st.sampled_from(FIELDS), query_values, max_size=3))}
    uploads = st.sampled_from(["png", "png", "png", "empty", "junk", "cut"])
    if path == "/predict":
        count = draw(st.integers(1, 3))
        options["files"] = [("files", (f"f{k}.png", draw(uploads))) for k in range(count)]
        boxes = draw(st.lists(field_values, max_size=count + 1))
        options["data"] = {"boxes": boxes} if boxes else {}
    elif path == "/explain":
        options["files"] = [("file", ("f.png", draw(uploads)))]
        fields = draw(st.lists(st.sampled_from(EXPLAIN_FIELDS), unique=True, max_size=len(EXPLAIN_FIELDS)))
        options["data"] = {field: draw(field_values) for field in fields}
    headers = {}
    if draw(st.booleans()):
        headers["X-Request-ID"] = draw(header_values).encode("latin-1")
    secured = draw(st.booleans())
    if secured:
        headers["Authorization"] = draw(
            st.sampled_from([f"Bearer {TOKEN}".encode(), b"Bearer", b""])
            | header_values.map(lambda v: v.encode("latin-1"))
        )
    options["headers"] = headers
    method = "GET" if path in ("/model", "/health", "/docs", "/openapi.json") else "POST"
    return method, path, options, secured


def test_fuzzed_fields_queries_and_headers_never_cause_a_5xx_or_leak_a_path(client, secured, upload_png, server_paths):
    seen: dict[int, int] = {}

    @settings(
        max_examples=examples(300),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(request=requests())
    def check(request: tuple[str, str, dict, bool]) -> None:
        method, path, options, protected = request
        if "files" in options:
            contents = {"png": upload_png, "empty": b"", "junk": b"junk", "cut": upload_png[:200]}
            options = {**options, "files": [(f, (n, contents[kind])) for f, (n, kind) in options["files"]]}
        response = (secured if protected else client).request(method, path, **options)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert_clean(response, server_paths)

    check()
    print(f"fuzzed responses by status: {dict(sorted(seen.items()))}")
    assert client.get("/health").status_code == 200
    assert 200 in seen and 422 in seen, seen  # the fuzz reached both the model and the validators


# ---- mammocad serve: token from the environment or a private file, --no-docs ------------------------


@pytest.fixture()
def started(monkeypatch) -> dict:
    started: dict = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **options: started.update(app=app, **options))
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    return started


def serve(*args: object, env: dict[str, str] | None = None):
    from mammocad.cli.main import app

    result = CliRunner().invoke(app, ["serve", *map(str, args)], env=env)
    result.text = " ".join(result.output.split())
    return result


def test_serve_refuses_a_token_on_the_command_line(served_run, started):
    result = serve(served_run, "--token", TOKEN)
    assert result.exit_code == 2 and not started
    assert "--token is not accepted" in result.text and "ps" in result.text
    assert "MAMMOCAD_API_TOKEN" in result.text and "--token-file" in result.text
    assert TOKEN not in result.output and "Traceback" not in result.output
    help_text = " ".join(serve("--help").output.split())
    assert "--token-file" in help_text and "MAMMOCAD_API_TOKEN" in help_text and "--no-docs" in help_text
    assert "--token " not in help_text.replace("--token-file", "")


def test_serve_takes_the_token_from_the_environment_or_a_private_file(served_run, started, tmp_path):
    result = serve(served_run, env={TOKEN_ENV: TOKEN})
    assert result.exit_code == 0, result.output
    assert "auth: bearer token" in result.text and TOKEN not in result.output
    served = TestClient(started["app"])
    assert served.get("/model").status_code == 401
    assert served.get("/model", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    started.clear()
    result = serve(served_run, "--token-file", token_file)
    assert result.exit_code == 0, result.output
    assert TestClient(started["app"]).get("/model", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200

    started.clear()
    result = serve(served_run, "--token-file", token_file, env={TOKEN_ENV: "  "})  # compose's blank variable
    assert result.exit_code == 0, result.output


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda f: (f.write_text(TOKEN), f.chmod(0o644)), "group or others may access the token file"),
        (lambda f: (f.write_text(TOKEN), f.chmod(0o604)), "chmod 600"),
        (lambda f: (f.write_text(TOKEN), f.chmod(0o620)), "group or others"),
        (lambda f: (f.write_text("  \n"), f.chmod(0o600)), "the token is empty"),
        (lambda f: (f.write_text("two words"), f.chmod(0o600)), "printable ASCII without spaces"),
        (lambda f: (f.write_bytes("tøken".encode()), f.chmod(0o600)), "printable ASCII"),
        (lambda f: (f.write_text("x" * 5000), f.chmod(0o600)), "longer than 4096"),
        (lambda f: f.mkdir(), "not a regular file"),
        (lambda f: None, "token file does not exist"),
    ],
    ids=[
        "world-readable",
        "other-readable",
        "group-writable",
        "empty",
        "spaces",
        "non-ascii",
        "huge",
        "dir",
        "missing",
    ],
)
def test_serve_refuses_unsafe_or_bad_token_files(served_run, started, tmp_path, setup, message):
    token_file = tmp_path / "token"
    setup(token_file)
    result = serve(served_run, "--token-file", token_file)
    assert result.exit_code == 2 and not started, result.output
    assert message in result.text and "Traceback" not in result.output
    assert TOKEN not in result.output


def test_serve_refuses_two_tokens_and_bad_environment_tokens(served_run, started, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    result = serve(served_run, "--token-file", token_file, env={TOKEN_ENV: TOKEN})
    assert result.exit_code == 2 and "not both" in result.text
    result = serve(served_run, env={TOKEN_ENV: "with space"})
    assert result.exit_code == 2 and "$MAMMOCAD_API_TOKEN: the token must be printable ASCII" in result.text
    result = serve(served_run, env={TOKEN_ENV: "short"})
    assert result.exit_code == 0 and "only 5 characters" in result.text
    assert not started or TestClient(started["app"]).get("/model").status_code == 401


def test_serve_no_docs_option_and_environment(served_run, started):
    result = serve(served_run, "--no-docs")
    assert result.exit_code == 0, result.output
    assert "docs: off" in result.text and "/docs" not in result.text.replace("/docs, /redoc", "")
    assert TestClient(started["app"]).get("/docs").status_code == 404
    for value, status in (("0", 404), ("false", 404), ("1", 200)):
        started.clear()
        assert serve(served_run, env={"MAMMOCAD_API_DOCS": value}).exit_code == 0
        assert TestClient(started["app"]).get("/openapi.json").status_code == status
    result = serve(served_run, env={"MAMMOCAD_API_DOCS": "maybe"})
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_serve_workers_get_the_docs_setting_and_the_token_through_the_environment(served_run, started, monkeypatch):
    from mammocad.serve.api import SETTINGS_ENV, app_from_env

    monkeypatch.setenv(SETTINGS_ENV, "{}")  # restored after the test; serve overwrites it
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    result = serve(served_run, "--workers", "2", "--no-docs", env={TOKEN_ENV: TOKEN})
    assert result.exit_code == 0, result.output
    assert started["workers"] == 2 and TOKEN not in os.environ[SETTINGS_ENV]
    worker = TestClient(app_from_env())
    assert worker.get("/docs").status_code == 404
    assert worker.get("/model").status_code == 401
    assert worker.get("/model", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
