"""The SkyRL-Gym adapter, driven through skyrl_gym's own registry and BaseTextEnv interface against a real envd."""

from __future__ import annotations

import json

import pytest
import skyrl_gym
from omegaconf import OmegaConf
from skyrl_gym.envs.base_text_env import BaseTextEnv

from agentworld.trainers.skyrl import AgentWorldEnv, dataset_rows, register_env
from agentworld.trainers.text_tools import ParseError, parse_action

pytestmark = pytest.mark.timeout(120)
ENV = "library_lending_1"


@pytest.fixture(scope="module", autouse=True)
def _registered():
    register_env()


def _call(name: str, **arguments) -> str:
    return f'Let me check.\n<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'


def _make(envd_address: str, task_id: str, **config) -> AgentWorldEnv:
    env_config = OmegaConf.create({"address": envd_address, **config})  # what SkyRL's trainer passes
    env = skyrl_gym.make("agentworld", env_config=env_config, extras={"env_id": ENV, "task_id": task_id})
    assert isinstance(env, BaseTextEnv) and isinstance(env, AgentWorldEnv)
    return env


def test_episode_through_skyrl_interface(envd_address, mini_library_bundle_dir):
    from agentworld.bundle import load_bundle

    task = load_bundle(mini_library_bundle_dir).task("task_3")
    env = _make(envd_address, "task_3")
    prompt, meta = env.init([{"role": "user", "content": task.instruction}])
    assert prompt[0]["role"] == "system" and "<tools>" in prompt[0]["content"] and "borrow_copy" in prompt[0]["content"]
    assert prompt[-1]["content"] == task.instruction and meta["session_id"]
    for call in task.solution:
        out = env.step(_call(call.tool, **call.arguments))
        assert not out["done"] and out["reward"] == 0.0
        (obs,) = out["observations"]
        assert obs["role"] == "user" and obs["content"].startswith("<tool_response>")
        assert not out["metadata"]["is_error"], obs["content"]
    out = env.step("I borrowed the copy of The Martian for you.")
    assert out["done"] and out["reward"] == 1.0 and out["metadata"]["outcome"] == "complete"
    assert env.get_metrics()["tool_calls"] == len(task.solution)
    env.close()  # idempotent after the episode closed its session


def test_query_answer_and_partial_rewards(envd_address, mini_library_bundle_dir):
    from agentworld.bundle import load_bundle

    task = load_bundle(mini_library_bundle_dir).task("task_0")
    env = _make(envd_address, "task_0", rewards={"others": -0.25})
    env.init([{"role": "user", "content": task.instruction}])
    env.step(_call("list_my_loans", status="active"))
    out = env.step("You have some loans.")  # the wrong answer
    assert out["done"] and out["reward"] == -0.25 and out["metadata"]["outcome"] == "others"


@pytest.mark.parametrize(
    "action, reason",
    [
        (_call("no_such_tool"), "unknown tool"),
        ("<tool_call>{oops</tool_call>", "not valid JSON"),
        (_call("list_branches") + _call("list_branches"), "2 tool calls"),
        ("<tool_call>{\"name\": \"list_branches\"", "unterminated"),
    ],
)
def test_format_error_ends_the_episode(envd_address, action, reason):
    env = _make(envd_address, "task_3", rewards={"format_error": -2.0})
    env.init([{"role": "user", "content": "x"}])
    out = env.step(action)
    assert out["done"] and out["reward"] == -2.0
    assert reason in out["metadata"]["format_error"] and out["metadata"]["termination"] == "format_error"


def test_max_turns_verifies_without_answer(envd_address):
    env = _make(envd_address, "task_3", max_turns=2)
    env.init([{"role": "user", "content": "x"}])
    assert not env.step(_call("list_branches"))["done"]
    out = env.step(_call("list_branches"))
    assert out["done"] and out["metadata"]["termination"] == "max_turns" and out["reward"] == 0.0


def test_schema_errors_are_observations(envd_address):
    env = _make(envd_address, "task_1")
    env.init([{"role": "user", "content": "x"}])
    out = env.step(_call("renew_loan", loan_id="not-a-number"))
    assert not out["done"] and out["metadata"]["is_error"] and "loan_id" in out["observations"][0]["content"]
    env.close()


def test_bad_extras_and_dataset_rows(envd_address):
    with pytest.raises(ValueError, match="task_id"):
        skyrl_gym.make("agentworld", env_config={"address": envd_address}, extras={"env_id": ENV})
    from agentworld.client import EnvClient

    with EnvClient(envd_address) as client:
        rows = dataset_rows(client.list_envs(), repeats=2)
    assert len(rows) == 20 and rows[0]["env_class"] == "agentworld" and rows[0]["prompt"][0]["role"] == "user"


def test_parse_action_cases():
    assert parse_action("the answer is 4").text == "the answer is 4"
    call = parse_action('<tool_call>{"name": "a", "arguments": "{\\"x\\": 1}"}</tool_call>', {"a"})
    assert (call.name, call.arguments) == ("a", {"x": 1})
    assert isinstance(parse_action('<tool_call>{"name": "a", "arguments": [1]}</tool_call>'), ParseError)
