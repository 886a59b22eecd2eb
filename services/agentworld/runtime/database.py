"""Reading session databases from envd's side: the canonical state hash, change detection, crash recovery.

envd never runs environment code, but it reads the files the sandbox writes: to hash them, to check exported images
and to roll back a transaction a killed worker left behind. Connections here are read-only where they can be and
never trust the schema's SQL functions (trusted_schema=OFF).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import struct

SQLITE_MAGIC = b"SQLite format 3\x00"


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
        # the repr of the rows sorted by their reprs (each row's repr made once)
        rows = sorted(map(repr, conn.execute(f'SELECT * FROM "{name}"').fetchall()))
        digest.update(("[" + ", ".join(rows) + "]").encode())
    return digest.hexdigest()


def read_only(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    conn.execute("PRAGMA trusted_schema=OFF")
    return conn


def hash_file(path: str) -> str:
    conn = read_only(path)
    try:
        return state_hash(conn)
    finally:
        conn.close()


def schema_signature(conn: sqlite3.Connection) -> frozenset[str]:
    """The CREATE statements: what recognises a database as one of an environment's."""
    return frozenset(sql for (sql,) in conn.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL"))


def file_version(path: str) -> tuple[int, int, int]:
    """(inode, size, SQLite's file change counter): moves whenever a transaction commits a change to the file."""
    with open(path, "rb") as f:
        header = os.pread(f.fileno(), 28, 0)
        st = os.fstat(f.fileno())
    counter = struct.unpack(">I", header[24:28])[0] if len(header) >= 28 else 0
    return st.st_ino, st.st_size, counter


def journal_path(path: str) -> str:
    return path + "-journal"


def recover(path: str) -> bool:
    """Roll back what a dead worker left half-done (a hot journal); True if there was something to roll back.

    Opening the database with SQLite replays the journal; the file then holds its last committed state.
    """
    if not os.path.exists(journal_path(path)):
        return False
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA trusted_schema=OFF")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    finally:
        conn.close()
    return True
