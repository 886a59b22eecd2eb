"""What a policy is: per episode, an agent that chooses one action per turn and sees each tool's result."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from agentworld.bundle import ToolCall

SYSTEM_PROMPT = (
    "You are an agent operating a {title} service through its tools on behalf of the logged-in user. "
    "Call one tool at a time and read its result before the next step. When the task is done, reply with your "
    "final answer as plain text without calling a tool; that ends the episode."
)


class PolicyError(ValueError):
    """A policy spec is malformed or names an unknown policy."""


@dataclass(frozen=True)
class EpisodeSpec:
    """What the runner knows about an episode before it starts."""

    env_id: str
    task_id: str
    instruction: str
    kind: str = ""
    env_title: str = ""
    repeat: int = 0
    seed: int = 0
    solution: list[ToolCall] | None = None  # only the reference policy needs it
    expected_answer: str | None = None


@dataclass(frozen=True)
class ToolCallAction:
    name: str
    arguments: dict[str, Any]
    call_id: str = ""


@dataclass(frozen=True)
class FinalAnswer:
    text: str


@dataclass(frozen=True)
class FormatError:
    """The policy's output cannot be executed (unknown tool, unparsable arguments, two calls in one turn...)."""

    reason: str
    raw: Any = None


Action = ToolCallAction | FinalAnswer | FormatError


@dataclass
class Observation:
    is_error: bool
    content: str
    http_status: int = 0


class Agent(ABC):
    """One episode's policy state. `messages` is the conversation in the policy's own wire format."""

    def __init__(self, spec: EpisodeSpec, tools: list[dict[str, Any]]) -> None:
        self.spec = spec
        self.tools = tools
        self.tool_names = {t["name"] for t in tools}
        self.messages: list[dict[str, Any]] = []
        self.usage: dict[str, int] = {}  # token counts summed over the episode's model calls

    def add_usage(self, **counts: int | None) -> None:
        for key, value in counts.items():
            if value:
                self.usage[key] = self.usage.get(key, 0) + int(value)

    @abstractmethod
    async def act(self) -> Action: ...

    @abstractmethod
    def observe(self, action: ToolCallAction, observation: Observation) -> None: ...

    def check_call(self, name: str, arguments: Any) -> ToolCallAction | FormatError:
        """Shared validation of a model-produced call: known tool, arguments a JSON object."""
        if name not in self.tool_names:
            return FormatError(f"unknown tool {name!r}", raw={"name": name, "arguments": arguments})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                return FormatError(f"arguments of {name!r} are not valid JSON: {exc}", raw=arguments)
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            return FormatError(f"arguments of {name!r} are not a JSON object", raw=arguments)
        return ToolCallAction(name=name, arguments=arguments)


@dataclass
class Policy(ABC):
    """Makes one Agent per episode; holds what episodes share (an SDK client, a model name)."""

    name: str = "policy"
    needs_solutions: bool = field(default=False, init=False)

    @abstractmethod
    def start(self, spec: EpisodeSpec, tools: list[dict[str, Any]]) -> Agent: ...

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most policies hold nothing
        """Release shared resources (HTTP clients)."""


def system_prompt(spec: EpisodeSpec) -> str:
    return SYSTEM_PROMPT.format(title=spec.env_title or spec.env_id)
