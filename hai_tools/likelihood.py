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
    if not extra and "token_type_ids" not in prompt:
        return _cached_continuations(model, prompt_ids, candidates)
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
            # the LM head only where a candidate token is predicted (positions n-1 .. n+len-2 of n+len), not over
            # the whole prompt: on Gemma 3 the head is 262,144 words wide, most of a forward pass
            logits = model(**inputs, logits_to_keep=len(ids) + 1).logits[0, : len(ids)].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            scores.append(float(logprobs[torch.arange(len(ids)), torch.tensor(ids)].sum()))
    return np.asarray(scores)


def _cached_continuations(model: Any, prompt_ids: Any, candidates: list[list[int]]) -> np.ndarray:
    """Text only, the same log-probabilities as scoring prompt + candidate whole (tested) at a fraction of the
    cost: the prompt but its last token runs once with no LM head (an empty `logits_to_keep`), its KV cache
    repeated for every candidate; then one batch of rows [last prompt token] + candidate[:-1] (right-padded,
    which a causal model never attends back to) runs with the head over all of them at once. On Gemma 3 the
    head (262,144 x 640) is read from memory once per forward, which was most of a scoring call's time."""
    import torch

    n = prompt_ids.shape[1]
    with torch.no_grad():
        cache = None
        if n > 1:
            cache = model(
                input_ids=prompt_ids[:, :-1], use_cache=True, logits_to_keep=torch.zeros(0, dtype=torch.long)
            ).past_key_values
            cache.batch_repeat_interleave(len(candidates))
        width = max(len(ids) for ids in candidates)
        last = int(prompt_ids[0, -1])
        rows = [[last, *ids[:-1]] + [0] * (width - len(ids)) for ids in candidates]
        out = model(
            input_ids=torch.tensor(rows, dtype=prompt_ids.dtype),
            past_key_values=cache,
            use_cache=cache is not None,
        )
        logprobs = torch.log_softmax(out.logits.float(), dim=-1)
        scores = [
            float(logprobs[row, torch.arange(len(ids)), torch.tensor(ids)].sum())
            for row, ids in enumerate(candidates)
        ]
    return np.asarray(scores)


def normalised(scores: np.ndarray) -> np.ndarray:
    """Candidate probabilities from their log-likelihoods (softmax over the candidates)."""
    values = np.exp(scores - scores.max())
    return values / values.sum()


def choice_probabilities_from(scores: np.ndarray) -> np.ndarray:
    """Probabilities of candidates from their summed log-likelihoods: the model's probability of answering
    each candidate whole, renormalised over the candidates. Not per token: dividing by length squashed a
    trained model's 0.9 on "Label: refer" (3 tokens) against "Label: on-track" (5) to 0.51 (tested), so a model
    with refer AUC 0.97 never crossed the 0.5 threshold (sensitivity 0 in `make demo`)."""
    return normalised(np.asarray(scores, dtype=float))


def choice_probabilities(
    model: Any, tokenizer: Any, messages: list[dict[str, str]], choices: list[str]
) -> np.ndarray:
    """The decision among `choices` after a chat prompt: P(choice) from each choice's likelihood."""
    prompt = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True
    )
    ids = candidate_ids(tokenizer, choices)
    scores = continuation_logprobs(model, {"input_ids": prompt["input_ids"]}, ids)
    return choice_probabilities_from(scores)
