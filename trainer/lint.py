"""Lint a training config for what vLLM cannot serve as an unmerged LoRA adapter.

Such an adapter still trains; it must be merged (`python -m export merge`) before vLLM serves it.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel

from trainer.config import TrainConfig

# vLLM's --max-lora-rank accepts these; its default is 16.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
_VISION = re.compile(
    r"(vision_tower|vision_model|multi_modal_projector|mm_projector|visual|siglip|patch_embed)"
)
_EMBEDDING = re.compile(r"(^|\.)(embed_tokens|lm_head|wte|word_embeddings)$")


class LintFinding(BaseModel):
    code: str
    severity: Literal["must_merge", "serve_flag"]
    message: str


def lint_for_vllm(config: TrainConfig) -> list[LintFinding]:
    findings: list[LintFinding] = []
    if config.modules_to_save:
        findings.append(
            LintFinding(
                code="modules_to_save",
                severity="must_merge",
                message=f"modules_to_save={config.modules_to_save}: vLLM loads only LoRA A/B weights, not fully "
                "trained modules",
            )
        )
    vision = [t for t in config.target_modules if _VISION.search(t)]
    if vision:
        findings.append(
            LintFinding(
                code="vision_target",
                severity="must_merge",
                message=f"target modules {vision} are in the vision tower/projector: vLLM applies LoRA to the "
                "language model only",
            )
        )
    embedding = [t for t in config.target_modules if _EMBEDDING.search(t)]
    if embedding:
        findings.append(
            LintFinding(
                code="embedding_target",
                severity="must_merge",
                message=f"target modules {embedding} are embeddings/lm_head: vLLM does not serve LoRA on them",
            )
        )
    if config.use_dora:
        findings.append(
            LintFinding(
                code="dora",
                severity="must_merge",
                message="DoRA adapters are not supported by vLLM's LoRA runtime",
            )
        )
    if config.lora_r > 512:
        findings.append(
            LintFinding(
                code="rank",
                severity="must_merge",
                message=f"lora_r={config.lora_r} exceeds vLLM's largest LoRA rank (512)",
            )
        )
    elif config.lora_r > 16:
        rank = next(r for r in VLLM_LORA_RANKS if r >= config.lora_r)
        findings.append(
            LintFinding(
                code="rank",
                severity="serve_flag",
                message=f"lora_r={config.lora_r}: serve with `--max-lora-rank {rank}`",
            )
        )
    return findings


def servable_unmerged(findings: list[LintFinding]) -> bool:
    return not any(f.severity == "must_merge" for f in findings)
