"""What verifying the cached embedded base model costs on each load: `resolve_base_model` (a stat check of every
file against the last full verification, a full re-hash when anything changed) and the full re-hash itself,
against what every consumer then pays before its first answer (load the model with transformers and run one
forward pass, which pages the memory-mapped weights in), interleaved, median of `--repeats`. Prints `ratio=`
resolve/ready (the per-load cost) and the full re-hash's ratio beside it.

    .venv/bin/python bench/base_verify.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("USE_TF", "0")

from pathlib import Path

from hai_tools.manifest import verify_artifact
from hai_tools.models import EMBEDDED_REASONER, resolve_base_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM

    folder = resolve_base_model(EMBEDDED_REASONER).path
    size = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
    verify, load, resolve = [], [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        resolve_base_model(EMBEDDED_REASONER)
        resolve.append(time.perf_counter() - started)
        started = time.perf_counter()
        verify_artifact(Path(folder), kind="base_model")
        verify.append(time.perf_counter() - started)
        started = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(folder)
        with torch.no_grad():
            model(torch.ones((1, 8), dtype=torch.long))
        load.append(time.perf_counter() - started)
        del model
    v, m, r = statistics.median(verify), statistics.median(load), statistics.median(resolve)
    print(
        f"base model {size / 1e9:.2f} GB: resolve p50={r * 1000:.1f}ms, full re-hash p50={v:.2f}s "
        f"({size / v / 1e9:.2f} GB/s), load + first forward p50={m:.2f}s"
    )
    print(f"ratio={r / m:.3f} (resolve / ready); full re-hash / ready = {v / m:.2f}")


if __name__ == "__main__":
    main()
