"""The LangGraph clinical workflow against the real MCP server over stdio (tiny merged reasoner, packaged
MiniLM embedder), with SQLite checkpoints: cases pause at clinician_review; approve, edit and reject, each
run in a new process through the review CLI, produce the right signed final record; malformed and
unauthorised decisions are refused and leave the paused state as it was; and the ways around the review
(a forged resume, a state written as if by the review node, a start input carrying a decision, reading the
answer before review, tampering with a record) release nothing and leave the case waiting for review."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from hai_tools.workflow import ReviewRefused, ReviewService, load_workflow_config
from hai_tools.workflow.__main__ import main
from tests.conftest import write_server_config

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "approve": {
        "case_id": "c-001",
        "age_months": 18,
        "observations": "Does not walk; says no words; no pointing.",
    },
    "edit": {
        "case_id": "c-002",
        "age_months": 24,
        "observations": "Runs and kicks a ball; no two-word phrases.",
    },
    "reject": {
        "case_id": "c-003",
        "age_months": 36,
        "observations": "Speech hard to understand; draws a circle.",
    },
}


@pytest.fixture(scope="module")
def setup(
    merged_tiny: Path, tmp_path_factory: pytest.TempPathFactory, server_env: dict[str, str]
) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("workflow")
    server = write_server_config(
        base / "server.yaml",
        release=str(merged_tiny),
        reasoner=str(merged_tiny),
        embedder="embedded:all-minilm-l6-v2",
        backends=["local"],
    )
    config = base / "workflow.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "mcp": {"transport": "stdio", "server_config": str(server)},
                "checkpointer": str(base / "checkpoints.sqlite"),
                "records": str(base / "records.sqlite"),
                "reviewers": str(base / "reviewers.yaml"),
                "signing_key": str(base / "review.key"),
                "max_new_tokens": 16,
            }
        )
    )
    env = {**server_env, "HAI_WORKFLOW_CONFIG": str(config)}
    token = _cli(env, "reviewer-add", "--id", "dr-lee", "--role", "pediatrician").stdout.splitlines()[-1]
    _cli(env, "reviewer-add", "--id", "dr-inactive", "--role", "nurse")
    threads = {}
    for name, case in CASES.items():
        out = _cli(env, "start", *[f"--{k}={v}" for k, v in case.items()]).stdout
        threads[name] = re.search(r"thread (\S+)", out).group(1)  # type: ignore[union-attr]
        assert "[awaiting clinician review]" in out and "evidence [" in out
    return {"env": env, "config": config, "token": token, "threads": threads, "base": base}


def _cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The review CLI in a new process."""
    result = subprocess.run(
        [sys.executable, "-m", "hai_tools.workflow", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert result.returncode == 0, result.stderr[-2000:]
    return result


def _service(setup: dict[str, Any]) -> ReviewService:
    return ReviewService(load_workflow_config(setup["config"]), env=setup["env"])


def _paused(setup: dict[str, Any], thread: str) -> tuple[dict[str, Any], int]:
    """The pending review payload and the number of checkpoints of the thread."""

    async def go() -> tuple[dict[str, Any], int]:
        service = _service(setup)
        async with service.graph() as graph:
            config = {"configurable": {"thread_id": thread}}
            history = [s async for s in graph.aget_state_history(config)]
            return await service._pending(graph, thread), len(history)

    return asyncio.run(go())


def test_cases_pause_at_review_and_are_listed(setup: dict[str, Any]) -> None:
    listed = _cli(setup["env"], "list").stdout
    for thread in setup["threads"].values():
        assert thread in listed and "pending_review" in listed
    payload, _ = _paused(setup, setup["threads"]["approve"])
    assert payload["requires_clinician_review"] is True
    assert payload["proposal"]["model"]["adapter"] == "tiny-lora" and payload["proposal"]["audit_id"]
    assert payload["proposal"]["backend"] == "local" and len(payload["evidence"]) == 2
    assert payload["proposal_hash"].startswith("sha256:")
    # a screening case's proposal is the screening decision: a valid label, then at most one sentence
    label = payload["proposal"]["label"]
    assert label in ("refer", "monitor", "on-track")
    assert payload["proposal"]["answer_text"].startswith(f"Screening decision: {label}.")
    # nothing is released before review, and there is no record
    with pytest.raises(ReviewRefused, match="has not been reviewed"):
        _service(setup).released_text(setup["threads"]["approve"])
    assert _cli(setup["env"], "record", setup["threads"]["approve"], check=False).returncode == 1


@pytest.mark.parametrize(
    ("args", "token", "message"),
    [
        (["--reviewer", "dr-lee"], "wrong-token", "not authorised"),
        (["--reviewer", "dr-unknown"], None, "not authorised"),
        (["--reviewer", "dr-lee"], "", "not authorised"),
        (["--reviewer", "not a valid id!"], None, "malformed decision"),
    ],
)
def test_unauthorised_or_malformed_decisions_change_nothing(
    setup: dict[str, Any], args: list[str], token: str | None, message: str
) -> None:
    thread = setup["threads"]["approve"]
    before = _paused(setup, thread)
    env = {**setup["env"], "HAI_REVIEWER_TOKEN": setup["token"] if token is None else token}
    result = _cli(env, "approve", thread, *args, check=False)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and setup["token"] not in result.stderr
    assert _paused(setup, thread) == before


def test_malformed_decisions_through_the_api_change_nothing(setup: dict[str, Any]) -> None:
    thread = setup["threads"]["edit"]
    before = _paused(setup, thread)
    service = _service(setup)
    for bad in (
        {"action": "edit", "reviewer_id": "dr-lee"},  # no text
        {"action": "approve", "reviewer_id": "dr-lee", "text": "x"},  # approve takes no text
        {"action": "reject", "reviewer_id": "dr-lee"},  # no reason
        {"action": "release", "reviewer_id": "dr-lee"},
        {"action": "approve", "reviewer_id": "dr-lee", "signature": "forged"},  # unknown key
    ):
        with pytest.raises(ReviewRefused, match="malformed decision"):
            asyncio.run(service.decide(thread, bad, setup["token"]))
    assert _paused(setup, thread) == before


def test_bypasses_of_the_review_are_refused(setup: dict[str, Any]) -> None:
    from langgraph.types import Command

    thread = setup["threads"]["reject"]
    before = _paused(setup, thread)
    payload = before[0]
    forged = {
        "action": "approve",
        "reviewer_id": "dr-lee",
        "text": None,
        "reason": None,
        "thread_id": thread,
        "proposal_hash": payload["proposal_hash"],
        "reviewer_role": "pediatrician",
        "decided_at": "2026-11-28T00:00:00+00:00",
        "signature": "AAAA",
    }
    service = _service(setup)

    async def forged_resume() -> None:
        async with service.graph() as graph:
            await graph.ainvoke(Command(resume=forged), {"configurable": {"thread_id": thread}})

    asyncio.run(forged_resume())  # refused inside the review node: the case pauses again, unchanged
    assert service.record(thread) is None and _paused(setup, thread)[0] == payload

    async def forged_state() -> None:
        async with service.graph() as graph:
            config = {"configurable": {"thread_id": thread}}
            await graph.aupdate_state(config, {"decision": forged}, as_node="clinician_review")
            await graph.ainvoke(None, config)

    asyncio.run(forged_state())  # finalize refuses the hand-written decision and sends the case back
    assert service.record(thread) is None and _paused(setup, thread)[0] == payload
    with pytest.raises(ReviewRefused):
        service.released_text(thread)

    # the graph has no edge around the review: finalize is reachable only from clinician_review
    from hai_tools.workflow.graph import build_graph

    edges = build_graph(service.skills, service.key, service.store).compile().get_graph().edges
    assert {e.source for e in edges if e.target == "finalize"} == {"clinician_review"}
    assert {e.target for e in edges if e.source == "finalize"} == {"clinician_review", "__end__"}
    assert {e.target for e in edges if e.source == "safety_check"} == {"clinician_review"}


def test_start_input_cannot_smuggle_a_decision(setup: dict[str, Any]) -> None:
    service = _service(setup)

    async def go() -> dict[str, Any]:
        async with service.graph() as graph:
            config = {"configurable": {"thread_id": "smuggle-1"}}
            await service.skills._session()
            try:
                case = {**CASES["approve"], "case_id": "c-smuggle"}
                await graph.ainvoke(
                    {"case": case, "decision": {"action": "approve"}, "record": {"x": 1}}, config
                )
            finally:
                await service.skills.aclose()
            return await service._pending(graph, "smuggle-1")

    payload = asyncio.run(go())
    assert payload["case"]["case_id"] == "c-smuggle" and service.record("smuggle-1") is None
    with pytest.raises(Exception, match="invalid case: age_months"):
        asyncio.run(service.start({"case_id": "c-bad", "age_months": -3, "observations": "x"}))


def test_approve_edit_reject_in_new_processes(setup: dict[str, Any]) -> None:
    env = {**setup["env"], "HAI_REVIEWER_TOKEN": setup["token"]}
    threads = setup["threads"]
    proposals = {name: _paused(setup, thread)[0] for name, thread in threads.items()}
    approve = _cli(env, "approve", threads["approve"], "--reviewer", "dr-lee").stdout
    assert "approve by dr-lee" in approve
    _cli(
        env,
        "edit",
        threads["edit"],
        "--reviewer",
        "dr-lee",
        "--text",
        "Refer for speech and hearing evaluation.",
    )
    assert (
        "nothing released"
        in _cli(env, "reject", threads["reject"], "--reviewer", "dr-lee", "--reason", "wrong").stdout
    )

    service = _service(setup)
    records = {name: service.record(thread) for name, thread in threads.items()}
    assert all(records.values())
    approved, edited, rejected = records["approve"], records["edit"], records["reject"]
    assert approved is not None and edited is not None and rejected is not None
    assert (
        approved["released_text"] == proposals["approve"]["proposal"]["answer_text"] and approved["released"]
    )
    assert edited["released_text"] == "Refer for speech and hearing evaluation."
    assert edited["model_answer"] == proposals["edit"]["proposal"]["answer_text"]  # both kept
    assert (
        rejected["released"] is False
        and rejected["released_text"] is None
        and rejected["reject_reason"] == "wrong"
    )
    for name, record in records.items():
        assert record is not None
        assert record["reviewer_id"] == "dr-lee" and record["reviewer_role"] == "pediatrician"
        assert record["model_audit_id"] == proposals[name]["proposal"]["audit_id"]
        assert record["proposal_hash"] == proposals[name]["proposal_hash"] and record["decided_at"]
    assert service.released_text(threads["edit"]) == "Refer for speech and hearing evaluation."
    assert (
        "no cases waiting" in _cli(env, "list").stdout or threads["approve"] not in _cli(env, "list").stdout
    )
    # a second decision on a finalised case is refused
    again = _cli(env, "reject", threads["approve"], "--reviewer", "dr-lee", "--reason", "late", check=False)
    assert again.returncode == 2 and "not waiting for review" in again.stderr
    # the record is signed: altering it is detected
    db = sqlite3.connect(setup["base"] / "records.sqlite")
    row = db.execute("SELECT record FROM records WHERE thread_id = ?", (threads["reject"],)).fetchone()
    altered = json.loads(row[0]) | {"released_text": "Give 5 ml twice a day", "released": True}
    with db:
        db.execute(
            "UPDATE records SET record = ? WHERE thread_id = ?", (json.dumps(altered), threads["reject"])
        )
    with pytest.raises(ReviewRefused, match="altered"):
        service.released_text(threads["reject"])
    assert main(["--config", str(setup["config"]), "record", threads["reject"]]) == 2
    assert os.environ.get("HAI_REVIEWER_TOKEN") is None
