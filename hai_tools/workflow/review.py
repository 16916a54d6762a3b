"""Clinician decisions: what a valid decision is, the statement a reviewer signs with their own key, and the
keyed hashes that tie it to the case and the proposal without holding patient text.

A reviewer's decision is a `DecisionStatement` (action, reviewer and key id, case thread, the proposal hash, keyed
digests of the clinician's text or reason, time) signed with the reviewer's private key; the review and finalize
nodes verify it against the reviewer registry (hai_tools.workflow.reviewers), so no decision exists that a
registered reviewer did not sign, and the workflow service cannot make one. Digests are HMACs under the case's
own random salt, kept with the case's (encrypted) data: while the case exists they prove what was decided; once
it is erased they reveal nothing, and the signed statements in the review chain still verify.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hai_tools.errors import HaiError
from hai_tools.keys import SignatureInvalid, verify
from hai_tools.manifest import canonical_json
from hai_tools.workflow.reviewers import REVIEWER_ID, ReviewerRegistry


class ReviewRefused(HaiError):
    """A decision was malformed, unauthorised, forged or for another proposal; nothing changed."""


class DecisionInput(BaseModel):
    """What a clinician submits."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["approve", "edit", "reject"]
    reviewer_id: str = Field(pattern=REVIEWER_ID)
    text: str | None = Field(None, min_length=1, max_length=4000, description="edit: the clinician's text")
    reason: str | None = Field(None, min_length=1, max_length=1000, description="reject: why")

    @model_validator(mode="after")
    def _fields_per_action(self) -> DecisionInput:
        if self.action == "edit" and not (self.text and self.text.strip()):
            raise ValueError("an edit needs the clinician's text")
        if self.action != "edit" and self.text is not None:
            raise ValueError(f"{self.action} takes no text (use edit)")
        if self.action == "reject" and not (self.reason and self.reason.strip()):
            raise ValueError("a rejection needs a reason")
        return self


class DecisionStatement(BaseModel):
    """What the reviewer signs: no patient text, only keyed digests of it."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["approve", "edit", "reject"]
    reviewer_id: str = Field(pattern=REVIEWER_ID)
    reviewer_key_id: str
    thread_id: str
    proposal_hash: str
    text_digest: str | None = None
    reason_digest: str | None = None
    decided_at: str

    def payload(self) -> bytes:
        """The exact bytes a reviewer's key signs (canonical JSON: a browser can sign the same bytes)."""
        return canonical_json(self.model_dump())


class SignedDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    statement: DecisionStatement
    text: str | None = None
    reason: str | None = None
    signature: str


def new_salt() -> str:
    return secrets.token_hex(32)


def keyed_digest(salt: str, data: Any) -> str:
    """HMAC-SHA256 of the canonical JSON of `data` under the case's salt."""
    return "hmac-sha256:" + hmac.new(bytes.fromhex(salt), canonical_json(data), hashlib.sha256).hexdigest()


def proposal_hash(
    salt: str,
    case: dict[str, Any],
    proposal: dict[str, Any],
    evidence: list[dict[str, Any]],
    flags: list[str],
) -> str:
    """Covers the case, the proposal, its evidence and safety flags: a decision signed over it is about exactly
    this case and this proposal."""
    return keyed_digest(salt, {"c": case, "p": proposal, "e": evidence, "f": flags})


def statement_for(
    decision: DecisionInput, reviewer_key_id: str, thread_id: str, proposal: str, salt: str
) -> DecisionStatement:
    return DecisionStatement(
        action=decision.action,
        reviewer_id=decision.reviewer_id,
        reviewer_key_id=reviewer_key_id,
        thread_id=thread_id,
        proposal_hash=proposal,
        text_digest=keyed_digest(salt, decision.text) if decision.text is not None else None,
        reason_digest=keyed_digest(salt, decision.reason) if decision.reason is not None else None,
        decided_at=now(),
    )


RELEASE_FIELDS = (
    "thread_id",
    "case_id",
    "decision",
    "released_text",
    "reviewer_id",
    "reviewer_role",
    "decided_at",
    "proposal_hash",
    "model",
    "submitted_by",
    "signing_key",
)


def release_statement(record: dict[str, Any]) -> dict[str, Any]:
    """The part of a final record that may leave to any caller: what the clinician released and who decided,
    without the model's own text (which on an edit or a rejection no clinician approved)."""
    return {k: record.get(k) for k in RELEASE_FIELDS}


def verify_release_statement(statement: dict[str, Any], signature: str, public: Ed25519PublicKey) -> None:
    """Raise ReviewRefused unless `statement` is signed by the review service's key."""
    try:
        verify(public, signature, canonical_json(statement), "release statement")
    except SignatureInvalid:
        raise ReviewRefused("release statement does not verify against the review key") from None


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def verify_signed_decision(
    raw: Any,
    reviewers: ReviewerRegistry,
    thread_id: str,
    expected_proposal_hash: str,
    salt: str,
    require_active: bool = True,
) -> SignedDecision:
    """The decision as the review and finalize nodes accept it: well formed, signed by the registered key of
    the reviewer it names (active, for a new decision), for this thread and this exact proposal, and carrying
    the very text or reason its digests were signed over."""
    if not raw:
        raise ReviewRefused("no clinician decision")
    try:
        decision = SignedDecision.model_validate(raw)
        statement = decision.statement
        DecisionInput(
            action=statement.action,
            reviewer_id=statement.reviewer_id,
            text=decision.text,
            reason=decision.reason,
        )
    except ValidationError as exc:
        raise ReviewRefused(f"malformed decision: {exc.errors()[0]['msg']}") from None
    try:
        entry = reviewers.key(statement.reviewer_id, statement.reviewer_key_id, require_active)
    except HaiError as exc:
        raise ReviewRefused(str(exc)) from None
    try:
        verify(entry.public(), decision.signature, statement.payload(), "decision")
    except SignatureInvalid:
        raise ReviewRefused(
            f"decision is not signed by reviewer '{statement.reviewer_id}''s registered key: refused"
        ) from None
    if statement.thread_id != thread_id:
        raise ReviewRefused("decision is for another case")
    if statement.proposal_hash != expected_proposal_hash:
        raise ReviewRefused("decision is for another proposal than the one under review")
    for value, digest, name in (
        (decision.text, statement.text_digest, "text"),
        (decision.reason, statement.reason_digest, "reason"),
    ):
        if (value is None) != (digest is None) or (value is not None and keyed_digest(salt, value) != digest):
            raise ReviewRefused(f"the decision's {name} is not the one the reviewer signed")
    return decision
