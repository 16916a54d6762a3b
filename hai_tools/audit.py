"""Audit log of every skill call: sequence number, audit id, the caller (id, role and token id, never a token), a
keyed hash of the input (HMAC-SHA256, so short inputs cannot be recovered by hashing guesses), model, backend,
latency, outcome. One JSON line per call in `$HAI_HOME/audit/audit.jsonl` (or `$HAI_AUDIT_LOG`).

Lines form a chain: each carries `prev` (the previous line's `mac`) and its own `mac`, an HMAC over `prev` and
the line, so a removed, reordered or edited line breaks the chain for anyone holding the audit key, and nobody
without it can forge a consistent chain. Writers append under an exclusive file lock (several processes may
share a log). The key: `$HAI_AUDIT_KEY` (hex or base64), else `$HAI_AUDIT_KEY_FILE`, else
`$HAI_HOME/audit/audit.key` (created on first use; keep it apart from the log in production).

    python -m governance audit-verify $HAI_HOME/audit/audit.jsonl
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hai_tools.callers import current_caller
from hai_tools.errors import HaiError
from hai_tools.keys import secret
from hai_tools.manifest import canonical_json
from hai_tools.settings import hai_home

GENESIS = "genesis"
log = logging.getLogger("hai_tools.audit")


class AuditChainBroken(HaiError):
    """The audit log was edited, reordered or cut: the chain of MACs does not hold."""


def audit_key(path: Path | None = None) -> bytes:
    default = (path.parent if path else hai_home() / "audit") / "audit.key"
    return secret("HAI_AUDIT_KEY", os.environ.get("HAI_AUDIT_KEY_FILE"), default, "audit")


def input_hash(payload: Any, key: bytes) -> str:
    """HMAC-SHA256 of the canonical JSON of a request: the same request always maps to the same value (so calls
    can be matched), but without the key the value says nothing about the text."""
    data = json.dumps(payload, sort_keys=True, default=str, ensure_ascii=False).encode()
    return "hmac-sha256:" + hmac.new(key, data, hashlib.sha256).hexdigest()


def entry_mac(key: bytes, entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "mac"}
    return hmac.new(key, canonical_json(body), hashlib.sha256).hexdigest()


def new_audit_id() -> str:
    return uuid.uuid4().hex


def abstention_of(outcome: str, detail: str | None) -> tuple[str, str] | None:
    """(rule, where) of an audited call the guard stopped: a refused request or a withheld answer (outcome
    abstained/withheld, detail `rule:where...`) or a withheld rationale (outcome ok, `rationale withheld: ...`)."""
    withheld = outcome == "ok" and detail is not None and detail.startswith("rationale withheld: ")
    if not detail or not (outcome in ("abstained", "withheld") or withheld):
        return None
    rule, where, *_ = [*detail.removeprefix("rationale withheld: ").split(":"), "", ""]
    return rule, where


class AuditedCall:
    """One call being audited: its id and start time; `done` writes the entry once the outcome is known."""

    def __init__(self, log: AuditLog, tool: str, request: Any) -> None:
        self.log, self.tool, self.request = log, tool, request
        self.audit_id = new_audit_id()
        self.started = time.perf_counter()

    def done(
        self,
        outcome: str,
        model: dict[str, Any] | None = None,
        backend: str | None = None,
        detail: str | None = None,
    ) -> str:
        seconds = time.perf_counter() - self.started
        self.log.record(
            audit_id=self.audit_id,
            tool=self.tool,
            request=self.request,
            model=model,
            backend=backend,
            latency_ms=seconds * 1000,
            outcome=outcome,
            detail=detail,
        )
        if self.log.observer is not None:
            self.log.observer(self.tool, outcome, backend, detail, seconds)
        return self.audit_id


class AuditLog:
    """The chained, keyed audit log. `observer(tool, outcome, backend, detail, seconds)`, if given, sees every
    call as it ends (the server's metrics): the audit is the one place every tool call finishes."""

    def __init__(
        self, path: Path | None = None, key: bytes | None = None, observer: Callable[..., None] | None = None
    ) -> None:
        self.observer = observer
        env = os.environ.get("HAI_AUDIT_LOG")
        self.path = Path(path or env or hai_home() / "audit" / "audit.jsonl")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._key = key or audit_key(self.path)
        self._lock = threading.Lock()
        self._set_aside_unchained()

    def start(self, tool: str, request: Any) -> AuditedCall:
        return AuditedCall(self, tool, request)

    @contextmanager
    def _exclusive(self) -> Iterator[Any]:
        """The log file, opened for append and read under an exclusive lock shared with other processes."""
        with self._lock, open(self.path, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield handle
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _set_aside_unchained(self) -> None:
        """A log written by a hai-tools from before the chain has no `seq`/`mac`: it is moved aside whole (kept,
        never rewritten) and a new chain starts, so old entries are neither lost nor mistaken for chained ones."""
        with self._exclusive() as handle:
            last = _last_line(handle)
            if last is None:
                return
            try:
                entry = json.loads(last)
            except ValueError:
                raise AuditChainBroken(
                    f"{self.path}: the last line is not JSON (cut by a crash, or edited); check it with "
                    "`python -m governance audit-verify` and move it aside before serving"
                ) from None
            if "seq" in entry and "mac" in entry:
                return
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            aside = self.path.with_name(f"{self.path.stem}.pre-chain-{stamp}{self.path.suffix}")
            os.replace(self.path, aside)
            log.warning(
                "audit log %s predates the chain: moved aside to %s; a new chain starts", self.path, aside
            )

    def record(
        self,
        *,
        audit_id: str,
        tool: str,
        request: Any,
        model: dict[str, Any] | None,
        backend: str | None,
        latency_ms: float,
        outcome: str,
        detail: str | None = None,
    ) -> None:
        caller = current_caller()
        entry: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "audit_id": audit_id,
            "tool": tool,
            "caller": caller.model_dump() if caller else None,
            "input_hash": input_hash(request, self._key),
            "model": model,
            "backend": backend,
            "latency_ms": round(latency_ms, 3),
            "outcome": outcome,
            "detail": detail,
        }
        self.append(entry)

    def append(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Chain `entry` onto the log (sets `seq`, `prev`, `mac`) and write it as one line."""
        with self._exclusive() as handle:
            last = _last_line(handle)
            previous = json.loads(last) if last else None
            entry = {
                **entry,
                "seq": previous["seq"] + 1 if previous else 1,
                "prev": previous["mac"] if previous else GENESIS,
            }
            entry["mac"] = entry_mac(self._key, entry)
            handle.seek(0, os.SEEK_END)
            handle.write((json.dumps(entry, sort_keys=True) + "\n").encode())
            handle.flush()
            os.fsync(handle.fileno())
        return entry


def _last_line(handle: Any) -> bytes | None:
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    if size == 0:
        return None
    block = min(size, 65536)
    while True:
        handle.seek(size - block)
        data = handle.read(block).rstrip(b"\n")
        cut = data.rfind(b"\n")
        if cut >= 0 or block == size:
            return data[cut + 1 :] if data else None
        block = min(size, block * 4)


def verify_audit_log(path: Path, key: bytes, expect_head: str | None = None) -> tuple[int, str]:
    """Walk the chain; raise AuditChainBroken naming the first line that was removed, reordered or edited.
    Returns the head (last seq, its mac): keep it elsewhere and pass it back as `expect_head` ("SEQ:MAC") to
    detect lines cut from the end."""
    previous_mac, seq = GENESIS, 0
    want_seq, _, want_mac = (expect_head or "0:").partition(":")
    seen_head = not expect_head
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                entry = json.loads(raw)
            except ValueError:
                raise AuditChainBroken(f"{path} line {number}: not JSON (edited or truncated)") from None
            if entry.get("seq") != seq + 1:
                raise AuditChainBroken(
                    f"{path} line {number}: sequence jumps from {seq} to {entry.get('seq')} (lines removed or "
                    "reordered)"
                )
            if entry.get("prev") != previous_mac:
                raise AuditChainBroken(f"{path} line {number}: does not chain to the line before it")
            if not hmac.compare_digest(str(entry.get("mac")), entry_mac(key, entry)):
                raise AuditChainBroken(f"{path} line {number} (seq {entry['seq']}): edited (MAC mismatch)")
            previous_mac, seq = entry["mac"], entry["seq"]
            if expect_head and seq == int(want_seq):
                if previous_mac != want_mac:
                    raise AuditChainBroken(
                        f"{path} seq {seq} is not the head recorded earlier ({expect_head})"
                    )
                seen_head = True
    if not seen_head:
        raise AuditChainBroken(f"{path} ends at seq {seq}: lines after it were cut (expected {expect_head})")
    return seq, previous_mac
