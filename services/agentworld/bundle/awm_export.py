"""Export bundles as Agent World Model (AWM) JSONL files, the inverse of `awm_import`.

Bundles imported from AWM give back their original verifier code (verifiers.py keeps one marked section per
task); other bundles get, per task, a `verify_task_completion` that delegates to the task's function, followed by
the whole verifiers.py, which is self-contained and correct (AWM's runner calls the code's first `def verify_`).
gen_spec is derived from the app's route decorators (path, method, operation_id, summary, description, tags,
parameters); response shapes and required tables, which only the LLM's spec had, are left empty.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

from agentworld.bundle.awm_import import (
    AWM_VERIFIER,
    F_DB,
    F_ENVS,
    F_SAMPLE,
    F_SCENARIO,
    F_SOLUTIONS,
    F_SPEC,
    F_TASKS,
    F_VERIFIER,
    MARKER_RE,
    dedent_code,
    split_sql,
)
from agentworld.bundle.model import Bundle, BundleError, load_bundle

_HTTP_METHODS = ("get", "post", "put", "patch", "delete")
_CREATE_TABLE_RE = re.compile(
    r"^\s*CREATE\s+(?:TEMP\s+|TEMPORARY\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>\"[^\"]+\"|`[^`]+`|\[[^\]]+\]|[\w.]+)",
    re.IGNORECASE,
)
_TARGET_RE = re.compile(
    r"^\s*(?:INSERT|REPLACE)(?:\s+OR\s+\w+)?\s+INTO\s+(?P<name>\"[^\"]+\"|`[^`]+`|\[[^\]]+\]|[\w.]+)"
    r"|^\s*UPDATE(?:\s+OR\s+\w+)?\s+(?P<uname>\"[^\"]+\"|`[^`]+`|\[[^\]]+\]|[\w.]+)"
    r"|^\s*DELETE\s+FROM\s+(?P<dname>\"[^\"]+\"|`[^`]+`|\[[^\]]+\]|[\w.]+)",
    re.IGNORECASE,
)


def _unquote(name: str) -> str:
    return name[1:-1] if name[:1] in '"`[' else name


def schema_tables(schema_sql: str) -> list[dict[str, Any]]:
    """AWM's db_schema tables: each CREATE TABLE starts a table; every later statement joins its indexes (order kept)."""
    tables: list[dict[str, Any]] = []
    pending: list[str] = []  # statements before the first table
    for stmt in split_sql(schema_sql):
        m = _CREATE_TABLE_RE.match(stmt)
        if m:
            tables.append({"name": _unquote(m.group("name")), "ddl": stmt, "indexes": []})
        elif tables:
            tables[-1]["indexes"].append(stmt)
        else:
            pending.append(stmt)
    if pending:
        if not tables:
            raise BundleError("schema.sql has no CREATE TABLE statement")
        tables[0]["indexes"][:0] = pending
    return tables


def seed_tables(seed_sql: str) -> list[dict[str, Any]]:
    """AWM's sample_data tables: consecutive statements on the same table form one entry."""
    tables: list[dict[str, Any]] = []
    for stmt in split_sql(seed_sql):
        m = _TARGET_RE.match(stmt)
        name = _unquote(next(g for g in m.groups() if g)) if m else (tables[-1]["table_name"] if tables else "")
        if not tables or tables[-1]["table_name"] != name:
            tables.append({"table_name": name, "reasoning": "", "insert_statements": []})
        tables[-1]["insert_statements"].append(stmt)
    return tables


def _sections(verifiers_py: str) -> dict[str, tuple[str, str, str]]:
    """Split an imported verifiers.py into {function: (mode, its `from __future__` line or "", section text)}."""
    sections: dict[str, tuple[str, str, str]] = {}
    current: tuple[str, str, str] | None = None
    lines: list[str] = []

    def close() -> None:
        if current is not None:
            sections[current[0]] = (current[1], current[2], "\n".join(lines).strip("\n"))

    for line in verifiers_py.splitlines():
        m = MARKER_RE.match(line)
        if m:
            close()
            future = f"from __future__ import {', '.join(m.group('future').split(','))}\n" if m.group("future") else ""
            current, lines = (m.group("func"), m.group("mode"), future), []
        elif current is not None:
            lines.append(line)
    close()
    return sections


def verifier_codes(bundle: Bundle) -> list[str]:
    """Per task (in order), AWM code defining `verify_task_completion`."""
    sections = _sections(bundle.verifiers_py)
    out: list[str] = []
    for task in bundle.tasks:
        name = task.verifier
        if name in sections:
            mode, prefix, text = sections[name]
            if mode == "renamed":
                pattern = rf"^((?:async\s+)?def\s+){re.escape(name)}(\s*\()"
                code, n = re.subn(pattern, rf"\g<1>{AWM_VERIFIER}\g<2>", text, count=1, flags=re.MULTILINE)
                if n != 1:
                    raise BundleError(f"{bundle.path}: verifiers.py section of {name} has no `def {name}(`")
            else:
                body = text.splitlines()[1:-1]  # drop the wrapper's def line and its return line
                code = dedent_code("\n".join(body))
            out.append(prefix + code.strip("\n") + "\n")
        else:
            out.append(_delegating_code(bundle.verifiers_py, name))
    return out


def _delegating_code(verifiers_py: str, name: str) -> str:
    """The whole verifiers.py behind a `verify_task_completion` that calls `name`. AWM's verifier runner calls the
    function of the code's first line starting with `def verify_`, so the delegate comes first (after any
    `from __future__` lines, which Python requires at the top); the names it calls are resolved when it runs."""
    lines = verifiers_py.rstrip().splitlines()
    future = [line for line in lines if line.startswith("from __future__ import")]
    rest = [line for line in lines if not line.startswith("from __future__ import")]
    delegate = (f"def {AWM_VERIFIER}(initial_db_path: str, final_db_path: str, final_answer: str | None = None)"
                f" -> dict:\n    return {name}(initial_db_path, final_db_path, final_answer)\n")
    head = "\n".join(future) + "\n\n" if future else ""
    return head + delegate + "\n\n" + "\n".join(rest).strip("\n") + "\n"


def _const(node: ast.AST | None) -> Any:
    if node is None:
        return None
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def api_spec(app_py: str) -> dict[str, Any]:
    """A gen_spec api_spec derived from the app's route decorators, grouped by each route's first tag."""
    try:
        tree = ast.parse(app_py)
    except SyntaxError:
        return {"api_groups": []}
    groups: dict[str, list[dict[str, Any]]] = {}
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for dec in fn.decorator_list:
            if not (isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute)):
                continue
            if dec.func.attr not in _HTTP_METHODS:
                continue
            kw = {k.arg: k.value for k in dec.keywords if k.arg}
            tags = _const(kw.get("tags")) or []
            endpoint = {
                "path": _const(dec.args[0]) if dec.args else _const(kw.get("path")),
                "method": dec.func.attr.upper(),
                "summary": _const(kw.get("summary")) or "",
                "description": _const(kw.get("description")) or "",
                "operation_id": _const(kw.get("operation_id")) or fn.name,
                "tags": tags,
                "request_params": _request_params(fn),
                "response": {"type": ast.unparse(kw["response_model"])} if "response_model" in kw else {},
                "required_tables": [],
                "required_fields": {},
            }
            groups.setdefault(tags[0] if tags else "default", []).append(endpoint)
    return {"api_groups": [{"group_name": g, "endpoints": eps} for g, eps in groups.items()]}


def _request_params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> dict[str, Any]:
    args = fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs
    defaults: list[ast.expr | None] = [None] * (len(fn.args.posonlyargs + fn.args.args) - len(fn.args.defaults))
    defaults += list(fn.args.defaults) + list(fn.args.kw_defaults)
    params: dict[str, Any] = {}
    for arg, default in zip(args, defaults, strict=True):
        info: dict[str, Any] = {"type": ast.unparse(arg.annotation) if arg.annotation else "any"}
        if isinstance(default, ast.Call) and isinstance(default.func, ast.Name | ast.Attribute):
            kind = default.func.id if isinstance(default.func, ast.Name) else default.func.attr
            info["in"] = kind.lower()
            first = default.args[0] if default.args else None
            info["required"] = isinstance(first, ast.Constant) and first.value is Ellipsis
            for k in default.keywords:
                if k.arg == "description":
                    info["description"] = _const(k.value)
        else:
            info["in"] = "body" if default is None else "query"
            info["required"] = default is None
        params[arg.arg] = info
    return params


def _records(bundle: Bundle) -> dict[str, list[dict[str, Any]]]:
    name = bundle.env_id
    db_path = f"./outputs/databases/{name}.db"
    samples = seed_tables(bundle.seed_sql)
    codes = verifier_codes(bundle)
    solutions = [
        {
            "scenario": name,
            "task_idx": i,
            "calls": [c.model_dump() for c in t.solution],
            "final_answer": t.expected_answer,
        }
        for i, t in enumerate(bundle.tasks)
        # A query task with nothing to replay or answer is left out so re-import reads its kind from the verifier.
        if t.solution or t.expected_answer is not None or t.kind == "mutation"
    ]
    return {
        F_SCENARIO: [{"name": name, "description": bundle.manifest.description}],
        F_TASKS: [{"scenario": name, "tasks": [t.instruction for t in bundle.tasks]}],
        F_DB: [{"scenario": name, "db_schema": {"tables": schema_tables(bundle.schema_sql)}, "db_path": db_path}],
        F_SAMPLE: [
            {
                "scenario": name,
                "tables_count": len({t["table_name"] for t in samples}),
                "inserts_count": sum(len(t["insert_statements"]) for t in samples),
                "sample_data": {"tables": samples},
            }
        ],
        F_SPEC: [{"scenario": name, "api_spec": api_spec(bundle.app_py)}],
        F_ENVS: [{"scenario": name, "db_path": db_path, "full_code": bundle.app_py}],
        F_VERIFIER: [
            {
                "scenario": name,
                "task_idx": i,
                "task": t.instruction,
                "verification": {"code": codes[i], "raw_response": ""},
            }
            for i, t in enumerate(bundle.tasks)
        ],
        F_SOLUTIONS: solutions,
    }


def export_awm(bundle_dirs: list[Path], out_dir: Path) -> list[Path]:
    """Write the bundles in `bundle_dirs` to `out_dir` as AWM JSONL files; returns the files written."""
    out_dir = Path(out_dir)
    files: dict[str, list[dict[str, Any]]] = {
        f: [] for f in (F_SCENARIO, F_TASKS, F_DB, F_SAMPLE, F_SPEC, F_ENVS, F_VERIFIER, F_SOLUTIONS)
    }
    seen: dict[str, Path] = {}
    for d in bundle_dirs:
        bundle = load_bundle(d)
        if bundle.env_id in seen:
            raise BundleError(f"{d}: scenario {bundle.env_id} already exported from {seen[bundle.env_id]}")
        seen[bundle.env_id] = Path(d)
        for fname, recs in _records(bundle).items():
            files[fname].extend(recs)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for fname, recs in files.items():
        path = out_dir / fname
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
        written.append(path)
    return written
