"""The release's model card: a Hugging Face metadata header, the sections of Mitchell et al. (2019) and the
medical fields of the CHAI applied model card, filled from the manifests, the registry and the eval report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from evals.backend_parity import CARD_MARK as PARITY_MARK
from evals.backend_parity import BackendParity, parity_text
from evals.gate import GateResult
from evals.privacy import CARD_MARK, PrivacyAudit, audit_text
from evals.report import EvalReport
from governance.task import TaskCard, load_task
from hai_tools.manifest import load_manifest
from hai_tools.registry import open_registry
from hai_tools.registry.base import parse_ref
from trainer.card import privacy_text


def _fmt(metric: Any) -> str:
    if metric.value is None:
        return f"undefined ({metric.note})"
    ci = (
        f" (95% CI {metric.low:.3f}–{metric.high:.3f})"
        if metric.low is not None and metric.high is not None
        else ""
    )
    return f"{metric.value:.3f}{ci}"


def _merge_parity(merged: Any) -> str:
    """The merge's parity as a reviewer reads it: the merge itself (before storage) apart from the stored model,
    whose figure adds the rounding of its weights to float32, beside the size of the logits it is read against.
    Merged models from before the split carry only the stored figure."""
    metrics, config = merged.metrics, merged.config
    stored = metrics.get("parity_max_abs_logit_diff")
    if stored is None:
        return "n/a"
    if "parity_merge_max_abs_logit_diff" not in metrics:
        return f"{stored:.3g}"
    return (
        f"max |logit diff| from base + adapter in {config['parity_dtype']}: the merge itself "
        f"{metrics['parity_merge_max_abs_logit_diff']:.3g} (tolerance {config['merge_tolerance']:g}), "
        f"the stored float32 model {stored:.3g} (tolerance {config['tolerance']:g}; largest logit "
        f"{metrics['parity_max_abs_logit']:.3g})"
    )


def license_fields(license: str, task: TaskCard) -> dict[str, str]:
    """The card header's license: an id the Hub knows, or `other` with the task's license name and link."""
    if license != "other":
        return {"license": license}
    return {"license": "other", "license_name": task.license_name} | (
        {"license_link": task.license_link} if task.license_link else {}
    )


def render_model_card(
    name: str,
    merged_dir: Path,
    report: EvalReport,
    gate: GateResult,
    lineage: list[Any],
    task: TaskCard | None = None,
    exports: list[dict[str, Any]] | None = None,
    privacy: PrivacyAudit | None = None,
    parity: BackendParity | None = None,
) -> str:
    """The card; what the model is for (task, users, population, scope, risks) comes from `task`; `privacy`: the
    membership-inference audit of the released adapter, if one was run."""
    task = task or load_task("screening")[0]
    merged = load_manifest(merged_dir)
    adapter_input = merged.input("adapter")
    adapter = load_manifest(Path(adapter_input.uri)) if adapter_input.uri else None
    dataset_ref = adapter.input("dataset").name if adapter else report.dataset["ref"]
    dataset = open_registry().get_dataset(*parse_ref(dataset_ref), missing_ok=True)
    config = adapter.config if adapter else {}
    dp = (adapter.extra.get("differential_privacy") if adapter else None) or None
    header: dict[str, Any] = {
        "base_model": merged.input("base_model").name,
        **license_fields(config.get("license", "other"), task),
        "datasets": [dataset_ref],
        "tags": ["hai-tools", "medical", "clinical-decision-support", "clinician-review-required"],
        "model-index": [
            {
                "name": name,
                "results": [
                    {
                        "task": {"type": task.hf_task_type, "name": task.title},
                        "dataset": {
                            "name": report.dataset["ref"],
                            "type": report.dataset["ref"].split("@")[0],
                            "split": report.dataset["split"],
                        },
                        "metrics": [
                            {"type": k, "value": round(v.value, 4)}
                            for k, v in report.metrics.items()
                            if v.value is not None
                        ],
                    }
                ],
            }
        ],
    }
    metric_rows = "\n".join(f"| {k} | {_fmt(v)} | {v.n} |" for k, v in report.metrics.items())
    subgroup_rows = []
    for audit in report.bias_audit:
        for group in audit.groups:
            if group.sufficient:
                sens, spec = group.metrics.get("sensitivity"), group.metrics.get("specificity")
                subgroup_rows.append(
                    f"| {audit.attribute} | {group.group} | {group.n} | "
                    f"{_fmt(sens) if sens else 'n/a'} | {_fmt(spec) if spec else 'n/a'} |"
                )
            else:
                subgroup_rows.append(
                    f"| {audit.attribute} | {group.group} | {group.n} | too small to report | |"
                )
    gaps = "\n".join(
        f"- {a.attribute}: "
        + ", ".join(f"{k} difference {_fmt(v)}" for k, v in a.difference.items() if v.value is not None)
        + (
            f"; equalized-odds difference {a.equalized_odds_difference:.3f}"
            if a.equalized_odds_difference is not None
            else ""
        )
        for a in report.bias_audit
    )
    llm_rows = "\n".join(
        f"| {suite['suite']} | {name} ({m['kind']}) | "
        + (
            f"{m['mean']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
            if m["mean"] is not None
            else "undefined"
        )
        + f" | {m['pass_rate']:.2f} | {m['n']} | {suite['judge']} |"
        for suite in report.llm_evals
        for name, m in suite["summary"].items()
    )
    llm_section = (
        "| suite | metric | mean [95% CI] | case pass rate | n | judge |\n|---|---|---|---|---|---|\n"
        + llm_rows
        if llm_rows
        else "No LLM-eval suite was run for this release."
    )
    red_team = report.red_team
    if red_team is None:
        safety_section = "The red-team suite was not run for this release."
    else:
        figures = "\n".join(f"| {k} | {_fmt(v)} | {v.n} |" for k, v in red_team.figures.items())
        outcomes = "; ".join(
            f"{run}: " + ", ".join(f"{k} {n}" for k, n in counts.items())
            for run, counts in red_team.outcomes.items()
        )
        safety_section = (
            f"Suite `{red_team.suite}` (size **{red_team.size}**, {red_team.n_requests} requests in English, Spanish "
            f"and French) through the ReasonerSkill with the guard `{red_team.guard}` on and with no guard; answers "
            f"graded by the guard's answer classifier (threshold {red_team.grading_threshold}) plus the policy's "
            "answer rules; the grader's precision and recall on the suite's labelled answers beside them.\n\n"
            f"| figure | value [95% CI] | n |\n|---|---|---|\n{figures}\n\nOutcomes: {outcomes}."
        )
    gate_rows = "\n".join(
        f"- {('PASS' if c.passed else 'FAIL') if c.counted else 'INFO'} {c.name} ({c.detail})"
        for c in gate.checks
    )
    lineage_rows = "\n".join(
        f"{'  ' * link.depth}- {link.kind} `{link.name}` {link.hash[:19]}" for link in lineage
    )
    export_rows = (
        "\n".join(
            f"- {e['kind']} `{e['name']}` {e['hash'][:19]}: "
            + "; ".join(
                f"{variant or 'parity'} " + ", ".join(f"{k} {v:.4g}" for k, v in figures.items())
                for variant, figures in e["parity"].items()
            )
            for e in exports or []
        )
        or "No edge or runtime export is part of this release."
    )
    splits = ", ".join(f"{k}: {v}" for k, v in dataset.splits.items()) if dataset else "unknown"
    deid = (dataset.deid_attestation or f"WAIVED: {dataset.deid_waiver}") if dataset else "unknown"
    return f"""---
{yaml.safe_dump(header, sort_keys=False).strip()}
---

# Model card: {name}

**Clinical decision support only. Every output is a proposal that a qualified clinician must review, edit or
reject; no output may reach a patient unreviewed.**

## Model details
- Release `{name}`: `{merged.name}` merged into `{merged.input("base_model").name}` (merge parity
  {_merge_parity(merged)}), manifest hash `{merged.content_hash}`.
- Method: {config.get("method", "n/a")} (r={config.get("lora_r", "n/a")}, alpha={config.get("lora_alpha", "n/a")},
  targets {config.get("target_modules", "n/a")}), seed {config.get("seed", "n/a")}.
- Developed with hai-tools; provenance in `manifest.json`, lineage below, signature in `release.sig`.

## Intended use and workflow (CHAI)
- Task: {task.task}
- Users: {task.users}
- Target population: {task.population}

## Out-of-scope settings
{"; ".join(task.out_of_scope).capitalize()}.

## Factors
Subgroups audited: {", ".join(a.attribute for a in report.bias_audit)}.

## Metrics (evaluation split `{report.dataset["split"]}`, n={report.dataset["n"]})
| metric | value | n |
|---|---|---|
{metric_rows}

Decision threshold {report.protocol.get("threshold")}; protocol: prompts sent sha256 `{report.protocol.get("prompts_sha256", "")[:16]}`,
chat template sha256 `{report.protocol.get("chat_template_sha256", "")[:16]}`, {report.protocol.get("decoding")}.

## LLM-eval suites (deepeval, ragas; judge named per row)
{llm_section}

## Safety evidence from the model (red-team suite, guard on and off)
{safety_section}

## Quantitative analyses by subgroup (sensitivity and specificity for "refer", 95% CI)
| attribute | group | n | sensitivity | specificity |
|---|---|---|---|---|
{chr(10).join(subgroup_rows)}

Gaps between reportable subgroups:
{gaps}

## Training data (characterisation)
- `{dataset_ref}` ({splits}); license {dataset.license if dataset else "unknown"}; content hash
  `{dataset.content_hash if dataset else "unknown"}`.
- De-identification: {deid}.
- Description: {dataset.description if dataset and dataset.description else "see the dataset's datasheet"}.

## Differential privacy
{privacy_text(dp)}

{CARD_MARK}
{audit_text(privacy) if privacy else "No membership-inference audit was run for this release (python -m evals privacy)."}

## Known risks, ethical considerations, caveats
{chr(10).join(f"- {risk}" for risk in task.risks)}

## Release gate
{gate_rows}

## Exports (verified with the release, parity against the released model)
{export_rows}

{PARITY_MARK}
{parity_text(parity) if parity else "No backend parity report goes with this release (python -m evals parity)."}

## Lineage
{lineage_rows}
"""
