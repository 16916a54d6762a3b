"""Local generation batches concurrent callers: the same greedy text as one at a time, in fewer model calls,
and a caller that gives up stops only its own row."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from skills.backends.local import LocalBackend

QUESTIONS = [
    "A 2-year-old with a limp and fever: what should be considered?",
    "18 months, no words, no pointing: refer?",
    "Newborn with jaundice on day 2",
    "A 4-year-old who stutters when excited; otherwise speech on track.",
]


def _messages(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


def test_concurrent_generation_is_batched_and_gives_the_same_text(merged_tiny: Path) -> None:
    local = LocalBackend(reasoner=str(merged_tiny))
    local.load()
    batches: list[int] = []
    run = local._generator._run

    def counted(requests: list[Any], stops: list[Any]) -> list[str]:
        batches.append(len(requests))
        return run(requests, stops)  # type: ignore[no-any-return]

    local._generator._run = counted

    async def one_at_a_time() -> list[str]:
        return [await local.generate(_messages(q), 12) for q in QUESTIONS]

    async def together() -> list[str]:
        first = asyncio.create_task(local.generate(_messages(QUESTIONS[0]), 12))
        await asyncio.sleep(0)  # the first starts alone; the others arrive while it runs
        rest = await asyncio.gather(
            *(local.generate(_messages(q), n) for q, n in zip(QUESTIONS[1:], (12, 5, 12), strict=True))
        )
        return [await first, *rest]

    alone = asyncio.run(one_at_a_time())
    assert batches == [1, 1, 1, 1]
    batches.clear()
    joint = asyncio.run(together())
    assert len(batches) < len(QUESTIONS) and max(batches) > 1, batches
    assert joint[0] == alone[0] and joint[1] == alone[1] and joint[3] == alone[3]
    # a shorter limit in a batch with longer ones: its own text, cut at its own limit
    assert joint[2] == asyncio.run(local.generate(_messages(QUESTIONS[2]), 5))


def test_embeddings_do_not_wait_for_the_shared_worker_threads() -> None:
    """Generations waiting for the model hold the event loop's shared worker threads; an embedding must not queue
    behind them (under 200 clients it waited a minute). Here 40 one-second jobs hold every shared worker for
    several seconds and an embedding still answers at once, on the embedder's own thread (it waited 29.8 s with
    5-second jobs before it had one)."""
    import time

    async def scenario() -> float:
        backend = LocalBackend(reasoner=None, embedder="embedded:all-minilm-l6-v2")
        await asyncio.to_thread(backend.load)
        await backend.embed(["warm"])
        blockers = [asyncio.create_task(asyncio.to_thread(time.sleep, 1)) for _ in range(40)]
        await asyncio.sleep(0.2)  # every shared worker is now asleep
        started = time.monotonic()
        await backend.embed(["Caregiver reports the child walks without holding on."])
        took = time.monotonic() - started
        await asyncio.gather(*blockers)
        return took

    took = asyncio.run(scenario())
    assert took < 1.0, f"the embedding waited {took:.1f} s for a shared worker thread"
