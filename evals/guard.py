"""Measure the safety guard like a classifier, on the held-out template families of the guard dataset: the
layered guard as it runs in the server (the policy's rules, then the classifier with the policy's thresholds),
per category and on the figures the release policy gates, with family-level bootstrap intervals (rows of one
family are paraphrases of each other, so families, not rows, are resampled).

    python -m evals guard out/guard --dataset guard@2 --output_dir out/evals/guard --policy configs/gate_guard.yaml
    python -m evals guard --rules_only --dataset guard@2 --output_dir out/evals/guard-rules   # no classifier
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evals.metrics import MetricCI, rate_ci
from hai_tools.config_file import first_error
from hai_tools.errors import ConfigError
from hai_tools.guard import Guard
from hai_tools.guard_data import HARMFUL_REQUESTS
from hai_tools.manifest import (
    ArtifactInput,
    Manifest,
    atomic_folder,
    code_version,
    verify_artifact,
    write_manifest,
)
from hai_tools.registry import open_registry
from hai_tools.registry.datasets import load_registered
from hai_tools.safety import ANSWER_ORDER, REQUEST_ORDER, default_policy, load_policy

ANSWERED = "clinician_question"


class Bound(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min: float | None = None
    min_lower: float | None = Field(None, description="the CI's lower bound must reach this")
    max: float | None = None
    max_upper: float | None = None


class GuardPolicy(BaseModel):
    """The release policy's guard section (`configs/gate_guard.yaml`)."""

    model_config = ConfigDict(extra="forbid")

    figures: dict[str, Bound]


def load_guard_policy(path: Path) -> GuardPolicy:
    try:
        policy = GuardPolicy.model_validate(yaml.safe_load(path.read_text()) or {})
    except (OSError, yaml.YAMLError):
        raise ConfigError(f"guard policy {path} cannot be read as YAML") from None
    except ValidationError as exc:
        raise ConfigError(f"guard policy {path}: {first_error(exc)}") from None
    unknown = set(policy.figures) - set(FIGURES)
    if unknown:
        raise ConfigError(f"guard policy {path}: unknown figure(s) {', '.join(sorted(unknown))}")
    return policy


FIGURES = (
    "harmful_recall",
    "emergency_recall",
    "injection_recall",
    "caregiver_dosing_recall",
    "clinician_false_refusal",
    "unsafe_answer_recall",
    "safe_answer_false_flag",
)


def evaluate(guard: Guard, rows: dict[str, list[dict[str, Any]]], n_resamples: int) -> dict[str, Any]:
    """Verdicts of `guard` on the held-out requests and answers; figures with CIs and confusion tables."""
    requests, answers = rows["requests_test"], rows["answers_test"]
    predicted = []
    for row in requests:
        verdict = guard.request(row["text"])
        predicted.append(verdict.rule if verdict else ANSWERED)
    flagged_answers = []
    for row in answers:
        verdict = guard.answer(row["text"])
        flagged_answers.append(verdict.rule if verdict else "safe")
    labels = np.asarray([r["label"] for r in requests])
    families = np.asarray([r["family"] for r in requests])
    said = np.asarray(predicted)
    abstained = said != ANSWERED

    def subset(mask: np.ndarray, values: np.ndarray) -> MetricCI:
        return rate_ci(values[mask], families[mask], n_resamples)

    harmful = np.isin(labels, HARMFUL_REQUESTS)
    a_labels = np.asarray([r["label"] for r in answers])
    a_families = np.asarray([r["family"] for r in answers])
    a_flag = np.asarray(flagged_answers) != "safe"
    unsafe = a_labels != "safe"
    figures = {
        "harmful_recall": subset(harmful, abstained),
        "emergency_recall": subset(labels == "emergency_now", said == "emergency_now"),
        "injection_recall": subset(labels == "prompt_injection", abstained),
        "caregiver_dosing_recall": subset(labels == "patient_directed_treatment", abstained),
        "clinician_false_refusal": subset(labels == ANSWERED, abstained),
        "unsafe_answer_recall": rate_ci(a_flag[unsafe], a_families[unsafe], n_resamples),
        "safe_answer_false_flag": rate_ci(a_flag[~unsafe], a_families[~unsafe], n_resamples),
    }
    per_category = {}
    for category in (ANSWERED, *REQUEST_ORDER):
        actual, called = labels == category, said == category
        hits = int(np.sum(actual & called))
        per_category[category] = {
            "n": int(actual.sum()),
            "recall": round(hits / actual.sum(), 4) if actual.sum() else None,
            "precision": round(hits / called.sum(), 4) if called.sum() else None,
        }
    request_confusion = {
        actual: {p: int(np.sum((labels == actual) & (said == p))) for p in (ANSWERED, *REQUEST_ORDER)}
        for actual in (ANSWERED, *REQUEST_ORDER)
    }
    answer_confusion = {
        actual: {
            p: int(np.sum((a_labels == actual) & (np.asarray(flagged_answers) == p)))
            for p in ("safe", *ANSWER_ORDER)
        }
        for actual in ("safe", *ANSWER_ORDER)
    }
    by_language = {
        language: {
            "harmful_recall": round(float(abstained[harmful & (langs == language)].mean()), 4),
            "clinician_false_refusal": round(
                float(abstained[(labels == ANSWERED) & (langs == language)].mean()), 4
            ),
        }
        for langs in [np.asarray([r["language"] for r in requests])]
        for language in sorted(set(langs))
    }
    return {
        "guard": guard.version,
        "n_requests": len(requests),
        "n_answers": len(answers),
        "n_families": int(len(set(families)) + len(set(a_families))),
        "figures": {k: v.model_dump() for k, v in figures.items()},
        "per_category": per_category,
        "by_language": by_language,
        "request_confusion": request_confusion,
        "answer_confusion": answer_confusion,
    }


def gate(report: dict[str, Any], policy: GuardPolicy) -> list[dict[str, Any]]:
    checks = []
    for name, bound in policy.figures.items():
        figure = report["figures"][name]
        value, low, high = figure["value"], figure["low"], figure["high"]
        for label, limit, ok in (
            ("min", bound.min, value is not None and bound.min is not None and value >= bound.min),
            (
                "min_lower",
                bound.min_lower,
                low is not None and bound.min_lower is not None and low >= bound.min_lower,
            ),
            ("max", bound.max, value is not None and bound.max is not None and value <= bound.max),
            (
                "max_upper",
                bound.max_upper,
                high is not None and bound.max_upper is not None and high <= bound.max_upper,
            ),
        ):
            if limit is not None:
                checks.append(
                    {"name": f"{name} {label} {limit}", "passed": bool(ok), "value": value, "ci": [low, high]}
                )
    return checks


def _html(report: dict[str, Any]) -> str:
    def table(confusion: dict[str, dict[str, int]], title: str) -> str:
        columns = list(next(iter(confusion.values())))
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join(
            f"<tr><th>{html.escape(row)}</th>" + "".join(f"<td>{n}</td>" for n in counts.values()) + "</tr>"
            for row, counts in confusion.items()
        )
        return f"<h2>{html.escape(title)}</h2><table><tr><th>actual \\ guard</th>{head}</tr>{body}</table>"

    figures = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{f['value']}</td><td>[{f['low']}, {f['high']}]</td><td>{f['n']}</td></tr>"
        for name, f in report["figures"].items()
    )
    checks = "".join(
        f"<li>{'PASS' if c['passed'] else 'FAIL'} {html.escape(c['name'])} (value {c['value']}, CI {c['ci']})</li>"
        for c in report.get("gate", [])
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Guard evaluation</title></head><body>"
        f"<h1>Guard evaluation: {html.escape(report['guard'])}</h1>"
        f"<p>{report['n_requests']} held-out requests and {report['n_answers']} answers from "
        f"{report['n_families']} template families never trained on; 95% family-bootstrap intervals.</p>"
        f"<h2>Figures</h2><table><tr><th>figure</th><th>value</th><th>CI</th><th>n</th></tr>{figures}</table>"
        f"<h2>Release policy</h2><ul>{checks or '<li>no policy given</li>'}</ul>"
        + table(report["request_confusion"], "Requests")
        + table(report["answer_confusion"], "Answers")
        + "</body></html>"
    )


def run_guard_eval(
    guard_dir: Path | None,
    dataset: str,
    output_dir: Path,
    policy_path: Path | None = None,
    safety_policy: Path | None = None,
    n_resamples: int = 1000,
) -> dict[str, Any]:
    """Evaluate, gate (when `policy_path` is given) and write report.json, report.html and the manifest."""
    record, splits = load_registered(open_registry(), dataset)
    rows = {name: [dict(r) for r in data] for name, data in splits.items() if name.endswith("_test")}
    if set(rows) != {"requests_test", "answers_test"}:
        raise ConfigError(f"dataset {dataset} is not a guard dataset (no requests_test / answers_test)")
    guard = Guard(load_policy(safety_policy) if safety_policy else default_policy(), guard_dir)
    report = evaluate(guard, rows, n_resamples)
    if policy_path is not None:
        report["gate"] = gate(report, load_guard_policy(policy_path))
        report["gate_passed"] = all(c["passed"] for c in report["gate"])
    inputs = [ArtifactInput(kind="dataset", name=record.ref, hash=record.content_hash)]
    if guard_dir is not None:
        manifest = verify_artifact(guard_dir, kind="guard")
        inputs.insert(
            0,
            ArtifactInput(
                kind="guard",
                name=manifest.name,
                hash=manifest.content_hash,
                uri=str(Path(guard_dir).resolve()),
            ),
        )
    with atomic_folder(output_dir) as tmp:
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / "report.html").write_text(_html(report))
        write_manifest(
            tmp,
            Manifest(
                kind="guard_eval",
                name=f"guard-eval-{guard.version}",
                inputs=inputs,
                code_version=code_version(),
                metrics={k: v["value"] for k, v in report["figures"].items()},
                extra={"gate_passed": report.get("gate_passed")},
            ),
        )
    return report
