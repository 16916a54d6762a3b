"""Failover in the configured order with a circuit breaker, on real backends: a vLLM backend pointed at a
loopback port where nothing listens, then the local MiniLM embedder."""

from __future__ import annotations

import asyncio
import socket

import pytest

from skills.backends.local import LocalBackend
from skills.backends.vllm import VLLMBackend
from skills.failover import AllBackendsFailed, FailoverRouter


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_dead_vllm_fails_over_to_local_and_the_breaker_opens() -> None:
    async def scenario() -> None:
        dead = VLLMBackend(
            f"http://127.0.0.1:{_closed_port()}", served_model=None, embed_model="minilm", timeout_s=2
        )
        local = LocalBackend(reasoner=None, embedder="embedded:all-minilm-l6-v2")
        router = FailoverRouter([dead, local], timeout_s=30, breaker_threshold=2, breaker_cooldown_s=60)
        for _ in range(3):
            vectors, backend = await router.call("embed", lambda b: b.embed(["fever", "rash"]))
            assert backend.name == "local" and len(vectors) == 2 and len(vectors[0]) == 384
        assert router.breakers["vllm:embed"].state == "open"
        await dead.close()

    asyncio.run(scenario())


def test_all_backends_failing_is_a_typed_error_naming_each() -> None:
    async def scenario() -> None:
        dead = VLLMBackend(f"http://127.0.0.1:{_closed_port()}", served_model="release-1", timeout_s=2)
        router = FailoverRouter([dead], timeout_s=5)
        with pytest.raises(AllBackendsFailed, match="vllm: BackendUnavailable"):
            await router.call("generate", lambda b: b.generate([{"role": "user", "content": "x"}], 4))
        with pytest.raises(AllBackendsFailed, match="no backend is configured for 'embed'"):
            await router.call("embed", lambda b: b.embed(["x"]))
        await dead.close()

    asyncio.run(scenario())
