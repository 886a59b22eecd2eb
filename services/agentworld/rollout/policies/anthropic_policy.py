"""The `anthropic` policy: the Messages API with tool use."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentworld.rollout.policies.base import (
    Action,
    Agent,
    EpisodeSpec,
    FinalAnswer,
    FormatError,
    Observation,
    Policy,
    ToolCallAction,
    system_prompt,
)

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic


def anthropic_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "name": t["name"],
            "description": t.get("description", ""),
            "input_schema": t.get("input_schema") or {"type": "object", "properties": {}},
        }
        for t in tools
    ]


def _request_block(block: Any) -> dict[str, Any]:
    """A response content block as a request block (text and tool_use reduced to the fields requests accept)."""
    if block.type == "text":
        return {"type": "text", "text": block.text}
    if block.type == "tool_use":
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    return block.model_dump(mode="json", exclude_none=True)  # thinking blocks etc. go back as they came


class AnthropicAgent(Agent):
    def __init__(self, policy: AnthropicPolicy, spec: EpisodeSpec, tools: list[dict[str, Any]]) -> None:
        super().__init__(spec, tools)
        self.policy = policy
        self.system = system_prompt(spec)
        self._tools = anthropic_tools(tools)
        self.messages = [{"role": "user", "content": spec.instruction}]

    async def act(self) -> Action:
        p = self.policy
        extra: dict[str, Any] = {}
        if p.temperature is not None:
            extra["temperature"] = p.temperature
        response = await p.client.messages.create(
            model=p.model,
            max_tokens=p.max_tokens,
            system=self.system,
            messages=self.messages,  # type: ignore[arg-type]
            tools=self._tools,  # type: ignore[arg-type]
            **extra,
        )
        if response.usage is not None:
            self.add_usage(input_tokens=response.usage.input_tokens, output_tokens=response.usage.output_tokens)
        blocks = [_request_block(b) for b in response.content]
        self.messages.append({"role": "assistant", "content": blocks})
        uses = [b for b in response.content if b.type == "tool_use"]
        if len(uses) > 1:
            return FormatError(f"{len(uses)} tool_use blocks in one turn (one per turn allowed)")
        if not uses:
            text = "".join(getattr(b, "text", "") for b in response.content if b.type == "text")
            if not text.strip():
                return FormatError(f"empty reply (stop_reason {response.stop_reason!r}): no tool use and no text")
            return FinalAnswer(text)
        use = uses[0]
        checked = self.check_call(use.name, use.input)
        if isinstance(checked, FormatError):
            return checked
        return ToolCallAction(name=checked.name, arguments=checked.arguments, call_id=use.id)

    def observe(self, action: ToolCallAction, observation: Observation) -> None:
        block = {"type": "tool_result", "tool_use_id": action.call_id, "content": observation.content}
        if observation.is_error:
            block["is_error"] = True
        self.messages.append({"role": "user", "content": [block]})


@dataclass
class AnthropicPolicy(Policy):
    model: str = ""
    base_url: str | None = None
    api_key: str | None = None
    temperature: float | None = None
    max_tokens: int = 1024
    timeout_s: float = 120.0
    name: str = "anthropic"
    _client: AsyncAnthropic | None = field(default=None, init=False, repr=False)

    @property
    def client(self) -> AsyncAnthropic:
        if self._client is None:
            from anthropic import AsyncAnthropic

            key = self.api_key or os.environ.get("ANTHROPIC_API_KEY") or "EMPTY"
            self._client = AsyncAnthropic(base_url=self.base_url, api_key=key, max_retries=2, timeout=self.timeout_s)
        return self._client

    def start(self, spec: EpisodeSpec, tools: list[dict[str, Any]]) -> Agent:
        return AnthropicAgent(self, spec, tools)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
