"""What every stage shares: the run context, on-disk state layout and the generate-check-feed-back loop."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from agentworld.llm import LLMClient, LLMParseError, LLMRequestError, parse_json_object
from agentworld.llm.types import Completion

T = TypeVar("T")

FEEDBACK = (
    "Your previous answer failed an automatic check:\n\n{error}\n\n"
    "Fix the problem and answer again with the complete, corrected output in the same format."
)


class StageCheckError(Exception):
    """A stage's output failed a concrete check; the message is fed back to the model verbatim."""


class StageFailed(Exception):
    """A unit (scenario, environment, task) still fails after all attempts; it is dropped with this reason."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


@dataclass
class SynthOptions:
    """Every knob of the pipeline; `run_llm_pipeline(**options)` fills it."""

    n: int = 10
    seed: int = 0
    seed_path: Path | None = None
    tasks_per_scenario: int = 10
    min_tasks: int = 5  # an environment with fewer validated tasks is dropped
    target_tools: int = 35
    max_attempts: int = 3  # per unit and stage, counting the first
    validate_rounds: int = 3  # self-correction rounds after validation
    dedup_threshold: float = 0.85
    embeddings: str | None = None  # e.g. "openai:text-embedding-3-small"; None: local TF-IDF
    scenario_batch: int = 10
    temperature: float | None = None
    max_tokens: int = 16384  # JSON stages (an AWM-sized API spec is ~10k tokens); clamped to the model's limit
    code_max_tokens: int = 32000
    check_timeout_s: float = 120.0
    validate_timeout_s: float = 900.0
    validate_workers: int = 2
    show_progress: bool = True


@dataclass
class Ctx:
    llm: LLMClient
    opts: SynthOptions
    work: Path  # <out>/.synth
    out: Path
    on_unit_done: Callable[[str], None] = lambda stage: None
    embedder: LLMClient | None = None  # for OpenAI embeddings in scenario dedup
    notes: list[str] = field(default_factory=list)

    def env_dir(self, env_id: str) -> Path:
        d = self.work / "envs" / env_id
        d.mkdir(parents=True, exist_ok=True)
        return d


def write_json(path: Path, data: Any) -> None:
    """Atomic write: a killed run never leaves a half-written stage output that resume would trust."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, ensure_ascii=False)
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def stage_marker(stage: str) -> str:
    """First line of every system prompt: names the step, so logs (and scripted test servers) can tell them apart."""
    return f"You are the `{stage}` step of agentworld's environment synthesis pipeline."


async def generate_checked(ctx: Ctx, stage: str, system: str, user: str, check: Callable[[Any, Completion], T]
                           | Callable[[Any, Completion], Awaitable[T]], *, json_schema: dict | None = None,
                           max_tokens: int | None = None, prior: list[tuple[str, str]] | None = None,
                           attempts: int | None = None, cache_system: bool = False) -> T:
    """Ask, check, and on a failed check feed the concrete error back, up to `max_attempts` answers.

    `check(payload, completion)` gets the parsed JSON object (json stages) or the completion text, returns the
    stage's result or raises StageCheckError. `prior` continues an earlier conversation (self-correction).
    `cache_system`: the system prompt is a prefix shared by many requests (provider prompt caching).
    """
    stats = ctx.llm.accounting.stage(stage)
    correction = prior is not None  # re-generation after validation: every answer counts as a retry of the unit
    if not correction:
        stats.units += 1
    messages: list[tuple[str, str]] = list(prior or []) + [("user", user)]
    limit = attempts or ctx.opts.max_attempts
    last_error = ""
    for attempt in range(1, limit + 1):
        try:
            completion = await ctx.llm.complete(stage, system, messages, json_schema=json_schema,
                                                schema_name=f"{stage}_output",
                                                max_tokens=max_tokens or ctx.opts.max_tokens,
                                                temperature=ctx.opts.temperature, cache_system=cache_system)
        except LLMRequestError as exc:
            stats.failed += 0 if correction else 1
            raise StageFailed(stage, f"LLM request failed: {exc}") from exc
        try:
            if json_schema is not None:
                if completion.data is not None:
                    payload: Any = completion.data
                elif completion.truncated:
                    raise StageCheckError(f"the answer was cut off at the output limit ({max_tokens or ctx.opts.max_tokens}"
                                          " tokens) and is incomplete; answer more concisely")
                else:
                    payload = parse_json_object(completion.text)
            else:
                payload = completion.text
            result = check(payload, completion)
            if hasattr(result, "__await__"):
                result = await result  # type: ignore[misc]
        except (StageCheckError, LLMParseError) as exc:
            last_error = str(exc)
            messages += [("assistant", completion.text or "(empty answer)"), ("user", FEEDBACK.format(error=exc))]
            continue
        if attempt == 1 and not correction:
            stats.first_attempt_ok += 1
        stats.feedback_retries += attempt if correction else attempt - 1
        return result  # type: ignore[return-value]
    stats.feedback_retries += limit if correction else limit - 1
    stats.failed += 0 if correction else 1
    raise StageFailed(stage, f"still failing after {limit} attempts: {_clip(last_error)}")


def _clip(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
