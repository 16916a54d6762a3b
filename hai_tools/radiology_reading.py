"""Reading one image with a (merged) Gemma-3 image-text model: the one procedure behind `python -m evals
radiology` and the server's `read_radiograph` tool, so what is served is what was evaluated.

bone age: the greedy answer `Bone age: <months>` parsed to months (None when it does not parse);
ROP plus disease and fracture: P(yes) from the likelihood of ` yes` against ` no` after the answer prefix."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hai_tools.radiology import PROMPTS, turn

PREFIX = {"rop": "Plus disease:", "fracture": "Fracture:"}  # the answer (" yes" / " no") follows the colon


def load_reader(model_dir: str | Path) -> tuple[Any, Any]:
    """The processor and the model (float32, eval mode)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return AutoProcessor.from_pretrained(model_dir), AutoModelForImageTextToText.from_pretrained(
        model_dir, dtype=torch.float32
    ).eval()


def yes_probability(processor: Any, model: Any, prompt: str, image: Any) -> float:
    """P(yes) against no after `prompt` (which ends at the answer's colon), by token ids
    (hai_tools.likelihood): the answer is scored as ` yes` / ` no`, the tokens training saw after the colon."""
    from hai_tools.likelihood import candidate_ids, continuation_logprobs, normalised

    inputs = dict(processor(text=[prompt], images=[[image]], return_tensors="pt"))
    options = candidate_ids(processor.tokenizer, [" yes", " no"])
    return float(normalised(continuation_logprobs(model, inputs, options))[0])


def read_image(
    processor: Any, model: Any, task: str, image: Any, prompt: str | None = None, max_new_tokens: int = 8
) -> dict[str, Any]:
    """One image's reading: {"answer", "prediction"} for bone age, {"p_yes"} for ROP and fracture."""
    import torch

    prompt = prompt or PROMPTS[task]
    image = image.convert("RGB")
    if task == "bone_age":
        inputs = processor(text=[turn(prompt)], images=[[image]], return_tensors="pt")
        with torch.no_grad():
            generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        text = processor.decode(generated[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        match = re.search(r"(\d+(?:\.\d+)?)", text)
        return {"answer": text.strip()[:80], "prediction": float(match.group(1)) if match else None}
    return {"p_yes": yes_probability(processor, model, turn(prompt) + PREFIX[task], image)}
