"""Who calls the server: each bearer token (and the stdio launch) is a caller with an id and a role.

    python -m hai_tools.callers add ward-agent --role clinician     # prints the token once
    python -m hai_tools.callers add discharge-bot --role pipeline
    python -m hai_tools.callers list
    python -m hai_tools.callers revoke discharge-bot                # refused on its next call

Roles: `clinician` (an interactive, clinician-facing agent or tool: receives proposals, flagged for review),
`pipeline` (automated or patient-facing systems: never receives model text, only what a clinician approved or
edited), `admin`. The registry is a YAML file of token sha256s (`$HAI_HOME/callers.yaml` by default, or
`--registry`/`callers:` in the server config); it is re-read when it changes, so a revocation holds at once.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hai_tools.config_file import first_error
from hai_tools.errors import ConfigError
from hai_tools.manifest import atomic_write_text
from hai_tools.settings import hai_home

Role = Literal["clinician", "pipeline", "admin"]
ROLES: tuple[Role, ...] = ("clinician", "pipeline", "admin")
CALLER_ID = r"^[A-Za-z0-9._@-]{2,64}$"


class Caller(BaseModel):
    """An authenticated caller as the audit log and review records name it (never its token)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=CALLER_ID)
    role: Role = "pipeline"
    token_id: str | None = Field(None, description="names the token that authenticated (never the token)")


class CallerEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=CALLER_ID)
    role: Role
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    active: bool = True
    created_at: str = ""
    revoked_at: str | None = None


def token_digest(token: str) -> str:
    """sha256 of a token (tokens are 32 random bytes, so a plain hash is enough to store them)."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_id(digest: str) -> str:
    """A short public name for a token, from its stored digest: what audit entries and records show."""
    return "tok_" + hashlib.sha256(f"token-id:{digest}".encode()).hexdigest()[:12]


def default_registry_path() -> Path:
    return hai_home() / "callers.yaml"


class CallerRegistry:
    """The callers file: load (validated, one-line error naming the entry), add, revoke, resolve a token."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_registry_path()
        self._cache: tuple[tuple[int, int, int], dict[str, CallerEntry]] | None = None

    def load(self) -> dict[str, CallerEntry]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if self._cache is not None and self._cache[0] == stamp:
            return self._cache[1]
        try:
            data = yaml.safe_load(self.path.read_text()) or {}
        except yaml.YAMLError:
            raise ConfigError(f"callers registry {self.path} is not valid YAML") from None
        if not isinstance(data, dict) or not isinstance(data.get("callers", []), list):
            raise ConfigError(f"callers registry {self.path}: expected a mapping with a 'callers' list")
        entries: dict[str, CallerEntry] = {}
        for i, raw in enumerate(data.get("callers", [])):
            try:
                entry = CallerEntry.model_validate(raw)
            except ValidationError as exc:
                name = raw.get("id") if isinstance(raw, dict) else None
                raise ConfigError(
                    f"callers registry {self.path}: caller {name or f'#{i + 1}'}: {first_error(exc)}"
                ) from None
            entries[entry.id] = entry
        self._cache = (stamp, entries)
        return entries

    def _save(self, entries: dict[str, CallerEntry]) -> None:
        text = yaml.safe_dump({"callers": [e.model_dump() for e in entries.values()]}, sort_keys=False)
        atomic_write_text(self.path, text)
        self.path.chmod(0o600)

    def add(self, caller_id: str, role: str) -> str:
        """Register a caller (or re-issue its token, which revokes the old one); returns the token, shown once."""
        entries = dict(self.load())
        token = secrets.token_urlsafe(32)
        try:
            entries[caller_id] = CallerEntry(
                id=caller_id,
                role=role,  # type: ignore[arg-type]
                token_sha256=token_digest(token),
                created_at=_now(),
            )
        except ValidationError as exc:
            raise ConfigError(f"caller {caller_id}: {first_error(exc)}") from None
        self._save(entries)
        return token

    def revoke(self, caller_id: str) -> None:
        entries = dict(self.load())
        if caller_id not in entries:
            raise ConfigError(f"no caller '{caller_id}' in {self.path}")
        entries[caller_id] = entries[caller_id].model_copy(update={"active": False, "revoked_at": _now()})
        self._save(entries)

    def resolve(self, token: str | None) -> Caller | None:
        """The active caller holding `token`, or None (unknown, empty or revoked)."""
        if not token:
            return None
        digest = token_digest(token)
        for entry in self.load().values():
            if hmac.compare_digest(digest, entry.token_sha256):
                return (
                    Caller(id=entry.id, role=entry.role, token_id=token_id(digest)) if entry.active else None
                )
        return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


_CURRENT: ContextVar[Caller | None] = ContextVar("hai_caller", default=None)


def current_caller() -> Caller | None:
    """The caller of the request being served (set by the server's boundary), or None outside a request."""
    return _CURRENT.get()


@contextmanager
def acting_as(caller: Caller | None) -> Iterator[None]:
    """Serve everything inside as `caller` (the audit log and review records read it)."""
    token = _CURRENT.set(caller)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m hai_tools.callers", description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, help="callers YAML (default: $HAI_HOME/callers.yaml)")
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="register a caller or re-issue its token; prints the token once")
    add.add_argument("caller_id")
    add.add_argument("--role", required=True, choices=ROLES)
    sub.add_parser("list", help="callers, roles and whether active (never tokens)")
    sub.add_parser("revoke", help="revoke a caller's token at once").add_argument("caller_id")
    args = parser.parse_args(argv)
    registry = CallerRegistry(args.registry)
    if args.action == "add":
        token = registry.add(args.caller_id, args.role)
        print(
            f"caller {args.caller_id} ({args.role}) registered. Token (shown once, keep it secret):\n{token}"
        )
    elif args.action == "revoke":
        registry.revoke(args.caller_id)
        print(f"caller {args.caller_id} revoked")
    else:
        entries = registry.load()
        for entry in entries.values():
            state = "active" if entry.active else f"revoked {entry.revoked_at}"
            print(f"{entry.id}\t{entry.role}\t{state}\t{entry.created_at}")
        if not entries:
            print(f"no callers in {registry.path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from hai_tools.cli import run_cli

    return run_cli(_main, list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
