"""The record store's database: a SQLite file (one service) or PostgreSQL (server replicas sharing it).

Both speak the record store's SQL (`?` placeholders, `ON CONFLICT` upserts); what differs is kept here: the
binary column type, insertion order, the write lock a chain append takes, and how deleted rows are purged. The
write lock serialises chain appends across every process: `BEGIN IMMEDIATE` on SQLite; on PostgreSQL a
transaction-scoped advisory lock, so two replicas appending at once still form one chain (and the chain's
`seq` primary key refuses a fork even if a writer skipped the lock).
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hai_tools.errors import ConfigError

CHAIN_LOCK = zlib.crc32(b"hai-tools review chain")  # the advisory lock id every writer takes


def is_postgres(spec: str | Path) -> bool:
    return str(spec).startswith(("postgres://", "postgresql://"))


class SqliteRecordDb:
    blob = "BLOB"
    insertion_order = "rowid"
    serial_column = ""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def connect(self) -> Iterator[Any]:
        """Autocommit, with `write_lock` opening a transaction; commits (or rolls back) on exit."""
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA secure_delete=ON")
            yield db
            if db.in_transaction:
                db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    @staticmethod
    def write_lock(db: Any) -> None:
        db.execute("BEGIN IMMEDIATE")

    def purge(self) -> None:
        """Rewrite the file without the freed pages (with secure_delete, erased data leaves no trace)."""
        with self.connect() as db:
            db.execute("VACUUM")

    def describe(self) -> str:
        return str(self.path)


class _PgConnection:
    """psycopg in autocommit mode, answering the record store's `?`-placeholder SQL."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.conn.execute(sql.replace("?", "%s"), params)


class PostgresRecordDb:
    blob = "BYTEA"
    insertion_order = "n"
    serial_column = ", n BIGSERIAL"

    def __init__(self, dsn: str) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise ConfigError(
                "a PostgreSQL record store needs psycopg (pip install 'hai-tools[postgres]')"
            ) from None
        self.dsn = dsn

    @contextmanager
    def connect(self) -> Iterator[Any]:
        import psycopg

        try:
            conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise ConfigError(
                f"record store: PostgreSQL at {self.describe()} is not reachable ({type(exc).__name__})"
            ) from None
        db = _PgConnection(conn)
        try:
            yield db
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.execute("COMMIT")
        except BaseException:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    @staticmethod
    def write_lock(db: Any) -> None:
        db.execute("BEGIN")
        db.execute("SELECT pg_advisory_xact_lock(?)", (CHAIN_LOCK,))

    def purge(self) -> None:
        """Reclaim the deleted rows' space (PostgreSQL keeps dead tuples until a vacuum)."""
        with self.connect() as db:
            db.execute("VACUUM (FULL) case_data")
            db.execute("VACUUM (FULL) case_keys")

    def describe(self) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(self.dsn)
        return f"{parts.hostname}:{parts.port or 5432}{parts.path}"


def open_record_db(spec: str | Path) -> SqliteRecordDb | PostgresRecordDb:
    return PostgresRecordDb(str(spec)) if is_postgres(spec) else SqliteRecordDb(Path(spec))
