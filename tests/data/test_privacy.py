"""No patient identifier in any output: keyed pseudonyms, the meta whitelist, file-name ids, redaction."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mammocad.cli.main import app
from mammocad.data.importers import import_dataset
from mammocad.data.manifest import SUMMARY_NAME, read_manifest
from mammocad.data.privacy import KEY_FILE_ENV, Redactor, key_file, pseudonym_key, pseudonymous_id
from mammocad.errors import DatasetError

NAMES = ("Wilhelmina Featherstonehaugh", "Bartholomew Quimbleton", "Ottoline Zanzibarova", "Peregrine Ashdownward")
MRNS = ("MRN4815162342", "MRN2718281828", "MRN1414213562", "MRN1732050807")
BIRTHS = ("1950-03-14", "1961-07-22", "1948-11-30", "1972-01-05")
ACCESSIONS = ("ACC-99887766", "ACC-55443322", "ACC-11224488", "ACC-77553311")
INSTITUTION = "St. Elsewhere Memorial Hospital"
DOCTOR = "Dr. Pemberton-Haversham"


def write_image(path: Path, seed: int, shape: tuple[int, int] = (40, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))
    return path


def write_mask(path: Path, shape: tuple[int, int] = (40, 48)) -> Path:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[10:20, 12:30] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), mask)
    return path


def identifier_values() -> list[str]:
    """Every identifier the table below holds, whole and in the pieces a file name would use."""
    values = [*NAMES, *MRNS, *BIRTHS, *ACCESSIONS, INSTITUTION, DOCTOR, "Elsewhere", "Pemberton", "Haversham"]
    values += [part for name in NAMES for part in name.split()]
    values += [mrn[3:] for mrn in MRNS] + [acc[4:] for acc in ACCESSIONS]
    values += [b.replace("-", "") for b in BIRTHS]
    return values


def phi_source(root: Path) -> Path:
    """A CSV full of identifiers, with images and masks named after the patients."""
    first, second, third, fourth = (name.split() for name in NAMES)
    rows = [
        # File and mask named after the patient, with her MRN.
        (f"{first[1]}_{first[0]}_{MRNS[0]}.png", "malignant", f"masks/{first[1]}_{first[0]}_mask.png", 0),
        # A folder named after the patient.
        (f"scans/{second[1]}-{second[0]}/cc_left.png", "benign", "", 1),
        # A neutral file name.
        ("img003.png", "normal", "", 2),
        # Skipped rows whose messages would name the patient: a missing file, an unreadable mask, a corrupt image.
        (f"missing/{third[1]}_{third[0]}.png", "benign", "", 2),
        ("img005.png", "benign", f"masks/{fourth[1]}_bad_mask.png", 3),
        (f"{fourth[0]}_{fourth[1]}_{BIRTHS[3]}.png", "normal", "", 3),
    ]
    write_image(root / rows[0][0], 1)
    write_mask(root / rows[0][2])
    write_image(root / rows[1][0], 2)
    write_image(root / rows[2][0], 3)
    write_image(root / rows[4][0], 5)
    (root / rows[4][2]).write_bytes(b"not a mask")
    (root / rows[5][0]).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00corrupt" * 8)
    table = pd.DataFrame(
        {
            "path": [r[0] for r in rows],
            "label": [r[1] for r in rows],
            "mask_path": [r[2] for r in rows],
            "patient_id": [MRNS[r[3]] for r in rows],
            "Patient Name": [NAMES[r[3]] for r in rows],
            "Medical Record Number": [MRNS[r[3]] for r in rows],
            "Date of Birth": [BIRTHS[r[3]] for r in rows],
            "Accession Number": [ACCESSIONS[r[3]] for r in rows],
            "study_id": [ACCESSIONS[r[3]] for r in rows],
            "Institution": [INSTITUTION] * len(rows),
            "Notes": [f"{NAMES[r[3]].split()[0]} reports a lump; seen by {DOCTOR}" for r in rows],
            "Age": ["45", "95", "52Y", "61", "70", "38"],
            "scanner": ["GE", "Hologic", "GE", "GE", "GE", "GE"],
        }
    )
    table.to_csv(root / "patients.csv", index=False)
    return root / "patients.csv"


def all_text(folder: Path) -> str:
    """Every file below ``folder``: its path, its bytes (decoded leniently), and parquet/JSON decoded."""
    texts = []
    for path in sorted(folder.rglob("*")):
        texts.append(path.relative_to(folder).as_posix())
        if not path.is_file():
            continue
        texts.append(path.read_bytes().decode("latin-1"))
        if path.suffix == ".parquet":
            texts.append(pd.read_parquet(path).astype(str).to_json())
        if path.suffix == ".json":
            texts.append(json.dumps(json.loads(path.read_text()), ensure_ascii=False))
    return "\n".join(texts)


def assert_no_identifier(text: str, where: str) -> None:
    low = text.lower()
    leaked = [value for value in identifier_values() if value.lower() in low]
    assert not leaked, f"{where} holds {leaked}"


def test_no_identifier_in_any_output_of_import_and_preprocess(tmp_path: Path) -> None:
    csv_path = phi_source(tmp_path / "src")
    ds = tmp_path / "ds"
    summary = import_dataset("csv", csv_path, ds)
    assert summary.n_images == 3 and summary.n_with_mask == 1 and len(summary.skipped) == 3

    manifest = read_manifest(ds)
    assert_no_identifier(all_text(ds), "the dataset dir")
    assert_no_identifier(manifest.astype(str).to_json(), "the manifest")
    assert_no_identifier(summary.to_text() + json.dumps([s.__dict__ for s in summary.skipped]), "the summary")
    assert (ds / "classes.json").exists() and (ds / "import_summary.txt").exists()

    # The skipped rows are still explained, with pseudonyms in place of the names.
    reasons = {s["item"]: s["reason"] for s in json.loads((ds / SUMMARY_NAME).read_text())["skipped"]}
    assert reasons["patients.csv row 5"].startswith("image file not found:")
    assert reasons["patients.csv row 6"].startswith("mask unreadable:")
    # Images whose paths hold an identifier are linked in under their ids; the others stay where they are.
    by_label = manifest.set_index("label_name")
    for label in ("malignant", "benign"):
        image_id, path = by_label.loc[label, ["image_id", "image_path"]]
        assert path == f"images/{image_id}.png" and (ds / path).is_file()
        assert image_id.startswith("csv-img-")
    assert by_label.loc["normal", "image_path"] == str((tmp_path / "src" / "img003.png").resolve())
    assert by_label.loc["malignant", "mask_path"] == f"masks/{by_label.loc['malignant', 'image_id']}.png"
    # Only whitelisted columns reach meta: age up to 89 as an integer, the scanner; never the notes.
    metas = {label: json.loads(by_label.loc[label, "meta"]) for label in ("malignant", "benign", "normal")}
    assert metas["malignant"] == {"csv_row": 2, "age": 45, "scanner": "GE"}
    assert metas["benign"] == {"csv_row": 3, "scanner": "Hologic"}  # 95: an age over 89 identifies
    assert metas["normal"]["age"] == 52
    (dropped,) = [w for w in summary.warnings if "not copied into meta" in w]
    for column in ("Patient Name", "Medical Record Number", "Date of Birth", "Accession Number", "Notes"):
        assert repr(column) in dropped
    assert any("1 age value(s) left out of meta" in w for w in summary.warnings)

    result = CliRunner().invoke(app, ["preprocess", str(ds), "--image-size", "32", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert_no_identifier(result.output, "the preprocess output")
    (cache,) = (ds / "cache").iterdir()
    assert len(list((cache / "images").iterdir())) == 3
    assert_no_identifier(all_text(cache), "the preprocess cache")


def test_csv_image_id_column_holding_an_identifier_is_pseudonymised(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", 1)
    write_image(tmp_path / "b.png", 2)
    pd.DataFrame(
        {
            "image_id": [f"{MRNS[0]}-1", "public-0002"],
            "path": ["a.png", "b.png"],
            "label": ["benign", "normal"],
            "patient_id": [MRNS[0], MRNS[1]],
        }
    ).to_csv(tmp_path / "t.csv", index=False)
    import_dataset("csv", tmp_path / "t.csv", tmp_path / "ds")
    ids = set(read_manifest(tmp_path / "ds")["image_id"])
    assert "public-0002" in ids and pseudonymous_id(f"{MRNS[0]}-1", "csv-img", digest_size=8) in ids


def test_keep_columns_keeps_safe_columns_only(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", 1)
    pd.DataFrame(
        {"path": ["a.png"], "label": ["benign"], "lesion size": ["12mm"], "Notes": ["x"], "Patient Name": ["A B"]}
    ).to_csv(tmp_path / "t.csv", index=False)
    summary = import_dataset("csv", tmp_path / "t.csv", tmp_path / "ds", keep_columns="Lesion Size")
    assert json.loads(read_manifest(tmp_path / "ds")["meta"][0]) == {
        "csv_row": 2,
        "lesion size": "12mm",
        "patient_unknown": True,
    }
    assert any("2 column(s) not copied into meta" in w for w in summary.warnings)
    with pytest.raises(DatasetError, match="keep_columns: column 'Patient Name' looks like a personal identifier"):
        import_dataset("csv", tmp_path / "t.csv", tmp_path / "ds2", keep_columns="lesion size, patient name")
    with pytest.raises(DatasetError, match="keep_columns: column 'colour' not found"):
        import_dataset("csv", tmp_path / "t.csv", tmp_path / "ds3", keep_columns="colour")
    with pytest.raises(DatasetError, match="option 'keep_columns' expects str"):
        import_dataset("csv", tmp_path / "t.csv", tmp_path / "ds4", keep_columns=True)


def test_folders_ids_never_hold_file_names_and_regex_keys_are_linked(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_image(src / "benign" / "Featherstonehaugh_W_1.png", 1)
    write_image(src / "benign" / "Featherstonehaugh_W_2.png", 2)
    write_image(src / "normal" / "Quimbleton_B_1.png", 3)
    summary = import_dataset("folders", src, tmp_path / "ds", patient_regex=r"^([A-Za-z]+_[A-Z])_")
    assert summary.n_patients == 2
    assert_no_identifier(all_text(tmp_path / "ds"), "the folders dataset")
    assert read_manifest(tmp_path / "ds")["image_path"].str.startswith("images/folders-img-").all()
    # Without a key the ids are still keyed hashes, never the file names.
    import_dataset("folders", src, tmp_path / "plain")
    assert read_manifest(tmp_path / "plain")["image_id"].str.fullmatch(r"folders-img-[0-9a-f]{16}").all()


def test_pseudonyms_depend_on_the_key_and_the_key_file_is_private(tmp_path: Path, monkeypatch) -> None:
    session = pseudonymous_id(MRNS[0], "csv")
    first, second = tmp_path / "a" / "pseudonym.key", tmp_path / "b" / "pseudonym.key"
    monkeypatch.setenv(KEY_FILE_ENV, str(first))
    one = pseudonymous_id(MRNS[0], "csv")
    assert first.is_file() and first.stat().st_mode & 0o777 == 0o600
    assert len(bytes.fromhex(first.read_text().strip())) == 32
    assert pseudonymous_id(MRNS[0], "csv") == one and one.startswith("csv-") and MRNS[0][3:] not in one
    monkeypatch.setenv(KEY_FILE_ENV, str(second))
    two = pseudonymous_id(MRNS[0], "csv")
    assert len({session, one, two}) == 3  # another key: other pseudonyms
    assert first.read_bytes() != second.read_bytes()
    monkeypatch.setenv(KEY_FILE_ENV, str(first))
    assert pseudonymous_id(MRNS[0], "csv") == one  # the key file is reused, never replaced


def test_key_location_and_bad_key_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(KEY_FILE_ENV)
    monkeypatch.setenv("MAMMOCAD_HOME", str(tmp_path / "home"))
    assert key_file() == tmp_path / "home" / "pseudonym.key"
    monkeypatch.delenv("MAMMOCAD_HOME")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert key_file() == tmp_path / "xdg" / "mammocad" / "pseudonym.key"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert key_file() == tmp_path / "user" / ".config" / "mammocad" / "pseudonym.key"
    bad = tmp_path / "bad.key"
    bad.write_text("not hex\n")
    monkeypatch.setenv(KEY_FILE_ENV, str(bad))
    with pytest.raises(DatasetError, match="not a pseudonym key"):
        pseudonym_key()


def test_session_key_is_a_temporary_file_that_subprocesses_inherit(pseudonym_key_file: Path) -> None:
    assert key_file() == pseudonym_key_file and os.environ[KEY_FILE_ENV] == str(pseudonym_key_file)
    script = (
        "from mammocad.data.privacy import key_file, pseudonymous_id\n"
        "print(key_file()); print(pseudonymous_id('MRN4815162342', 'csv'))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == [str(pseudonym_key_file), pseudonymous_id("MRN4815162342", "csv")]
    assert not str(pseudonym_key_file).startswith(str(Path("~/.config").expanduser()))


def test_processes_creating_the_key_at_once_end_with_one_key(tmp_path: Path) -> None:
    target = tmp_path / "fresh" / "pseudonym.key"
    script = "from mammocad.data.privacy import pseudonym_key\nprint(pseudonym_key().hex())\n"
    env = {**os.environ, KEY_FILE_ENV: str(target)}
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env) for _ in range(4)
    ]
    keys = {proc.communicate(timeout=120)[0].strip() for proc in procs}
    assert len(keys) == 1 and target.read_text().strip() in keys
    assert sorted(p.name for p in target.parent.iterdir()) == ["pseudonym.key"]  # no temporary file left


def test_redactor_finds_names_numbers_and_dates_but_not_ordinary_words() -> None:
    redact = Redactor("csv", ["Featherstonehaugh^Wilhelmina", "MRN4815162342", "1950-03-14", "removed"])
    text = "/data/FEATHERSTONEHAUGH_Wilhelmina/4815162342_scan_1950-03-14.png is 1950x2048, removed"
    out = redact(text)
    assert_no_identifier(out, "the redacted text")
    assert out.endswith("is 1950x2048, removed")  # sizes, years and placeholders are not identifiers
    assert redact.found_in("a/featherstonehaugh.png") and not redact.found_in("a/feather.png")
    # Per-call identifiers (a row's own) are found inside words as well (short ones as whole words).
    assert redact("Doe_JaneMRN12345678.png", ["Jane Doe", "12345678"]).count("csv-") == 3
