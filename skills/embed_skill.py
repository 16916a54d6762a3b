"""EmbedSkill: texts -> L2-normalised vectors, from the first backend of the failover order that answers."""

from __future__ import annotations

import time

from hai_tools.audit import AuditLog, new_audit_id
from skills.contracts import EmbedRequest, EmbedResult
from skills.failover import FailoverRouter


class EmbedSkill:
    def __init__(self, router: FailoverRouter, audit: AuditLog) -> None:
        self.router = router
        self.audit = audit

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        audit_id, started = new_audit_id(), time.perf_counter()
        try:
            vectors, backend = await self.router.call("embed", lambda b: b.embed(list(request.texts)))
        except Exception as exc:
            self.audit.record(
                audit_id=audit_id,
                tool="embed",
                request=request.model_dump(),
                model=None,
                backend=None,
                latency_ms=(time.perf_counter() - started) * 1000,
                outcome="error",
                detail=type(exc).__name__,
            )
            raise
        identity = backend.identity("embed")
        self.audit.record(
            audit_id=audit_id,
            tool="embed",
            request=request.model_dump(),
            model=identity.model_dump(),
            backend=backend.name,
            latency_ms=(time.perf_counter() - started) * 1000,
            outcome="ok",
        )
        return EmbedResult(
            vectors=vectors,
            dimension=len(vectors[0]),
            model=identity,
            backend=backend.name,
            audit_id=audit_id,
        )
