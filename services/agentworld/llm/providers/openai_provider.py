"""OpenAI Chat Completions, also for OpenAI-compatible servers (vLLM, SGLang, Ollama) by base URL.

Structured output: `response_format` json_schema on api.openai.com, json_object on other servers (wider support);
`structured="none"` turns it off for servers that reject response_format (answers are then parsed tolerantly).
"""

from __future__ import annotations

import json

import openai

from agentworld.llm.spec import LLMSpec
from agentworld.llm.types import Completion, LLMRequest


class OpenAIProvider:
    def __init__(self, spec: LLMSpec, *, timeout_s: float, structured: str = "auto") -> None:
        self.spec = spec
        self.official = spec.base_url is None
        self.structured = structured if structured != "auto" else ("schema" if self.official else "object")
        self.client = openai.AsyncOpenAI(api_key=spec.api_key(), base_url=spec.base_url, max_retries=0,
                                         timeout=timeout_s)

    async def complete(self, request: LLMRequest) -> Completion:
        messages = [{"role": "system", "content": request.system}]
        messages += [{"role": role, "content": text} for role, text in request.messages]
        kwargs: dict = {"model": self.spec.model, "messages": messages}
        # api.openai.com wants max_completion_tokens (reasoning models); compatible servers know max_tokens.
        kwargs["max_completion_tokens" if self.official else "max_tokens"] = request.max_tokens
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if request.json_schema is not None and self.structured == "schema":
            kwargs["response_format"] = {"type": "json_schema", "json_schema": {
                "name": request.schema_name, "schema": request.json_schema, "strict": False}}
        elif request.json_schema is not None and self.structured == "object":
            kwargs["response_format"] = {"type": "json_object"}
        resp = await self.client.chat.completions.create(**kwargs)
        choice = resp.choices[0]
        text = choice.message.content or ""
        data = None
        if request.json_schema is not None and self.structured != "none" and choice.finish_reason != "length":
            try:
                parsed = json.loads(text)
                data = parsed if isinstance(parsed, dict) else None
            except ValueError:
                data = None  # fall back to tolerant parsing by the caller
        usage = resp.usage
        details = getattr(usage, "prompt_tokens_details", None)
        cached = (getattr(details, "cached_tokens", None) or 0) if details is not None else 0
        return Completion(text=text, data=data, input_tokens=usage.prompt_tokens if usage else 0,
                          output_tokens=usage.completion_tokens if usage else 0, cache_read_tokens=cached,
                          finish_reason=choice.finish_reason or "stop", model=resp.model or self.spec.model)

    async def embed(self, texts: list[str], model: str) -> tuple[list[list[float]], int]:
        resp = await self.client.embeddings.create(model=model, input=texts)
        vectors = [item.embedding for item in sorted(resp.data, key=lambda d: d.index)]
        return vectors, (resp.usage.prompt_tokens if resp.usage else 0)

    async def close(self) -> None:
        await self.client.close()
