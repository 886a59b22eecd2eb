"""Stage 5: the tool API specification in AWM's api_spec format (groups of endpoints, one tool each)."""

from __future__ import annotations

import re
from typing import Any

from agentworld.synth.stages.common import Ctx, StageCheckError, generate_checked, read_json, stage_marker, write_json
from agentworld.synth.stages.schema import schema_sql

STAGE = "spec"
MIN_TOOLS = 5
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
SCHEMA = {
    "type": "object",
    "properties": {"api_groups": {"type": "array", "items": {
        "type": "object",
        "properties": {"group_name": {"type": "string"}, "endpoints": {"type": "array", "items": {
            "type": "object",
            "properties": {
                "path": {"type": "string"}, "method": {"type": "string"}, "summary": {"type": "string"},
                "description": {"type": "string"}, "operation_id": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "request_params": {"type": "object"}, "response": {"type": "object"},
                "required_tables": {"type": "array", "items": {"type": "string"}},
                "required_fields": {"type": "object"}},
            "required": ["path", "method", "summary", "description", "operation_id", "request_params"]}}},
        "required": ["group_name", "endpoints"]}}},
    "required": ["api_groups"],
}
SYSTEM = stage_marker(STAGE) + """
Design the HTTP API (the agent's tools) of an application over its SQLite database. Rules:
- Endpoints grouped by resource; each has path (e.g. /api/orders/{order_id}), method (GET/POST/PUT/PATCH/DELETE),
  summary, description (what it does and when to use it), a unique snake_case operation_id (the tool name), tags,
  request_params {name: {type, param_type: path|query|body, required, description, example}}, response (shape with
  field descriptions), required_tables and required_fields.
- Every task must be achievable with these endpoints: include search/list endpoints that resolve names to ids, detail
  endpoints, and the create/update/delete/action endpoints the tasks need, plus the ones a real product would have.
- Act as the logged-in user (id 1): never take the acting user's id as a parameter."""


def prompt(scenario: dict[str, Any], tasks: list[str], schema: str, target_tools: int) -> str:
    return (f"Scenario: {scenario['id']}\nDescription: {scenario['description']}\n\nTasks:\n"
            + "\n".join(f"{i}. {t}" for i, t in enumerate(tasks))
            + f"\n\nSchema:\n{schema}\n"
            + f"Design about {target_tools} endpoints. Answer with a JSON object: "
              '{"api_groups": [{"group_name": ..., "endpoints": [...]}]}.')


def endpoints(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for g in spec.get("api_groups", []) for e in g.get("endpoints", [])]


def check_spec(schema_tables: list[dict[str, Any]]):
    table_names = {t["name"] for t in schema_tables}

    def check(payload: dict, _c: Any = None) -> dict[str, Any]:
        groups = payload.get("api_groups")
        if not isinstance(groups, list) or not groups:
            raise StageCheckError('"api_groups" must be a non-empty list')
        problems: list[str] = []
        seen: set[str] = set()
        eps = [e for g in groups if isinstance(g, dict) for e in (g.get("endpoints") or []) if isinstance(e, dict)]
        for e in eps:
            op = str(e.get("operation_id", ""))
            if not re.fullmatch(r"[a-z][a-z0-9_]*", op):
                problems.append(f"operation_id {op!r} is not snake_case")
            if op in seen:
                problems.append(f"operation_id {op!r} is used twice")
            seen.add(op)
            if str(e.get("method", "")).upper() not in METHODS:
                problems.append(f"{op}: method {e.get('method')!r} is not one of {sorted(METHODS)}")
            path = str(e.get("path", ""))
            if not path.startswith("/"):
                problems.append(f"{op}: path {path!r} must start with /")
            params = e.get("request_params") or {}
            if not isinstance(params, dict):
                problems.append(f"{op}: request_params must be an object")
                params = {}
            for name in re.findall(r"{(\w+)}", path):
                if name not in params:
                    problems.append(f"{op}: path parameter {name!r} is not declared in request_params")
            missing = [t for t in e.get("required_tables") or [] if t not in table_names]
            if missing:
                problems.append(f"{op}: required_tables {missing} are not in the schema")
        if len(eps) < MIN_TOOLS:
            problems.append(f"only {len(eps)} endpoints; at least {MIN_TOOLS} are needed")
        if problems:
            raise StageCheckError("the API specification has problems:\n- " + "\n- ".join(problems[:30]))
        return {"api_groups": groups}
    return check


def tool_summary(spec: dict[str, Any]) -> str:
    """One line per tool with its parameters: what later stages show the model."""
    lines = []
    for e in endpoints(spec):
        params = ", ".join(
            f"{n}: {p.get('type', 'any')}{'' if p.get('required') else '?'} ({p.get('param_type', 'query')})"
            for n, p in (e.get("request_params") or {}).items() if isinstance(p, dict))
        lines.append(f"- {e['operation_id']} [{str(e['method']).upper()} {e['path']}]({params}): {e.get('summary', '')}")
    return "\n".join(lines)


async def run_one(ctx: Ctx, scenario: dict[str, Any], tasks: list[str], schema_tables: list[dict[str, Any]]
                  ) -> dict[str, Any]:
    d = ctx.env_dir(scenario["id"])
    done = read_json(d / "spec.json")
    if done is not None:
        ctx.llm.accounting.stage(STAGE).skipped_resumed += 1
        return done
    spec = await generate_checked(ctx, STAGE, SYSTEM,
                                  prompt(scenario, tasks, schema_sql(schema_tables), ctx.opts.target_tools),
                                  check_spec(schema_tables), json_schema=SCHEMA)
    write_json(d / "spec.json", spec)
    return spec

