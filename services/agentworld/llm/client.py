"""LLMClient: one provider behind a concurrency limit, our retries, the response cache and per-stage accounting."""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path
from typing import Any

from agentworld.llm.accounting import Accounting
from agentworld.llm.cache import ResponseCache, request_key
from agentworld.llm.errors import LLMParseError
from agentworld.llm.jsonparse import parse_json_object
from agentworld.llm.prices import PriceTable
from agentworld.llm.providers import Provider, make_provider
from agentworld.llm.retry import RetryPolicy, call_with_retries, describe
from agentworld.llm.spec import LLMSpec, parse_llm_spec
from agentworld.llm.types import Completion, LLMRequest

log = logging.getLogger(__name__)


class LLMClient:
    def __init__(self, spec: LLMSpec | str, *, cache_dir: Path | str | None = None, concurrency: int = 8,
                 timeout_s: float = 600.0, retry: RetryPolicy | None = None, prices: PriceTable | None = None,
                 structured: str = "auto", accounting: Accounting | None = None,
                 provider: Provider | None = None, rng_seed: int | None = None) -> None:
        self.spec = parse_llm_spec(spec) if isinstance(spec, str) else spec
        self.provider = provider or make_provider(self.spec, timeout_s=timeout_s, structured=structured)
        self.cache = ResponseCache(cache_dir)
        self.semaphore = asyncio.Semaphore(max(1, concurrency))
        self.retry = retry or RetryPolicy()
        self.prices = prices or PriceTable()
        self.accounting = accounting or Accounting()
        self.rng = random.Random(rng_seed)

    async def complete(self, stage: str, system: str, messages: list[tuple[str, str]], *,
                       json_schema: dict[str, Any] | None = None, schema_name: str = "answer",
                       max_tokens: int = 8192, temperature: float | None = None,
                       cache_system: bool = False) -> Completion:
        """One chat completion, from the cache when the identical request was answered before."""
        request = LLMRequest(system=system, messages=tuple((r, t) for r, t in messages), max_tokens=max_tokens,
                             temperature=temperature, json_schema=json_schema, schema_name=schema_name,
                             cache_system=cache_system)
        material = request.cache_material()
        key = request_key(self.spec.provider, self.spec.model, material)
        cached = self.cache.get(key)
        if cached is not None:
            self.accounting.stage(stage).cache_hits += 1
            return cached
        stats = self.accounting.stage(stage)

        def on_retry(exc: BaseException, delay: float) -> None:
            stats.transport_retries += 1
            log.warning("%s: %s; retrying in %.1fs", stage, describe(exc), delay)

        async with self.semaphore:
            completion = await call_with_retries(lambda: self.provider.complete(request), self.retry,
                                                 on_retry=on_retry, rng=self.rng)
        cost = self.prices.cost(self.spec.model, completion.input_tokens, completion.output_tokens,
                                completion.cache_read_tokens, completion.cache_write_tokens)
        self.accounting.add_usage(stage, completion.input_tokens, completion.output_tokens, cost,
                                  completion.cache_read_tokens)
        self.cache.put(key, completion, material)
        return completion

    async def complete_json(self, stage: str, system: str, messages: list[tuple[str, str]], *,
                            json_schema: dict[str, Any] | None = None, schema_name: str = "answer",
                            max_tokens: int = 8192, temperature: float | None = None,
                            ) -> tuple[Completion, dict[str, Any]]:
        """A completion whose answer must be one JSON object; raises LLMParseError (fed back by the caller)."""
        completion = await self.complete(stage, system, messages, json_schema=json_schema, schema_name=schema_name,
                                          max_tokens=max_tokens, temperature=temperature)
        if completion.data is not None:
            return completion, completion.data
        if completion.truncated:
            raise LLMParseError(f"the answer was cut off at the output limit ({max_tokens} tokens); "
                                "answer more concisely")
        return completion, parse_json_object(completion.text)

    async def embed(self, stage: str, texts: list[str], model: str) -> list[list[float]]:
        async with self.semaphore:
            vectors, tokens = await call_with_retries(lambda: self.provider.embed(texts, model), self.retry,
                                                      rng=self.rng)
        self.accounting.add_usage(stage, tokens, 0, self.prices.cost(model, tokens, 0))
        return vectors

    async def close(self) -> None:
        await self.provider.close()
