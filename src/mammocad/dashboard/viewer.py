"""A radiologist-style film viewer for the dashboard: one offline HTML/JS canvas component.

:func:`film_viewer` shows a film at its own aspect ratio, with mouse-wheel zoom about the
cursor, drag to pan, double-click (or ``0``) to fit, ``+``/``-`` to zoom, and window/level
(right-button drag or the sliders) computed in the browser from the film's own grey values
(16-bit data stays 16-bit). With an overlay, the plain film and the film under the overlay sit
side by side on two canvases that share zoom and pan; the overlay's opacity is a browser slider,
so changing it never reruns the Streamlit script.

Payload: the grey film is sent as raw little-endian samples (``uint8`` or ``uint16``),
zlib-compressed and base64-encoded, and inflated in the browser with ``DecompressionStream``
(Chromium 80+, Firefox 113+, Safari 16.4+); the overlay as an RGBA PNG. Films whose long side
exceeds :data:`MAX_VIEW_SIDE` are downsampled (area averaging) to that side before sending, and
the viewer states the scale ("shown at 51 % of 4000×3000"). A 2048×1536 16-bit film is 6 MiB
raw, typically 2–4 MiB compressed. Nothing is fetched from a CDN: the page is self-contained.
"""

from __future__ import annotations

import base64
import html
import json
import zlib
from typing import NotRequired, TypedDict, Unpack

import cv2
import numpy as np
import streamlit.components.v1 as components

#: Longest side (pixels) sent to the browser; larger films are downsampled and the scale is shown.
MAX_VIEW_SIDE = 2048
#: The viewer's default height (pixels).
DEFAULT_HEIGHT = 720


class ViewerOptions(TypedDict):
    """How :func:`film_viewer` (and :func:`viewer_html`) shows a film, besides the film and its overlay.

    - ``key``: a name unique on the page (keeps zoom, window/level and opacity of this film across
      reruns, in the browser's session storage);
    - ``height``: the component's height in pixels (default :data:`DEFAULT_HEIGHT`);
    - ``caption``: a line under the viewer;
    - ``colorbar``: the overlay's legend, e.g. ``{"label": "relative contribution to malignant",
      "colors": ["#000004", ..., "#fcffa4"], "low": "low", "high": "high"}``
      (:func:`mammocad.explain.overlay.colorbar_spec` makes one).
    """

    key: str
    height: NotRequired[int]
    caption: NotRequired[str | None]
    colorbar: NotRequired[dict | None]


def _grey(film: np.ndarray) -> tuple[np.ndarray, int]:
    """The film as 2-D uint8 or uint16 samples and the largest representable value (255 or 65535)."""
    array = np.asarray(film)
    if array.ndim == 3:
        if array.shape[2] == 1:
            array = array[..., 0]
        else:  # colour: its luminance (a mammogram is grey; an RGB export is three equal channels)
            array = cv2.cvtColor(np.ascontiguousarray(array[..., :3]), cv2.COLOR_RGB2GRAY)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"film_viewer needs a 2-D grey film, got shape {np.asarray(film).shape}")
    if array.dtype == np.uint8:
        return array, 255
    if array.dtype == np.uint16:
        return array, 65535
    if np.issubdtype(array.dtype, np.floating):
        finite = np.nan_to_num(array.astype(np.float32))
        low, high = float(finite.min()), float(finite.max())
        if low >= 0.0 and high <= 1.0:  # a unit-range image: keep it unit-range
            low, high = 0.0, 1.0
        scaled = (finite - low) / max(high - low, 1e-12)
        return np.rint(scaled * 65535).astype(np.uint16), 65535
    # other integers (int16/int32 DICOM): shift to zero, keep 16 bits of range
    values = array.astype(np.int64)
    values = values - values.min()
    top = int(values.max())
    if top > 65535:
        values = values * 65535 // top
    return values.astype(np.uint16), 65535


def _fit(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if array.shape[:2] == shape:
        return array
    interpolation = cv2.INTER_AREA if array.shape[0] > shape[0] else cv2.INTER_LINEAR
    return cv2.resize(array, (shape[1], shape[0]), interpolation=interpolation)


def viewer_payload(film: np.ndarray, overlay_rgba: np.ndarray | None = None) -> dict:
    """What the page receives: grey samples (zlib + base64), their size, bit depth, scale, and the overlay PNG."""
    grey, max_value = _grey(film)
    height, width = grey.shape
    scale = min(1.0, MAX_VIEW_SIDE / max(height, width))
    shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    shown = _fit(grey, shape)
    samples = shown.astype("<u2" if shown.dtype == np.uint16 else np.uint8).tobytes()
    payload = {
        "width": shape[1],
        "height": shape[0],
        "bits": 16 if shown.dtype == np.uint16 else 8,
        "max": max_value,
        "original": [width, height],
        "scale": scale,
        # the default window: the film's own range (a 12-bit DICOM in 16-bit samples would look black otherwise)
        "range": [int(shown.min()), int(shown.max())],
        "data": base64.b64encode(zlib.compress(samples, 6)).decode("ascii"),
        "overlay": None,
    }
    if overlay_rgba is not None:
        rgba = np.asarray(overlay_rgba)
        if rgba.ndim != 3 or rgba.shape[2] != 4:
            raise ValueError(f"overlay_rgba must be (H, W, 4), got {rgba.shape}")
        if rgba.dtype != np.uint8:
            rgba = np.rint(np.clip(rgba.astype(np.float32), 0.0, 1.0) * 255).astype(np.uint8)
        rgba = _fit(rgba, shape)
        ok, png = cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
        if not ok:
            raise ValueError("could not encode the overlay")
        payload["overlay"] = base64.b64encode(png.tobytes()).decode("ascii")
    return payload


def viewer_html(film: np.ndarray, overlay_rgba: np.ndarray | None = None, **options: Unpack[ViewerOptions]) -> str:
    """The self-contained page :func:`film_viewer` renders (no network access needed)."""
    unknown = set(options) - set(ViewerOptions.__annotations__)
    if unknown:  # what a keyword-only signature would refuse
        raise TypeError(f"unknown film viewer option(s): {', '.join(sorted(unknown))}")
    if "key" not in options:
        raise TypeError("film viewer: missing required option 'key'")
    payload = viewer_payload(film, overlay_rgba)
    key = options["key"]
    height = options.get("height", DEFAULT_HEIGHT)
    config = {
        "key": key,
        "height": height,
        "caption": options.get("caption") or "",
        "colorbar": options.get("colorbar"),
    }
    data = json.dumps(payload).replace("</", "<\\/")
    settings = json.dumps(config).replace("</", "<\\/")
    return (
        _PAGE.replace("__KEY__", html.escape(key))
        .replace("__PAYLOAD__", data)
        .replace("__CONFIG__", settings)
        .replace("__CANVAS_H__", str(max(120, height - 110)))
    )


def film_viewer(film: np.ndarray, overlay_rgba: np.ndarray | None = None, **options: Unpack[ViewerOptions]) -> None:
    """Show ``film`` in the browser viewer (zoom, pan, window/level), with ``overlay_rgba`` beside it if given.

    Args:
        film: the grey film, (H, W) ``uint8``/``uint16``/float (floats in [0, 1] kept as such,
            others min-max scaled) or (H, W, 3) RGB (shown as its luminance).
        overlay_rgba: an (h, w, 4) RGBA picture over the film (``uint8`` or float in [0, 1]),
            resized to the film's shown size; shown on a second canvas, blended in the browser.
        options: ``key`` (required), ``height``, ``caption``, ``colorbar``: see :class:`ViewerOptions`.
    """
    components.html(viewer_html(film, overlay_rgba, **options), height=options.get("height", DEFAULT_HEIGHT))


_PAGE = r"""<!doctype html>
<html><head><meta charset="utf-8"><style>
  body { margin: 0; font: 13px system-ui, sans-serif; color: #ddd; background: #111; }
  #fv { outline: none; }
  .row { display: flex; gap: 6px; }
  .pane { flex: 1 1 0; position: relative; min-width: 0; }
  .pane canvas { width: 100%; height: __CANVAS_H__px; display: block; background: #000; cursor: grab; }
  .pane .tag { position: absolute; left: 6px; top: 4px; background: rgba(0,0,0,.6); padding: 1px 6px;
    border-radius: 3px; pointer-events: none; }
  .bar { display: flex; flex-wrap: wrap; gap: 14px; align-items: center; padding: 4px 2px; }
  .bar label { display: flex; align-items: center; gap: 4px; }
  .bar input[type=range] { width: 130px; }
  .legend { display: flex; align-items: center; gap: 6px; }
  .legend .ramp { width: 160px; height: 12px; border: 1px solid #666; }
  button { background: #333; color: #ddd; border: 1px solid #555; border-radius: 3px; padding: 1px 8px; }
  #caption, #status { color: #aaa; padding: 0 2px; }
  #error { color: #f66; }
</style></head><body>
<div id="fv" tabindex="0" data-key="__KEY__">
  <div class="row" id="panes">
    <div class="pane"><canvas id="film"></canvas><span class="tag">film</span></div>
    <div class="pane" id="overlay-pane" hidden><canvas id="overlaid"></canvas><span class="tag">overlay</span></div>
  </div>
  <div class="bar">
    <label>window <input id="window" type="range" min="1" step="1"></label>
    <label>level <input id="level" type="range" min="0" step="1"></label>
    <button id="reset-wl" title="the film's own range">reset W/L</button>
    <label id="opacity-box" hidden>opacity <input id="opacity" type="range" min="0" max="1" step="0.05"
      value="0.5"></label>
    <span class="legend" id="legend" hidden><span id="legend-low"></span><span class="ramp" id="ramp"></span>
      <span id="legend-high"></span><span id="legend-label"></span></span>
    <button id="fit" title="double-click or 0">fit</button>
  </div>
  <div id="status"></div>
  <div id="caption"></div>
  <div id="error"></div>
</div>
<script>
const P = __PAYLOAD__;
const C = __CONFIG__;
const $ = id => document.getElementById(id);
const root = $("fv");
// Kept per viewer key and film (a new film under the same key starts fitted, at its own window).
const store = ["mammocad-film-viewer", C.key, P.width, P.height, P.range.join("-"), P.data.length].join(":");
const autoWindow = Math.max(1, P.range[1] - P.range[0] + 1), autoLevel = (P.range[0] + P.range[1] + 1) / 2;
const view = { scale: 1, x: 0, y: 0, fitted: true, window: autoWindow, level: autoLevel, opacity: 0.5 };
let samples = null, overlay = null, rendered = null;
const canvases = [$("film"), $("overlaid")];
// For tests and debugging: the viewer's state, read from the page.
window.filmViewer = { view, payload: { width: P.width, height: P.height, bits: P.bits, scale: P.scale }, ready: false,
  draws: 0 };

function b64bytes(text) {
  const raw = atob(text), out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}
async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}
function restore() {
  try { Object.assign(view, JSON.parse(sessionStorage.getItem(store) || "{}")); } catch (e) {}
}
function save() {
  try { sessionStorage.setItem(store, JSON.stringify(view)); } catch (e) {}
}

// Window/level: grey value v -> clamp((v - (level - window/2)) / window) * 255, from the film's own samples.
function renderFilm() {
  const n = P.width * P.height, lut = new Uint8ClampedArray(P.max + 1);
  const low = view.level - view.window / 2;
  for (let v = 0; v <= P.max; v++) lut[v] = Math.round(((v - low) / view.window) * 255);
  if (!rendered) {
    rendered = document.createElement("canvas");
    rendered.width = P.width; rendered.height = P.height;
  }
  const ctx = rendered.getContext("2d"), image = ctx.createImageData(P.width, P.height), px = image.data;
  for (let i = 0, j = 0; i < n; i++, j += 4) {
    const g = lut[samples[i]];
    px[j] = px[j + 1] = px[j + 2] = g; px[j + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
}

function sizeCanvases() {
  for (const c of canvases) {
    const r = c.getBoundingClientRect();
    const w = Math.max(1, Math.round(r.width * devicePixelRatio)), h = Math.max(1, Math.round(r.height * devicePixelRatio));
    if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
  }
}
function fit() {
  const c = canvases[0];
  view.scale = Math.min(c.width / P.width, c.height / P.height);
  view.x = (c.width - P.width * view.scale) / 2;
  view.y = (c.height - P.height * view.scale) / 2;
  view.fitted = true;
}
function draw() {
  if (!rendered) return;
  sizeCanvases();
  if (view.fitted) fit();
  canvases.forEach((c, k) => {
    if (k === 1 && !overlay) return;
    const ctx = c.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, c.width, c.height);
    ctx.setTransform(view.scale, 0, 0, view.scale, view.x, view.y);
    ctx.imageSmoothingEnabled = view.scale < 4;  // past 4x show the pixels as they are
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(rendered, 0, 0);
    if (k === 1) {
      ctx.globalAlpha = view.opacity;
      ctx.imageSmoothingEnabled = true;
      ctx.drawImage(overlay, 0, 0, P.width, P.height);
      ctx.globalAlpha = 1;
    }
  });
  const [ow, oh] = P.original;
  $("status").textContent = (P.scale < 1 ? `shown at ${Math.round(P.scale * 100)} % of ${ow}×${oh} px` :
    `${ow}×${oh} px`) + ` · ${P.bits}-bit · zoom ${Math.round(view.scale * P.scale * 100 / devicePixelRatio)} %` +
    ` · W ${Math.round(view.window)} L ${Math.round(view.level)}` +
    " · wheel: zoom · drag: pan · right-drag: window/level · double-click or 0: fit · +/-: zoom";
  root.dataset.scale = view.scale.toFixed(4);
  root.dataset.x = view.x.toFixed(1);
  root.dataset.y = view.y.toFixed(1);
  window.filmViewer.draws += 1;
  save();
}

function zoomAt(factor, cx, cy) {
  const s = Math.min(64, Math.max(0.02, view.scale * factor));
  view.x = cx - (cx - view.x) * (s / view.scale);
  view.y = cy - (cy - view.y) * (s / view.scale);
  view.scale = s; view.fitted = false; draw();
}
function setWindowLevel(w, l) {
  view.window = Math.min(P.max + 1, Math.max(1, w));
  view.level = Math.min(P.max, Math.max(0, l));
  $("window").value = view.window; $("level").value = view.level;
  renderFilm(); draw();
}

function wire() {
  for (const c of canvases) {
    c.addEventListener("wheel", e => {
      e.preventDefault();
      const r = c.getBoundingClientRect();
      zoomAt(Math.exp(-e.deltaY * 0.0015), (e.clientX - r.left) * devicePixelRatio, (e.clientY - r.top) * devicePixelRatio);
    }, { passive: false });
    c.addEventListener("contextmenu", e => e.preventDefault());
    c.addEventListener("dblclick", () => { view.fitted = true; draw(); });
    c.addEventListener("pointerdown", e => {
      c.setPointerCapture(e.pointerId);
      const start = { x: e.clientX, y: e.clientY, vx: view.x, vy: view.y, w: view.window, l: view.level };
      const windowing = e.button === 2;
      c.style.cursor = windowing ? "crosshair" : "grabbing";
      const move = m => {
        const dx = m.clientX - start.x, dy = m.clientY - start.y;
        if (windowing) {  // right: wider window, down: higher level (as on a PACS)
          const step = autoWindow / 256;  // the film's own range, not the sample type's
          setWindowLevel(start.w + dx * step, start.l + dy * step);
        } else {
          view.x = start.vx + dx * devicePixelRatio; view.y = start.vy + dy * devicePixelRatio;
          view.fitted = false; draw();
        }
      };
      const up = () => { c.removeEventListener("pointermove", move); c.removeEventListener("pointerup", up);
        c.style.cursor = "grab"; };
      c.addEventListener("pointermove", move);
      c.addEventListener("pointerup", up);
    });
  }
  root.addEventListener("keydown", e => {
    const c = canvases[0];
    if (e.key === "+" || e.key === "=") zoomAt(1.25, c.width / 2, c.height / 2);
    else if (e.key === "-") zoomAt(0.8, c.width / 2, c.height / 2);
    else if (e.key === "0") { view.fitted = true; draw(); }
    else return;
    e.preventDefault();
  });
  $("fit").onclick = () => { view.fitted = true; draw(); };
  $("window").oninput = e => setWindowLevel(+e.target.value, view.level);
  $("level").oninput = e => setWindowLevel(view.window, +e.target.value);
  $("reset-wl").onclick = () => setWindowLevel(autoWindow, autoLevel);
  $("opacity").oninput = e => { view.opacity = +e.target.value; draw(); };
  new ResizeObserver(() => draw()).observe(canvases[0]);
}

async function start() {
  try {
    if (typeof DecompressionStream === "undefined") throw new Error("this browser lacks DecompressionStream");
    const bytes = await inflate(b64bytes(P.data));
    samples = P.bits === 16 ? new Uint16Array(bytes.buffer, 0, P.width * P.height) : bytes;
    if (P.overlay) {
      overlay = new Image();
      overlay.src = "data:image/png;base64," + P.overlay;
      await overlay.decode();
      $("overlay-pane").hidden = false; $("opacity-box").hidden = false;
    }
    if (C.colorbar) {
      const bar = C.colorbar;
      $("ramp").style.background = `linear-gradient(to right, ${bar.colors.join(", ")})`;
      $("legend-low").textContent = bar.low || "low";
      $("legend-high").textContent = bar.high || "high";
      $("legend-label").textContent = bar.label || "";
      $("legend").hidden = false;
    }
    $("caption").textContent = C.caption;
    restore();
    // Slider ranges around the film's own values (a 12-bit film in 16-bit samples uses 1/16 of 0..65535).
    $("window").max = Math.min(P.max + 1, 2 * autoWindow);
    $("level").min = Math.max(0, Math.floor(P.range[0] - autoWindow / 2));
    $("level").max = Math.min(P.max, Math.ceil(P.range[1] + autoWindow / 2));
    $("opacity").value = view.opacity;
    $("window").value = view.window; $("level").value = view.level;
    renderFilm(); wire(); draw();
    window.filmViewer.ready = true;
    root.dataset.ready = "1";
  } catch (err) {
    $("error").textContent = "The viewer could not show this film: " + err;
  }
}
start();
</script></body></html>
"""
