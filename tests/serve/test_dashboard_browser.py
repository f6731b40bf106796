"""The real dashboard (``streamlit run``) in headless Chromium: a reader study and an upload, with screenshots.

Skips when Debian's Chromium (``/usr/bin/chromium``, installed by CI) or Playwright is missing.
Screenshots land in the test's tmp_path, and also in $MAMMOCAD_SCREENSHOT_DIR when it is set.
The reader study: 8 cases (the 20-case session is in test_reader_study.py), keyboard answers, a reload
midway that resumes, the layout at 1440×900 and 900×900 (Next in view, nothing overlapping), CSV
download and the scores against the model once finished.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mammocad.dashboard import logic
from tests.browser import running_dashboard

CHROMIUM = Path("/usr/bin/chromium")
START_TIMEOUT_S = 60
# The first page view imports torch and loads the model in the server: allow for a slow CI machine.
PAGE_TIMEOUT_MS = 60_000
STUDY_CASES = 8

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (CI installs Debian's chromium)"
)


@pytest.fixture
def dashboard_url(served_run, tmp_path) -> Iterator[str]:
    """The dashboard on ``served_run``, served by a real Streamlit process on a free port."""
    settings = logic.DashboardSettings((served_run,), blind_n=STUDY_CASES, study_dir=tmp_path / "study")
    with running_dashboard(settings, tmp_path, START_TIMEOUT_S) as url:
        yield url


def screenshot(page: sync_api.Page, tmp_path: Path, name: str, full_page: bool = False) -> None:
    """What the window shows (``full_page``: the whole page), in tmp_path and $MAMMOCAD_SCREENSHOT_DIR."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=path, full_page=full_page)
    if os.environ.get("MAMMOCAD_SCREENSHOT_DIR"):
        target = Path(os.environ["MAMMOCAD_SCREENSHOT_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / f"dashboard-{name}.png")


def case_heading(page: sync_api.Page, number: int) -> None:
    page.get_by_text(f"Case {number} of {STUDY_CASES}", exact=False).first.wait_for()


def check_layout(page: sync_api.Page, width: int, height: int) -> None:
    """Save & next in the window without scrolling; the film and the answer controls side by side, not overlapping."""
    page.evaluate("window.scrollTo(0, 0)")
    controls = page.locator(".st-key-rs_controls").bounding_box()
    film = page.locator('[data-testid="stMain"] iframe').first.bounding_box()
    button = page.locator(".st-key-rs_next button").first.bounding_box()
    assert controls and film and button
    assert button["y"] >= 0 and button["y"] + button["height"] <= height, (button, height)
    assert button["x"] + button["width"] <= width
    assert film["x"] + film["width"] <= controls["x"] + 1, (film, controls)  # beside, not under or over
    assert film["y"] + film["height"] <= height + 1, (film, height)


def press_until(page: sync_api.Page, key: str, selector: str, tries: int = 5) -> None:
    """Press ``key`` until ``selector`` shows: a key pressed while the app reruns can reach the previous page."""
    for _ in range(tries):
        page.locator("body").press(key)
        try:
            page.locator(selector).first.wait_for(timeout=4000)
            return
        except sync_api.TimeoutError:
            continue
    page.locator(selector).first.wait_for()


def answer_with_keys(page: sync_api.Page, klass: int, rating: int, then: str) -> None:
    """1/2/3 picks the class, then 1-5 the rating, Enter saves and moves on (Streamlit's button shortcuts)."""
    press_until(page, str(klass), f'.st-key-rs_class_{klass} [data-testid="stBaseButton-primary"]')
    press_until(page, str(rating), f'.st-key-rs_rating_{rating} [data-testid="stBaseButton-primary"]')
    sync_api.expect(page.locator(".st-key-rs_next button").first).to_be_enabled()
    press_until(page, "Enter", f"text={then}")


def test_reader_study_and_upload_in_a_browser(dashboard_url, served_run, upload_png, tmp_path):
    upload = tmp_path / "mammogram.png"
    upload.write_bytes(upload_png)
    answers = tmp_path / "study" / f"{served_run.name}-test-n{STUDY_CASES}-s0" / "readers" / "dr-k.jsonl"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900}, accept_downloads=True)
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.goto(dashboard_url)

            # Identify, then read: the original film beside the answer controls.
            page.get_by_label("Your name or initials").fill("Dr K")
            page.get_by_role("button", name="Start or resume reading").click()
            case_heading(page, 1)
            page.locator('[data-testid="stMain"] iframe').first.wait_for()
            page.wait_for_timeout(1500)  # the viewer draws the film
            check_layout(page, 1440, 900)
            screenshot(page, tmp_path, "study-1440x900")
            # Blind: no truth and no reader scores while reading (the banner may quote the model's own metrics).
            assert page.get_by_text("Truth").count() == 0 and page.get_by_text("sensitivity").count() == 0

            # By mouse once, then by keyboard; every answer is on disk as soon as it is given.
            page.locator(".st-key-rs_class_2 button").first.click()
            page.locator('.st-key-rs_class_2 [data-testid="stBaseButton-primary"]').first.wait_for()
            page.locator(".st-key-rs_rating_3 button").first.click()
            page.get_by_label("Note (optional)").fill("calcifications?")
            page.locator(".st-key-rs_next button").first.click()
            case_heading(page, 2)
            assert len(answers.read_text().splitlines()) == 1 and "calcifications?" in answers.read_text()
            for number in (2, 3):
                answer_with_keys(page, 1 + number % 2, 5, f"Case {number + 1} of {STUDY_CASES}")
            assert len(answers.read_text().splitlines()) == 3

            # Reload midway: the same reader resumes at the first unanswered case.
            page.reload()
            case_heading(page, 4)
            page.set_viewport_size({"width": 900, "height": 900})
            page.wait_for_timeout(1500)
            check_layout(page, 900, 900)
            screenshot(page, tmp_path, "study-900x900")

            # "Start over" asks first.
            page.get_by_role("button", name="Start over…").click()
            page.get_by_text("Discard your 3 saved answers").wait_for()
            page.get_by_role("button", name="Cancel").click()
            sync_api.expect(page.get_by_text("Discard your 3 saved answers")).to_have_count(0)
            for number in range(4, STUDY_CASES + 1):
                done = f"Case {number + 1} of {STUDY_CASES}" if number < STUDY_CASES else f"all {STUDY_CASES} cases"
                answer_with_keys(page, 1 + number % 2, 1 + number % 5, done)

            # Finished: the scores against the model, and the answers as CSV.
            page.set_viewport_size({"width": 1440, "height": 900})
            page.get_by_text(f"all {STUDY_CASES} cases read").wait_for()
            page.locator('[data-testid="stDataFrame"]').wait_for()
            page.wait_for_timeout(1000)
            screenshot(page, tmp_path, "study-finished", full_page=True)
            with page.expect_download() as caught:
                page.get_by_role("button", name="Download my answers (CSV)").click()
            download = caught.value
            saved = tmp_path / "download.csv"
            download.save_as(saved)
            rows = saved.read_text().splitlines()
            assert rows[0].startswith("reader,case,answer,rating,scale,note") and len(rows) == STUDY_CASES + 1
            assert download.suggested_filename.endswith("-dr-k.csv")
            assert page.locator('[data-testid="stException"]').count() == 0

            # Upload: any file in, prediction and heatmap overlay out.
            page.get_by_role("tab", name="Upload & explain").click()
            page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(upload)
            page.get_by_text("Answer:").wait_for()
            screenshot(page, tmp_path, "upload")
            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            browser.close()
