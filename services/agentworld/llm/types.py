"""Plain data passed between the LLM client, its providers and the cache."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class LLMRequest:
    """One chat request. `json_schema` asks for structured output (tool use / response_format)."""

    system: str
    messages: tuple[tuple[str, str], ...]  # (role, text), role in user|assistant
    max_tokens: int = 8192
    temperature: float | None = None
    json_schema: dict[str, Any] | None = None
    schema_name: str = "answer"
    cache_system: bool = False  # mark the system prompt as a reusable prefix (Anthropic prompt caching)

    def cache_material(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "messages": [list(m) for m in self.messages],
            "params": {"max_tokens": self.max_tokens, "temperature": self.temperature,
                       "json_schema": self.json_schema, "schema_name": self.schema_name},
        }


@dataclass
class Completion:
    text: str
    input_tokens: int = 0  # all prompt tokens, including the two below
    output_tokens: int = 0
    cache_read_tokens: int = 0  # prompt tokens served from the provider's prompt cache
    cache_write_tokens: int = 0  # prompt tokens written to it (Anthropic)
    finish_reason: str = "stop"  # "stop" | "length" | provider-specific
    data: dict[str, Any] | None = None  # structured output already decoded by the provider
    model: str = ""
    cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        return self.finish_reason in ("length", "max_tokens")

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("cached")
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Completion:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "cached"}, cached=True)
