"""The `random` policy: random tools with schema-sampled arguments, then a final answer; seeded per episode.

A floor for rewards and a load generator that exercises every tool, including its validation errors.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from agentworld.rollout.policies.base import (
    Action,
    Agent,
    EpisodeSpec,
    FinalAnswer,
    Observation,
    Policy,
    ToolCallAction,
)
from agentworld.rollout.schema_sample import sample


class RandomAgent(Agent):
    def __init__(self, spec: EpisodeSpec, tools: list[dict[str, Any]], stop_p: float) -> None:
        super().__init__(spec, tools)
        self.rng = random.Random(f"{spec.seed}:{spec.env_id}:{spec.task_id}:{spec.repeat}")
        self.stop_p = stop_p
        self.messages = [{"role": "user", "content": spec.instruction}]
        self._turn = 0

    async def act(self) -> Action:
        self._turn += 1
        if not self.tools or (self._turn > 1 and self.rng.random() < self.stop_p):
            text = f"random answer {self.rng.randint(0, 10**6)}"
            self.messages.append({"role": "assistant", "content": text})
            return FinalAnswer(text)
        tool = self.rng.choice(self.tools)
        arguments = sample(tool.get("input_schema") or {"type": "object"}, self.rng)
        if not isinstance(arguments, dict):
            arguments = {}
        call_id = f"call_{self._turn}"
        self.messages.append(
            {"role": "assistant", "tool_calls": [{"id": call_id, "name": tool["name"], "arguments": arguments}]}
        )
        return ToolCallAction(name=tool["name"], arguments=arguments, call_id=call_id)

    def observe(self, action: ToolCallAction, observation: Observation) -> None:
        self.messages.append(
            {"role": "tool", "tool_call_id": action.call_id, "content": observation.content, "is_error": observation.is_error}
        )


@dataclass
class RandomPolicy(Policy):
    name: str = "random"
    stop_p: float = 0.25  # chance of answering (ending the episode) at each turn after the first

    def start(self, spec: EpisodeSpec, tools: list[dict[str, Any]]) -> Agent:
        return RandomAgent(spec, tools, self.stop_p)
