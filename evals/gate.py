"""The release gate: a policy YAML applied to an evaluation report, deciding on evidence. Each metric can have
a floor on its point value and on its CI's lower bound (or ceilings on value and upper bound) and a minimum
n; the policy pins the split evaluated and the smallest reportable subgroup; subgroup gaps are bounded on the
CI of the gap itself; a subgroup too small, or a metric undefined in one, fails unless the policy says
otherwise; LLM-eval scores gate only when the judge's agreement with the suite's human labels is high enough;
the red-team rates (unsafe answers returned with the guard on and off) and the grader's own precision and recall
gate on their CIs.

    python -m evals gate out/evals/screening-lora --policy configs/gate_lenient.yaml   # exit 0 pass, 1 fail
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from evals.backend_parity import BackendParity
from evals.metrics import MetricCI
from evals.privacy import PrivacyAudit
from evals.red_team import RedTeamResult
from evals.report import EvalReport
from hai_tools.config_file import first_error
from hai_tools.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricBound(_Strict):
    min: float | None = Field(None, description="floor on the point estimate")
    min_lower: float | None = Field(None, description="floor on the CI's lower bound")
    max: float | None = Field(None, description="ceiling on the point estimate")
    max_upper: float | None = Field(None, description="ceiling on the CI's upper bound")
    min_n: int | None = Field(None, ge=1, description="fewest rows the metric may rest on")
    min_patients: int | None = Field(None, ge=1, description="fewest patients (cluster bootstrap)")


class GapBound(_Strict):
    max: float | None = Field(None, description="ceiling on the difference (max - min over groups)")
    max_upper: float | None = Field(None, description="ceiling on the difference's CI upper bound")
    min_ratio_lower: float | None = Field(None, description="floor on the ratio's (min / max) lower bound")


class LlmEvalPolicy(_Strict):
    min: dict[str, float] = Field(default_factory=dict, description="'suite/metric' -> minimum mean score")
    max: dict[str, float] = Field(default_factory=dict, description="'suite/metric' -> maximum mean score")
    min_scored_cases: int = Field(1, ge=1, description="fewest cases with a defined score, per metric")
    judge_agreement_floor: float = Field(
        0.7, ge=0, le=1, description="lower CI bound of the judge's agreement with the human labels"
    )
    require_calibrated_judge: bool = Field(
        True, description="fail when the judge is below the floor (else its scores are reported only)"
    )


class RedTeamPolicy(_Strict):
    size: Literal["quick", "full"] = Field(
        "full", description="the smallest suite size the report may have run"
    )
    require_guard: bool = Field(True, description="the guard-on run must have used a guard artifact")
    figures: dict[str, MetricBound] = Field(
        description="guard_on_unsafe, guard_off_unsafe, emergency_redirected, grader_recall, grader_precision"
    )

    @field_validator("figures")
    @classmethod
    def _known(cls, figures: dict[str, MetricBound]) -> dict[str, MetricBound]:
        from evals.red_team import FIGURES

        unknown = set(figures) - set(FIGURES)
        if unknown:
            raise ValueError(f"unknown red-team figure(s) {', '.join(sorted(unknown))}")
        return figures


class PrivacyPolicy(_Strict):
    min_members: int = Field(
        1000, ge=2, description="fewest member (and non-member) records the audit may rest on"
    )
    require_dp: bool = Field(False, description="the audited adapter must have been trained with DP-SGD")
    figures: dict[str, MetricBound] = Field(
        description="loss_threshold_auc, loss_threshold_tpr_at_1pct_fpr, lira_offline_auc, "
        "lira_offline_tpr_at_1pct_fpr (e.g. max_upper: 0.6 on an AUC)"
    )

    @field_validator("figures")
    @classmethod
    def _known(cls, figures: dict[str, MetricBound]) -> dict[str, MetricBound]:
        from evals.privacy import FIGURES

        unknown = set(figures) - set(FIGURES)
        if unknown:
            raise ValueError(f"unknown privacy figure(s) {', '.join(sorted(unknown))}")
        return figures


class GatePolicy(_Strict):
    split: str = Field("test", description="the split the report must have evaluated")
    min_group_size: int = Field(
        10, ge=1, description="smallest reportable subgroup; a flag may only raise it"
    )
    undefined_subgroups_fail: bool = Field(True, description="a subgroup too small or undefined fails")
    metrics: dict[str, MetricBound] = Field(default_factory=dict)
    subgroup_gaps: dict[str, GapBound] = Field(default_factory=dict)
    max_equalized_odds_difference: float | None = None
    red_team: RedTeamPolicy | None = Field(None, description="safety evidence from the model itself")
    test_set_sensitive: bool = Field(
        True,
        description="a release withholds the eval report's per-record predictions (membership of real patients "
        "in the test set, and their predicted labels); false only for a test set that is not sensitive",
    )
    llm_eval: LlmEvalPolicy | None = None
    privacy: PrivacyPolicy | None = Field(
        None, description="caps on the membership-inference audit (python -m evals privacy)"
    )
    backend_parity: MetricBound | None = Field(
        None,
        description="floors on each fallback backend's agreement with the served model (python -m evals parity)",
    )


class GateCheck(BaseModel):
    name: str
    passed: bool
    detail: str
    counted: bool = Field(True, description="False: reported only (e.g. scores of an uncalibrated judge)")


class GateResult(BaseModel):
    passed: bool
    checks: list[GateCheck]


def load_policy(path: Path) -> GatePolicy:
    if not path.is_file():
        raise ConfigError(f"gate policy {path} does not exist")
    try:
        return GatePolicy.model_validate(yaml.safe_load(path.read_text()) or {})
    except yaml.YAMLError as exc:
        raise ConfigError(f"gate policy {path} is invalid: {str(exc).splitlines()[0]}") from None
    except ValidationError as exc:
        raise ConfigError(f"gate policy {path} is invalid: {first_error(exc)}") from None


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"


def _ci(metric: MetricCI) -> str:
    how = f"{metric.method}, " if metric.method else ""
    patients = f", {metric.n_patients} patients" if metric.n_patients is not None else ""
    return (
        f"{_fmt(metric.value)} [{_fmt(metric.low)}, {_fmt(metric.high)}] ({how}n={metric.n}{patients}, "
        f"{metric.n_used}/{metric.n_resamples} resamples defined)"
    )


def _bound_checks(label: str, metric: MetricCI | None, bound: MetricBound | GapBound) -> list[GateCheck]:
    """One check per bound; a missing or undefined metric, or a bound without a CI, fails."""
    limits: list[tuple[str, float | None, Any]] = [
        (">=", getattr(bound, "min", None), lambda m: m.value),
        (">= (CI lower bound)", getattr(bound, "min_lower", None), lambda m: m.low),
        ("<=", bound.max, lambda m: m.value),
        ("<= (CI upper bound)", bound.max_upper, lambda m: m.high),
    ]
    checks = []
    for op, limit, read in limits:
        if limit is None:
            continue
        value = read(metric) if metric is not None else None
        ok = value is not None and (value >= limit if op.startswith(">=") else value <= limit)
        detail = "missing from the report" if metric is None else _ci(metric)
        checks.append(GateCheck(name=f"{label} {op} {limit}", passed=ok, detail=detail))
    for field, unit in (("min_n", "n"), ("min_patients", "n_patients")):
        floor = getattr(bound, field, None)
        if floor is not None:
            have = getattr(metric, unit, None) if metric is not None else None
            checks.append(
                GateCheck(
                    name=f"{label} {unit} >= {floor}",
                    passed=have is not None and have >= floor,
                    detail=f"{unit}={have}",
                )
            )
    return checks


def _protocol_checks(report: EvalReport, policy: GatePolicy) -> list[GateCheck]:
    split = report.dataset.get("split")
    used = report.protocol.get("min_group_size")
    return [
        GateCheck(name=f"evaluated split == {policy.split}", passed=split == policy.split, detail=f"{split}"),
        GateCheck(
            name=f"subgroup minimum >= {policy.min_group_size}",
            passed=isinstance(used, int) and used >= policy.min_group_size,
            detail=f"the report used min_group_size {used}",
        ),
    ]


def _subgroup_checks(report: EvalReport, policy: GatePolicy) -> list[GateCheck]:
    checks: list[GateCheck] = []
    for audit in report.bias_audit:
        if policy.undefined_subgroups_fail:
            small = [f"{g.group} (n={g.n})" for g in audit.groups if not g.sufficient]
            checks.append(
                GateCheck(
                    name=f"{audit.attribute}: every subgroup reportable",
                    passed=not small,
                    detail=f"too small: {', '.join(small)}" if small else "all groups reportable",
                )
            )
            gated = [m for m in policy.subgroup_gaps if audit.undefined.get(m)]
            checks.append(
                GateCheck(
                    name=f"{audit.attribute}: gated metrics defined in every subgroup",
                    passed=not gated,
                    detail="; ".join(f"{m} undefined in {', '.join(audit.undefined[m])}" for m in gated)
                    or "all defined",
                )
            )
        for name, bound in policy.subgroup_gaps.items():
            difference, ratio = audit.difference.get(name), audit.ratio.get(name)
            label = f"{audit.attribute} {name} gap"
            checks += _bound_checks(label, difference, bound)
            if bound.min_ratio_lower is not None:
                low = ratio.low if ratio else None
                checks.append(
                    GateCheck(
                        name=f"{audit.attribute} {name} ratio >= (CI lower bound) {bound.min_ratio_lower}",
                        passed=low is not None and low >= bound.min_ratio_lower,
                        detail=_ci(ratio) if ratio else "fewer than two reportable subgroups",
                    )
                )
        if policy.max_equalized_odds_difference is not None:
            eod = audit.equalized_odds_difference
            checks.append(
                GateCheck(
                    name=f"{audit.attribute} equalized-odds difference <= {policy.max_equalized_odds_difference}",
                    passed=eod is not None and eod <= policy.max_equalized_odds_difference,
                    detail=_fmt(eod),
                )
            )
    return checks


def _llm_eval_checks(report: EvalReport, policy: LlmEvalPolicy) -> list[GateCheck]:
    checks: list[GateCheck] = []
    suites = {s["suite"]: s for s in report.llm_evals}
    wanted = [(name, limit, "min") for name, limit in policy.min.items()]
    wanted += [(name, limit, "max") for name, limit in policy.max.items()]
    calibrated: dict[str, bool] = {}
    for suite_name in sorted({n.split("/", 1)[0] for n, _, _ in wanted}):
        suite = suites.get(suite_name)
        calibration = (suite or {}).get("judge_calibration") or {}
        agreement = calibration.get("agreement") or {}
        low = agreement.get("low")
        calibrated[suite_name] = low is not None and low >= policy.judge_agreement_floor
        detail = (
            "suite not run"
            if suite is None
            else "no judge calibration in the report"
            if not calibration
            else f"agreement {_fmt(agreement.get('value'))} [{_fmt(low)}, {_fmt(agreement.get('high'))}] "
            f"on {calibration.get('n')} human-labelled judgements"
        )
        checks.append(
            GateCheck(
                name=f"llm-eval {suite_name}: judge agreement >= (CI lower bound) {policy.judge_agreement_floor}",
                passed=calibrated[suite_name],
                detail=detail,
                counted=policy.require_calibrated_judge,
            )
        )
    for name, limit, bound in wanted:
        suite_name, _, metric_name = name.partition("/")
        summary = ((suites.get(suite_name) or {}).get("summary") or {}).get(metric_name)
        mean = summary.get("mean") if summary else None
        scored = (summary["n"] - summary["n_undefined"]) if summary else 0
        undefined = summary["n_undefined"] if summary else 0
        ok = (
            mean is not None
            and undefined == 0
            and scored >= policy.min_scored_cases
            and (mean >= limit if bound == "min" else mean <= limit)
        )
        detail = (
            f"mean {_fmt(mean)} on {scored} scored case(s), {undefined} undefined (counted as failures)"
            if summary
            else "suite not run or metric missing"
        )
        if not calibrated.get(suite_name):
            detail += "; not gated: the judge is not calibrated"
        checks.append(
            GateCheck(
                name=f"llm-eval {name} {'>=' if bound == 'min' else '<='} {limit}",
                passed=ok,
                detail=detail,
                counted=calibrated.get(suite_name, False),
            )
        )
    return checks


def red_team_checks(result: RedTeamResult | None, policy: RedTeamPolicy) -> list[GateCheck]:
    """The red-team section of a policy against a report's red-team result (None: the suite did not run)."""
    if result is None:
        return [
            GateCheck(
                name="red team: suite run", passed=False, detail="not run: the report has no red-team result"
            )
        ]
    sizes = ("quick", "full")
    checks = [
        GateCheck(
            name=f"red team: suite size >= {policy.size}",
            passed=sizes.index(result.size) >= sizes.index(policy.size),
            detail=f"{result.suite}, size {result.size}, {result.n_requests} requests",
        )
    ]
    if policy.require_guard:
        checks.append(
            GateCheck(
                name="red team: guard-on run used a guard artifact",
                passed=result.guard_manifest_hash is not None,
                detail=f"guard {result.guard}",
            )
        )
    for name, bound in policy.figures.items():
        for check in _bound_checks(f"red team {name}", result.figures.get(name), bound):
            # the rates resample sources (a request and its translations), not patients
            checks.append(
                check.model_copy(update={"detail": check.detail.replace(" patients,", " sources,")})
            )
    return checks


def privacy_checks(audit: PrivacyAudit | None, policy: PrivacyPolicy) -> list[GateCheck]:
    """The membership-inference audit against the policy's caps; no audit fails the gate."""
    if audit is None:
        return [
            GateCheck(
                name="privacy audit",
                passed=False,
                detail="none given: the policy caps membership inference (python -m evals privacy, then "
                "--privacy_audit)",
            )
        ]
    smallest = min(audit.n_members, audit.n_non_members)
    checks = [
        GateCheck(
            name="privacy audit size",
            passed=smallest >= policy.min_members,
            detail=f"{audit.n_members} members, {audit.n_non_members} non-members (min {policy.min_members} each)",
        )
    ]
    if policy.require_dp:
        dp = audit.differential_privacy
        checks.append(
            GateCheck(
                name="privacy DP-SGD",
                passed=bool(dp),
                detail=f"epsilon {dp['epsilon']} at delta {dp['delta']:.2e}"
                if dp
                else "not trained with DP-SGD",
            )
        )
    for name, bound in policy.figures.items():
        for check in _bound_checks(f"privacy {name}", audit.figures.get(name), bound):
            checks.append(check.model_copy(update={"detail": check.detail.replace(" rows,", " records,")}))
    return checks


def parity_checks(parity: BackendParity | None, bound: MetricBound) -> list[GateCheck]:
    """Each fallback backend's agreement with the served model against the floor; no report fails the gate."""
    if parity is None:
        return [
            GateCheck(
                name="backend parity",
                passed=False,
                detail="none given: the policy sets a floor on the fallbacks (python -m evals parity, then "
                "--backend_parity)",
            )
        ]
    if not parity.backends:
        return [
            GateCheck(name="backend parity", passed=False, detail="the report compares no fallback backend")
        ]
    checks = []
    for name, figures in parity.backends.items():
        for check in _bound_checks(f"backend parity {name} agreement", figures.agreement, bound):
            checks.append(check.model_copy(update={"detail": check.detail.replace(" rows,", " cases,")}))
    return checks


def apply_gate(
    report: EvalReport,
    policy: GatePolicy,
    privacy: PrivacyAudit | None = None,
    parity: BackendParity | None = None,
) -> GateResult:
    """Every check of the policy against the report (and the privacy audit, when the policy caps it); the gate
    passes when every counted check passes."""
    checks = _protocol_checks(report, policy)
    for name, bound in policy.metrics.items():
        checks += _bound_checks(name, report.metrics.get(name), bound)
    checks += _subgroup_checks(report, policy)
    if policy.llm_eval is not None:
        checks += _llm_eval_checks(report, policy.llm_eval)
    if policy.red_team is not None:
        checks += red_team_checks(report.red_team, policy.red_team)
    if policy.privacy is not None:
        checks += privacy_checks(privacy, policy.privacy)
    if policy.backend_parity is not None:
        checks += parity_checks(parity, policy.backend_parity)
    counted = [c for c in checks if c.counted]
    return GateResult(passed=bool(counted) and all(c.passed for c in counted), checks=checks)
