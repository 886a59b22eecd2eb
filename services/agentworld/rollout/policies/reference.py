"""The `reference` policy: replays a task's reference solution, then answers with its expected answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agentworld.rollout.policies.base import (
    Action,
    Agent,
    EpisodeSpec,
    FinalAnswer,
    Observation,
    Policy,
    PolicyError,
    ToolCallAction,
)

DONE_TEXT = "Done."


class ReferenceAgent(Agent):
    def __init__(self, spec: EpisodeSpec, tools: list[dict[str, Any]]) -> None:
        super().__init__(spec, tools)
        if spec.solution is None:
            raise PolicyError(
                f"no reference solution for {spec.env_id}/{spec.task_id}: the reference policy needs the bundles "
                "(pass --envs DIR)"
            )
        self._calls = list(spec.solution)
        self.messages = [{"role": "user", "content": spec.instruction}]

    async def act(self) -> Action:
        turn = sum(1 for m in self.messages if m["role"] == "assistant")
        if turn < len(self._calls):
            call = self._calls[turn]
            call_id = f"call_{turn}"
            self.messages.append(
                {"role": "assistant", "tool_calls": [{"id": call_id, "name": call.tool, "arguments": call.arguments}]}
            )
            return ToolCallAction(name=call.tool, arguments=dict(call.arguments), call_id=call_id)
        text = self.spec.expected_answer if self.spec.expected_answer is not None else DONE_TEXT
        self.messages.append({"role": "assistant", "content": text})
        return FinalAnswer(text)

    def observe(self, action: ToolCallAction, observation: Observation) -> None:
        self.messages.append(
            {"role": "tool", "tool_call_id": action.call_id, "content": observation.content, "is_error": observation.is_error}
        )


@dataclass
class ReferencePolicy(Policy):
    name: str = "reference"
    needs_solutions: bool = field(default=True, init=False)

    def start(self, spec: EpisodeSpec, tools: list[dict[str, Any]]) -> Agent:
        return ReferenceAgent(spec, tools)
