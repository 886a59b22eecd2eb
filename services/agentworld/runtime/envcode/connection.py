"""The SQLite connection a worker lends an environment's app for one session's database file.

One call is one transaction: `begin_call` opens it with BEGIN IMMEDIATE (no other connection can write the file
meanwhile), the app's own commit and rollback become a savepoint inside it, and only the worker ends it, with
`commit_call` when envd's deadline allows or `rollback_call` otherwise. An authorizer refuses the app's own
transaction control, ATTACH (which would create files) and journal settings, so no SQL the app sends can commit
early or weaken crash safety. Files use a rollback journal: a worker killed mid-call leaves a hot journal that the
next connection (or envd's recovery) rolls back, so a session always holds its last committed state.
"""

from __future__ import annotations

import contextlib
import sqlite3
import weakref

CALL_SAVEPOINT = "agentworld_call"
_DENIED_PRAGMAS = frozenset({"journal_mode", "locking_mode", "writable_schema", "temp_store_directory",
                             "data_store_directory", "schema_version"})


class SessionConnection(sqlite3.Connection):
    """`close()` is a no-op: the app's engine pool "closes" connections it no longer needs; the worker keeps them."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - sqlite3.Connection's signature
        super().__init__(*args, **kwargs)
        self._cursors: weakref.WeakSet[sqlite3.Cursor] = weakref.WeakSet()
        self.in_call = False
        self._internal = True
        self.set_authorizer(self._authorize)

    def _authorize(self, action: int, arg1: str | None, arg2: str | None, _db: str | None, _src: str | None) -> int:
        if self._internal:
            return sqlite3.SQLITE_OK
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH, sqlite3.SQLITE_TRANSACTION):
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_SAVEPOINT and arg2 == CALL_SAVEPOINT:
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in _DENIED_PRAGMAS:
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    def _run(self, *statements: str) -> None:
        self._internal = True
        try:
            for sql in statements:
                self.execute(sql)
        finally:
            self._internal = not self.in_call

    def close(self) -> None:
        pass

    def cursor(self, *args, **kwargs) -> sqlite3.Cursor:  # noqa: ANN002, ANN003 - sqlite3's signature
        cursor = super().cursor(*args, **kwargs)
        self._cursors.add(cursor)
        return cursor

    def really_close(self) -> None:
        """Close for good. Cursors go first: interrupted app code can leave one mid-statement, and SQLite keeps a
        connection with an unfinished statement alive (a "zombie" still holding its lock) past close()."""
        for cursor in list(self._cursors):
            with contextlib.suppress(sqlite3.Error):
                cursor.close()
        super().close()

    def commit(self) -> None:
        if self.in_call:
            self._run(f"RELEASE {CALL_SAVEPOINT}", f"SAVEPOINT {CALL_SAVEPOINT}")
        else:
            super().commit()

    def rollback(self) -> None:
        if self.in_call:
            self._run(f"ROLLBACK TO {CALL_SAVEPOINT}")
        else:
            super().rollback()

    def begin_call(self) -> None:
        self.in_call = True
        self._run("BEGIN IMMEDIATE", f"SAVEPOINT {CALL_SAVEPOINT}")

    def commit_call(self) -> None:
        self.in_call = False
        self._run("COMMIT")

    def rollback_call(self) -> None:
        self.in_call = False
        self._internal = True
        if self.in_transaction:
            super().rollback()


def open_session_db(path: str, *, foreign_keys: bool) -> SessionConnection:
    """A connection to a session's database file, tuned for tmpfs (no fsync; temp tables in memory)."""
    conn = sqlite3.connect(path, factory=SessionConnection, isolation_level=None, check_same_thread=False,
                           cached_statements=256)
    conn._run("PRAGMA synchronous=OFF", "PRAGMA temp_store=MEMORY",
              f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
    conn._internal = False
    return conn


def build_template(schema_sql: str, seed_sql: str, *, foreign_keys: bool) -> SessionConnection:
    """An in-memory database with schema then seed applied; raises sqlite3.Error on the first failing statement."""
    conn = sqlite3.connect(":memory:", factory=SessionConnection, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
    conn.executescript(schema_sql)
    conn.executescript(seed_sql)
    return conn
