"""Stage 2: ten user tasks per scenario, concrete enough to be solved and verified against a seeded database."""

from __future__ import annotations

import json
from typing import Any

from agentworld.synth.stages.common import Ctx, StageCheckError, generate_checked, read_json, stage_marker, write_json

STAGE = "tasks"
SCHEMA = {"type": "object", "properties": {"tasks": {"type": "array", "items": {"type": "string"}}},
          "required": ["tasks"]}
SYSTEM = stage_marker(STAGE) + """
Given an application scenario, write tasks a user would ask an AI agent to carry out in that application through its
API. The agent acts as the logged-in user (user id 1). Rules:
- Each task is one or two sentences, concrete and self-contained: name the specific records involved (titles, names,
  dates, amounts) so that exactly one correct outcome exists; the database will be seeded to contain them.
- Mix kinds: about a third are questions with a definite, checkable answer (counts, totals, dates, names); the rest
  change data (create, update, cancel, book, pay, ...), each with an observable effect in the database.
- Tasks must be doable with ordinary CRUD endpoints of this application; no external services, email, files or
  real-time clocks; do not mention IDs the user could not know.
- Tasks must be different from each other."""


def prompt(scenario: dict[str, Any], n: int) -> str:
    return (f"Scenario: {scenario['id']}\nDescription: {scenario['description']}\n\n"
            f'Write exactly {n} tasks. Answer with a JSON object: {{"tasks": ["...", ...]}}.')


async def run_one(ctx: Ctx, scenario: dict[str, Any]) -> list[str]:
    path = ctx.env_dir(scenario["id"]) / "tasks.json"
    done = read_json(path)
    if done is not None:
        ctx.llm.accounting.stage(STAGE).skipped_resumed += 1
        return done["tasks"]
    n = ctx.opts.tasks_per_scenario

    def check(payload: dict, _c: Any) -> list[str]:
        tasks = payload.get("tasks")
        if not isinstance(tasks, list) or not all(isinstance(t, str) and t.strip() for t in tasks):
            raise StageCheckError('"tasks" must be a list of non-empty strings')
        tasks = [t.strip() for t in tasks]
        if len(tasks) != n:
            raise StageCheckError(f"expected exactly {n} tasks, got {len(tasks)}")
        dupes = sorted({t for t in tasks if tasks.count(t) > 1})
        if dupes:
            raise StageCheckError(f"tasks must be distinct; repeated: {json.dumps(dupes)}")
        return tasks

    tasks = await generate_checked(ctx, STAGE, SYSTEM, prompt(scenario, n), check, json_schema=SCHEMA)
    write_json(path, {"tasks": tasks})
    return tasks
