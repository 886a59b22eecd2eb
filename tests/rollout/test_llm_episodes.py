"""Episodes end to end: real openai/anthropic SDKs against scripted local servers, a real envd over gRPC."""

from __future__ import annotations

import json

import pytest

from agentworld.client import AsyncEnvClient
from agentworld.rollout import EpisodeConfig, RewardMap, make_policy, plan_episodes, run_episode, run_rollouts
from tests.rollout.conftest import solution_turns

pytestmark = pytest.mark.timeout(120)


async def _spec(client: AsyncEnvClient, bundle, task_id: str):
    (spec,) = plan_episodes(await client.list_envs(), {bundle.env_id: bundle}, tasks=[task_id])
    return spec


@pytest.mark.parametrize("task_id", ["task_3", "task_0"])  # a mutation (borrow) and a query (answer checked)
async def test_openai_episode_completes(envd_address, mini_bundle, openai_server, task_id):
    server, script = openai_server
    task = mini_bundle.task(task_id)
    script.by_instruction[task.instruction] = solution_turns(mini_bundle, task_id)
    policy = make_policy(f"openai:scripted-model@{server.url}/v1")
    async with AsyncEnvClient(envd_address) as client:
        traj = await run_episode(client, policy, await _spec(client, mini_bundle, task_id), EpisodeConfig())
    await policy.aclose()

    assert traj.error is None, traj.error
    assert traj.termination == "final_answer"
    assert (traj.outcome, traj.reward) == ("complete", 1.0)
    assert [s.tool for s in traj.steps] == [c.tool for c in task.solution]
    assert not any(s.is_error for s in traj.steps)
    # The model saw the tool list first and every tool result, under the id of the call it made.
    first = script.requests[0]
    assert {t["function"]["name"] for t in first["tools"]} >= {c.tool for c in task.solution}
    assert len(script.requests) == len(task.solution) + 1
    last_messages = script.requests[-1]["messages"]
    tool_msgs = [m for m in last_messages if m["role"] == "tool"]
    assert [m["content"] for m in tool_msgs] == [s.content for s in traj.steps]
    call_ids = [tc["id"] for m in last_messages if m["role"] == "assistant" for tc in m.get("tool_calls", [])]
    assert [m["tool_call_id"] for m in tool_msgs] == call_ids
    assert traj.messages[-1]["content"] == (task.expected_answer or "Done.")
    assert traj.usage == {"input_tokens": 10 * len(script.requests), "output_tokens": 5 * len(script.requests)}
    assert traj.timings.total_ms > 0 and traj.timings.verify_ms > 0


async def test_openai_wrong_answer_is_not_complete(envd_address, mini_bundle, openai_server):
    server, script = openai_server
    task = mini_bundle.task("task_0")
    script.by_instruction[task.instruction] = [*solution_turns(mini_bundle, "task_0")[:-1], {"text": "No idea."}]
    policy = make_policy(f"openai:m@{server.url}/v1")
    async with AsyncEnvClient(envd_address) as client:
        traj = await run_episode(client, policy, await _spec(client, mini_bundle, "task_0"), EpisodeConfig())
    assert traj.outcome != "complete" and traj.reward == 0.0


async def test_anthropic_episode_completes(envd_address, mini_bundle, anthropic_server):
    server, script = anthropic_server
    task = mini_bundle.task("task_4")
    script.by_instruction[task.instruction] = solution_turns(mini_bundle, "task_4")
    policy = make_policy(f"anthropic:claude-scripted@{server.url}")
    async with AsyncEnvClient(envd_address) as client:
        traj = await run_episode(client, policy, await _spec(client, mini_bundle, "task_4"), EpisodeConfig())
    await policy.aclose()

    assert traj.error is None, traj.error
    assert (traj.termination, traj.outcome, traj.reward) == ("final_answer", "complete", 1.0)
    assert [s.tool for s in traj.steps] == [c.tool for c in task.solution]
    first = script.requests[0]
    assert first["system"] and {t["name"] for t in first["tools"]} >= {c.tool for c in task.solution}
    results = [b for m in script.requests[-1]["messages"] if m["role"] == "user" and isinstance(m["content"], list)
               for b in m["content"] if b.get("type") == "tool_result"]
    assert [r["content"] for r in results] == [s.content for s in traj.steps]


@pytest.mark.parametrize(
    "bad_turn, reason",
    [
        ({"tool": "no_such_tool", "arguments": {}}, "unknown tool"),
        ({"raw": [{"id": "c1", "type": "function", "function": {"name": "list_my_loans", "arguments": "{not json"}}]},
         "not valid JSON"),
        ({"raw": [{"id": "c1", "type": "function", "function": {"name": "list_my_loans", "arguments": "{}"}},
                  {"id": "c2", "type": "function", "function": {"name": "list_branches", "arguments": "{}"}}]},
         "2 tool calls"),
    ],
)
async def test_openai_format_error_stops_episode(envd_address, mini_bundle, openai_server, bad_turn, reason):
    server, script = openai_server
    task = mini_bundle.task("task_3")
    # One good call, then malformed output; the script would go on, but the episode must stop there.
    script.by_instruction[task.instruction] = [{"tool": "list_branches", "arguments": {}}, bad_turn,
                                               *solution_turns(mini_bundle, "task_3")]
    config = EpisodeConfig(rewards=RewardMap.parse("format_error=-0.5"))
    policy = make_policy(f"openai:m@{server.url}/v1")
    async with AsyncEnvClient(envd_address) as client:
        traj = await run_episode(client, policy, await _spec(client, mini_bundle, "task_3"), config)
    assert traj.termination == "format_error"
    assert reason in traj.format_error
    assert traj.reward == -0.5 and traj.outcome is None  # not verified: early stop with the configured reward
    assert len(script.requests) == 2 and traj.turns == 2 and len(traj.steps) == 1


async def test_anthropic_format_error_default_reward(envd_address, mini_bundle, anthropic_server):
    server, script = anthropic_server
    task = mini_bundle.task("task_3")
    script.by_instruction[task.instruction] = [{"raw": [
        {"type": "tool_use", "id": "t1", "name": "list_branches", "input": {}},
        {"type": "tool_use", "id": "t2", "name": "list_branches", "input": {}},
    ]}]
    policy = make_policy(f"anthropic:m@{server.url}")
    async with AsyncEnvClient(envd_address) as client:
        traj = await run_episode(client, policy, await _spec(client, mini_bundle, "task_3"), EpisodeConfig())
    assert (traj.termination, traj.reward, traj.turns) == ("format_error", -1.0, 1)


async def test_max_turns_then_verified(envd_address, mini_bundle, openai_server):
    server, script = openai_server
    task = mini_bundle.task("task_3")
    script.by_instruction[task.instruction] = [{"tool": "list_branches", "arguments": {}}] * 10
    policy = make_policy(f"openai:m@{server.url}/v1")
    async with AsyncEnvClient(envd_address) as client:
        traj = await run_episode(client, policy, await _spec(client, mini_bundle, "task_3"), EpisodeConfig(max_turns=3))
    assert traj.termination == "max_turns" and traj.turns == 3 and len(traj.steps) == 3
    assert traj.outcome == "others" and traj.reward == 0.0 and traj.final_answer is None


async def test_tool_validation_error_is_shown_to_the_agent(envd_address, mini_bundle, openai_server):
    server, script = openai_server
    task = mini_bundle.task("task_1")
    script.by_instruction[task.instruction] = [
        {"tool": "renew_loan", "arguments": {"loan_id": "not-an-int"}}, *solution_turns(mini_bundle, "task_1")
    ]
    policy = make_policy(f"openai:m@{server.url}/v1")
    async with AsyncEnvClient(envd_address) as client:
        traj = await run_episode(client, policy, await _spec(client, mini_bundle, "task_1"), EpisodeConfig())
    assert traj.steps[0].is_error and "loan_id" in traj.steps[0].content
    assert "loan_id" in script.requests[1]["messages"][-1]["content"]
    assert traj.reward == 1.0


async def test_concurrent_llm_rollouts(envd_address, mini_bundle, openai_server):
    server, script = openai_server
    for task in mini_bundle.tasks:
        script.by_instruction[task.instruction] = solution_turns(mini_bundle, task.id)
    policy = make_policy(f"openai:m@{server.url}/v1")
    async with AsyncEnvClient(envd_address) as client:
        specs = plan_episodes(await client.list_envs(), {mini_bundle.env_id: mini_bundle}, repeats=3)
        trajs = await run_rollouts(client, policy, specs, EpisodeConfig(), concurrency=16)
    await policy.aclose()
    assert len(trajs) == 3 * len(mini_bundle.tasks)
    assert [t.reward for t in trajs] == [1.0] * len(trajs), [(t.task_id, t.outcome, t.error) for t in trajs]
    assert len({t.session_id for t in trajs}) == len(trajs)  # every episode had its own session
    json.loads(trajs[0].model_dump_json())


def test_cli_with_openai_policy(envd_address, mini_bundle, openai_server, tmp_path):
    from typer.testing import CliRunner

    from agentworld.cli import app
    from agentworld.rollout import read_trajectories

    server, script = openai_server
    for task_id in ("task_1", "task_9"):
        script.by_instruction[mini_bundle.task(task_id).instruction] = solution_turns(mini_bundle, task_id)
    out = tmp_path / "t.jsonl"
    result = CliRunner().invoke(app, [
        "rollout", "-a", envd_address, "-p", f"openai:scripted@{server.url}/v1", "--tasks", "task_1,task_9",
        "--max-turns", "5", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    trajs = read_trajectories(out)
    assert sorted((t.task_id, t.reward) for t in trajs) == [("task_1", 1.0), ("task_9", 1.0)]
    assert all(t.messages[0]["role"] == "system" for t in trajs)


async def test_unreachable_llm_is_an_episode_error(envd_address, mini_bundle):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    policy = make_policy(f"openai:m@http://127.0.0.1:{port}/v1", timeout_s=5.0)
    from agentworld.client import EnvClientError

    async with AsyncEnvClient(envd_address) as client:
        traj = await run_episode(client, policy, await _spec(client, mini_bundle, "task_1"), EpisodeConfig())
        assert traj.termination == "error" and traj.reward is None and "Connection" in traj.error
        with pytest.raises(EnvClientError):  # the episode's session was closed despite the failure
            await client.session(traj.session_id).state_hash()
