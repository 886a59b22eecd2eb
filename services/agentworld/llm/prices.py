"""Prices per million tokens (input, output) and cost computation; override by file or flags.

The defaults are list prices at the time of writing; they are only used for the report, so a
wrong or missing price never blocks a run (unknown models, e.g. local servers, cost 0 and are marked unpriced).
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from agentworld.llm.errors import LLMConfigError

_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|latest)")


@dataclass(frozen=True)
class Price:
    input: float  # USD per million input tokens
    output: float  # USD per million output tokens
    cache_read: float | None = None  # USD per million prompt-cache reads; None: the provider's usual discount
    cache_write: float | None = None  # USD per million prompt-cache writes (Anthropic)

    def cost(self, input_tokens: int, output_tokens: int, cache_read: int = 0, cache_write: int = 0,
             model: str = "") -> float:
        """`input_tokens` counts every prompt token, cache reads and writes included."""
        claude = model.startswith("claude")
        read = self.cache_read if self.cache_read is not None else self.input * (0.1 if claude else 0.5)
        write = self.cache_write if self.cache_write is not None else self.input * (1.25 if claude else 1.0)
        plain = max(0, input_tokens - cache_read - cache_write)
        return (plain * self.input + cache_read * read + cache_write * write + output_tokens * self.output) / 1e6


DEFAULT_PRICES: dict[str, Price] = {
    "claude-opus-4-1": Price(15.0, 75.0),
    "claude-opus-4": Price(15.0, 75.0),
    "claude-opus-4-5": Price(5.0, 25.0),
    "claude-sonnet-4-5": Price(3.0, 15.0),
    "claude-sonnet-4": Price(3.0, 15.0),
    "claude-3-7-sonnet": Price(3.0, 15.0),
    "claude-haiku-4-5": Price(1.0, 5.0),
    "claude-3-5-haiku": Price(0.8, 4.0),
    "gpt-5": Price(1.25, 10.0),
    "gpt-5-mini": Price(0.25, 2.0),
    "gpt-5-nano": Price(0.05, 0.4),
    "gpt-4.1": Price(2.0, 8.0),
    "gpt-4.1-mini": Price(0.4, 1.6),
    "gpt-4o": Price(2.5, 10.0),
    "gpt-4o-mini": Price(0.15, 0.6),
    "o3": Price(2.0, 8.0),
    "o4-mini": Price(1.1, 4.4),
    "text-embedding-3-small": Price(0.02, 0.0),
    "text-embedding-3-large": Price(0.13, 0.0),
}


class PriceTable:
    """Looks a model up exactly, then as a dated snapshot of a known model; anything else is unpriced."""

    def __init__(self, prices: dict[str, Price] | None = None) -> None:
        self.prices = dict(DEFAULT_PRICES if prices is None else prices)

    def lookup(self, model: str) -> Price | None:
        if model in self.prices:
            return self.prices[model]
        for name, price in self.prices.items():  # dated snapshots: gpt-4o-2024-08-06, claude-haiku-4-5-20251001
            if model.startswith(name) and _SNAPSHOT.fullmatch(model[len(name):]):
                return price
        return None

    def cost(self, model: str, input_tokens: int, output_tokens: int, cache_read: int = 0,
             cache_write: int = 0) -> float | None:
        price = self.lookup(model)
        return None if price is None else price.cost(input_tokens, output_tokens, cache_read, cache_write, model)

    def override(self, model: str, price: Price) -> None:
        self.prices[model] = price

    @classmethod
    def load(cls, path: str | Path | None = None, *, model: str | None = None, input_price: float | None = None,
             output_price: float | None = None) -> PriceTable:
        """Defaults, then a JSON/TOML file `{model: {input: X, output: Y}}`, then per-flag prices for `model`."""
        table = cls()
        if path is not None:
            table.prices.update(_read_price_file(Path(path)))
        if model is not None and (input_price is not None or output_price is not None):
            base = table.lookup(model) or Price(0.0, 0.0)
            table.override(model, Price(base.input if input_price is None else float(input_price),
                                        base.output if output_price is None else float(output_price),
                                        base.cache_read, base.cache_write))
        return table


def _read_price_file(path: Path) -> dict[str, Price]:
    try:
        raw_text = path.read_text(encoding="utf-8")
        data = tomllib.loads(raw_text) if path.suffix == ".toml" else json.loads(raw_text)
    except (OSError, ValueError) as exc:
        raise LLMConfigError(f"price file {path}: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("models"), dict):
        data = data["models"]
    out: dict[str, Price] = {}
    for name, entry in (data or {}).items():
        try:
            out[name] = Price(float(entry["input"]), float(entry["output"]),
                              None if entry.get("cache_read") is None else float(entry["cache_read"]),
                              None if entry.get("cache_write") is None else float(entry["cache_write"]))
        except (TypeError, KeyError, ValueError) as exc:
            raise LLMConfigError(f"price file {path}: model {name!r} needs numeric 'input' and 'output' "
                                 f"(USD per million tokens)") from exc
    return out


# Maximum output tokens per request of known models; requests are clamped to it (an unknown model: no clamp).
OUTPUT_LIMITS: dict[str, int] = {
    "gpt-4o": 16_384, "gpt-4o-mini": 16_384, "gpt-4.1": 32_768, "gpt-4.1-mini": 32_768, "gpt-5": 128_000,
    "gpt-5-mini": 128_000, "gpt-5-nano": 128_000, "o3": 100_000, "o4-mini": 100_000,
    "claude-opus-4-1": 32_000, "claude-opus-4": 32_000, "claude-opus-4-5": 64_000, "claude-sonnet-4-5": 64_000,
    "claude-sonnet-4": 64_000, "claude-haiku-4-5": 64_000, "claude-3-7-sonnet": 64_000, "claude-3-5-haiku": 8_192,
}


def output_limit(model: str) -> int | None:
    if model in OUTPUT_LIMITS:
        return OUTPUT_LIMITS[model]
    for name, limit in OUTPUT_LIMITS.items():
        if model.startswith(name) and _SNAPSHOT.fullmatch(model[len(name):]):
            return limit
    return None
