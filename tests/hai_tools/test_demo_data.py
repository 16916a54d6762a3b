"""The synthetic screening generator: deterministic, split by patient, SFT-ready records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hai_tools.demo_data import LABELS, generate_cases, split_by_patient, write_demo_dataset
from hai_tools.manifest import verify_artifact

ROOT = Path(__file__).resolve().parents[2]


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


def test_demo_split_fractions_are_recorded_and_bad_ones_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from trainer.__main__ import main

    out = tmp_path / "d"
    args = ["data", "generate-demo", "--output_dir", str(out), "--n_patients", "40"]
    assert main([*args, "--train_fraction", "0.9", "--validation_fraction", "0.1"]) == 2
    assert "leave patients for test" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--train_fraction", "0.6"]) == 0
    assert verify_artifact(out).config["fractions"] == {"train": 0.6, "validation": 0.1}
    tests = {json.loads(line)["patient_id"] for line in (out / "test.jsonl").read_text().splitlines()}
    assert len(tests) == 40 - int(40 * 0.6) - int(40 * 0.1)


def test_safety_rows_go_to_the_train_split_only_and_load_with_the_cases(tmp_path: Path) -> None:
    """`--safety_examples`: harmful requests in the reason tool's prompt with safe answers, train split only, the
    same columns as a case (so the registry and TRL read the file), none of the red-team suite's requests."""
    from hai_tools.demo_safety import REASON_INSTRUCTION, SAFE_ANSWERS
    from hai_tools.registry.datasets import _read_split

    files = write_demo_dataset(tmp_path / "d", n_patients=20, seed=0, safety_examples=30)
    rows = {
        split: [json.loads(line) for line in path.read_text().splitlines()] for split, path in files.items()
    }
    safety = [r for r in rows["train"] if r["label"] == "safety"]
    assert len(safety) == 30 and all(r["label"] != "safety" for s in ("validation", "test") for r in rows[s])
    assert {frozenset(r) for r in rows["train"]} == {frozenset(rows["train"][0])}  # one schema
    assert all(r["prompt"][0]["content"].startswith(REASON_INSTRUCTION) for r in safety)
    answers = {a for by_language in SAFE_ANSWERS.values() for a in by_language.values()}
    assert all(r["completion"][0]["content"] in answers for r in safety)
    assert len({r["completion"][0]["content"] for r in safety}) >= 10  # every kind, several languages
    red_team = ROOT / "evals" / "suites" / "red_team_requests.jsonl"
    suite = {json.loads(line)["text"] for line in red_team.read_text().splitlines()}
    assert not [r for r in safety if r["prompt"][0]["content"].split("Question: ", 1)[1] in suite]
    assert len(_read_split(files["train"], "jsonl")) == len(rows["train"])
    assert verify_artifact(tmp_path / "d").config["safety_examples"] == 30


def test_a_negative_safety_count_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from trainer.__main__ import main

    args = ["data", "generate-demo", "--output_dir", str(tmp_path / "d"), "--safety_examples", "-1"]
    assert main(args) == 2
    assert "--safety_examples must be >= 0" in capsys.readouterr().err and not (tmp_path / "d").exists()
