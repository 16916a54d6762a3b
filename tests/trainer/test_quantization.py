"""QLoRA's 4-bit base on any CPU: only the language model is quantised (skip list derived from the model), and
bitsandbytes' AVX512-BF16/AMX repacking never runs, so an eval forward between training steps works the same
on every processor. The bad cases are fed on purpose: the old hard-coded skip list, and a layer left on the
repacking path (pure tensor reshaping that fails the same way on any CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hai_tools.errors import ConfigError


def _names(model: object, needle: str) -> list[str]:
    return [n for n, _ in model.named_modules() if needle in n]  # type: ignore[attr-defined]


def test_image_text_qlora_quantises_the_language_model_only(tiny_vlm: Path) -> None:
    from trainer.quantization import quantized_modules
    from trainer.radiology import load_image_text_model

    model = load_image_text_model(str(tiny_vlm), "qlora")
    quantized = quantized_modules(model)
    assert quantized and all(n.startswith("model.language_model.") for n in quantized)
    assert _names(model, "vision_tower") and _names(model, "multi_modal_projector")
    assert not [n for n in quantized if "vision_tower" in n or "multi_modal_projector" in n or "lm_head" in n]


def test_a_skip_list_that_misses_the_vision_tower_is_refused(
    tiny_vlm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The names the trainer used before (transformers 5 matches `model.vision_tower`, not `vision_tower`)."""
    from trainer import quantization
    from trainer.radiology import load_image_text_model

    old = ["vision_tower", "multi_modal_projector", "lm_head"]
    monkeypatch.setattr(quantization, "skip_modules_for", lambda path, config: old)
    with pytest.raises(ConfigError, match=r"would quantise \d+ layer\(s\) outside the language model"):
        load_image_text_model(str(tiny_vlm), "qlora")


def test_4bit_layers_never_take_the_repacking_path(tiny_vlm: Path) -> None:
    """With the repacking path on (as bitsandbytes chooses on an AVX512-BF16 or AMX CPU), an eval forward fails
    on a layer narrower than a quantisation block, the error the issue saw; load_4bit's layers do not."""
    import bitsandbytes as bnb
    import torch
    from transformers import AutoModelForImageTextToText

    from trainer.quantization import bnb_4bit_config, load_4bit

    model = load_4bit(AutoModelForImageTextToText, str(tiny_vlm), image_text=True, dtype=torch.float32)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and not any(m.support_avx512bf16_for_cpu for m in layers)
    narrow = layers[0]
    x = torch.randn(2, narrow.in_features)
    model.eval()
    with torch.no_grad():
        before = narrow(x)
        assert torch.equal(narrow(x), before)  # weights still in the portable layout
    assert not getattr(narrow.weight.quant_state, "packing_format_for_cpu", False)

    # the bad case: the old loading (vision tower quantised) with repacking on
    bad = AutoModelForImageTextToText.from_pretrained(
        str(tiny_vlm),
        quantization_config=bnb_4bit_config(["lm_head"], double_quant=False),
        dtype=torch.float32,
    )
    vision = next(
        m for n, m in bad.named_modules() if "vision_tower" in n and isinstance(m, bnb.nn.Linear4bit)
    )
    vision.support_avx512bf16_for_cpu = True
    vision.eval()
    with torch.no_grad(), pytest.raises(RuntimeError, match=r"shape '\[\d+, 0\]' is invalid"):
        vision(torch.randn(2, vision.in_features))


def test_text_qlora_trains_after_an_eval_forward(tiny_model_dir: Path) -> None:
    """The 'no forward before training' trap is gone: eval forward, then a training step changes the adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from trainer.quantization import load_4bit, quantized_modules

    torch.manual_seed(0)
    model = load_4bit(AutoModelForCausalLM, str(tiny_model_dir), image_text=False, dtype=torch.float32)
    assert quantized_modules(model) and "lm_head" not in quantized_modules(model)
    model = get_peft_model(
        model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    ids = torch.tensor([[2, 5, 6, 7, 8, 9]])
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    model.train()
    lora = [p for n, p in model.named_parameters() if p.requires_grad]
    before = [p.detach().clone() for p in lora]
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.optim.SGD(lora, lr=0.1).step()
    assert torch.isfinite(loss) and any(not torch.equal(a, b) for a, b in zip(before, lora, strict=True))
