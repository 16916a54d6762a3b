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
    behind them (under 200 clients it waited a minute). Here 40 jobs hold every shared worker until the test lets
    them go, and the embedding still answers first, on the embedder's own thread: were it queued behind them it
    could only answer after they were let go."""
    import threading

    async def scenario() -> tuple[bool, int]:
        backend = LocalBackend(reasoner=None, embedder="embedded:all-minilm-l6-v2")
        await asyncio.to_thread(backend.load)
        await backend.embed(["warm"])
        release = threading.Event()
        started = threading.Semaphore(0)

        def hold() -> None:
            started.release()
            release.wait(120)

        blockers = [asyncio.create_task(asyncio.to_thread(hold)) for _ in range(40)]
        await asyncio.sleep(0)  # the jobs are submitted; the default executor has fewer workers than 40
        busy = 0
        while started.acquire(timeout=0.5):  # every shared worker has taken a job and holds it
            busy += 1
        embedding = asyncio.create_task(
            backend.embed(["Caregiver reports the child walks without holding on."])
        )
        done, _ = await asyncio.wait({embedding}, timeout=60)
        answered_while_held = embedding in done and not release.is_set()
        release.set()
        await asyncio.gather(*blockers, embedding)
        return answered_while_held, busy

    answered_while_held, busy = asyncio.run(scenario())
    assert 0 < busy < 40  # the shared pool was full, with jobs still waiting for a worker
    assert answered_while_held, "the embedding waited for a shared worker thread"
