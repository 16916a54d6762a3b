"""The one likelihood scorer (by token ids), checked against a forward pass over the whole sequence on the
tiny causal model and the tiny image-text model; the old way of joining text first is shown to score nothing,
which is how the radiology yes/no scorer used to give p(yes) = 0.5 for every image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hai_tools.likelihood import candidate_ids, choice_probabilities_from, continuation_logprobs, normalised


def _manual(model: Any, prompt_ids: list[int], answer: list[int], **extra: Any) -> float:
    import torch

    ids = torch.tensor([prompt_ids + answer])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids, **extra).logits[0].float(), -1)
    n = len(prompt_ids)
    return float(sum(logp[n - 1 + i, tok] for i, tok in enumerate(answer)))


def test_causal_scores_equal_a_full_forward_pass(tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Age 18 months."}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
    )["input_ids"]
    answers = candidate_ids(tokenizer, ["Label: refer", "Label: monitor", "Label: on-track"])
    scores = continuation_logprobs(model, {"input_ids": prompt}, answers)
    expected = [_manual(model, prompt, a) for a in answers]
    assert np.allclose(scores, expected, atol=1e-4) and (scores < 0).all()
    probs = normalised(scores)
    assert abs(probs.sum() - 1) < 1e-9 and len(set(np.round(probs, 6))) == 3  # the labels are told apart
    assert len({len(a) for a in answers}) > 1  # the batched candidates are padded to one width


@pytest.mark.parametrize("words", [1, 150])
def test_cached_candidates_equal_full_passes_on_short_and_window_long_prompts(
    tiny_model_dir: Path, words: int
) -> None:
    """The text path runs the prompt once and the candidates as one padded batch on its cache: the same scores
    as a whole pass per candidate, for a one-token prompt (no cache) and one longer than the 128-token sliding
    window of the tiny model's local layers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    text = " ".join(["the child walks without holding on"] * words)
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"][: 1 if words == 1 else None]
    assert len(prompt) == 1 if words == 1 else len(prompt) > 128
    answers = candidate_ids(tokenizer, ["Label: refer", "Label: monitor", "Label: on-track", "x"])
    scores = continuation_logprobs(model, {"input_ids": prompt}, answers)
    expected = [_manual(model, prompt, a) for a in answers]
    assert np.allclose(scores, expected, atol=1e-4)


def test_image_text_yes_no_is_scored_not_a_constant(tiny_vlm: Path) -> None:
    """p(yes) on the tiny image-text model equals the full-sequence computation and is not 0.5; a constant
    scorer (what the old text-joining code amounted to) fails here."""
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from hai_tools.radiology import PROMPTS, turn
    from hai_tools.radiology_reading import PREFIX, yes_probability

    processor = AutoProcessor.from_pretrained(tiny_vlm)
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm, dtype=torch.float32).eval()
    prompt = turn(PROMPTS["rop"]) + PREFIX["rop"]
    values = []
    for seed in (0, 1):
        pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        p = yes_probability(processor, model, prompt, image)
        inputs = processor(text=[prompt], images=[[image]], return_tensors="pt")
        ids = inputs["input_ids"][0].tolist()
        extra = {"pixel_values": inputs["pixel_values"], "token_type_ids": None}
        yes, no = (
            _manual(
                model,
                ids,
                a,
                **{k: v for k, v in extra.items() if v is not None},
                token_type_ids=torch.tensor([inputs["token_type_ids"][0].tolist() + [0] * len(a)]),
            )
            for a in candidate_ids(processor.tokenizer, [" yes", " no"])
        )
        assert p == pytest.approx(1 / (1 + np.exp(no - yes)), abs=1e-5)
        values.append(p)
    assert all(abs(v - 0.5) > 1e-4 for v in values) and values[0] != values[1]  # the image matters


def test_joining_text_first_leaves_the_answer_unscored(tiny_vlm: Path) -> None:
    """The bug the scorer replaces: with a trailing space in the prefix, ' yes' merges into one token, so the
    text-joined sequence is no longer than the prefix and the loop over answer tokens runs zero times."""
    from transformers import AutoProcessor

    tokenizer = AutoProcessor.from_pretrained(tiny_vlm).tokenizer
    with_space = tokenizer("Plus disease: ", add_special_tokens=False)["input_ids"]
    joined = tokenizer("Plus disease: yes", add_special_tokens=False)["input_ids"]
    assert len(joined) == len(with_space)
    assert candidate_ids(tokenizer, [" yes"])[0] == joined[-1:]  # by ids, the answer token is kept


def test_choice_probabilities_are_whole_answer_probabilities_not_per_token() -> None:
    """A model that gives "Label: refer" (3 tokens) 0.9 against "Label: monitor" (3) and "Label: on-track" (5)
    at 0.05 each: per-token averaging, the old rule, squashed refer to 0.51 (at the 0.5 threshold)."""
    import math

    scores = np.array([math.log(0.9), math.log(0.05), math.log(0.05)])
    probs = choice_probabilities_from(scores)
    assert probs == pytest.approx([0.9, 0.05, 0.05], abs=1e-9)
    per_token = normalised(scores / np.array([3, 3, 5]))
    assert per_token[0] < 0.52  # what the old rule said
