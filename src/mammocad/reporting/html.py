"""A small builder for self-contained HTML reports.

Everything is inlined (CSS, PNG figures as data URIs), so a report is one file that opens
offline and can be mailed or archived with the run it describes.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammocad.io import atomic_write_text

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#1d2430;line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem;border-bottom:2px solid #2b6cb0;padding-bottom:.3rem}
h2{font-size:1.25rem;margin-top:2rem;color:#2b6cb0}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem}
th,td{border:1px solid #cbd5e0;padding:.25rem .6rem;text-align:right}
th{background:#edf2f7}td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:.4rem;vertical-align:top;text-align:center}
figure img{max-width:100%;border:1px solid #cbd5e0}
figcaption{font-size:.8rem;color:#4a5568;max-width:260px;margin:auto;overflow-wrap:anywhere}
.note{background:#fffbea;border-left:4px solid #d69e2e;padding:.5rem .8rem;font-size:.9rem}
.grid{display:flex;flex-wrap:wrap}
pre{background:#f7fafc;padding:.6rem;white-space:pre-wrap;overflow-wrap:anywhere;font-size:.8rem}
.fitness{border:3px solid #c53030;background:#fff5f5;padding:.7rem 1rem;margin:1rem 0;border-radius:4px}
.fitness.ok{border-color:#2b6cb0;background:#ebf8ff}
.fitness strong{font-size:1.1rem;color:#9b2c2c}.fitness.ok strong{color:#2c5282}
.fitness ul{margin:.4rem 0 0;padding-left:1.2rem}
"""


def png_data_uri(png: bytes) -> str:
    """A ``data:`` URI for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_to_png(figure: Any, dpi: int = 110) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it (figures are not kept alive)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def array_to_png(pixels: np.ndarray) -> bytes:
    """Encode a uint8 grey or RGB array (RGB order) as PNG bytes."""
    import cv2

    if pixels.ndim == 3:
        pixels = pixels[:, :, ::-1]
    ok, buffer = cv2.imencode(".png", pixels)
    if not ok:
        raise ValueError(f"PNG encoding failed for array {pixels.shape} {pixels.dtype}")
    return buffer.tobytes()


@dataclass
class HtmlReport:
    """Accumulate sections, then :meth:`write` one HTML file."""

    title: str
    parts: list[str] = field(default_factory=list)
    needs_plotly: bool = False

    def heading(self, text: str) -> HtmlReport:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")
        return self

    def paragraph(self, text: str, note: bool = False) -> HtmlReport:
        css = ' class="note"' if note else ""
        self.parts.append(f"<p{css}>{html.escape(text)}</p>")
        return self

    def preformatted(self, text: str) -> HtmlReport:
        self.parts.append(f"<pre>{html.escape(text)}</pre>")
        return self

    def table(self, frame: pd.DataFrame, index: bool = True, float_format: str = "{:.3f}") -> HtmlReport:
        formatters = {c: float_format.format for c in frame.columns if pd.api.types.is_float_dtype(frame[c])}
        self.parts.append(frame.to_html(index=index, border=0, formatters=formatters, escape=True))
        return self

    def figure(self, png: bytes, caption: str = "", width: int | None = None) -> HtmlReport:
        style = f' style="width:{width}px"' if width else ""
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.parts.append(f'<figure{style}><img alt="{html.escape(caption)}" src="{png_data_uri(png)}">{cap}</figure>')
        return self

    def gallery(self, items: list[tuple[bytes, str]], width: int = 200) -> HtmlReport:
        self.parts.append('<div class="grid">')
        for png, caption in items:
            self.figure(png, caption, width=width)
        self.parts.append("</div>")
        return self

    def plotly(self, fragment: str) -> HtmlReport:
        """An interactive plotly figure (``fig.to_html(full_html=False, include_plotlyjs=False)``).

        plotly.js is inlined once in the page head, so the report still opens offline.
        """
        self.needs_plotly = True
        self.parts.append(f'<div class="plotly-figure">{fragment}</div>')
        return self

    def fitness(self, card: dict[str, Any]) -> HtmlReport:
        """A prominent box: a model card's headline, what the model is fit for, and its warnings.

        ``card``: :func:`mammocad.training.model_card.model_card` of the run (or a dict with ``headline``,
        ``fit_for`` and ``warnings``). Red unless the card has no warning beyond the research notice."""
        warnings = [str(w) for w in card.get("warnings") or []]
        serious = [w for w in warnings if not w.startswith("Research software")]
        items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
        fit = f"<br>Fit for: {html.escape(str(card['fit_for']))}" if card.get("fit_for") else ""
        self.parts.append(
            f'<div class="fitness{"" if serious else " ok"}" role="alert"><strong>'
            f"{html.escape(str(card.get('headline') or 'Model fitness unknown'))}</strong>{fit}<ul>{items}</ul></div>"
        )
        return self

    def raw(self, fragment: str) -> HtmlReport:
        """Trusted HTML built by mammocad itself (never user text: that goes through paragraph)."""
        self.parts.append(fragment)
        return self

    def render(self) -> str:
        body = "\n".join(self.parts)
        title = html.escape(self.title)
        script = ""
        if self.needs_plotly:
            from plotly.offline import get_plotlyjs

            script = f'<script type="text/javascript">{get_plotlyjs()}</script>'
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{title}</title><style>{_CSS}</style>{script}</head>"
            f"<body><h1>{title}</h1>\n{body}\n</body></html>\n"
        )

    def write(self, path: str | Path) -> Path:
        """Write the report atomically; returns the path."""
        return atomic_write_text(path, self.render())
