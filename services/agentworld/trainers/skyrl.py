"""SkyRL-Gym adapter: `AgentWorldEnv` is a `skyrl_gym.envs.base_text_env.BaseTextEnv` over an agentworld session.

Register it and make it through SkyRL's own registry:

    from agentworld.trainers.skyrl import register_env
    register_env()  # id "agentworld"
    env = skyrl_gym.make("agentworld", env_config={"address": "localhost:50051"},
                         extras={"env_id": "library_lending_1", "task_id": "task_3"})
    prompt, meta = env.init([{"role": "user", "content": instruction}])
    out = env.step('<tool_call>{"name": "search_books", "arguments": {"query": "The Martian"}}</tool_call>')

Episodes follow AWM: one tool call per step (Hermes <tool_call> text), the episode ends at a reply without a tool
call (verified with it as the final answer), at `max_turns` (verified without one), or at a format error (the
reward map's `format_error`, no verification). The reward arrives on the final step; intermediate steps earn 0.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from skyrl_gym.envs.base_text_env import BaseTextEnv, BaseTextEnvStepOutput, ConversationType

from agentworld.rollout.policies.base import SYSTEM_PROMPT
from agentworld.rollout.rewards import RewardMap
from agentworld.trainers.text_tools import ParsedAnswer, ParseError, parse_action, tool_response, tools_system_prompt

ENV_ID = "agentworld"


@dataclass
class AgentWorldEnvConfig:
    address: str = "localhost:50051"  # envd or the gateway
    max_turns: int = 20
    rewards: dict[str, float] = field(default_factory=dict)  # overrides of RewardMap's AWM defaults
    observation_role: str = "user"  # SkyRL's convention for tool output; "tool" for templates that have that role
    inject_tools: bool = True  # prepend a system prompt listing the tools (Hermes format)


_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def _client(address: str):  # noqa: ANN202 - EnvClient, imported lazily
    """One gRPC client per address per process, shared by every environment instance (they are many and short)."""
    from agentworld.client import EnvClient

    with _clients_lock:
        client = _clients.get(address)
        if client is None:
            client = _clients[address] = EnvClient(address)
        return client


def _config(env_config: Any) -> AgentWorldEnvConfig:
    if isinstance(env_config, AgentWorldEnvConfig):
        return env_config
    if env_config is None:
        return AgentWorldEnvConfig()
    items = dict(env_config.items()) if hasattr(env_config, "items") else dict(vars(env_config))
    known = {k: v for k, v in items.items() if k in AgentWorldEnvConfig.__dataclass_fields__}
    if "rewards" in known and known["rewards"] is not None:
        known["rewards"] = dict(known["rewards"])
    return AgentWorldEnvConfig(**known)


class AgentWorldEnv(BaseTextEnv):
    """One episode of one agentworld task, as a SkyRL text environment."""

    def __init__(self, env_config: Any = None, extras: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        extras = dict(extras or {})
        self.config = _config(env_config)
        for key in ("env_id", "task_id"):
            if not extras.get(key):
                raise ValueError(f"AgentWorldEnv needs extras[{key!r}] (the agentworld environment and task)")
        self.env_id: str = extras["env_id"]
        self.task_id: str = extras["task_id"]
        self.max_turns = int(extras.get("max_turns") or self.config.max_turns)
        self.rewards = RewardMap.model_validate({**self.config.rewards, **dict(extras.get("rewards") or {})})
        self.session = None
        self.tools: list[dict[str, Any]] = []
        self.tool_names: set[str] = set()
        self.chat_history: ConversationType = []
        self.outcome: str | None = None
        self.termination: str | None = None
        self.tool_calls = 0
        self.tool_errors = 0

    def init(self, prompt: ConversationType) -> tuple[ConversationType, dict[str, Any]]:
        client = _client(self.config.address)
        self.session = client.create_session(self.env_id, self.task_id)
        self.tools = self.session.tools
        self.tool_names = {t["name"] for t in self.tools}
        prompt = list(prompt)
        if self.config.inject_tools and not any(m.get("role") == "system" for m in prompt):
            preamble = SYSTEM_PROMPT.format(title=self.env_id)
            prompt.insert(0, {"role": "system", "content": tools_system_prompt(self.tools, preamble)})
        self.chat_history = list(prompt)
        return prompt, {"session_id": self.session.session_id, "tools": self.tools}

    def _finish(self, reward: float) -> BaseTextEnvStepOutput:
        self.close()
        return BaseTextEnvStepOutput(observations=[], reward=reward, done=True, metadata=self._metadata())

    def _metadata(self) -> dict[str, Any]:
        return {"env_id": self.env_id, "task_id": self.task_id, "outcome": self.outcome,
                "termination": self.termination, "turns": self.turns}

    def step(self, action: str) -> BaseTextEnvStepOutput:
        if self.session is None:
            raise RuntimeError("AgentWorldEnv.step before init (or after the episode ended)")
        self.turns += 1
        self.chat_history.append({"role": "assistant", "content": action})
        parsed = parse_action(action, self.tool_names)
        if isinstance(parsed, ParseError):
            self.termination = "format_error"
            out = self._finish(self.rewards.format_error)
            out["metadata"]["format_error"] = parsed.reason
            return out
        if isinstance(parsed, ParsedAnswer):
            self.termination = "final_answer"
            return self._verify(parsed.text)
        from agentworld.client import InvalidArgumentError

        try:
            result = self.session.call_tool(parsed.name, parsed.arguments)
            content, is_error = result.content, result.is_error
        except InvalidArgumentError as exc:  # arguments failing the schema: shown to the model like a 422
            content, is_error = exc.message, True
        self.tool_calls += 1
        self.tool_errors += int(is_error)
        if self.turns >= self.max_turns:
            self.termination = "max_turns"
            return self._verify(None)
        observation = {"role": self.config.observation_role, "content": tool_response(content)}
        self.chat_history.append(observation)
        return BaseTextEnvStepOutput(
            observations=[observation], reward=0.0, done=False,
            metadata={**self._metadata(), "tool": parsed.name, "is_error": is_error},
        )

    def _verify(self, final_answer: str | None) -> BaseTextEnvStepOutput:
        verdict = self.session.verify(final_answer=final_answer)
        self.outcome = verdict.outcome
        return self._finish(self.rewards.for_outcome(verdict.outcome))

    def close(self) -> None:
        if self.session is not None:
            session, self.session = self.session, None
            session.close()

    def get_metrics(self) -> dict[str, Any]:
        return {"turns": self.turns, "tool_calls": self.tool_calls, "tool_errors": self.tool_errors,
                "complete": float(self.outcome == "complete"), "format_error": float(self.termination == "format_error")}


def register_env(env_id: str = ENV_ID) -> None:
    """Register AgentWorldEnv in SkyRL-Gym's registry (idempotent)."""
    from skyrl_gym.envs.registration import register, registry

    if env_id not in registry:
        register(id=env_id, entry_point="agentworld.trainers.skyrl:AgentWorldEnv")


def dataset_rows(envs: list[Any], repeats: int = 1, env_class: str = ENV_ID) -> list[dict[str, Any]]:
    """SkyRL dataset rows (prompt, env_class, extras) for every task of `EnvClient.list_envs()` results."""
    return [
        {"data_source": "agentworld", "env_class": env_class,
         "prompt": [{"role": "user", "content": t.instruction}],
         "env_id": e.env_id, "task_id": t.task_id}
        for e in envs for t in e.tasks for _ in range(repeats)
    ]
