"""The import runner shared by every format.

An importer is a function ``importer(ctx: ImportContext, **options) -> None`` that walks its
source and calls ``ctx.add(record)`` for each image and ``ctx.skip(item, reason)`` for each thing
it cannot use. Its options are keyword parameters with defaults and type hints (the runner checks
and converts command-line values with them); a source that is not its format at all raises
:class:`~mammocad.errors.DatasetError`. A format is registered in
:data:`mammocad.data.importers.IMPORTERS` (or with ``register_importer``); ``docs/contributing.md``
("Adding an importer") lists every file a new format touches. The runner does everything common: it checks every image file (readable, not
truncated, sane size), drops duplicates, assigns labels, writes the manifest, ``classes.json`` and
the import summary, and commits the dataset directory atomically (all or nothing, never over an
existing one).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mammocad.data.images import DEFAULT_MAX_PIXELS, ImageInfo, probe_image, verify_image
from mammocad.data.manifest import (
    CLASSES_NAME,
    SUMMARY_NAME,
    SUMMARY_TEXT_NAME,
    ImageRecord,
    class_order,
    records_to_table,
    resolve_path,
    write_manifest,
)
from mammocad.data.privacy import MIN_ID_LENGTH, Redactor
from mammocad.data.privacy import pseudonymous_id as pseudonymous_id  # importers take it from here
from mammocad.data.provenance import source_marker
from mammocad.errors import DatasetError, ImageReadError
from mammocad.io import atomic_write_json, atomic_write_png, atomic_write_text, staging_dir
from mammocad.progress import CountProgressFn

#: The old name of :data:`~mammocad.progress.CountProgressFn`, kept importable from here.
ProgressFn = CountProgressFn
# Importers probe files for their size and for corruption; the runner applies the size policy.
NO_SIZE_LIMIT = 10**12


@dataclass
class Skipped:
    """Something an import could not use, and why."""

    item: str
    reason: str


@dataclass
class ImportContext:
    """What an importer works with: its source, a scratch dataset dir, and where results go."""

    source: Path
    dataset_dir: Path
    records: list[ImageRecord] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, record: ImageRecord) -> None:
        self.records.append(record)

    def skip(self, item: str | Path, reason: str) -> None:
        self.skipped.append(Skipped(str(item), reason))

    def probe(self, path: Path, item: str, what: str = "image") -> ImageInfo | None:
        """The file's header facts (size, depth, format), or ``None`` after skipping ``item`` with
        why the file is unreadable (``unreadable <what>: <reason>``)."""
        try:
            return probe_image(path, max_pixels=NO_SIZE_LIMIT)
        except ImageReadError as exc:
            self.skip(item, f"unreadable {what}: {exc.reason}")
            return None

    def warn(self, message: str) -> None:
        """Something the user must know about the imported data (e.g. a leaky official split)."""
        if message not in self.warnings:
            self.warnings.append(message)

    def write_mask(self, name: str, mask: np.ndarray) -> str:
        """Save a binary mask as ``masks/<name>.png`` (0/255) and return its dataset-relative path."""
        rel = f"masks/{name}.png"
        atomic_write_png(self.dataset_dir / rel, np.where(mask > 0, 255, 0).astype(np.uint8))
        return rel

    def write_image(self, name: str, pixels: np.ndarray) -> str:
        """Save extracted pixels as ``images/<name>.png`` and return the dataset-relative path."""
        rel = f"images/{name}.png"
        atomic_write_png(self.dataset_dir / rel, pixels)
        return rel

    def pseudonymous_path(
        self, path: Path, name: str, identifiers: Iterable[str] = (), redactor: Redactor | None = None
    ) -> str:
        """The image path to record: ``path`` itself (absolute), or ``images/<name><ext>`` inside the
        dataset (a hard link, else a copy) when ``path`` holds one of ``identifiers`` (found inside
        words, from 4 characters) or an identifier ``redactor`` knows, so no file name with a
        patient's name or number reaches the manifest. ``name`` must be a pseudonym (the image id)."""
        absolute = str(path.resolve())
        low = absolute.lower()
        named = any(len(i.strip()) >= MIN_ID_LENGTH and i.strip().lower() in low for i in identifiers)
        if not named and (redactor is None or not redactor.found_in(absolute, identifiers)):
            return absolute
        rel = f"images/{name}{path.suffix.lower()}"
        target = self.dataset_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(path, target)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(path, target)
        return rel


@dataclass
class ImportSummary:
    """What an import produced; also written as ``import_summary.json`` next to the manifest."""

    format: str
    source: str
    dataset_dir: str
    n_images: int
    n_patients: int
    classes: list[str]
    per_class: dict[str, int]
    images_per_patient: dict[str, float]
    per_official_split: dict[str, int]
    n_lesions: int
    n_with_mask: int
    skipped: list[Skipped]
    skipped_by_reason: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    synthetic: bool = False  # the source is `mammocad synth` output (it carries SYNTHETIC.json)

    def to_text(self, limit: int | None = None) -> str:
        """The summary as text; ``limit`` caps the listed skipped items (the counts are always whole)."""
        lines = [
            f"mammocad import ({self.format}) from {self.source}",
            f"dataset: {self.dataset_dir}",
            f"images: {self.n_images}   patients: {self.n_patients}   lesions: {self.n_lesions}"
            f"   images with masks: {self.n_with_mask}",
            "per class: " + ", ".join(f"{k}={v}" for k, v in self.per_class.items()),
            "images per patient: " + ", ".join(f"{k}={v:g}" for k, v in self.images_per_patient.items()),
        ]
        if self.per_official_split:
            lines.append("official split: " + ", ".join(f"{k}={v}" for k, v in self.per_official_split.items()))
        lines += [f"warning: {w}" for w in self.warnings]
        lines += skipped_lines([(s.item, s.reason) for s in self.skipped], self.skipped_by_reason, limit)
        return "\n".join(lines) + "\n"


def count_reasons(reasons: list[str]) -> dict[str, int]:
    """How many items each kind of reason skipped, most frequent first (ties by name: deterministic)."""
    counts = Counter(_reason_kind(reason) for reason in reasons)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def skipped_lines(
    items: list[tuple[str, str]], by_reason: dict[str, int] | None = None, limit: int | None = None
) -> list[str]:
    """Text lines for skipped items: the count per reason, then the items.

    ``limit=None`` lists every item; otherwise a few examples of each reason, ``limit`` in all.
    """
    by_reason = count_reasons([reason for _, reason in items]) if by_reason is None else by_reason
    lines = [f"skipped: {len(items)}"]
    if len(by_reason) > 1 or (limit is not None and len(items) > limit):
        lines += [f"  {count:>7} x {reason}" for reason, count in by_reason.items()]
    if limit is None:
        shown = items
    else:
        per_reason = max(1, limit // max(1, len(by_reason)))
        taken: Counter[str] = Counter()
        shown = []
        for item, reason in items:
            kind = _reason_kind(reason)
            if taken[kind] < per_reason and len(shown) < limit:
                taken[kind] += 1
                shown.append((item, reason))
    lines += [f"  - {item}: {reason}" for item, reason in shown]
    if len(shown) < len(items):
        lines.append(f"  ... and {len(items) - len(shown)} more")
    return lines


def cell_text(value: Any) -> str | None:
    """A table cell as stripped text: None when it is missing, NaN (pandas' empty cell) or blank."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip()
    return text or None


def compile_patient_regex(patient_regex: str | None) -> re.Pattern[str] | None:
    """The ``patient_regex`` option compiled; its group ``patient`` (else group 1) is the patient key."""
    if not patient_regex:
        return None
    try:
        pattern = re.compile(patient_regex)
    except re.error as exc:
        raise DatasetError(f"patient_regex {patient_regex!r} is not a valid regular expression ({exc})") from exc
    if pattern.groups == 0:
        raise DatasetError(f"patient_regex {patient_regex!r} needs a group (or a group named 'patient')")
    return pattern


def patient_key(match: re.Match[str]) -> str | None:
    """The patient key a ``patient_regex`` match found (group ``patient``, else group 1)."""
    value = match.groupdict().get("patient") if "patient" in match.re.groupindex else match.group(1)
    return value.strip() if value else None


def file_fingerprint(path: Path, chunk: int = 1 << 16) -> str:
    """Content key for duplicate detection: size + hash of the first and last 64 KiB."""
    size = path.stat().st_size
    digest = hashlib.blake2b(str(size).encode(), digest_size=12)
    with path.open("rb") as handle:
        digest.update(handle.read(chunk))
        if size > chunk:
            handle.seek(max(chunk, size - chunk))
            digest.update(handle.read(chunk))
    return digest.hexdigest()


def run_import(
    fmt: str,
    importer: Callable[..., None],
    source: str | Path,
    out: str | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    keep_duplicates: bool = False,
    workers: int = 4,
    progress: CountProgressFn | None = None,
    **options: Any,
) -> ImportSummary:
    """Run ``importer`` on ``source`` and write a complete dataset directory at ``out``."""
    source = Path(source).expanduser().resolve()
    out = Path(out).expanduser().resolve()
    if not source.exists():
        raise DatasetError(f"{source}: source does not exist")
    with staging_dir(out) as scratch:
        ctx = ImportContext(source=source, dataset_dir=scratch)
        importer(ctx, **options)
        records = _check_files(ctx, max_pixels=max_pixels, workers=workers, progress=progress)
        if not keep_duplicates:
            records = _drop_duplicates(records, ctx, scratch)
        _discard_unused_outputs(ctx.records, records, scratch)
        if not records:
            reasons = "; ".join(f"{s.item}: {s.reason}" for s in ctx.skipped[:5])
            raise DatasetError(f"{source}: no usable images found" + (f" ({reasons} ...)" if reasons else ""))
        classes = class_order({r.label_name for r in records})
        write_manifest(records_to_table(records, classes), scratch)
        synthetic = {"synthetic": True} if source_marker(source) is not None else {}  # `mammocad synth` output
        atomic_write_json(scratch / CLASSES_NAME, {"classes": classes, "source": fmt, **synthetic})
        summary = _summarise(fmt, source, out, records, classes, ctx.skipped, ctx.warnings)
        summary.synthetic = bool(synthetic)
        atomic_write_json(scratch / SUMMARY_NAME, asdict(summary))
        atomic_write_text(scratch / SUMMARY_TEXT_NAME, summary.to_text())
    return summary


def _check_files(
    ctx: ImportContext, max_pixels: int, workers: int, progress: CountProgressFn | None
) -> list[ImageRecord]:
    """Check every image (and mask): header, size, decode budget, and a full decode of compressed
    data (what a header cannot show is corrupt, see ``verify_image``); skip the unreadable ones with the reason."""
    records = ctx.records

    def check(rec: ImageRecord) -> str | None:
        path = resolve_path(ctx.dataset_dir, rec.image_path)
        try:
            info = verify_image(path, max_pixels=max_pixels)
        except ImageReadError as exc:
            return exc.reason  # the item is the image's own path: never the staging folder's
        for mask in [rec.mask_path] + [lesion.mask_path for lesion in rec.lesions]:
            if mask is not None:
                # Relative: a mask this import has just written, sound by construction.
                check_mask = verify_image if Path(mask).is_absolute() else probe_image
                try:
                    check_mask(resolve_path(ctx.dataset_dir, mask), max_pixels=max_pixels)
                except ImageReadError as exc:
                    return f"mask {mask}: {exc.reason}"
        rec.width, rec.height = info.width, info.height
        rec.bits_stored, rec.file_format = info.bits_stored, info.file_format
        rec.fingerprint = file_fingerprint(path)
        return None

    kept: list[ImageRecord] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, (rec, error) in enumerate(zip(records, pool.map(check, records), strict=True), start=1):
            if error is None:
                kept.append(rec)
            else:
                ctx.skip(rec.image_path, error)
            if progress is not None:
                progress(done, len(records))
    return kept


def _record_files(rec: ImageRecord) -> set[str]:
    """Dataset-relative files a record refers to (files the importer wrote)."""
    values = [rec.image_path, rec.mask_path, *(lesion.mask_path for lesion in rec.lesions)]
    return {v for v in values if v and not Path(v).is_absolute()}


def _discard_unused_outputs(written: list[ImageRecord], kept: list[ImageRecord], scratch: Path) -> None:
    """Delete files the importer wrote for records the runner dropped, unless a kept record uses them."""
    used = set().union(*(_record_files(rec) for rec in kept)) if kept else set()
    for rec in written:
        for rel in _record_files(rec) - used:
            (scratch / rel).unlink(missing_ok=True)


def _drop_duplicates(records: list[ImageRecord], ctx: ImportContext, scratch: Path) -> list[ImageRecord]:
    by_id: dict[str, str] = {}
    by_path: dict[Path, str] = {}
    by_content: dict[str, str] = {}
    kept = []
    for rec in records:
        path = resolve_path(scratch, rec.image_path)
        if rec.image_id in by_id:
            ctx.skip(rec.image_path, f"duplicate image id {rec.image_id!r} (first: {by_id[rec.image_id]})")
        elif path in by_path:
            ctx.skip(rec.image_path, f"file listed twice (as {by_path[path]} and {rec.image_id})")
        elif rec.fingerprint in by_content:
            ctx.skip(rec.image_path, f"duplicate file: same content as {by_content[rec.fingerprint]}")
        else:
            by_id[rec.image_id] = rec.image_path
            by_path[path] = rec.image_id
            by_content[rec.fingerprint or rec.image_id] = rec.image_path
            kept.append(rec)
    return kept


def _summarise(
    fmt: str,
    source: Path,
    out: Path,
    records: list[ImageRecord],
    classes: list[str],
    skipped: list[Skipped],
    warnings: list[str],
) -> ImportSummary:
    per_patient = Counter(r.patient_id for r in records)
    counts = list(per_patient.values())
    per_class = Counter(r.label_name for r in records)
    splits = Counter(r.official_split for r in records if r.official_split)
    return ImportSummary(
        format=fmt,
        source=str(source),
        dataset_dir=str(out),
        n_images=len(records),
        n_patients=len(per_patient),
        classes=classes,
        per_class={c: per_class[c] for c in classes},
        images_per_patient={
            "min": min(counts),
            "median": float(statistics.median(counts)),
            "max": max(counts),
        },
        per_official_split=dict(sorted(splits.items())),
        n_lesions=sum(len(r.lesions) for r in records),
        n_with_mask=sum(1 for r in records if r.mask_path or any(lesion.mask_path for lesion in r.lesions)),
        skipped=skipped,
        skipped_by_reason=count_reasons([s.reason for s in skipped]),
        warnings=list(warnings),
    )


def _reason_kind(reason: str) -> str:
    """Group reasons for the summary's counts (drop the specifics after a parenthesis or colon)."""
    return reason.split(" (", 1)[0].split(":", 1)[0].strip()


def summary_from_json(path: str | Path) -> dict[str, Any]:
    """Read a written import summary."""
    return json.loads(Path(path).read_text())
