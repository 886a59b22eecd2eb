"""Stage 3: the SQLite schema, executed with foreign keys on; SQLite's error and the statement are fed back."""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any

from agentworld.synth.stages.common import Ctx, StageCheckError, generate_checked, read_json, stage_marker, write_json

STAGE = "schema"
SCHEMA = {
    "type": "object",
    "properties": {"tables": {"type": "array", "items": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "ddl": {"type": "string"},
                       "indexes": {"type": "array", "items": {"type": "string"}}},
        "required": ["name", "ddl"]}}},
    "required": ["tables"],
}
SYSTEM = stage_marker(STAGE) + """
Design the SQLite database of an application so that every given task can be carried out and checked. Rules:
- One `CREATE TABLE` statement per table (SQLite dialect), tables listed in dependency order (referenced first).
- `id INTEGER PRIMARY KEY AUTOINCREMENT` keys, FOREIGN KEY clauses for relations, CHECK constraints for enums,
  NOT NULL where sensible. Timestamps are TEXT/DATETIME columns; the logged-in user is row 1 of the users table.
- `indexes`: CREATE INDEX statements for common lookups.
- Realistic, normalised, 5-12 tables; include every entity and status the tasks need."""


def prompt(scenario: dict[str, Any], tasks: list[str]) -> str:
    return (f"Scenario: {scenario['id']}\nDescription: {scenario['description']}\n\nTasks:\n"
            + "\n".join(f"{i}. {t}" for i, t in enumerate(tasks))
            + '\n\nAnswer with a JSON object: {"tables": [{"name": ..., "ddl": "CREATE TABLE ...", '
              '"indexes": ["CREATE INDEX ..."]}, ...]}.')


def schema_sql(tables: list[dict[str, Any]]) -> str:
    parts = []
    for t in tables:
        stmts = [t["ddl"], *t.get("indexes", [])]
        parts.append(f"-- table: {t['name']}\n" + "\n".join(s.strip().rstrip(";") + ";" for s in stmts))
    return "\n\n".join(parts) + "\n"


def execute_schema(tables: list[dict[str, Any]]) -> sqlite3.Connection:
    """Run every statement on a fresh in-memory database; raises StageCheckError naming table, statement, error."""
    conn = sqlite3.connect(":memory:")
    conn.execute("PRAGMA foreign_keys=ON")
    for t in tables:
        for stmt in [t["ddl"], *t.get("indexes", [])]:
            try:
                conn.execute(stmt)
            except sqlite3.Error as exc:
                raise StageCheckError(f"SQLite error in table {t['name']!r}: {exc}\nstatement: {stmt}") from exc
    created = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    for t in tables:
        for fk in conn.execute(f'PRAGMA foreign_key_list("{t["name"]}")').fetchall():
            if fk[2] not in created:
                raise StageCheckError(f"table {t['name']!r} has a foreign key to {fk[2]!r}, which is not created")
    return conn


def check_tables(payload: dict, _c: Any = None) -> list[dict[str, Any]]:
    tables = payload.get("tables")
    if not isinstance(tables, list) or not tables:
        raise StageCheckError('"tables" must be a non-empty list')
    clean = []
    for t in tables:
        if not isinstance(t, dict) or not isinstance(t.get("ddl"), str) or not isinstance(t.get("name"), str):
            raise StageCheckError(f"each table needs string fields name and ddl; got {json.dumps(t)[:200]}")
        if not re.match(r"\s*CREATE\s+TABLE", t["ddl"], re.I):
            raise StageCheckError(f"ddl of table {t['name']!r} must be a CREATE TABLE statement")
        indexes = t.get("indexes") or []
        if not all(isinstance(i, str) for i in indexes):
            raise StageCheckError(f"indexes of table {t['name']!r} must be strings")
        clean.append({"name": t["name"], "ddl": t["ddl"].strip(), "indexes": [i.strip() for i in indexes]})
    names = [t["name"] for t in clean]
    if len(set(names)) != len(names):
        raise StageCheckError("table names must be unique")
    execute_schema(clean).close()
    return clean


async def run_one(ctx: Ctx, scenario: dict[str, Any], tasks: list[str]) -> list[dict[str, Any]]:
    d = ctx.env_dir(scenario["id"])
    done = read_json(d / "schema.json")
    if done is not None:
        ctx.llm.accounting.stage(STAGE).skipped_resumed += 1
        return done["tables"]
    tables = await generate_checked(ctx, STAGE, SYSTEM, prompt(scenario, tasks), check_tables, json_schema=SCHEMA)
    write_json(d / "schema.json", {"tables": tables})
    return tables
