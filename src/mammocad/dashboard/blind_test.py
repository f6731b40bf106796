"""The blind test: :func:`blind_set` picks held-out images, :class:`BlindSession` records a reader's answers,
:func:`score` compares the reader with the model (accuracy, Cohen's kappa, agreement, McNemar).

Sample ids (which can embed patient numbers) stay internal, for joins only.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sklearn.metrics import cohen_kappa_score

from mammocad.dashboard.settings import DEFAULT_BLIND_N
from mammocad.errors import ConfigError, MammocadError
from mammocad.evaluation.significance import McNemarResult, mcnemar_test

if TYPE_CHECKING:  # annotation only: the reader study samples cases here without the serving engine
    from mammocad.dashboard.runs import DashboardRun


@dataclass(frozen=True)
class BlindItem:
    """One held-out image of a blind test, with the truth and the model's answer (hidden until answered)."""

    sample_id: str  # for joins only: never shown, ids can embed patient numbers
    image: Path  # the cached preprocessed image the evaluation scored
    truth: str
    prediction: str
    probabilities: dict[str, float]


def blind_set(run: DashboardRun, n: int = DEFAULT_BLIND_N, seed: int = 0) -> list[BlindItem]:
    """Up to ``n`` images of the run's evaluated held-out split, stratified by true class, in a seeded order.

    Each class gets its share of ``n`` (largest remainders; a present class at least one image when
    ``n`` allows), so a rare class is not lost from a short test. The same run, ``n`` and ``seed``
    give the same items in the same order.
    """
    if n < 1:
        raise ConfigError(f"a blind test needs at least one image, got n={n}")
    frame = run.predictions().sort_values("sample_id", kind="stable").reset_index(drop=True)
    rng = np.random.default_rng(seed)
    chosen = stratified_positions(frame["label_name"].to_numpy(), n, rng)
    classes = list(run.classes)
    return [
        BlindItem(
            sample_id=str(row["sample_id"]),
            image=Path(row["image"]),
            truth=str(row["label_name"]),
            prediction=str(row["prediction_name"]),
            probabilities={c: float(row[f"p_{c}"]) for c in classes},
        )
        for row in frame.iloc[chosen].to_dict("records")
    ]


def stratified_positions(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Row positions: each class's share of min(n, N) by largest remainders, drawn at random, shuffled."""
    total = len(labels)
    take = min(n, total)
    names, counts = np.unique(labels, return_counts=True)
    quota = take * counts / total
    shares = np.floor(quota).astype(int)
    # At least one of each class when there is room, so small tests still see every class.
    if take >= len(names):
        shares = np.maximum(shares, 1)
    while shares.sum() > take:  # the minimum of one overshot: take back where it costs least
        shares[np.argmax(np.where(shares > 1, shares - quota, -np.inf))] -= 1
    for k in np.argsort(shares - quota, kind="stable")[: take - shares.sum()]:  # largest shortfalls first
        shares[k] += 1
    picked = [
        rng.permutation(np.flatnonzero(labels == name))[:share] for name, share in zip(names, shares, strict=True)
    ]
    return rng.permutation(np.concatenate(picked))


@dataclass
class BlindSession:
    """A reader's pass through a blind set: one item at a time, answer, reveal, next."""

    items: list[BlindItem]
    answers: list[str] = field(default_factory=list)  # answers[i] is the reader's class for items[i]
    position: int = 0  # the item on screen

    @property
    def finished(self) -> bool:
        return self.position >= len(self.items)

    @property
    def current(self) -> BlindItem | None:
        """The item on screen (None once every item was seen)."""
        return None if self.finished else self.items[self.position]

    @property
    def revealed(self) -> bool:
        """Whether the item on screen was answered (truth and model answer may be shown)."""
        return len(self.answers) > self.position

    def answer(self, label: str) -> None:
        """Record the reader's class for the item on screen (once)."""
        if self.finished or self.revealed:
            raise MammocadError("this item is already answered; go to the next one")
        self.answers.append(label)

    def advance(self) -> None:
        """Move on to the next item (only after answering this one)."""
        if not self.revealed:
            raise MammocadError("answer this item before moving on")
        self.position += 1


@dataclass(frozen=True)
class BlindScore:
    """Reader vs model on the answered items; None where a number is undefined (no items, constant labels)."""

    n_answered: int
    user_accuracy: float | None
    model_accuracy: float | None
    user_kappa: float | None  # Cohen's kappa, reader vs truth
    model_kappa: float | None  # Cohen's kappa, model vs truth
    agreement: float | None  # fraction of items where reader and model gave the same class
    mcnemar: McNemarResult | None  # reader (a) vs model (b); b: reader right and model wrong


def score(session: BlindSession) -> BlindScore:
    """Accuracy, Cohen's kappa against the truth, reader-model agreement and McNemar's test, on answered items."""
    answered = session.items[: len(session.answers)]
    if not answered:
        return BlindScore(0, None, None, None, None, None, None)
    truth = np.array([item.truth for item in answered])
    user = np.array(session.answers)
    model = np.array([item.prediction for item in answered])
    user_right, model_right = user == truth, model == truth
    return BlindScore(
        n_answered=len(answered),
        user_accuracy=float(user_right.mean()),
        model_accuracy=float(model_right.mean()),
        user_kappa=_kappa(truth, user),
        model_kappa=_kappa(truth, model),
        agreement=float((user == model).mean()),
        mcnemar=mcnemar_test(user_right, model_right),
    )


def _kappa(truth: np.ndarray, rated: np.ndarray) -> float | None:
    # Undefined (None, not sklearn's warning) when chance agreement is 1, e.g. truth and rater one class.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = cohen_kappa_score(truth, rated)
    return float(value) if np.isfinite(value) else None
