"""One likelihood scorer, by token ids: the log-probability a causal (or image-text) model gives each
candidate continuation after a prompt whose ids are fixed. The prompt and each candidate are tokenised apart
and joined as ids, so a candidate's tokens are always the ones scored (joining text first lets a trailing
space merge into the candidate's first token, which then belongs to neither side and scores nothing).

Used by the screening decision (the `screen` tool on the local backend and the screening evaluation:
`choice_probabilities`, so both decide the same way) and the radiology evaluation (`yes|no`).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def candidate_ids(tokenizer: Any, candidates: list[str]) -> list[list[int]]:
    """Token ids of each candidate continuation (no special tokens); every candidate must have at least one."""
    ids = [list(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in candidates]
    empty = [c for c, i in zip(candidates, ids, strict=True) if not i]
    if empty:
        raise ValueError(f"candidate(s) {empty} tokenise to nothing")
    return ids


def continuation_logprobs(model: Any, prompt: dict[str, Any], candidates: list[list[int]]) -> np.ndarray:
    """Sum of log-probabilities of each candidate's token ids after `prompt` (the model inputs of the prompt:
    `input_ids` of one row, and whatever else the model takes, such as `pixel_values`)."""
    import torch

    prompt_ids = torch.as_tensor(prompt["input_ids"]).reshape(1, -1)
    n = prompt_ids.shape[1]
    extra = {k: v for k, v in prompt.items() if k not in ("input_ids", "attention_mask", "token_type_ids")}
    scores = []
    with torch.no_grad():
        for ids in candidates:
            tail = torch.tensor([ids], dtype=prompt_ids.dtype)
            inputs: dict[str, Any] = {
                "input_ids": torch.cat([prompt_ids, tail], dim=1),
                "attention_mask": torch.ones(1, n + len(ids), dtype=torch.long),
                **extra,
            }
            if "token_type_ids" in prompt:
                types = torch.as_tensor(prompt["token_type_ids"]).reshape(1, -1)
                inputs["token_type_ids"] = torch.cat([types, torch.zeros_like(tail)], dim=1)
            logits = model(**inputs).logits[0, n - 1 : n - 1 + len(ids)].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            scores.append(float(logprobs[torch.arange(len(ids)), torch.tensor(ids)].sum()))
    return np.asarray(scores)


def normalised(scores: np.ndarray) -> np.ndarray:
    """Candidate probabilities from their log-likelihoods (softmax over the candidates)."""
    values = np.exp(scores - scores.max())
    return values / values.sum()


def choice_probabilities_from(scores: np.ndarray, lengths: list[int]) -> np.ndarray:
    """Probabilities of candidates from their summed log-likelihoods, per token where lengths differ (so a
    longer label is not penalised for its length)."""
    scores = np.asarray(scores, dtype=float)
    if len(set(lengths)) > 1:
        scores = scores / np.asarray(lengths, dtype=float)
    return normalised(scores)


def choice_probabilities(
    model: Any, tokenizer: Any, messages: list[dict[str, str]], choices: list[str]
) -> np.ndarray:
    """The decision among `choices` after a chat prompt: P(choice) from each choice's likelihood."""
    prompt = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True
    )
    ids = candidate_ids(tokenizer, choices)
    scores = continuation_logprobs(model, {"input_ids": prompt["input_ids"]}, ids)
    return choice_probabilities_from(scores, [len(i) for i in ids])
