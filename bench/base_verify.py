"""What re-verifying the cached embedded base model costs: re-hashing its files (what `resolve_base_model` now
does on every load) against loading the model itself with transformers (what every consumer then does),
interleaved, median of `--repeats`. Prints `ratio=` verify/load; the goal is that verification does not matter
next to the load (ratio well below 1).

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
    from transformers import AutoModelForCausalLM

    folder = resolve_base_model(EMBEDDED_REASONER).path
    size = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
    verify, load = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        verify_artifact(Path(folder), kind="base_model")
        verify.append(time.perf_counter() - started)
        started = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(folder)
        load.append(time.perf_counter() - started)
        del model
    v, m = statistics.median(verify), statistics.median(load)
    print(
        f"base model {size / 1e9:.2f} GB: verify p50={v:.2f}s ({size / v / 1e9:.2f} GB/s), load p50={m:.2f}s"
    )
    print(f"ratio={v / m:.2f} (verify / load)")


if __name__ == "__main__":
    main()
