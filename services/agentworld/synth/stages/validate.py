"""Stage 8: assemble the bundle, validate it in the runtime (child process), and self-correct.

Each round runs the validator; failures go back to the model with the concrete evidence (failing tool call, verifier
verdict, import traceback): per-task failures to the task's solution/verifier, environment-wide ones (or most tasks
failing) to app.py. After `validate_rounds` rounds, tasks that still fail are dropped with their reason; an
environment left with fewer than `min_tasks` tasks (or that does not load) is dropped. Only a bundle that passed is
written to the output directory.
"""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

from agentworld.bundle import Bundle, EnvManifest, Task, ToolCall, write_bundle
from agentworld.bundle.awm_import import app_operation_ids, app_title, build_verifiers
from agentworld.bundle.model import Counts
from agentworld.synth.stages import STAGE_ORDER
from agentworld.synth.stages import code as code_stage
from agentworld.synth.stages import solutions as solutions_stage
from agentworld.synth.stages.common import Ctx, StageFailed, read_json, write_json
from agentworld.synth.stages.sandbox import ChildJobError, run_job
from agentworld.synth.stages.schema import schema_sql
from agentworld.synth.stages.seed import seed_sql

STAGE = "validate"
_validate_slots: dict[int, asyncio.Semaphore] = {}


def assemble(ctx: Ctx, scenario: dict, tasks: list[str], schema_tables: list[dict], seed_tables: list[dict],
             app_py: str, solutions: dict[int, dict], active: list[int]) -> Bundle:
    probed = code_stage.load_probe(ctx, scenario["id"])
    verifiers_py, _ = build_verifiers({i: solutions[i]["verifier_code"] for i in active})
    verifiers_py = verifiers_py.replace(
        '"""Verifiers imported from AWM (gen_verifier.pure_code.jsonl); one section per task."""',
        '"""Verifiers written by the LLM synthesis pipeline; one section per task."""', 1)
    bundle_tasks = [
        Task(id=f"task_{i}", instruction=tasks[i], kind=solutions[i]["kind"], verifier=f"verify_task_{i}",
             solution=[ToolCall(**c) for c in solutions[i]["solution"]],
             expected_answer=solutions[i]["expected_answer"])
        for i in active
    ]
    manifest = EnvManifest(
        id=scenario["id"], title=app_title(app_py) or scenario["name"], description=scenario["description"],
        provenance={"source": "llm", "model": str(ctx.llm.spec), "stages": list(STAGE_ORDER),
                    "scenario": scenario["name"]},
        counts=Counts(tables=probed.get("tables", len(schema_tables)),
                      tools=len(probed.get("tools") or app_operation_ids(app_py) or []), tasks=len(bundle_tasks)),
    )
    return Bundle(manifest=manifest, schema_sql=schema_sql(schema_tables), seed_sql=seed_sql(seed_tables),
                  app_py=app_py, tasks=bundle_tasks, verifiers_py=verifiers_py)


async def validate_candidate(ctx: Ctx, bundle: Bundle) -> dict[str, Any]:
    """Write the candidate under .synth/candidates and validate it in a sandboxed child process."""
    slots = _validate_slots.setdefault(id(ctx), asyncio.Semaphore(max(1, ctx.opts.validate_workers)))
    target = write_bundle(bundle, ctx.work / "candidates")
    async with slots:
        try:
            return await run_job("validate_dir", str(target), timeout_s=ctx.opts.validate_timeout_s,
                                 workers=ctx.opts.validate_workers)
        except ChildJobError as exc:
            lines = str(exc).strip().splitlines()
            msg = "the validator failed: " + "\n".join(lines[-15:])
            return {"ok": False, "problems": [msg], "env_problems": [msg], "task_failures": {}}


def _idx(task_id: str) -> int:
    return int(task_id.rsplit("_", 1)[1])


async def run_one(ctx: Ctx, scenario: dict, tasks: list[str], schema_tables: list[dict], seed_tables: list[dict],
                  spec: dict, app_py: str, solutions: dict[int, dict]) -> dict[str, Any]:
    """Returns the outcome ({env_id, status, reason, dropped_tasks, rounds}); output: validate.json + the bundle."""
    env_id = scenario["id"]
    d = ctx.env_dir(env_id)
    done = read_json(d / "validate.json")
    stats = ctx.llm.accounting.stage(STAGE)
    if done is not None:
        stats.skipped_resumed += 1
        return done
    stats.units += 1
    active = sorted(solutions)
    dropped_tasks: dict[str, str] = {}
    result: dict[str, Any] = {}
    rounds = ctx.opts.validate_rounds
    for rnd in range(1, rounds + 1):
        bundle = assemble(ctx, scenario, tasks, schema_tables, seed_tables, app_py, solutions, active)
        result = await validate_candidate(ctx, bundle)
        if result["ok"]:
            break
        if rnd == rounds:
            break
        failures = {_idx(t): r for t, r in result["task_failures"].items()}
        try:
            if result["env_problems"] or len(failures) > len(active) / 2:
                feedback = "\n".join(result["env_problems"] + list(failures.values()))[:6000]
                app_py = await code_stage.run_one(ctx, scenario, spec, schema_tables, seed_tables, feedback=feedback)
            else:
                revised = await asyncio.gather(*(
                    solutions_stage.run_one(ctx, scenario, tasks, i, spec, schema_tables, seed_tables,
                                            code_stage.load_tools(ctx, scenario["id"]), feedback=r)
                    for i, r in failures.items()), return_exceptions=True)
                for i, rev in zip(failures, revised, strict=True):
                    if isinstance(rev, dict):
                        solutions[i] = rev
                    elif not isinstance(rev, StageFailed):
                        raise rev
        except StageFailed as exc:
            ctx.notes.append(f"{env_id}: correction round {rnd} failed: {exc}")
    outcome: dict[str, Any] = {"env_id": env_id, "status": "validated", "reason": "", "rounds": rnd,
                               "dropped_tasks": dropped_tasks, "validator": result.get("validator", "")}
    if not result["ok"]:
        if result["env_problems"]:
            outcome.update(status="dropped", reason="; ".join(result["env_problems"])[:600])
        else:
            for tid, reason in result["task_failures"].items():
                dropped_tasks[tid] = reason[:600]
            active = [i for i in active if f"task_{i}" not in dropped_tasks]
            if len(active) < ctx.opts.min_tasks:
                outcome.update(status="dropped", reason=f"only {len(active)} tasks pass after {rounds} rounds "
                               f"(need {ctx.opts.min_tasks}); e.g. {next(iter(dropped_tasks.values()), '')[:300]}")
            else:
                bundle = assemble(ctx, scenario, tasks, schema_tables, seed_tables, app_py, solutions, active)
                again = await validate_candidate(ctx, bundle)
                if not again["ok"]:
                    outcome.update(status="dropped", reason="still failing without the failed tasks: "
                                   + "; ".join(again["problems"])[:500])
    if rnd == 1 and result["ok"]:
        stats.first_attempt_ok += 1
    stats.feedback_retries += rnd - 1
    outcome["tasks"] = len(active)
    if outcome["status"] == "validated":
        final = write_bundle(bundle, ctx.out)
        outcome["bundle"] = str(final)
        outcome["content_hash"] = bundle.manifest.content_hash
    else:
        stats.failed += 1
    shutil.rmtree(ctx.work / "candidates" / env_id, ignore_errors=True)
    write_json(d / "validate.json", outcome)
    return outcome

