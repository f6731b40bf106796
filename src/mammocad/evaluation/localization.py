"""Where a model looks, scored against annotated lesions: the pointing game and FROC-style sensitivity.

Inputs are per-film heatmaps on any grid (a lesion-aware model's P(lesion) map, a Grad-CAM) and the
lesion masks on the preprocessed film's grid (the cache's ``masks/``). Maps are resized to the mask
grid (bilinear) first.

- **Pointing game** (Zhang et al. 2016): a film with a located lesion is a hit when the heatmap's
  peak lies inside a lesion, grown by ``tolerance`` pixels (default: half a heatmap cell, the
  resolution the map can point at).
- **FROC-style lesion sensitivity**: candidate detections are the map's local maxima (3×3 cells,
  at most ``max_candidates`` per film) on every film, normal films included. A candidate inside a
  grown lesion detects it (each lesion, a connected component of the mask, counts once; further
  hits on it are neither true nor false); any other candidate is a false positive. Sweeping the
  threshold gives sensitivity against false positives per film; reported at 0.5, 1 and 2 FP/film.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch

from mammocad.preprocess import read_sample
from mammocad.training.predict import pixels_to_input

FP_RATES = (0.5, 1.0, 2.0)


@dataclass
class _Candidate:
    score: float
    film: int
    lesion: int  # -1: false positive; else the lesion's index within its film


def _resize(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return cv2.resize(heatmap.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def _tolerance(heatmap: np.ndarray, shape: tuple[int, int], tolerance: float | None) -> int:
    if tolerance is not None:
        return max(0, round(tolerance))
    return max(1, round(0.5 * max(shape[0] / heatmap.shape[0], shape[1] / heatmap.shape[1])))


def _grown_lesions(mask: np.ndarray, radius: int) -> tuple[int, np.ndarray]:
    """Number of lesions and a label image of each lesion grown by ``radius`` pixels (0 = none)."""
    count, labels = cv2.connectedComponents((mask > 0).astype(np.uint8), connectivity=8)
    if radius <= 0 or count <= 1:
        return count - 1, labels
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    grown = np.zeros_like(labels)
    for lesion in range(1, count):  # grown lesions may touch; the first keeps the shared pixels
        region = cv2.dilate((labels == lesion).astype(np.uint8), kernel) > 0
        grown[region & (grown == 0)] = lesion
    return count - 1, grown


def _peaks(heatmap: np.ndarray, limit: int) -> list[tuple[float, int, int]]:
    """Local maxima of a heatmap on its own grid: (score, row, col), best first."""
    dilated = cv2.dilate(heatmap.astype(np.float32), np.ones((3, 3), np.uint8))
    rows, cols = np.nonzero((heatmap >= dilated) & (heatmap > 0))
    order = np.argsort(-heatmap[rows, cols], kind="stable")[:limit]
    return [(float(heatmap[rows[i], cols[i]]), int(rows[i]), int(cols[i])) for i in order]


def localization_metrics(
    heatmaps: list[np.ndarray],
    masks: list[np.ndarray | None],
    tolerance: float | None = None,
    max_candidates: int = 10,
) -> dict[str, Any]:
    """Pointing game and FROC-style sensitivity of ``heatmaps`` against lesion ``masks`` (None: no lesion).

    Films whose mask is None count only through their false positives (FROC). Returns
    ``pointing_game`` (hits, films, hit_rate), ``froc`` (lesions, films, sensitivity at 0.5/1/2
    FP per film, and the curve as ``fp_per_film``/``sensitivity`` lists); rates are None when there
    is nothing to score.
    """
    if len(heatmaps) != len(masks):
        raise ValueError(f"{len(heatmaps)} heatmaps for {len(masks)} masks")
    hits = pointed = total_lesions = 0
    candidates: list[_Candidate] = []
    for film, (heatmap, mask) in enumerate(zip(heatmaps, masks, strict=True)):
        heatmap = np.nan_to_num(np.asarray(heatmap, dtype=np.float32))
        shape = mask.shape if mask is not None else heatmap.shape
        radius = _tolerance(heatmap, shape, tolerance) if mask is not None else 0
        n_lesions, grown = _grown_lesions(mask, radius) if mask is not None else (0, None)
        total_lesions += n_lesions
        if n_lesions and grown is not None:
            full = _resize(heatmap, shape)
            row, col = np.unravel_index(int(np.argmax(full)), full.shape)
            pointed += 1
            hits += int(grown[row, col] > 0)
        scale_y, scale_x = shape[0] / heatmap.shape[0], shape[1] / heatmap.shape[1]
        for score, row, col in _peaks(heatmap, max_candidates):
            lesion = -1
            if grown is not None:
                y = min(shape[0] - 1, int((row + 0.5) * scale_y))
                x = min(shape[1] - 1, int((col + 0.5) * scale_x))
                lesion = int(grown[y, x]) - 1
            candidates.append(_Candidate(score, film, lesion))
    return {
        "pointing_game": {
            "hits": hits,
            "films": pointed,
            "hit_rate": hits / pointed if pointed else None,
        },
        "froc": _froc(candidates, total_lesions, len(heatmaps)),
    }


def _froc(candidates: list[_Candidate], lesions: int, films: int) -> dict[str, Any]:
    """Sensitivity against false positives per film as the threshold falls through the candidates."""
    result: dict[str, Any] = {"lesions": lesions, "films": films}
    if not lesions or not films:
        result |= {f"sensitivity_at_{rate:g}_fp": None for rate in FP_RATES}
        result |= {"fp_per_film": [], "sensitivity": []}
        return result
    found: set[tuple[int, int]] = set()
    false_positives = 0
    fp_curve, sens_curve = [0.0], [0.0]
    for candidate in sorted(candidates, key=lambda c: -c.score):
        if candidate.lesion < 0:
            false_positives += 1
        elif (candidate.film, candidate.lesion) not in found:
            found.add((candidate.film, candidate.lesion))
        else:
            continue
        fp_curve.append(false_positives / films)
        sens_curve.append(len(found) / lesions)
    fp = np.array(fp_curve)
    sens = np.array(sens_curve)
    for rate in FP_RATES:
        result[f"sensitivity_at_{rate:g}_fp"] = float(sens[fp <= rate].max())
    result["fp_per_film"] = [round(float(v), 4) for v in fp]
    result["sensitivity"] = [round(float(v), 4) for v in sens]
    return result


def localization_films(part: pd.DataFrame) -> pd.DataFrame:
    """The films localization is scored on: those with a lesion mask, and normal films (FROC's false
    positives). Abnormal films without a location are left out: a detection on them cannot be judged."""
    masks = part["mask"] if "mask" in part else pd.Series([None] * len(part), index=part.index)
    located = masks.map(lambda m: isinstance(m, str) and bool(m))
    normal = part["target_name"] == "normal" if "target_name" in part else pd.Series(False, index=part.index)
    return part[located | normal]


def score_localization(
    part: pd.DataFrame,
    maps_for: Callable[[torch.Tensor], np.ndarray],
    in_chans: int,
    batch_size: int = 8,
) -> dict[str, Any] | None:
    """:func:`localization_metrics` of the maps ``maps_for(batch)`` gives for the cached films of ``part``.

    ``part``: task-frame rows (``image``, ``mask``, ``target_name``). None when no film has a located lesion.
    """
    films = localization_films(part)
    if "mask" not in films or not films["mask"].map(lambda m: isinstance(m, str) and bool(m)).any():
        return None
    heatmaps: list[np.ndarray] = []
    masks: list[np.ndarray | None] = []
    records = films.to_dict("records")
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        pixels = [read_sample(r["image"]) for r in chunk]
        batch = torch.stack([pixels_to_input(p, in_chans) for p in pixels])
        heatmaps += list(maps_for(batch))
        masks += [read_sample(r["mask"]) > 0 if isinstance(r["mask"], str) and r["mask"] else None for r in chunk]
    return localization_metrics(heatmaps, masks)
