"""``mammocad bench fuzz``: mutation fuzzing of everything that decodes a file a user hands over.

Seeds are valid files in every format the readers take (PNG 8/16-bit grey and 16-bit RGB, JPEG,
TIFF, BMP, PGM 8/16-bit, DICOM raw and RLE) plus the crafted hostile files of
:mod:`mammocad.data.synth.hostile` (header-only bombs, an RLE DICOM that makes the Rust decoder
panic, a damaged and a truncated PNG). Each case mutates one seed (byte flips, a cut, a chunk
deleted or repeated, a 16/32-bit integer near the start set to an extreme: the header's width,
height and lengths) and runs it through ``probe_image``, ``verify_image`` and ``read_image``;
the last batch of cases is also imported (``folders`` format). With a run directory every case is
posted to the API's ``/predict`` too.

A reader may only accept a file or refuse it with :class:`ImageReadError`; anything else (another
exception type, a Rust panic, a 5xx from the API, an import that dies) is a **crash**. The result
counts cases per outcome and per refusal reason, the cases per second and the peak RSS of the
process; every crash names its seed and mutation, and its file is kept for reproduction.
"""

from __future__ import annotations

import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mammocad.data.images import decode_budget_override, probe_image, read_image, verify_image
from mammocad.data.synth import hostile
from mammocad.errors import DatasetError, ImageReadError
from mammocad.progress import CountProgressFn

# Small seeds: the fuzzer's speed is in the number of cases, not in pixels.
SEED_SIDE = 96
# Mutated headers may declare anything: the readers' own budget must hold it, and here it is small.
FUZZ_DECODE_BUDGET_MB = 256
# The last cases are imported as one dataset (an import must keep the good files and skip the rest).
IMPORT_BATCH = 40
# A case that raises the process's peak RSS by more than this is listed (the budget should bound it).
SPIKE_MB = 64


def write_seeds(folder: Path, seed: int = 0) -> list[Path]:
    """Valid files in every readable format, and the crafted hostile ones, written into ``folder``."""
    from pydicom.uid import RLELossless

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SEED_SIDE, 0:SEED_SIDE]
    grey8 = ((np.hypot(yy - 48, xx) < 40) * 150 + rng.integers(0, 60, (SEED_SIDE, SEED_SIDE))).astype(np.uint8)
    grey16 = grey8.astype(np.uint16) * 257
    written: list[Path] = []

    def image(name: str, pixels: np.ndarray, params: tuple[int, ...] = ()) -> None:
        path = folder / name
        if not cv2.imwrite(str(path), pixels, list(params)):
            raise OSError(f"{path}: could not write a seed")
        written.append(path)

    image("grey8.png", grey8)
    image("grey16.png", grey16)
    image("rgb16.png", np.dstack([grey16, grey16 // 2, grey16 // 3]))
    image("grey8.jpg", grey8, (cv2.IMWRITE_JPEG_QUALITY, 90))
    image("grey16.tif", grey16)
    image("rgb8.bmp", np.dstack([grey8] * 3))
    image("grey8.pgm", grey8)
    image("grey16.pgm", grey16)
    for name, compress in (("raw.dcm", None), ("rle.dcm", RLELossless)):
        path = folder / name
        path.write_bytes(hostile.dicom_bytes(grey16 >> 4, bits_stored=12, compress=compress))
        written.append(path)
    written.append(hostile.write_panicking_rle_dicom(folder / "panic-rle.dcm", seed=seed))
    written.append(hostile.write_corrupt_png(folder / "corrupt.png", seed=seed))
    written.append(hostile.write_truncated_png(folder / "truncated.png", seed=seed))
    written += [hostile.write_bomb(folder / f"bomb.{fmt}", fmt) for fmt in hostile.BOMB_FORMATS]
    return written


def mutate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """One random mutation of ``data`` and its description."""
    out = bytearray(data)
    size = len(out)
    kind = rng.choice(["flip", "cut", "delete", "repeat", "extreme"])
    if size == 0:
        return bytes(rng.integers(0, 256, 16, dtype=np.uint8)), "random bytes"
    if kind == "flip":
        positions = rng.integers(0, size, int(rng.integers(1, 9)))
        for position in positions:
            out[position] ^= 1 << int(rng.integers(0, 8))
        return bytes(out), f"flip {len(positions)} bit(s) near {int(positions[0])}"
    if kind == "cut":
        keep = int(rng.integers(0, size))
        return bytes(out[:keep]), f"cut at {keep} of {size}"
    start = int(rng.integers(0, size))
    length = int(rng.integers(1, max(2, min(4096, size - start))))
    if kind == "delete":
        return bytes(out[:start] + out[start + length :]), f"delete {length} at {start}"
    if kind == "repeat":
        return bytes(out[: start + length] + out[start : start + length] + out[start + length :]), (
            f"repeat {length} at {start}"
        )
    # Header integers (sizes, lengths, offsets) sit near the start of every format.
    position = int(rng.integers(0, min(size, 512)))
    width = int(rng.choice([2, 4]))
    value = int(rng.choice([0, 1, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF])) & ((1 << (8 * width)) - 1)
    order = "big" if rng.random() < 0.5 else "little"
    out[position : position + width] = value.to_bytes(width, order)[: max(0, size - position)]
    return bytes(out), f"set {width}-byte {order}-endian {value:#x} at {position}"


def _read_all(path: Path) -> str:
    """``ok`` or ``refused: <reason kind>``; any other exception propagates (a crash)."""
    try:
        probe_image(path)
        verify_image(path)
        read_image(path)
    except ImageReadError as exc:
        return "refused: " + exc.reason.split(" (", 1)[0].split(":", 1)[0].strip()[:60]
    return "ok"


def run_fuzz(
    cases: int = 500,
    seconds: float | None = None,
    seed: int = 0,
    run_dir: Path | None = None,
    keep_dir: Path | None = None,
    progress: CountProgressFn | None = None,
) -> dict[str, Any]:
    """Fuzz the readers (and the importer, and the API of ``run_dir`` when given).

    Stops after ``cases`` cases or ``seconds`` seconds, whichever comes first. Crashing inputs are
    copied to ``keep_dir`` (default: a ``mammocad-fuzz-*`` temp folder that is kept only when
    something crashed). Returns the JSON-ready result (see the module docstring).
    """
    client = _api_client(run_dir) if run_dir is not None else None
    outcomes: Counter[str] = Counter()
    api_status: Counter[str] = Counter()
    crashes: list[dict[str, str]] = []
    spikes: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="mammocad-fuzz-"))
    keep = keep_dir or work / "crashes"
    start = time.perf_counter()
    done = 0
    try:
        seeds = [(path.name, path.read_bytes()) for path in write_seeds(work / "seeds", seed)]
        batch = work / "batch" / "cases"
        batch.mkdir(parents=True)
        rng = np.random.default_rng(seed)
        with decode_budget_override(FUZZ_DECODE_BUDGET_MB):
            for done in range(1, cases + 1):
                name, data = seeds[int(rng.integers(0, len(seeds)))]
                mutated, how = mutate(data, rng) if rng.random() < 0.9 else (data, "unchanged")
                path = work / f"case{Path(name).suffix}"
                path.write_bytes(mutated)
                before = _peak_rss_mb()
                try:
                    outcomes[_read_all(path)] += 1
                except BaseException as exc:
                    if isinstance(exc, KeyboardInterrupt | SystemExit):
                        raise
                    outcomes["crash"] += 1
                    crashes.append(_crash(keep, done, name, how, "reader", exc, mutated))
                grown = _peak_rss_mb() - before
                if grown > SPIKE_MB:  # a case that raised the peak: which seed and mutation, for the record
                    spikes.append({"case": done, "seed": name, "mutation": how, "peak_rss_grew_mb": round(grown)})
                if client is not None:
                    status = _post(client, path)
                    api_status[str(status)] += 1
                    if status >= 500:
                        crashes.append(_crash(keep, done, name, how, f"api {status}", None, mutated))
                if cases - done < IMPORT_BATCH:
                    shutil.copyfile(path, batch / f"case{done:06d}{Path(name).suffix}")
                if progress is not None:
                    progress(done, cases)
                if seconds is not None and time.perf_counter() - start > seconds:
                    break
            import_result = _import_batch(batch.parent, work / "dataset")
        if import_result.startswith("crash"):
            crashes.append(
                {"case": "import", "seed": "last cases", "mutation": "", "where": "import", "error": import_result}
            )
    finally:
        elapsed = time.perf_counter() - start
        if not crashes and keep_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return {
        "benchmark": "fuzz",
        "cases": done,
        "seconds": round(elapsed, 1),
        "cases_per_s": round(done / elapsed, 1) if elapsed else None,
        "outcomes": dict(outcomes.most_common()),
        "crashes": len(crashes),
        "crash_cases": crashes[:50],
        "import": import_result,
        "api_status": dict(api_status.most_common()) if client is not None else None,
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "peak_rss_spikes": sorted(spikes, key=lambda spike: -spike["peak_rss_grew_mb"])[:10],
        "decode_budget_mb": FUZZ_DECODE_BUDGET_MB,
        "kept": str(keep) if crashes else None,
    }


def _crash(
    keep: Path, case: int, seed: str, how: str, where: str, exc: BaseException | None, data: bytes
) -> dict[str, str]:
    keep.mkdir(parents=True, exist_ok=True)
    kept = keep / f"crash{case:06d}-{seed}"
    kept.write_bytes(data)
    error = f"{type(exc).__name__}: {exc}"[:300] if exc is not None else where
    return {"case": str(case), "seed": seed, "mutation": how, "where": where, "error": error, "file": str(kept)}


def _import_batch(source: Path, out: Path) -> str:
    """Import the last cases (``folders``): it must finish, keeping the good files, or refuse cleanly."""
    from mammocad.data.importers import import_dataset

    try:
        summary = import_dataset("folders", source, out, workers=1)
    except DatasetError as exc:  # every file refused: a clean, one-line refusal
        return f"refused: {str(exc)[:120]}"
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        return f"crash: {type(exc).__name__}: {str(exc)[:200]}"
    return f"ok: {summary.n_images} imported, {len(summary.skipped)} skipped"


def _api_client(run_dir: Path) -> Any:
    from fastapi.testclient import TestClient

    from mammocad.serve.api import create_app
    from mammocad.serve.engine import InferenceEngine

    return TestClient(create_app(InferenceEngine(run_dir)), raise_server_exceptions=False)


def _post(client: Any, path: Path) -> int:
    with path.open("rb") as handle:
        return client.post("/predict", files={"files": (path.name, handle, "application/octet-stream")}).status_code


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
