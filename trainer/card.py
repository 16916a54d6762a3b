"""The adapter card: a README.md with a Hugging Face metadata header, written into the adapter folder."""

from __future__ import annotations

from typing import Any

import yaml

from hai_tools.models import BaseModelRef
from hai_tools.registry.base import DatasetRecord
from trainer.config import TrainConfig
from trainer.lint import LintFinding

REVIEW = (
    "**Clinical decision support only. Clinician review required:** every output of this adapter is a "
    "proposal for a qualified clinician to approve, edit or reject. No output may reach a patient unreviewed."
)


def render_adapter_card(
    config: TrainConfig,
    base: BaseModelRef,
    dataset: DatasetRecord,
    metrics: dict[str, Any],
    findings: list[LintFinding],
    privacy: dict[str, Any] | None = None,
) -> str:
    header = {
        "base_model": base.id,
        "library_name": "peft",
        "license": config.license,
        "datasets": [dataset.ref],
        "pipeline_tag": "text-generation",
        "tags": [
            "hai-tools",
            config.method,
            "medical",
            "clinical-decision-support",
            "clinician-review-required",
        ],
        "metrics": sorted(k for k in metrics if k.endswith("_loss")),
        "model-index": [
            {
                "name": config.adapter_name,
                "results": [
                    {
                        "task": {"type": "text-generation"},
                        "dataset": {"name": dataset.ref, "type": dataset.name, "split": "validation"},
                        "metrics": [
                            {"type": k, "value": round(float(v), 6)}
                            for k, v in sorted(metrics.items())
                            if k.endswith("_loss")
                        ],
                    }
                ],
            }
        ],
    }
    metric_rows = "\n".join(
        f"| {k} | {v:.6g} |" for k, v in sorted(metrics.items()) if isinstance(v, int | float)
    )
    lint_rows = "\n".join(f"- `{f.code}` ({f.severity}): {f.message}" for f in findings) or "- none"
    serving = (
        "can be served unmerged by vLLM (`--enable-lora`)"
        if not any(f.severity == "must_merge" for f in findings)
        else "**must be merged** (`python -m export merge`) before vLLM serves it"
    )
    deid = (
        f"attested: {dataset.deid_attestation}"
        if dataset.deid_attestation
        else f"WAIVED: {dataset.deid_waiver}"
    )
    return f"""---
{yaml.safe_dump(header, sort_keys=False).strip()}
---

# {config.adapter_name}

{config.method.upper()} adapter (r={config.lora_r}, alpha={config.lora_alpha}, targets
{", ".join(config.target_modules)}) for `{base.id}`, trained with hai-tools.

{REVIEW}

## Intended use
Decision support for clinicians on the task of its training data ({dataset.name}): a proposal with a
rationale, reviewed by a clinician before any use.

## Out of scope
Direct advice to patients or caregivers; autonomous diagnosis or triage; any population, setting or task
not represented in the training data; use without the clinician-review step.

## Training data
- Dataset: `{dataset.ref}` ({", ".join(f"{k}: {v} rows" for k, v in dataset.splits.items())}), license
  {dataset.license}, content hash `{dataset.content_hash}`.
- De-identification: {deid}.

## Training procedure
Supervised fine-tuning with TRL (loss on the completion only), seed {config.seed}, learning rate
{config.learning_rate}, batch size {config.per_device_train_batch_size} x {config.gradient_accumulation_steps},
max length {config.max_length}. The resolved config, library versions and input hashes are in `manifest.json`.

## Differential privacy
{privacy_text(privacy)}

## Metrics (validation)
| metric | value |
|---|---|
{metric_rows}

## Serving
This adapter {serving}.
{lint_rows}

## Provenance
- Base model identity: `{base.identity}`
- Dataset content hash: `{dataset.content_hash}`
- Verify: `python -m trainer verify <this folder>`
"""


def privacy_text(privacy: dict[str, Any] | None) -> str:
    if not privacy:
        return "Not trained with differential privacy (no DP-SGD)."
    cross = privacy.get("cross_check") or {}
    patient = privacy.get("patient_level")
    if patient:
        level = (
            f" Patient level: at most {patient['max_records_per_patient']} records per patient"
            f"{' (capped by the trainer)' if patient['capped'] else ''}, so (epsilon = {patient['epsilon']}, "
            f"delta = {patient['delta']:.2e}) per patient by group privacy."
        )
    else:
        level = (
            " Patient level: not stated (the dataset registers no patient id column; a patient with several "
            "records is protected less than one record)."
        )
    return (
        f"DP-SGD through Opacus, unit of privacy: {privacy.get('unit', 'one training record')}: "
        f"(epsilon = {privacy['epsilon']}, delta = {privacy['delta']:.2e}), {privacy['accountant']} accountant"
        + (
            f" ({cross['accountant']} accountant: epsilon = {cross['epsilon']})"
            if cross.get("epsilon") is not None
            else ""
        )
        + f", per-example loss and clipping norm {privacy['max_grad_norm']}, "
        f"noise multiplier {privacy['noise_multiplier']}, sample rate {privacy['sample_rate']:.4f}, "
        f"{privacy['steps']} steps, {privacy['trained_parameters']}.{level} The guarantee covers this "
        "adapter's training data only, not the base model's pretraining data; the noise came from a "
        "non-cryptographic RNG (Opacus secure_mode off). See docs/dp_plan.md."
    )
