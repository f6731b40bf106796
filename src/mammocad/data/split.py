"""Patient-grouped, label-stratified splits: train/val/test, an optional blind holdout, and k folds.

No patient ever appears on two sides of any split: leakage through a patient's other views (or the
other breast) inflates every metric. Splits are written as ``splits/<name>.parquet`` in the dataset
dir (columns ``image_id, patient_id, label, split, fold``) plus a JSON summary, and never overwritten.

- ``split`` is one of ``train``, ``val``, ``test``, ``blind`` (the clinician blind-test holdout).
- ``fold`` (0..k-1, or -1 for blind images) assigns every non-blind image to one of k
  patient-grouped, stratified folds for cross-validation; it is independent of ``split``.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from mammocad.data.manifest import read_manifest
from mammocad.defaults import DEFAULT_BLIND_SIZE as DEFAULT_BLIND_SIZE
from mammocad.errors import DatasetError
from mammocad.io import atomic_write_bytes, atomic_write_json

SPLITS_DIR = "splits"
SPLIT_NAMES = ("train", "val", "test", "blind")
# A split name becomes a file name: no folders, no hidden files, nothing a shell would need quoted.
_SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class SplitSpec:
    """How to split: fractions of images (approximate: whole patients move together)."""

    test_size: float = 0.2
    val_size: float = 0.2
    blind_size: int = 0
    folds: int = 0
    seed: int = 0

    def validate(self) -> None:
        if not 0 <= self.test_size < 1:
            raise DatasetError(f"test_size must be in [0, 1), got {self.test_size}")
        if not 0 <= self.val_size < 1:
            raise DatasetError(f"val_size must be in [0, 1), got {self.val_size}")
        if self.blind_size < 0:
            raise DatasetError(f"blind_size must be >= 0, got {self.blind_size}")
        if self.folds == 1 or self.folds < 0:
            raise DatasetError(f"folds must be 0 (none) or >= 2, got {self.folds}")


def patient_groups(frame: pd.DataFrame) -> np.ndarray:
    """Patient numbers in order of first appearance: the split then depends on the manifest's order
    (the source's), never on the pseudonyms' values, which differ between installations (keyed)."""
    return pd.factorize(frame["patient_id"])[0]


def _take_group_fraction(
    frame: pd.DataFrame, fraction: float, seed: int, what: str, stratify: str = "label"
) -> pd.Series:
    """Boolean mask selecting ~``fraction`` of ``frame``'s images, whole patients, stratified."""
    if fraction <= 0:
        return pd.Series(False, index=frame.index)
    n_splits = max(2, round(1 / fraction))
    n_patients = frame["patient_id"].nunique()
    if n_patients < n_splits:
        raise DatasetError(
            f"cannot hold out {fraction:.0%} for {what}: only {n_patients} patients "
            f"(need at least {n_splits} to split by patient)"
        )
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # A rare class with fewer members than splits is expected for small holdouts: it lands
        # in as many parts as it can, which is the best a patient-grouped split can do.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        _, held = next(splitter.split(frame, frame[stratify], groups=patient_groups(frame)))
    mask = pd.Series(False, index=frame.index)
    mask.iloc[held] = True
    return mask


def make_splits(manifest: pd.DataFrame, spec: SplitSpec) -> pd.DataFrame:
    """Assign every image to a split and (optionally) a fold.

    Args:
        manifest: the dataset manifest (needs ``image_id``, ``patient_id``, ``label``).
        spec: fractions, blind holdout size, number of folds and seed.

    Returns:
        DataFrame with ``image_id, patient_id, label, label_name, split, fold``, in manifest order.
    """
    spec.validate()
    frame = manifest[["image_id", "patient_id", "label", "label_name"]].reset_index(drop=True).copy()
    if frame.empty:
        raise DatasetError("the manifest has no images to split")
    frame["split"] = "train"
    frame["fold"] = -1
    remaining = pd.Series(True, index=frame.index)

    if spec.blind_size:
        if spec.blind_size > len(frame) // 2:
            raise DatasetError(
                f"blind holdout of {spec.blind_size} images would take more than half of the "
                f"{len(frame)} images; choose a smaller --blind-size"
            )
        blind = _take_group_fraction(frame, spec.blind_size / len(frame), spec.seed, "the blind test")
        frame.loc[blind, "split"] = "blind"
        remaining &= ~blind

    dev = frame[remaining]
    test = _take_group_fraction(dev, spec.test_size, spec.seed + 1, "the test split")
    frame.loc[test[test].index, "split"] = "test"
    train_val = dev[~test]
    val = _take_group_fraction(train_val, spec.val_size, spec.seed + 2, "the validation split")
    frame.loc[val[val].index, "split"] = "val"

    if spec.folds:
        frame.loc[dev.index, "fold"] = assign_folds(dev, spec.folds, spec.seed + 3)
    return frame


def assign_folds(frame: pd.DataFrame, folds: int, seed: int) -> np.ndarray:
    """Fold index per row: patient-grouped and label-stratified.

    Refuses (with the counts) when a class has fewer patients than folds, since such folds
    cannot all contain that class.
    """
    patients_per_class = frame.groupby("label_name")["patient_id"].nunique()
    short = patients_per_class[patients_per_class < folds]
    if not short.empty:
        counts = ", ".join(f"{name}: {n} patients" for name, n in short.items())
        raise DatasetError(f"cannot make {folds} stratified folds: too few patients in some classes ({counts})")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    fold_of = np.full(len(frame), -1, dtype=int)
    for k, (_, held) in enumerate(splitter.split(frame, frame["label"], groups=patient_groups(frame))):
        fold_of[held] = k
    return fold_of


def summarise_splits(splits: pd.DataFrame) -> dict[str, object]:
    """Counts of images per split and class, patients per split, and images per fold."""
    summary: dict[str, object] = {
        "images": {
            split: {str(k): int(v) for k, v in group["label_name"].value_counts().sort_index().items()}
            for split, group in splits.groupby("split")
        },
        "patients": {split: int(group["patient_id"].nunique()) for split, group in splits.groupby("split")},
    }
    if (splits["fold"] >= 0).any():
        folds = splits[splits["fold"] >= 0]
        summary["folds"] = {
            int(fold): {str(k): int(v) for k, v in group["label_name"].value_counts().sort_index().items()}
            for fold, group in folds.groupby("fold")
        }
    return summary


def check_no_patient_leak(splits: pd.DataFrame) -> None:
    """Raise if any patient has images on two sides of the split or in two folds."""
    sides = splits.groupby("patient_id")["split"].nunique()
    leaked = sides[sides > 1]
    if not leaked.empty:
        raise DatasetError(f"patients on two sides of the split: {list(leaked.index[:5])}")
    in_folds = splits[splits["fold"] >= 0].groupby("patient_id")["fold"].nunique()
    if (in_folds > 1).any():
        raise DatasetError(f"patients in two folds: {list(in_folds[in_folds > 1].index[:5])}")


def split_dataset(dataset_dir: str | Path, spec: SplitSpec, name: str = "default") -> Path:
    """Split a dataset dir and write ``splits/<name>.parquet`` and ``<name>.json``; returns the parquet path."""
    dataset_dir = Path(dataset_dir)
    if not _SPLIT_NAME.fullmatch(name):
        raise DatasetError(
            f"split name {name[:40]!r}: use 1-64 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    target = dataset_dir / SPLITS_DIR / f"{name}.parquet"
    if target.exists():
        raise DatasetError(f"{target}: a split named {name!r} exists already; choose another --name")
    splits = make_splits(read_manifest(dataset_dir), spec)
    check_no_patient_leak(splits)
    summary = {"spec": spec.__dict__, **summarise_splits(splits)}
    atomic_write_bytes(target, splits.to_parquet(index=False))
    atomic_write_json(target.with_suffix(".json"), summary)
    return target


def split_exists(dataset_dir: str | Path, name: str = "default") -> bool:
    """Whether ``dataset_dir`` has a written split called ``name``."""
    return (Path(dataset_dir) / SPLITS_DIR / f"{name}.parquet").exists()


def read_splits(dataset_dir: str | Path, name: str = "default") -> pd.DataFrame:
    """Read a written split, with a clear error when it does not exist."""
    path = Path(dataset_dir) / SPLITS_DIR / f"{name}.parquet"
    if not path.exists():
        available = sorted(p.stem for p in path.parent.glob("*.parquet")) if path.parent.exists() else []
        raise DatasetError(
            f"{path}: no split named {name!r}"
            + (f" (available: {', '.join(available)})" if available else "; run `mammocad data split` first")
        )
    return pd.read_parquet(path)


def cv_split(dataset_dir: str | Path, source: str = "default", folds: int = 5, seed: int = 0) -> str:
    """Name of a split of ``dataset_dir`` with ``folds`` patient-grouped, stratified folds.

    ``source`` itself when it already has exactly ``folds`` folds; otherwise the derived split
    ``<source>-cv<folds>`` (``-s<seed>`` appended for a non-zero seed), created on first use and
    reused afterwards. The derived split keeps ``source``'s blind holdout out of every fold and spreads
    all other images over the folds. Refuses (with counts) when a class has fewer patients than folds.
    """
    if folds < 2:
        raise DatasetError(f"cross-validation needs at least 2 folds, got {folds}")
    splits = read_splits(dataset_dir, source)
    existing = sorted(int(k) for k in splits.loc[splits["fold"] >= 0, "fold"].unique())
    if existing == list(range(folds)):
        return source
    name = f"{source}-cv{folds}" + (f"-s{seed}" if seed else "")
    target = Path(dataset_dir) / SPLITS_DIR / f"{name}.parquet"
    if target.exists():
        derived = pd.read_parquet(target)
        if sorted(derived["image_id"]) != sorted(splits["image_id"]):
            raise DatasetError(f"{target}: its images differ from split {source!r}; remove it or pick another split")
        return name
    derived = splits.copy()
    dev = derived["split"] != "blind"
    derived["fold"] = -1
    derived.loc[dev, "fold"] = assign_folds(derived[dev], folds, seed)
    check_no_patient_leak(derived)
    summary = {"spec": {"source": source, "folds": folds, "seed": seed}, **summarise_splits(derived)}
    atomic_write_bytes(target, derived.to_parquet(index=False))
    atomic_write_json(target.with_suffix(".json"), summary)
    return name
