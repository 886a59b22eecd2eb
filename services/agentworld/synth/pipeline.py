"""The LLM synthesis pipeline: scenarios -> tasks -> schema -> seed -> spec -> code -> solutions -> validate.

Stage-major: every stage finishes (its output on disk under <out>/.synth) for all environments before the next starts,
so a killed run resumes from the last finished unit; requests already answered come from the response cache.
`agentworld synth --llm ...` calls `run_llm_pipeline`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agentworld.llm import LLMClient, LLMConfigError, PriceTable, RetryPolicy, parse_llm_spec
from agentworld.llm.accounting import Accounting, StageStats
from agentworld.llm.prices import output_limit
from agentworld.synth.stages import STAGE_ORDER
from agentworld.synth.stages import code as code_stage
from agentworld.synth.stages import scenarios as scenarios_stage
from agentworld.synth.stages import schema as schema_stage
from agentworld.synth.stages import seed as seed_stage
from agentworld.synth.stages import solutions as solutions_stage
from agentworld.synth.stages import spec as spec_stage
from agentworld.synth.stages import tasks as tasks_stage
from agentworld.synth.stages import validate as validate_stage
from agentworld.synth.stages.common import Ctx, StageFailed, SynthOptions, read_json, write_json

DEFAULT_SEED_PATH = Path(__file__).resolve().parents[3] / ".." / "shared" / "awm" / "seed_scenario.jsonl"
ENV_STAGES = STAGE_ORDER[1:]
OUTPUT_FILES = {"tasks": "tasks.json", "schema": "schema.json", "seed": "seed.json", "spec": "spec.json",
                "code": "app.py", "validate": "validate.json"}


class PipelineError(Exception):
    """The run cannot start or continue (bad options, an existing run without --resume, no scenarios)."""


@dataclass
class PipelineReport:
    llm: str
    out: Path
    stages: dict[str, StageStats]
    validated: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)  # {env_id, stage, reason}
    dropped_tasks: list[dict[str, Any]] = field(default_factory=list)  # {env_id, task_id, reason}
    scenarios_rejected: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    ran_validate: bool = False

    @property
    def ok(self) -> bool:
        """False when validation ran and not a single environment passed (the CLI exits 1)."""
        return bool(self.validated) or not self.ran_validate

    @property
    def total(self) -> StageStats:
        return Accounting(dict(self.stages)).totals()

    def to_dict(self) -> dict[str, Any]:
        acc = Accounting(dict(self.stages))
        return {"llm": self.llm, "out": str(self.out), "stages": acc.to_dict(), "total": acc.totals().__dict__,
                "validated": self.validated, "dropped": self.dropped, "dropped_tasks": self.dropped_tasks,
                "scenarios_rejected": self.scenarios_rejected, "notes": self.notes, "elapsed_s": self.elapsed_s}

    def stage_table(self) -> Table:
        t = Table(title=f"LLM synthesis ({self.llm})", title_justify="left")
        for col in ("stage", "units", "1st-try ok", "fb retries", "http retries", "requests", "cache hits",
                    "tokens in", "prompt-cached", "tokens out", "cost USD"):
            t.add_column(col, justify="left" if col == "stage" else "right")

        def row(name: str, s: StageStats, style: str | None = None) -> None:
            first = f"{s.first_attempt_ok}/{s.units}" if s.units else "-"
            if s.skipped_resumed:
                first += f" (+{s.skipped_resumed} resumed)"
            cost = f"{s.cost_usd:.4f}" + ("*" if s.unpriced_requests else "")
            t.add_row(name, str(s.units), first, str(s.feedback_retries), str(s.transport_retries), str(s.requests),
                      str(s.cache_hits), f"{s.input_tokens:,}", f"{s.cache_read_tokens:,}", f"{s.output_tokens:,}", cost,
                      style=style)

        for name in STAGE_ORDER:
            if name in self.stages:
                row(name, self.stages[name])
        t.add_section()
        row("total", self.total, style="bold")
        return t

    def outcome_table(self) -> Table:
        t = Table(title=f"Environments: {len(self.validated)} validated, {len(self.dropped)} dropped",
                  title_justify="left")
        for col in ("environment", "status", "tasks", "detail"):
            t.add_column(col)
        for v in self.validated:
            n_drop = sum(1 for d in self.dropped_tasks if d["env_id"] == v["env_id"])
            t.add_row(v["env_id"], "[green]validated[/]", str(v.get("tasks", "")),
                      f"{n_drop} task(s) dropped" if n_drop else "all tasks pass")
        for d in self.dropped:
            t.add_row(d["env_id"], "[red]dropped[/]", "-", f"{d['stage']}: {d['reason']}")
        for d in self.dropped_tasks:
            t.add_row(f"  {d['env_id']}/{d['task_id']}", "[yellow]task dropped[/]", "", d["reason"][:200])
        return t

    def renderable(self) -> Group:
        parts: list[Any] = [self.stage_table(), self.outcome_table()]
        if self.scenarios_rejected:
            parts.append(f"{len(self.scenarios_rejected)} generated scenario(s) rejected as near-duplicates or "
                         "name clashes")
        parts.append("cache hits: answers reused from the response cache (not paid again); prompt-cached: input "
                     "tokens the provider served from its prompt cache (billed at its discount)")
        if any(s.unpriced_requests for s in self.stages.values()):
            parts.append("* some requests used a model without a price (see --prices); their cost is counted as 0")
        parts += [f"note: {n}" for n in self.notes]
        return Group(*parts)

    def render(self, width: int = 160) -> str:
        console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
        console.print(self.renderable())
        return console.export_text()


class _StageProgress:
    def __init__(self, enabled: bool, console: Console | None) -> None:
        self.progress = Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console or Console(stderr=True), disable=not enabled)
        self.ids: dict[str, Any] = {}

    def start(self, stage: str, total: int) -> None:
        self.ids[stage] = self.progress.add_task(stage, total=total)

    def advance(self, stage: str) -> None:
        if stage in self.ids:
            self.progress.advance(self.ids[stage])


ENV_OPTIONS = {  # settings the CLI has no flags for can come from the environment
    "AGENTWORLD_LLM_PRICES": ("prices", str),
    "AGENTWORLD_LLM_CONCURRENCY": ("concurrency", int),
    "AGENTWORLD_LLM_EMBEDDINGS": ("embeddings", str),
    "AGENTWORLD_LLM_CACHE": ("cache_dir", str),
    "AGENTWORLD_LLM_MAX_ATTEMPTS": ("max_attempts", int),
    "AGENTWORLD_SEED_SCENARIOS": ("seed_path", str),
}


def _split_options(options: dict[str, Any]) -> tuple[SynthOptions, dict[str, Any]]:
    for var, (name, kind) in ENV_OPTIONS.items():
        if name not in options and os.environ.get(var):
            try:
                options[name] = kind(os.environ[var])
            except ValueError as exc:
                raise PipelineError(f"{var}={os.environ[var]!r}: {exc}") from exc
    names = {f.name for f in fields(SynthOptions)}
    opts = SynthOptions(**{k: v for k, v in options.items() if k in names})
    rest = {k: v for k, v in options.items() if k not in names}
    known = {"cache_dir", "no_cache", "concurrency", "timeout_s", "max_retries", "retry_base_delay_s", "prices", "price_input",
             "price_output", "structured", "console", "on_stage_done", "print_report"}
    unknown = sorted(set(rest) - known)
    if unknown:
        raise PipelineError(f"unknown pipeline option(s): {', '.join(unknown)}")
    return opts, rest


def run_llm_pipeline(llm: str, n: int, out: Path, stages: list[str] | None = None, resume: bool = False,
                     seed: int = 0, **options: Any) -> PipelineReport:
    """Synthesise up to `n` validated environments into `out` with the LLM `llm` (PROVIDER:MODEL[@URL]).

    Options (all optional): seed_path, tasks_per_scenario, min_tasks, target_tools, max_attempts, validate_rounds,
    dedup_threshold, embeddings ("openai:MODEL[@URL]"), temperature, max_tokens, code_max_tokens, concurrency,
    timeout_s, max_retries, retry_base_delay_s, prices (JSON/TOML file), price_input/price_output (USD per million
    tokens for this model), structured ("auto"|"schema"|"object"|"none"), cache_dir, no_cache, show_progress,
    print_report, console (a rich Console), on_stage_done (callback(stage) after each finished stage).
    """
    return asyncio.run(arun_llm_pipeline(llm, n, out, stages, resume, seed, **options))


async def arun_llm_pipeline(llm: str, n: int, out: Path, stages: list[str] | None = None, resume: bool = False,
                            seed: int = 0, **options: Any) -> PipelineReport:
    started = time.monotonic()
    opts, rest = _split_options({**options, "n": n, "seed": seed})
    llm = llm or os.environ.get("AGENTWORLD_LLM", "")
    selected = list(STAGE_ORDER) if not stages else [s.strip() for s in stages if s.strip()]
    bad = [s for s in selected if s not in STAGE_ORDER]
    if bad:
        raise PipelineError(f"unknown stage(s) {bad}; stages are {', '.join(STAGE_ORDER)}")
    spec = parse_llm_spec(llm)
    out = Path(out)
    work = out / ".synth"
    state_path = work / "state.json"
    if state_path.exists() and not resume:
        raise PipelineError(f"{out} already holds a synthesis run; pass --resume to continue it or pick a new --out")
    seed_path = Path(opts.seed_path) if opts.seed_path else DEFAULT_SEED_PATH
    if "scenarios" in selected and not seed_path.is_file():
        raise PipelineError(f"seed scenarios not found at {seed_path} (set seed_path)")
    work.mkdir(parents=True, exist_ok=True)
    write_json(state_path, {"llm": str(spec), "n": n, "seed": seed})

    limit = output_limit(spec.model)
    if limit is not None:
        opts.max_tokens, opts.code_max_tokens = min(opts.max_tokens, limit), min(opts.code_max_tokens, limit)
    prices = PriceTable.load(rest.get("prices"), model=spec.model, input_price=rest.get("price_input"),
                             output_price=rest.get("price_output"))
    retry = RetryPolicy(max_retries=rest.get("max_retries", 6), base_delay_s=rest.get("retry_base_delay_s", 1.0))
    accounting = Accounting()
    cache_dir = None if rest.get("no_cache") else (rest.get("cache_dir") or work / "llm_cache")
    client = LLMClient(spec, cache_dir=cache_dir,
                       concurrency=rest.get("concurrency", 8), timeout_s=rest.get("timeout_s", 600.0), retry=retry,
                       prices=prices, structured=rest.get("structured", "auto"), accounting=accounting,
                       rng_seed=seed)
    embedder = None
    if opts.embeddings:
        emb = parse_llm_spec(opts.embeddings)
        if emb.provider != "openai":
            raise LLMConfigError("embeddings must be openai:MODEL[@URL]")
        if spec.provider == "openai" and emb.base_url in (None, spec.base_url):
            embedder = client
        else:
            embedder = LLMClient(emb, prices=prices, accounting=accounting, retry=retry)
    console: Console | None = rest.get("console")
    progress = _StageProgress(opts.show_progress, console)
    ctx = Ctx(llm=client, opts=opts, work=work, out=out, on_unit_done=progress.advance, embedder=embedder)
    on_stage_done: Callable[[str], None] = rest.get("on_stage_done") or (lambda stage: None)
    report = PipelineReport(llm=str(spec), out=out, stages=accounting.stages)
    try:
        with progress.progress:
            await _run_stages(ctx, selected, seed_path, progress, on_stage_done, report)
    finally:
        await client.close()
        if embedder is not None and embedder is not client:
            await embedder.close()
    report.notes += ctx.notes
    report.elapsed_s = round(time.monotonic() - started, 2)
    write_json(work / "report.json", report.to_dict())
    if rest.get("print_report", True):
        (console or Console()).print(report.renderable())
    return report


async def _run_stages(ctx: Ctx, selected: list[str], seed_path: Path, progress: _StageProgress,
                      on_stage_done: Callable[[str], None], report: PipelineReport) -> None:
    if "scenarios" in selected:
        progress.start("scenarios", ctx.opts.n)
        try:
            scenarios = await scenarios_stage.run(ctx, scenarios_stage.load_seeds(seed_path))
        except StageFailed as exc:
            raise PipelineError(f"scenario generation failed: {exc.reason}") from exc
        on_stage_done("scenarios")
    else:
        saved = read_json(ctx.work / "scenarios.json")
        if saved is None:
            raise PipelineError("no scenarios yet: run the scenarios stage first")
        scenarios = saved["accepted"][: ctx.opts.n]
    saved = read_json(ctx.work / "scenarios.json") or {}
    report.scenarios_rejected = saved.get("rejected", [])
    if not scenarios:
        raise PipelineError("no scenarios were accepted")

    envs: dict[str, dict[str, Any]] = {s["id"]: {"scenario": s} for s in scenarios}
    dropped: dict[str, dict[str, Any]] = {}
    for env_id in list(envs):
        prior = read_json(ctx.env_dir(env_id) / "dropped.json")
        if prior is not None:
            dropped[env_id] = prior
            envs.pop(env_id)

    report.ran_validate = "validate" in selected
    for stage in ENV_STAGES:
        active = [e for e in envs if e not in dropped]
        if stage not in selected:
            stopped = 0
            for env_id in active:  # later stages may still run on outputs already on disk
                if not _has_output(ctx, stage, envs[env_id]):
                    envs.pop(env_id)
                    stopped += 1
                else:
                    envs[env_id][stage] = await _run_unit(ctx, stage, envs[env_id])
            if stopped and any(s in selected for s in ENV_STAGES[ENV_STAGES.index(stage) + 1:]):
                ctx.notes.append(f"{stopped} environment(s) stopped before {stage}: stage not selected, no output")
            continue
        units = sum(len(envs[e]["tasks"]) for e in active) if stage == "solutions" else len(active)
        progress.start(stage, units)
        results = await asyncio.gather(*(_run_unit(ctx, stage, envs[e], progress) for e in active),
                                       return_exceptions=True)
        for env_id, res in zip(active, results, strict=True):
            if isinstance(res, StageFailed):
                dropped[env_id] = {"env_id": env_id, "stage": res.stage, "reason": res.reason}
                write_json(ctx.env_dir(env_id) / "dropped.json", dropped[env_id])
                envs.pop(env_id)
            elif isinstance(res, BaseException):
                raise res
            else:
                envs[env_id][stage] = res
        on_stage_done(stage)

    for env_id, env in envs.items():
        outcome = env.get("validate")
        if outcome is None:
            continue
        if outcome["status"] == "validated":
            report.validated.append({"env_id": env_id, "bundle": outcome.get("bundle"),
                                     "tasks": outcome.get("tasks"),
                                     "rounds": outcome["rounds"], "validator": outcome.get("validator", "")})
        else:
            dropped[env_id] = {"env_id": env_id, "stage": "validate", "reason": outcome["reason"]}
        for tid, reason in outcome["dropped_tasks"].items():
            report.dropped_tasks.append({"env_id": env_id, "task_id": tid, "reason": reason})
    report.dropped = list(dropped.values())


def _has_output(ctx: Ctx, stage: str, env: dict[str, Any]) -> bool:
    d = ctx.work / "envs" / env["scenario"]["id"]
    if stage == "solutions":
        n = len(env.get("tasks") or [])
        return n > 0 and all((d / "solutions" / f"task_{i}.json").exists() for i in range(n))
    return (d / OUTPUT_FILES[stage]).exists()


async def _run_unit(ctx: Ctx, stage: str, env: dict[str, Any], progress: _StageProgress | None = None) -> Any:
    """One environment through one stage (for solutions: each of its tasks, concurrently)."""
    sc = env["scenario"]
    try:
        if stage == "tasks":
            return await tasks_stage.run_one(ctx, sc)
        if stage == "schema":
            return await schema_stage.run_one(ctx, sc, env["tasks"])
        if stage == "seed":
            return await seed_stage.run_one(ctx, sc, env["tasks"], env["schema"])
        if stage == "spec":
            return await spec_stage.run_one(ctx, sc, env["tasks"], env["schema"])
        if stage == "code":
            return await code_stage.run_one(ctx, sc, env["spec"], env["schema"], env["seed"])
        if stage == "solutions":
            tools = code_stage.load_tools(ctx, sc["id"])

            async def one(i: int) -> dict[str, Any]:
                try:
                    return await solutions_stage.run_one(ctx, sc, env["tasks"], i, env["spec"], env["schema"],
                                                         env["seed"], tools)
                finally:
                    if progress:
                        progress.advance(stage)
            # the first task alone, then the rest: its request puts the shared context in the provider's prompt cache
            first = await asyncio.gather(one(0), return_exceptions=True)
            rest = await asyncio.gather(*(one(i) for i in range(1, len(env["tasks"]))), return_exceptions=True)
            results = first + rest
            sols = {i: r for i, r in enumerate(results) if isinstance(r, dict)}
            failed = [(i, r) for i, r in enumerate(results) if isinstance(r, StageFailed)]
            other = [r for r in results if isinstance(r, BaseException) and not isinstance(r, StageFailed)]
            if other:
                raise other[0]
            if len(sols) < ctx.opts.min_tasks:
                raise StageFailed(stage, f"only {len(sols)} tasks got a valid solution; e.g. task_{failed[0][0]}: "
                                  f"{failed[0][1].reason}")
            for i, r in failed:
                ctx.notes.append(f"{sc['id']}/task_{i} dropped at solutions: {r.reason}")
            return sols
        if stage == "validate":
            return await validate_stage.run_one(ctx, sc, env["tasks"], env["schema"], env["seed"], env["spec"],
                                                env["code"], dict(env["solutions"]))
        raise PipelineError(f"unknown stage {stage}")
    finally:
        if progress and stage != "solutions":
            progress.advance(stage)

