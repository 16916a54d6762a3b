"""How closely an on-device reasoner stands in for the model it falls back from (its teacher: the served, merged
model): on the eval split of a registered dataset, the share of cases where both make the same screening decision
(label likelihood, the procedure the `screen` tool and `evals run` share) and the top-1 token agreement along the
teacher's own greedy answer (teacher forcing: at each position, does the edge model predict the token the served
model produced?), plus the edge file's size against the teacher's weights. `export tflite --causal_lm` measures
each variant it converted, records the figures in the edge manifest and keeps only the variants that clear the
floors (`AgreementFloors`); with none left it refuses and writes nothing.

A case whose prompt does not fit the edge model's KV cache is one the fallback cannot serve: it counts against
the label agreement (and adds no tokens to the token agreement), and the figures say how many there were.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.parity import greedy_decode_torch
from hai_tools.demo_data import LABEL_CHOICES
from hai_tools.errors import ConfigError
from hai_tools.likelihood import candidate_ids
from hai_tools.litert import LiteRTCausalLM
from hai_tools.stats import wilson

log = logging.getLogger("export")


@dataclass(frozen=True)
class AgreementFloors:
    """What an edge reasoner must reach to be written (the issue's goals as defaults): the same label as the
    teacher on `min_label_agreement` of the cases, `min_token_agreement` of the teacher's greedy tokens predicted,
    and at most `max_size_ratio` of the teacher's weight bytes. Point estimates are compared; the intervals are
    recorded beside them."""

    min_label_agreement: float = 0.9
    min_token_agreement: float = 0.8
    max_size_ratio: float = 0.30

    def __post_init__(self) -> None:
        for name in ("min_label_agreement", "min_token_agreement"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"--{name} {value} must be between 0 and 1")
        if self.max_size_ratio <= 0:
            raise ConfigError(f"--max_size_ratio {self.max_size_ratio} must be above 0")


@dataclass(frozen=True)
class TeacherCases:
    """The teacher's side, computed once for every variant: each case's prompt ids, the teacher's label and its
    greedy answer (up to `steps` tokens, its end-of-turn included)."""

    prompts: list[list[int]]
    labels: list[int]
    answers: list[list[int]]
    weight_bytes: int


def weight_bytes(model_dir: Path) -> int:
    """Bytes of a model folder's weights (safetensors, else PyTorch bins): what serving it loads."""
    files = list(Path(model_dir).glob("*.safetensors")) or list(Path(model_dir).glob("*.bin"))
    if not files:
        raise ConfigError(f"{model_dir} holds no model weights (*.safetensors or *.bin)")
    return sum(f.stat().st_size for f in files)


def teacher_cases(
    teacher_dir: Path, tokenizer: Any, records: list[dict[str, Any]], steps: int
) -> TeacherCases:
    """Score each case on the teacher in PyTorch (float32): its label choice and its greedy answer."""
    import torch
    from transformers import AutoModelForCausalLM

    from hai_tools.likelihood import continuation_logprobs

    model = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32).eval()
    choices = candidate_ids(tokenizer, list(LABEL_CHOICES))
    stops = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")}
    prompts, labels, answers = [], [], []
    for done, record in enumerate(records, 1):
        if done % 10 == 0 or done == len(records):
            log.info("teacher: case %d of %d", done, len(records))
        ids = list(
            tokenizer.apply_chat_template(
                list(record["prompt"]), add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
        )
        prompts.append(ids)
        labels.append(int(np.argmax(continuation_logprobs(model, {"input_ids": ids}, choices))))
        answer = greedy_decode_torch(model, ids, steps)
        cut = next((i + 1 for i, t in enumerate(answer) if t in stops), len(answer))
        answers.append(answer[:cut])
    return TeacherCases(prompts, labels, answers, weight_bytes(teacher_dir))


def edge_agreement(path: Path, tokenizer: Any, teacher: TeacherCases) -> dict[str, float]:
    """One TFLite variant against the teacher's cases: label and token agreement (with Wilson intervals) and the
    cases it could not serve."""
    lm = LiteRTCausalLM(path)
    choices = candidate_ids(tokenizer, list(LABEL_CHOICES))
    longest = max(map(len, choices))
    same_label = unserved = tokens = matched = 0
    for done, (prompt, label, answer) in enumerate(
        zip(teacher.prompts, teacher.labels, teacher.answers, strict=True), 1
    ):
        if done % 10 == 0 or done == len(teacher.prompts):
            log.info("%s: case %d of %d", path.name, done, len(teacher.prompts))
        if len(prompt) - 1 + longest > lm.cache_len:
            unserved += 1
            continue
        same_label += int(np.argmax(lm.continuation_logprobs(prompt, choices))) == label
        room = lm.cache_len - (len(prompt) - 1)
        path_tokens = answer[:room]
        if path_tokens:
            predicted = lm.forced_top1(prompt, path_tokens)
            matched += sum(int(a == b) for a, b in zip(predicted, path_tokens, strict=True))
            tokens += len(path_tokens)
    n = len(teacher.prompts)
    label_low, label_high = wilson(same_label, n)
    token_low, token_high = wilson(matched, tokens) if tokens else (0.0, 0.0)
    return {
        "label_agreement": same_label / n,
        "label_agreement_low": label_low,
        "label_agreement_high": label_high,
        "token_agreement": matched / tokens if tokens else 0.0,
        "token_agreement_low": token_low,
        "token_agreement_high": token_high,
        "cases": float(n),
        "tokens": float(tokens),
        "unserved": float(unserved),
    }


def refusals(figures: dict[str, float], floors: AgreementFloors) -> list[str]:
    """Why a variant's agreement falls short of the floors (empty: it stands in for the teacher). The size cap is
    applied before any agreement is measured (`export.tflite`)."""
    why = []
    if figures["label_agreement"] < floors.min_label_agreement:
        why.append(
            f"same label as the teacher on {figures['label_agreement']:.3f} of cases "
            f"< {floors.min_label_agreement}"
        )
    if figures["token_agreement"] < floors.min_token_agreement:
        why.append(f"top-1 token agreement {figures['token_agreement']:.3f} < {floors.min_token_agreement}")
    return why
