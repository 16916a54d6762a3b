"""ReasonerSkill: a clinical question (with optional context) -> answer and rationale, and the original
project's screening call. The safety policy runs before any model (abstention) and on every result (review
flag, disclaimer)."""

from __future__ import annotations

import re
from typing import Any

from hai_tools.audit import AuditedCall, AuditLog
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
        self, call: AuditedCall, messages: list[dict[str, str]], max_new_tokens: int, adapter: str | None
    ) -> tuple[str, Any]:
        try:
            return await self.router.call("generate", lambda b: b.generate(messages, max_new_tokens, adapter))
        except Exception as exc:
            call.done("error", detail=type(exc).__name__)
            raise

    async def reason(self, request: ReasonRequest) -> ReasonResult:
        call = self.audit.start("reason", request.model_dump())
        abstention = self.policy.check(request.question)
        if abstention is not None:
            return ReasonResult(
                answer=None,
                rationale=None,
                abstained=True,
                abstain_reason=abstention.reason,
                model=None,
                backend=None,
                audit_id=call.done("abstained", detail=abstention.rule),
                disclaimer=self.policy.disclaimer,
            )
        if request.adapter and not any(
            b.serves_adapter(request.adapter) for b in self.router.candidates("generate")
        ):
            call.done("refused", detail="UnknownAdapter")
            raise UnknownAdapter(f"no backend serves adapter '{request.adapter}'")
        context = "".join(f"\nEvidence {i + 1}: {c}" for i, c in enumerate(request.context))
        messages = [
            {"role": "user", "content": f"{REASON_INSTRUCTION}\n\nQuestion: {request.question}{context}"}
        ]
        text, backend = await self._generate(call, messages, request.max_new_tokens, request.adapter)
        answer, rationale = parse_answer(text)
        identity = backend.identity("generate")
        return ReasonResult(
            answer=answer,
            rationale=rationale,
            model=identity,
            backend=backend.name,
            audit_id=call.done("ok", identity.model_dump(), backend.name),
            disclaimer=self.policy.disclaimer,
        )

    async def screen(self, request: ScreeningRequest) -> ScreeningResult:
        call = self.audit.start("screen", request.model_dump())
        abstention = self.policy.check(
            f"Age: {request.age_months} months. Observations: {request.observations}"
        )
        if abstention is not None:
            return ScreeningResult(
                case_id=request.case_id,
                label=None,
                rationale=None,
                abstained=True,
                abstain_reason=abstention.reason,
                model=None,
                backend=None,
                audit_id=call.done("abstained", detail=abstention.rule),
                disclaimer=self.policy.disclaimer,
            )
        prompt = f"{INSTRUCTION}\n\nAge: {request.age_months} months\nObservations: {request.observations}"
        text, backend = await self._generate(call, [{"role": "user", "content": prompt}], 64, None)
        label, rationale = parse_screening(text)
        identity = backend.identity("generate")
        audit_id = call.done("ok" if label else "unparsed", identity.model_dump(), backend.name)
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
