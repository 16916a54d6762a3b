"""Two MCP server replicas that share nothing but a real PostgreSQL server (workflow checkpoints and review
records, started by the test setup from Debian's binaries) and one audit log: a case submitted through one
replica is reviewed in another process and its result read through the other replica; a concurrent burst
through both (cases submitted over REST, embeddings over MCP, then decisions from four threads at once) leaves
every call audited once, the audit chain verifying and the review chain one unbroken sequence; a forked or
edited chain entry in the database is refused."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    REVIEWER_PASSPHRASE,
    make_callers,
    make_reviewer,
    new_database,
    reviewer_key,
    spawn_http_server,
    tiny_server_config,
    wait_for_http,
    write_workflow_config,
)

ROOT = Path(__file__).resolve().parents[1]
CASE = {"case_id": "rep-0", "age_months": 18, "observations": "Walks alone; says two words."}


@pytest.fixture(scope="module")
def replicas(
    merged_tiny: Path,
    postgres: str,
    tmp_path_factory: pytest.TempPathFactory,
    server_env: dict[str, str],
) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("replicas")
    dsn = new_database(postgres, "replicas")
    tokens = make_callers(folder / "callers.yaml", **{"bot": "pipeline", "ops": "admin"})
    workflow = write_workflow_config(folder, checkpointer=dsn, records=dsn)
    config = tiny_server_config(
        folder / "server.yaml",
        merged_tiny,
        callers=str(folder / "callers.yaml"),
        workflow=str(workflow),
    )
    env = {**server_env, "HAI_AUDIT_LOG": str(folder / "audit" / "audit.jsonl")}  # the one audit sink
    servers = [spawn_http_server(config, folder / f"replica-{i}.log", env) for i in (1, 2)]
    try:
        for proc, url, log in servers:
            wait_for_http(f"{url}/ready", proc, log, token=tokens["ops"])
        yield {
            "urls": [url for _, url, _ in servers],
            "tokens": tokens,
            "folder": folder,
            "workflow": workflow,
            "dsn": dsn,
            "env": env,
            "reviewer": reviewer_key(make_reviewer(folder, "dr-rep", "pediatrician")),
        }
    finally:
        for proc, _, _ in servers:
            proc.terminate()
            proc.wait(timeout=30)


def _auth(replicas: dict[str, Any], caller: str = "bot") -> dict[str, str]:
    return {"Authorization": f"Bearer {replicas['tokens'][caller]}"}


def _service(replicas: dict[str, Any]) -> Any:
    from hai_tools.workflow import ReviewService, load_workflow_config

    return ReviewService(load_workflow_config(replicas["workflow"]), env=replicas["env"])


def _audit(replicas: dict[str, Any]) -> list[dict[str, Any]]:
    path = replicas["folder"] / "audit" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_case_started_on_one_replica_is_reviewed_and_read_through_the_other(
    replicas: dict[str, Any],
) -> None:
    first, second = replicas["urls"]
    submitted = httpx.post(f"{first}/review", json=CASE, headers=_auth(replicas), timeout=300)
    assert submitted.status_code == 202, submitted.text
    review_id = submitted.json()["review_id"]
    assert httpx.get(f"{second}/review/{review_id}", headers=_auth(replicas)).json()["status"] == "pending"

    decided = (
        subprocess.run(  # the reviewer, in a process of their own, resumes the checkpoint from PostgreSQL
            [
                sys.executable,
                "-m",
                "hai_tools.workflow",
                "--config",
                str(replicas["workflow"]),
                "edit",
                review_id,
                "--reviewer",
                "dr-rep",
                "--key",
                str(replicas["folder"] / "profiles" / "dr-rep.key"),
                "--text_file",
                "-",
            ],
            input="Refer for a speech and language assessment.",
            env={**replicas["env"], "HAI_REVIEWER_PASSPHRASE": REVIEWER_PASSPHRASE},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
    )
    assert decided.returncode == 0, decided.stderr[-2000:]
    for url in (second, first):
        result = httpx.get(f"{url}/review/{review_id}", headers=_auth(replicas)).json()
        assert result["status"] == "released"
        assert result["text"] == "Refer for a speech and language assessment."
    assert not list(replicas["folder"].glob("*.sqlite")), "a replica kept state outside PostgreSQL"


def test_a_concurrent_burst_through_both_replicas_keeps_one_audit_and_one_review_chain(
    replicas: dict[str, Any],
) -> None:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    from hai_tools.audit import audit_key, verify_audit_log

    urls = replicas["urls"]
    before = _audit(replicas)
    chain_before = len(_service(replicas).store.chain())

    async def submit(i: int) -> str:
        async with httpx.AsyncClient(timeout=600) as http:
            answer = await http.post(
                f"{urls[i % 2]}/review", json={**CASE, "case_id": f"burst-{i}"}, headers=_auth(replicas)
            )
        assert answer.status_code == 202, answer.text
        return str(answer.json()["review_id"])

    async def embed(i: int) -> str:
        http = httpx2.AsyncClient(headers=_auth(replicas), timeout=httpx2.Timeout(600))
        async with Client(streamable_http_client(f"{urls[i % 2]}/mcp", http_client=http)) as client:
            result = await client.call_tool("embed", {"texts": [f"burst text {i}"]})
        return str(result.structured_content["audit_id"])

    async def burst() -> tuple[list[str], list[str]]:
        results = await asyncio.gather(*[submit(i) for i in range(6)], *[embed(i) for i in range(8)])
        return list(results[:6]), list(results[6:])

    review_ids, embed_ids = asyncio.run(burst())

    new = _audit(replicas)[len(before) :]
    # each call audited once: an embed call is one entry; a submitted case is the workflow's own skill calls on
    # the server (retrieval embeds the case and the evidence passages: two embed entries; one screen entry)
    tools = [e["tool"] for e in new]
    assert (tools.count("embed"), tools.count("screen"), len(new)) == (8 + 2 * 6, 6, 8 + 3 * 6)
    assert all(sum(e["audit_id"] == i for e in new) == 1 for i in embed_ids)
    assert len({e["audit_id"] for e in new}) == len(new)
    assert [e["seq"] for e in _audit(replicas)] == list(range(1, len(before) + len(new) + 1))
    log = replicas["folder"] / "audit" / "audit.jsonl"
    verify_audit_log(log, audit_key(log))

    def decide(review_id: str) -> dict[str, Any]:
        service = _service(replicas)  # a service of its own per thread: its own connections
        decision = {"action": "approve", "reviewer_id": "dr-rep"}
        return asyncio.run(service.decide(review_id, decision, replicas["reviewer"]))

    with ThreadPoolExecutor(4) as pool:
        records = list(pool.map(decide, review_ids))
    assert {r["thread_id"] for r in records} == set(review_ids)
    service = _service(replicas)
    chain = service.store.chain()
    assert len(chain) == chain_before + len(review_ids)
    assert [e["seq"] for e in chain] == list(range(1, len(chain) + 1))
    seq, _, _ = service.verify()
    assert seq == len(chain)
    for i, review_id in enumerate(review_ids):
        result = httpx.get(f"{urls[(i + 1) % 2]}/review/{review_id}", headers=_auth(replicas)).json()
        assert result["status"] == "released"


def test_a_forked_or_edited_chain_entry_in_postgres_is_refused(replicas: dict[str, Any]) -> None:
    import psycopg

    from hai_tools.workflow.records import ChainBroken

    service = _service(replicas)
    chain = service.store.chain()
    assert chain, "the earlier tests decided cases"
    with psycopg.connect(replicas["dsn"], autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UniqueViolation):  # a second entry at a taken seq: no fork
            conn.execute(
                "INSERT INTO chain (seq, thread_id, entry, hash) VALUES (%s, %s, %s, %s)",
                (chain[-1]["seq"], "forged-thread", json.dumps(chain[-1]), "sha256:0"),
            )
        edited = {**chain[0], "sealed_at": "2020-01-01T00:00:00+00:00"}
        conn.execute("UPDATE chain SET entry = %s WHERE seq = 1", (json.dumps(edited, sort_keys=True),))
        try:
            with pytest.raises(ChainBroken):
                service.verify()
        finally:
            conn.execute("UPDATE chain SET entry = %s WHERE seq = 1", (json.dumps(chain[0], sort_keys=True),))
    service.verify()
