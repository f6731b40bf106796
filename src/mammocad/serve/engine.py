"""One trained run, ready to answer: decode uploaded bytes, predict (ONNX Runtime or PyTorch), explain.

The REST API and the dashboard both sit on :class:`InferenceEngine`; nothing here knows about HTTP.

Backends: ``onnx`` runs the run's ONNX export (``mammocad export RUN --onnx``) in ONNX Runtime,
``torch`` the PyTorch model; ``auto`` times both on a single image at start-up when a current
export exists and keeps the faster (ONNX Runtime, on this 2-core CPU, for every model measured
by ``mammocad bench serve``). Heatmaps always use PyTorch, which has the gradients.

Thread safety: model calls are serialised by one lock (a CAM hooks the shared model, and parallel
CPU inference only oversubscribes the cores); decoding and preprocessing run in parallel.

Memory: each upload's decode reserves, from its header, an estimate of what decoding and
preprocessing it allocate (:func:`~mammocad.data.decode_budget.decode_estimate`) plus, when its original
is kept for a heatmap, what the heatmap allocates (:func:`explain_estimate`); the image holds that
share until :meth:`InferenceEngine.explain` is done with it (or it is dropped). One upload over the
decode budget is refused (ImageReadError "too large to decode", a 413 in the API); decodes waiting
for room go on when the reservations fit into the budget together
(:class:`~mammocad.data.decode_budget.DecodeGate`), so N large uploads cost at most the budget, not N times it.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mammocad.data.images import (
    DEFAULT_MAX_PIXELS,
    DecodeGate,
    decode_estimate,
    probe_image,
)
from mammocad.data.images import (
    decode_budget_mb as resolve_decode_budget,
)
from mammocad.devices import cpu_has_fast_bf16, inference_autocast
from mammocad.errors import ConfigError, ImageReadError, MammocadError
from mammocad.explain.cam import CAM_METHODS, cams_and_logits, lesion_heatmaps, target_layer
from mammocad.explain.display import MAX_OVERLAY_SIDE
from mammocad.explain.overlay import encode_png, heatmap_meaning, heatmap_picture, is_class_agnostic
from mammocad.parse import echo, parse_int
from mammocad.preprocess import Geometry
from mammocad.preprocess.pipeline import to_unit
from mammocad.serve.export import VARIANTS, model_version, ort_session, read_export, variant_path
from mammocad.training.predict import Box, LoadedRun, load_run, prepare_image

BACKENDS = ("auto", "onnx", "torch")
#: Methods an engine explains with (the CAM family; activation maps and Lesion/Background stay in ``mammocad explain``).
EXPLAIN_METHODS = tuple(CAM_METHODS)
#: What a heatmap allocates per original pixel (the heatmap and crop mask on the original grid, 4 + 4)
#: and per overlay pixel (at most MAX_OVERLAY_SIDE a side: float RGB blends, PNG encoding). Measured
#: peaks over the decoded image: 560 MB for a 7745x7745 PNG, 210 MB for a 4560x2864 DICOM.
EXPLAIN_BYTES_PER_PIXEL = 8
EXPLAIN_BYTES_PER_OVERLAY_PIXEL = 48


@dataclass
class PreparedImage:
    """A decoded, preprocessed upload: the model input and how to map back onto the original."""

    name: str
    tensor: torch.Tensor  # (C, H, W) float in [0, 1]
    geometry: Geometry
    original: np.ndarray | None  # 2-D float32 in [0, 1], the decoded image windowed as in training (None: not kept)
    file_format: str
    #: Gives back the decode-budget share this image holds for its heatmap (None: holds none).
    _hold: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def release(self) -> None:
        """Give back the decode budget held for this image's heatmap (:meth:`InferenceEngine.explain`
        does when it is done; dropping the image does too)."""
        hold, self._hold = self._hold, None
        if hold is not None:
            hold()


@dataclass
class Explanation:
    """A heatmap and the prediction it explains."""

    prediction: str
    probabilities: dict[str, float]
    target: str
    method: str
    layer: str
    heatmap: np.ndarray  # on the model-input grid, [0, 1]
    heatmap_original: np.ndarray  # on the original image grid, [0, 1]
    overlay_png: bytes  # the heatmap over the original image
    input_overlay_png: bytes  # the heatmap over the model input
    label: str = ""  # the answer to report: ``prediction``, or ``indeterminate`` below the run's thresholds
    #: Milliseconds per stage of :meth:`InferenceEngine.explain` (``forward_cam``: the one forward +
    #: backward giving probabilities and map; ``map_back``, ``overlay``, ``png``, ``input_overlay``).
    timings_ms: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready fields (no arrays).

        ``heatmap_shape`` is the ``[height, width]`` of ``overlay_png`` as sent (at most
        ``MAX_OVERLAY_SIDE`` a side), ``original_shape`` that of the uploaded image, whatever its format:
        the overlay is the original scaled by ``heatmap_shape / original_shape``.
        """
        return {
            "prediction": self.prediction,
            "label": self.label or self.prediction,
            "probabilities": self.probabilities,
            "target": self.target,
            "method": self.method,
            "layer": self.layer,
            "heatmap_shape": list(png_shape(self.overlay_png)),
            "original_shape": [int(side) for side in self.heatmap_original.shape[:2]],
            "class_agnostic": is_class_agnostic(self.method),
            "meaning": heatmap_meaning(self.method, self.target),
        }


class InferenceEngine:
    """A run directory loaded for serving.

    ``cam_bf16`` (attribute; default ``$MAMMOCAD_CAM_BF16``, else False): compute heatmaps, and the
    probabilities :meth:`explain` reports with them, in one bfloat16-autocast pass where the CPU has
    native bf16 (AVX-512 BF16; elsewhere float32 is used anyway): ~2x faster for ConvNeXt (ICNT);
    maps within 0.02 of float32's on average (0.1 at the worst pixel), probabilities within ~1e-3.
    Off by default: maps, and the probabilities reported with them, stay float32. :meth:`predict` on
    PyTorch runs under bf16 autocast where the CPU has native bf16 (:mod:`mammocad.devices`, as
    ``mammocad evaluate`` measured the run), so its probabilities may differ from the float32 ones by
    ~1e-3; ``MAMMOCAD_CPU_BF16=0`` makes every path float32.

    Args:
        run_dir: a trained run (needs ``model.json`` and its checkpoint; refuses otherwise).
        backend: ``auto``, ``onnx`` (needs a current export: ``mammocad export RUN --onnx``) or ``torch``.
        which: ``best``/``last`` weights (None: the weights the run ended with).
        max_pixels: uploads with more pixels are refused from their header, before decoding.
        threads: intra-op threads for ONNX Runtime and PyTorch (None: library defaults).
        decode_budget_mb: memory (MiB) one upload's decode and heatmap may need, and all of them
            running at once together (None: ``$MAMMOCAD_DECODE_BUDGET_MB``, else the readers' default).
        onnx_variant: which model of the export ONNX Runtime runs: ``fp32`` (the export) or ``int8``
            (``mammocad export RUN --int8``). A variant other than fp32 means the ``onnx`` backend (no
            start-up race); one that failed its parity check against fp32 is refused (MammocadError).
    """

    def __init__(
        self,
        run_dir: str | Path,
        backend: str = "auto",
        which: str | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        threads: int | None = None,
        decode_budget_mb: float | None = None,
        onnx_variant: str = "fp32",
    ) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
        if onnx_variant not in VARIANTS:
            raise ConfigError(f"unknown ONNX variant {onnx_variant!r}; choose from {', '.join(VARIANTS)}")
        if onnx_variant != "fp32" and backend == "torch":
            raise ConfigError(f"the {onnx_variant} variant runs in ONNX Runtime; use --backend onnx (or auto)")
        self.decode_budget_mb = resolve_decode_budget(decode_budget_mb)  # a bad $MAMMOCAD_DECODE_BUDGET_MB fails now
        self._gate = DecodeGate(self.decode_budget_mb)
        self.run: LoadedRun = load_run(run_dir, which)
        self.max_pixels = max_pixels
        self.version = model_version(self.run)
        self._lock = threading.Lock()
        self._session: Any = None
        export = read_export(self.run) if backend != "torch" else None
        if (backend == "onnx" or onnx_variant != "fp32") and export is None:
            raise MammocadError(
                f"{self.run.run_dir} has no current ONNX export; run: mammocad export {self.run.run_dir} --onnx"
            )
        #: The export's model served by ONNX Runtime, with its parity check (None: no export loaded).
        self.onnx_variant: dict[str, Any] | None = None
        if threads:
            torch.set_num_threads(threads)
        #: Start-up timings (ms per single-image prediction) that chose the ``auto`` backend.
        self.backend_timings: dict[str, float] = {}
        if export is not None:
            folder, export_meta = export[0].parent, export[1]
            # Refuses a variant that was never written, failed its parity check or changed since.
            model_file = variant_path(folder, export_meta, onnx_variant)
            self._session = ort_session(model_file, threads)
            entry = export_meta.get("variants", {}).get(onnx_variant, {})
            self.onnx_variant = {"name": onnx_variant, "file": model_file.name, "parity": entry.get("parity")}
            if backend == "auto" and onnx_variant == "fp32":
                self._choose_faster_backend()
        self.backend = "onnx" if self._session is not None else "torch"
        self.cam_bf16 = cam_bf16_from_env()
        if self.backend == "torch":
            self.onnx_variant = None

    def _choose_faster_backend(self) -> None:
        """Keep ONNX Runtime only if it predicts one image faster than PyTorch here (median of 3 after a warm-up)."""
        height, width = self.run.preprocess.image_size
        probe = torch.rand(1, self.run.model.in_chans, height, width, generator=torch.Generator().manual_seed(0))
        session = self._session
        for name, use in (("onnx", session), ("torch", None)):
            self._session = use
            times = []
            for _ in range(4):
                start = time.perf_counter()
                self.predict_tensors(probe)
                times.append(time.perf_counter() - start)
            self.backend_timings[name] = round(statistics.median(times[1:]) * 1000, 2)
        self._session = session if self.backend_timings["onnx"] <= self.backend_timings["torch"] else None

    @property
    def classes(self) -> list[str]:
        return self.run.classes

    @property
    def needs_box(self) -> bool:
        """True for runs trained on mass-centred ROIs: every image needs its lesion box."""
        return self.run.preprocess.mode == "roi"

    def info(self) -> dict[str, Any]:
        """What ``GET /model`` shows: name, version, classes, input, backend, preprocessing."""
        spec = self.run.meta["model"]
        height, width = self.run.preprocess.image_size
        return {
            "name": spec["name"],
            "head": spec.get("head"),
            "version": self.version,
            "run": self.run.run_dir.name,
            "task": self.run.meta.get("task"),
            "classes": self.classes,
            "input": {"channels": self.run.model.in_chans, "height": height, "width": width},
            "preprocess": self.run.meta["preprocess"],
            "needs_lesion_box": self.needs_box,
            "backend": self.backend,
            "backend_timings_ms": self.backend_timings,
            "onnx_variant": self.onnx_variant,
            "explain_methods": list(self.explain_methods),
            "max_pixels": self.max_pixels,
            "decode_budget_mb": self.decode_budget_mb,
        }

    def decode(
        self, data: bytes, name: str = "upload", box: Box | None = None, keep_original: bool = True
    ) -> PreparedImage:
        """Decode and preprocess an uploaded file's bytes (format sniffed from content, never the name).

        ``keep_original`` False leaves ``original`` (4 bytes per pixel, needed by :meth:`explain`) out:
        predictions need only the tensor. Waits while other decodes fill the decode budget.
        Raises ImageReadError (naming ``name`` and the reason) for empty, truncated, non-image,
        oversized (pixels, or memory over the decode budget) or undecodable data, MammocadError when
        an ROI run gets no box.
        """
        if not data:
            raise ImageReadError(name, "file is empty")
        if self.needs_box and box is None:
            raise MammocadError(
                f"{name}: this model was trained on mass-centred ROIs; give the lesion box x0,y0,x1,y1 (original pixels)"
            )
        with tempfile.TemporaryDirectory(prefix="mammocad-upload-") as folder:
            path = Path(folder) / "upload"
            path.write_bytes(data)
            try:
                info = probe_image(path, max_pixels=self.max_pixels, budget_mb=self.decode_budget_mb)
                needed = decode_estimate(info, len(data))
                if keep_original:
                    needed += explain_estimate((info.height, info.width))
                    budget = self.decode_budget_mb
                    if needed > budget * (1 << 20):
                        mb = -(-needed // (1 << 20))
                        raise ImageReadError(
                            name, f"too large to decode: ~{mb:,} MB needed > budget {budget:,.0f} MB (with a heatmap)"
                        )
                release = self._gate.acquire(needed)
                try:
                    tensor, result, image = prepare_image(
                        self.run, path, box, max_pixels=self.max_pixels, budget_mb=self.decode_budget_mb
                    )
                    original = to_unit(image, self.run.preprocess) if keep_original else None
                    del image
                except BaseException:
                    release()
                    raise
            except ImageReadError as exc:
                # The temporary path means nothing to the sender; name their file instead.
                raise ImageReadError(name, exc.reason) from None
        if not keep_original:
            release()
            return PreparedImage(name, tensor, result.geometry, None, info.file_format)
        prepared = PreparedImage(name, tensor, result.geometry, original, info.file_format, _hold=release)
        weakref.finalize(prepared, release)  # an image dropped unexplained gives its share back
        return prepared

    def predict(self, images: list[PreparedImage]) -> np.ndarray:
        """Class probabilities (N, classes) for prepared images, in one batch."""
        if not images:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return self.predict_tensors(torch.stack([image.tensor for image in images]).float())

    def predict_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """Class probabilities (N, classes) for model inputs (N, C, H, W) in [0, 1]."""
        with self._lock:
            # Both backends output raw logits; the run's temperature (calibration.json) is applied here.
            if self._session is not None:
                logits = self._session.run(["logits"], {"input": batch.numpy().astype(np.float32)})[0]
                return _softmax(logits / self.run.temperature)
            # bf16 autocast where the CPU has native bf16 (mammocad.devices), as evaluate measured it.
            with torch.inference_mode(), inference_autocast():
                logits = self.run.model(batch)
            return torch.softmax(logits.float() / self.run.temperature, dim=1).numpy()

    def label(self, probs: np.ndarray) -> str:
        """The answer to report for one image: its top class, or ``indeterminate`` (the run's thresholds)."""
        return self.run.label(probs)

    def probabilities(self, probs: np.ndarray) -> dict[str, float]:
        """One image's probabilities by class name."""
        return {c: round(float(p), 6) for c, p in zip(self.classes, probs, strict=True)}

    def explain(
        self,
        image: PreparedImage,
        method: str = "gradcam",
        target: str | int | None = None,
        layer: str | None = None,
        opacity: float = 0.45,
    ) -> Explanation:
        """A CAM heatmap of ``image`` for ``target`` (class name/index; None: the predicted class)."""
        name = method.strip().lower()
        if name not in self.explain_methods:
            raise ConfigError(f"unknown explanation method {method!r}; choose from {', '.join(self.explain_methods)}")
        if not 0.0 <= opacity <= 1.0:
            raise ConfigError(f"opacity must be in [0, 1], got {opacity}")
        if image.original is None:
            raise MammocadError(f"{image.name}: decoded without its original image; decode it with keep_original")
        # The share decode reserved for this heatmap, else (explained before) a new one.
        own = None if image._hold is not None else self._gate.acquire(explain_estimate(image.geometry.original_hw))
        timings: dict[str, float] = {}
        try:
            # A named target is checked before the model runs; None: the class the same forward pass predicts.
            wanted = None if target is None or target == "" else self._target_index(target, 0)
            batch = image.tensor[None].float()
            clock = time.perf_counter()
            if name == "lesion":  # the lesion-aware model's own P(lesion) heatmap: class-agnostic, no layer
                probs = self.predict([image])[0]
                with self._lock:
                    resolved, heat = "lesion heatmap", lesion_heatmaps(self.run.model, batch)[0]
            else:
                resolved = target_layer(self.run.model, layer)
                bf16 = self.cam_bf16 and cpu_has_fast_bf16()
                with self._lock:  # one forward + a backward through the layers after ``resolved``: map and logits
                    maps, logits = cams_and_logits(
                        self.run.model, batch, name, None if wanted is None else [wanted], resolved, bf16=bf16
                    )
                heat = maps[0]
                probs = torch.softmax(logits / self.run.temperature, dim=1)[0].numpy()
            if wanted is None:
                wanted = int(probs.argmax())
            clock = _lap(timings, "forward_cam", clock)
            on_original = image.geometry.map_to_original(heat)
            clock = _lap(timings, "map_back", clock)
            # Drawn at the picture's size in uint8 (explain.overlay.heatmap_picture), PNG-encoded on every core.
            picture = heatmap_picture(image.original, heat, image.geometry, opacity, MAX_OVERLAY_SIDE)
            clock = _lap(timings, "overlay", clock)
            overlay_png = encode_png(picture)
            del picture
            clock = _lap(timings, "png", clock)
            input_overlay_png = encode_png(heatmap_picture(image.tensor[0].numpy(), heat, None, opacity))
            _lap(timings, "input_overlay", clock)
        finally:
            image.release()
            if own is not None:
                own()
        return Explanation(
            prediction=self.classes[int(probs.argmax())],
            probabilities=self.probabilities(probs),
            target=self.classes[wanted],
            method=name,
            layer=resolved,
            heatmap=heat,
            heatmap_original=on_original,
            overlay_png=overlay_png,
            input_overlay_png=input_overlay_png,
            label=self.label(probs),
            timings_ms=timings,
        )

    @property
    def explain_methods(self) -> tuple[str, ...]:
        """The explanation methods this run offers: its lesion heatmap first for a lesion-aware run."""
        lesion = ("lesion",) if callable(getattr(self.run.model, "lesion_map", None)) else ()
        return (*lesion, *EXPLAIN_METHODS)

    def _target_index(self, target: str | int | None, predicted: int) -> int:
        if target is None or target == "":
            return predicted
        # ASCII digits only: "²".isdigit() is True but int("²") raises.
        index = target if isinstance(target, int) else parse_int(str(target))
        if index is not None:
            if not 0 <= index < len(self.classes):
                raise ConfigError(f"target class {index} out of range: classes are {', '.join(self.classes)}")
            return index
        if target not in self.classes:
            raise ConfigError(f"unknown target class {echo(str(target))}; classes: {', '.join(self.classes)}")
        return self.classes.index(str(target))


def explain_estimate(original_hw: tuple[int, int]) -> int:
    """Bytes a heatmap of an image of ``original_hw`` allocates (mapped back, overlaid, PNG-encoded)."""
    pixels = int(original_hw[0]) * int(original_hw[1])
    return pixels * EXPLAIN_BYTES_PER_PIXEL + min(pixels, MAX_OVERLAY_SIDE**2) * EXPLAIN_BYTES_PER_OVERLAY_PIXEL


def png_shape(png: bytes) -> tuple[int, int]:
    """``(height, width)`` of a PNG, read from its IHDR chunk (the first chunk of every PNG)."""
    if len(png) < 24 or png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return int.from_bytes(png[20:24], "big"), int.from_bytes(png[16:20], "big")


def cam_bf16_from_env() -> bool:
    """``$MAMMOCAD_CAM_BF16`` as a switch (1/true/yes or 0/false/no; unset or empty: off)."""
    value = os.environ.get("MAMMOCAD_CAM_BF16", "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"$MAMMOCAD_CAM_BF16 must be 1/true/yes or 0/false/no, got {echo(value)}")


def _lap(timings: dict[str, float], stage: str, since: float) -> float:
    """Record the milliseconds since ``since`` as ``stage``; returns now."""
    now = time.perf_counter()
    timings[stage] = round((now - since) * 1000, 2)
    return now


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
