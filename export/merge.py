"""Merge a LoRA adapter into its base model, check logit parity, and write the merged model with its manifest.

python -m export merge out/adapters/screening-lora --output_dir out/merged/screening-lora
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from export.parity import causal_logits, encode_prompts, max_abs_diff
from hai_tools.errors import ManifestError
from hai_tools.manifest import (
    ArtifactInput,
    Manifest,
    atomic_folder,
    code_version,
    library_versions,
    verify_artifact,
    write_manifest,
)
from hai_tools.models import check_architecture, gemma_chat_template, resolve_base_model

log = logging.getLogger("export")

MERGE_TOLERANCE = 1e-4  # the stored (float32) merged model against base + adapter, logits in float64
MERGE_EXACT_TOLERANCE = 1e-5  # the merge itself, in float64 before its weights are rounded to float32
LIBRARIES = ("torch", "transformers", "peft", "safetensors", "hai-tools")


class ParityError(ManifestError):
    """An export's outputs differ from its source beyond the tolerance; nothing was written."""


MIN_ADAPTER_EFFECT = 1e-9  # float64 logits: below this the adapter did nothing


def check_adapter_loaded(model: Any, adapter_dir: Path) -> None:
    """Every tensor of the adapter's file is in the loaded model, equal (PEFT skips keys it cannot place with
    a warning only)."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    saved = load_file(str(adapter_dir / "adapter_model.safetensors"))
    loaded = get_peft_model_state_dict(model)
    missing = sorted(set(saved) - set(loaded))
    differ = sorted(
        k for k in set(saved) & set(loaded) if not torch.equal(saved[k], loaded[k].to(saved[k].dtype))
    )
    if missing or differ or not saved:
        example = (missing or differ or ["(the file holds no tensors)"])[0]
        raise ParityError(
            f"adapter weights did not load: {len(missing)} of {len(saved)} tensors have no place in the model and "
            f"{len(differ)} differ (e.g. {example}); nothing written"
        )


def merge_adapter(
    adapter_dir: Path,
    output_dir: Path,
    base_model_id: str | None = None,
    tolerance: float = MERGE_TOLERANCE,
    parity_dtype: str = "float64",
    merge_tolerance: float | None = None,
) -> Path:
    """Merge `adapter_dir` into its base; refuse an adapter of another base, a merge off by > merge_tolerance
    before its weights are rounded to float32 (default 1e-5 in float64; `tolerance` in float32, whose forward
    passes alone differ by more), or a stored merged model off by > tolerance."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = verify_artifact(Path(adapter_dir), kind="adapter")
    recorded = adapter.input("base_model")
    base = resolve_base_model(base_model_id or recorded.name)
    if base.identity != recorded.hash:
        raise ManifestError(
            f"adapter '{adapter.name}' was trained on base {recorded.name} ({recorded.hash[:19]}), "
            f"not on {base.id} ({base.identity[:19]})"
        )
    image_text = adapter.extra.get("modality") == "image_text"
    if not image_text:
        check_architecture(Path(base.path))
    started = time.monotonic()
    processor: Any = None
    if image_text:  # Gemma-3 image-text: merge the language model's adapters; parity on text prompts
        from transformers import AutoModelForImageTextToText, AutoProcessor

        processor = AutoProcessor.from_pretrained(adapter_dir)
        tokenizer = processor.tokenizer
        auto: Any = AutoModelForImageTextToText
    else:
        tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
        auto = AutoModelForCausalLM
    if not tokenizer.chat_template:
        tokenizer.chat_template = gemma_chat_template()
    # Reference and merge in float64: the check then measures the merge (weights rounded once to float32),
    # not float32 forward-pass noise, which alone reaches ~1e-4 on Gemma's 262k-vocabulary logits. The reference
    # is a second, independent load of base + adapter (not the model that is merged), whose adapter weights must
    # be the adapter's file and must change the base's logits: an adapter that failed to load would otherwise
    # give a merged model equal to the base, and a parity of 0.
    dtype = getattr(torch, parity_dtype)
    batches = encode_prompts(tokenizer)
    reference: Any = PeftModel.from_pretrained(
        auto.from_pretrained(base.path, dtype=torch.float32), str(adapter_dir)
    )
    check_adapter_loaded(reference, Path(adapter_dir))
    reference = reference.to(dtype)
    with_adapter = causal_logits(reference, batches)
    with reference.disable_adapter():
        effect = max_abs_diff(with_adapter, causal_logits(reference, batches))
    del reference
    if not effect > MIN_ADAPTER_EFFECT:
        raise ParityError(
            f"adapter '{adapter.name}' changes nothing on the parity prompts (max |logit diff| from the base "
            f"{effect:.3g}): its weights did not load or it was never trained; nothing written"
        )
    model: Any = auto.from_pretrained(base.path, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter_dir)).to(dtype)
    merged = model.merge_and_unload()
    # The merge itself, before storage: base + adapter folded into one set of weights, in the parity dtype. The
    # stored model's figure below adds the rounding of those weights to float32 (about 6e-5 on the 270M's logits,
    # whose largest is about 143): kept apart, a wrong merge (a scaling, a layer left out) cannot hide in it.
    exact = max_abs_diff(with_adapter, causal_logits(merged, batches))
    merge_limit = (
        merge_tolerance
        if merge_tolerance is not None
        else (MERGE_EXACT_TOLERANCE if parity_dtype == "float64" else tolerance)
    )
    log.info(
        "merge parity, before storage (%s): max |logit diff| = %.3g (tolerance %.1g)",
        parity_dtype,
        exact,
        merge_limit,
    )
    if not exact <= merge_limit:
        raise ParityError(
            f"the merge itself differs from base+adapter by {exact:.3g} > {merge_limit:g} in {parity_dtype}, "
            "before its weights are rounded for storage; nothing written"
        )
    merged = merged.to(torch.float32)
    merged.config.dtype = torch.float32

    with atomic_folder(Path(output_dir)) as tmp:
        merged.save_pretrained(tmp)
        (processor or tokenizer).save_pretrained(tmp)
        card = (
            (Path(adapter_dir) / "README.md").read_text()
            if (Path(adapter_dir) / "README.md").exists()
            else ""
        )
        (tmp / "README.md").write_text(
            card + f"\n## Merged model\nThe adapter `{adapter.name}` ({adapter.content_hash}) merged into "
            f"`{base.id}`; parity with base+adapter is in `manifest.json` (`parity_max_abs_logit_diff`).\n"
        )
        reloaded = auto.from_pretrained(tmp, dtype=dtype)
        diff = max_abs_diff(with_adapter, causal_logits(reloaded, batches))
        log.info("merge parity (%s): max |logit diff| = %.3g (tolerance %.1g)", parity_dtype, diff, tolerance)
        if not diff <= tolerance:
            raise ParityError(
                f"merged model differs from base+adapter by {diff:.3g} > {tolerance:g} on the parity prompts; "
                "nothing written"
            )
        bf16 = _bf16_parity(auto, base.path, adapter_dir, tmp, batches)
        log.info(
            "merge parity (bfloat16, reported): max |logit diff| = %.3g, top-1 agreement %.4f",
            bf16["parity_bf16_max_abs_logit_diff"],
            bf16["parity_bf16_top1_agreement"],
        )
        write_manifest(
            tmp,
            Manifest(
                kind="merged_model",
                name=adapter.name,
                inputs=[
                    ArtifactInput(
                        kind="adapter",
                        name=adapter.name,
                        hash=adapter.content_hash,
                        uri=str(Path(adapter_dir).resolve()),
                    ),
                    base.as_input(),
                ],
                config={
                    "tolerance": tolerance,
                    "merge_tolerance": merge_limit,
                    "dtype": "float32",
                    "parity_dtype": parity_dtype,
                    "parity_prompts": len(batches),
                },
                code_version=code_version(),
                library_versions=library_versions(LIBRARIES),
                metrics={
                    "parity_max_abs_logit_diff": diff,
                    "parity_merge_max_abs_logit_diff": exact,
                    "parity_max_abs_logit": max(float(t.abs().max()) for t in with_adapter),
                    "adapter_effect_max_abs_logit_diff": effect,
                    **bf16,
                },
                timings={"merge_seconds": round(time.monotonic() - started, 3)},
                extra={
                    "base_model": base.model_dump(),
                    "clinician_review_required": True,
                    "modality": "image_text" if image_text else "text",
                },
            ),
        )
    return Path(output_dir).resolve()


def _bf16_parity(
    auto: Any, base_path: str, adapter_dir: Path, merged_dir: Path, batches: list[Any]
) -> dict[str, float]:
    """What serving in bfloat16 (vLLM's usual dtype) sees, reported beside the float64 check: the merged model
    and an independent base + adapter, both loaded in bfloat16, on the parity prompts: the largest logit gap
    and the share of positions where their top-1 tokens agree. Reported, not gated: bfloat16 keeps 8 bits of
    mantissa, so its logits differ by ~1e-2 whatever the merge."""
    import torch
    from peft import PeftModel

    reference = PeftModel.from_pretrained(
        auto.from_pretrained(base_path, dtype=torch.bfloat16), str(adapter_dir)
    )
    expected = causal_logits(reference, batches)
    del reference
    got = causal_logits(auto.from_pretrained(merged_dir, dtype=torch.bfloat16), batches)
    agree = sum(int((a.argmax(-1) == b.argmax(-1)).sum()) for a, b in zip(expected, got, strict=True))
    positions = sum(int(a.shape[0] * a.shape[1]) for a in expected)
    return {
        "parity_bf16_max_abs_logit_diff": max_abs_diff(expected, got),
        "parity_bf16_top1_agreement": agree / max(positions, 1),
    }
