"""The film viewer in headless Chromium: zoom, pan, window/level, opacity without a Streamlit rerun.

Two tests: the viewer's page on its own (fast: pixel checks of window/level and the overlay), and the
real dashboard (``streamlit run``): an upload shown in the viewer, zoomed, panned, its opacity
changed while no message goes from the browser to the server (no rerun). Screenshots land in the
test's tmp_path, and also in $MAMMOCAD_SCREENSHOT_DIR when it is set. Skips without Chromium or Playwright.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mammocad.dashboard import logic
from mammocad.dashboard.viewer import viewer_html
from mammocad.explain.overlay import colorbar_spec, film_overlay
from tests.browser import running_dashboard
from tests.serve.test_dashboard_browser import CHROMIUM, PAGE_TIMEOUT_MS, START_TIMEOUT_S

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (CI installs Debian's chromium)"
)

PIXEL = """([x, y]) => {
  const c = document.getElementById("film");
  return Array.from(c.getContext("2d").getImageData(x, y, 1, 1).data);
}"""


def save(page_or_locator, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page_or_locator.screenshot(path=path)
    if os.environ.get("MAMMOCAD_SCREENSHOT_DIR"):
        target = Path(os.environ["MAMMOCAD_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / f"viewer-{name}.png")


def synthetic_film() -> np.ndarray:
    """A 12-bit film in 16-bit samples (as a DICOM stores it), 900×520: breast on the left, air elsewhere."""
    yy, xx = np.mgrid[0:900, 0:520]
    breast = (xx / 420.0) ** 2 + ((yy - 450) / 400.0) ** 2 <= 1
    film = np.where(breast, 1500 + 800 * np.cos(yy / 40.0) * np.cos(xx / 50.0), 60).astype(np.uint16)
    film[430:470, 150:190] = 4000  # a dense blob
    return film


def drag(page, box: dict, dx: float, dy: float, button: str = "left") -> None:
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down(button=button)
    page.mouse.move(x + dx / 2, y + dy / 2)
    page.mouse.move(x + dx, y + dy)
    page.mouse.up(button=button)


def test_the_viewer_zooms_pans_and_windows_in_the_browser(tmp_path):
    film = synthetic_film()
    heat = np.zeros((7, 7), np.float32)
    heat[3, 1] = 1.0
    overlay = film_overlay(film, heat)
    page_path = tmp_path / "viewer.html"
    page_path.write_text(
        viewer_html(film, overlay, key="t", height=700, caption="a test film", colorbar=colorbar_spec("gradcam", "x"))
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 720})
            page.goto(page_path.as_uri())
            page.wait_for_function("window.filmViewer && window.filmViewer.ready")
            save(page, tmp_path, "standalone-fit")
            view = page.evaluate("({...window.filmViewer.view})")
            assert view["fitted"] and view["window"] == 4000 - 60 + 1  # the film's own range, 12 bits
            assert page.locator("#overlay-pane").is_visible() and page.locator("#legend").is_visible()
            assert "relative contribution to x" in page.locator("#legend").inner_text()
            # Aspect ratio kept: the fitted film is 900 high, 520 wide on the canvas.
            canvas = page.locator("#film").bounding_box()
            assert view["scale"] == pytest.approx(min(canvas["width"] / 520, canvas["height"] / 900), rel=0.02)

            # Window/level: a narrower window around the tissue changes the canvas's grey values.
            x, y = int(canvas["width"] / 2 - 0.1 * canvas["height"]), int(canvas["height"] / 2 + 60)
            before = page.evaluate(PIXEL, [x, y])
            page.locator("#window").fill("400")
            page.locator("#level").fill("1500")
            page.locator("#level").dispatch_event("input")
            after = page.evaluate(PIXEL, [x, y])
            assert before[:3] != after[:3], (before, after)
            view = page.evaluate("({...window.filmViewer.view})")
            assert view["window"] == 400 and view["level"] == 1500
            # Right-button drag windows too.
            drag(page, canvas, 80, -40, button="right")
            windowed = page.evaluate("({...window.filmViewer.view})")
            assert windowed["window"] > 400 and windowed["level"] < 1500
            save(page, tmp_path, "standalone-windowed")

            # Wheel zoom about the cursor, drag to pan, both panes together; double-click fits again.
            page.mouse.move(canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] / 2)
            page.mouse.wheel(0, -600)
            zoomed = page.evaluate("({...window.filmViewer.view})")
            assert zoomed["scale"] > 1.5 * view["scale"] and not zoomed["fitted"]
            drag(page, canvas, 120, 50)
            panned = page.evaluate("({...window.filmViewer.view})")
            assert panned["x"] == pytest.approx(zoomed["x"] + 120, abs=2)
            assert panned["y"] == pytest.approx(zoomed["y"] + 50, abs=2)
            save(page, tmp_path, "standalone-zoomed")
            page.locator("#film").dblclick()
            assert page.evaluate("window.filmViewer.view.fitted")
            page.locator("#fv").press("+")
            assert page.evaluate("window.filmViewer.view.scale") > view["scale"]
            page.locator("#fv").press("0")
            assert page.evaluate("window.filmViewer.view.fitted")

            # Opacity 0: the overlay pane is the plain film; opacity 1: the heat's colour where the map is high.
            view = page.evaluate("({...window.filmViewer.view})")
            hot = [round(view["x"] + 111 * view["scale"]), round(view["y"] + 450 * view["scale"])]  # heat[3, 1]
            read = """([x, y]) => Array.from(document.getElementById("overlaid").getContext("2d")
                .getImageData(x, y, 1, 1).data)"""
            page.locator("#opacity").fill("0")
            plain = page.evaluate(read, hot)
            page.locator("#opacity").fill("1")
            coloured = page.evaluate(read, hot)
            assert plain[0] == plain[1] == plain[2] and coloured[:3] != plain[:3], (plain, coloured)
            assert page.locator("#error").inner_text() == ""
        finally:
            browser.close()


@pytest.fixture
def dashboard_url(served_run, tmp_path) -> Iterator[str]:
    """The dashboard on ``served_run``, served by a real Streamlit process on a free port."""
    settings = logic.DashboardSettings((served_run,), blind_n=3)
    with running_dashboard(settings, tmp_path, START_TIMEOUT_S) as url:
        yield url


def test_an_upload_in_the_dashboard_viewer_changes_opacity_without_a_rerun(dashboard_url, upload_png, tmp_path):
    upload = tmp_path / "mammogram.png"
    upload.write_bytes(upload_png)
    sent: list[object] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(payload)))
            page.goto(dashboard_url)
            page.get_by_role("tab", name="Upload & explain").click()
            page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(upload)
            page.get_by_text("Answer:").wait_for()
            page.get_by_text("Heatmap: gradcam").wait_for()
            iframe = page.locator('[data-testid="stMain"] iframe').last
            iframe.scroll_into_view_if_needed()
            frame = iframe.element_handle().content_frame()
            frame.wait_for_function("window.filmViewer && window.filmViewer.ready")
            page.wait_for_timeout(500)
            frame.evaluate("window.__loadedOnce = true")
            save(page, tmp_path, "dashboard-upload")

            # Zoom and pan with the mouse, change the opacity: all in the browser.
            sent.clear()
            canvas = frame.locator("#film").bounding_box()
            fitted = frame.evaluate("({...window.filmViewer.view})")
            page.mouse.move(canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] / 3)
            page.mouse.wheel(0, -500)
            drag(page, canvas, -60, 40)
            view = frame.evaluate("({...window.filmViewer.view})")
            assert view["scale"] > fitted["scale"] and not view["fitted"]
            draws = frame.evaluate("window.filmViewer.draws")
            frame.locator("#opacity").fill("0.2")
            frame.locator("#opacity").fill("0.9")
            page.wait_for_timeout(1500)  # a rerun, had there been one, would have been sent by now
            assert frame.evaluate("window.filmViewer.view.opacity") == pytest.approx(0.9)
            assert frame.evaluate("window.filmViewer.draws") > draws
            assert frame.evaluate("window.__loadedOnce === true")  # the viewer was not reloaded
            assert sent == [], f"{len(sent)} messages went to the Streamlit server: a rerun"
            assert page.locator('[data-testid="stStatusWidget"]').get_by_text("Running").count() == 0
            save(page, tmp_path, "dashboard-zoomed")
            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            browser.close()
