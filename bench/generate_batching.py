"""Throughput of local generation under concurrency: N concurrent screening-rationale generations (the embedded
270M, greedy, the same prompts) with the local backend's generation batching on (`max_batch` 8) against one
at a time (`max_batch` 1, what the backend did before), on the same loaded model, repeats interleaved. Prints
the wall time of each side and `ratio=` of medians (one at a time / batched; > 1: batching is faster).

    .venv/bin/python bench/generate_batching.py [--callers 12] [--tokens 48] [--repeats 3]   # quick: --callers 4 --tokens 8 --repeats 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("USE_TF", "0")

from hai_tools.models import EMBEDDED_REASONER
from skills.backends.local import LocalBackend

CASES = [
    "18 months: says no words, does not point; hearing screen passed.",
    "24 months: two-word phrases, runs, stacks six blocks.",
    "30 months: fewer than 20 words, no two-word phrases.",
    "12 months: walks holding furniture, babbles, waves bye-bye.",
]


def messages(i: int) -> list[dict[str, str]]:
    case = CASES[i % len(CASES)]
    return [
        {
            "role": "user",
            "content": f"Screening decision: refer. In one sentence, the reason for the clinician: {case}",
        }
    ]


async def wave(backend: LocalBackend, callers: int, tokens: int) -> float:
    started = time.perf_counter()
    await asyncio.gather(*(backend.generate(messages(i), tokens) for i in range(callers)))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=12)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reasoner", default=EMBEDDED_REASONER)
    args = parser.parse_args()
    backend = LocalBackend(reasoner=args.reasoner)
    backend.load()
    asyncio.run(backend.generate(messages(0), 2))  # warm-up
    seconds: dict[str, list[float]] = {"one at a time": [], "batched": []}
    for _ in range(args.repeats):  # interleaved: each repeat runs both sides
        for side, max_batch in (("one at a time", 1), ("batched", 8)):
            backend._generator.max_batch = max_batch
            seconds[side].append(asyncio.run(wave(backend, args.callers, args.tokens)))
    for side, values in seconds.items():
        print(
            f"{side:<14} callers={args.callers} tokens={args.tokens} min={min(values):.2f}s "
            f"median={statistics.median(values):.2f}s max={max(values):.2f}s"
        )
    ratio = statistics.median(seconds["one at a time"]) / statistics.median(seconds["batched"])
    print(f"ratio={ratio:.2f} (one at a time / batched, medians of {args.repeats})")


if __name__ == "__main__":
    main()
