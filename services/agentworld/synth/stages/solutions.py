"""Stage 7: per task, its kind, a reference solution (tool calls), the expected answer and a code verifier.

The verifier has AWM's signature `verify_task_completion(initial_db_path, final_db_path, final_answer=None)`; the
validate stage renames it to the bundle's `verify_task_<i>`.
"""

from __future__ import annotations

import ast
import json
from typing import Any

from agentworld.bundle.awm_import import VerifierError, build_verifiers
from agentworld.synth.stages.common import (
    Ctx,
    StageCheckError,
    generate_checked,
    read_json,
    stage_marker,
    write_json,
)
from agentworld.synth.stages.schema import schema_sql
from agentworld.synth.stages.seed import seed_sql
from agentworld.synth.stages.spec import endpoints, tool_summary

STAGE = "solutions"
ALLOWED_IMPORTS = {"sqlite3", "json", "re", "math", "datetime", "decimal", "collections", "typing"}
SCHEMA = {
    "type": "object",
    "properties": {
        "kind": {"type": "string", "enum": ["query", "mutation"]},
        "solution": {"type": "array", "items": {"type": "object", "properties": {
            "tool": {"type": "string"}, "arguments": {"type": "object"}}, "required": ["tool", "arguments"]}},
        "expected_answer": {"type": ["string", "null"]},
        "verifier_code": {"type": "string"},
    },
    "required": ["kind", "solution", "expected_answer", "verifier_code"],
}
SYSTEM = stage_marker(STAGE) + """
For one task of an application, write (1) its reference solution and (2) a verifier. Rules:
- kind: "query" if the task asks for information (the database does not change), "mutation" if it changes data.
- solution: the exact sequence of tool calls (tool = operation_id, arguments = JSON object of its parameters) that
  accomplishes the task on the given initial data, acting as user id 1. Use ids that exist in the seed data.
- expected_answer: for a query, the final answer text an agent would give (containing the facts the verifier
  checks); null for a mutation.
- verifier_code: Python source defining
  `def verify_task_completion(initial_db_path: str, final_db_path: str, final_answer: str | None = None) -> dict:`
  returning {"result": "complete"} when the task was accomplished, else {"result": "others"} (extra keys allowed).
  Open the databases read-only with sqlite3 (f"file:{path}?mode=ro", uri=True). For a mutation compare the initial
  and final database: the specific intended change happened (and not to other records); it must return "others" on
  an untouched database. For a query, check that final_answer contains the correct facts (computed from the
  database, tolerant of formatting). Only import sqlite3, json, re, math, datetime; keep helpers inside the function."""


def context(scenario: dict, schema: str, seed: str, tools: str) -> str:
    """The environment, shared by all its tasks' requests: sent in the system prompt so providers cache it."""
    return (f"{SYSTEM}\n\n# The environment\nScenario: {scenario['id']}\nDescription: {scenario['description']}\n\n"
            f"Schema:\n{schema}\nInitial data:\n{seed}\nTools:\n{tools}\n")


def prompt(tasks: list[str], idx: int) -> str:
    return (f"Task index: {idx}\nTask: {tasks[idx]}\n\n"
            'Answer with a JSON object: {"kind": ..., "solution": [{"tool": ..., "arguments": {...}}], '
            '"expected_answer": ..., "verifier_code": "def verify_task_completion(...): ..."}.')


def _type(schema: dict[str, Any]) -> str:
    if "type" in schema:
        return str(schema["type"])
    options = [str(o.get("type")) for o in schema.get("anyOf", []) if isinstance(o, dict) and o.get("type")]
    return "|".join(options) or "any"


def tools_summary(tools: list[dict[str, Any]]) -> str:
    """One line per tool with its real input schema (as envd exposes it): what the model calls."""
    lines = []
    for t in tools:
        props = t["input_schema"].get("properties", {})
        req = set(t["input_schema"].get("required", []))
        params = ", ".join(f"{n}: {_type(p)}{'' if n in req else '?'}" for n, p in props.items())
        lines.append(f"- {t['name']}({params}): {' '.join(str(t.get('description', '')).split())[:240]}")
    return "\n".join(lines)


def check_solution(spec: dict, idx: int, tools: list[dict[str, Any]] | None = None):
    if tools:
        params = {t["name"]: set(t["input_schema"].get("properties", {})) for t in tools}
        required = {t["name"]: set(t["input_schema"].get("required", [])) for t in tools}
    else:
        params = {e["operation_id"]: set((e.get("request_params") or {}).keys()) for e in endpoints(spec)}
        required = {}

    def check(payload: dict, _c: Any = None) -> dict[str, Any]:
        problems: list[str] = []
        kind = payload.get("kind")
        if kind not in ("query", "mutation"):
            problems.append('kind must be "query" or "mutation"')
        answer = payload.get("expected_answer")
        if kind == "query" and not (isinstance(answer, str) and answer.strip()):
            problems.append("a query task needs a non-empty expected_answer")
        calls = payload.get("solution")
        if not isinstance(calls, list) or not calls:
            problems.append("solution must be a non-empty list of tool calls")
            calls = []
        clean_calls = []
        for n, call in enumerate(calls):
            tool = call.get("tool") if isinstance(call, dict) else None
            args = call.get("arguments", {}) if isinstance(call, dict) else None
            if tool not in params:
                problems.append(f"solution call {n}: unknown tool {tool!r}")
                continue
            if not isinstance(args, dict):
                problems.append(f"solution call {n}: arguments must be an object")
                continue
            unknown = sorted(set(args) - params[tool])
            if unknown:
                problems.append(f"solution call {n}: {tool} has no parameters {unknown} "
                                f"(it takes {sorted(params[tool])})")
            absent = sorted(required.get(tool, set()) - set(args))
            if absent:
                problems.append(f"solution call {n}: {tool} requires {absent}")
            clean_calls.append({"tool": tool, "arguments": args})
        code = payload.get("verifier_code")
        if not isinstance(code, str) or not code.strip():
            problems.append("verifier_code must be Python source")
        else:
            try:
                build_verifiers({idx: code})
                tree = ast.parse(code)
                for node in ast.walk(tree):
                    names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                        [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                    bad = [m for m in names if m.split(".")[0] not in ALLOWED_IMPORTS | {"__future__"}]
                    if bad:
                        problems.append(f"verifier imports {bad}; only {sorted(ALLOWED_IMPORTS)} are allowed")
            except (VerifierError, SyntaxError) as exc:
                problems.append(str(exc))
        if problems:
            raise StageCheckError("\n".join(problems))
        return {"kind": kind, "solution": clean_calls,
                "expected_answer": answer.strip() if kind == "query" else None, "verifier_code": code}
    return check


async def run_one(ctx: Ctx, scenario: dict, tasks: list[str], idx: int, spec: dict, schema_tables: list[dict],
                  seed_tables: list[dict], tools: list[dict[str, Any]], *, feedback: str | None = None,
                  ) -> dict[str, Any]:
    """Writes solutions/task_<idx>.json; with `feedback` (validation failures) it revises the previous answer."""
    path = ctx.env_dir(scenario["id"]) / "solutions" / f"task_{idx}.json"
    done = read_json(path)
    if done is not None and feedback is None:
        ctx.llm.accounting.stage(STAGE).skipped_resumed += 1
        return done
    summary = tools_summary(tools) if tools else tool_summary(spec)
    system = context(scenario, schema_sql(schema_tables), seed_sql(seed_tables), summary)
    first = prompt(tasks, idx)
    if feedback is None:
        user, history = first, None
    else:
        user = (f"Validating this task in the running environment failed:\n{feedback}\n\n"
                "Fix the solution and/or the verifier (the app itself cannot change) and answer again in full.")
        history = [("user", first), ("assistant", json.dumps({k: done[k] for k in SCHEMA["required"]}))]
    result = await generate_checked(ctx, STAGE, system, user, check_solution(spec, idx, tools), json_schema=SCHEMA,
                                    prior=history, cache_system=True)
    write_json(path, result)
    return result
