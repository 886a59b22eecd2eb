"""Stage 4: seed data as INSERT statements, executed after the schema with foreign keys on; errors fed back.

Wall-clock calls in the inserts are pinned to the fixed instant (as the AWM importer does); a row that still picks up
the current time from a column default is reported back, so seed.sql stays deterministic.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from typing import Any

from agentworld.bundle.awm_import import FIXED_INSTANT, pin_wall_clock, reads_wall_clock
from agentworld.synth.stages.common import Ctx, StageCheckError, generate_checked, read_json, stage_marker, write_json
from agentworld.synth.stages.schema import execute_schema, schema_sql

STAGE = "seed"
SCHEMA = {
    "type": "object",
    "properties": {"tables": {"type": "array", "items": {
        "type": "object",
        "properties": {"table_name": {"type": "string"}, "reasoning": {"type": "string"},
                       "insert_statements": {"type": "array", "items": {"type": "string"}}},
        "required": ["table_name", "insert_statements"]}}},
    "required": ["tables"],
}
SYSTEM = stage_marker(STAGE) + f"""
Write the initial data of an application's SQLite database so that every given task is solvable and has exactly one
correct outcome. Rules:
- Plain `INSERT INTO table (columns...) VALUES (...);` statements, one row each, with explicit ids; tables in
  dependency order (referenced rows first); foreign keys are enforced.
- The logged-in user is id 1 of the users table. Include the specific records the tasks mention, plus a few
  distractors so that lookups are not trivial (5-20 rows per main table).
- Today is {FIXED_INSTANT[:10]}. Give an explicit literal value for every date/time column (never CURRENT_TIMESTAMP,
  datetime('now') or other clock functions, and never rely on a clock default).
- For each table, one sentence of `reasoning` about what the rows enable."""


def prompt(scenario: dict[str, Any], tasks: list[str], schema: str) -> str:
    return (f"Scenario: {scenario['id']}\nDescription: {scenario['description']}\n\nTasks:\n"
            + "\n".join(f"{i}. {t}" for i, t in enumerate(tasks))
            + f"\n\nSchema:\n{schema}\n"
            + 'Answer with a JSON object: {"tables": [{"table_name": ..., "reasoning": ..., '
              '"insert_statements": ["INSERT INTO ...;", ...]}, ...]}.')


def seed_sql(tables: list[dict[str, Any]]) -> str:
    parts = []
    for t in tables:
        stmts = [s.strip().rstrip(";") + ";" for s in t["insert_statements"]]
        parts.append(f"-- table: {t['table_name']}\n" + "\n".join(stmts))
    return "\n\n".join(parts) + "\n"


def execute_seed(schema_tables: list[dict[str, Any]], seed_tables: list[dict[str, Any]]) -> sqlite3.Connection:
    conn = execute_schema(schema_tables)
    known = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    for t in seed_tables:
        if t["table_name"] not in known:
            raise StageCheckError(f"table {t['table_name']!r} does not exist in the schema (tables: {sorted(known)})")
        for stmt in t["insert_statements"]:
            try:
                conn.execute(stmt)
            except sqlite3.Error as exc:
                raise StageCheckError(f"SQLite error while seeding table {t['table_name']!r}: {exc}\n"
                                      f"statement: {stmt}") from exc
    bad = conn.execute("PRAGMA foreign_key_check").fetchall()
    if bad:
        raise StageCheckError(f"foreign key violations (table, rowid, parent): {bad[:5]}")
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    for table in sorted(known - {"sqlite_sequence"}):
        cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
        for row in conn.execute(f'SELECT * FROM "{table}"'):
            for col, value in zip(cols, row, strict=True):
                if isinstance(value, str) and value.startswith(today) and today != FIXED_INSTANT[:10]:
                    raise StageCheckError(f"column {table}.{col} got the current date from a default ({value}); "
                                          "give every date/time column an explicit value in the INSERT")
    return conn


def check_seed(schema_tables: list[dict[str, Any]]):
    def check(payload: dict, _c: Any = None) -> list[dict[str, Any]]:
        tables = payload.get("tables")
        if isinstance(payload, dict) and tables is None and isinstance(payload.get("sample_data"), dict):
            tables = payload["sample_data"].get("tables")
        if not isinstance(tables, list) or not tables:
            raise StageCheckError('"tables" must be a non-empty list')
        clean = []
        for t in tables:
            stmts = t.get("insert_statements") if isinstance(t, dict) else None
            if not isinstance(stmts, list) or not all(isinstance(s, str) for s in stmts):
                raise StageCheckError("each table needs table_name and a list of insert_statements strings")
            clean.append({"table_name": str(t.get("table_name", "")), "reasoning": str(t.get("reasoning", "")),
                          "insert_statements": [pin_wall_clock(s.strip()) for s in stmts if s.strip()]})
        if sum(len(t["insert_statements"]) for t in clean) == 0:
            raise StageCheckError("no INSERT statements given")
        if reads_wall_clock(seed_sql(clean)):  # what `agentworld validate` rejects: caught here, fed back here
            raise StageCheckError("the seed reads the wall clock (CURRENT_TIMESTAMP, 'now'); write literal dates such "
                                  "as '2025-06-01 12:00:00' instead")
        execute_seed(schema_tables, clean).close()
        return clean
    return check


async def run_one(ctx: Ctx, scenario: dict[str, Any], tasks: list[str], schema_tables: list[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
    d = ctx.env_dir(scenario["id"])
    done = read_json(d / "seed.json")
    if done is not None:
        ctx.llm.accounting.stage(STAGE).skipped_resumed += 1
        return done["tables"]
    tables = await generate_checked(ctx, STAGE, SYSTEM, prompt(scenario, tasks, schema_sql(schema_tables)),
                                    check_seed(schema_tables), json_schema=SCHEMA)
    write_json(d / "seed.json", {"tables": tables})
    return tables
