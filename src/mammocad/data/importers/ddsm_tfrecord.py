"""DDSM patches (Kaggle "DDSM Mammography"): TFRecord files and ``.npy`` pairs, no TensorFlow needed.

- TFRecord files (``*.tfrecords`` / ``*.tfrecord``, found recursively, or ``ctx.source`` itself)
  hold ``tf.train.Example`` records with ``image`` (raw uint8 bytes of a square grey patch,
  299x299), ``label`` (finer code, see :data:`LABEL_NAMES`) and ``label_normal`` (0 negative,
  1 abnormal). Records are framed as ``length, crc(length), data, crc(data)``; this module reads
  the framing itself and checks both masked CRC32C checksums (the ``tfrecord`` package checks
  neither), so a damaged record is reported instead of decoded into garbage. After damage to a
  length field the rest of the file cannot be located: the records before it are kept and the
  rest is skipped with the file name and record index.
- ``.npy`` pairs ``<name>_data.npy`` (N x H x W or N x H x W x 1, uint8) and ``<name>_labels.npy``
  (N finer label codes) in the same folder. Arrays are memory-mapped, never unpickled.
- Every patch is written as ``images/<id>.png`` with ``id = <file stem>-<index>``.
- ``official_split`` comes from the file name where it says so (``training*`` -> train,
  ``cv*``/``val*`` -> validation, ``test*`` -> test). In the Kaggle copy the CBIS-DDSM test set was
  halved by abnormality type, not at random: ``test10`` holds only masses and ``cv10`` only
  calcifications (besides negatives), as the dataset's description admits. When such a file (or
  any test/validation file whose abnormal patches are all of one type) is imported, the summary
  warns that it is not a representative held-out split (merge the two for testing).
- Patients: this format does not record them, so each patch is its own patient. Patches cut from
  one patient's mammograms (even from one lesion) can therefore straddle a split, and nothing in
  this format can prevent it; treat scores on a random split of these patches as optimistic.
"""

from __future__ import annotations

import math
import re
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import crc32c
import numpy as np
from google.protobuf.message import DecodeError
from tfrecord import example_pb2

from mammocad.data.importers.base import ImportContext, pseudonymous_id
from mammocad.data.manifest import ImageRecord, Lesion
from mammocad.errors import DatasetError

SOURCE_NAME = "ddsm-tfrecord"
TFRECORD_SUFFIXES = (".tfrecords", ".tfrecord")
DATA_SUFFIX, LABELS_SUFFIX = "_data.npy", "_labels.npy"
LABEL_NAMES = {
    0: "negative",
    1: "benign_calcification",
    2: "benign_mass",
    3: "malignant_calcification",
    4: "malignant_mass",
}
NORMAL_NAMES = {0: "negative", 1: "abnormal"}
LABEL_FIELDS = ("label_normal", "label")
CRC_MASK_DELTA = 0xA282EAD8
SPLIT_PREFIXES = (("train", "train"), ("cv", "validation"), ("val", "validation"), ("test", "test"))
# What the Kaggle copy's held-out files hold (its description: the test/validation halves were cut
# by abnormality type by mistake).
ONE_TYPE_FILES = {"test10": "masses", "cv10": "calcifications"}


@dataclass
class RawRecord:
    """One framed TFRecord entry: its payload, or why it could not be read (``fatal``: the file ends here)."""

    index: int
    payload: bytes | None = None
    problem: str | None = None
    fatal: bool = False


@dataclass
class Patch:
    """One patch's pixels and label codes, as found in a source (either code may be absent)."""

    index: int
    pixels: np.ndarray
    label: int | None
    label_normal: int | None


def import_ddsm_tfrecord(ctx: ImportContext, label_field: str = "label_normal", image_size: int | None = None) -> None:
    """Import DDSM patches from TFRecord files and ``_data.npy``/``_labels.npy`` pairs.

    Inputs: ``ctx.source`` is a folder (searched recursively) or one TFRecord / ``_data.npy``
    file; ``label_field`` picks the class scheme (``label_normal``: negative/abnormal, ``label``:
    the five finer classes); ``image_size`` is the patch side (default: ``sqrt`` of the byte count).
    Output: each patch is written to ``images/`` and added through ``ctx.add``; damaged records,
    unknown label codes and unusable pairs go through ``ctx.skip`` with the reason. Records are
    streamed one at a time, so memory stays bounded whatever the file size.
    """
    if label_field not in LABEL_FIELDS:
        raise DatasetError(f"label_field must be one of {list(LABEL_FIELDS)}, got {label_field!r}")
    if image_size is not None and image_size < 1:
        raise DatasetError(f"image_size must be a positive number of pixels, got {image_size}")
    tfrecords, pairs = _find_sources(ctx)
    if not tfrecords and not pairs:
        raise DatasetError(f"{ctx.source}: no TFRecord files (*.tfrecords) or *_data.npy/*_labels.npy pairs found")
    root = ctx.source if ctx.source.is_dir() else ctx.source.parent
    used_tags: set[str] = set()
    codes: dict[Path, Counter[int | None]] = {}  # label codes of the patches added, per source file
    streams = [(p, p.name[: -len(p.suffix)], _tfrecord_patches(p, image_size)) for p in tfrecords]
    streams += [(d, d.name[: -len(DATA_SUFFIX)], _npy_patches(d, labels, image_size)) for d, labels in pairs]
    for path, stem, patches in streams:
        tag = _unique_tag(stem, path, root, used_tags)
        counts = codes.setdefault(path, Counter())
        for item, patch_or_reason in patches:
            added = _add_patch(ctx, path, root, tag, item, patch_or_reason, label_field)
            if added is not None:
                counts[added.label] += 1
    for path, counts in codes.items():
        warning = held_out_warning(path, root, counts) if counts else None
        if warning:
            ctx.warn(warning)


def held_out_warning(path: Path, root: Path, codes: Counter[int | None]) -> str | None:
    """A warning when a file imported as the official test/validation split is not representative:
    the Kaggle ``test10``/``cv10`` files, or any whose abnormal patches are all of one type."""
    split = _split_from_name(path.name)
    if split not in ("test", "validation"):
        return None
    masses = sum(n for code, n in codes.items() if code in (2, 4))
    calcifications = sum(n for code, n in codes.items() if code in (1, 3))
    negatives, unknown = codes.get(0, 0), codes.get(None, 0)
    one_type = None if unknown or (masses > 0) == (calcifications > 0) else ("masses" if masses else "calcifications")
    stem = re.sub(r"(_data\.npy|\.tfrecords?)$", "", path.name, flags=re.IGNORECASE).lower()
    documented = ONE_TYPE_FILES.get(stem)
    if documented is None and one_type is None:
        return None
    name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    found = f"{masses} mass, {calcifications} calcification and {negatives} negative patches"
    if unknown:
        found += f", {unknown} without a finer label"
    claim = f"its abnormal patches are all {one_type}" if one_type else f"it is documented to hold {documented} only"
    return (
        f"{name} was imported as the official '{split}' split, but {claim} (found: {found}): the Kaggle "
        "'DDSM Mammography' copy cut the CBIS-DDSM test set by abnormality type into test10 (masses only) "
        "and cv10 (calcifications only), so this file is not a representative held-out split; merge test10 "
        "and cv10 into one test set rather than scoring on either alone."
    )


def _find_sources(ctx: ImportContext) -> tuple[list[Path], list[tuple[Path, Path]]]:
    """TFRecord files and (data, labels) npy pairs under the source; unpaired npy files are skipped."""
    source = ctx.source
    if source.is_file():
        if source.name.lower().endswith(TFRECORD_SUFFIXES):
            return [source], []
        if source.name.endswith(DATA_SUFFIX):
            labels_path = source.with_name(source.name[: -len(DATA_SUFFIX)] + LABELS_SUFFIX)
            files = [source, labels_path] if labels_path.is_file() else [source]
        else:
            raise DatasetError(f"{source}: not a TFRecord file (*.tfrecords) or a *_data.npy file")
    else:
        files = sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith("."))
    tfrecords = [p for p in files if p.name.lower().endswith(TFRECORD_SUFFIXES)]
    data = {p.with_name(p.name[: -len(DATA_SUFFIX)]): p for p in files if p.name.endswith(DATA_SUFFIX)}
    labels = {p.with_name(p.name[: -len(LABELS_SUFFIX)]): p for p in files if p.name.endswith(LABELS_SUFFIX)}
    pairs = [(data[stem], labels[stem]) for stem in sorted(data.keys() & labels.keys())]
    for stem in sorted(data.keys() - labels.keys()):
        ctx.skip(data[stem], f"no matching {stem.name}{LABELS_SUFFIX} next to it (labels unknown)")
    for stem in sorted(labels.keys() - data.keys()):
        ctx.skip(labels[stem], f"no matching {stem.name}{DATA_SUFFIX} next to it (images missing)")
    return tfrecords, pairs


def _unique_tag(stem: str, path: Path, root: Path, used: set[str]) -> str:
    """A file-name-safe prefix for the patch ids of one source; files with equal stems get their folder added."""
    candidates = [stem]
    if path.parent != root and path.is_relative_to(root):
        candidates.append("__".join([*path.parent.relative_to(root).parts, stem]))
    for candidate in candidates:
        tag = re.sub(r"[^A-Za-z0-9._-]+", "_", candidate).strip("._") or "patches"
        if tag not in used:
            used.add(tag)
            return tag
    number = 2
    while f"{tag}_{number}" in used:
        number += 1
    used.add(f"{tag}_{number}")
    return f"{tag}_{number}"


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC32C rotated right by 15 bits plus a constant (mod 2**32)."""
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + CRC_MASK_DELTA) & 0xFFFFFFFF


def iter_tfrecord(path: Path) -> Iterator[RawRecord]:
    """Stream the framed records of an uncompressed TFRecord file, checking lengths and checksums."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        index = 0
        while True:
            header = handle.read(12)
            if not header:
                return
            if len(header) < 12:
                yield RawRecord(index, problem=f"file is truncated (record header cut off at byte {size})", fatal=True)
                return
            length_bytes, (length_crc,) = header[:8], struct.unpack("<I", header[8:])
            if masked_crc32c(length_bytes) != length_crc:
                yield RawRecord(index, problem="record length checksum mismatch (file corrupt from here)", fatal=True)
                return
            (length,) = struct.unpack("<Q", length_bytes)
            remaining = size - handle.tell()
            if length + 4 > remaining:
                yield RawRecord(
                    index,
                    problem=f"file is truncated (record needs {length + 4} bytes, {remaining} left)",
                    fatal=True,
                )
                return
            payload = handle.read(length)
            (data_crc,) = struct.unpack("<I", handle.read(4))
            if masked_crc32c(payload) != data_crc:
                # The length was verified, so the next record is still where the framing says.
                yield RawRecord(index, problem="record data checksum mismatch (corrupt record)")
            else:
                yield RawRecord(index, payload=payload)
            index += 1


def _tfrecord_patches(path: Path, image_size: int | None) -> Iterator[tuple[str, Patch | str]]:
    """``(item name, Patch or reason)`` for every record of one TFRecord file."""
    for raw in iter_tfrecord(path):
        item = f"{path.name}#record{raw.index}" + (" onwards" if raw.fatal else "")
        if raw.payload is None:
            yield item, str(raw.problem)
            continue
        yield item, _decode_example(raw.index, raw.payload, image_size)


def _decode_example(index: int, payload: bytes, image_size: int | None) -> Patch | str:
    example = example_pb2.Example()
    try:
        example.ParseFromString(payload)
    except DecodeError as exc:
        return f"record is not a tf.train.Example ({exc})"
    features = example.features.feature
    if "image" not in features or features["image"].WhichOneof("kind") != "bytes_list":
        return "record has no 'image' bytes feature"
    values = features["image"].bytes_list.value
    if len(values) != 1:
        return f"'image' feature holds {len(values)} values, expected 1"
    pixels = _square_pixels(values[0], image_size)
    if isinstance(pixels, str):
        return pixels
    codes: dict[str, int | None] = {}
    for name in LABEL_FIELDS:
        feature = features.get(name)  # (features[name] would insert an empty entry)
        if feature is None:
            codes[name] = None
        elif feature.WhichOneof("kind") != "int64_list" or len(feature.int64_list.value) != 1:
            return f"'{name}' feature is not a single int64"
        else:
            codes[name] = int(feature.int64_list.value[0])
    return Patch(index, pixels, codes["label"], codes["label_normal"])


def _square_pixels(raw: bytes, image_size: int | None) -> np.ndarray | str:
    """Raw uint8 bytes as a square image, or the reason they are not one."""
    side = image_size if image_size is not None else math.isqrt(len(raw))
    if side * side != len(raw):
        return f"image is {len(raw)} bytes, not a square {side}x{side} grey image of uint8 pixels"
    return np.frombuffer(raw, dtype=np.uint8).reshape(side, side)


def _npy_patches(data_path: Path, labels_path: Path, image_size: int | None) -> Iterator[tuple[str, Patch | str]]:
    """``(item name, Patch or reason)`` for every patch of one npy pair; an unusable pair yields one reason."""
    pair_item = f"{data_path.name} + {labels_path.name}"
    try:
        # mmap: a test split is ~1.4 GB; only the patch being written is paged in.
        data = np.load(data_path, mmap_mode="r", allow_pickle=False)
        labels = np.load(labels_path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        yield pair_item, f"unreadable .npy file ({exc})"
        return
    problem = _pair_problem(data, labels, image_size)
    if problem:
        yield pair_item, problem
        return
    labels = labels.reshape(-1)
    for index in range(data.shape[0]):
        pixels = np.ascontiguousarray(data[index]).reshape(data.shape[1], data.shape[2])
        yield f"{data_path.name}[{index}]", Patch(index, pixels, int(labels[index]), None)


def _pair_problem(data: np.ndarray, labels: np.ndarray, image_size: int | None) -> str | None:
    if not (data.ndim == 3 or (data.ndim == 4 and data.shape[3] == 1)):
        return f"data array has shape {data.shape}, expected N x H x W or N x H x W x 1"
    if data.dtype != np.uint8:
        return f"data array is {data.dtype}, expected uint8"
    if image_size is not None and data.shape[1:3] != (image_size, image_size):
        return f"patches are {data.shape[2]}x{data.shape[1]}, expected {image_size}x{image_size}"
    if labels.ndim not in (1, 2) or (labels.ndim == 2 and labels.shape[1] != 1):
        return f"labels array has shape {labels.shape}, expected N values"
    if not np.issubdtype(labels.dtype, np.integer):
        return f"labels array is {labels.dtype}, expected integer class codes"
    if labels.shape[0] != data.shape[0]:
        return f"data has {data.shape[0]} patches but labels has {labels.shape[0]} values"
    return None


def _add_patch(
    ctx: ImportContext,
    path: Path,
    root: Path,
    tag: str,
    item: str,
    patch: Patch | str,
    label_field: str,
) -> Patch | None:
    """Add one patch (and return it), or skip it with the reason (and return None)."""
    if isinstance(patch, str):
        ctx.skip(item, patch)
        return None
    labelled = _labels(patch, label_field)
    if isinstance(labelled, str):
        ctx.skip(item, labelled)
        return None
    label_name, pathology, lesion_type = labelled
    image_id = f"{tag}-{patch.index}"
    rel_source = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    ctx.add(
        ImageRecord(
            image_id=image_id,
            image_path=ctx.write_image(image_id, patch.pixels),
            label_name=label_name,
            pathology=pathology,
            patient_id=pseudonymous_id(image_id, SOURCE_NAME),  # unknown: each patch its own patient
            source=SOURCE_NAME,
            official_split=_split_from_name(path.name),
            lesions=[Lesion(lesion_type=lesion_type, pathology=pathology)] if pathology != "normal" else [],
            meta={
                "source_file": rel_source,
                "record_index": patch.index,
                "label_code": patch.label,
                "label_normal": patch.label_normal,
            },
        )
    )
    return patch


def _labels(patch: Patch, label_field: str) -> tuple[str, str | None, str | None] | str:
    """``(label_name, pathology, lesion_type)`` from the codes, or why they are unusable."""
    code, normal = patch.label, patch.label_normal
    if code is not None and code not in LABEL_NAMES:
        return f"unknown label code {code} (expected 0-4)"
    if normal is not None and normal not in NORMAL_NAMES:
        return f"unknown label_normal code {normal} (expected 0 or 1)"
    if code is not None and normal is not None and normal != int(code != 0):
        return f"label {code} and label_normal {normal} disagree"
    if normal is None and code is not None:
        normal = int(code != 0)
    if label_field == "label" and code is None:
        return "record has no 'label' feature (needed for label_field='label')"
    if normal is None:
        return "record has neither 'label' nor 'label_normal'"
    label_name = LABEL_NAMES[code] if label_field == "label" and code is not None else NORMAL_NAMES[normal]
    if code is not None:
        finer = LABEL_NAMES[code]
        pathology = "normal" if code == 0 else finer.split("_")[0]
        lesion_type = None if code == 0 else finer.split("_")[1]
    else:
        pathology, lesion_type = ("normal", None) if normal == 0 else (None, None)
    return label_name, pathology, lesion_type


def _split_from_name(name: str) -> str | None:
    lowered = name.lower()
    for prefix, split in SPLIT_PREFIXES:
        if lowered.startswith(prefix):
            return split
    return None
