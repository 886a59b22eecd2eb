"""Anthropic Messages API. Structured output by forcing a tool whose input schema is the wanted JSON schema."""

from __future__ import annotations

import json

import anthropic

from agentworld.llm.errors import LLMConfigError
from agentworld.llm.spec import LLMSpec
from agentworld.llm.types import Completion, LLMRequest

# Long answers (the app code) are streamed: the SDK and API expect it for long generations, and a stalled stream is
# noticed after `timeout_s` without a chunk instead of after the whole answer's time.
STREAM_ABOVE_TOKENS = 16_384


class AnthropicProvider:
    def __init__(self, spec: LLMSpec, *, timeout_s: float) -> None:
        self.spec = spec
        self.client = anthropic.AsyncAnthropic(api_key=spec.api_key(), base_url=spec.base_url, max_retries=0,
                                               timeout=timeout_s)

    async def complete(self, request: LLMRequest) -> Completion:
        kwargs: dict = {
            "model": self.spec.model,
            "max_tokens": request.max_tokens,
            "system": ([{"type": "text", "text": request.system, "cache_control": {"type": "ephemeral"}}]
                       if request.cache_system else request.system),
            "messages": [{"role": role, "content": text} for role, text in request.messages],
        }
        if request.temperature is not None:  # this SDK version no longer types it; older models still take it
            kwargs["extra_body"] = {"temperature": request.temperature}
        if request.json_schema is not None:
            kwargs["tools"] = [{"name": request.schema_name, "description": "Submit the answer as structured data.",
                                "input_schema": request.json_schema}]
            kwargs["tool_choice"] = {"type": "tool", "name": request.schema_name}
        if request.max_tokens > STREAM_ABOVE_TOKENS:
            async with self.client.messages.stream(**kwargs) as stream:
                msg = await stream.get_final_message()
        else:
            msg = await self.client.messages.create(**kwargs)
        text_parts, data = [], None
        for block in msg.content:
            if block.type == "text":
                text_parts.append(block.text)
            elif block.type == "tool_use" and isinstance(block.input, dict):
                data = block.input
        text = json.dumps(data) if data is not None else "".join(text_parts)
        usage = msg.usage
        read = getattr(usage, "cache_read_input_tokens", None) or 0
        write = getattr(usage, "cache_creation_input_tokens", None) or 0
        return Completion(text=text, data=data, input_tokens=usage.input_tokens + read + write,
                          output_tokens=usage.output_tokens, cache_read_tokens=read, cache_write_tokens=write,
                          finish_reason=msg.stop_reason or "stop", model=msg.model)

    async def embed(self, texts: list[str], model: str) -> tuple[list[list[float]], int]:
        raise LLMConfigError("Anthropic has no embeddings API; use --embeddings openai:MODEL or the local fallback")

    async def close(self) -> None:
        await self.client.close()
