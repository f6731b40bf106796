"""Who is in a synthetic dataset: patients, breasts, views and classes, planned before any pixel.

Patients (:func:`plan_images`): the requested counts are exact per IMAGE class. A patient with a
finding has it in one breast, seen in every requested view (the lesion is drawn independently in
each view); that patient's other breast is imaged too, as normal images, while normal images are
still wanted. The remaining normal images form normal patients (both breasts, every view). So a
patient-grouped split has real work to do: one patient can hold normal and abnormal images.
The views of one patient share a BI-RADS density.

Every format's writer (one module each in this package) walks the same plan (:func:`planned_cases`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mammocad.data.synth.phantom import DENSITIES, PATHOLOGIES, SynthCase, generate_case

DEFAULT_COUNTS = {"normal": 20, "benign": 20, "malignant": 20}
#: Formats whose real source has no normal images; their writers leave normals out.
WITHOUT_NORMALS = ("cbis-ddsm", "bcdr")
#: A format writer: ``(out, counts, seed, height, width, views) -> the path to import``.
Writer = Callable[[Path, dict[str, int], int, int, int, tuple[str, ...]], Path]


@dataclass(frozen=True)
class PlannedImage:
    """One image of a synthetic dataset: who, which breast and view, what it shows, and its seed."""

    patient: int  # 1-based
    laterality: str
    view: str
    pathology: str
    density: str
    seed: int


def derived_seed(seed: int, *parts: object) -> int:
    """A stable 63-bit seed for one item, independent of Python's hash randomisation."""
    text = ":".join(map(str, ("mammocad-synth", seed, *parts)))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def written_counts(fmt: str, n_per_class: dict[str, int] | None = None) -> dict[str, int]:
    """Images per class that ``fmt`` gets for the requested counts (normals dropped where the source has none)."""
    counts = validated_counts(n_per_class)
    return {**counts, "normal": 0} if fmt in WITHOUT_NORMALS else counts


def plan_images(n_per_class: dict[str, int], seed: int, views: tuple[str, ...] = ("CC", "MLO")) -> list[PlannedImage]:
    """Group exactly ``n_per_class`` images into patients (see the module docstring).

    Output order: patient by patient, abnormal patients first (benign, then malignant), each
    patient's lesion breast before the other breast, views in the order given.
    """
    if not views or any(view not in ("CC", "MLO") for view in views) or len(set(views)) != len(views):
        raise ValueError(f"views must be distinct values out of ('CC', 'MLO'), got {views!r}")
    normals_left = n_per_class.get("normal", 0)
    plan: list[PlannedImage] = []
    patient = 0

    def image(laterality: str, view: str, pathology: str, density: str) -> PlannedImage:
        return PlannedImage(
            patient, laterality, view, pathology, density, derived_seed(seed, patient, laterality, view)
        )

    for pathology in ("benign", "malignant"):
        wanted = n_per_class.get(pathology, 0)
        while wanted > 0:
            patient += 1
            rng = np.random.default_rng(derived_seed(seed, "patient", patient))
            density = str(rng.choice(DENSITIES, p=[0.15, 0.4, 0.33, 0.12]))
            side = str(rng.choice(["L", "R"]))
            other = "R" if side == "L" else "L"
            for view in views[:wanted]:
                plan.append(image(side, view, pathology, density))
            wanted -= min(wanted, len(views))
            for view in views[:normals_left]:
                plan.append(image(other, view, "normal", density))
            normals_left -= min(normals_left, len(views))
    while normals_left > 0:
        patient += 1
        rng = np.random.default_rng(derived_seed(seed, "patient", patient))
        density = str(rng.choice(DENSITIES, p=[0.15, 0.4, 0.33, 0.12]))
        for laterality in ("R", "L"):
            for view in views[:normals_left]:
                plan.append(image(laterality, view, "normal", density))
            normals_left -= min(normals_left, len(views))
    return plan


def validated_counts(n_per_class: dict[str, int] | None) -> dict[str, int]:
    """The requested images per class (default :data:`DEFAULT_COUNTS`); ValueError for unknown classes or bad counts."""
    counts = dict(DEFAULT_COUNTS if n_per_class is None else n_per_class)
    unknown = set(counts) - set(PATHOLOGIES)
    if unknown:
        raise ValueError(f"unknown classes {sorted(unknown)}; synthetic classes are {', '.join(PATHOLOGIES)}")
    bad = {name: value for name, value in counts.items() if not isinstance(value, int) or value < 0}
    if bad:
        raise ValueError(f"image counts must be integers >= 0, got {bad}")
    return {name: counts.get(name, 0) for name in PATHOLOGIES}


def planned_cases(
    counts: dict[str, int], seed: int, height: int, width: int, views: tuple[str, ...], bits: int = 8
) -> Iterator[tuple[PlannedImage, SynthCase]]:
    """The planned images with their phantoms, one at a time (a large dataset never sits in memory)."""
    for item in plan_images(counts, seed, views):
        case = generate_case(
            item.seed, item.pathology, item.view, item.laterality, height, width, bits, density=item.density
        )
        yield item, case


def patient_view_stem(item: PlannedImage) -> str:
    """``P<patient>_<view>_<laterality>``: the file stem of the folders and csv layouts."""
    return f"P{item.patient:04d}_{item.view}_{item.laterality}"
