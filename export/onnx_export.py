"""ONNX exports with parity in onnxruntime: the sentence embedder (mean-pooled, L2-normalised output) and the
causal LM (logits). Dynamic batch and sequence axes; an explicit attention mask input (Gemma 3 needs one).
The embedder keeps the window of every other backend (`EMBED_MAX_TOKENS`): its saved tokenizer truncates there,
and parity covers a text longer than the window. An export whose parity misses its tolerance writes nothing.

    python -m export onnx --embedder embedded:all-minilm-l6-v2 --output_dir out/onnx/minilm
    python -m export onnx --causal_lm out/merged/screening-lora --output_dir out/onnx/screening-lora
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from export.merge import ParityError
from export.parity import PARITY_PROMPTS
from hai_tools.errors import ConfigError
from hai_tools.manifest import (
    Manifest,
    atomic_folder,
    code_version,
    library_versions,
    write_manifest,
)
from hai_tools.models import EMBED_MAX_TOKENS, BaseModelRef, check_architecture, resolve_base_model

log = logging.getLogger("export")

LIBRARIES = ("torch", "transformers", "onnx", "onnxruntime", "onnxscript", "hai-tools")
EMBED_SENTENCES = (
    "The child walks without holding on.",
    "Not yet observed: the child says three or more words.",
    "Fever for three days with a new rash in a four-year-old.",
    "Caregiver reports loss of words the child used to say, and less eye contact than before at 20 months of age.",
)


# Longer than the embedder's window (EMBED_MAX_TOKENS): parity covers what truncation keeps.
EMBED_LONG = " ".join(
    f"Visit {i}: the caregiver reports new words, steadier walking, and better sleep since the last visit."
    for i in range(1, 13)
)


def embed_parity_texts() -> tuple[str, ...]:
    """The embedder's ONNX parity texts: the fixed sentences and one longer than the window."""
    return (*EMBED_SENTENCES, EMBED_LONG)


class MeanPooledEmbedder:
    """torch.nn.Module factory: encoder -> mean over unmasked tokens -> L2 normalise (sentence-transformers)."""

    @staticmethod
    def build(model_dir: Path) -> Any:
        import torch
        from transformers import AutoModel

        class _Module(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.encoder = AutoModel.from_pretrained(
                    model_dir, dtype=torch.float32, attn_implementation="eager"
                )

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
                hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(pooled, p=2, dim=1)

        return _Module().eval()


class CausalLMLogits:
    """torch.nn.Module factory: (input_ids, attention_mask) -> logits, without a KV cache."""

    @staticmethod
    def build(model_dir: Path) -> Any:
        import torch
        from transformers import AutoModelForCausalLM

        class _Module(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.lm = AutoModelForCausalLM.from_pretrained(
                    model_dir, dtype=torch.float32, attn_implementation="eager"
                )

            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
                return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

        return _Module().eval()


def _export(module: Any, sample: dict[str, Any], path: Path, output: str) -> None:
    import torch

    batch = torch.export.Dim("batch", min=1, max=64)
    seq = torch.export.Dim("sequence", min=2, max=4096)
    shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    with torch.no_grad():
        program = torch.onnx.export(
            module,
            (),
            kwargs=dict(sample),
            dynamic_shapes=shapes,
            input_names=["input_ids", "attention_mask"],
            output_names=[output],
            dynamo=True,
            external_data=False,
            optimize=True,
        )
    assert program is not None
    program.save(str(path))


def _run_onnx(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, feeds)[0])


def _feeds(batch: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: v.numpy().astype(np.int64) for k, v in batch.items() if k in ("input_ids", "attention_mask")}


def export_onnx(model_id: str, output_dir: Path, kind: str, tolerance: float | None = None) -> Path:
    """Export `model_id` (an embedded id, HF folder or merged model) as `kind` = 'embedder' or 'causal_lm'."""
    import torch
    from transformers import AutoTokenizer

    if tolerance is not None and not tolerance >= 0:
        raise ConfigError(f"--tolerance {tolerance:g}: give a max abs difference >= 0")
    base: BaseModelRef = resolve_base_model(model_id)
    model_dir = Path(base.path)
    check_architecture(model_dir, "causal_lm" if kind == "causal_lm" else "encoder")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    started = time.monotonic()
    if kind == "embedder":
        module = MeanPooledEmbedder.build(model_dir)
        tokenizer.model_max_length = EMBED_MAX_TOKENS  # saved with the model: its users truncate where we do
        batch = dict(
            tokenizer(list(embed_parity_texts()), padding=True, truncation=True, return_tensors="pt")
        )
        output, tolerance = "sentence_embedding", 1e-4 if tolerance is None else tolerance
    else:
        module = CausalLMLogits.build(model_dir)
        texts = list(PARITY_PROMPTS[:2])
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        batch = dict(tokenizer(texts, padding=True, return_tensors="pt"))
        output, tolerance = "logits", 1e-3 if tolerance is None else tolerance
    batch = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        reference = module(**batch).float().numpy()
    with atomic_folder(Path(output_dir)) as tmp:
        path = tmp / "model.onnx"
        _export(module, {k: v[:1] for k, v in batch.items()}, path, output)
        got = _run_onnx(path, _feeds(batch))
        mask = batch["attention_mask"].numpy().astype(bool)
        diff = (
            float(np.abs(got - reference)[mask].max())
            if kind == "causal_lm"
            else float(np.abs(got - reference).max())
        )
        metrics: dict[str, float] = {"parity_max_abs_diff": diff, "parity_batch": len(batch["input_ids"])}
        if kind == "embedder":
            cosine = (got * reference).sum(1) / (
                np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1)
            )
            metrics["parity_min_cosine"] = float(cosine.min())
        else:
            metrics["parity_top1_agreement"] = float((got.argmax(-1) == reference.argmax(-1))[mask].mean())
        log.info("onnx %s parity: %s", kind, metrics)
        if not diff <= tolerance:
            raise ParityError(
                f"ONNX {kind} differs from PyTorch by {diff:.3g} > {tolerance:g}; nothing written"
            )
        tokenizer.save_pretrained(tmp)
        write_manifest(
            tmp,
            Manifest(
                kind=f"onnx_{kind}",
                name=base.id,
                inputs=[base.as_source_input()],
                config={
                    "kind": kind,
                    "output": output,
                    "opset": "dynamo default",
                    "dynamic_axes": ["batch", "sequence"],
                    "tolerance": tolerance,
                    **({"max_tokens": EMBED_MAX_TOKENS} if kind == "embedder" else {}),
                },
                code_version=code_version(),
                library_versions=library_versions(LIBRARIES),
                metrics=metrics,
                timings={"export_seconds": round(time.monotonic() - started, 3)},
            ),
        )
    return Path(output_dir).resolve()
