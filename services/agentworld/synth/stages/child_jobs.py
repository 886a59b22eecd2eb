"""Jobs the sandbox runs in forked children: importing a generated app, validating a candidate bundle."""

from __future__ import annotations

import os
import sys
import types
from typing import Any


def probe_app(code: str, db_file: str) -> dict[str, Any]:
    """Import the app against a seeded SQLite file (as AWM's launcher would) and list its tools as envd sees them:
    {"tools": [{name, description, input_schema}] (path, query and body parameters merged), "tables": count after
    the app's import (its create_all may add tables), as envd counts them}."""
    import sqlite3

    from agentworld.runtime.tools import extract_tools

    os.environ["DATABASE_PATH"] = f"sqlite:///{db_file}"
    module = types.ModuleType("generated_app")
    module.__file__ = "app.py"
    sys.modules["generated_app"] = module  # pydantic resolves annotations through sys.modules
    exec(compile(code, "app.py", "exec"), module.__dict__)  # noqa: S102 - sandboxed child process
    app = module.__dict__.get("app")
    if app is None or not hasattr(app, "openapi"):
        raise RuntimeError("app.py defines no module-level `app = FastAPI(...)`")
    tools = extract_tools(app.openapi())  # openapi() builds every route's JSON Schema; fails on broken models
    conn = sqlite3.connect(db_file)
    tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                          ).fetchone()[0]
    conn.close()
    return {"tools": [{"name": t.name, "description": t.description, "input_schema": t.input_schema} for t in tools],
            "tables": tables}


def validate_dir(path: str) -> dict[str, Any]:
    from agentworld.synth.stages.validate_worker import validate_dir as run

    return run(path)


JOBS = {"probe_app": probe_app, "validate_dir": validate_dir}
