"""Class folders: one sub-folder per class, images inside (e.g. Kaggle "Mammography dataset from
INbreast, MIAS and DDSM": ``Normal/``, ``benign/``, ``MALIGNANT/``).

- Class = the name of the top-level folder an image sits in (at any depth below it), stripped and
  lower-cased, optionally renamed through ``class_map``; ``pathology`` is set when the class is
  ``normal``, ``benign`` or ``malignant``. Folders whose names differ only in case merge.
- Every file that looks like an image (by extension, or by content for files without a known
  extension) is recorded; the import runner probes them and skips corrupt or truncated ones.
  Hidden/system files and non-images are skipped with the reason, as are loose files in the root.
- Patients: this layout has none. Without ``patient_regex`` each image is its own patient, which
  cannot keep pre-augmented near-duplicates (the Kaggle set contains flipped/rotated copies of the
  same mammogram) on one side of a split. When the file names encode the original image or
  patient, pass ``patient_regex`` so that all images sharing that key form one patient.
- Privacy: file names may carry a patient's name or number, so none becomes an id:
  ``image_id = folders-img-<keyed hash of the path below the root>`` and ``patient_id`` is a keyed
  pseudonym (see :mod:`mammocad.data.privacy`). A ``patient_regex`` key is an identifier: an image
  whose path holds it is linked (or copied) into the dataset as ``images/<image_id><ext>``, so the
  manifest does not record that path. Without a key there is no way to tell a name in a file name
  from any other word: ``image_path`` is then the source file; rename such files, or import them
  with the csv format and a table that lists the patients. ``meta.class_folder`` is the class
  folder's own name (a label, never a patient).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mammocad.data.images import sniff_format
from mammocad.data.importers.base import ImportContext, compile_patient_regex, patient_key, pseudonymous_id
from mammocad.data.manifest import PATHOLOGIES, ImageRecord
from mammocad.data.provenance import SYNTHETIC_MARKER
from mammocad.errors import DatasetError, ImageReadError

SOURCE_NAME = "folders"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".pgm", ".pnm", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"}
# Files that OS tools scatter into folders; never images, so they are skipped without sniffing.
SYSTEM_FILES = {"thumbs.db", "desktop.ini", ".ds_store"}
# Archive-extraction debris that is not a class (macOS zips add __MACOSX/ with "._" copies).
IGNORED_FOLDERS = {"__macosx"}


def import_folders(
    ctx: ImportContext,
    patient_regex: str | None = None,
    class_map: dict[str, str] | str | None = None,
) -> None:
    """Import a folder with one sub-folder per class.

    Inputs: ``ctx.source`` is the root folder; ``patient_regex`` (optional) is searched in each
    file's stem and its named group ``patient`` (else its first group) is the patient key;
    ``class_map`` (optional) renames folder names to label names, matched case-insensitively:
    a mapping, or the command line's text form ``neg:normal,pos:abnormal`` (see :func:`parse_class_map`).
    Output: one :class:`ImageRecord` per image file through ``ctx.add``; everything unusable goes
    through ``ctx.skip`` with the reason. ``image_id`` is a keyed hash of the path below the root
    (so equal file names in two classes, or ``a.png`` beside ``a.jpg``, never collide).
    """
    root = ctx.source
    if not root.is_dir():
        raise DatasetError(f"{root}: expected a folder with one sub-folder per class, got a file")
    pattern = compile_patient_regex(patient_regex)
    renames = parse_class_map(class_map)

    for entry in sorted(root.iterdir()):
        if entry.is_file() and entry.name == SYNTHETIC_MARKER:
            continue  # `mammocad synth`'s mark: read by the import runner, not an image
        if entry.is_file():
            ctx.skip(entry, "not inside a class folder")
            continue
        if not entry.is_dir():
            ctx.skip(entry, "neither a file nor a folder")
            continue
        if entry.name.startswith(".") or entry.name.lower() in IGNORED_FOLDERS:
            ctx.skip(entry, "hidden or system folder, not a class")
            continue
        label = renames.get(entry.name.strip().lower(), entry.name.strip().lower())
        if not label:
            ctx.skip(entry, "class folder name is empty")
            continue
        found = 0
        for path in _walk_files(entry):
            reason = _not_an_image(path)
            if reason is not None:
                ctx.skip(path, reason)
                continue
            record = _record(ctx, root, path, label, pattern)
            if record is not None:
                ctx.add(record)
                found += 1
        if found == 0:
            ctx.skip(entry, "class folder contains no images")


def parse_class_map(class_map: dict[str, str] | str | None) -> dict[str, str]:
    """Folder name -> label, lower-cased: from a mapping or from ``"neg:normal,pos:abnormal"``
    (``=`` works too). Raises :class:`DatasetError` with the accepted form when it is neither."""
    accepted = "accepted form: class_map=FOLDER:LABEL[,FOLDER:LABEL...], e.g. --set class_map=neg:normal,pos:abnormal"
    if class_map is None or class_map == "":
        return {}
    if isinstance(class_map, str):
        pairs: list[tuple[str, str]] = []
        for part in class_map.split(","):
            key, sep, value = part.replace("=", ":", 1).partition(":")
            if not sep or not key.strip() or not value.strip():
                raise DatasetError(f"class_map: cannot read {part.strip()!r}; {accepted}")
            pairs.append((key, value))
        class_map = dict(pairs)
    if not isinstance(class_map, dict) or not all(isinstance(v, str | int) for v in class_map.values()):
        raise DatasetError(f"class_map: expected folder:label pairs, got {class_map!r}; {accepted}")
    return {str(key).strip().lower(): str(value).strip().lower() for key, value in class_map.items()}


def _walk_files(folder: Path) -> list[Path]:
    """All files below ``folder``, in a stable order; symlinked folders are not followed (no loops)."""
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d.lower() not in IGNORED_FOLDERS)
        files.extend(Path(dirpath) / name for name in sorted(filenames))
    return files


def _not_an_image(path: Path) -> str | None:
    """Why ``path`` is not worth recording as an image, or ``None`` when it may be one."""
    name = path.name.lower()
    if name in SYSTEM_FILES or name.startswith("."):
        return "hidden or system file, not an image"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return None  # the runner probes it and reports corruption precisely
    try:
        sniff_format(path)  # e.g. DICOM files often have no extension
    except ImageReadError as exc:
        return f"not an image file ({exc.reason})"
    return None


def _record(
    ctx: ImportContext, root: Path, path: Path, label: str, pattern: re.Pattern[str] | None
) -> ImageRecord | None:
    rel = path.relative_to(root)
    # Never the file name itself: it may be the patient's name.
    image_id = pseudonymous_id(rel.as_posix(), f"{SOURCE_NAME}-img", digest_size=8)
    if pattern is None:
        key = rel.as_posix()
    else:
        match = pattern.search(path.stem)
        key = patient_key(match) if match else None
        if not key:
            ctx.skip(path, f"file name does not match patient_regex {pattern.pattern!r} (no patient id)")
            return None
    return ImageRecord(
        image_id=image_id,
        image_path=ctx.pseudonymous_path(path, image_id, [key] if pattern is not None else []),
        label_name=label,
        pathology=label if label in PATHOLOGIES else None,
        # File names may carry real identifiers: only a pseudonym reaches the manifest.
        patient_id=pseudonymous_id(key, SOURCE_NAME),
        source=SOURCE_NAME,
        meta={"class_folder": rel.parts[0]},
    )
