"""Clinician decisions and final records: who may decide (a reviewer registry of token hashes), what a valid
decision is, and the ed25519 signatures that tie a decision to its proposal and seal the final record.

A decision is accepted only through `ReviewService.decide` (hai_tools.workflow.service), which checks the
reviewer's token and signs the decision with the workflow key; the review and finalize nodes verify that
signature and the proposal hash, so a decision written into the graph state by any other path is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hai_tools.errors import HaiError
from hai_tools.manifest import atomic_write_text


class ReviewRefused(HaiError):
    """A decision was malformed, unauthorised, forged or for another proposal; nothing changed."""


class DecisionInput(BaseModel):
    """What a clinician submits."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["approve", "edit", "reject"]
    reviewer_id: str = Field(pattern=r"^[A-Za-z0-9._@-]{2,64}$")
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


class SignedDecision(DecisionInput):
    thread_id: str
    proposal_hash: str
    reviewer_role: str
    decided_at: str
    signature: str = ""

    def payload(self) -> bytes:
        return canonical(self.model_dump(exclude={"signature"}))


def canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def proposal_hash(proposal: dict[str, Any], evidence: list[dict[str, Any]], flags: list[str]) -> str:
    return "sha256:" + hashlib.sha256(canonical({"p": proposal, "e": evidence, "f": flags})).hexdigest()


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
        public.verify(base64.b64decode(signature), canonical(statement))
    except (InvalidSignature, ValueError):
        raise ReviewRefused("release statement does not verify against the review key") from None


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- keys ------------------------------------------------------------------------------------------------


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The workflow's signing key (PEM, mode 600), created on first use; its public half sits next to it."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise HaiError(f"{path} is not an ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pem)
    tmp.chmod(0o600)
    tmp.rename(path)
    path.with_suffix(".pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def sign(key: Ed25519PrivateKey, payload: bytes) -> str:
    return base64.b64encode(key.sign(payload)).decode()


def verify_signed_decision(
    raw: Any, public: Ed25519PublicKey, thread_id: str, expected_proposal_hash: str
) -> SignedDecision:
    """The decision as the review node accepts it: well-formed, signed by the workflow key, for this thread
    and this exact proposal."""
    if not raw:
        raise ReviewRefused("no clinician decision")
    try:
        decision = SignedDecision.model_validate(raw)
    except ValidationError as exc:
        raise ReviewRefused(f"malformed decision: {exc.errors()[0]['msg']}") from None
    try:
        public.verify(base64.b64decode(decision.signature), decision.payload())
    except (InvalidSignature, ValueError):
        raise ReviewRefused("decision is not signed by the review service: refused") from None
    if decision.thread_id != thread_id:
        raise ReviewRefused("decision is for another case")
    if decision.proposal_hash != expected_proposal_hash:
        raise ReviewRefused("decision is for another proposal than the one under review")
    return decision


# --- reviewers -------------------------------------------------------------------------------------------


class Reviewer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9._@-]{2,64}$")
    role: str = Field(min_length=1, max_length=64)
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    active: bool = True


class ReviewerRegistry:
    """A YAML file of reviewers and the sha256 of their tokens (tokens themselves are never stored)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Reviewer]:
        if not self.path.exists():
            return {}
        data = yaml.safe_load(self.path.read_text()) or {}
        return {r["id"]: Reviewer.model_validate(r) for r in data.get("reviewers", [])}

    def add(self, reviewer_id: str, role: str) -> str:
        """Register (or re-issue the token of) a reviewer; returns the new token, shown once."""
        token = secrets.token_urlsafe(24)
        reviewers = self.load()
        reviewers[reviewer_id] = Reviewer(
            id=reviewer_id, role=role, token_sha256=hashlib.sha256(token.encode()).hexdigest()
        )
        atomic_write_text(
            self.path,
            yaml.safe_dump({"reviewers": [r.model_dump() for r in reviewers.values()]}, sort_keys=False),
        )
        self.path.chmod(0o600)
        return token

    def authorise(self, reviewer_id: str, token: str | None) -> Reviewer:
        reviewer = self.load().get(reviewer_id)
        digest = hashlib.sha256((token or "").encode()).hexdigest()
        if reviewer is None or not reviewer.active or not token:
            raise ReviewRefused(f"reviewer '{reviewer_id}' is not authorised")
        if not hmac.compare_digest(digest, reviewer.token_sha256):
            raise ReviewRefused(f"reviewer '{reviewer_id}' is not authorised")
        return reviewer


# --- final records ---------------------------------------------------------------------------------------


class RecordStore:
    """Signed final records and the case index, in SQLite (one row per case thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS cases (thread_id TEXT PRIMARY KEY, case_id TEXT NOT NULL, "
                "status TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS records (thread_id TEXT PRIMARY KEY, record TEXT NOT NULL, "
                "signature TEXT NOT NULL, key_id TEXT NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS submitters (thread_id TEXT PRIMARY KEY, caller_id TEXT NOT NULL, "
                "role TEXT NOT NULL)"
            )

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def set_status(self, thread_id: str, case_id: str, status: str) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO cases VALUES (?, ?, ?, ?, ?) ON CONFLICT(thread_id) DO UPDATE SET "
                "status=excluded.status, updated_at=excluded.updated_at",
                (thread_id, case_id, status, now(), now()),
            )

    def set_submitter(self, thread_id: str, caller_id: str, role: str) -> None:
        """Who submitted a case through the server (its caller id and role, never a token)."""
        with self._db() as db:
            db.execute("INSERT INTO submitters VALUES (?, ?, ?)", (thread_id, caller_id, role))

    def submitter(self, thread_id: str) -> dict[str, str] | None:
        with self._db() as db:
            row = db.execute(
                "SELECT caller_id, role FROM submitters WHERE thread_id = ?", (thread_id,)
            ).fetchone()
        return {"id": row[0], "role": row[1]} if row else None

    def status(self, thread_id: str) -> str | None:
        """The case's status (`pending_review`, `finalized:<action>`), or None for an unknown thread."""
        with self._db() as db:
            row = db.execute("SELECT status FROM cases WHERE thread_id = ?", (thread_id,)).fetchone()
        return str(row[0]) if row else None

    def cases(self, status: str | None = None) -> list[dict[str, str]]:
        with self._db() as db:
            rows = db.execute(
                "SELECT thread_id, case_id, status, created_at, updated_at FROM cases "
                + ("WHERE status = ? " if status else "")
                + "ORDER BY created_at",
                (status,) if status else (),
            ).fetchall()
        keys = ("thread_id", "case_id", "status", "created_at", "updated_at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def put_record(self, thread_id: str, record: dict[str, Any], signature: str, kid: str) -> None:
        with self._db() as db:
            existing = db.execute("SELECT record FROM records WHERE thread_id = ?", (thread_id,)).fetchone()
            if existing is not None:
                if json.loads(existing[0]) != record:
                    raise ReviewRefused(f"case {thread_id} already has a different final record")
                return
            db.execute(
                "INSERT INTO records VALUES (?, ?, ?, ?)", (thread_id, json.dumps(record), signature, kid)
            )

    def get_record(self, thread_id: str, public: Ed25519PublicKey) -> dict[str, Any] | None:
        """The final record, after checking its signature; None while the case is not finalised."""
        with self._db() as db:
            row = db.execute(
                "SELECT record, signature FROM records WHERE thread_id = ?", (thread_id,)
            ).fetchone()
        if row is None:
            return None
        record = json.loads(row[0])
        try:
            public.verify(base64.b64decode(row[1]), canonical(record))
        except (InvalidSignature, ValueError):
            raise ReviewRefused(f"final record of {thread_id} does not verify: it was altered") from None
        return dict(record)
