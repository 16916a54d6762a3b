"""The completion-only loss (trainer/completion_loss.py) equals TRL's fused-head loss (to float32 rounding: TRL's head computes in float32), in value and in
every LoRA gradient, on a right-padded batch whose rows have their labels at different positions; and it runs
the LM head only at the labelled positions (the speed it exists for)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch


def _batch(tokenizer: Any) -> dict[str, torch.Tensor]:
    rows = [("Age: 20 months. The child walks.", "Label: on-track"), ("Age: 9 months.", "Label: refer now")]
    ids, labels = [], []
    for prompt, answer in rows:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"]
        ids.append(p + a)
        labels.append([-100] * len(p) + a)
    width = max(map(len, ids))
    pad = tokenizer.pad_token_id or 0
    return {
        "input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in ids]),
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids]),
        "labels": torch.tensor([r + [-100] * (width - len(r)) for r in labels]),
    }


def _lora(tiny_model_dir: Path) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    peft = get_peft_model(
        model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    return peft.train()


def _grads(model: Any) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    return grads


def test_equals_trl_fused_head_in_loss_and_gradients(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from trainer.completion_loss import completion_nll, labelled_positions

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = _lora(tiny_model_dir)
    batch = _batch(tokenizer)
    keep = labelled_positions(batch["labels"])
    assert len(keep) < batch["input_ids"].shape[1] - 1  # the prompt positions are left out

    reference = model(**batch, fused_lm_head=True)
    reference.loss.backward()
    expected = _grads(model)
    loss, outputs = completion_nll(model, dict(batch))
    loss.backward()
    got = _grads(model)

    assert float(loss.detach()) == pytest.approx(float(reference.loss), rel=1e-6)
    assert int(outputs["label_mask"].sum()) == int(reference.label_mask.sum())
    assert int(outputs["is_top1"].sum()) == int(reference.is_top1.sum())
    assert float(outputs["entropy"].sum()) == pytest.approx(float(reference.entropy.sum()), rel=1e-6)
    assert expected.keys() == got.keys() and expected
    for name, grad in expected.items():
        assert float((got[name] - grad).norm() / grad.norm()) < 1e-5, name


def test_num_items_in_batch_normalises_as_trl(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from trainer.completion_loss import completion_nll

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = _lora(tiny_model_dir)
    batch = _batch(tokenizer)
    with torch.no_grad():
        reference = model(**batch, fused_lm_head=True, num_items_in_batch=torch.tensor(40))
        loss, _ = completion_nll(model, dict(batch), torch.tensor(40))
    assert float(loss) == pytest.approx(float(reference.loss), rel=1e-6)


def test_a_wrong_position_set_is_caught(tiny_model_dir: Path) -> None:
    """The equality above can fail: scoring the logits one position late gives another loss."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = _lora(tiny_model_dir)
    batch = _batch(tokenizer)
    with torch.no_grad():
        reference = model(**batch, fused_lm_head=True)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        late = torch.nn.functional.cross_entropy(
            logits[:, 1:].flatten(0, 1), batch["labels"][:, 1:].flatten()
        )
    assert float(late) != pytest.approx(float(reference.loss), rel=1e-3)
