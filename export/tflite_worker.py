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
from typing import Any

import torch


def _embedder(model_dir: str, window: int) -> torch.nn.Module:
    from transformers import AutoModel

    class MeanPooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_pretrained(
                model_dir, dtype=torch.float32, attn_implementation="eager"
            )
            self.positions = _LookedUpPositions.fits(self.encoder)
            if self.positions:
                self.encoder.embeddings = _LookedUpPositions(self.encoder.embeddings, window)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            # positions 0..n-1 over the text (right-padded: a pad's position never reaches a text token or the
            # pooled vector, which both mask it out), computed from the input so that no signature folds them
            extra = {}
            if self.positions:
                extra["position_ids"] = (torch.cumsum(attention_mask, dim=1) - 1).clamp(min=0)
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, **extra
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    return MeanPooled().eval()


class _LookedUpPositions(torch.nn.Module):
    """A BERT embedding layer whose positions are looked up, not constants. The stock layer adds
    `position_embeddings[:n]` and the token-type row as constants, which the converter folds into two fp32
    [1, n, hidden] tensors per signature (0.74 MB over four buckets, stored whole even in the int8 file). Here the
    token-type row (type 0: a sentence embedder has one segment) is folded into one position table cut to the
    window, looked up by the given positions: one table shared by every signature, int8 like the word table.
    Other encoders (no absolute positions, or another layout) keep their own layer."""

    @staticmethod
    def fits(encoder: Any) -> bool:
        stock = encoder.embeddings
        parts = ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm")
        absolute = getattr(encoder.config, "position_embedding_type", "absolute") == "absolute"
        return absolute and type(stock).__name__ == "BertEmbeddings" and all(hasattr(stock, p) for p in parts)

    def __init__(self, stock: Any, window: int) -> None:
        super().__init__()
        self.word = stock.word_embeddings
        with torch.no_grad():
            table = stock.position_embeddings.weight[:window] + stock.token_type_embeddings.weight[0]
        self.position = torch.nn.Embedding.from_pretrained(table.clone(), freeze=True)
        self.norm = stock.LayerNorm

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, **_: object) -> torch.Tensor:
        return self.norm(self.word(input_ids) + self.position(position_ids))


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


def _quantization_key(q: Any) -> tuple[object, ...]:
    import numpy as np

    arrays = (getattr(q, f) for f in ("min", "max", "scale", "zeroPoint"))
    return (
        *(None if a is None else np.asarray(a).tobytes() for a in arrays),
        q.detailsType,
        q.quantizedDimension,
    )


def _share_quantization(model: Any) -> None:
    """Let tensors with equal quantization parameters point at one stored copy. ai-edge-quantizer quantises each
    signature on its own, so a bucketed embedder stored every weight's per-channel scales and (int64) zero points
    once per signature, 0.6 MB each; a flatbuffer may reference one table from many tensors, and one zero-point
    vector from every table of its length. Packed tables and vectors are cached per builder (flatbuffers
    references point to what was built before, which a cached one always was)."""
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema

    fields = (  # the vector fields of a quantization table: name, stored type, how the table adds it
        ("min", np.float32, schema.QuantizationParametersAddMin),
        ("max", np.float32, schema.QuantizationParametersAddMax),
        ("scale", np.float32, schema.QuantizationParametersAddScale),
        ("zeroPoint", np.int64, schema.QuantizationParametersAddZeroPoint),
    )
    # per builder (held, so that no id is reused): what each table and vector was packed to
    packed: dict[Any, dict[object, int]] = {}

    class Shared(schema.QuantizationParametersT):
        def Pack(self, builder: Any) -> int:  # the generated API's name
            built = packed.setdefault(builder, {})
            if id(self) in built:
                return built[id(self)]
            vectors = {}  # built before the table starts, as flatbuffers requires
            for field, dtype, _ in fields:
                value = getattr(self, field)
                if value is not None:
                    array = np.asarray(value, dtype=dtype)
                    key = (field, array.tobytes())
                    if key not in built:
                        built[key] = builder.CreateNumpyVector(array)
                    vectors[field] = built[key]
            schema.QuantizationParametersStart(builder)
            for field, _, add in fields:
                if field in vectors:
                    add(builder, vectors[field])
            schema.QuantizationParametersAddDetailsType(builder, self.detailsType)
            schema.QuantizationParametersAddQuantizedDimension(builder, self.quantizedDimension)
            built[id(self)] = schema.QuantizationParametersEnd(builder)
            return built[id(self)]

    tables: dict[tuple[object, ...], object] = {}
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            q = tensor.quantization
            if q is None or q.details is not None:  # custom or blockwise details: left as they are
                continue
            key = _quantization_key(q)
            if key not in tables:
                tables[key] = Shared(
                    min=q.min,
                    max=q.max,
                    scale=q.scale,
                    zeroPoint=q.zeroPoint,
                    detailsType=q.detailsType,
                    quantizedDimension=q.quantizedDimension,
                )
            tensor.quantization = tables[key]


def model_digest(model: Any) -> list[object]:
    """What the interpreter reads of a model, tensor by tensor (debug names aside): shapes, types, buffer bytes,
    quantization, operators, signatures. Two files with equal digests run the same."""
    import hashlib

    import numpy as np

    def data(buffer: Any) -> str:
        raw = b"" if buffer.data is None else np.asarray(buffer.data, dtype=np.uint8).tobytes()
        return hashlib.sha256(raw).hexdigest() + f":{buffer.offset}:{buffer.size}"

    buffers = [data(buffer) for buffer in model.buffers]  # once each: signatures share their weight buffers

    digest: list[object] = [
        [(c.builtinCode, c.deprecatedBuiltinCode, c.customCode, c.version) for c in model.operatorCodes]
    ]
    for subgraph in model.subgraphs:
        digest.append([list(subgraph.inputs), list(subgraph.outputs)])
        for tensor in subgraph.tensors:
            q = tensor.quantization
            digest.append(
                (
                    list(tensor.shape if tensor.shape is not None else []),
                    tensor.type,
                    buffers[tensor.buffer],
                    None if q is None else _quantization_key(q),
                    tensor.isVariable,
                )
            )
        for op in subgraph.operators:
            digest.append(
                (
                    op.opcodeIndex,
                    list(op.inputs),
                    list(op.outputs),
                    op.builtinOptionsType,
                    repr(vars(op.builtinOptions)) if op.builtinOptions is not None else None,
                    None if op.customOptions is None else np.asarray(op.customOptions, np.uint8).tobytes(),
                )
            )
    for sig in model.signatureDefs or []:
        digest.append(
            (
                sig.signatureKey,
                sig.subgraphIndex,
                [(t.name, t.tensorIndex) for t in sig.inputs],
                [(t.name, t.tensorIndex) for t in sig.outputs],
            )
        )
    return digest


def compact(path: Path) -> None:
    """Rewrite an edge embedder smaller, changing nothing it computes: drop the tensors' debug names (module
    paths, about 190 KB a signature, which signatures do not use: they address tensors by index) and store
    equal quantization parameters once. The rewritten file is read back and must have the same digest
    (`model_digest`), or the conversion fails."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            tensor.name = None
    expected = model_digest(model)
    _share_quantization(model)
    scratch = path.with_name(path.name + ".compact")
    try:
        flatbuffer_utils.write_model(model, str(scratch))
        check_same(expected, scratch, path.name)
        scratch.replace(path)
    finally:
        scratch.unlink(missing_ok=True)


def check_same(expected: list[object], written: Path, name: str) -> None:
    """Refuse a rewritten model that does not read back as `expected` (a `model_digest`)."""
    from ai_edge_litert.tools import flatbuffer_utils

    if model_digest(flatbuffer_utils.read_model(str(written))) != expected:
        raise SystemExit(f"{name}: the compacted model reads back different from the converted one")


def main(job_path: str) -> int:
    import litert_torch

    job = json.loads(Path(job_path).read_text())
    out = Path(job["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    seq = int(job.get("seq_len", 128))
    if job["kind"] == "embedder":
        # one signature `seq_<N>` per length bucket, all over one set of weights (the converter shares them)
        module, converter = _embedder(job["model_dir"], seq), litert_torch
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
            compact(path)
    print(json.dumps({"written": sorted(p.name for p in out.glob("*.tflite"))}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
