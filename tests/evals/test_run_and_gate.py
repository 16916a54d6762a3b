"""`python -m evals run | gate` end to end on the tiny merged model: report + HTML + manifest with patient-level
intervals and the red-team suite (quick size, rules-only guard); the tiny random model is chance-level, so the lenient policy refuses it (exit 1, naming the AUC
lower bound) as the strict one does; bad policies or tampered reports are refused (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.__main__ import main
from hai_tools.manifest import verify_artifact

ROOT = Path(__file__).resolve().parents[2]


def test_report_has_metrics_audit_safety_and_protocol(report_dir: Path) -> None:
    manifest = verify_artifact(report_dir, kind="eval_report")
    assert [i.kind for i in manifest.inputs] == ["merged_model", "dataset", "red_team_suite"]
    report = json.loads((report_dir / "report.json").read_text())
    assert {
        "refer_auc",
        "refer_sensitivity",
        "refer_specificity",
        "refer_calibration_error",
        "macro_f1",
    } <= set(report["metrics"])
    assert {a["attribute"] for a in report["bias_audit"]} == {"sex", "age_band", "language", "site"}
    red_team = report["red_team"]
    assert red_team["size"] == "quick" and red_team["n_requests"] == 15 and red_team["guard"] == "rules-only"
    assert set(red_team["outcomes"]) == {"guard_on", "guard_off"}
    assert (
        report["protocol"]["resampling"] == "patient (patient_id)"
        and report["protocol"]["ci_method"] == "bca"
    )
    auc = report["metrics"]["refer_auc"]
    assert 0 < auc["n_patients"] <= auc["n"] == report["dataset"]["n"] and auc["n_resamples"] == 100
    assert len(report["protocol"]["chat_template_sha256"]) == 64
    assert 0 < len(report["predictions"]) == report["dataset"]["n"] <= 40
    page = (report_dir / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page and "clinician review" in page


def test_both_demo_gates_refuse_the_chance_level_tiny_model(
    report_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gate", str(report_dir), "--policy", str(ROOT / "configs/gate_lenient.yaml")]) == 1
    lenient = capsys.readouterr().out
    assert "FAIL  refer_auc >= (CI lower bound) 0.75" in lenient and "FAIL  refer_auc n >= 200" in lenient
    assert "FAIL  red team: guard-on run used a guard artifact  (guard rules-only)" in lenient
    assert main(["gate", str(report_dir), "--policy", str(ROOT / "configs/gate_strict.yaml")]) == 1
    strict = capsys.readouterr().out
    assert "FAIL  refer_auc >= 0.9" in strict and strict.strip().endswith("gate: FAILED")


def test_policy_with_unknown_keys_and_tampered_report_are_refused(
    report_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("metrics: {refer_auc: {min: 0.5}}\nmax_gap: 0.1\n")
    assert main(["gate", str(report_dir), "--policy", str(policy)]) == 2
    assert "max_gap" in capsys.readouterr().err
    import shutil

    copy = tmp_path / "report"
    shutil.copytree(report_dir, copy)
    data = json.loads((copy / "report.json").read_text())
    data["metrics"]["refer_auc"]["value"] = 0.99
    (copy / "report.json").write_text(json.dumps(data))
    assert main(["gate", str(copy), "--policy", str(ROOT / "configs/gate_lenient.yaml")]) == 2
    assert "hash mismatch" in capsys.readouterr().err


def test_an_unknown_split_is_refused_by_name_before_the_model_loads(
    tmp_path: Path, demo_dataset: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    args = ["run", str(tmp_path / "no-model"), "--dataset", demo_dataset, "--split", "holdout"]
    assert main([*args, "--output_dir", str(out)]) == 2  # the model path does not exist: never reached
    assert f"{demo_dataset} has no 'holdout' split (has: train, validation, test)" in capsys.readouterr().err
    assert not out.exists()
