"""Pediatric radiology dataset preparation (`python -m trainer data prepare-radiology`).

Reads image folders (PNG/JPEG, and DICOM through pydicom: modality/VOI LUT or window, identifying tags
removed) and a labels CSV, validates every row, pseudonymises patients, splits by patient, writes a
`datasets` image dataset (save_to_disk) plus de-identified DICOM copies, and registers it with its hashes.
Every bad image or label is reported by CSV row and file; nothing is silently dropped and nothing is written
unless all rows pass.

labels.csv columns: file, task (bone_age | rop | fracture), label (bone_age: months 0-240; rop, fracture: 0 or 1),
sex (F | M | U), age_months (0-216), site, patient_id, and optionally split (train | validation | test).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hai_tools.deid import DeidPolicy, DeidRefused, applied, deidentify, pseudonym, require_secret_salt
from hai_tools.errors import DatasetError
from hai_tools.manifest import atomic_folder

TASKS = ("bone_age", "rop", "fracture")
SPLITS = ("train", "validation", "test")
REQUIRED = ("file", "task", "label", "sex", "age_months", "site", "patient_id")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
DICOM_SUFFIXES = {".dcm", ".dicom"}


def bone_age_band(months: float) -> str:
    """The subgroups a bone-age reader is audited by (years): 0-2, 2-6, 6-12, 12-18."""
    return "0-2y" if months < 24 else "2-6y" if months < 72 else "6-12y" if months < 144 else "12-18y"


PROMPTS = {
    "bone_age": "Estimate the bone age in months from this pediatric hand radiograph. Answer: Bone age: <months>",
    "rop": "Does this retinal image show plus disease (retinopathy of prematurity)? Answer: Plus disease: yes|no",
    "fracture": "Is there a fracture on this pediatric radiograph? Answer: Fracture: yes|no",
}


def turn(prompt: str, answer: str | None = None) -> str:
    """The Gemma-3 chat format with one image (the processor expands `<start_of_image>`)."""
    text = f"<bos><start_of_turn>user\n<start_of_image>{prompt}<end_of_turn>\n<start_of_turn>model\n"
    return text + (f"{answer}<end_of_turn>\n" if answer is not None else "")


@dataclass
class Row:
    number: int
    file: Path
    rel: str
    task: str
    label: float
    sex: str
    age_months: int
    site: str
    pseudonym: str
    split: str | None


def answer_text(task: str, label: float) -> str:
    if task == "bone_age":
        return f"Bone age: {label:.0f}"
    name = "Plus disease" if task == "rop" else "Fracture"
    return f"{name}: {'yes' if int(label) == 1 else 'no'}"


def _parse_rows(raw_dir: Path, labels: Path, salt: str) -> list[Row]:
    if not labels.is_file():
        raise DatasetError(f"labels file {labels} does not exist")
    errors: list[str] = []
    rows: list[Row] = []
    with labels.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{labels.name}: missing column(s) {', '.join(missing)}")
        for number, record in enumerate(reader, start=2):  # row 1 is the header
            where = f"{labels.name} row {number} ({record.get('file') or 'no file'})"
            try:
                rows.append(_parse_row(raw_dir, record, number, salt))
            except ValueError as exc:
                errors.append(f"{where}: {exc}")
    if errors:
        more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
        raise DatasetError(f"{len(errors)} bad row(s): " + "; ".join(errors[:5]) + more)
    if not rows:
        raise DatasetError(f"{labels.name} has no rows")
    return rows


def _parse_row(raw_dir: Path, record: dict[str, str], number: int, salt: str) -> Row:
    task = (record["task"] or "").strip()
    if task not in TASKS:
        raise ValueError(f"task '{task}' is not one of {', '.join(TASKS)}")
    try:
        label = float(record["label"])
    except (TypeError, ValueError):
        raise ValueError(f"label '{record['label']}' is not a number") from None
    if task == "bone_age" and not 0 <= label <= 240:
        raise ValueError(f"bone_age label {label:g} months is out of range 0-240")
    if task != "bone_age" and label not in (0.0, 1.0):
        raise ValueError(f"{task} label {label:g} must be 0 or 1")
    sex = (record["sex"] or "").strip().upper()
    if sex not in ("F", "M", "U"):
        raise ValueError(f"sex '{record['sex']}' must be F, M or U")
    try:
        age = int(record["age_months"])
    except (TypeError, ValueError):
        raise ValueError(f"age_months '{record['age_months']}' is not a whole number") from None
    if not 0 <= age <= 216:
        raise ValueError(f"age_months {age} is out of range 0-216")
    patient = (record["patient_id"] or "").strip()
    if not patient:
        raise ValueError("patient_id is empty")
    split = (record.get("split") or "").strip() or None
    if split is not None and split not in SPLITS:
        raise ValueError(f"split '{split}' is not one of {', '.join(SPLITS)}")
    path = (raw_dir / (record["file"] or "")).resolve()
    if not record["file"] or not path.is_file() or raw_dir.resolve() not in path.parents:
        raise ValueError("image file not found under raw_dir")
    return Row(
        number,
        path,
        str(record["file"]),
        task,
        label,
        sex,
        age,
        (record["site"] or "unknown").strip(),
        pseudonym(patient, salt),
        split,
    )


def dicom_pixels(dataset: Any) -> Any:
    """DICOM pixels to 8-bit: modality LUT, then the VOI LUT or window of the file (else min-max)."""
    import numpy as np
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    pixels = apply_modality_lut(dataset.pixel_array, dataset)
    if "WindowCenter" in dataset or "VOILUTSequence" in dataset:
        pixels = apply_voi_lut(pixels, dataset)
    pixels = pixels.astype("float64")
    low, high = float(pixels.min()), float(pixels.max())
    scaled = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
    if getattr(dataset, "PhotometricInterpretation", "") == "MONOCHROME1":
        scaled = 1.0 - scaled
    return (scaled * 255).round().astype("uint8")


def rgb_image(pixels: Any) -> Any:
    """8-bit DICOM pixels (dicom_pixels) as the RGB image the model reads: one frame, one channel."""
    from PIL import Image

    if pixels.ndim != 2:
        pixels = pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] in (3, 4) else pixels[0]
    return Image.fromarray(pixels).convert("RGB")


def _load_image(row: Row, dicom_out: Path | None, salt: str, policy: DeidPolicy) -> tuple[Any, str]:
    """The 8-bit image and where it came from; DICOMs are de-identified (hai_tools.deid: refused with the
    reason when burned-in text is flagged or suspected) and a de-identified copy is kept under dicom_out."""
    from PIL import Image, UnidentifiedImageError

    suffix = row.file.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        import pydicom
        from pydicom.errors import InvalidDicomError

        try:
            dataset = pydicom.dcmread(row.file)
            pixels = dicom_pixels(dataset)
        except (InvalidDicomError, AttributeError, ValueError, KeyError, OSError) as exc:
            raise ValueError(f"unreadable DICOM: {type(exc).__name__}: {str(exc)[:120]}") from None
        try:
            deidentify(dataset, row.pseudonym, salt, policy)
        except DeidRefused as exc:
            raise ValueError(str(exc)) from None
        if dicom_out is not None:
            dataset.save_as(dicom_out / f"row{row.number:06d}.dcm")
        return rgb_image(pixels), "dicom"
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"unsupported image type '{suffix}' (PNG, JPEG or DICOM)")
    try:
        with Image.open(row.file) as image:
            image.load()
            return image.convert("RGB"), suffix.lstrip(".")
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"unreadable image: {type(exc).__name__}") from None


def _split_of(pseudo: str, ratios: tuple[float, float]) -> str:
    bucket = int(hashlib.sha256(pseudo.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "train" if bucket < ratios[0] else "validation" if bucket < ratios[0] + ratios[1] else "test"


def prepare_radiology(
    raw_dir: Path,
    output_dir: Path,
    labels: Path | None = None,
    salt: str | None = None,
    image_size: int = 448,
    ratios: tuple[float, float] = (0.8, 0.1),
    policy: DeidPolicy | None = None,
) -> dict[str, int]:
    """Validate, de-identify, split by patient and write the dataset; returns rows per split. `salt` must be
    secret (HAI_PSEUDONYM_SALT): a missing or public one is refused before anything is read."""
    import datasets

    salt = require_secret_salt(salt)
    policy = policy or DeidPolicy()
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise DatasetError(f"raw_dir {raw_dir} is not a folder")
    rows = _parse_rows(raw_dir, labels or raw_dir / "labels.csv", salt)
    # patient -> one split, whether given or assigned
    given: dict[str, set[str]] = {}
    for row in rows:
        if row.split:
            given.setdefault(row.pseudonym, set()).add(row.split)
    for row in rows:
        if len(given.get(row.pseudonym, set())) > 1:
            raise DatasetError(
                f"labels row {row.number} ({row.rel}): its patient appears in splits "
                f"{', '.join(sorted(given[row.pseudonym]))}; a patient must stay in one split"
            )
        row.split = row.split or (next(iter(given[row.pseudonym])) if row.pseudonym in given else None)
        row.split = row.split or _split_of(row.pseudonym, ratios)
    records: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    errors: list[str] = []
    with atomic_folder(output_dir) as tmp:
        dicom_out = tmp / "dicom_deidentified"
        dicom_out.mkdir()
        for row in rows:
            try:
                image, source = _load_image(row, dicom_out, salt, policy)
            except ValueError as exc:
                errors.append(f"labels row {row.number} ({row.rel}): {exc}")
                continue
            image.thumbnail((image_size, image_size))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            assert row.split is not None
            records[row.split].append(
                {
                    "image": {"bytes": buffer.getvalue(), "path": None},
                    "task": row.task,
                    "label": row.label,
                    "prompt": PROMPTS[row.task],
                    "answer": answer_text(row.task, row.label),
                    "sex": row.sex,
                    "age_months": row.age_months,
                    "site": row.site,
                    "patient_id": row.pseudonym,
                    "source_format": source,
                }
            )
        if errors:
            more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
            raise DatasetError(f"{len(errors)} bad image(s): " + "; ".join(errors[:5]) + more)
        features = datasets.Features(
            {
                "image": datasets.Image(),
                "task": datasets.Value("string"),
                "label": datasets.Value("float64"),
                "prompt": datasets.Value("string"),
                "answer": datasets.Value("string"),
                "sex": datasets.Value("string"),
                "age_months": datasets.Value("int64"),
                "site": datasets.Value("string"),
                "patient_id": datasets.Value("string"),
                "source_format": datasets.Value("string"),
            }
        )
        splits = {
            name: datasets.Dataset.from_list(items, features=features)
            for name, items in records.items()
            if items
        }
        datasets.DatasetDict(splits).save_to_disk(str(tmp / "data"))
        counts = {name: len(ds) for name, ds in splits.items()}
        (tmp / "prep.json").write_text(
            json.dumps(
                {
                    "rows": counts,
                    "tasks": {t: sum(r.task == t for r in rows) for t in TASKS},
                    "dicom_deidentified": len(list(dicom_out.iterdir())),
                    "deidentification": applied(policy),
                },
                indent=2,
            )
            + "\n"
        )
    return counts
