"""TFLite conversion worker: runs inside the converter environment (`.venv-tflite`, litert-torch and
ai-edge-quantizer), never in the main one. `export tflite` drives it as a subprocess and checks parity itself.

    .venv-tflite/bin/python export/tflite_worker.py JOB.json

JOB.json: {"kind": "embedder" | "causal_lm", "model_dir": ..., "output_dir": ..., "seq_len": 128}
Writes `fp32.tflite` and `int8.tflite` (ai-edge-quantizer dynamic int8 weights) into output_dir.
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


def _single_kv_head_safe_repeat_kv() -> None:
    """litert-torch lowers transformers' `repeat_kv` (expand + reshape) wrongly when there is one KV head
    (Gemma 3 270M): replace it by an equivalent concatenation before tracing."""
    from transformers.models.gemma3 import modeling_gemma3

    def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
        if n_rep == 1:
            return hidden_states
        return (
            torch.cat([hidden_states] * n_rep, dim=1)
            if hidden_states.shape[1] == 1
            else torch.repeat_interleave(hidden_states, n_rep, dim=1)
        )

    modeling_gemma3.repeat_kv = repeat_kv


def _causal_lm(model_dir: str) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    _single_kv_head_safe_repeat_kv()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lm = AutoModelForCausalLM.from_pretrained(
                model_dir, dtype=torch.float32, attn_implementation="eager"
            )

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    return Logits().eval()


def _quantize_int8(fp32_path: Path, int8_path: Path) -> None:
    from ai_edge_quantizer import quantizer, recipe

    qt = quantizer.Quantizer(str(fp32_path))
    qt.load_quantization_recipe(recipe.dynamic_wi8_afp32())
    result = qt.quantize()
    int8_path.write_bytes(bytes(result.quantized_model))


def main(job_path: str) -> int:
    import litert_torch

    job = json.loads(Path(job_path).read_text())
    out = Path(job["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    seq = int(job.get("seq_len", 128))
    module = _embedder(job["model_dir"]) if job["kind"] == "embedder" else _causal_lm(job["model_dir"])
    sample = (torch.ones((1, seq), dtype=torch.int32), torch.ones((1, seq), dtype=torch.int32))
    with torch.no_grad():
        edge = litert_torch.convert(module, sample)
    edge.export(str(out / "fp32.tflite"))
    if job.get("int8", True):
        _quantize_int8(out / "fp32.tflite", out / "int8.tflite")
    print(json.dumps({"written": sorted(p.name for p in out.glob("*.tflite"))}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
