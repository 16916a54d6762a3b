"""Edge benchmark: size, parity and batch-1 latency of each TFLite variant against the PyTorch path that serves
(sentence-transformers with SDPA for the embedder; a bare KV-cache greedy loop with SDPA for the LM), on the same
inputs, repeats interleaved, min/median/max and `ratio=` of the medians.

    make bench            # or: .venv/bin/python bench/edge.py [--embedder_dir out/edge/minilm] [--causal_lm_dir DIR]

Without --embedder_dir it builds the MiniLM edge models into a temp folder first (about a minute).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("USE_TF", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from export.onnx_export import EMBED_LONG, EMBED_SENTENCES
from export.parity import greedy_decode_torch
from export.tflite import export_tflite
from hai_tools.litert import LiteRTCausalLM, TFLiteModel, embed_tflite
from hai_tools.manifest import verify_artifact


def bench_embedder(folder: Path, repeats: int) -> list[dict[str, object]]:
    """The serving path as the baseline: sentence-transformers `encode([text])` on the same model (SDPA
    attention, each text at its own length, the shared 128-token window) against LiteRT (tokenise, pad to the
    smallest of the model's length buckets that holds the text, run; a model built with one bucket pads every
    text to 128), the same texts (short and one longer than the window), one text per call, interleaved."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from hai_tools.models import EMBED_MAX_TOKENS

    manifest = verify_artifact(folder)
    assert manifest.kind == "tflite_embedder"
    source = Path(manifest.inputs[0].uri or "")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    serving = SentenceTransformer(str(source), device="cpu")
    serving.max_seq_length = EMBED_MAX_TOKENS
    texts = [*EMBED_SENTENCES, EMBED_LONG]
    reference = serving.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    variants = {
        v: TFLiteModel(folder / f"{v}.tflite") for v in ("fp32", "int8") if (folder / f"{v}.tflite").exists()
    }
    times: dict[str, list[float]] = {"pytorch": [], **{v: [] for v in variants}}
    for _ in range(repeats):
        for text in texts:
            started = time.perf_counter()
            serving.encode([text], normalize_embeddings=True, convert_to_numpy=True)
            times["pytorch"].append((time.perf_counter() - started) * 1000)
            for name, model in variants.items():
                started = time.perf_counter()
                embed_tflite(model, tokenizer, [text])
                times[name].append((time.perf_counter() - started) * 1000)
    torch_size = sum(p.stat().st_size for p in source.glob("*.safetensors"))
    base = statistics.median(times["pytorch"])
    table: list[dict[str, object]] = [
        _row("minilm", "pytorch (serving)", torch_size, "reference", times["pytorch"], base)
    ]
    for name, model in variants.items():
        got = embed_tflite(model, tokenizer, texts)
        cosine = float(
            (
                (got * reference).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1))
            ).min()
        )
        size = (folder / f"{name}.tflite").stat().st_size
        table.append(
            _row("minilm", f"tflite {name}", size, f"min cos {cosine:.5f}", times[name], base)
            | {"size_ratio": size / torch_size}
        )
    return table


def _row(
    model: str, variant: str, size: int, parity: str, ms: list[float], base_p50: float
) -> dict[str, object]:
    ordered = sorted(ms)
    p50 = statistics.median(ordered)
    return {
        "model": model,
        "variant": variant,
        "size_mb": size / 2**20,
        "parity": parity,
        "min_ms": ordered[0],
        "p50_ms": p50,
        "max_ms": ordered[-1],
        "speedup": base_p50 / p50,
    }


def bench_causal_lm(folder: Path, repeats: int) -> list[dict[str, object]]:
    """Per-token greedy decode: LiteRT prefill + KV-cache decode against the same loop in transformers (SDPA
    attention, KV cache, argmax per step: no `generate` processors), the same prompt and steps, interleaved."""
    import torch
    from transformers import AutoModelForCausalLM

    manifest = verify_artifact(folder)
    source = Path(manifest.inputs[0].uri or "")
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=torch.float32, attn_implementation="sdpa"
    ).eval()
    prompt, steps = list(range(4, 40)), 16
    expected = greedy_decode_torch(model, prompt, steps)
    variants = {
        v: LiteRTCausalLM(folder / f"{v}.tflite")
        for v in ("fp32", "int8")
        if (folder / f"{v}.tflite").exists()
    }
    times: dict[str, list[float]] = {"pytorch": [], **{v: [] for v in variants}}
    for _ in range(repeats):
        started = time.perf_counter()
        greedy_decode_torch(model, prompt, steps)
        times["pytorch"].append((time.perf_counter() - started) * 1000 / steps)
        for name, lm in variants.items():
            started = time.perf_counter()
            lm.greedy(prompt, steps)
            times[name].append((time.perf_counter() - started) * 1000 / steps)
    size = sum(p.stat().st_size for p in source.glob("*.safetensors"))
    base = statistics.median(times["pytorch"])
    table = [_row(source.name, "pytorch (sdpa)", size, "reference", times["pytorch"], base)]
    for name, lm in variants.items():
        top1 = (
            sum(int(a == b) for a, b in zip(lm.forced_top1(prompt, expected), expected, strict=True)) / steps
        )
        path = folder / f"{name}.tflite"
        table.append(
            _row(source.name, f"tflite {name}", path.stat().st_size, f"top-1 {top1:.3f}", times[name], base)
        )
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder_dir", type=Path)
    parser.add_argument("--causal_lm_dir", type=Path)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as scratch:
        embedder_dir = args.embedder_dir or export_tflite(
            "embedded:all-minilm-l6-v2", Path(scratch) / "minilm", "embedder"
        )
        rows += bench_embedder(embedder_dir, args.repeats)
        if args.causal_lm_dir:
            rows += bench_causal_lm(args.causal_lm_dir, max(3, args.repeats // 6))
    print(
        f"{'model':<16} {'variant':<18} {'size MB':>8} {'parity':<18} {'min ms':>7} {'p50 ms':>7} {'max ms':>7}"
    )
    for r in rows:
        print(
            f"{r['model']!s:<16} {r['variant']!s:<18} {r['size_mb']:>8.1f} {r['parity']!s:<18} "
            f"{r['min_ms']:>7.2f} {r['p50_ms']:>7.2f} {r['max_ms']:>7.2f}  ratio={r['speedup']:.2f}"
            + (f" size={r['size_ratio']:.3f}" if "size_ratio" in r else "")
        )
    print(
        "ratio: the PyTorch serving path's median time / this one's (per text, or per token); goals: "
        "int8 embedder >= 3x at cosine >= 0.995 and <= 26% of the fp32 size"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
