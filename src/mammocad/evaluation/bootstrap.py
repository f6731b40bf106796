"""Patient-level (cluster) percentile bootstrap confidence intervals.

Images of one patient (both breasts, CC and MLO views, repeat exams) are correlated, so resampling
images independently understates the variance of any metric. ``cluster_bootstrap`` resamples whole
groups (patients) with replacement and hands the statistic every item of every drawn group, with
repeats, so items of a group always move together.

The statistic is any callable ``statistic(indices) -> float | None`` over an int index array into the
N items, e.g. ``lambda idx: roc_auc_score(y[idx], s[idx])`` guarded for single-class resamples. A
resample where it returns None, NaN or inf counts as undefined and is left out of the percentiles.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_MIN_VALID_FRACTION = 0.5


@dataclass(frozen=True)
class BootstrapResult:
    """A percentile bootstrap confidence interval.

    Fields: ``estimate`` = the statistic on all items (None when undefined there); ``low``/``high`` =
    the (1 - confidence)/2 and (1 + confidence)/2 percentiles of the defined resample values (None
    when too few resamples were defined, see ``note``); ``n_resamples`` drawn; ``n_valid`` resamples
    where the statistic was defined; ``confidence``; ``n_groups`` distinct groups and ``n_items``
    items resampled; ``note`` explains missing bounds or skipped resamples (None when all is well).
    """

    estimate: float | None
    low: float | None
    high: float | None
    n_resamples: int
    n_valid: int
    confidence: float
    n_groups: int
    n_items: int
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict of the fields."""
        return {
            "estimate": _clean(self.estimate),
            "low": _clean(self.low),
            "high": _clean(self.high),
            "n_resamples": int(self.n_resamples),
            "n_valid": int(self.n_valid),
            "confidence": float(self.confidence),
            "n_groups": int(self.n_groups),
            "n_items": int(self.n_items),
            "note": None if self.note is None else str(self.note),
        }


def _clean(value: float | None) -> float | None:
    """``value`` as a finite float, or None when it is missing or not finite (undefined)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class _GroupIndex:
    """Items sorted by group, so a group's items are one contiguous slice of ``order``.

    Built once; each resample then gathers its items with a single fancy-indexing step instead of a
    Python loop over the drawn groups.
    """

    def __init__(self, groups: np.ndarray) -> None:
        # Groups numbered by first appearance, not by value: patient pseudonyms are keyed per
        # installation, and the resamples (so the CIs) must not depend on the key.
        inverse = np.asarray(pd.factorize(np.asarray(groups).reshape(-1))[0])
        # stable: a group's items keep their original order inside its slice (deterministic output)
        self.order = np.argsort(inverse, kind="stable")
        self.counts = np.bincount(inverse)
        self.starts = np.concatenate(([0], np.cumsum(self.counts)[:-1]))
        self.n_groups = int(self.counts.size)

    def indices(self, drawn: np.ndarray) -> np.ndarray:
        """All item indices of the drawn groups (with repeats), concatenated in draw order."""
        sizes = self.counts[drawn]
        total = int(sizes.sum())
        # Position k of the output belongs to the j-th drawn group; its offset inside that group is
        # k - (start of the j-th block in the output), so add the group's start in ``order``.
        block_starts = np.cumsum(sizes) - sizes
        positions = np.arange(total) + np.repeat(self.starts[drawn] - block_starts, sizes)
        return self.order[positions]


def cluster_bootstrap(
    groups: np.ndarray,
    statistic: Callable[[np.ndarray], float | None],
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    min_valid_fraction: float = DEFAULT_MIN_VALID_FRACTION,
) -> BootstrapResult:
    """Percentile bootstrap CI of ``statistic`` resampling whole groups with replacement.

    ``groups`` is an (N,) array of group ids (patient ids: ints or strings), one per item.
    ``statistic(indices)`` gets an int64 index array into the N items (repeats allowed) and returns a
    float, or None/NaN when undefined on that resample. Each resample draws the G unique groups G
    times with replacement (``numpy.random.default_rng(seed)``, so results are deterministic) and
    concatenates the drawn groups' item indices. The point estimate is ``statistic(arange(N))``.

    Returns a BootstrapResult. If fewer than ``min_valid_fraction`` of the resamples are defined,
    ``low``/``high`` are None and ``note`` says why: percentiles of the surviving minority would be
    biased towards the resamples where the statistic happens to exist.
    """
    ids = np.asarray(groups)
    if ids.ndim != 1:
        raise ValueError(f"groups must be a 1-D array of group ids, got shape {ids.shape}")
    if ids.size == 0:
        raise ValueError("groups is empty: nothing to resample")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")
    if not 0.0 <= min_valid_fraction <= 1.0:
        raise ValueError(f"min_valid_fraction must be in [0, 1], got {min_valid_fraction}")

    index = _GroupIndex(ids)
    n_items = int(ids.size)
    estimate = _clean(statistic(np.arange(n_items)))

    rng = np.random.default_rng(seed)
    values = np.full(n_resamples, np.nan)
    for r in range(n_resamples):
        # One draw per resample (not one (n_resamples, G) block) keeps memory O(N) for large cohorts.
        drawn = rng.integers(0, index.n_groups, size=index.n_groups)
        value = _clean(statistic(index.indices(drawn)))
        if value is not None:
            values[r] = value
    valid = values[np.isfinite(values)]
    n_valid = int(valid.size)

    notes: list[str] = []
    if estimate is None:
        notes.append("the statistic is undefined on the full data")
    low: float | None = None
    high: float | None = None
    if n_valid == 0 or n_valid < min_valid_fraction * n_resamples:
        notes.append(
            f"the statistic was defined on only {n_valid} of {n_resamples} resamples "
            f"(< {min_valid_fraction:.0%}); no confidence interval reported"
        )
    else:
        tail = (1.0 - confidence) / 2.0
        low, high = (float(q) for q in np.quantile(valid, [tail, 1.0 - tail]))
        if n_valid < n_resamples:
            notes.append(f"{n_resamples - n_valid} of {n_resamples} resamples were undefined and left out")
    return BootstrapResult(
        estimate=estimate,
        low=low,
        high=high,
        n_resamples=int(n_resamples),
        n_valid=n_valid,
        confidence=float(confidence),
        n_groups=index.n_groups,
        n_items=n_items,
        note="; ".join(notes) or None,
    )
