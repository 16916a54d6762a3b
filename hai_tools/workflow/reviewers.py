"""The reviewer registry: who may decide, pinned by public key. Each reviewer holds an ed25519 key pair whose
private half stays with the reviewer (a passphrase-wrapped key file in the reviewer's own profile); the
registry holds only public keys, and every change to it (add, deactivate) is signed by the admin key, whose
public half the workflow config pins. So neither the workflow service nor whoever can edit its files can add a
reviewer, swap a reviewer's key, or sign a decision.

    python -m hai_tools.workflow admin-keygen --out keys/admin               # once, kept by the admin
    python -m hai_tools.workflow reviewer-keygen --id dr-lee                 # by the reviewer, in their profile
    python -m hai_tools.workflow reviewer-add --id dr-lee --role pediatrician \
        --public_key ~/.config/hai-tools/reviewers/dr-lee.pub --admin_key keys/admin.key
    python -m hai_tools.workflow reviewer-deactivate --id dr-lee --admin_key keys/admin.key

A deactivated key stays in the registry (inactive), so the decisions it signed before still verify.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hai_tools.errors import ConfigError, HaiError
from hai_tools.keys import SignatureInvalid, key_id, load_public, public_from_text, raw_public, sign, verify
from hai_tools.manifest import atomic_write_text, canonical_json

REVIEWER_ID = r"^[A-Za-z0-9._@-]{2,64}$"


class RegistryTampered(HaiError):
    """The reviewer registry does not verify against the pinned admin key."""


class ReviewerEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=REVIEWER_ID)
    role: str = Field(min_length=1, max_length=64)
    key_id: str
    public_key: str = Field(description="base64 of the 32 raw bytes of the ed25519 public key")
    active: bool = True
    added_at: str
    deactivated_at: str | None = None

    def public(self) -> Ed25519PublicKey:
        return public_from_text(self.public_key)


def profile_dir() -> Path:
    """Where a reviewer's own key lives: `$HAI_REVIEWER_HOME`, else ~/.config/hai-tools/reviewers."""
    env = os.environ.get("HAI_REVIEWER_HOME")
    return Path(env).expanduser() if env else Path.home() / ".config" / "hai-tools" / "reviewers"


class ReviewerRegistry:
    """A YAML file of reviewers' public keys, signed by the admin key pinned in `admin_public`."""

    def __init__(self, path: Path, admin_public: Path) -> None:
        self.path, self.admin_public = Path(path), Path(admin_public)

    def _admin(self) -> Ed25519PublicKey:
        if not self.admin_public.exists():
            raise ConfigError(
                f"no admin public key at {self.admin_public}: create the admin key pair with "
                "`python -m hai_tools.workflow admin-keygen --out PREFIX` and pin PREFIX.pub as admin_public_key"
            )
        return load_public(self.admin_public)

    def entries(self) -> list[ReviewerEntry]:
        """Every key ever registered, after checking the admin's signature over the whole file."""
        if not self.path.exists():
            return []
        try:
            data = yaml.safe_load(self.path.read_text()) or {}
        except yaml.YAMLError:
            raise RegistryTampered(f"reviewer registry {self.path} is not valid YAML") from None
        if not isinstance(data, dict):
            raise RegistryTampered(f"reviewer registry {self.path} is not a mapping")
        admin = self._admin()
        listed = data.get("reviewers") or []
        body = {"admin_key_id": data.get("admin_key_id"), "reviewers": listed}
        if body["admin_key_id"] != key_id(admin):
            raise RegistryTampered(
                f"reviewer registry {self.path} is signed by another admin key than the pinned one"
            )
        try:
            verify(admin, str(data.get("signature", "")), canonical_json(body), "reviewer registry")
        except SignatureInvalid:
            raise RegistryTampered(
                f"reviewer registry {self.path} was changed without the admin key (signature does not verify)"
            ) from None
        try:
            return [ReviewerEntry.model_validate(raw) for raw in listed]
        except ValidationError as exc:
            raise RegistryTampered(f"reviewer registry {self.path}: {exc.errors()[0]['msg']}") from None

    def _save(self, entries: list[ReviewerEntry], admin_key: Ed25519PrivateKey) -> None:
        if key_id(admin_key.public_key()) != key_id(self._admin()):
            raise ConfigError("that admin key is not the one the workflow config pins (admin_public_key)")
        body: dict[str, Any] = {
            "admin_key_id": key_id(admin_key.public_key()),
            "reviewers": [e.model_dump() for e in entries],
        }
        body["signature"] = sign(admin_key, canonical_json(body))
        atomic_write_text(self.path, yaml.safe_dump(body, sort_keys=False))

    def add(
        self, reviewer_id: str, role: str, public_key: str, admin_key: Ed25519PrivateKey
    ) -> ReviewerEntry:
        """Register a reviewer's public key (its earlier keys become inactive)."""
        public = public_from_text(public_key)
        now = _now()
        entries = [
            e.model_copy(update={"active": False, "deactivated_at": e.deactivated_at or now})
            if e.id == reviewer_id
            else e
            for e in self.entries()
        ]
        if any(e.key_id == key_id(public) for e in entries):
            raise ConfigError(f"key {key_id(public)} is already registered: each reviewer key is used once")
        try:
            entry = ReviewerEntry(
                id=reviewer_id, role=role, key_id=key_id(public), public_key=raw_public(public), added_at=now
            )
        except ValidationError as exc:
            raise ConfigError(f"reviewer {reviewer_id}: {exc.errors()[0]['msg']}") from None
        self._save([*entries, entry], admin_key)
        return entry

    def deactivate(self, reviewer_id: str, admin_key: Ed25519PrivateKey) -> None:
        entries = self.entries()
        if not any(e.id == reviewer_id and e.active for e in entries):
            raise ConfigError(f"no active reviewer '{reviewer_id}' in {self.path}")
        now = _now()
        self._save(
            [
                e.model_copy(update={"active": False, "deactivated_at": now})
                if e.id == reviewer_id and e.active
                else e
                for e in entries
            ],
            admin_key,
        )

    def active(self, reviewer_id: str) -> ReviewerEntry | None:
        return next((e for e in self.entries() if e.id == reviewer_id and e.active), None)

    def key(self, reviewer_id: str, reviewer_key_id: str, require_active: bool) -> ReviewerEntry:
        """The registered key `reviewer_key_id` of `reviewer_id`; active unless verifying the past."""
        for entry in self.entries():
            if entry.id == reviewer_id and entry.key_id == reviewer_key_id:
                if require_active and not entry.active:
                    raise HaiError(f"reviewer '{reviewer_id}' is not authorised (key deactivated)")
                return entry
        raise HaiError(f"reviewer '{reviewer_id}' has no registered key {reviewer_key_id}")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
