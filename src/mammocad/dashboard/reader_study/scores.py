"""Reader-study scores: accuracy, sensitivity, specificity and AUC of the ratings (positive =
``malignant``/``abnormal``), with patient-grouped bootstrap CIs, for each reader, the readers pooled,
and the model on the same cases."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from mammocad.dashboard.reader_study.store import Study
from mammocad.evaluation.bootstrap import cluster_bootstrap
from mammocad.evaluation.evaluate import CRITICAL_TRUE

METRICS = ("accuracy", "sensitivity", "specificity", "auc")
# ---- scores --------------------------------------------------------------------------------------


def positive(labels: Sequence[str] | np.ndarray) -> np.ndarray:
    """True where a class counts as positive for sensitivity/specificity/AUC (malignant or abnormal)."""
    return np.isin(np.asarray(labels, dtype=str), CRITICAL_TRUE)


def rating_score(answers: np.ndarray, ratings: np.ndarray, scale: str) -> np.ndarray:
    """A reader's suspicion score for the ROC curve: BI-RADS as is; confidence signed by the answer's side."""
    ratings = ratings.astype(float)
    if scale == "birads":
        return ratings
    return np.where(positive(answers), ratings, -ratings)


@dataclass(frozen=True)
class Observations:
    """Who read what: truth, answer and score per reading, grouped by patient for the bootstrap."""

    truth: np.ndarray
    answer: np.ndarray
    score: np.ndarray
    patients: np.ndarray


def _metric(name: str, obs: Observations, idx: np.ndarray) -> float | None:
    truth, answer = obs.truth[idx], obs.answer[idx]
    pos, called = positive(truth), positive(answer)
    if name == "accuracy":
        return float((truth == answer).mean()) if idx.size else None
    if name == "sensitivity":
        return float(called[pos].mean()) if pos.any() else None
    if name == "specificity":
        return float((~called[~pos]).mean()) if (~pos).any() else None
    if pos.all() or not pos.any():  # auc
        return None
    return float(roc_auc_score(pos, obs.score[idx]))


def metric_rows(who: str, obs: Observations, n_resamples: int, seed: int) -> list[dict[str, Any]]:
    """One row per metric: estimate and patient-grouped percentile bootstrap 95% CI."""
    rows = []
    for name in METRICS:
        if n_resamples > 0:
            result = cluster_bootstrap(
                obs.patients, lambda idx, name=name: _metric(name, obs, idx), n_resamples=n_resamples, seed=seed
            )
            estimate, low, high = result.estimate, result.low, result.high
        else:
            estimate, low, high = _metric(name, obs, np.arange(obs.truth.size)), None, None
        rows.append({"who": who, "metric": name, "estimate": estimate, "low": low, "high": high, "n": obs.truth.size})
    return rows


def study_scores(
    study: Study, readers: Sequence[str] | None = None, n_resamples: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """Each finished reader, the readers pooled, and the model on the same cases: metric, estimate, 95% CI.

    ``readers`` default: every reader who answered every case. Pooled: all their readings together,
    resampled by patient (a patient's readings by every reader move together). Columns: who, metric,
    estimate, low, high, n (readings).
    """
    readers = [r for r in study.readers() if study.finished(r)] if readers is None else list(readers)
    cases = study.cases.set_index("case")
    rows: list[dict[str, Any]] = []
    pooled: list[Observations] = []
    for reader in readers:
        answers = pd.DataFrame(study.answers(reader))
        if answers.empty:
            continue
        numbers = answers["case"].astype(int).to_numpy()
        obs = Observations(
            truth=cases.loc[numbers, "truth"].to_numpy(dtype=str),
            answer=answers["answer"].to_numpy(dtype=str),
            score=rating_score(answers["answer"].to_numpy(dtype=str), answers["rating"].to_numpy(), study.scale),
            patients=cases.loc[numbers, "patient_id"].to_numpy(dtype=str),
        )
        pooled.append(obs)
        rows += metric_rows(reader, obs, n_resamples, seed)
    if len(pooled) > 1:
        joined = Observations(
            *(np.concatenate([getattr(o, f) for o in pooled]) for f in Observations.__dataclass_fields__)
        )
        rows += metric_rows("readers pooled", joined, n_resamples, seed)
    model = study.model.set_index("case").loc[cases.index]
    positives = [f"p_{c}" for c in study.classes if c in CRITICAL_TRUE]
    model_obs = Observations(
        truth=cases["truth"].to_numpy(dtype=str),
        answer=model["prediction"].to_numpy(dtype=str),
        score=model[positives].sum(axis=1).to_numpy(dtype=float),
        patients=cases["patient_id"].to_numpy(dtype=str),
    )
    rows += metric_rows("model", model_obs, n_resamples, seed)
    return pd.DataFrame(rows, columns=["who", "metric", "estimate", "low", "high", "n"])


def score_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Scores as ``who`` × metric cells reading ``0.85 (0.70–0.95)``; '–' where undefined."""

    def cell(row: pd.Series) -> str:
        if row["estimate"] is None or pd.isna(row["estimate"]):
            return "–"
        if row["low"] is None or pd.isna(row["low"]):
            return f"{row['estimate']:.2f}"
        return f"{row['estimate']:.2f} ({row['low']:.2f}–{row['high']:.2f})"

    table = scores.assign(value=scores.apply(cell, axis=1))
    wide = table.pivot(index="who", columns="metric", values="value")
    order = list(dict.fromkeys(scores["who"]))
    return wide.loc[order, [m for m in METRICS if m in wide.columns]]
