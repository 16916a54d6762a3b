"""Audit log of every skill call: audit id, the caller (id and role, never a token), a hash of the input (never
the text), model, backend, latency, outcome. One JSON line per call in `$HAI_HOME/audit/audit.jsonl` (or `$HAI_AUDIT_LOG`)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hai_tools.callers import current_caller
from hai_tools.settings import hai_home


def input_hash(payload: Any) -> str:
    """sha256 of the canonical JSON of a request: identifies it without storing any patient text."""
    data = json.dumps(payload, sort_keys=True, default=str, ensure_ascii=False).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def new_audit_id() -> str:
    return uuid.uuid4().hex


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
        self.log.record(
            audit_id=self.audit_id,
            tool=self.tool,
            request=self.request,
            model=model,
            backend=backend,
            latency_ms=(time.perf_counter() - self.started) * 1000,
            outcome=outcome,
            detail=detail,
        )
        return self.audit_id


class AuditLog:
    def __init__(self, path: Path | None = None) -> None:
        env = os.environ.get("HAI_AUDIT_LOG")
        self.path = Path(path or env or hai_home() / "audit" / "audit.jsonl")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def start(self, tool: str, request: Any) -> AuditedCall:
        return AuditedCall(self, tool, request)

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
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "audit_id": audit_id,
            "tool": tool,
            "caller": caller.model_dump() if (caller := current_caller()) else None,
            "input_hash": input_hash(request),
            "model": model,
            "backend": backend,
            "latency_ms": round(latency_ms, 3),
            "outcome": outcome,
            "detail": detail,
        }
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self._lock, open(self.path, "a") as handle:
            handle.write(line)
