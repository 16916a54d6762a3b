"""The vLLM backend against a real OpenAI-compatible server on loopback (`transformers serve` on the tiny
merged model; vLLM itself needs CUDA and cannot be installed here). Killing that server mid-test makes calls
fail over to the local backend with no failed call, and each result says which backend answered."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from tests.conftest import free_port, serve_openai, write_server_config

ROOT = Path(__file__).resolve().parents[2]


def test_killing_the_openai_server_fails_over_without_a_failed_call(
    merged_tiny: Path, tmp_path: Path, server_env: dict[str, str]
) -> None:
    server, base = serve_openai(merged_tiny, tmp_path / "serve.log", server_env)

    config = write_server_config(
        tmp_path / "server.yaml",
        reasoner=str(merged_tiny),
        embedder="embedded:all-minilm-l6-v2",
        backends=["vllm", "local"],
        vllm={"base_url": base, "served_model": str(merged_tiny)},
        timeout_s=60,
    )
    params = StdioServerParameters(
        command=sys.executable,
        args=[str(ROOT / "mcp_server.py"), "--config", str(config)],
        env=server_env,
        cwd=str(ROOT),
    )
    question = {
        "question": "A 2-year-old with a new limp and fever: what should be considered?",
        "max_new_tokens": 6,
    }

    async def scenario() -> tuple[list[str], list[bool]]:
        backends, errors = [], []
        async with Client(params, read_timeout_seconds=300) as client:
            # this OpenAI-compatible server ignores `structured_outputs`, so its free-text answer is not one of
            # the labels: the vLLM backend refuses it and the screening decision fails over to local
            screen = await client.call_tool(
                "screen", {"case_id": "v1", "age_months": 24, "observations": "No two-word phrases."}
            )
            assert screen.structured_content["backend"] == "local"
            assert screen.structured_content["label"] in ("refer", "monitor", "on-track")
            for step in range(4):
                if step == 2:
                    server.kill()
                    server.wait(timeout=30)
                result = await client.call_tool("reason", question)
                errors.append(result.is_error)
                backends.append(result.structured_content["backend"] if not result.is_error else "error")
        return backends, errors

    try:
        backends, errors = asyncio.run(scenario())
    finally:
        if server.poll() is None:
            server.kill()
    assert errors == [False, False, False, False]
    assert backends == ["vllm", "vllm", "local", "local"]


def test_vllm_backend_refuses_a_server_that_does_not_serve_the_release(tmp_path: Path) -> None:
    from skills.backends.base import BackendUnavailable
    from skills.backends.vllm import VLLMBackend

    async def scenario() -> None:
        backend = VLLMBackend(f"http://127.0.0.1:{free_port()}", served_model="release-x", timeout_s=2)
        with pytest.raises(BackendUnavailable, match="not ready"):
            await backend.check_ready()
        await backend.close()

    asyncio.run(scenario())


def test_vllm_embeddings_are_truncated_to_the_shared_window() -> None:
    """The embeddings request asks the server to keep the first EMBED_MAX_TOKENS tokens, as the local and edge
    backends do (vLLM's `truncate_prompt_tokens`). The server is a stand-in on loopback (vLLM needs CUDA):
    it records the request body it received."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from hai_tools.models import EMBED_MAX_TOKENS
    from skills.backends.vllm import VLLMBackend

    bodies: list[dict[str, object]] = []

    class Embeddings(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            payload = json.dumps({"data": [{"index": 0, "embedding": [0.6, 0.8]}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Embeddings)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    async def scenario() -> list[list[float]]:
        backend = VLLMBackend(
            f"http://127.0.0.1:{server.server_port}", served_model=None, embed_model="minilm", timeout_s=5
        )
        try:
            return await backend.embed(["a long clinical note"])
        finally:
            await backend.close()

    try:
        assert asyncio.run(scenario()) == [[0.6, 0.8]]
    finally:
        server.shutdown()
    assert bodies == [
        {"model": "minilm", "input": ["a long clinical note"], "truncate_prompt_tokens": EMBED_MAX_TOKENS}
    ]
