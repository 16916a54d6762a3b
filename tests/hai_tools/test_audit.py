"""The audit log: keyed input hashes, one MAC chain across writers, and `governance audit-verify` naming the
first line that was removed, reordered, edited or cut."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import re
from pathlib import Path

import pytest

from governance.__main__ import main
from hai_tools.audit import AuditChainBroken, AuditLog, input_hash, verify_audit_log
from hai_tools.callers import Caller, acting_as

KEY = bytes(range(32))


def _write(path: Path, n: int) -> None:
    log = AuditLog(path, key=KEY)
    with acting_as(Caller(id="ward-agent", role="clinician", token_id="tok_abc")):
        for i in range(n):
            log.start("screen", {"observations": f"no words {i}"}).done("ok")


def test_input_hashes_are_keyed() -> None:
    """A short input's plain sha256 is what a dictionary attack computes; the logged hash is not it, and it
    changes with the key."""
    request = {"age_months": 18}
    plain = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
    logged = input_hash(request, KEY)
    assert plain not in logged and logged == input_hash(request, KEY)
    assert logged != input_hash(request, bytes(32))


def test_entries_name_the_token_id_never_the_token(tmp_path: Path) -> None:
    _write(tmp_path / "a.jsonl", 1)
    entry = json.loads((tmp_path / "a.jsonl").read_text())
    assert entry["caller"] == {"id": "ward-agent", "role": "clinician", "token_id": "tok_abc"}
    assert entry["seq"] == 1 and entry["prev"] == "genesis"


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda ls: ls[:2] + ls[3:], "sequence jumps from 2 to 4"),
        (lambda ls: [ls[0], ls[2], ls[1], *ls[3:]], "sequence jumps from 1 to 3"),
        (lambda ls: [*ls[:2], ls[2].replace('"ok"', '"error"'), *ls[3:]], "line 3 (seq 3): edited"),
        (lambda ls: ["{not json\n", *ls[1:]], "line 1: not JSON"),
    ],
)
def test_a_removed_reordered_or_edited_line_breaks_the_chain(
    tmp_path: Path, damage: object, message: str
) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 5)
    assert verify_audit_log(path, KEY)[0] == 5
    path.write_text("".join(damage(_lines(path))))  # type: ignore[operator]
    with pytest.raises(AuditChainBroken, match=re.escape(message)):
        verify_audit_log(path, KEY)


def test_a_rewritten_chain_fails_without_the_key_and_a_cut_tail_fails_against_the_head(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 4)
    seq, mac = verify_audit_log(path, KEY)
    head = f"{seq}:{mac}"
    # an attacker rewrites the whole log with their own key: consistent, but not under the audit key
    forged = tmp_path / "forged.jsonl"
    log = AuditLog(forged, key=bytes(32))
    for line in _lines(path):
        entry = json.loads(line)
        log.append({k: v for k, v in entry.items() if k not in ("seq", "prev", "mac")})
    with pytest.raises(AuditChainBroken, match="line 1 \\(seq 1\\): edited"):
        verify_audit_log(forged, KEY)
    path.write_text("".join(_lines(path)[:3]))
    assert verify_audit_log(path, KEY)[0] == 3  # a cut tail alone still chains...
    with pytest.raises(AuditChainBroken, match="ends at seq 3: lines after it were cut"):
        verify_audit_log(path, KEY, head)  # ...but not against the head kept elsewhere


def test_concurrent_writers_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write, args=(path, 40)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    assert verify_audit_log(path, KEY)[0] == 120


def test_audit_verify_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HAI_AUDIT_KEY", KEY.hex())
    path = tmp_path / "audit.jsonl"
    _write(path, 3)
    assert main(["audit-verify", str(path)]) == 0
    assert "3 entries chained; head 3:" in capsys.readouterr().out
    path.write_text("".join(_lines(path)[1:]))
    assert main(["audit-verify", str(path)]) == 2
    err = capsys.readouterr().err
    assert "sequence jumps from 0 to 2" in err and len(err.strip().splitlines()) == 1


def test_a_log_from_before_the_chain_is_set_aside_and_a_new_chain_starts(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    legacy = '{"audit_id": "a1", "tool": "screen", "input_hash": "sha256:00", "outcome": "ok"}\n'
    path.write_text(legacy)
    _write(path, 2)
    assert verify_audit_log(path, KEY)[0] == 2
    (aside,) = tmp_path.glob("audit.pre-chain-*.jsonl")
    assert aside.read_text() == legacy  # kept whole, never rewritten
    path.write_text(path.read_text() + '{"seq": 3, "cut')  # a line cut by a crash stops the next writer
    with pytest.raises(AuditChainBroken, match="the last line is not JSON"):
        AuditLog(path, key=KEY)


def test_a_key_another_process_writes_first_is_never_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two servers starting on one home both find no audit key and both create one. The one that writes second must
    not replace the first's key (the first would then chain its entries with a key nobody holds: its lines fail
    verification, as a concurrent burst through two replicas once showed), but take it. The rival is simulated:
    it writes its key just after this process found none, when this process opens its temp file."""
    import os

    from hai_tools.audit import audit_key
    from hai_tools.keys import KeyExists, write_private_once

    monkeypatch.delenv("HAI_AUDIT_KEY", raising=False)
    monkeypatch.delenv("HAI_AUDIT_KEY_FILE", raising=False)
    path = tmp_path / "audit" / "audit.key"
    rival = bytes(range(100, 132))
    real_open = os.open

    def open_after_the_rival(name: object, *args: object, **kwargs: object) -> int:
        if str(name).endswith(".tmp") and not path.exists():
            path.write_text(rival.hex() + "\n")  # the other process got there first
        return real_open(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", open_after_the_rival)
    assert audit_key(path.parent / "audit.jsonl") == rival
    assert path.read_text().strip() == rival.hex()
    assert [p.name for p in path.parent.iterdir()] == ["audit.key"]  # no temp file left behind
    monkeypatch.setattr(os, "open", real_open)
    with pytest.raises(KeyExists, match="exists: refusing to overwrite a key"):
        write_private_once(path, b"00" * 32)
    assert path.read_text().strip() == rival.hex()
