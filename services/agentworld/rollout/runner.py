"""The episode loop (AWM style) and concurrent rollouts over an AsyncEnvClient.

An episode: create a session for the task, list its tools, then up to `max_turns` policy turns with at most one
tool call each; it ends when the policy answers without a tool call (then the verifier runs with that answer),
when the turns run out (verified without an answer), or at a format error (no verification; the map's
`format_error` reward, AWM's early stop).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from agentworld.rollout.policies.base import (
    EpisodeSpec,
    FinalAnswer,
    FormatError,
    Observation,
    Policy,
    PolicyError,
)
from agentworld.rollout.rewards import RewardMap
from agentworld.rollout.trajectory import Step, Trajectory

if TYPE_CHECKING:
    from agentworld.bundle import Bundle
    from agentworld.client import AsyncEnvClient, AsyncSession, EnvInfo


class RolloutError(ValueError):
    """The rollout request cannot be planned (unknown env or task, missing bundles for the reference policy)."""


@dataclass(frozen=True)
class EpisodeConfig:
    max_turns: int = 20
    rewards: RewardMap = field(default_factory=RewardMap)
    tool_timeout_s: float | None = None  # None: the server's default


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0


async def run_episode(
    client: AsyncEnvClient,
    policy: Policy,
    spec: EpisodeSpec,
    config: EpisodeConfig,
    episode: int = 0,
    session: AsyncSession | None = None,
    group: int | None = None,
) -> Trajectory:
    """Run one episode to its end; infrastructure failures are recorded in the trajectory, not raised.

    `session`: an already created session to play in (a member of a group); it is closed at the end either way.
    """
    from agentworld.client import EnvClientError, InvalidArgumentError

    traj = Trajectory(
        episode=episode,
        env_id=spec.env_id,
        task_id=spec.task_id,
        instruction=spec.instruction,
        policy=policy.name,
        repeat=spec.repeat,
        seed=spec.seed,
        group=group,
        started_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
    )
    t_start = time.perf_counter()
    agent = None
    try:
        if session is None:
            t = time.perf_counter()
            session = await client.create_session(spec.env_id, spec.task_id)
            traj.timings.create_session_ms = _ms(t)
        traj.session_id = session.session_id
        traj.initial_state_hash = session.initial_state_hash
        t = time.perf_counter()
        tools = await session.list_tools()
        traj.timings.list_tools_ms = _ms(t)
        agent = policy.start(spec, tools)
        final_answer: str | None = None
        traj.termination = "max_turns"
        for turn in range(1, config.max_turns + 1):
            traj.turns = turn
            t = time.perf_counter()
            action = await agent.act()
            policy_ms = _ms(t)
            traj.timings.policy_ms += policy_ms
            if isinstance(action, FormatError):
                traj.termination = "format_error"
                traj.format_error = action.reason
                break
            if isinstance(action, FinalAnswer):
                traj.termination = "final_answer"
                final_answer = action.text
                break
            t = time.perf_counter()
            try:
                result = await session.call_tool(action.name, action.arguments, timeout_s=config.tool_timeout_s)
                obs = Observation(result.is_error, result.content, result.http_status)
                server_ms = result.duration_ms
            except InvalidArgumentError as exc:  # arguments failing the tool's schema: the agent sees it, like a 422
                obs = Observation(True, exc.message, 422)
                server_ms = 0.0
            call_ms = _ms(t)
            traj.timings.tools_ms += call_ms
            traj.steps.append(
                Step(
                    turn=turn,
                    tool=action.name,
                    arguments=action.arguments,
                    call_id=action.call_id,
                    is_error=obs.is_error,
                    content=obs.content,
                    http_status=obs.http_status,
                    policy_ms=policy_ms,
                    call_ms=call_ms,
                    server_ms=server_ms,
                )
            )
            agent.observe(action, obs)
        traj.final_answer = final_answer
        if traj.termination == "format_error":
            traj.reward = config.rewards.format_error
        else:
            t = time.perf_counter()
            verdict = await session.verify(final_answer=final_answer)
            traj.timings.verify_ms = _ms(t)
            traj.outcome = verdict.outcome
            traj.verify_details = verdict.details
            traj.reward = config.rewards.for_outcome(verdict.outcome)
    except (EnvClientError, PolicyError) as exc:
        traj.termination = "error"
        traj.error = str(exc)
        traj.reward = None
    except Exception as exc:  # an SDK/HTTP failure of the policy's server: recorded, the batch goes on
        traj.termination = "error"
        traj.error = f"{type(exc).__name__}: {exc}"
        traj.reward = None
    finally:
        if agent is not None:
            traj.messages = agent.messages
            traj.usage = dict(agent.usage)
        if session is not None:
            try:
                await session.close()
            except EnvClientError as exc:
                traj.error = traj.error or f"closing the session failed: {exc}"
        traj.timings.total_ms = _ms(t_start)
    return traj


async def run_rollouts(
    client: AsyncEnvClient,
    policy: Policy,
    specs: Sequence[EpisodeSpec],
    config: EpisodeConfig,
    concurrency: int = 64,
    on_done: Callable[[Trajectory], None] | None = None,
    group: bool = False,
) -> list[Trajectory]:
    """Run every episode with at most `concurrency` in flight; results keep the order of `specs`.

    `group`: the episodes of each (env, task) start as one group of forked sessions (`create_group`): identical
    starting states, the shape a GRPO step needs; trajectories carry the group index and the initial state hash.
    """
    if concurrency < 1:
        raise RolloutError(f"concurrency must be >= 1, got {concurrency}")
    gate = asyncio.Semaphore(concurrency)

    def done(traj: Trajectory) -> Trajectory:
        if on_done is not None:
            on_done(traj)
        return traj

    async def one(i: int, spec: EpisodeSpec) -> Trajectory:
        async with gate:
            return done(await run_episode(client, policy, spec, config, episode=i))

    if not group:
        return list(await asyncio.gather(*(one(i, s) for i, s in enumerate(specs))))

    buckets: dict[tuple[str, str], list[tuple[int, EpisodeSpec]]] = {}
    for i, spec in enumerate(specs):
        buckets.setdefault((spec.env_id, spec.task_id), []).append((i, spec))
    acquiring = asyncio.Lock()  # one group takes its permits at a time, so partial holds cannot deadlock

    async def one_group(g: int, items: list[tuple[int, EpisodeSpec]]) -> list[tuple[int, Trajectory]]:
        permits = min(len(items), concurrency)
        async with acquiring:
            for _ in range(permits):
                await gate.acquire()
        try:
            env_id, task_id = items[0][1].env_id, items[0][1].task_id
            t = time.perf_counter()
            try:
                sessions = await client.create_group(env_id, task_id, len(items))
            except Exception as exc:  # every member fails the same way
                trajs = [_failed(i, spec, policy, g, exc) for i, spec in items]
                return [(i, done(t_)) for (i, _), t_ in zip(items, trajs, strict=True)]
            created_ms = _ms(t)
            trajs = await asyncio.gather(*(
                run_episode(client, policy, spec, config, episode=i, session=sess, group=g)
                for (i, spec), sess in zip(items, sessions, strict=True)
            ))
            for traj in trajs:
                traj.timings.create_session_ms = created_ms
            return [(i, done(traj)) for (i, _), traj in zip(items, trajs, strict=True)]
        finally:
            for _ in range(permits):
                gate.release()

    results: list[Trajectory | None] = [None] * len(specs)
    for part in await asyncio.gather(*(one_group(g, items) for g, items in enumerate(buckets.values()))):
        for i, traj in part:
            results[i] = traj
    return [t for t in results if t is not None]


def _failed(i: int, spec: EpisodeSpec, policy: Policy, group: int, exc: Exception) -> Trajectory:
    return Trajectory(
        episode=i, env_id=spec.env_id, task_id=spec.task_id, instruction=spec.instruction, policy=policy.name,
        repeat=spec.repeat, seed=spec.seed, group=group, termination="error", error=f"creating the group: {exc}",
        started_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
    )


def plan_episodes(
    envs: Iterable[EnvInfo],
    bundles: dict[str, Bundle] | None = None,
    *,
    env_ids: Sequence[str] = (),
    tasks: Sequence[str] = (),
    repeats: int = 1,
    seed: int = 0,
    need_solutions: bool = False,
) -> list[EpisodeSpec]:
    """Episodes for the served environments, filtered by env ids and tasks (`TASK` or `ENV/TASK`), each repeated.

    With bundles (from `--envs`), only their environments run, and tasks carry their reference solutions.
    """
    if repeats < 1:
        raise RolloutError(f"repeats must be >= 1, got {repeats}")
    served = {e.env_id: e for e in envs}
    chosen = list(served.values())
    if bundles:
        missing = sorted(set(bundles) - set(served))
        if missing:
            raise RolloutError(f"environment(s) {', '.join(missing)} from --envs are not served at this address")
        chosen = [served[e] for e in bundles]
    if env_ids:
        unknown = sorted(set(env_ids) - set(served))
        if unknown:
            raise RolloutError(f"unknown environment(s) {', '.join(unknown)}; served: {', '.join(sorted(served))}")
        chosen = [e for e in chosen if e.env_id in set(env_ids)]
    if need_solutions and not bundles:
        raise RolloutError("the reference policy needs the tasks' solutions: pass the bundles with --envs DIR")
    wanted = [t for t in tasks if t and t != "all"]
    matched: set[str] = set()
    specs: list[EpisodeSpec] = []
    for env in chosen:
        bundle = bundles.get(env.env_id) if bundles else None
        for task in env.tasks:
            keys = {task.task_id, f"{env.env_id}/{task.task_id}"}
            if wanted and not keys & set(wanted):
                continue
            matched |= keys & set(wanted)
            btask = bundle.task(task.task_id) if bundle else None
            if need_solutions and btask is None:
                raise RolloutError(f"task {env.env_id}/{task.task_id} is served but not in the bundle from --envs")
            for r in range(repeats):
                specs.append(
                    EpisodeSpec(
                        env_id=env.env_id,
                        task_id=task.task_id,
                        instruction=task.instruction,
                        kind=task.kind,
                        env_title=env.title,
                        repeat=r,
                        seed=seed,
                        solution=list(btask.solution) if btask else None,
                        expected_answer=btask.expected_answer if btask else None,
                    )
                )
    unmatched = [t for t in wanted if t not in matched]
    if unmatched:
        raise RolloutError(f"unknown task(s) {', '.join(unmatched)} in the chosen environments")
    if not specs:
        raise RolloutError("no episodes to run: no tasks matched")
    return specs
