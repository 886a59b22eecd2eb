"""The offline backend end to end: plan, then generate + validate + write in a process pool.

Workers rebuild their scenario from (seed, index, attempt), so only integers cross process boundaries.
Each worker validates with `agentworld.validate.validate_bundle` (the same check `agentworld validate`
runs) through its own sandboxes (environment code, verifiers), then writes the bundle. A bundle that fails
validation is not written: a failure is a generator bug, reported with its problems.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agentworld.synth.compose import build_scenario, plan_scenarios

REPORT_NAME = "synth-report.json"
TASKS_PER_WORKER = 64


@dataclass
class EnvResult:
    index: int
    env_id: str
    title: str = ""
    domains: list[str] = field(default_factory=list)
    content_hash: str = ""
    tools: int = 0
    tables: int = 0
    tasks: int = 0
    long_tasks: int = 0
    query_tasks: int = 0
    table_names: list[str] = field(default_factory=list)
    tool_names: list[str] = field(default_factory=list)
    validated: bool = False
    ok: bool = False
    problems: list[str] = field(default_factory=list)
    generate_s: float = 0.0
    validate_s: float = 0.0
    resumed: bool = False


@dataclass
class SynthReport:
    seed: int
    n: int
    out: str
    results: list[EnvResult]
    wall_s: float = 0.0
    workers: int = 1

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def to_json(self) -> str:
        return json.dumps({"seed": self.seed, "n": self.n, "workers": self.workers, "wall_s": round(self.wall_s, 2),
                           "results": [asdict(r) for r in self.results]}, indent=1, sort_keys=True)


_SANDBOXES: tuple[Any, Any] | None = None  # this worker's verifier pool and environment sandbox, made on first use


def _sandboxes() -> tuple[Any, Any]:
    """(verifier pool, environment sandbox), shared by every bundle this process validates."""
    global _SANDBOXES
    if _SANDBOXES is None:
        import atexit
        import multiprocessing.util

        from agentworld.runtime.envcode.host import Sandbox
        from agentworld.runtime.sandbox import VerifierPool

        pool, sandbox = VerifierPool(workers=1), Sandbox()
        _SANDBOXES = pool, sandbox
        for close in (pool.close, sandbox.close):  # pool workers leave through multiprocessing's exit path too
            multiprocessing.util.Finalize(pool, close, exitpriority=10)
            atexit.register(close)
    return _SANDBOXES


def _warm() -> None:
    """Worker initializer: pay the import and Faker-pool costs once per process, not per environment."""
    import fastapi  # noqa: F401
    import sqlalchemy.orm  # noqa: F401

    from agentworld.synth.data import _pools

    _pools()


def generate_one(seed: int, index: int, attempt: int, out: str | None, validate: bool) -> EnvResult:
    """Generate scenario `index`, validate it, write it under `out` (if given and valid)."""
    from agentworld.bundle import write_bundle
    from agentworld.synth.generate import bundle_for
    from agentworld.synth.tools import tool_defs

    started = time.perf_counter()
    scenario = build_scenario(seed, index, attempt)
    result = EnvResult(index=index, env_id=scenario.env_id, title=scenario.title,
                       domains=[scenario.primary, *scenario.secondaries],
                       table_names=[t.name for t in scenario.tables],
                       tool_names=[d.name for d in tool_defs(scenario)])
    try:
        bundle = bundle_for(scenario)
    except Exception as exc:  # a generator bug: report it, keep the batch going
        result.problems.append(f"generation failed: {type(exc).__name__}: {exc}")
        result.generate_s = time.perf_counter() - started
        return result
    result.generate_s = time.perf_counter() - started
    result.content_hash = bundle.manifest.content_hash
    result.tools, result.tables, result.tasks = (bundle.manifest.counts.tools, bundle.manifest.counts.tables,
                                                 len(bundle.tasks))
    result.long_tasks = sum(len(t.solution) >= 3 for t in bundle.tasks)
    result.query_tasks = sum(t.kind == "query" for t in bundle.tasks)
    if validate:
        from agentworld.validate import validate_bundle

        v_started = time.perf_counter()
        pool, sandbox = _sandboxes()
        report = validate_bundle(bundle, verifier_pool=pool, sandbox=sandbox)
        if not report.ok and all("DeadlineExceeded" in p for p in report.all_problems()):
            # A call that overran its deadline on an overloaded machine is not a generator bug: one more try.
            report = validate_bundle(bundle, verifier_pool=pool, sandbox=sandbox)
        result.validate_s = time.perf_counter() - v_started
        result.validated = True
        result.problems += report.all_problems()
    result.ok = not result.problems
    if out is not None and result.ok:
        write_bundle(bundle, Path(out))
    return result


def _resumable(out: Path, env_id: str, previous: dict[str, dict]) -> EnvResult | None:
    prev = previous.get(env_id)
    if not prev or not prev.get("ok") or not (out / env_id / "env.json").is_file():
        return None
    try:
        manifest = json.loads((out / env_id / "env.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if manifest.get("content_hash") != prev.get("content_hash"):
        return None
    known = EnvResult.__dataclass_fields__
    result = EnvResult(**{k: v for k, v in prev.items() if k in known})
    result.resumed = True
    return result


def synthesize(n: int, seed: int = 0, out: Path | None = None, workers: int | None = None, resume: bool = False,
               validate: bool = True, on_result: Callable[[EnvResult], None] | None = None) -> SynthReport:
    """Generate n environments (validated unless validate=False); writes bundles and synth-report.json to out."""
    started = time.perf_counter()
    workers = max(1, workers or os.cpu_count() or 1)
    attempts = plan_scenarios(seed, n)
    previous: dict[str, dict] = {}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if resume and (out / REPORT_NAME).is_file():
            try:
                previous = {r["env_id"]: r for r in json.loads((out / REPORT_NAME).read_text())["results"]}
            except (OSError, json.JSONDecodeError, KeyError):
                previous = {}
    results: dict[int, EnvResult] = {}
    todo: list[int] = []
    for i in range(n):
        resumed = _resumable(out, build_scenario(seed, i, attempts[i]).env_id, previous) if previous and out else None
        if resumed is not None:
            results[i] = resumed
            if on_result:
                on_result(resumed)
        else:
            todo.append(i)
    out_s = str(out) if out is not None else None
    if workers == 1 or len(todo) <= 1:
        _warm()
        for i in todo:
            results[i] = generate_one(seed, i, attempts[i], out_s, validate)
            if on_result:
                on_result(results[i])
    else:
        import multiprocessing

        # fork: workers inherit the imported modules, and callers' scripts need no __main__ guard. The parent's
        # threads (a rich progress refresher) hold no lock the workers need: they never touch the console.
        ctx = multiprocessing.get_context("fork")
        _warm()  # once here, so every (re)forked worker starts warm
        # Validating keeps ~4 MB per environment alive in a worker (loaded apps are not fully freed), so workers
        # are recycled every TASKS_PER_WORKER environments to bound memory on 1,000+ environment runs.
        chunk = min(workers, len(todo)) * TASKS_PER_WORKER
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            with ProcessPoolExecutor(max_workers=min(workers, len(part)), mp_context=ctx) as pool:
                futures = {pool.submit(generate_one, seed, i, attempts[i], out_s, validate): i for i in part}
                for fut in as_completed(futures):
                    i = futures[fut]
                    results[i] = fut.result()
                    if on_result:
                        on_result(results[i])
    report = SynthReport(seed=seed, n=n, out=str(out or ""), results=[results[i] for i in range(n)],
                         wall_s=time.perf_counter() - started, workers=workers)
    if out is not None:
        (out / REPORT_NAME).write_text(report.to_json() + "\n")
    return report
