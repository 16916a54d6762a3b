"""EmbedSkill: texts -> L2-normalised vectors, from the first backend of the failover order that answers."""

from __future__ import annotations

from hai_tools.audit import AuditLog
from skills.contracts import EmbedRequest, EmbedResult
from skills.failover import FailoverRouter


class EmbedSkill:
    def __init__(self, router: FailoverRouter, audit: AuditLog) -> None:
        self.router = router
        self.audit = audit

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        call = self.audit.start("embed", request.model_dump())
        try:
            vectors, backend = await self.router.call("embed", lambda b: b.embed(list(request.texts)))
        except Exception as exc:
            call.done("error", detail=type(exc).__name__)
            raise
        identity = backend.identity("embed")
        call.done("ok", identity.model_dump(), backend.name)
        return EmbedResult(
            vectors=vectors,
            dimension=len(vectors[0]),
            model=identity,
            backend=backend.name,
            audit_id=call.audit_id,
        )
