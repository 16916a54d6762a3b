"""TFLite conversion worker: runs inside the converter environment (`.venv-tflite`, litert-torch and
ai-edge-quantizer), never in the main one. `export tflite` drives it as a subprocess and checks parity itself.

    .venv-tflite/bin/python export/tflite_worker.py JOB.json

JOB.json: {"kind": "embedder" | "causal_lm", "model_dir": ..., "output_dir": ..., "seq_len": 128, "prefill_len": 64,
"buckets": [16, 32, 64, 128], "int8_recipe": "dynamic_wi8_afp32" | "weight_only_wi8_afp32"}
Writes `fp32.tflite` and `int8.tflite` (ai-edge-quantizer int8 weights) into output_dir: for the embedder a
(input_ids, attention_mask) -> sentence embedding graph per length bucket (signatures `seq_<N>`); for a causal
LM `prefill_<N>` and `decode` signatures with a KV cache of `seq_len` positions.
Self-contained on purpose: hai_tools is not installed in this environment.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def _embedder(model_dir: str) -> torch.nn.Module:
    from transformers import AutoModel

    class MeanPooled(torch.nn.Module):
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

    return MeanPooled().eval()


def _export_causal_lm(model_dir: str, out: Path, prefill_len: int, cache_len: int) -> None:
    """litert-torch's `export_hf`: one model with `prefill_<N>` and `decode` signatures and a KV cache."""
    import shutil
    import tempfile

    from litert_torch.generative.export_hf import export

    with tempfile.TemporaryDirectory(dir=out) as scratch:
        export.export(
            model=model_dir,
            output_dir=scratch,
            prefill_lengths=[prefill_len],
            cache_length=cache_len,
            bundle_litert_lm=False,
            keep_temporary_files=True,
        )
        shutil.move(str(Path(scratch) / "model.tflite"), out / "fp32.tflite")


def _quantize_int8(fp32_path: Path, int8_path: Path, recipe_name: str) -> None:
    from ai_edge_quantizer import quantizer, recipe

    qt = quantizer.Quantizer(str(fp32_path))
    qt.load_quantization_recipe(getattr(recipe, recipe_name)())
    result = qt.quantize()
    int8_path.write_bytes(bytes(result.quantized_model))


def _strip_tensor_names(path: Path) -> None:
    """Drop the tensors' debug names (module paths, about 190 KB a signature): a bucketed embedder repeats them
    per signature. Signatures address tensors by index, so nothing that runs the model reads them (the parity
    gates run on the stripped files)."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            tensor.name = None
    flatbuffer_utils.write_model(model, str(path))


def main(job_path: str) -> int:
    import litert_torch

    job = json.loads(Path(job_path).read_text())
    out = Path(job["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    seq = int(job.get("seq_len", 128))
    if job["kind"] == "embedder":
        # one signature `seq_<N>` per length bucket, all over one set of weights (the converter shares them)
        module, converter = _embedder(job["model_dir"]), litert_torch
        for n in job.get("buckets") or [seq]:
            sample = (torch.ones((1, n), dtype=torch.int32), torch.ones((1, n), dtype=torch.int32))
            converter = converter.signature(f"seq_{n}", module, sample)
        with torch.no_grad():
            edge = converter.convert()
        edge.export(str(out / "fp32.tflite"))
    else:
        _export_causal_lm(job["model_dir"], out, int(job.get("prefill_len", seq // 2)), seq)
    if job.get("int8", True):
        _quantize_int8(out / "fp32.tflite", out / "int8.tflite", job.get("int8_recipe", "dynamic_wi8_afp32"))
    if job["kind"] == "embedder":
        for path in out.glob("*.tflite"):
            _strip_tensor_names(path)
    print(json.dumps({"written": sorted(p.name for p in out.glob("*.tflite"))}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
