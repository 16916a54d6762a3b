"""ReasonerSkill: a clinical question (with optional context) -> answer and rationale, and the original
project's screening call. The safety guard (hai_tools.guard) runs on the request and each context passage
before any model (abstention), and on every answer before it is returned (withheld); every result carries the
review flag, the disclaimer and the guard version that checked it. Screening is a constrained choice among the labels (the backend's `choose`: the procedure
the screening evaluation measures) plus a generated one-sentence rationale, so every answer carries a label."""

from __future__ import annotations

import re
from typing import Any

from hai_tools.audit import AuditedCall, AuditLog
from hai_tools.demo_data import INSTRUCTION, LABEL_CHOICES, LABELS
from hai_tools.demo_safety import reason_prompt
from hai_tools.guard import Guard
from hai_tools.safety import Abstention, SafetyPolicy
from skills.backends.base import RequestRejected
from skills.contracts import ReasonRequest, ReasonResult, ScreeningRequest, ScreeningResult
from skills.failover import FailoverRouter

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
    # a sentence ends at . ! or ? before a space, the end, or a letter run straight on (the demo model wrote
    # "reported as met.matchCondition"); not before a digit, so "2.5 years" stays whole
    match = re.search(r"^(.+?[.!?])(\s|$|(?=[A-Za-z]))", text)
    sentence = (match.group(1) if match else text).strip()
    return sentence[:400] or None


class UnknownAdapter(RequestRejected):
    """No configured backend serves the requested adapter (a bad request, not a backend failure)."""


SCREEN_CATEGORIES = ("emergency_now", "prompt_injection")  # observations are notes, not a question


def _detail(abstention: Abstention) -> str:
    return f"{abstention.rule}:{abstention.where}:{abstention.source}"


class ReasonerSkill:
    def __init__(self, router: FailoverRouter, guard: Guard | SafetyPolicy, audit: AuditLog) -> None:
        self.router = router
        self.guard = guard if isinstance(guard, Guard) else Guard(guard)
        self.policy = self.guard.policy
        self.audit = audit

    async def _generate(
        self, call: AuditedCall, messages: list[dict[str, str]], max_new_tokens: int, adapter: str | None
    ) -> tuple[str, Any]:
        try:
            return await self.router.call("generate", lambda b: b.generate(messages, max_new_tokens, adapter))
        except Exception as exc:
            call.done("error", detail=type(exc).__name__)
            raise

    def _refused(
        self,
        call: AuditedCall,
        outcome: str,
        abstention: Abstention,
        identity: Any = None,
        backend: str | None = None,
    ) -> ReasonResult:
        """A reason result with no answer: the request abstained, or the answer was withheld (then the model and
        backend that wrote it are named)."""
        return ReasonResult(
            answer=None,
            rationale=None,
            abstained=True,
            abstain_reason=abstention.reason,
            model=identity,
            backend=backend,  # type: ignore[arg-type]
            audit_id=call.done(
                outcome, identity.model_dump() if identity else None, backend, _detail(abstention)
            ),
            disclaimer=self.policy.disclaimer,
            guard=self.guard.version,
        )

    async def reason(self, request: ReasonRequest) -> ReasonResult:
        call = self.audit.start("reason", request.model_dump())
        abstention = self.guard.request(request.question, request.context)
        if abstention is not None:
            return self._refused(call, "abstained", abstention)
        if request.adapter and not any(
            b.serves_adapter(request.adapter) for b in self.router.candidates("generate")
        ):
            call.done("refused", detail="UnknownAdapter")
            raise UnknownAdapter(f"no backend serves adapter '{request.adapter}'")
        messages = [{"role": "user", "content": reason_prompt(request.question, request.context)}]
        text, backend = await self._generate(call, messages, request.max_new_tokens, request.adapter)
        answer, rationale = parse_answer(text)
        identity = backend.identity("generate", request.adapter)
        withheld = self.guard.answer("\n".join(t for t in (answer, rationale) if t))
        if withheld is not None:
            return self._refused(call, "withheld", withheld, identity, backend.name)
        return ReasonResult(
            answer=answer,
            rationale=rationale,
            model=identity,
            backend=backend.name,
            audit_id=call.done("ok", identity.model_dump(), backend.name),
            disclaimer=self.policy.disclaimer,
            guard=self.guard.version,
        )

    async def screen(self, request: ScreeningRequest) -> ScreeningResult:
        call = self.audit.start("screen", request.model_dump())
        abstention = self.guard.request(request.observations, [], SCREEN_CATEGORIES)
        if abstention is not None:
            return ScreeningResult(
                case_id=request.case_id,
                label=None,
                rationale=None,
                abstained=True,
                abstain_reason=abstention.reason,
                model=None,
                backend=None,
                audit_id=call.done("abstained", detail=_detail(abstention)),
                disclaimer=self.policy.disclaimer,
                guard=self.guard.version,
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
        rationale = first_sentence(text)
        withheld = (
            self.guard.answer(rationale) if rationale else None
        )  # the label is a choice; the text is not
        return ScreeningResult(
            case_id=request.case_id,
            label=label,  # type: ignore[arg-type]
            probabilities={lab: round(probabilities[c], 6) for lab, c in zip(LABELS, choices, strict=True)},
            rationale=None if withheld else rationale,
            model=identity,
            backend=backend.name,
            audit_id=call.done(
                "ok",
                identity.model_dump(),
                backend.name,
                f"rationale withheld: {_detail(withheld)}" if withheld else None,
            ),
            disclaimer=self.policy.disclaimer,
            guard=self.guard.version,
        )
