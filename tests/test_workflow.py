"""The LangGraph clinical workflow against the real MCP server over stdio (tiny merged reasoner, packaged
MiniLM embedder), with SQLite checkpoints: cases pause at clinician_review; approve, edit and reject, each
run in a new process through the review CLI and signed with the reviewer's own key, produce the right final
record in the review chain; malformed and unauthorised decisions are refused and leave the paused state as it
was; and the ways around the review (a forged resume, a state written as if by the review node, a decision
signed by the service's key, a start input carrying a decision, reading the answer before review, tampering
with a record) release nothing and leave the case waiting for review."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from hai_tools.errors import HaiError
from hai_tools.workflow import ReviewRefused, ReviewService, load_workflow_config
from hai_tools.workflow.__main__ import main
from hai_tools.workflow.records import entry_hash
from tests.conftest import (
    REVIEWER_PASSPHRASE,
    make_reviewer,
    reviewer_key,
    tiny_server_config,
    write_workflow_config,
)

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "approve": {
        "case_id": "kid-0001",
        "age_months": 18,
        "observations": "Does not walk; says no words; no pointing.",
    },
    "edit": {
        "case_id": "kid-0002",
        "age_months": 24,
        "observations": "Runs and kicks a ball; no two-word phrases.",
    },
    "reject": {
        "case_id": "kid-0003",
        "age_months": 36,
        "observations": "Speech hard to understand; draws a circle.",
    },
}


@pytest.fixture(scope="module")
def setup(
    merged_tiny: Path, tmp_path_factory: pytest.TempPathFactory, server_env: dict[str, str]
) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("workflow")
    server = tiny_server_config(
        base / "server.yaml",
        merged_tiny,
    )
    config = write_workflow_config(
        base, mcp={"transport": "stdio", "server_config": str(server)}, max_new_tokens=16
    )
    env = {**server_env, "HAI_WORKFLOW_CONFIG": str(config)}
    keys = {"dr-lee": make_reviewer(base, "dr-lee", "pediatrician")}
    keys["dr-inactive"] = make_reviewer(base, "dr-inactive", "nurse")
    _cli(env, "reviewer-deactivate", "--id", "dr-inactive", "--admin_key", str(base / "admin.key"))
    threads = {}
    for name, case in CASES.items():
        out = _cli(env, "start", "--case", "-", stdin=json.dumps(case)).stdout
        threads[name] = re.search(r"thread (\S+)", out).group(1)  # type: ignore[union-attr]
        assert "[awaiting clinician review]" in out and "evidence [" in out
        assert case["case_id"] not in threads[name]  # thread ids carry no case id into logs
    return {"env": env, "config": config, "keys": keys, "threads": threads, "base": base}


def _cli(
    env: dict[str, str], *args: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The review CLI in a new process."""
    result = subprocess.run(
        [sys.executable, "-m", "hai_tools.workflow", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        input=stdin,
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
    assert payload["proposal_hash"].startswith("hmac-sha256:")  # keyed by the case salt
    # a screening case's proposal is the screening decision: a valid label, then at most one sentence
    label = payload["proposal"]["label"]
    assert label in ("refer", "monitor", "on-track")
    assert payload["proposal"]["answer_text"].startswith(f"Screening decision: {label}.")
    # nothing is released before review, and there is no record
    with pytest.raises(ReviewRefused, match="has not been reviewed"):
        _service(setup).released_text(setup["threads"]["approve"])
    assert _cli(setup["env"], "record", setup["threads"]["approve"], check=False).returncode == 1


@pytest.mark.parametrize(
    ("reviewer", "key", "passphrase", "message"),
    [
        ("dr-lee", "dr-lee", "not-the-passphrase", "wrong passphrase"),
        ("dr-unknown", "dr-lee", REVIEWER_PASSPHRASE, "reviewer 'dr-unknown' is not authorised"),
        ("dr-inactive", "dr-inactive", REVIEWER_PASSPHRASE, "reviewer 'dr-inactive' is not authorised"),
        ("dr-lee", "dr-inactive", REVIEWER_PASSPHRASE, "not signed by reviewer 'dr-lee''s registered key"),
        ("not a valid id!", "dr-lee", REVIEWER_PASSPHRASE, "malformed decision"),
    ],
)
def test_unauthorised_or_malformed_decisions_change_nothing(
    setup: dict[str, Any], reviewer: str, key: str, passphrase: str, message: str
) -> None:
    """A wrong passphrase, an unregistered or deactivated reviewer, a decision signed with another reviewer's key:
    refused in one line, the case still paused exactly as it was."""
    thread = setup["threads"]["approve"]
    before = _paused(setup, thread)
    env = {**setup["env"], "HAI_REVIEWER_PASSPHRASE": passphrase}
    result = _cli(
        env, "approve", thread, "--reviewer", reviewer, "--key", str(setup["keys"][key]), check=False
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and passphrase not in result.stderr
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
            asyncio.run(service.decide(thread, bad, reviewer_key(setup["keys"]["dr-lee"])))
    assert _paused(setup, thread) == before


def test_bypasses_of_the_review_are_refused(setup: dict[str, Any]) -> None:
    from langgraph.types import Command

    thread = setup["threads"]["reject"]
    before = _paused(setup, thread)
    payload = before[0]
    service = _service(setup)
    statement = asyncio.run(service.prepare(thread, {"action": "approve", "reviewer_id": "dr-lee"}))
    forged = {"statement": statement.model_dump(), "text": None, "reason": None, "signature": "AAAA"}
    # the service's own key cannot stand in for a reviewer's
    from hai_tools.keys import sign

    with pytest.raises(ReviewRefused, match="not signed by reviewer 'dr-lee''s registered key"):
        asyncio.run(service.submit(statement, sign(service.key, statement.payload())))
    assert service.record(thread) is None and _paused(setup, thread)[0] == payload

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

    edges = (
        build_graph(service.skills, service.key, service.store, service.reviewers).compile().get_graph().edges
    )
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
    env = {**setup["env"], "HAI_REVIEWER_PASSPHRASE": REVIEWER_PASSPHRASE}
    key = ["--reviewer", "dr-lee", "--key", str(setup["keys"]["dr-lee"])]
    threads = setup["threads"]
    proposals = {name: _paused(setup, thread)[0] for name, thread in threads.items()}
    approve = _cli(env, "approve", threads["approve"], *key).stdout
    assert "approve by dr-lee" in approve
    _cli(
        env,
        "edit",
        threads["edit"],
        *key,
        "--text_file",
        "-",
        stdin="Refer for speech and hearing evaluation.",
    )
    assert (
        "nothing released"
        in _cli(env, "reject", threads["reject"], *key, "--reason_file", "-", stdin="wrong").stdout
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
    again = _cli(env, "reject", threads["approve"], *key, "--reason_file", "-", stdin="late", check=False)
    assert again.returncode == 2 and "not waiting for review" in again.stderr
    # the three decisions form the review chain, and it verifies (CLI, new process)
    out = _cli(env, "verify").stdout
    assert out.startswith("ok review chain: 3 decisions chained and signed (0 erased cases); head 3:sha256:")
    # nothing of a case is stored in the clear: not the observations, not the clinician's text, not the case id
    for name in ("records.sqlite", "checkpoints.sqlite"):
        raw = b"".join(p.read_bytes() for p in setup["base"].glob(name + "*"))
        assert raw, name
        for text in ("Does not walk", "speech and hearing evaluation", "kid-0001", "Runs and kicks"):
            assert text.encode() not in raw, (name, text)


def _damaged_copy(setup: dict[str, Any], tmp_path: Path) -> ReviewService:
    """A service on a copy of the case's record store (same keys and registry), to damage without touching the
    shared one."""
    shutil.copy(setup["base"] / "records.sqlite", tmp_path / "records.sqlite")
    config = yaml.safe_load(setup["config"].read_text()) | {"records": str(tmp_path / "records.sqlite")}
    (tmp_path / "workflow.yaml").write_text(yaml.safe_dump(config))
    return ReviewService(load_workflow_config(tmp_path / "workflow.yaml"), env=setup["env"])


def _edit_chain(db: sqlite3.Connection, seq: int, change: Any) -> None:
    entry = json.loads(db.execute("SELECT entry FROM chain WHERE seq = ?", (seq,)).fetchone()[0])
    change(entry)
    db.execute("UPDATE chain SET entry = ? WHERE seq = ?", (json.dumps(entry), seq))


def _flip_record_byte(db: sqlite3.Connection, seq: int) -> None:
    thread = db.execute("SELECT thread_id FROM chain WHERE seq = ?", (seq,)).fetchone()[0]
    blob = bytearray(
        db.execute(
            "SELECT blob FROM case_data WHERE thread_id = ? AND name = 'record'", (thread,)
        ).fetchone()[0]
    )
    blob[20] ^= 0x01
    db.execute("UPDATE case_data SET blob = ? WHERE thread_id = ? AND name = 'record'", (bytes(blob), thread))


REVIEW_TAMPERS: dict[str, tuple[Any, str]] = {
    "record deleted": (
        lambda db: db.execute("DELETE FROM chain WHERE seq = 2"),
        "review chain jumps from entry 1 to 3 (entries deleted or reordered)",
    ),
    "last record deleted": (
        lambda db: db.execute("DELETE FROM chain WHERE seq = 3"),
        "is finalised but has no entry in the review chain",
    ),
    "records reordered": (
        lambda db: (
            db.execute("UPDATE chain SET seq = 99 WHERE seq = 1"),
            db.execute("UPDATE chain SET seq = 1 WHERE seq = 2"),
            db.execute("UPDATE chain SET seq = 2 WHERE seq = 99"),
        ),
        "review chain jumps from entry 0 to 2",
    ),
    "decision edited": (
        lambda db: _edit_chain(db, 2, lambda e: e["statement"].update(action="approve")),
        "review chain entry 2 was edited (hash mismatch)",
    ),
    "decision edited, entry rehashed": (
        lambda db: _edit_chain(
            db, 3, lambda e: (e["statement"].update(action="approve"), e.update(hash=entry_hash(e)))
        ),
        "review chain entry 3 is not sealed by the review service's key",
    ),
    "stored record edited": (lambda db: _flip_record_byte(db, 1), "was altered (it does not decrypt)"),
}


RECORD_REFUSALS = {
    "decision edited": (2, "its chain entry is not sealed"),
    "stored record edited": (1, "was altered (it does not decrypt)"),
    "record deleted": (2, "record and review chain disagree"),
}


@pytest.mark.parametrize("what", list(REVIEW_TAMPERS))
def test_tamper_matrix_review_chain(setup: dict[str, Any], tmp_path: Path, what: str) -> None:
    damage, message = REVIEW_TAMPERS[what]
    service = _damaged_copy(setup, tmp_path)
    assert service.verify()[0] == 3
    db = sqlite3.connect(tmp_path / "records.sqlite", isolation_level=None)
    damage(db)
    db.close()
    with pytest.raises(HaiError, match=re.escape(message)):
        service.verify()
    if what in RECORD_REFUSALS:  # the workflow itself refuses to hand out the damaged record
        seq, refusal = RECORD_REFUSALS[what]
        thread = next(e["thread_id"] for e in _service(setup).store.chain() if e["seq"] == seq)
        with pytest.raises(HaiError, match=re.escape(refusal)):
            service.record(thread)


def test_a_swapped_reviewer_key_is_refused(setup: dict[str, Any], tmp_path: Path) -> None:
    """Whoever edits the registry to put their own key under a reviewer's name breaks the admin's signature:
    the service refuses new decisions and the chain no longer verifies; a registry re-signed by another admin
    key is refused too."""
    from hai_tools.keys import keygen, load_private, public_from_text, raw_public

    _damaged_copy(setup, tmp_path)
    shutil.copy(setup["base"] / "reviewers.yaml", tmp_path / "reviewers.yaml")
    config = yaml.safe_load((tmp_path / "workflow.yaml").read_text()) | {
        "reviewers": str(tmp_path / "reviewers.yaml")
    }
    (tmp_path / "workflow.yaml").write_text(yaml.safe_dump(config))
    _, mallory = keygen(tmp_path / "mallory")
    data = yaml.safe_load((tmp_path / "reviewers.yaml").read_text())
    data["reviewers"][0]["public_key"] = raw_public(public_from_text(mallory.read_text()))
    (tmp_path / "reviewers.yaml").write_text(yaml.safe_dump(data))
    service = ReviewService(load_workflow_config(tmp_path / "workflow.yaml"), env=setup["env"])
    with pytest.raises(HaiError, match="was changed without the admin key"):
        service.verify()
    # re-signed with a key of the attacker's own: not the pinned admin key
    from hai_tools.workflow.reviewers import ReviewerRegistry

    keygen(tmp_path / "rogue-admin")
    rogue = ReviewerRegistry(tmp_path / "rogue.yaml", tmp_path / "rogue-admin.pub")
    rogue.add("dr-lee", "pediatrician", mallory.read_text(), load_private(tmp_path / "rogue-admin.key"))
    pinned = ReviewerRegistry(tmp_path / "rogue.yaml", setup["base"] / "admin.pub")
    with pytest.raises(HaiError, match="signed by another admin key than the pinned one"):
        pinned.entries()


def test_a_board_verifies_the_review_history_from_public_files(setup: dict[str, Any], tmp_path: Path) -> None:
    env = {**setup["env"], "HAI_REVIEWER_PASSPHRASE": ""}
    _cli(env, "export-history", "--out", str(tmp_path / "history.jsonl"))
    history = (tmp_path / "history.jsonl").read_text()
    for text in ("Does not walk", "speech and hearing", "kid-000"):
        assert text not in history
    for name in ("reviewers.yaml", "admin.pub", "review.pub"):
        shutil.copy(setup["base"] / name, tmp_path / name)
    args = [
        "verify-history",
        str(tmp_path / "history.jsonl"),
        "--reviewers",
        str(tmp_path / "reviewers.yaml"),
        "--admin_public_key",
        str(tmp_path / "admin.pub"),
        "--service_public_key",
        str(tmp_path / "review.pub"),
    ]
    assert main(args) == 0
    lines = history.splitlines()
    (tmp_path / "cut.jsonl").write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    assert main([args[0], str(tmp_path / "cut.jsonl"), *args[2:]]) == 2


def test_erasing_a_case_keeps_every_chain_verifying(setup: dict[str, Any], tmp_path: Path) -> None:
    """Erasure (run last: it changes the shared store): the case's data and checkpoints are gone, the review
    chain and the audit log still verify, and its text is in no database file, not even under the data key."""
    env = setup["env"]
    thread = setup["threads"]["edit"]
    service = _service(setup)
    before = service.verify()
    from hai_tools.audit import audit_key, verify_audit_log

    log = Path(env["HAI_AUDIT_LOG"])
    audit_head = verify_audit_log(log, audit_key(log))
    out = _cli(env, "erase", thread).stdout
    assert "patient data erased" in out
    after = service.verify()
    assert after[:2] == before[:2] and after[2] == 1  # same chain, same head; one case erased
    with pytest.raises(HaiError, match="was erased: its record is gone"):
        service.record(thread)
    assert service.store.case(thread) is None
    with pytest.raises(HaiError, match="no case"):
        asyncio.run(service.show(thread))
    assert service.store.status(thread) == "erased"
    # the other cases are intact and still verify against their entries
    assert service.released_text(setup["threads"]["approve"])
    key = bytes.fromhex((setup["base"] / "data.key").read_text())
    for name in ("records.sqlite", "checkpoints.sqlite"):
        raw = b"".join(p.read_bytes() for p in setup["base"].glob(name + "*"))
        assert b"Runs and kicks" not in raw and b"speech and hearing" not in raw
    # nothing left under the data key decrypts to the erased case
    from hai_tools.at_rest import DecryptionFailed, decrypt

    db = sqlite3.connect(setup["base"] / "records.sqlite")
    for (blob,) in db.execute("SELECT wrapped FROM case_keys"):
        with pytest.raises(DecryptionFailed):
            decrypt(key, blob, f"key:{thread}".encode(), "erased key")
    assert db.execute("SELECT count(*) FROM case_data WHERE thread_id = ?", (thread,)).fetchone()[0] == 0
    # the tool-call audit log is left as it was: same head, every line still verifying up to it
    assert verify_audit_log(log, audit_key(log), expect_head=f"{audit_head[0]}:{audit_head[1]}") == audit_head
    assert audit_head[0] == len(log.read_text().splitlines()) > 0
