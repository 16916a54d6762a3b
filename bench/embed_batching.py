"""Embed throughput of the local backend: 16 concurrent callers (micro-batched into shared forward passes)
against the same calls one at a time, measured side by side in one run. Goal: at least 3x.

    .venv/bin/python bench/embed_batching.py [--calls 128] [--callers 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("USE_TF", "0")

from skills.backends.local import LocalBackend

TEXT = "Caregiver reports the child says about 50 words and jumps off the ground with both feet, case {i}."


async def run(calls: int, callers: int) -> None:
    backend = LocalBackend(embedder="embedded:all-minilm-l6-v2")
    backend.load()
    await backend.embed([TEXT.format(i=-1)])  # warm-up

    started = time.perf_counter()
    for i in range(calls):
        await backend.embed([TEXT.format(i=i)])
    sequential = calls / (time.perf_counter() - started)

    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(calls):
        queue.put_nowait(i)

    async def caller() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            await backend.embed([TEXT.format(i=i)])

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    concurrent = calls / (time.perf_counter() - started)
    print(f"{'mode':<28} {'calls/s':>9}")
    print(f"{'one at a time':<28} {sequential:>9.1f}")
    print(f"{f'{callers} concurrent (batched)':<28} {concurrent:>9.1f}")
    print(
        f"ratio={concurrent / sequential:.2f} (batched / one at a time throughput; goal >= 6 at 16 callers)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=128)
    parser.add_argument("--callers", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(run(args.calls, args.callers))


if __name__ == "__main__":
    main()
