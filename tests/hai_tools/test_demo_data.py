"""The synthetic screening generator: deterministic, split by patient, SFT-ready records."""

from __future__ import annotations

import json
from pathlib import Path

from hai_tools.demo_data import LABELS, generate_cases, split_by_patient, write_demo_dataset
from hai_tools.manifest import verify_artifact


def test_same_seed_same_cases_other_seed_other_cases() -> None:
    assert generate_cases(40, seed=1) == generate_cases(40, seed=1)
    assert generate_cases(40, seed=1) != generate_cases(40, seed=2)


def test_splits_share_no_patient_and_cover_every_label() -> None:
    splits = split_by_patient(generate_cases(300, seed=0))
    patients = {name: {c.patient_id for c in cases} for name, cases in splits.items()}
    assert not patients["train"] & patients["validation"]
    assert not patients["train"] & patients["test"]
    assert not patients["validation"] & patients["test"]
    assert {c.label for c in splits["train"]} == set(LABELS)


def test_records_are_conversational_prompt_completion_with_subgroups(tmp_path: Path) -> None:
    files = write_demo_dataset(tmp_path / "d", n_patients=20, seed=0)
    record = json.loads(files["train"].read_text().splitlines()[0])
    assert record["prompt"][0]["role"] == "user"
    assert f"Age: {record['age_months']} months" in record["prompt"][0]["content"]
    assert record["completion"][0]["content"].startswith(f"Label: {record['label']}\n")
    assert {"sex", "language", "site", "patient_id"} <= set(record)
    assert (tmp_path / "d" / "DATASHEET.md").read_text().startswith("# Datasheet")
    assert verify_artifact(tmp_path / "d").config["seed"] == 0
