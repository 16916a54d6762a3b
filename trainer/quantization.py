"""QLoRA's 4-bit base, the same on every CPU: bitsandbytes quantises the language model only (the modules to
skip are read from the model itself, not hard-coded names) and runs one code path whatever the processor.

bitsandbytes repacks a 4-bit weight in place for its AVX512-BF16/AMX kernel on the first no-grad forward in
eval mode. That repacking breaks on weights narrower than one quantisation block and leaves a layout that
training then cannot use, so a suite that passes on one CPU fails on another. `load_4bit` turns it off on
every 4-bit layer; `python -m trainer --config configs/demo_qlora.yaml` loads its base through here.
"""

from __future__ import annotations

from typing import Any

from hai_tools.errors import ConfigError


def language_model_path(model: Any) -> str:
    """The dotted name of the module transformers calls the model's decoder (its language model)."""
    decoder = model.get_decoder()
    return next((name for name, module in model.named_modules() if module is decoder and name), "")


def modules_outside(model: Any, path: str) -> list[str]:
    """The parameter-carrying modules beside the path to `path`: everything that is not the language model."""
    if not path:
        return []
    outside, prefix, node = [], "", model
    for part in path.split("."):
        for name, child in node.named_children():
            if name != part and any(True for _ in child.parameters()):
                outside.append(prefix + name)
        node, prefix = getattr(node, part), f"{prefix}{part}."
    return outside


def skip_modules_for(path: str, config: Any) -> list[str]:
    """The `llm_int8_skip_modules` for the image-text model at `path`: every module outside its language model
    and the output head, by the full names transformers matches (`model.vision_tower`, not `vision_tower`).
    (A text-only model passes no list and keeps transformers' default, the output head.)"""
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        skeleton = AutoModelForImageTextToText.from_config(config)
    outside = modules_outside(skeleton, language_model_path(skeleton))
    if not outside:
        raise ConfigError(f"{path}: found no vision tower or projector beside the language model")
    head = next(name for name, m in skeleton.named_modules() if m is skeleton.get_output_embeddings())
    return sorted({*outside, head})


def quantized_modules(model: Any) -> list[str]:
    """Names of the bitsandbytes 4-bit layers in `model`."""
    import bitsandbytes as bnb

    return [name for name, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]


def disable_cpu_repacking(model: Any) -> int:
    """Keep every 4-bit layer on bitsandbytes' portable path (no AVX512-BF16/AMX repacking); returns how many."""
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def bnb_4bit_config(skip: list[str] | None, double_quant: bool) -> Any:
    """NF4 with float32 compute (CPU-safe), skipping `skip`."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=torch.float32,
        llm_int8_skip_modules=skip,
    )


def load_4bit(auto_class: Any, path: str, *, image_text: bool, **kwargs: Any) -> Any:
    """Load `path` with a 4-bit language model; for an image-text model everything else stays full precision
    (checked after loading), and on CPU every 4-bit layer takes the portable path."""
    from transformers import AutoConfig

    skip = skip_modules_for(path, AutoConfig.from_pretrained(path)) if image_text else None
    model = auto_class.from_pretrained(
        path, quantization_config=bnb_4bit_config(skip, double_quant=not image_text), **kwargs
    )
    quantized = quantized_modules(model)
    if not quantized:
        raise ConfigError(f"{path}: QLoRA quantised no layer of the language model")
    if image_text:
        lm = language_model_path(model)
        stray = [n for n in quantized if not n.startswith(f"{lm}.")]
        if stray:
            raise ConfigError(
                f"{path}: QLoRA would quantise {len(stray)} layer(s) outside the language model"
            )
    disable_cpu_repacking(model)
    return model
