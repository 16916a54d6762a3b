"""ReasonerSkill: a clinical question (with optional context) -> answer and rationale, and the original
project's screening call. The safety policy runs before any model (abstention) and on every result (review
flag, disclaimer)."""

from __future__ import annotations

import re
import time
from typing import Any

from hai_tools.audit import AuditLog, new_audit_id
from hai_tools.demo_data import INSTRUCTION
from hai_tools.errors import HaiError
from hai_tools.safety import SafetyPolicy
from skills.contracts import ReasonRequest, ReasonResult, ScreeningRequest, ScreeningResult
from skills.failover import FailoverRouter

REASON_INSTRUCTION = (
    "You support a clinician. Answer the clinical question concisely for the clinician, then give the reasoning. "
    "Answer as:\nAnswer: <text>\nRationale: <text>"
)
_LABEL = re.compile(r"label\s*:\s*(refer|monitor|on-track)\b", re.IGNORECASE)
_FIELD = re.compile(r"^(answer|rationale)\s*:\s*(.*)$", re.IGNORECASE | re.MULTILINE)


def parse_answer(text: str) -> tuple[str, str | None]:
    fields = {m.group(1).lower(): m.group(2).strip() for m in _FIELD.finditer(text)}
    answer = fields.get("answer") or text.strip()
    return answer, fields.get("rationale")


def parse_screening(text: str) -> tuple[str | None, str | None]:
    """`Label: <refer|monitor|on-track>` and the rationale after it; (None, None) when no label is given."""
    label = _LABEL.search(text)
    if not label:
        return None, None
    rationale = re.search(r"rationale\s*:\s*(.+)", text[label.end() :], re.IGNORECASE)
    return label.group(1).lower(), (rationale.group(1).strip() if rationale else None)


class UnknownAdapter(HaiError):
    """No configured backend serves the requested adapter (a bad request, not a backend failure)."""


class ReasonerSkill:
    def __init__(self, router: FailoverRouter, policy: SafetyPolicy, audit: AuditLog) -> None:
        self.router = router
        self.policy = policy
        self.audit = audit

    async def _generate(
        self,
        tool: str,
        request: Any,
        messages: list[dict[str, str]],
        max_new_tokens: int,
        adapter: str | None,
    ) -> tuple[str, Any, str, float]:
        audit_id, started = new_audit_id(), time.perf_counter()
        try:
            text, backend = await self.router.call(
                "generate", lambda b: b.generate(messages, max_new_tokens, adapter)
            )
        except Exception as exc:
            self.audit.record(
                audit_id=audit_id,
                tool=tool,
                request=request.model_dump(),
                model=None,
                backend=None,
                latency_ms=(time.perf_counter() - started) * 1000,
                outcome="error",
                detail=type(exc).__name__,
            )
            raise
        return text, backend, audit_id, started

    def _abstain(self, tool: str, request: Any, rule: str) -> str:
        audit_id = new_audit_id()
        self.audit.record(
            audit_id=audit_id,
            tool=tool,
            request=request.model_dump(),
            model=None,
            backend=None,
            latency_ms=0.0,
            outcome="abstained",
            detail=rule,
        )
        return audit_id

    async def reason(self, request: ReasonRequest) -> ReasonResult:
        abstention = self.policy.check(request.question)
        if abstention is not None:
            audit_id = self._abstain("reason", request, abstention.rule)
            return ReasonResult(
                answer=None,
                rationale=None,
                abstained=True,
                abstain_reason=abstention.reason,
                model=None,
                backend=None,
                audit_id=audit_id,
                disclaimer=self.policy.disclaimer,
            )
        if request.adapter and not any(
            b.serves_adapter(request.adapter) for b in self.router.candidates("generate")
        ):
            raise UnknownAdapter(f"no backend serves adapter '{request.adapter}'")
        context = "".join(f"\nEvidence {i + 1}: {c}" for i, c in enumerate(request.context))
        messages = [
            {"role": "user", "content": f"{REASON_INSTRUCTION}\n\nQuestion: {request.question}{context}"}
        ]
        text, backend, audit_id, started = await self._generate(
            "reason", request, messages, request.max_new_tokens, request.adapter
        )
        answer, rationale = parse_answer(text)
        identity = backend.identity("generate")
        self.audit.record(
            audit_id=audit_id,
            tool="reason",
            request=request.model_dump(),
            model=identity.model_dump(),
            backend=backend.name,
            latency_ms=(time.perf_counter() - started) * 1000,
            outcome="ok",
        )
        return ReasonResult(
            answer=answer,
            rationale=rationale,
            model=identity,
            backend=backend.name,
            audit_id=audit_id,
            disclaimer=self.policy.disclaimer,
        )

    async def screen(self, request: ScreeningRequest) -> ScreeningResult:
        abstention = self.policy.check(
            f"Age: {request.age_months} months. Observations: {request.observations}"
        )
        if abstention is not None:
            audit_id = self._abstain("screen", request, abstention.rule)
            return ScreeningResult(
                case_id=request.case_id,
                label=None,
                rationale=None,
                abstained=True,
                abstain_reason=abstention.reason,
                model=None,
                backend=None,
                audit_id=audit_id,
                disclaimer=self.policy.disclaimer,
            )
        prompt = f"{INSTRUCTION}\n\nAge: {request.age_months} months\nObservations: {request.observations}"
        text, backend, audit_id, started = await self._generate(
            "screen", request, [{"role": "user", "content": prompt}], 64, None
        )
        label, rationale = parse_screening(text)
        identity = backend.identity("generate")
        self.audit.record(
            audit_id=audit_id,
            tool="screen",
            request=request.model_dump(),
            model=identity.model_dump(),
            backend=backend.name,
            latency_ms=(time.perf_counter() - started) * 1000,
            outcome="ok" if label else "unparsed",
        )
        return ScreeningResult(
            case_id=request.case_id,
            label=label,
            rationale=rationale,  # type: ignore[arg-type]
            raw_answer=None if label else text[:2000],
            model=identity,
            backend=backend.name,
            audit_id=audit_id,
            disclaimer=self.policy.disclaimer,
        )
