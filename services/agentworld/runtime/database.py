"""In-memory SQLite state: session connections, database images and the canonical state hash.

A session's whole state is one in-memory SQLite database. Reset, snapshot, restore and fork copy
database images (`serialize`/`deserialize`), which costs microseconds for AWM-sized databases.
"""

from __future__ import annotations

import hashlib
import sqlite3

CALL_SAVEPOINT = "agentworld_call"


class SessionConnection(sqlite3.Connection):
    """A connection the environment's SQLAlchemy engine borrows for one session.

    `close()` is a no-op so the pool's release keeps the in-memory database alive. While a tool call
    runs (`begin_call`), the app's commit and rollback map onto a savepoint inside one outer
    transaction, so the runtime can still roll back everything the call wrote if it fails.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.in_call = False

    def close(self) -> None:  # the engine's pool "closes" connections it no longer needs
        pass

    def really_close(self) -> None:
        super().close()

    def commit(self) -> None:
        if self.in_call:
            self.execute(f"RELEASE {CALL_SAVEPOINT}")
            self.execute(f"SAVEPOINT {CALL_SAVEPOINT}")
        else:
            super().commit()

    def rollback(self) -> None:
        if self.in_call:
            self.execute(f"ROLLBACK TO {CALL_SAVEPOINT}")
        else:
            super().rollback()

    def begin_call(self) -> None:
        if self.in_transaction:  # left over from a call that was aborted mid-way
            super().rollback()
        self.execute("BEGIN")
        self.execute(f"SAVEPOINT {CALL_SAVEPOINT}")
        self.in_call = True

    def end_call(self, *, keep: bool) -> None:
        """Commit (keep=True) or undo everything the call wrote, including what the app 'committed'."""
        self.in_call = False
        if not self.in_transaction:
            return
        if keep:
            self.execute("COMMIT")
        else:
            super().rollback()


def open_connection(image: bytes | None = None, *, foreign_keys: bool = True) -> SessionConnection:
    """A fresh in-memory database, optionally loaded from a database image."""
    conn = sqlite3.connect(":memory:", factory=SessionConnection, check_same_thread=False, isolation_level=None)
    if image is not None:
        conn.deserialize(image)
    conn.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
    return conn


def load_image(conn: SessionConnection, image: bytes) -> None:
    """Replace the connection's whole database with `image` (reset, restore)."""
    if conn.in_transaction:
        sqlite3.Connection.rollback(conn)
    conn.deserialize(image)


def build_database(schema_sql: str, seed_sql: str, *, foreign_keys: bool = True) -> SessionConnection:
    """Execute schema then seed on an empty database; raises sqlite3.Error on the first failing statement."""
    conn = open_connection(foreign_keys=foreign_keys)
    conn.executescript(schema_sql)
    conn.executescript(seed_sql)
    return conn


def state_hash(conn: sqlite3.Connection) -> str:
    """Canonical digest of the database's content: schema plus every row, independent of page layout."""
    digest = hashlib.blake2b(digest_size=16)
    objects = conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_stat%' ORDER BY type, name"
    ).fetchall()
    for kind, name, sql in objects:
        digest.update(repr((kind, name, sql)).encode())
        if kind != "table":
            continue
        rows = conn.execute(f'SELECT * FROM "{name}"').fetchall()
        rows.sort(key=repr)
        digest.update(repr(rows).encode())
    return digest.hexdigest()
