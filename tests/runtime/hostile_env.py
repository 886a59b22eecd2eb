"""An environment whose routes misbehave the ways LLM-written code does, and attack the sandbox the way hostile code
would. Each attack route returns a JSON report {attempt: "ok: ..." | "denied: ..."} so tests can assert on each."""

from __future__ import annotations

from pathlib import Path

from agentworld.bundle import Bundle, EnvManifest, Task, ToolCall, write_bundle

APP = r'''
import asyncio
import gc
import json
import os
import re
import sqlite3
import time
from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy import create_engine, text
from sqlalchemy.orm import sessionmaker

engine = create_engine(os.getenv("DATABASE_PATH", "sqlite:///hostile.db"))
SessionLocal = sessionmaker(bind=engine)
app = FastAPI(title="Hostile API")


def write_mark(label):
    s = SessionLocal()
    s.execute(text("INSERT INTO marks (label) VALUES (:l)"), {"l": label})
    s.commit()
    s.close()


class Mark(BaseModel):
    label: str


@app.get("/marks", operation_id="list_marks")
async def list_marks():
    s = SessionLocal()
    rows = [r[0] for r in s.execute(text("SELECT label FROM marks ORDER BY id")).all()]
    s.close()
    return rows


@app.post("/marks", operation_id="add_mark")
async def add_mark(mark: Mark):
    write_mark(mark.label)
    return {"ok": True}


@app.get("/echo/{value}", operation_id="echo_path")
async def echo_path(value: str, q: str = ""):
    return {"value": value, "q": q}


@app.get("/whoami", operation_id="whoami")
async def whoami(seconds: float = 0.0):
    time.sleep(seconds)
    return {"pid": os.getpid(), "uid": os.getuid()}


@app.post("/slow-sync-write", operation_id="slow_sync_write")
def slow_sync_write(seconds: float, label: str):
    time.sleep(seconds)
    write_mark(label)
    return {"ok": True}


@app.post("/slow-async-write", operation_id="slow_async_write")
async def slow_async_write(seconds: float, label: str):
    time.sleep(seconds)  # blocking inside async def: holds the event loop it runs on
    write_mark(label)
    return {"ok": True}


@app.post("/write-then-block", operation_id="write_then_block")
async def write_then_block(seconds: float, label: str):
    write_mark(label)
    time.sleep(seconds)
    return {"ok": True}


@app.post("/busy-sql", operation_id="busy_sql")
async def busy_sql(rows: int = 300):
    s = SessionLocal()
    for i in range(rows):
        s.execute(text("INSERT INTO marks (label) VALUES (:l)"), {"l": f"busy{i}"})
        s.commit()
        s.execute(text("SELECT count(*) FROM marks")).scalar()
    s.close()
    return {"ok": True}


@app.post("/spin", operation_id="spin")
async def spin():
    n = 0
    while True:
        n += 1


@app.post("/spin-swallowing", operation_id="spin_swallowing")
def spin_swallowing():
    while True:
        try:
            while True:
                pass
        except BaseException:
            continue


@app.post("/regex", operation_id="catastrophic_regex")
async def catastrophic_regex():
    return {"match": bool(re.match(r"(a+)+$", "a" * 64 + "b"))}


@app.post("/exit", operation_id="exit_process")
async def exit_process(code: int = 3):
    write_mark("before exit")
    os._exit(code)


@app.post("/allocate", operation_id="allocate")
async def allocate(gib: int = 3):
    blob = bytearray(gib << 30)
    return {"allocated": len(blob)}


def attempt(report, name, fn):
    try:
        report[name] = "ok: " + repr(fn())[:200]
    except BaseException as exc:
        report[name] = f"denied: {type(exc).__name__}: {exc}"[:300]


def other_connections():
    """Every SQLite connection this process can find, and what they hold."""
    found = []
    for obj in gc.get_objects():
        if isinstance(obj, sqlite3.Connection):
            try:
                found.append(obj.execute("SELECT group_concat(label) FROM marks").fetchone()[0])
            except Exception:
                pass
    return found


def rewrite_rewards():
    """Find reward tables the way hostile code would: through any object reachable from the collector."""
    hits = 0
    for obj in gc.get_objects():
        try:
            holders = (obj, getattr(obj, "config", None))
            tables = [getattr(h, "rewards", None) for h in holders]
        except Exception:
            continue
        for table in tables:
            if isinstance(table, dict) and "others" in table:
                table["others"] = 1.0
                hits += 1
    return hits


def read_parent_memory():
    with open(f"/proc/{os.getppid()}/mem", "rb") as f:
        return f.read(16)


def list_state_dirs():
    return os.listdir("/dev/shm") + os.listdir("/tmp")


def signal_everyone():
    sent = 0
    for pid in range(1, 4096):
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 9)
            sent += 1
        except ProcessLookupError:
            pass
    return sent


@app.post("/attack", operation_id="attack")
async def attack(target: str = ""):
    report = {}
    attempt(report, "other_sessions", other_connections)
    attempt(report, "list_state_dirs", list_state_dirs)
    attempt(report, "open_target", lambda: open(target, "rb").read(16) if target else b"")
    attempt(report, "reward_table", rewrite_rewards)
    attempt(report, "shadow", lambda: open("/etc/shadow").read())
    attempt(report, "passwd", lambda: open("/etc/passwd").read())
    attempt(report, "socket", lambda: __import__("socket").create_connection(("127.0.0.1", 22), timeout=1))
    attempt(report, "subprocess", lambda: __import__("subprocess").run(["id"], capture_output=True).stdout)
    attempt(report, "fork", os.fork)
    attempt(report, "kill_everyone", signal_everyone)
    attempt(report, "parent_memory", read_parent_memory)
    attempt(report, "environ", lambda: sorted(k for k in os.environ if "SECRET" in k))
    attempt(report, "write_outside", lambda: open("/tmp/agentworld-hostile-was-here", "w").write("x"))
    return report
'''

SCHEMA = "CREATE TABLE marks (id INTEGER PRIMARY KEY AUTOINCREMENT, label TEXT NOT NULL);\n"
SEED = "INSERT INTO marks (label) VALUES ('seed');\n"
VERIFIERS = '''
def verify_marked(initial_db_path, final_db_path, final_answer=None):
    import sqlite3
    rows = sqlite3.connect(f"file:{final_db_path}?mode=ro", uri=True).execute("SELECT label FROM marks").fetchall()
    return {"result": "complete" if ("done",) in rows else "others"}
'''


def hostile_bundle(out_dir: Path, env_id: str = "hostile") -> Path:
    tasks = [Task(id="mark", instruction="Add the mark 'done'.", kind="mutation", verifier="verify_marked",
                  solution=[ToolCall(tool="add_mark", arguments={"label": "done"})])]
    manifest = EnvManifest(id=env_id, title="Hostile API", description="Routes that misbehave and attack.",
                           provenance={"source": "test"})
    manifest.counts.tables, manifest.counts.tools, manifest.counts.tasks = 1, 18, 1
    bundle = Bundle(manifest=manifest, tasks=tasks, schema_sql=SCHEMA, seed_sql=SEED, app_py=APP,
                    verifiers_py=VERIFIERS)
    return write_bundle(bundle, out_dir)
