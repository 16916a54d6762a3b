"""Embedded SQLite store of the registry: one file, one table, WAL journal for concurrent readers."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from hai_tools.errors import RegistryError
from hai_tools.registry.base import ArtifactStore
from hai_tools.settings import registry_url

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    document TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (kind, name, version)
)
"""


class SQLiteArtifactStore(ArtifactStore):
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def put(self, kind: str, name: str, version: str, document: str) -> None:
        created = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            with self._connect() as conn:
                conn.execute(
                    "INSERT INTO records (kind, name, version, document, created_at) VALUES (?, ?, ?, ?, ?)",
                    (kind, name, version, document, created),
                )
        except sqlite3.IntegrityError:
            raise RegistryError(f"{kind} {name}@{version} is already registered") from None

    def get(self, kind: str, name: str, version: str) -> str | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT document FROM records WHERE kind = ? AND name = ? AND version = ?",
                (kind, name, version),
            ).fetchone()
        return row[0] if row else None

    def records(self, kind: str) -> list[tuple[str, str, str]]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT name, version, document FROM records WHERE kind = ? ORDER BY created_at, name, version",
                (kind,),
            ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]


def open_registry(url: str | None = None) -> ArtifactStore:
    """Open the registry named by `url` (default `$HAI_REGISTRY`, else `$HAI_HOME/registry.sqlite`)."""
    url = url or registry_url()
    if url.startswith("sqlite:///"):
        return SQLiteArtifactStore(Path(url.removeprefix("sqlite:///")))
    if "://" not in url:
        return SQLiteArtifactStore(Path(url))
    raise RegistryError(f"registry URL scheme of '{url.split('://')[0]}' has no store here (sqlite:/// only)")
