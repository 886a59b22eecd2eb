"""Provider adapters: turn an LLMRequest into one SDK call and the answer into a Completion."""

from __future__ import annotations

from typing import Protocol

from agentworld.llm.spec import LLMSpec
from agentworld.llm.types import Completion, LLMRequest


class Provider(Protocol):
    async def complete(self, request: LLMRequest) -> Completion: ...

    async def embed(self, texts: list[str], model: str) -> tuple[list[list[float]], int]: ...

    async def close(self) -> None: ...


def make_provider(spec: LLMSpec, *, timeout_s: float, structured: str = "auto") -> Provider:
    if spec.provider == "anthropic":
        from agentworld.llm.providers.anthropic_provider import AnthropicProvider

        return AnthropicProvider(spec, timeout_s=timeout_s)
    from agentworld.llm.providers.openai_provider import OpenAIProvider

    return OpenAIProvider(spec, timeout_s=timeout_s, structured=structured)
