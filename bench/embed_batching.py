"""Embed throughput: `--callers` concurrent callers on the local backend (micro-batched into shared forward
passes) against the baseline a user would otherwise run: the same sentence-transformers model, `encode([text])`
one call at a time in a plain loop (no batching window, no event loop, no thread hop). Both sides embed the same
texts, of mixed lengths (a few words to about 150 tokens), with the same normalisation. Repeats interleaved
(baseline, then batched, then the ceiling); min/median/max calls/s; `ratio=` of the medians. Goal: >= 6x at 16
callers. The ceiling (`ceiling ratio=`) is the same texts handed to `encode` `--callers` at a time, the most a
batcher could reach: it says whether the goal is within this model's and machine's reach at all.

    .venv/bin/python bench/embed_batching.py [--calls 128] [--callers 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("USE_TF", "0")

from skills.backends.local import LocalBackend

SHORT = "Says about 50 words, case {i}."
MEDIUM = "Caregiver reports the child says about 50 words and jumps off the ground with both feet, case {i}."
LONG = (
    "At the 30-month visit the caregiver reports that the child points to pictures in a book when named, "
    "follows two-step instructions without gestures, uses about fifty words and some two-word phrases, "
    "climbs onto furniture, kicks a ball forward, and plays alongside other children at daycare; the "
    "caregiver is worried that speech is less clear than an older sibling's was at the same age, and the "
    "daycare staff report that strangers understand about half of what the child says. Case {i}."
)


CHUNKS = (4, 8, 16)


def texts(calls: int) -> list[str]:
    kinds = (SHORT, MEDIUM, LONG)
    return [kinds[i % 3].format(i=i) for i in range(calls)]


def baseline(model: object, batch: list[str]) -> float:
    started = time.perf_counter()
    for text in batch:
        model.encode([text], normalize_embeddings=True, convert_to_numpy=True)  # type: ignore[attr-defined]
    return len(batch) / (time.perf_counter() - started)


def ceiling(model: object, batch: list[str], callers: int, chunk: int) -> float:
    """The most any batcher of `callers` concurrent callers could get from this model: each group of `callers`
    texts handed to `encode` at once (no queue, no window, no thread hop), in length-sorted batches of `chunk`
    (sentence-transformers sorts by length itself)."""
    started = time.perf_counter()
    for start in range(0, len(batch), callers):
        model.encode(  # type: ignore[attr-defined]
            batch[start : start + callers], batch_size=chunk, normalize_embeddings=True, convert_to_numpy=True
        )
    return len(batch) / (time.perf_counter() - started)


async def batched(backend: LocalBackend, batch: list[str], callers: int) -> float:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for text in batch:
        queue.put_nowait(text)

    async def caller() -> None:
        while not queue.empty():
            await backend.embed([queue.get_nowait()])

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return len(batch) / (time.perf_counter() - started)


async def run(calls: int, callers: int, repeats: int) -> None:
    from sentence_transformers import SentenceTransformer

    from hai_tools.models import embedder_path

    model = SentenceTransformer(str(embedder_path()), device="cpu")
    backend = LocalBackend(embedder="embedded:all-minilm-l6-v2")
    backend.load()
    batch = texts(calls)
    baseline(model, batch[:3])  # warm-up, both sides
    await backend.embed(batch[:3])
    plain: list[float] = []
    ours: list[float] = []
    best: dict[int, list[float]] = {chunk: [] for chunk in CHUNKS}
    for _ in range(repeats):
        plain.append(baseline(model, batch))
        ours.append(await batched(backend, batch, callers))
        for chunk in CHUNKS:
            best[chunk].append(ceiling(model, batch, callers, chunk))
    print(f"{'calls/s':<48} {'min':>8} {'median':>8} {'max':>8}")
    rows = [("encode([text]) one at a time", plain), (f"{callers} concurrent callers (batched)", ours)]
    rows += [(f"ceiling: encode({callers} texts, batch_size={chunk})", best[chunk]) for chunk in CHUNKS]
    for label, values in rows:
        print(f"{label:<48} {min(values):>8.1f} {statistics.median(values):>8.1f} {max(values):>8.1f}")
    ratio = statistics.median(ours) / statistics.median(plain)
    print(f"ratio={ratio:.2f} (batched / one at a time, medians of {repeats}; goal >= 6 at 16 callers)")
    top = max(statistics.median(values) for values in best.values())
    print(
        f"ceiling ratio={top / statistics.median(plain):.2f} (the best of the ceilings / one at a time: "
        f"what any batcher of {callers} callers could reach with this model on this machine)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=128)
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.calls, args.callers, args.repeats))


if __name__ == "__main__":
    main()
