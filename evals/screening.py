"""Score the developmental-screening task from the reasoner itself: each case's three answers
`Label: refer|monitor|on-track` are scored by their token log-likelihood after the chat prompt; the
normalised likelihoods are the class probabilities (for AUC), the most likely label the prediction."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from hai_tools.demo_data import INSTRUCTION, LABEL_CHOICES, LABELS

DECODING = (
    "label-likelihood scoring of 'Label: <label>' for each of refer/monitor/on-track, each label's whole "
    "log-likelihood renormalised over the three (no sampling): the screen tool's own decision procedure"
)


def age_band(months: int) -> str:
    return "0-11m" if months < 12 else "12-23m" if months < 24 else "24-47m" if months < 48 else "48m+"


def load_reasoner(model_id: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hai_tools.manifest import load_manifest
    from hai_tools.models import resolve_base_model

    folder = Path(model_id)
    if (folder / "manifest.json").exists() and load_manifest(folder).kind == "adapter":
        from peft import PeftModel

        base = resolve_base_model(load_manifest(folder).input("base_model").name)
        model: Any = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base.path), str(folder))
        return AutoTokenizer.from_pretrained(folder), model.eval()
    path = folder if folder.is_dir() else Path(resolve_base_model(model_id).path)
    return AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32
    ).eval()


def label_probabilities(model: Any, tokenizer: Any, prompt: list[dict[str, str]]) -> np.ndarray:
    """P(label): the screening decision procedure the `screen` tool uses (hai_tools.likelihood)."""
    from hai_tools.likelihood import choice_probabilities

    return choice_probabilities(model, tokenizer, prompt, list(LABEL_CHOICES))


def score_cases(model: Any, tokenizer: Any, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for record in records:
        probs = label_probabilities(model, tokenizer, list(record["prompt"]))
        rows.append(
            {
                "case_id": record["case_id"],
                "label": record["label"],
                "predicted": LABELS[int(probs.argmax())],
                "probabilities": dict(zip(LABELS, map(float, probs), strict=True)),
                "sex": record.get("sex"),
                "language": record.get("language"),
                "site": record.get("site"),
                "age_band": age_band(int(record["age_months"])) if "age_months" in record else None,
            }
        )
    return rows


def protocol(tokenizer: Any, records: list[dict[str, Any]] | None = None) -> dict[str, str]:
    """What must not change for scores to reproduce: the prompts actually sent (their hash, in order), the
    instruction, the chat template and the decoding."""
    import json

    template = tokenizer.chat_template or ""
    sent = hashlib.sha256()
    for record in records or []:
        sent.update(json.dumps(record["prompt"], sort_keys=True, ensure_ascii=False).encode() + b"\n")
    return {
        "prompts_sha256": sent.hexdigest(),
        "instruction_sha256": hashlib.sha256(INSTRUCTION.encode()).hexdigest(),
        "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest(),
        "decoding": DECODING,
    }
