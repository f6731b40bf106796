"""The real dashboard (``streamlit run``) in headless Chromium: a blind-test round and an upload, with screenshots.

Skips when Debian's Chromium (``/usr/bin/chromium``, installed by CI) or Playwright is missing.
Screenshots land in the test's tmp_path, and also in $MAMMOCAD_SCREENSHOT_DIR when it is set.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mammocad.cli.dashboard import streamlit_command
from mammocad.dashboard import logic

CHROMIUM = Path("/usr/bin/chromium")
START_TIMEOUT_S = 60
# The first page view imports torch and loads the model in the server: allow for a slow CI machine.
PAGE_TIMEOUT_MS = 60_000

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (CI installs Debian's chromium)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def dashboard_url(served_run, tmp_path) -> Iterator[str]:
    """The dashboard on ``served_run``, served by a real Streamlit process on a free port."""
    port = free_port()
    settings = logic.DashboardSettings((served_run,), blind_n=3)
    command = streamlit_command("127.0.0.1", port)  # exactly what `mammocad dashboard` execs
    log = (tmp_path / "streamlit.log").open("w")
    server = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **logic.settings_env(settings)}
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"Streamlit did not start:\n{(tmp_path / 'streamlit.log').read_text()[-3000:]}")
                time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def screenshot(page: sync_api.Page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    if os.environ.get("MAMMOCAD_SCREENSHOT_DIR"):
        target = Path(os.environ["MAMMOCAD_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / f"dashboard-{name}.png")


def test_blind_round_and_upload_in_a_browser(dashboard_url, upload_png, tmp_path):
    upload = tmp_path / "mammogram.png"
    upload.write_bytes(upload_png)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.goto(dashboard_url)

            # Blind test: answer, see the truth and the model's heatmap, go on.
            page.get_by_text("Case 1 of 3").wait_for()
            screenshot(page, tmp_path, "blind-question")
            page.get_by_role("button", name="normal", exact=True).click()
            page.get_by_text("Truth:").wait_for()
            page.get_by_text("Grad-CAM of the model's class").wait_for()
            sync_api.expect(page.get_by_role("button", name="normal", exact=True)).to_be_disabled()
            sync_api.expect(page.get_by_text("Answered")).to_be_visible()
            screenshot(page, tmp_path, "blind-revealed")
            page.get_by_role("button", name="Next").click()
            page.get_by_text("Case 2 of 3").wait_for()

            # Upload: any file in, prediction and heatmap overlay out.
            page.get_by_role("tab", name="Upload & explain").click()
            page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(upload)
            page.get_by_text("Prediction:").wait_for()
            overlay = page.locator('[data-testid="stImage"] img').last
            overlay.wait_for()
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=overlay.element_handle())
            shown = page.locator('[data-testid="stMarkdownContainer"]', has_text="Prediction:").inner_text()
            assert "mammogram.png (png" in shown
            screenshot(page, tmp_path, "upload")

            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            browser.close()
