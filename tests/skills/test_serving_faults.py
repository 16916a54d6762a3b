"""Serving that survives faults, each check fed the case that must trip it.

The breaker, deadline and queue tests drive the router with `Scripted` backends: a backend whose failures and
delays the test chooses (no real backend can be made to fail on cue, at a chosen moment, repeatably). Everything
else runs on real parts: the local backend on the tiny model, `transformers serve` on loopback as the vLLM
stand-in (killed in the middle of a call), and a loopback HTTP server that answers 4xx."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from skills.backends.base import BackendUnavailable, RequestRejected
from skills.backends.local import LocalBackend
from skills.backends.vllm import VLLMBackend
from skills.contracts import ModelIdentity
from skills.failover import AllBackendsFailed, FailoverRouter, Overloaded
from tests.conftest import serve_openai

MESSAGES = [{"role": "user", "content": "A 2-year-old with a limp and fever: what should be considered?"}]


class Scripted:
    """A backend that sleeps `delay_s` per call and fails while `failing` is true; counts the calls it saw."""

    def __init__(self, name: str, delay_s: float = 0.0, failing: bool = False) -> None:
        self.name = name  # type: ignore[assignment]
        self.delay_s = delay_s
        self.failing = failing
        self.calls: dict[str, int] = {"generate": 0, "embed": 0}

    def supports(self, capability: str) -> bool:
        return True

    def identity(self, capability: str, adapter: str | None = None) -> ModelIdentity:
        return ModelIdentity(base=self.name)

    def serves_adapter(self, adapter: str) -> bool:
        return False

    async def _run(self, capability: str) -> None:
        self.calls[capability] += 1
        await asyncio.sleep(self.delay_s)
        if self.failing:
            raise BackendUnavailable(f"{self.name} is down")

    async def generate(self, messages: Any, max_new_tokens: int, adapter: str | None = None) -> str:
        await self._run("generate")
        return f"{self.name} answer"

    async def embed(self, texts: list[str]) -> list[list[float]]:
        await self._run("embed")
        return [[1.0] for _ in texts]


def _generate(b: Any) -> Any:
    return b.generate(MESSAGES, 4)


def _embed(b: Any) -> Any:
    return b.embed(["x"])


def test_a_breaker_per_capability_opens_cools_down_and_admits_exactly_one_trial() -> None:
    async def scenario() -> None:
        flaky, spare = Scripted("vllm", failing=True), Scripted("local")
        router = FailoverRouter([flaky, spare], timeout_s=5, breaker_threshold=2, breaker_cooldown_s=0.3)  # type: ignore[list-item]
        for _ in range(2):
            assert (await router.call("generate", _generate))[1] is spare
        assert router.breakers["vllm:generate"].state == "open"
        flaky.failing = False
        for _ in range(3):  # embeddings succeed on the same backend: the generation path stays open
            assert (await router.call("embed", _embed))[1] is flaky
        assert (
            router.breakers["vllm:generate"].state == "open"
            and router.breakers["vllm:embed"].state == "closed"
        )
        before = flaky.calls["generate"]
        assert (await router.call("generate", _generate))[1] is spare  # still cooling down: not even tried
        assert flaky.calls["generate"] == before
        await asyncio.sleep(0.35)
        assert router.breakers["vllm:generate"].state == "half-open"
        flaky.delay_s = 0.3  # a slow trial: the other callers arrive while it is in flight
        results = await asyncio.gather(*(router.call("generate", _generate) for _ in range(6)))
        assert flaky.calls["generate"] == before + 1  # exactly one trial reached the half-open backend
        assert sorted(b.name for _, b in results) == ["local"] * 5 + ["vllm"]
        assert router.breakers["vllm:generate"].state == "closed"  # the trial succeeded

    asyncio.run(scenario())


def test_a_failed_trial_reopens_for_a_full_cooldown() -> None:
    async def scenario() -> None:
        flaky = Scripted("vllm", failing=True)
        router = FailoverRouter([flaky], timeout_s=5, breaker_threshold=1, breaker_cooldown_s=0.2)  # type: ignore[list-item]
        with pytest.raises(AllBackendsFailed, match="vllm is down"):
            await router.call("generate", _generate)
        await asyncio.sleep(0.25)
        with pytest.raises(AllBackendsFailed, match="vllm is down"):  # the trial
            await router.call("generate", _generate)
        with pytest.raises(AllBackendsFailed, match="circuit open"):
            await router.call("generate", _generate)
        assert flaky.calls["generate"] == 2

    asyncio.run(scenario())


def test_every_call_has_an_overall_deadline() -> None:
    async def scenario() -> None:
        slow = [Scripted("vllm", delay_s=5), Scripted("local", delay_s=5), Scripted("tflite", delay_s=5)]
        router = FailoverRouter(slow, timeout_s=4, deadline_s=0.5)  # type: ignore[arg-type]
        with pytest.raises(AllBackendsFailed) as raised:
            await router.call("generate", _generate)
        # the first attempt got what was left of the deadline, not its 4 s timeout, and the other two were
        # never started: not 3 backends x 4 s
        assert "vllm: timed out after 0.5s" in str(raised.value)
        assert "local: not tried, the call's deadline of 0.5s passed" in str(raised.value)
        assert "tflite: not tried, the call's deadline of 0.5s passed" in str(raised.value)
        assert [b.calls["generate"] for b in slow] == [1, 0, 0]

    asyncio.run(scenario())


def test_a_full_queue_answers_overloaded_and_counts_against_no_one() -> None:
    async def scenario() -> None:
        busy = Scripted("local", delay_s=0.5)
        router = FailoverRouter([busy], timeout_s=5, max_queue=2)  # type: ignore[list-item]
        first = [asyncio.create_task(router.call("generate", _generate)) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded, match="queue limit") as raised:
            await router.call("generate", _generate)
        assert raised.value.retry_after_s >= 1
        # each capability has its own queue: generations filling theirs never turn an embedding away
        embedded, backend = await router.call("embed", lambda b: b.embed(["x"]))
        assert embedded == [[1.0]] and backend is busy
        assert [b.name for _, b in await asyncio.gather(*first)] == ["local", "local"]
        assert router.breakers["local:generate"].failures == 0 and router.pending["local:generate"] == 0
        assert (await router.call("generate", _generate))[1] is busy  # room again

    asyncio.run(scenario())


def test_three_bogus_adapter_calls_open_no_breaker(merged_tiny: Path) -> None:
    async def scenario() -> None:
        local = LocalBackend(reasoner=str(merged_tiny))
        router = FailoverRouter([local], timeout_s=60, breaker_threshold=3)
        for _ in range(3):
            with pytest.raises(RequestRejected, match="does not serve adapter 'bogus'"):
                await router.call("generate", lambda b: b.generate(MESSAGES, 4, "bogus"))
        breaker = router.breakers["local:generate"]
        assert breaker.state == "closed" and breaker.failures == 0
        assert (await router.call("generate", _generate))[1] is local

    asyncio.run(scenario())


class _Refusing(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": "prompt too long"}')

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def refusing_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_vllm_4xx_is_the_callers_error_not_the_backends(refusing_server: str) -> None:
    async def scenario() -> None:
        vllm = VLLMBackend(refusing_server, served_model="release-1", timeout_s=5)
        router = FailoverRouter([vllm], timeout_s=5, breaker_threshold=1)
        for _ in range(3):
            with pytest.raises(RequestRejected, match="HTTP 400"):
                await router.call("generate", _generate)
        assert router.breakers["vllm:generate"].state == "closed"
        await vllm.close()

    asyncio.run(scenario())


def _long_generation(local: LocalBackend, tokens: int) -> None:
    """Make the tiny model write `tokens` tokens whatever it predicts (no early end of sequence)."""
    local.load()
    local._lm.generation_config.min_new_tokens = tokens


def _hold_at_forward(local: LocalBackend, at: int = 5) -> tuple[list[int], threading.Event, threading.Event]:
    """Count the loaded model's forward passes and hold the `at`-th until `release` is set (60 s at most), so a
    test orders events around a generation in flight without timing it: (forwards, held, release)."""
    forwards: list[int] = []
    held = threading.Event()  # the generation has reached its `at`-th forward pass
    release = threading.Event()  # the test lets it go on

    def hook(*_: Any) -> None:
        forwards.append(1)
        if len(forwards) == at:
            held.set()
            release.wait(60)

    local._lm.register_forward_hook(hook)
    return forwards, held, release


def test_a_call_past_its_deadline_releases_its_worker(merged_tiny: Path) -> None:
    """The router's per-attempt timeout fires while the model is mid-generation (held at its 5th forward pass
    by a hook, so the timing cannot race): the abandoned generation stops at its next token and frees the model,
    instead of writing the 900 tokens it was asked for. Counted in forward passes, not seconds."""

    async def scenario() -> list[int]:
        local = LocalBackend(reasoner=str(merged_tiny))
        _long_generation(local, 900)
        forwards, _, release = _hold_at_forward(local)
        router = FailoverRouter([local], timeout_s=0.1, deadline_s=0.1)
        with pytest.raises(AllBackendsFailed, match="timed out"):
            await router.call("generate", lambda b: b.generate(MESSAGES, 900))
        release.set()  # the router gave up first; the generation may now take its next step
        assert await asyncio.to_thread(local._lock.acquire, True, 60), "the model was never released"
        local._lock.release()
        return forwards

    forwards = asyncio.run(scenario())
    # stopped at the next token after the timeout (at the held 5th pass, or before it on a slow machine);
    # without the stop it runs all 900
    assert len(forwards) <= 5, len(forwards)


def test_a_vllm_server_killed_during_a_call_is_answered_by_the_next_backend(
    merged_tiny: Path, tmp_path: Path, server_env: dict[str, str]
) -> None:
    import shutil

    from transformers import GenerationConfig

    slow = (
        tmp_path / "slow"
    )  # the tiny model, made to write 400 tokens whatever it predicts: a call in flight
    shutil.copytree(merged_tiny, slow)
    config = GenerationConfig.from_pretrained(slow)
    config.min_new_tokens = 400
    config.save_pretrained(slow)
    server, base = serve_openai(slow, tmp_path / "serve.log", server_env)

    async def scenario() -> tuple[str, str]:
        vllm = VLLMBackend(base, served_model=str(slow), timeout_s=60)
        await vllm.check_ready()
        local = LocalBackend(reasoner=str(merged_tiny))
        local.load()
        router = FailoverRouter([vllm, local], timeout_s=60, deadline_s=90)
        call = asyncio.create_task(router.call("generate", lambda b: b.generate(MESSAGES, 960)))
        await asyncio.sleep(0.3)  # the request is in the server's hands (960 tokens take it seconds)
        assert not call.done()
        server.kill()
        text, backend = await call  # within the router's deadline of 90 s, or AllBackendsFailed
        await vllm.close()
        return backend.name, text

    try:
        name, text = asyncio.run(scenario())
    finally:
        if server.poll() is None:
            server.kill()
    assert name == "local" and isinstance(text, str)


def test_vllm_checks_what_it_serves_and_names_the_adapter_that_answered(
    merged_tiny: Path, tiny_model_dir: Path, tmp_path: Path, server_env: dict[str, str]
) -> None:
    """An unpinned OpenAI-compatible server serving two names: the release (the merged model) and an adapter
    (another model folder). A backend configured for a name the server does not list is unavailable until a
    re-check finds it; a call naming the adapter is answered by it, and its identity says so."""
    import httpx

    server, base = serve_openai(merged_tiny, tmp_path / "serve.log", server_env, pinned=False)

    def direct(model: str) -> str:
        response = httpx.post(
            f"{base}/v1/chat/completions",
            json={"model": model, "messages": MESSAGES, "max_tokens": 6, "temperature": 0.0},
            timeout=120,
        )
        response.raise_for_status()
        return str(response.json()["choices"][0]["message"]["content"])

    async def scenario() -> None:
        release, adapter = str(merged_tiny), str(tiny_model_dir)
        vllm = VLLMBackend(base, served_model=release, timeout_s=60, recheck_s=0.2)
        with pytest.raises(BackendUnavailable, match="does not serve"):
            await vllm.check_ready()  # nothing is loaded yet, so /v1/models does not list the release
        assert not vllm.supports("generate") and "does not serve" in str(vllm.unavailable["generate"])
        assert not await vllm.health()
        vllm.watch()
        expected = {
            release: await asyncio.to_thread(direct, release),
            adapter: await asyncio.to_thread(direct, adapter),
        }
        for _ in range(50):  # a re-check finds both once the server lists them
            if vllm.supports("generate") and adapter in vllm._served["generate"]:
                break
            await asyncio.sleep(0.1)
        assert vllm.supports("generate") and vllm.unavailable["generate"] is None
        assert vllm.serves_adapter(adapter) and not vllm.serves_adapter("no-such-adapter")
        assert await vllm.generate(MESSAGES, 6, adapter) == expected[adapter]
        assert await vllm.generate(MESSAGES, 6) == expected[release]
        assert vllm.identity("generate", adapter).adapter == adapter
        assert vllm.identity("generate").adapter is None and vllm.identity("generate").release == release
        with pytest.raises(RequestRejected, match="does not serve adapter"):
            await vllm.generate(MESSAGES, 6, "no-such-adapter")
        await vllm.close()

    try:
        asyncio.run(scenario())
    finally:
        server.kill()


def test_ready_names_a_vllm_server_that_does_not_serve_the_release(merged_tiny: Path, tmp_path: Path) -> None:
    """The server's `/ready` document (skills/server.py): the vLLM backend that cannot be checked is named with
    its reason under `unavailable`, generation is still available through the local backend, and breakers are
    per backend and capability."""
    import socket

    from skills.config import load_server_config
    from skills.server import Skills
    from tests.conftest import write_server_config

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    config = write_server_config(
        tmp_path / "server.yaml",
        reasoner=str(merged_tiny),
        embedder=None,
        backends=["vllm", "local"],
        vllm={"base_url": f"http://127.0.0.1:{port}", "served_model": "release-x", "recheck_s": 60},
        audit_log=str(tmp_path / "audit.jsonl"),
    )

    async def scenario() -> dict[str, Any]:
        skills = Skills(load_server_config(config))
        await skills.load()
        try:
            return await skills.ready()
        finally:
            await skills.close()

    state = asyncio.run(scenario())
    assert "is not ready: ConnectError" in state["unavailable"]["vllm"]["generate"]
    assert state["backends"] == {"vllm": False, "local": True}
    assert state["capabilities"]["generate"] is True
    assert set(state["breakers"]) == {
        f"{b}:{c}" for b in ("vllm", "local") for c in ("generate", "choose", "embed")
    }


def test_embeddings_do_not_wait_for_a_running_generation(merged_tiny: Path) -> None:
    """The local backend's reasoner and embedder have their own locks: an embed call made while a long
    generation holds the model (kept at its 5th forward pass by a hook until the embedding is back) is
    answered before that generation ends."""

    async def scenario() -> tuple[bool, bool]:
        local = LocalBackend(reasoner=str(merged_tiny), embedder="embedded:all-minilm-l6-v2")
        _long_generation(local, 600)
        await local.embed(["warm"])
        # held until the embedding is back: were it behind the generation's lock, it would wait out the 60 s
        _, held, release = _hold_at_forward(local)
        generation = asyncio.create_task(local.generate(MESSAGES, 600))
        assert await asyncio.to_thread(held.wait, 60), "the generation never started"
        await local.embed(["fever and rash"])
        still_held, generating = not release.is_set(), not generation.done()
        release.set()
        await generation
        return still_held, generating

    still_held, generating = asyncio.run(scenario())
    assert still_held and generating  # the embedding came back while the generation held the model
