"""Reviewer login for the review web page: who a browser session belongs to, its CSRF token, and the lock-out.

A reviewer logs in with the credential the reviewer registry pins, their own ed25519 key, in one of two ways:

- in the browser (JavaScript on): the page's script signs a one-time login challenge with the reviewer's key,
  held in the browser as a non-extractable WebCrypto key (created on the enrol page; the admin registers its
  public half); the private key never leaves the browser;
- without JavaScript: the reviewer's passphrase unwraps the reviewer's wrapped key file held by the server
  (`web.keys_dir/ID.key`, written there by `reviewer-keygen`); the key is used for this one check and dropped.

Either way the key must be the reviewer's *active* registered key: a deactivated reviewer, a key the admin did not
register, a wrong passphrase or a forged signature all read as the same refusal to the browser (the server log
says which). Repeated failures for one reviewer id lock it out for a while. Sessions live in this process's
memory (one review web process; restarting it logs everyone out): random ids in an HttpOnly, SameSite=Strict
cookie, a fresh id at login (no fixation), an idle timeout, and a CSRF token per session that every form and
script request must carry.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from hai_tools.errors import ConfigError, HaiError
from hai_tools.keys import SignatureInvalid, key_id, load_private, verify
from hai_tools.workflow.reviewers import REVIEWER_ID, RegistryTampered, ReviewerEntry, ReviewerRegistry

log = logging.getLogger("hai_tools.workflow.web")

LOGIN_REFUSED = "Login refused: unknown reviewer, wrong passphrase or key, or the reviewer is not active."


class LoginRefused(HaiError):
    """A login that did not prove an active registered reviewer's key; the message is the same for every cause."""


class LockedOut(HaiError):
    """Too many failed logins for one reviewer id: refused until the lock-out ends, even with the right key."""


def login_challenge(reviewer_id: str, nonce: str) -> bytes:
    """The exact bytes a browser key signs to log in (the page's script builds the same string)."""
    return f"hai-tools review login\n{reviewer_id}\n{nonce}".encode()


@dataclass
class Session:
    id: str
    csrf: str
    nonce: str
    reviewer_id: str | None = None
    reviewer_key_id: str | None = None
    signing: str | None = None  # "browser" or "server-key": how this reviewer proved their key
    last_seen: float = field(default_factory=time.monotonic)


class SessionStore:
    """Browser sessions in memory, with an idle timeout."""

    def __init__(self, idle_seconds: float) -> None:
        self.idle_seconds = idle_seconds
        self._sessions: dict[str, Session] = {}

    def new(self) -> Session:
        session = Session(id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32), nonce=_nonce())
        self._sessions[session.id] = session
        return session

    @staticmethod
    def new_nonce() -> str:
        return _nonce()

    def get(self, session_id: str | None) -> Session | None:
        session = self._sessions.get(session_id or "")
        now = time.monotonic()
        if session is None or now - session.last_seen > self.idle_seconds:
            self._sessions.pop(session_id or "", None)
            return None
        session.last_seen = now
        return session

    def drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def login(self, old: Session, entry: ReviewerEntry, signing: str) -> Session:
        """A new session id for the logged-in reviewer (the pre-login id is dropped)."""
        self.drop(old.id)
        session = self.new()
        session.reviewer_id, session.reviewer_key_id, session.signing = entry.id, entry.key_id, signing
        return session


def csrf_ok(session: Session, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(session.csrf.encode(), str(token).encode())


class LoginGuard:
    """Counts failed logins per reviewer id; `max_failures` within `window` seconds lock the id for `lock` s."""

    def __init__(self, max_failures: int, window: float, lock: float) -> None:
        self.max_failures, self.window, self.lock = max_failures, window, lock
        self._failures: dict[str, list[float]] = {}
        self._locked_until: dict[str, float] = {}

    def check(self, reviewer_id: str) -> None:
        until = self._locked_until.get(reviewer_id, 0.0)
        if time.monotonic() < until:
            minutes = max(1, round((until - time.monotonic()) / 60))
            raise LockedOut(
                f"Too many failed logins for this reviewer: locked for about {minutes} more minute(s)."
            )

    def failed(self, reviewer_id: str) -> None:
        now = time.monotonic()
        recent = [t for t in self._failures.get(reviewer_id, []) if now - t < self.window] + [now]
        self._failures[reviewer_id] = recent
        if len(recent) >= self.max_failures:
            self._locked_until[reviewer_id] = now + self.lock
            self._failures[reviewer_id] = []
            log.warning("review web: reviewer id locked out after %d failed logins", len(recent))

    def succeeded(self, reviewer_id: str) -> None:
        self._failures.pop(reviewer_id, None)


class Credentials:
    """Checks a login against the reviewer registry: a signature over the session's challenge by the active
    registered key, or the passphrase of the server-held wrapped key whose public half is that key."""

    def __init__(self, registry: ReviewerRegistry, keys_dir: Path) -> None:
        self.registry, self.keys_dir = registry, keys_dir

    def server_key_path(self, reviewer_id: str) -> Path | None:
        """The reviewer's wrapped key held by the server, if any (ids are checked before they touch a path)."""
        import re

        if not re.fullmatch(REVIEWER_ID, reviewer_id):
            return None
        path = self.keys_dir / f"{reviewer_id}.key"
        return path if path.is_file() else None

    def _active(self, reviewer_id: str) -> ReviewerEntry:
        try:
            entry = self.registry.active(reviewer_id)
        except RegistryTampered as exc:
            log.error("review web: login refused, %s", exc)
            raise LoginRefused(LOGIN_REFUSED) from None
        if entry is None:
            log.warning("review web: login refused: no active registered key for that reviewer id")
            raise LoginRefused(LOGIN_REFUSED)
        return entry

    def by_signature(self, reviewer_id: str, nonce: str, signature: str) -> ReviewerEntry:
        entry = self._active(reviewer_id)
        try:
            verify(entry.public(), signature, login_challenge(reviewer_id, nonce), "login")
        except SignatureInvalid:
            log.warning("review web: login refused: the challenge signature is not by the registered key")
            raise LoginRefused(LOGIN_REFUSED) from None
        return entry

    def by_passphrase(self, reviewer_id: str, passphrase: str) -> ReviewerEntry:
        entry = self._active(reviewer_id)
        path = self.server_key_path(reviewer_id)
        if path is None or not passphrase:
            log.warning("review web: login refused: no server-held key for that reviewer, or no passphrase")
            raise LoginRefused(LOGIN_REFUSED)
        try:
            key = load_private(path, passphrase)
        except ConfigError:
            log.warning("review web: login refused: the passphrase does not unwrap the reviewer's key")
            raise LoginRefused(LOGIN_REFUSED) from None
        if key_id(key.public_key()) != entry.key_id:
            log.warning("review web: login refused: the server-held key is not the reviewer's registered key")
            raise LoginRefused(LOGIN_REFUSED)
        return entry


def _nonce() -> str:
    return secrets.token_urlsafe(24)
