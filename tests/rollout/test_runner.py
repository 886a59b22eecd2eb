"""Reference and random policies, planning, reward maps, schema sampling and the CLI, against a real envd."""

from __future__ import annotations

import json
import random

import jsonschema
import pytest
from typer.testing import CliRunner

from agentworld.client import AsyncEnvClient, EnvClient
from agentworld.rollout import (
    EpisodeConfig,
    RewardMap,
    RewardMapError,
    RolloutError,
    make_policy,
    plan_episodes,
    read_trajectories,
    run_rollouts,
    summarize,
)
from agentworld.rollout.policies import PolicyError
from agentworld.rollout.schema_sample import sample

pytestmark = pytest.mark.timeout(120)


async def test_reference_policy_completes_every_task(envd_address, mini_bundle):
    async with AsyncEnvClient(envd_address) as client:
        specs = plan_episodes(await client.list_envs(), {mini_bundle.env_id: mini_bundle}, need_solutions=True)
        trajs = await run_rollouts(client, make_policy("reference"), specs, EpisodeConfig(), concurrency=8)
    assert len(trajs) == len(mini_bundle.tasks)
    bad = [(t.task_id, t.outcome, t.error) for t in trajs if t.reward != 1.0]
    assert not bad
    row = summarize(trajs)[mini_bundle.env_id]
    assert row["complete"] == len(trajs) and row["mean_reward"] == 1.0
    assert row["tool_calls"] == sum(len(t.solution) for t in mini_bundle.tasks)


async def test_random_policy_is_seeded_and_runs(envd_address, mini_bundle):
    async def run(seed: int):
        async with AsyncEnvClient(envd_address) as client:
            specs = plan_episodes(await client.list_envs(), tasks=["task_3", "task_8"], repeats=2, seed=seed)
            return await run_rollouts(client, make_policy("random"), specs, EpisodeConfig(max_turns=6), concurrency=4)

    a, b, c = await run(7), await run(7), await run(8)
    calls = lambda trajs: [[(s.tool, s.arguments) for s in t.steps] for t in trajs]  # noqa: E731
    assert calls(a) == calls(b) and calls(a) != calls(c)
    assert all(t.termination in ("final_answer", "max_turns") and t.reward is not None for t in a + c)
    assert sum(len(t.steps) for t in a) >= 4


def test_sampled_arguments_fit_every_tool_schema(envd_address):
    with EnvClient(envd_address) as client:
        env = client.list_envs()[0]
        with client.create_session(env.env_id) as session:
            tools = session.tools
    rng = random.Random(0)
    for tool in tools:
        schema = tool["input_schema"]
        validator = jsonschema.Draft202012Validator(schema)
        for _ in range(25):
            validator.validate(sample(schema, rng))


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"anyOf": [{"type": "integer", "minimum": 3}, {"type": "null"}]},
                                          "b": {"$ref": "#/$defs/B"}}, "required": ["a", "b"],
         "$defs": {"B": {"type": "string", "enum": ["x", "y"]}}},
        {"type": "object", "properties": {"d": {"type": "string", "format": "date"},
                                          "l": {"type": "array", "items": {"type": "number"}, "minItems": 1}},
         "required": ["d", "l"]},
    ],
)
def test_schema_sampler_handles_refs_unions_formats(schema):
    rng = random.Random(1)
    for _ in range(50):
        jsonschema.validate(sample(schema, rng), schema)


def test_reward_map_parsing(tmp_path):
    assert RewardMap.parse(None) == RewardMap(complete=1.0, partially_complete=0.1, others=0.0, format_error=-1.0)
    assert RewardMap.parse("complete=2, format_error=-3").for_outcome("complete") == 2.0
    assert RewardMap.parse('{"partially_complete": 0.5}').for_outcome("partially_complete") == 0.5
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"others": -0.2}))
    assert RewardMap.parse(str(path)).for_outcome("others") == -0.2
    assert RewardMap().for_outcome("something_new") == 0.0
    for bad in ("complete", "complete=high", "bogus=1", "{", str(tmp_path / "missing.json")):
        with pytest.raises(RewardMapError):
            RewardMap.parse(bad)


def test_policy_specs():
    assert make_policy("openai:qwen3-8b@http://localhost:8000/v1").base_url == "http://localhost:8000/v1"
    assert make_policy("anthropic:claude-x").model == "claude-x"
    for bad in ("gpt", "openai:", "openai:m@localhost:8000", "reference:x"):
        with pytest.raises(PolicyError):
            make_policy(bad)


async def test_planning_errors(envd_address, mini_bundle):
    async with AsyncEnvClient(envd_address) as client:
        envs = await client.list_envs()
    with pytest.raises(RolloutError, match="--envs"):
        plan_episodes(envs, need_solutions=True)
    with pytest.raises(RolloutError, match="task_99"):
        plan_episodes(envs, tasks=["task_99"])
    with pytest.raises(RolloutError, match="nope"):
        plan_episodes(envs, env_ids=["nope"])
    specs = plan_episodes(envs, tasks=[f"{mini_bundle.env_id}/task_2", "task_5"], repeats=4)
    assert [(s.task_id, s.repeat) for s in specs][:2] == [("task_2", 0), ("task_2", 1)] and len(specs) == 8


def test_cli_rollout_writes_trajectories(envd_address, mini_library_bundle_dir, tmp_path):
    from agentworld.cli import app

    out = tmp_path / "traj.jsonl"
    result = CliRunner().invoke(app, [
        "rollout", "--address", envd_address, "--policy", "reference", "--envs", str(mini_library_bundle_dir.parent),
        "--tasks", "task_1,task_8", "--repeats", "2", "--concurrency", "4", "--out", str(out), "--json", "--group",
    ])
    assert result.exit_code == 0, result.output
    trajs = read_trajectories(out)
    assert sorted(t.task_id for t in trajs) == ["task_1", "task_1", "task_8", "task_8"]
    assert all(t.reward == 1.0 and t.steps and t.messages for t in trajs)
    assert len({t.group for t in trajs}) == 2 and None not in {t.group for t in trajs}
    assert '"mean_reward": 1.0' in result.output


def test_cli_rejects_bad_input(envd_address):
    from agentworld.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["rollout", "--address", envd_address, "--policy", "reference"])
    assert result.exit_code == 2 and "--envs" in result.output
    result = runner.invoke(app, ["rollout", "--address", envd_address, "--policy", "gpt-4"])
    assert result.exit_code == 2 and "unknown policy" in result.output
    result = runner.invoke(app, ["rollout", "--address", envd_address, "--policy", "random", "--rewards", "x=1"])
    assert result.exit_code == 2 and "reward map" in result.output


@pytest.mark.parametrize("concurrency", [2, 64])  # smaller than a group, and roomy
async def test_group_rollouts_start_from_identical_states(envd_address, mini_bundle, concurrency):
    async with AsyncEnvClient(envd_address) as client:
        specs = plan_episodes(await client.list_envs(), {mini_bundle.env_id: mini_bundle}, tasks=["task_2", "task_7"],
                              repeats=4, need_solutions=True)
        trajs = await run_rollouts(client, make_policy("reference"), specs, EpisodeConfig(), concurrency=concurrency,
                                   group=True)
    assert [(t.task_id, t.repeat) for t in trajs] == [(s.task_id, s.repeat) for s in specs]  # order kept
    assert all(t.reward == 1.0 for t in trajs), [(t.task_id, t.error) for t in trajs]
    groups = {t.group for t in trajs}
    assert len(groups) == 2 and None not in groups
    for g in groups:
        members = [t for t in trajs if t.group == g]
        assert len(members) == 4 and len({t.task_id for t in members}) == 1
        assert len({t.session_id for t in members}) == 4
        assert len({t.initial_state_hash for t in members}) == 1 and members[0].initial_state_hash


async def test_group_creation_failure_is_recorded(envd_address, mini_bundle):
    from agentworld.rollout import EpisodeSpec

    specs = [EpisodeSpec(env_id=mini_bundle.env_id, task_id="no_such_task", instruction="x", repeat=r)
             for r in range(3)]
    async with AsyncEnvClient(envd_address) as client:
        trajs = await run_rollouts(client, make_policy("random"), specs, EpisodeConfig(), group=True)
    assert [t.termination for t in trajs] == ["error"] * 3 and "no_such_task" in trajs[0].error
