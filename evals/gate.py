"""The release gate: a policy YAML of minimum metrics, maximum subgroup gaps and required safety checks,
applied to an evaluation report. `python -m evals gate REPORT_DIR --policy configs/gate_lenient.yaml`."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evals.report import EvalReport
from hai_tools.errors import ConfigError


class GatePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_metrics: dict[str, float] = Field(default_factory=dict, description="metric name -> minimum value")
    max_metrics: dict[str, float] = Field(default_factory=dict, description="metric name -> maximum value")
    max_subgroup_gap: dict[str, float] = Field(default_factory=dict, description="metric -> max difference")
    max_equalized_odds_difference: float | None = None
    required_safety_checks: list[str] = Field(default_factory=list)
    min_llm_eval: dict[str, float] = Field(
        default_factory=dict, description="'suite/metric' or 'metric' -> minimum mean score"
    )
    max_llm_eval: dict[str, float] = Field(
        default_factory=dict, description="'suite/metric' or 'metric' -> maximum mean (hallucination)"
    )


class GateCheck(BaseModel):
    name: str
    passed: bool
    detail: str


class GateResult(BaseModel):
    passed: bool
    checks: list[GateCheck]


def load_policy(path: Path) -> GatePolicy:
    if not path.is_file():
        raise ConfigError(f"gate policy {path} does not exist")
    try:
        return GatePolicy.model_validate(yaml.safe_load(path.read_text()) or {})
    except (ValidationError, yaml.YAMLError) as exc:
        message = str(exc).splitlines()
        detail = " ".join(message[1:3]).strip() if isinstance(exc, ValidationError) else message[0]
        raise ConfigError(f"gate policy {path} is invalid: {detail}") from None


def apply_gate(report: EvalReport, policy: GatePolicy) -> GateResult:
    """Every check of the policy against the report; an undefined or missing metric fails its check."""
    checks: list[GateCheck] = []
    for name, minimum in policy.min_metrics.items():
        metric = report.metrics.get(name)
        value = metric.value if metric else None
        checks.append(
            GateCheck(
                name=f"{name} >= {minimum}",
                passed=value is not None and value >= minimum,
                detail=f"{value:.4f}" if value is not None else "missing or undefined",
            )
        )
    for name, maximum in policy.max_metrics.items():
        metric = report.metrics.get(name)
        value = metric.value if metric else None
        checks.append(
            GateCheck(
                name=f"{name} <= {maximum}",
                passed=value is not None and value <= maximum,
                detail=f"{value:.4f}" if value is not None else "missing or undefined",
            )
        )
    for name, limit in policy.max_subgroup_gap.items():
        for audit in report.bias_audit:
            gap = audit.difference.get(name)
            checks.append(
                GateCheck(
                    name=f"{audit.attribute} {name} gap <= {limit}",
                    passed=gap is not None and gap <= limit,
                    detail=f"{gap:.4f}" if gap is not None else "fewer than two reportable subgroups",
                )
            )
    if policy.max_equalized_odds_difference is not None:
        for audit in report.bias_audit:
            eod = audit.equalized_odds_difference
            checks.append(
                GateCheck(
                    name=f"{audit.attribute} equalized-odds difference <= "
                    f"{policy.max_equalized_odds_difference}",
                    passed=eod is not None and eod <= policy.max_equalized_odds_difference,
                    detail=f"{eod:.4f}" if eod is not None else "undefined",
                )
            )
    scores: dict[str, float | None] = {}
    for suite in report.llm_evals:
        for name, summary in suite["summary"].items():
            scores[f"{suite['suite']}/{name}"] = summary["mean"]
            scores.setdefault(name, summary["mean"])
    for bound, limits in (("min", policy.min_llm_eval), ("max", policy.max_llm_eval)):
        for name, limit in limits.items():
            score = scores.get(name)
            ok = score is not None and (score >= limit if bound == "min" else score <= limit)
            checks.append(
                GateCheck(
                    name=f"llm-eval {name} {'>=' if bound == 'min' else '<='} {limit}",
                    passed=ok,
                    detail=f"{score:.4f}" if score is not None else "suite not run or score undefined",
                )
            )
    done = {c.name: c for c in report.safety_checks}
    for name in policy.required_safety_checks:
        check = done.get(name)
        checks.append(
            GateCheck(
                name=f"safety: {name}",
                passed=bool(check and check.passed),
                detail=check.detail if check else "not run",
            )
        )
    return GateResult(passed=all(c.passed for c in checks) and bool(checks), checks=checks)
