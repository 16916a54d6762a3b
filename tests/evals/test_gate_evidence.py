"""The release gate decides on evidence: each kind of check is fed the report that must fail it, and fails for
the named reason; a report that meets the lenient policy passes it with exit 0 while the strict policy exits 1
naming its failures. Reports are built from data whose answer is known (synthetic patients with repeated
visits), so every figure is checked against what it must be."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evals.__main__ import main
from evals.bias import bias_audit
from evals.gate import GatePolicy, apply_gate, load_policy
from evals.metrics import MetricCI, Sampling, binary_metrics, multiclass_f1
from evals.red_team import RedTeamResult
from evals.report import EvalReport, write_eval_report

ROOT = Path(__file__).resolve().parents[2]


def _cohort(n_patients: int = 150, visits: int = 3, signal: float = 0.45, seed: int = 0) -> dict[str, Any]:
    """Patients with repeated visits: label and score are shared within a patient (visits nearly repeat)."""
    rng = np.random.default_rng(seed)
    patient_y = rng.integers(0, 2, n_patients)
    patient_score = np.clip(patient_y * signal + rng.random(n_patients) * (1 - signal), 0, 1)
    patients = np.repeat([f"P{i:04d}" for i in range(n_patients)], visits)
    y = np.repeat(patient_y, visits)
    score = np.clip(np.repeat(patient_score, visits) + rng.normal(0, 0.01, len(y)), 0, 1)
    sites = np.repeat(rng.choice(["a", "b"], n_patients), visits)
    return {"y": y, "score": score, "patients": patients, "site": sites}


def _red_team() -> RedTeamResult:
    """A red-team result that meets the lenient policy's red-team section (tests/evals/test_red_team.py measures
    real ones)."""
    zero = MetricCI(value=0.0, low=0.0, high=0.0, n=15, n_patients=5, method="percentile")
    return RedTeamResult(
        suite="red-team@1",
        suite_hash="sha256:0",
        size="quick",
        n_requests=15,
        guard="guard@sha256:0",
        guard_manifest_hash="sha256:0",
        grading_threshold=0.35,
        figures={
            "guard_on_unsafe": zero,
            "guard_off_unsafe": zero,
            "emergency_redirected": MetricCI(value=1.0, low=1.0, high=1.0, n=3, method="percentile"),
            "grader_recall": MetricCI(value=1.0, low=0.86, high=1.0, n=24, method="wilson"),
            "grader_precision": MetricCI(value=0.86, low=0.68, high=0.94, n=28, method="wilson"),
        },
        outcomes={},
        failures={},
        grader_missed=[],
        grader_false_flags=[],
    )


def _report(
    cohort: dict[str, Any],
    split: str = "test",
    min_group_size: int = 5,
    n_resamples: int = 200,
    llm_evals: list[dict[str, Any]] | None = None,
    site: np.ndarray | None = None,
) -> EvalReport:
    sampling = Sampling(n_resamples=n_resamples, clusters=cohort["patients"])
    y, score = cohort["y"], cohort["score"]
    metrics = {f"refer_{k}": v for k, v in binary_metrics(y, score, 0.5, sampling).items()}
    labels = np.where(y == 1, "refer", "on-track")
    metrics["macro_f1"] = multiclass_f1(labels, np.where(score >= 0.5, "refer", "on-track"), sampling)
    audit = bias_audit(
        {"site": cohort["site"] if site is None else site}, y, score, 0.5, min_group_size, sampling
    )
    return EvalReport(
        model={"name": "synthetic"},
        dataset={"ref": "synthetic@1", "hash": "sha256:0", "split": split, "n": len(y)},
        protocol={"min_group_size": min_group_size, "resampling": "patient (patient_id)"},
        metrics=metrics,
        bias_audit=audit,
        red_team=_red_team(),
        llm_evals=llm_evals or [],
        predictions=[],
    )


def _suite(agreement_low: float | None, n_undefined: int = 0, n: int = 5) -> dict[str, Any]:
    summary = {
        "kind": "geval",
        "mean": 0.8,
        "ci_low": 0.7,
        "ci_high": 0.9,
        "threshold": 0.5,
        "higher_is_better": True,
        "pass_rate": 1.0,
        "n": n,
        "n_undefined": n_undefined,
    }
    suite: dict[str, Any] = {
        "suite": "screening-safety",
        "judge": "j",
        "summary": {"clinical_appropriateness": summary},
    }
    if agreement_low is not None:
        suite["judge_calibration"] = {
            "n": 40,
            "agreement": {"value": agreement_low + 0.05, "low": agreement_low, "high": 0.99},
        }
    return suite


def _failing(report: EvalReport, policy: dict[str, Any]) -> dict[str, str]:
    result = apply_gate(report, GatePolicy.model_validate(policy))
    assert not result.passed
    return {c.name: c.detail for c in result.checks if c.counted and not c.passed}


@pytest.fixture(scope="module")
def good() -> EvalReport:
    return _report(_cohort())


def test_patient_level_intervals_are_wider_than_row_level_and_named() -> None:
    cohort = _cohort(n_patients=120, visits=3, signal=0.3)
    by_row = binary_metrics(cohort["y"], cohort["score"], 0.5, Sampling(n_resamples=400))
    by_patient = binary_metrics(
        cohort["y"], cohort["score"], 0.5, Sampling(n_resamples=400, clusters=cohort["patients"])
    )
    for name in ("auc", "sensitivity", "specificity"):
        row, patient = by_row[name], by_patient[name]
        assert patient.high - patient.low > 1.4 * (row.high - row.low), name  # type: ignore[operator]
        assert patient.n_patients == 120 and row.n_patients is None and patient.n == row.n == 360
        assert patient.method == row.method == "bca" and patient.n_used == 400
    percentile = binary_metrics(
        cohort["y"], cohort["score"], 0.5, Sampling(n_resamples=100, method="percentile")
    )
    assert percentile["auc"].method == "percentile"


def test_auc_resamples_with_one_class_are_counted_not_dropped() -> None:
    y = np.array([1] + [0] * 9)
    result = binary_metrics(y, np.linspace(0, 1, 10), 0.5, Sampling(n_resamples=300, method="percentile"))[
        "auc"
    ]
    assert result.n_undefined > 50 and result.n_used + result.n_undefined == 300


def test_gap_has_its_own_interval_and_auc_is_a_gap_metric() -> None:
    cohort = _cohort(n_patients=200)
    planted = cohort["score"].copy()
    noisy = cohort["site"] == "b"
    planted[noisy] = np.random.default_rng(3).random(int(noisy.sum()))  # site b: chance
    audit = bias_audit(
        {"site": cohort["site"]},
        cohort["y"],
        planted,
        0.5,
        5,
        Sampling(n_resamples=200, clusters=cohort["patients"]),
    )[0]
    gap = audit.difference["auc"]
    assert gap.value is not None and gap.low is not None and gap.low > 0.2 and gap.n_patients == 200
    assert (
        set(audit.difference) == set(audit.ratio) == {"sensitivity", "specificity", "selection_rate", "auc"}
    )


def test_a_metric_floor_and_a_lower_ci_bound_each_fail_for_their_reason(good: EvalReport) -> None:
    auc = good.metrics["refer_auc"]
    assert auc.value is not None and auc.low is not None
    failing = _failing(good, {"min_group_size": 5, "metrics": {"refer_auc": {"min": auc.value + 0.01}}})
    assert list(failing) == [f"refer_auc >= {auc.value + 0.01}"]
    floor = round((auc.value + auc.low) / 2, 4)  # above the lower bound, below the point estimate
    failing = _failing(
        good, {"min_group_size": 5, "metrics": {"refer_auc": {"min": floor, "min_lower": floor}}}
    )
    assert list(failing) == [f"refer_auc >= (CI lower bound) {floor}"]


def test_too_few_rows_or_patients_fail(good: EvalReport) -> None:
    failing = _failing(
        good, {"min_group_size": 5, "metrics": {"refer_auc": {"min_n": 1000, "min_patients": 151}}}
    )
    assert failing == {"refer_auc n >= 1000": "n=450", "refer_auc n_patients >= 151": "n_patients=150"}


def test_wrong_split_and_a_lowered_subgroup_minimum_fail() -> None:
    report = _report(_cohort(), split="validation", min_group_size=5)
    failing = _failing(report, {"min_group_size": 30})
    assert failing == {
        "evaluated split == test": "validation",
        "subgroup minimum >= 30": "the report used min_group_size 5",
    }


def test_a_subgroup_gap_fails_on_its_upper_bound(good: EvalReport) -> None:
    gap = good.bias_audit[0].difference["sensitivity"]
    assert gap.value is not None and gap.high is not None
    limit = round((gap.value + gap.high) / 2, 4)
    failing = _failing(
        good, {"min_group_size": 5, "subgroup_gaps": {"sensitivity": {"max": limit, "max_upper": limit}}}
    )
    assert list(failing) == [f"site sensitivity gap <= (CI upper bound) {limit}"]


def test_an_undefined_or_too_small_subgroup_fails_by_name() -> None:
    cohort = _cohort(n_patients=60)
    site = cohort["site"].astype(object)
    negatives = np.flatnonzero(cohort["y"][3:] == 0)[:15] + 3
    site[negatives] = "c"  # group c: negatives only, so its AUC is undefined
    site[:3] = "tiny"  # one patient's three visits
    report = _report(cohort, site=site)
    failing = _failing(report, {"min_group_size": 5, "subgroup_gaps": {"auc": {"max_upper": 0.9}}})
    assert failing["site: every subgroup reportable"] == "too small: tiny (n=3)"
    assert failing["site: gated metrics defined in every subgroup"] == "auc undefined in c"
    assert failing["site auc gap <= (CI upper bound) 0.9"].startswith("undefined [undefined, undefined]")
    lenient = {"min_group_size": 5, "undefined_subgroups_fail": False}
    assert apply_gate(report, GatePolicy.model_validate(lenient)).passed


def test_unscored_llm_cases_and_an_uncalibrated_judge_fail() -> None:
    policy = {
        "min_group_size": 5,
        "llm_eval": {"judge_agreement_floor": 0.7, "min": {"screening-safety/clinical_appropriateness": 0.5}},
    }
    undefined = _failing(_report(_cohort(), llm_evals=[_suite(0.8, n_undefined=1)]), policy)
    assert list(undefined) == ["llm-eval screening-safety/clinical_appropriateness >= 0.5"]
    assert (
        "1 undefined (counted as failures)"
        in undefined["llm-eval screening-safety/clinical_appropriateness >= 0.5"]
    )
    few = {**policy, "llm_eval": {**policy["llm_eval"], "min_scored_cases": 10}}  # type: ignore[dict-item]
    assert "5 scored case(s)" in next(
        iter(_failing(_report(_cohort(), llm_evals=[_suite(0.8)]), few).values())
    )
    uncalibrated = _failing(_report(_cohort(), llm_evals=[_suite(0.5)]), policy)
    assert list(uncalibrated) == ["llm-eval screening-safety: judge agreement >= (CI lower bound) 0.7"]
    # an uncalibrated judge's scores are reported, not counted: even a failing score cannot fail the release
    result = apply_gate(
        _report(_cohort(), llm_evals=[_suite(None)]),
        GatePolicy.model_validate(
            {
                "min_group_size": 5,
                "llm_eval": {
                    "require_calibrated_judge": False,
                    "min": {"screening-safety/clinical_appropriateness": 0.99},
                },
            }
        ),
    )
    assert result.passed and [c.counted for c in result.checks if c.name.startswith("llm-eval")] == [
        False,
        False,
    ]


def test_lenient_passes_exactly_and_strict_fails_exactly_naming_failures(
    good: EvalReport, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = write_eval_report(tmp_path / "report", good, np.zeros(2), np.zeros(2), [], {}, 0.0)
    assert main(["gate", str(out), "--policy", str(ROOT / "configs/gate_lenient.yaml")]) == 0
    assert capsys.readouterr().out.strip().endswith("gate: PASSED")
    assert main(["gate", str(out), "--policy", str(ROOT / "configs/gate_strict.yaml")]) == 1
    strict = capsys.readouterr().out
    assert "FAIL  subgroup minimum >= 30  (the report used min_group_size 5)" in strict
    assert (
        "FAIL  llm-eval screening-safety: judge agreement >= (CI lower bound) 0.8  (suite not run)" in strict
    )
    assert strict.strip().endswith("gate: FAILED")


def test_the_demo_policies_refuse_a_chance_level_model() -> None:
    chance = _report(_cohort(signal=0.0))
    auc = chance.metrics["refer_auc"]
    assert auc.low is not None and auc.high is not None and auc.low < 0.5 < auc.high
    for name in ("gate_lenient.yaml", "gate_strict.yaml"):
        assert not apply_gate(chance, load_policy(ROOT / "configs" / name)).passed, name


def test_a_flag_may_only_raise_the_policy_subgroup_minimum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "run",
        "embedded:gemma-3-270m",
        "--output_dir",
        str(tmp_path / "o"),
        "--policy",
        str(ROOT / "configs/gate_strict.yaml"),
    ]
    assert main([*args, "--min_group_size", "5"]) == 2
    assert "--min_group_size 5 is below the policy's 30" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
