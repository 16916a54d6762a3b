"""`python -m trainer data prepare-radiology` on procedurally drawn PNG/JPEG images and a DICOM file the test
writes with a patient name and id: the DICOM comes out with its identifying tags removed, patients are
pseudonymised and kept in one split, the image dataset is registered with its hashes; an unreadable image,
a label out of range and a patient in two splits are reported by row and file, and nothing is written."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from trainer.__main__ import main

FIELDS = ["file", "task", "label", "sex", "age_months", "site", "patient_id", "split"]


def write_dicom(path: Path, seed: int) -> None:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    rng = np.random.default_rng(seed)
    pixels = (rng.random((64, 48)) * 4000).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MRN-0042"
    ds.PatientBirthDate = "20200101"
    ds.InstitutionName = "Children's Hospital"
    ds.AccessionNumber = "ACC123"
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2000, 3000
    ds.add_new(0x00091010, "LO", "private identifying note")
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)


def draw(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    image = Image.new("L", (96, 128), int(rng.integers(0, 60)))
    pen = ImageDraw.Draw(image)
    for _ in range(6):  # "bones"
        x, y = rng.integers(10, 80), rng.integers(10, 110)
        pen.rectangle(
            [x, y, x + int(rng.integers(4, 12)), y + int(rng.integers(10, 30))],
            fill=int(rng.integers(150, 255)),
        )
    image.save(path)


def make_raw(folder: Path, rows: list[dict[str, object]] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "xr").mkdir(exist_ok=True)
    if rows is None:
        rows = []
        tasks = ["bone_age", "rop", "fracture"]
        for i in range(24):
            task = tasks[i % 3]
            name = f"xr/img{i:02d}.{'jpg' if i % 5 == 0 else 'png'}"
            draw(folder / name, i)
            label = float(12 + 7 * i) if task == "bone_age" else float(i % 2)
            rows.append(
                {
                    "file": name,
                    "task": task,
                    "label": label,
                    "sex": "FM"[i % 2],
                    "age_months": 6 + 5 * i,
                    "site": f"site-{i % 2}",
                    "patient_id": f"MRN-{i // 2:03d}",
                    "split": "",
                }
            )
        write_dicom(folder / "xr" / "hand.dcm", 1)
        rows.append(
            {
                "file": "xr/hand.dcm",
                "task": "bone_age",
                "label": 60,
                "sex": "F",
                "age_months": 58,
                "site": "site-0",
                "patient_id": "MRN-0042",
                "split": "",
            }
        )
    with (folder / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return folder


def test_prepare_registers_a_deidentified_image_dataset(tmp_path: Path, hai_home: Path) -> None:
    import datasets
    import pydicom

    raw = make_raw(tmp_path / "raw")
    out = tmp_path / "prepared"
    args = [
        "data",
        "prepare-radiology",
        "--raw_dir",
        str(raw),
        "--output_dir",
        str(out),
        "--image_size",
        "64",
    ]
    args += [
        "--register",
        "pedirad-test@1",
        "--deid-attestation",
        "test: synthetic images, DICOM tags removed",
    ]
    assert main(args) == 0
    dicoms = list((out / "dicom_deidentified").glob("*.dcm"))
    assert len(dicoms) == 1
    cleaned = pydicom.dcmread(dicoms[0])
    # replaced (names, IDs), shifted (dates) or removed (free text) as PS3.15 says: tests/radiology/test_deid.py
    assert cleaned.PatientName != "Doe^Jane" and cleaned.PatientBirthDate != "20200101"
    assert "InstitutionName" not in cleaned and cleaned.AccessionNumber != "ACC123"
    assert cleaned.PatientID.startswith("p-") and "MRN" not in cleaned.PatientID
    assert cleaned.PatientIdentityRemoved == "YES" and not any(e.tag.is_private for e in cleaned)
    assert b"Doe^Jane" not in dicoms[0].read_bytes() and b"MRN-0042" not in dicoms[0].read_bytes()
    data = datasets.load_from_disk(str(out / "data"))
    total = sum(len(split) for split in data.values())
    assert total == 25
    patients = {name: set(split["patient_id"]) for name, split in data.items()}
    names = list(patients)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not patients[a] & patients[b]
    sample = next(iter(data.values()))[0]
    assert sample["image"].size[0] <= 64 and sample["prompt"] and sample["answer"]
    assert all(not p.startswith("MRN") for split in patients.values() for p in split)
    assert main(["data", "verify", "pedirad-test@1"]) == 0


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        ("unreadable", "row 2 (xr/img00.jpg): unreadable image"),
        ("range", "row 3 (xr/img01.png): rop label 2 must be 0 or 1"),
        ("bone_range", "row 2 (xr/img00.jpg): bone_age label 999 months is out of range"),
        ("two_splits", "its patient appears in splits test, train"),
        ("missing_file", "row 2 (xr/nothere.png): image file not found"),
        ("bad_dicom", "unreadable DICOM"),
    ],
)
def test_bad_rows_are_named_and_nothing_is_written(
    tmp_path: Path, hai_home: Path, break_it: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = make_raw(tmp_path / "raw")
    rows = list(csv.DictReader((raw / "labels.csv").open()))
    if break_it == "unreadable":
        (raw / rows[0]["file"]).write_bytes(b"not an image at all")
    elif break_it == "range":
        rows[1]["label"] = "2"
    elif break_it == "bone_range":
        rows[0]["label"] = "999"
    elif break_it == "two_splits":
        rows[0]["split"], rows[1]["split"] = "train", "test"  # rows 0 and 1 share patient MRN-000
    elif break_it == "missing_file":
        rows[0]["file"] = "xr/nothere.png"
    elif break_it == "bad_dicom":
        (raw / "xr" / "hand.dcm").write_bytes(b"DICM" * 10)
    make_raw(raw, rows)
    out = tmp_path / "prepared"
    assert main(["data", "prepare-radiology", "--raw_dir", str(raw), "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()
