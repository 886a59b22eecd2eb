"""A tiny environment whose tools misbehave on purpose (raise, loop, sleep) and whose verifiers attack the sandbox."""

from __future__ import annotations

from pathlib import Path

from agentworld.bundle import Bundle, EnvManifest, Task, ToolCall, write_bundle

APP = '''
import asyncio
import os
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy import create_engine, text
from sqlalchemy.orm import sessionmaker

engine = create_engine(os.getenv("DATABASE_PATH", "sqlite:///toy.db"), connect_args={"check_same_thread": False})
SessionLocal = sessionmaker(bind=engine)
app = FastAPI(title="Toy Notes API")


class NoteIn(BaseModel):
    title: str = Field(..., description="Note title")
    stars: int = Field(0, ge=0, le=5, description="Rating from 0 to 5")


@app.get("/notes", operation_id="list_notes", summary="List notes", description="Every note, oldest first.")
async def list_notes(min_stars: int = 0):
    s = SessionLocal()
    rows = s.execute(text("SELECT id, title, stars FROM notes WHERE stars >= :m ORDER BY id"), {"m": min_stars}).all()
    s.close()
    return [{"id": r[0], "title": r[1], "stars": r[2]} for r in rows]


@app.post("/notes", operation_id="add_note", summary="Add a note", description="Create a note.")
async def add_note(note: NoteIn):
    s = SessionLocal()
    s.execute(text("INSERT INTO notes (title, stars) VALUES (:t, :s)"), {"t": note.title, "s": note.stars})
    s.commit()
    new_id = s.execute(text("SELECT max(id) FROM notes")).scalar()
    s.close()
    return {"id": new_id, "title": note.title, "stars": note.stars}


@app.get("/notes/{note_id}", operation_id="get_note", summary="Get a note", description="One note by id.")
async def get_note(note_id: int):
    s = SessionLocal()
    row = s.execute(text("SELECT id, title, stars FROM notes WHERE id = :i"), {"i": note_id}).first()
    s.close()
    if row is None:
        raise HTTPException(status_code=404, detail=f"note {note_id} not found")
    return {"id": row[0], "title": row[1], "stars": row[2]}


@app.post("/notes/commit-then-crash", operation_id="commit_then_crash", summary="Writes, commits, then fails")
async def commit_then_crash():
    s = SessionLocal()
    s.execute(text("INSERT INTO notes (title, stars) VALUES ('half-done', 1)"))
    s.commit()
    s.execute(text("UPDATE notes SET stars = 5"))
    s.commit()
    raise RuntimeError("disk on fire")


@app.post("/notes/write-then-refuse", operation_id="write_then_refuse", summary="Writes, then answers 409")
async def write_then_refuse():
    s = SessionLocal()
    s.execute(text("DELETE FROM notes"))
    s.commit()
    raise HTTPException(status_code=409, detail="refused after writing")


@app.post("/spin", operation_id="spin_forever", summary="Busy-loops forever (after a write)")
async def spin_forever():
    s = SessionLocal()
    s.execute(text("INSERT INTO notes (title, stars) VALUES ('spinning', 0)"))
    s.commit()
    n = 0
    while True:
        n += 1


@app.post("/sleep", operation_id="sleep_forever", summary="Awaits forever")
async def sleep_forever():
    await asyncio.sleep(3600)
'''

SCHEMA = "CREATE TABLE notes (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL, stars INTEGER NOT NULL);\n"
SEED = "INSERT INTO notes (title, stars) VALUES ('groceries', 3);\nINSERT INTO notes (title, stars) VALUES ('ideas', 5);\n"

VERIFIERS = '''
def verify_add(initial_db_path, final_db_path, final_answer=None):
    import sqlite3
    before = sqlite3.connect(f"file:{initial_db_path}?mode=ro", uri=True).execute("SELECT count(*) FROM notes").fetchone()[0]
    rows = sqlite3.connect(f"file:{final_db_path}?mode=ro", uri=True).execute("SELECT title, stars FROM notes").fetchall()
    ok = len(rows) == before + 1 and ("poem", 4) in rows
    return {"result": "complete" if ok else "others"}


def verify_count(initial_db_path, final_db_path, final_answer=None):
    return {"result": "complete" if final_answer and "2" in final_answer else "others"}


def verify_writes_db(initial_db_path, final_db_path, final_answer=None):
    import sqlite3
    conn = sqlite3.connect(final_db_path)
    conn.execute("DELETE FROM notes")
    conn.commit()
    return {"result": "complete"}


def verify_opens_socket(initial_db_path, final_db_path, final_answer=None):
    import socket
    socket.create_connection(("127.0.0.1", 22), timeout=1)
    return {"result": "complete"}


def verify_hogs_memory(initial_db_path, final_db_path, final_answer=None):
    blob = bytearray(4 * 1024 * 1024 * 1024)
    return {"result": "complete", "size": len(blob)}
'''


def toy_bundle(out_dir: Path, *, evil_verifiers: bool = True, **overrides: str) -> Path:
    """Write the toy bundle; `overrides` replace files' text (schema_sql, seed_sql, app_py, verifiers_py)."""
    tasks = [
        Task(id="add", instruction="Add a note titled poem with 4 stars.", kind="mutation", verifier="verify_add",
             solution=[ToolCall(tool="add_note", arguments={"title": "poem", "stars": 4})]),
        Task(id="count", instruction="How many notes are there?", kind="query", verifier="verify_count",
             solution=[ToolCall(tool="list_notes")], expected_answer="There are 2 notes."),
        Task(id="evil_write", instruction="-", kind="mutation", verifier="verify_writes_db"),
        Task(id="evil_socket", instruction="-", kind="mutation", verifier="verify_opens_socket"),
        Task(id="evil_memory", instruction="-", kind="mutation", verifier="verify_hogs_memory"),
    ]
    if not evil_verifiers:
        tasks = tasks[:2]
    manifest = EnvManifest(id="toy_notes", title="Toy Notes API", description="Notes with tools that misbehave.",
                           provenance={"source": "test"})
    manifest.counts.tables, manifest.counts.tools, manifest.counts.tasks = 1, 7, len(tasks)
    files = {"schema_sql": SCHEMA, "seed_sql": SEED, "app_py": APP, "verifiers_py": VERIFIERS, **overrides}
    bundle = Bundle(manifest=manifest, tasks=tasks, **files)
    return write_bundle(bundle, out_dir)
