"""Parity checks shared by every export: fixed clinical prompts, and logits compared between two models."""

from __future__ import annotations

from typing import Any

PARITY_PROMPTS = (
    "Age: 18 months\nObservations: The child walks without holding on. Not yet observed: the child says three or more words.",
    "Age: 9 months\nObservations: Caregiver reports the child sits without support and looks when their name is called.",
    "A 4-year-old has had a fever for three days and a new rash. What should the clinician consider?",
    "Summarise the developmental red flags in a 24-month-old for a referring clinician.",
)


def encode_prompts(tokenizer: Any, prompts: tuple[str, ...] = PARITY_PROMPTS) -> list[dict[str, Any]]:
    """Each prompt as chat-template model inputs (one batch of one each, no padding to hide differences)."""
    batches = []
    for prompt in prompts:
        messages = [{"role": "user", "content": prompt}]
        if tokenizer.chat_template:
            batch = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
        else:
            batch = tokenizer(prompt, return_tensors="pt")
        batches.append(dict(batch))
    return batches


def causal_logits(model: Any, batches: list[dict[str, Any]]) -> list[Any]:
    import torch

    model.eval()
    with torch.no_grad():  # float64: exact for float32 and bfloat16 logits, and a float64 model's not rounded
        return [model(**batch).logits.double() for batch in batches]


def max_abs_diff(first: list[Any], second: list[Any]) -> float:
    return max(float((a - b).abs().max()) for a, b in zip(first, second, strict=True))


def top1_agreement(first: list[Any], second: list[Any]) -> float:
    agree = total = 0
    for a, b in zip(first, second, strict=True):
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        total += a.shape[0] * a.shape[1]
    return agree / total


def greedy_decode_torch(model: Any, prompt: list[int], steps: int) -> list[int]:
    """`steps` greedy tokens with a KV cache, argmax at every step (end-of-sequence included, as the LiteRT loop
    decodes): the parity reference and the bench's baseline, a bare loop without `generate`'s processors."""
    import torch

    tokens: list[int] = []
    with torch.no_grad():
        # the LM head on the last position only (Gemma 3's is 262,144 words wide)
        out = model(input_ids=torch.tensor([prompt]), use_cache=True, logits_to_keep=1)
        for _ in range(steps):
            tokens.append(int(out.logits[0, -1].argmax()))
            if len(tokens) == steps:
                break
            out = model(
                input_ids=torch.tensor([[tokens[-1]]]), past_key_values=out.past_key_values, use_cache=True
            )
    return tokens
