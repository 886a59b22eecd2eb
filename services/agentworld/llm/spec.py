"""Parse `--llm PROVIDER:MODEL[@BASE_URL]` (or $AGENTWORLD_LLM) into an LLMSpec."""

from __future__ import annotations

import os
from dataclasses import dataclass

from agentworld.llm.errors import LLMConfigError

PROVIDERS = ("anthropic", "openai")
KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}
SPEC_ENV = "AGENTWORLD_LLM"


@dataclass(frozen=True)
class LLMSpec:
    provider: str
    model: str
    base_url: str | None = None

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}" + (f"@{self.base_url}" if self.base_url else "")

    def api_key(self) -> str:
        """The key from the provider's usual variable; local OpenAI-compatible servers may go without one."""
        key = os.environ.get(KEY_ENV[self.provider])
        if key:
            return key
        if self.base_url:
            return "not-needed"  # vLLM/SGLang/Ollama accept any key
        raise LLMConfigError(f"{KEY_ENV[self.provider]} is not set (needed for --llm {self})")


def parse_llm_spec(spec: str | None = None) -> LLMSpec:
    """`anthropic:claude-sonnet-4-5`, `openai:gpt-5`, `openai:Qwen/Qwen3-8B@http://host:8000/v1`."""
    text = (spec or os.environ.get(SPEC_ENV) or "").strip()
    if not text:
        raise LLMConfigError(f"no LLM given: pass --llm PROVIDER:MODEL or set {SPEC_ENV}")
    provider, sep, rest = text.partition(":")
    if not sep or provider not in PROVIDERS:
        raise LLMConfigError(f"bad LLM spec {text!r}: want PROVIDER:MODEL[@BASE_URL] with PROVIDER in {PROVIDERS}")
    model, at, base_url = rest.partition("@")
    if not model:
        raise LLMConfigError(f"bad LLM spec {text!r}: the model name is empty")
    if at and not base_url.startswith(("http://", "https://")):
        raise LLMConfigError(f"bad LLM spec {text!r}: the base URL after @ must start with http:// or https://")
    return LLMSpec(provider=provider, model=model, base_url=base_url or None)
