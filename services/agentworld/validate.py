"""`agentworld validate`: prove a bundle works by running it.

A bundle is valid when its schema and seed execute (foreign keys on, no wall clock in the seed), its app
imports and every route is a tool with a JSON Schema, every task's reference solution replayed in a fresh
session makes its verifier say `complete`, and on the untouched database every verifier refuses to
(mutation tasks with no change, query tasks with no answer).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agentworld.bundle import Bundle, BundleError, compute_content_hash, load_bundle
from agentworld.bundle.awm_import import reads_wall_clock
from agentworld.runtime import EnvRuntime, RuntimeConfig
from agentworld.runtime.errors import EnvError


@dataclass
class TaskCheck:
    task_id: str
    kind: str
    calls: int
    solved: str = ""  # verifier outcome after replaying the reference solution
    untouched: str = ""  # verifier outcome on the initial database (no answer)
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem


@dataclass
class ValidationReport:
    env_id: str
    path: str = ""
    tools: int = 0
    tables: int = 0
    problems: list[str] = field(default_factory=list)
    tasks: list[TaskCheck] = field(default_factory=list)
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems and all(t.ok for t in self.tasks)

    def all_problems(self) -> list[str]:
        return self.problems + [f"{t.task_id}: {t.problem}" for t in self.tasks if t.problem]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def validate_bundle(bundle: Bundle, verifier_pool=None, sandbox=None) -> ValidationReport:
    """Run every check on one bundle; never raises for a broken bundle, reports it instead. `verifier_pool` and
    `sandbox` may be shared across bundles (each bundle still gets a zygote of its own)."""
    started = time.perf_counter()
    report = ValidationReport(env_id=bundle.env_id, path=str(bundle.path or ""))
    if bundle.path is not None and bundle.manifest.content_hash != compute_content_hash(bundle):
        report.problems.append("env.json content_hash does not match the files (edited after it was written?)")
    if reads_wall_clock(bundle.seed_sql):
        report.problems.append("seed.sql uses a wall-clock function (CURRENT_TIMESTAMP, 'now'): seeds must be fixed")
    config = RuntimeConfig(idle_ttl_s=0, workers=1, verifier_workers=1)
    try:
        runtime = EnvRuntime([bundle], config, verifier_pool=verifier_pool, sandbox=sandbox)
    except EnvError as exc:
        report.problems.append(str(exc))
        report.duration_ms = (time.perf_counter() - started) * 1000
        return report
    with runtime:
        env = runtime.env(bundle.env_id)
        report.tools, report.tables = env.info.tool_count, env.info.table_count
        for tool in env.tools.values():
            if tool.input_schema.get("type") != "object" or not isinstance(tool.input_schema.get("properties"), dict):
                report.problems.append(f"tool {tool.name}: input schema is not an object schema")
        counts = bundle.manifest.counts
        actual = {"tools": report.tools, "tables": report.tables, "tasks": len(bundle.tasks)}
        for key, value in actual.items():
            if getattr(counts, key) != value:
                report.problems.append(f"env.json counts.{key} is {getattr(counts, key)} but the bundle has {value}")
        if not bundle.tasks:
            report.problems.append("no tasks")
        for task in bundle.tasks:
            report.tasks.append(_check_task(runtime, bundle, task))
    report.duration_ms = (time.perf_counter() - started) * 1000
    return report


def _check_task(runtime: EnvRuntime, bundle: Bundle, task) -> TaskCheck:
    check = TaskCheck(task.id, task.kind, len(task.solution))
    if not re.search(rf"^def {re.escape(task.verifier)}\(", bundle.verifiers_py, re.MULTILINE):
        check.problem = f"verifiers.py has no function {task.verifier}"
        return check
    if task.kind == "query" and task.expected_answer is None:
        check.problem = "query task without an expected_answer"
        return check
    try:
        session = runtime.create_session(bundle.env_id, task.id)
        untouched = runtime.verify(session.session_id, task.id, None)
        check.untouched = untouched.outcome
        for step, call in enumerate(task.solution, 1):
            result = runtime.call_tool(session.session_id, call.tool, call.arguments)
            if result.is_error:
                check.problem = f"solution step {step} {call.tool} failed ({result.http_status}): {result.content[:300]}"
                return check
        solved = runtime.verify(session.session_id, task.id, task.expected_answer)
        check.solved = solved.outcome
        runtime.close_session(session.session_id)
    except EnvError as exc:
        check.problem = f"{type(exc).__name__}: {exc}"
        return check
    if solved.outcome != "complete":
        check.problem = f"reference solution gives {solved.outcome!r}, not complete: {_short(solved.details)}"
    elif untouched.outcome == "complete":
        what = "untouched database" if task.kind == "mutation" else "no final answer"
        check.problem = f"verifier says complete with {what}: it does not discriminate"
    elif untouched.outcome == "error":
        check.problem = f"verifier crashed on the untouched database: {_short(untouched.details)}"
    return check


def _short(details: dict) -> str:
    text = str(details)
    return text if len(text) <= 300 else text[:300] + "…"


def validate_paths(paths: Iterable[Path], on_report: Callable[[ValidationReport], None] | None = None,
                   ) -> list[ValidationReport]:
    """Validate bundles on disk with one shared sandbox and verifier pool; unreadable bundles become failed reports."""
    from agentworld.runtime.envcode.host import Sandbox
    from agentworld.runtime.sandbox import VerifierPool

    reports = []
    sandbox = Sandbox()
    with contextlib.closing(sandbox), VerifierPool(workers=1) as pool:
        for path in paths:
            try:
                report = validate_bundle(load_bundle(path), verifier_pool=pool, sandbox=sandbox)
            except BundleError as exc:
                report = ValidationReport(env_id=Path(path).name, path=str(path), problems=[str(exc)])
            reports.append(report)
            if on_report:
                on_report(report)
    return reports
