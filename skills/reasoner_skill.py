"""ReasonerSkill: a clinical question (with optional context) -> answer and rationale, and the original
project's screening call. The safety policy runs before any model (abstention) and on every result (review
flag, disclaimer). Screening is a constrained choice among the labels (the backend's `choose`: the procedure
the screening evaluation measures) plus a generated one-sentence rationale, so every answer carries a label."""

from __future__ import annotations

import re
from typing import Any

from hai_tools.audit import AuditedCall, AuditLog
from hai_tools.demo_data import INSTRUCTION, LABEL_CHOICES, LABELS
from hai_tools.errors import HaiError
from hai_tools.safety import SafetyPolicy
from skills.contracts import ReasonRequest, ReasonResult, ScreeningRequest, ScreeningResult
from skills.failover import FailoverRouter

REASON_INSTRUCTION = (
    "You support a clinician. Answer the clinical question concisely for the clinician, then give the reasoning. "
    "Answer as:\nAnswer: <text>\nRationale: <text>"
)
_FIELD = re.compile(r"^(answer|rationale)\s*:\s*(.*)$", re.IGNORECASE | re.MULTILINE)


def parse_answer(text: str) -> tuple[str, str | None]:
    fields = {m.group(1).lower(): m.group(2).strip() for m in _FIELD.finditer(text)}
    answer = fields.get("answer") or text.strip()
    return answer, fields.get("rationale")


def first_sentence(text: str) -> str | None:
    """The rationale as a clinician reads it: the first sentence after any `Rationale:` marker (a model trained
    on `Label: ...` / `Rationale: ...` repeats its label line first), or None."""
    marker = re.search(r"rationale\s*:\s*", text, re.IGNORECASE)
    text = (
        text[marker.end() :] if marker else re.sub(r"^\s*label\s*:[^\n]*\n?", "", text, flags=re.IGNORECASE)
    )
    text = " ".join(text.split())
    match = re.search(r"^(.+?[.!?])(\s|$)", text)
    sentence = (match.group(1) if match else text).strip()
    return sentence[:400] or None


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
        messages = [{"role": "user", "content": prompt}]
        choices = list(LABEL_CHOICES)
        try:
            probabilities, backend = await self.router.call("choose", lambda b: b.choose(messages, choices))
        except Exception as exc:
            call.done("error", detail=type(exc).__name__)
            raise
        label = LABELS[max(range(len(choices)), key=lambda i: probabilities[choices[i]])]
        follow_up = f"{prompt}\n\nScreening decision: {label}. In one sentence, the reason for the clinician:"
        text, _ = await self._generate(call, [{"role": "user", "content": follow_up}], 48, None)
        identity = backend.identity("choose")
        return ScreeningResult(
            case_id=request.case_id,
            label=label,  # type: ignore[arg-type]
            probabilities={lab: round(probabilities[c], 6) for lab, c in zip(LABELS, choices, strict=True)},
            rationale=first_sentence(text),
            model=identity,
            backend=backend.name,
            audit_id=call.done("ok", identity.model_dump(), backend.name),
            disclaimer=self.policy.disclaimer,
        )
