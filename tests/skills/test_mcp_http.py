"""The MCP server over streamable HTTP on loopback, in its own process: bearer auth (valid, wrong, none),
/health and /ready, the REST screening route, and malformed JSON-RPC that leaves the server serving."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import wait_for_http, write_server_config

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-4f1c"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server_url(
    merged_tiny: Path, tmp_path_factory: pytest.TempPathFactory, server_env: dict[str, str]
) -> Iterator[str]:
    config = write_server_config(
        tmp_path_factory.mktemp("http") / "server.yaml",
        release=str(merged_tiny),
        reasoner=str(merged_tiny),
        embedder="embedded:all-minilm-l6-v2",
        backends=["local"],
    )
    port = _free_port()
    env = {**server_env, "HAI_MCP_TOKEN": TOKEN}
    log = tmp_path_factory.mktemp("http-log") / "server.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "mcp_server.py"),
                "--http",
                "--port",
                str(port),
                "--config",
                str(config),
            ],
            cwd=ROOT,
            env=env,
            stdout=handle,
            stderr=handle,
        )
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/ready", proc, log)
    yield base
    proc.terminate()
    proc.wait(timeout=30)
    assert TOKEN not in log.read_text(), "the bearer token must never be logged"


def _client(url: str, token: str | None) -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(120))
    return Client(streamable_http_client(f"{url}/mcp", http_client=http), read_timeout_seconds=120)


def test_valid_token_calls_every_tool(server_url: str) -> None:
    async def body() -> dict[str, Any]:
        async with _client(server_url, TOKEN) as client:
            return {
                "embed": await client.call_tool("embed", {"texts": ["fever"]}),
                "reason": await client.call_tool(
                    "reason",
                    {"question": "A 3-year-old with fever and rash: what to consider?", "max_new_tokens": 8},
                ),
                "screen": await client.call_tool(
                    "screen", {"case_id": "h1", "age_months": 30, "observations": "Says about 50 words."}
                ),
            }

    results = asyncio.run(body())
    assert all(not r.is_error for r in results.values())
    assert results["embed"].structured_content["backend"] == "local"
    assert results["reason"].structured_content["requires_clinician_review"] is True


@pytest.mark.parametrize("token", ["wrong-token", None])
def test_wrong_or_missing_token_is_refused(server_url: str, token: str | None) -> None:
    response = httpx.post(
        f"{server_url}/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Authorization": f"Bearer {token}"} if token else {},
    )
    assert response.status_code == 401

    async def body() -> None:
        async with _client(server_url, token) as client:
            await client.list_tools()

    with pytest.raises(BaseException):  # noqa: B017 - the SDK surfaces the 401 as a connection failure
        asyncio.run(body())


def test_health_ready_and_rest_screening(server_url: str) -> None:
    assert httpx.get(f"{server_url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{server_url}/ready").json()
    assert ready["ready"] is True and ready["backends"] == {"local": True}
    payload = {"case_id": "rest-1", "age_months": 24, "observations": "Does not say two words together."}
    assert httpx.post(f"{server_url}/infer_text", json=payload).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    answer = httpx.post(f"{server_url}/infer_text", json=payload, headers=auth, timeout=120)
    assert answer.status_code == 200 and answer.json()["requires_clinician_review"] is True
    bad = httpx.post(f"{server_url}/infer_text", json={**payload, "age_months": -5}, headers=auth)
    assert bad.status_code == 422
    assert httpx.post(f"{server_url}/infer_text", content=b"{not json", headers=auth).status_code == 422


def test_malformed_json_rpc_is_refused_and_the_server_keeps_serving(server_url: str) -> None:
    headers = {
        "Authorization": f"Bearer {TOKEN}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
    }
    for body in (b"{this is not json", b'{"jsonrpc": "2.0", "method": 42}', b"[]"):
        response = httpx.post(f"{server_url}/mcp", content=body, headers=headers)
        assert 400 <= response.status_code < 500 or b"error" in response.content
    test_valid_token_calls_every_tool(server_url)


def test_workflow_reaches_the_skills_over_http(
    server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The LangGraph workflow against the HTTP deployment: same graph, `mcp.transport: http`, bearer token
    from the environment; a case pauses at review and an authorised approval finalises it."""
    from hai_tools.workflow import McpConfig, ReviewerRegistry, ReviewService, WorkflowConfig
    from hai_tools.workflow.skills_client import SkillCallError

    config = WorkflowConfig(
        mcp=McpConfig(transport="http", url=f"{server_url}/mcp", token_env="TEST_WORKFLOW_MCP_TOKEN"),
        checkpointer=str(tmp_path / "checkpoints.sqlite"),
        records=str(tmp_path / "records.sqlite"),
        reviewers=str(tmp_path / "reviewers.yaml"),
        signing_key=str(tmp_path / "review.key"),
        max_new_tokens=8,
    )
    token = ReviewerRegistry(tmp_path / "reviewers.yaml").add("dr-http", "nurse")
    case = {"case_id": "h-1", "age_months": 24, "observations": "No two-word phrases; runs well."}
    monkeypatch.setenv("TEST_WORKFLOW_MCP_TOKEN", "wrong-token")
    with pytest.raises(SkillCallError, match="cannot open an MCP session"):
        asyncio.run(ReviewService(config).start(case))
    monkeypatch.setenv("TEST_WORKFLOW_MCP_TOKEN", TOKEN)
    service = ReviewService(config)
    payload = asyncio.run(service.start(case))
    assert payload["proposal"]["backend"] == "local" and payload["requires_clinician_review"] is True
    record = asyncio.run(
        service.decide(payload["thread_id"], {"action": "approve", "reviewer_id": "dr-http"}, token)
    )
    assert (
        record["released_text"] == payload["proposal"]["answer_text"] and record["reviewer_role"] == "nurse"
    )
