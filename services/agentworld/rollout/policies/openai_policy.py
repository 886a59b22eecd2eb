"""The `openai` policy: Chat Completions with tool calling, against any OpenAI-compatible server (vLLM, SGLang, OpenAI)."""

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
    from openai import AsyncOpenAI


def openai_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": t["name"],
                "description": t.get("description", ""),
                "parameters": t.get("input_schema") or {"type": "object", "properties": {}},
            },
        }
        for t in tools
    ]


def _assistant_message(content: str | None, calls: list[Any]) -> dict[str, Any]:
    """The reply as a plain request message (only portable fields, so any OpenAI-compatible server takes it back)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
            for c in calls if getattr(c, "function", None) is not None
        ]
    return message


class OpenAIAgent(Agent):
    def __init__(self, policy: OpenAIPolicy, spec: EpisodeSpec, tools: list[dict[str, Any]]) -> None:
        super().__init__(spec, tools)
        self.policy = policy
        self._tools = openai_tools(tools)
        self.messages = [
            {"role": "system", "content": system_prompt(spec)},
            {"role": "user", "content": spec.instruction},
        ]

    async def act(self) -> Action:
        p = self.policy
        extra: dict[str, Any] = {}
        if p.temperature is not None:
            extra["temperature"] = p.temperature
        if p.max_tokens is not None:
            extra["max_tokens"] = p.max_tokens
        response = await p.client.chat.completions.create(
            model=p.model, messages=self.messages, tools=self._tools, **extra  # type: ignore[arg-type]
        )
        if response.usage is not None:
            self.add_usage(input_tokens=response.usage.prompt_tokens, output_tokens=response.usage.completion_tokens)
        if not response.choices:
            return FormatError("the server returned no choices")
        message = response.choices[0].message
        calls = message.tool_calls or []
        self.messages.append(_assistant_message(message.content, calls))
        if len(calls) > 1:
            return FormatError(f"{len(calls)} tool calls in one turn (one per turn allowed)")
        if not calls:
            text = message.content or ""
            if not text.strip():
                return FormatError("empty reply: neither a tool call nor a final answer")
            return FinalAnswer(text)
        call = calls[0]
        function = getattr(call, "function", None)
        if function is None:
            return FormatError(f"unsupported tool call type {getattr(call, 'type', '?')!r}")
        checked = self.check_call(function.name, function.arguments)
        if isinstance(checked, FormatError):
            return checked
        return ToolCallAction(name=checked.name, arguments=checked.arguments, call_id=call.id)

    def observe(self, action: ToolCallAction, observation: Observation) -> None:
        self.messages.append({"role": "tool", "tool_call_id": action.call_id, "content": observation.content})


@dataclass
class OpenAIPolicy(Policy):
    model: str = ""
    base_url: str | None = None
    api_key: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    timeout_s: float = 120.0
    name: str = "openai"
    _client: AsyncOpenAI | None = field(default=None, init=False, repr=False)

    @property
    def client(self) -> AsyncOpenAI:
        if self._client is None:
            from openai import AsyncOpenAI

            key = self.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"  # local servers ignore the key
            self._client = AsyncOpenAI(base_url=self.base_url, api_key=key, max_retries=2, timeout=self.timeout_s)
        return self._client

    def start(self, spec: EpisodeSpec, tools: list[dict[str, Any]]) -> Agent:
        return OpenAIAgent(self, spec, tools)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
