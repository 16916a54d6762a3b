"""Edge benchmark: size, parity and batch-1 latency of each TFLite variant against PyTorch, on the same inputs,
measured side by side in one run.

    make bench            # or: .venv/bin/python bench/edge.py [--embedder_dir out/edge/minilm] [--causal_lm_dir DIR]

Without --embedder_dir it builds the MiniLM edge models into a temp folder first (about a minute).
"""

from __future__ import annotations

import argparse
import json
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

from export.onnx_export import EMBED_SENTENCES, MeanPooledEmbedder
from export.tflite import export_tflite, greedy_decode_torch
from hai_tools.litert import LiteRTCausalLM, TFLiteModel, _pad, embed_tflite
from hai_tools.manifest import verify_artifact

REPEATS = 30


def _time_ms(fn: object, repeats: int = REPEATS) -> tuple[float, float]:
    fn()  # type: ignore[operator]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def bench_embedder(folder: Path) -> list[dict[str, object]]:
    import torch
    from transformers import AutoTokenizer

    manifest = verify_artifact(folder)
    source = json.loads((folder / "manifest.json").read_text())["inputs"][0]["uri"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    module = MeanPooledEmbedder.build(Path(source))
    texts = list(EMBED_SENTENCES)
    seq = TFLiteModel(folder / "fp32.tflite").seq_len
    pad = tokenizer.pad_token_id or 0
    rows = [_pad(tokenizer(t)["input_ids"], seq, pad) for t in texts]
    with torch.no_grad():
        reference = np.stack([module(torch.from_numpy(r), torch.from_numpy(m))[0].numpy() for r, m in rows])
        p50, p90 = _time_ms(lambda: module(torch.from_numpy(rows[0][0]), torch.from_numpy(rows[0][1])))
    torch_size = sum(p.stat().st_size for p in Path(source).glob("*.safetensors"))
    table: list[dict[str, object]] = [
        {
            "model": "minilm",
            "variant": "pytorch fp32",
            "size_mb": torch_size / 2**20,
            "parity": "reference",
            "p50_ms": p50,
            "p90_ms": p90,
            "speedup": 1.0,
        }
    ]
    for variant in ("fp32", "int8"):
        path = folder / f"{variant}.tflite"
        if not path.exists():
            continue
        model = TFLiteModel(path)
        got = embed_tflite(model, tokenizer, texts)
        cosine = float(
            (
                (got * reference).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1))
            ).min()
        )
        t50, t90 = _time_ms(lambda m=model: m.run(*rows[0]))
        table.append(
            {
                "model": "minilm",
                "variant": f"tflite {variant}",
                "size_mb": path.stat().st_size / 2**20,
                "parity": f"min cos {cosine:.5f}",
                "p50_ms": t50,
                "p90_ms": t90,
                "speedup": p50 / t50,
            }
        )
    assert manifest.kind == "tflite_embedder"
    return table


def bench_causal_lm(folder: Path) -> list[dict[str, object]]:
    """Per-token greedy decode latency (prefill + KV-cache decode on LiteRT vs transformers' generate)."""
    import torch
    from transformers import AutoModelForCausalLM

    manifest = verify_artifact(folder)
    source = Path(manifest.inputs[0].uri or "")
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    prompt, steps = list(range(4, 40)), 16
    expected = greedy_decode_torch(model, prompt, steps)
    p50, p90 = _time_ms(lambda: greedy_decode_torch(model, prompt, steps), repeats=5)
    size = sum(p.stat().st_size for p in source.glob("*.safetensors"))
    table: list[dict[str, object]] = [
        {
            "model": source.name,
            "variant": "pytorch fp32",
            "size_mb": size / 2**20,
            "parity": "reference",
            "p50_ms": p50 / steps,
            "p90_ms": p90 / steps,
            "speedup": 1.0,
        }
    ]
    for variant in ("fp32", "int8"):
        path = folder / f"{variant}.tflite"
        if not path.exists():
            continue
        lm = LiteRTCausalLM(path)
        top1 = (
            sum(int(a == b) for a, b in zip(lm.forced_top1(prompt, expected), expected, strict=True)) / steps
        )
        t50, t90 = _time_ms(lambda m=lm: m.greedy(prompt, steps), repeats=5)
        table.append(
            {
                "model": source.name,
                "variant": f"tflite {variant}",
                "size_mb": path.stat().st_size / 2**20,
                "parity": f"top-1 {top1:.3f}",
                "p50_ms": t50 / steps,
                "p90_ms": t90 / steps,
                "speedup": p50 / t50,
            }
        )
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder_dir", type=Path)
    parser.add_argument("--causal_lm_dir", type=Path)
    args = parser.parse_args()
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as scratch:
        embedder_dir = args.embedder_dir or export_tflite(
            "embedded:all-minilm-l6-v2", Path(scratch) / "minilm", "embedder"
        )
        rows += bench_embedder(embedder_dir)
        if args.causal_lm_dir:
            rows += bench_causal_lm(args.causal_lm_dir)
    print(
        f"{'model':<16} {'variant':<14} {'size MB':>8} {'parity':<18} {'p50 ms':>8} {'p90 ms':>8} {'x torch':>8}"
    )
    for r in rows:
        print(
            f"{r['model']!s:<16} {r['variant']!s:<14} {r['size_mb']:>8.1f} {r['parity']!s:<18} "
            f"{r['p50_ms']:>8.1f} {r['p90_ms']:>8.1f} {r['speedup']:>8.2f}  ratio={r['speedup']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
