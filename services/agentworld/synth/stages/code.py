"""Stage 6: the tool server (app.py) in AWM's FastAPI + SQLAlchemy style; compiled, imported and its tools listed
in a child process, with the traceback or the missing tools fed back."""

from __future__ import annotations

import json
import re
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from agentworld.llm import extract_code
from agentworld.llm.types import Completion
from agentworld.synth.stages.common import (
    Ctx,
    StageCheckError,
    generate_checked,
    read_json,
    stage_marker,
    write_json,
    write_text_atomic,
)
from agentworld.synth.stages.sandbox import ChildJobError, run_job
from agentworld.synth.stages.schema import schema_sql
from agentworld.synth.stages.seed import seed_sql
from agentworld.synth.stages.spec import endpoints

STAGE = "code"
SYSTEM = stage_marker(STAGE) + """
Write the complete server of an application as ONE Python file, in this exact style:
- FastAPI app `app = FastAPI(title=..., description=...)`; SQLAlchemy ORM declarative models mirroring the given
  schema exactly (same table and column names); Pydantic v2 request/response models with Field descriptions.
- Database: `DATABASE_PATH = os.getenv("DATABASE_PATH") or "sqlite:///app.db"` then, on ONE line,
  `engine = create_engine(DATABASE_PATH, connect_args={"check_same_thread": False})`, `SessionLocal = sessionmaker(...)`,
  one session per request (open it in the handler, commit, close).
- One route per endpoint of the specification, with `operation_id=` the endpoint's operation_id, `summary=` and
  `description=`; path/query parameters via Path/Query, JSON bodies via a Pydantic model. The acting user is
  `CURRENT_USER_ID = 1`.
- Return clear JSON; for a missing record or an invalid action return an error (HTTPException 404/400) with a message
  that tells the caller what to fix. Never use the wall clock for data the tasks check; use
  `datetime(2025, 6, 1, 12, 0, 0)` as "now".
- End with `if __name__ == "__main__":` running uvicorn on HOST/PORT from the environment.
Answer with the code in one ```python block and nothing else."""


def prompt(scenario: dict[str, Any], schema: str, spec: dict[str, Any]) -> str:
    return (f"Scenario: {scenario['id']}\nDescription: {scenario['description']}\n\nSchema:\n{schema}\n"
            f"API specification:\n{json.dumps(spec, indent=1)}\n\nWrite app.py implementing every endpoint.")


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def static_problems(code: str, wanted_ops: list[str]) -> list[str]:
    from agentworld.bundle.awm_import import app_operation_ids

    try:
        compile(code, "app.py", "exec")
    except SyntaxError as exc:
        return [f"app.py does not compile: {exc.msg} at line {exc.lineno}: {(exc.text or '').strip()}"]
    problems = []
    if not re.search(r"^.*create_engine\(.*\)\s*$", code, re.M):
        problems.append("the create_engine(...) call must be on a single line")
    if "DATABASE_PATH" not in code:
        problems.append("the engine must be created from the DATABASE_PATH environment variable")
    ops = app_operation_ids(code) or []
    missing = [o for o in wanted_ops if o not in ops]
    if missing:
        problems.append(f"routes missing for operation_ids: {', '.join(missing)}")
    return problems


async def probe_app(code: str, schema_tables: list[dict], seed_tables: list[dict], timeout_s: float,
                    ) -> dict[str, Any]:
    """Import the app in a sandboxed child against the seeded database: {"tools": [...], "tables": n}."""
    with tempfile.TemporaryDirectory(prefix="agentworld-probe-") as tmp:
        db = Path(tmp) / "env.db"
        conn = sqlite3.connect(db)
        conn.executescript("PRAGMA foreign_keys=ON;\n" + schema_sql(schema_tables) + seed_sql(seed_tables))
        conn.close()
        try:
            return await run_job("probe_app", code, str(db), timeout_s=timeout_s)
        except ChildJobError as exc:
            raise StageCheckError(f"importing app.py failed:\n{tail(str(exc))}") from exc


def interface_problems(spec: dict, tools: list[dict[str, Any]]) -> list[str]:
    """Spec endpoints the running app lacks, or whose declared parameters its tool does not accept."""
    by_name = {t["name"]: t for t in tools}
    problems = []
    for e in endpoints(spec):
        tool = by_name.get(e["operation_id"])
        if tool is None:
            problems.append(f"the running app has no tool {e['operation_id']!r}")
            continue
        accepted = set(tool["input_schema"].get("properties", {}))
        missing = sorted(set(e.get("request_params") or {}) - accepted)
        if missing:
            problems.append(f"tool {e['operation_id']!r} does not accept the specified parameters {missing} "
                            f"(it accepts {sorted(accepted)}); body fields must be declared in a Pydantic model")
    return problems


def make_check(ctx: Ctx, spec: dict, schema_tables: list[dict], seed_tables: list[dict]):
    wanted = [e["operation_id"] for e in endpoints(spec)]

    async def check(text: str, completion: Completion) -> tuple[str, list[dict[str, Any]]]:
        code = extract_code(text)
        if completion.truncated:
            raise StageCheckError("the answer was cut off at the output limit, so app.py is incomplete; write the "
                                  "whole file again, more compactly (shorter descriptions, shared helpers)")
        problems = static_problems(code, wanted)
        if problems:
            raise StageCheckError("\n".join(problems))
        probed = await probe_app(code, schema_tables, seed_tables, ctx.opts.check_timeout_s)
        names = [t["name"] for t in probed["tools"]]
        dupes = sorted({n for n in names if names.count(n) > 1})
        problems = [f"operation_id used by several routes: {', '.join(dupes)}"] if dupes else []
        problems += interface_problems(spec, probed["tools"])
        if problems:
            raise StageCheckError("\n".join(problems[:30]))
        return code, probed
    return check


def load_probe(ctx: Ctx, env_id: str) -> dict[str, Any]:
    """What the code stage's probe saw: {"tools": [...], "tables": n} ({} before the stage ran)."""
    return read_json(ctx.env_dir(env_id) / "tools.json") or {}


def load_tools(ctx: Ctx, env_id: str) -> list[dict[str, Any]]:
    return load_probe(ctx, env_id).get("tools", [])


async def run_one(ctx: Ctx, scenario: dict[str, Any], spec: dict, schema_tables: list[dict], seed_tables: list[dict],
                  *, feedback: str | None = None) -> str:
    """Writes tools.json then app.py (its presence marks the stage done); with `feedback` (validation failures) it
    continues the conversation and rewrites the file."""
    d = ctx.env_dir(scenario["id"])
    path = d / "app.py"
    if feedback is None and path.exists() and (d / "tools.json").exists():
        ctx.llm.accounting.stage(STAGE).skipped_resumed += 1
        return path.read_text(encoding="utf-8")
    first = prompt(scenario, schema_sql(schema_tables), spec)
    if feedback is None:
        user, history = first, None
    else:
        user = f"Running the environment's tasks against this app.py found problems:\n{feedback}\n\n" \
               "Fix app.py and answer with the complete corrected file."
        history = [("user", first), ("assistant", f"```python\n{path.read_text(encoding='utf-8')}```")]
    code, probed = await generate_checked(ctx, STAGE, SYSTEM, user, make_check(ctx, spec, schema_tables, seed_tables),
                                          max_tokens=ctx.opts.code_max_tokens, prior=history)
    write_json(d / "tools.json", probed)
    write_text_atomic(path, code)
    return code
