"""Render a report in headless Chromium and read back what the page really shows.

A copy of the page gets a script that waits for the load event, then writes what decoded into
the DOM (``--dump-dom`` prints the DOM after that). Tests skip when Chromium is absent (CI
installs Debian's ``chromium``: see ``.ci/run``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

_PROBE = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const images = Array.from(document.images);
  const result = {
    images: images.length,
    decoded: images.filter(i => i.complete && i.naturalWidth > 0).length,
    plotly: document.querySelectorAll(".plotly-figure .main-svg, .plotly-figure canvas").length,
    tables: document.querySelectorAll("table").length,
    headings: Array.from(document.querySelectorAll("h2")).map(h => h.textContent),
  };
  const out = document.createElement("pre");
  out.id = "render-probe";
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
}, 500));
</script>"""

_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=15000",
]


def chromium() -> str:
    """The Chromium executable, or skip the test."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("headless Chromium is not installed (CI installs Debian's chromium)")


def render(report: Path, tmp_path: Path) -> dict:
    """What Chromium shows of ``report``: image count and how many decoded, plotly plots drawn, tables, headings."""
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", _PROBE + "</body>"))
    command = [chromium(), *_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", "--dump-dom", probe.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    match = re.search(r'<pre id="render-probe">(.*?)</pre>', done.stdout, re.S)
    assert match, f"Chromium did not render the page: {done.stderr[-2000:]}"
    return json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def free_port() -> int:
    """A TCP port nothing listens on now (for a server a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_dashboard(settings: object, tmp_path: Path, start_timeout_s: float = 120) -> Iterator[str]:
    """The dashboard for ``settings`` (a ``DashboardSettings``), served by a real Streamlit process on a
    free port, exactly as ``mammocad dashboard`` execs it; yields its URL and stops it afterwards."""
    from mammocad.cli.dashboard import streamlit_command
    from mammocad.dashboard.settings import settings_env

    port = free_port()
    log = (tmp_path / "streamlit.log").open("w")
    server = subprocess.Popen(
        streamlit_command("127.0.0.1", port),
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **settings_env(settings)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
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
