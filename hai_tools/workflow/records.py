"""The record store (SQLite): the case index, each case's data encrypted at rest, and the review chain.

- `cases`: thread id, status, times; no case id and no patient text in the clear.
- The database is a SQLite file, or PostgreSQL when several server replicas share the store (record_db.py).
- `case_keys` / `case_data`: each case's data (its case id, the final record with the clinician's and the model's
  text, its salt) encrypted with the case's own AES-256-GCM key, itself wrapped by the data key. `erase` deletes
  the case's key and data and vacuums the file: the text is gone even from copies that kept the ciphertext.
- `chain`: one entry per final record, append-only: the reviewer's signed statement (keyed digests only), a keyed
  digest of the record, the model identity, the service's signature, and the hash of the previous entry. An
  entry holds no patient data, so erasing a case leaves the chain verifying; `verify_review_chain` detects a
  deleted, reordered or edited entry, and a finalised case with no entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hai_tools.at_rest import DecryptionFailed, decrypt, encrypt
from hai_tools.errors import HaiError
from hai_tools.keys import SignatureInvalid, key_id, sign, verify
from hai_tools.manifest import canonical_json
from hai_tools.workflow.record_db import open_record_db
from hai_tools.workflow.review import (
    DecisionStatement,
    ReviewRefused,
    keyed_digest,
    now,
    verify_signed_decision,
)
from hai_tools.workflow.reviewers import ReviewerRegistry

GENESIS = "genesis"


class ChainBroken(HaiError):
    """The review chain was edited, reordered or cut, or a record does not match its entry."""


def entry_hash(entry: dict[str, Any]) -> str:
    return (
        "sha256:"
        + hashlib.sha256(canonical_json({k: v for k, v in entry.items() if k != "hash"})).hexdigest()
    )


def matches_entry(stored: dict[str, Any], entry: dict[str, Any]) -> bool:
    """Whether a stored `{record, salt}` is the record whose keyed digest the chain entry holds."""
    return keyed_digest(stored["salt"], stored["record"]) == entry["record_digest"]


def _signed_part(entry: dict[str, Any]) -> bytes:
    return canonical_json({k: v for k, v in entry.items() if k not in ("hash", "service_signature")})


class RecordStore:
    """`location`: a SQLite file, or a postgresql:// DSN (replicas sharing one store; hai_tools.workflow.record_db)."""

    def __init__(self, location: Path | str, data_key: bytes) -> None:
        self.db = open_record_db(location)
        self.path = location
        self._key = data_key
        blob, serial = self.db.blob, self.db.serial_column
        with self._db() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS cases (thread_id TEXT PRIMARY KEY, status TEXT NOT NULL, "
                f"created_at TEXT NOT NULL, updated_at TEXT NOT NULL{serial})"
            )
            db.execute(
                f"CREATE TABLE IF NOT EXISTS case_keys (thread_id TEXT PRIMARY KEY, wrapped {blob} NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS case_data (thread_id TEXT NOT NULL, name TEXT NOT NULL, "
                f"blob {blob} NOT NULL, PRIMARY KEY (thread_id, name))"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS submitters (thread_id TEXT PRIMARY KEY, caller_id TEXT NOT NULL, "
                "role TEXT NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS chain (seq INTEGER PRIMARY KEY, thread_id TEXT NOT NULL UNIQUE, "
                "entry TEXT NOT NULL, hash TEXT NOT NULL)"
            )

    def _db(self) -> Any:
        return self.db.connect()

    # --- per-case encrypted data -------------------------------------------------------------------------

    def _case_key(self, db: Any, thread_id: str, create: bool) -> bytes | None:
        row = db.execute("SELECT wrapped FROM case_keys WHERE thread_id = ?", (thread_id,)).fetchone()
        if row is not None:
            return decrypt(self._key, row[0], f"key:{thread_id}".encode(), f"the key of case {thread_id}")
        if not create:
            return None
        key = os.urandom(32)
        db.execute(
            "INSERT INTO case_keys (thread_id, wrapped) VALUES (?, ?)",
            (thread_id, encrypt(self._key, key, f"key:{thread_id}".encode())),
        )
        return key

    def _put(self, db: Any, thread_id: str, name: str, value: Any) -> None:
        key = self._case_key(db, thread_id, create=True)
        assert key is not None
        blob = encrypt(key, canonical_json(value), f"{thread_id}:{name}".encode())
        db.execute(
            "INSERT INTO case_data (thread_id, name, blob) VALUES (?, ?, ?) "
            "ON CONFLICT (thread_id, name) DO UPDATE SET blob = excluded.blob",
            (thread_id, name, blob),
        )

    def _get(self, db: Any, thread_id: str, name: str) -> Any | None:
        key = self._case_key(db, thread_id, create=False)
        row = db.execute(
            "SELECT blob FROM case_data WHERE thread_id = ? AND name = ?", (thread_id, name)
        ).fetchone()
        if key is None or row is None:
            return None
        try:
            return json.loads(
                decrypt(key, row[0], f"{thread_id}:{name}".encode(), f"{name} of case {thread_id}")
            )
        except DecryptionFailed:
            raise ReviewRefused(f"{name} of case {thread_id} was altered (it does not decrypt)") from None

    def put_case(self, thread_id: str, case: dict[str, Any]) -> None:
        with self._db() as db:
            self._put(db, thread_id, "case", case)

    def case(self, thread_id: str) -> dict[str, Any] | None:
        with self._db() as db:
            return self._get(db, thread_id, "case")  # type: ignore[no-any-return]

    def stored_record(self, thread_id: str) -> dict[str, Any] | None:
        """The decrypted `{record, salt}` of a finalised case, None when there is none (or it was erased)."""
        with self._db() as db:
            return self._get(db, thread_id, "record")  # type: ignore[no-any-return]

    # --- index --------------------------------------------------------------------------------------------

    def set_status(self, thread_id: str, status: str) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO cases (thread_id, status, created_at, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (thread_id) DO UPDATE SET "
                "status=excluded.status, updated_at=excluded.updated_at",
                (thread_id, status, now(), now()),
            )

    def set_submitter(self, thread_id: str, caller_id: str, role: str) -> None:
        """Who submitted a case through the server (its caller id and role, never a token)."""
        with self._db() as db:
            db.execute(
                "INSERT INTO submitters (thread_id, caller_id, role) VALUES (?, ?, ?)",
                (thread_id, caller_id, role),
            )

    def submitter(self, thread_id: str) -> dict[str, str] | None:
        with self._db() as db:
            row = db.execute(
                "SELECT caller_id, role FROM submitters WHERE thread_id = ?", (thread_id,)
            ).fetchone()
        return {"id": row[0], "role": row[1]} if row else None

    def status(self, thread_id: str) -> str | None:
        """The case's status (`pending_review`, `finalized:<action>`, `erased`), or None for an unknown thread."""
        with self._db() as db:
            row = db.execute("SELECT status FROM cases WHERE thread_id = ?", (thread_id,)).fetchone()
        return str(row[0]) if row else None

    def cases(self, status: str | None = None) -> list[dict[str, str]]:
        """Cases (with their case ids, decrypted) in creation order."""
        with self._db() as db:
            rows = db.execute(
                "SELECT thread_id, status, created_at, updated_at FROM cases "
                + ("WHERE status = ? " if status else "")
                + f"ORDER BY created_at, {self.db.insertion_order}",
                (status,) if status else (),
            ).fetchall()
            out = []
            for thread_id, state, created, updated in rows:
                case = self._get(db, thread_id, "case") or {}
                out.append(
                    {
                        "thread_id": thread_id,
                        "case_id": str(case.get("case_id", "(erased)")),
                        "status": state,
                        "created_at": created,
                        "updated_at": updated,
                    }
                )
        return out

    # --- final records and the chain ----------------------------------------------------------------------

    def put_record(
        self,
        thread_id: str,
        record: dict[str, Any],
        salt: str,
        decision: dict[str, Any],
        key: Ed25519PrivateKey,
    ) -> dict[str, Any]:
        """Store the final record (encrypted) and append its chain entry, in one transaction; a second call for
        the same case with the same record is a no-op, with another record it is refused."""
        digest = keyed_digest(salt, record)
        with self._db() as db:
            self.db.write_lock(db)
            existing = db.execute("SELECT entry FROM chain WHERE thread_id = ?", (thread_id,)).fetchone()
            if existing is not None:
                if json.loads(existing[0])["record_digest"] != digest:
                    raise ReviewRefused(f"case {thread_id} already has a different final record")
                return dict(json.loads(existing[0]))
            last = db.execute("SELECT seq, hash FROM chain ORDER BY seq DESC LIMIT 1").fetchone()
            entry: dict[str, Any] = {
                "seq": (last[0] + 1) if last else 1,
                "prev": last[1] if last else GENESIS,
                "thread_id": thread_id,
                "statement": decision["statement"],
                "reviewer_signature": decision["signature"],
                "record_digest": digest,
                "model": record.get("model"),
                "submitted_by": record.get("submitted_by"),
                "service_key_id": key_id(key.public_key()),
                "sealed_at": now(),
            }
            entry["service_signature"] = sign(key, _signed_part(entry))
            entry["hash"] = entry_hash(entry)
            db.execute(
                "INSERT INTO chain (seq, thread_id, entry, hash) VALUES (?, ?, ?, ?)",
                (entry["seq"], thread_id, json.dumps(entry, sort_keys=True), entry["hash"]),
            )
            self._put(db, thread_id, "record", {"record": record, "salt": salt})
        return entry

    def chain(self) -> list[dict[str, Any]]:
        with self._db() as db:
            rows = db.execute("SELECT entry FROM chain ORDER BY seq").fetchall()
        return [json.loads(row[0]) for row in rows]

    def get_record(self, thread_id: str, public: Ed25519PublicKey) -> dict[str, Any] | None:
        """The final record, after checking it against its chain entry and the entry's seal; None while the case
        awaits review."""
        with self._db() as db:
            row = db.execute("SELECT entry FROM chain WHERE thread_id = ?", (thread_id,)).fetchone()
        stored = self.stored_record(thread_id)
        if row is None and stored is None:
            return None
        if stored is None and self.status(thread_id) == "erased":
            raise ReviewRefused(f"case {thread_id} was erased: its record is gone (its chain entry remains)")
        if row is None or stored is None:
            raise ReviewRefused(f"final record of {thread_id} was altered: record and review chain disagree")
        entry = json.loads(row[0])
        try:
            verify(public, entry["service_signature"], _signed_part(entry), "chain entry")
        except SignatureInvalid:
            raise ReviewRefused(
                f"final record of {thread_id} was altered: its chain entry is not sealed"
            ) from None
        if not matches_entry(stored, entry):
            raise ReviewRefused(f"final record of {thread_id} was altered: it differs from its chain entry")
        return dict(stored["record"])

    def erase(self, thread_id: str) -> None:
        """Forget a case's patient data: its key and data rows go (crypto-shredding), its index row says
        `erased`, the file is vacuumed. Its chain entry stays: it holds digests only, and still verifies."""
        with self._db() as db:
            self.db.write_lock(db)
            db.execute("DELETE FROM case_data WHERE thread_id = ?", (thread_id,))
            db.execute("DELETE FROM case_keys WHERE thread_id = ?", (thread_id,))
            db.execute(
                "UPDATE cases SET status = 'erased', updated_at = ? WHERE thread_id = ?", (now(), thread_id)
            )
        self.db.purge()


def verify_review_chain(
    entries: Iterable[dict[str, Any]],
    reviewers: ReviewerRegistry,
    service_public: Ed25519PublicKey,
    store: RecordStore | None = None,
    expect_head: str | None = None,
) -> tuple[int, str, int]:
    """Walk the review chain: contiguous sequence, each entry chained to the one before, unedited (hash), sealed
    by the service key, and its decision signed by the registered key of its reviewer (inactive keys verify
    the past). With the store, each case that still has its data must match its entry's digest, and each
    finalised case must have an entry. Returns (entries, head hash, cases whose data was erased)."""
    previous, seq, erased = GENESIS, 0, 0
    seen: set[str] = set()
    for entry in entries:
        where = f"review chain entry {entry.get('seq')}"
        if entry.get("seq") != seq + 1:
            raise ChainBroken(
                f"review chain jumps from entry {seq} to {entry.get('seq')} (entries deleted or reordered)"
            )
        if entry.get("prev") != previous:
            raise ChainBroken(f"{where} does not chain to the entry before it")
        if entry_hash(entry) != entry.get("hash"):
            raise ChainBroken(f"{where} was edited (hash mismatch)")
        try:
            verify(service_public, str(entry.get("service_signature")), _signed_part(entry), where)
        except SignatureInvalid:
            raise ChainBroken(f"{where} is not sealed by the review service's key") from None
        statement = DecisionStatement.model_validate(entry["statement"])
        try:
            reviewer = reviewers.key(statement.reviewer_id, statement.reviewer_key_id, require_active=False)
            verify(reviewer.public(), entry["reviewer_signature"], statement.payload(), where)
        except (HaiError, SignatureInvalid) as exc:
            raise ChainBroken(
                f"{where}: the decision does not verify against the reviewer registry ({exc})"
            ) from None
        if statement.thread_id != entry["thread_id"]:
            raise ChainBroken(f"{where}: the signed decision is for another case")
        if store is not None:
            stored = store.stored_record(entry["thread_id"])
            if stored is None:
                erased += 1
            else:
                if not matches_entry(stored, entry):
                    raise ChainBroken(f"{where}: the stored record of its case differs from it")
                verify_signed_decision(
                    stored["record"]["signed_decision"],
                    reviewers,
                    entry["thread_id"],
                    statement.proposal_hash,
                    stored["salt"],
                    require_active=False,
                )
        seen.add(entry["thread_id"])
        previous, seq = entry["hash"], entry["seq"]
        if expect_head and f"{seq}:{previous}" == expect_head:
            expect_head = None
    if expect_head:
        raise ChainBroken(
            f"review chain ends at entry {seq}: entries after it were cut (expected {expect_head})"
        )
    if store is not None:
        for case in store.cases():
            if case["status"].startswith("finalized") and case["thread_id"] not in seen:
                raise ChainBroken(
                    f"case {case['thread_id']} is finalised but has no entry in the review chain"
                )
    return seq, previous, erased
