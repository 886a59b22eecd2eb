"""The LLM layer through the real anthropic/openai SDKs against local protocol servers."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pytest

from agentworld.llm import (
    LLMClient,
    LLMConfigError,
    LLMParseError,
    LLMRequestError,
    Price,
    PriceTable,
    RetryPolicy,
    extract_code,
    parse_json_object,
    parse_llm_spec,
)
from tests.llm.fake_servers import FakeLLMServer, Recorded, Reply

FAST_RETRY = RetryPolicy(max_retries=3, base_delay_s=0.01, max_delay_s=0.05)
SCHEMA = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}


def client_for(server: FakeLLMServer, provider: str, **kw) -> LLMClient:
    url = server.anthropic_url if provider == "anthropic" else server.openai_url
    model = "claude-haiku-4-5" if provider == "anthropic" else "gpt-4o"
    kw.setdefault("retry", FAST_RETRY)
    return LLMClient(f"{provider}:{model}@{url}", **kw)


def ask(client: LLMClient, text: str = "hi", **kw):
    async def go():
        try:
            return await client.complete("stage", "system prompt", [("user", text)], **kw)
        finally:
            await client.close()
    return asyncio.run(go())


# ---- specs, parsing, prices -------------------------------------------------------------------------------------


def test_llm_spec_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    s = parse_llm_spec("openai:Qwen/Qwen3-8B@http://host:8000/v1")
    assert (s.provider, s.model, s.base_url) == ("openai", "Qwen/Qwen3-8B", "http://host:8000/v1")
    assert parse_llm_spec("anthropic:claude-sonnet-4-5").base_url is None
    monkeypatch.setenv("AGENTWORLD_LLM", "openai:gpt-5")
    assert parse_llm_spec(None).model == "gpt-5"
    for bad in ("gpt-5", "cohere:x", "openai:", "openai:m@ftp://x"):
        with pytest.raises(LLMConfigError):
            parse_llm_spec(bad)
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(LLMConfigError, match="OPENAI_API_KEY"):
        parse_llm_spec("openai:gpt-5").api_key()
    assert parse_llm_spec("openai:m@http://localhost:1/v1").api_key()  # local servers need no key


def test_tolerant_json_parsing() -> None:
    assert parse_json_object('Sure! ```json\n{"a": [1, 2,], "b": {"c": 1,},}\n``` done') == {"a": [1, 2], "b": {"c": 1}}
    assert parse_json_object('The answer is {"a": "x } y"} as requested.') == {"a": "x } y"}
    assert parse_json_object('{"a": 1}\n{"a": 1, "b": 2}') == {"a": 1, "b": 2}  # the fuller object wins
    for bad in ("no json here", '{"a": [1, 2', "[1, 2]"):
        with pytest.raises(LLMParseError):
            parse_json_object(bad)


def test_extract_code() -> None:
    text = "Here:\n```sql\nSELECT 1;\n```\n```python\nimport os\nprint(1)\n```\nbye"
    assert extract_code(text) == "import os\nprint(1)\n"
    assert extract_code("x = 1") == "x = 1\n"
    assert extract_code("```python\ndef f(:\n") == "def f(:\n"  # an unterminated fence still yields its body


def test_price_table(tmp_path: Path) -> None:
    table = PriceTable()
    assert table.cost("gpt-4o-2024-08-06", 1_000_000, 1_000_000) == pytest.approx(12.5)  # prefix match
    assert table.cost("my-local-model", 10, 10) is None
    (tmp_path / "p.json").write_text(json.dumps({"my-local-model": {"input": 1, "output": 2}}))
    assert PriceTable.load(tmp_path / "p.json").cost("my-local-model", 500_000, 500_000) == pytest.approx(1.5)
    (tmp_path / "p.toml").write_text('[models."gpt-4o"]\ninput = 1.0\noutput = 1.0\n')
    assert PriceTable.load(tmp_path / "p.toml").cost("gpt-4o", 1_000_000, 0) == pytest.approx(1.0)
    flagged = PriceTable.load(model="gpt-4o", output_price=20)
    assert flagged.lookup("gpt-4o") == Price(2.5, 20.0)
    (tmp_path / "bad.json").write_text('{"m": {"input": "x"}}')
    with pytest.raises(LLMConfigError, match="input"):
        PriceTable.load(tmp_path / "bad.json")


# ---- structured output and accounting ---------------------------------------------------------------------------


@pytest.mark.parametrize("structured", ["schema", "object", "none"])
def test_openai_structured_output_and_cost(server: FakeLLMServer, structured: str) -> None:
    server.responder = lambda req: Reply(text='{"x": 7}')
    client = client_for(server, "openai", structured=structured, prices=PriceTable({"gpt-4o": Price(2.0, 10.0)}))
    completion = ask(client, json_schema=SCHEMA, schema_name="answer")
    (req,) = server.requests
    rf = req.body.get("response_format")
    if structured == "schema":
        assert rf["type"] == "json_schema" and rf["json_schema"]["schema"] == SCHEMA
    elif structured == "object":
        assert rf == {"type": "json_object"}
    else:
        assert rf is None
    assert req.body["max_tokens"] == 8192  # compatible servers get max_tokens
    assert completion.data == ({"x": 7} if structured != "none" else None)
    stats = client.accounting.stage("stage")
    assert (stats.input_tokens, stats.output_tokens) == req.usage
    assert stats.cost_usd == pytest.approx((req.usage[0] * 2.0 + req.usage[1] * 10.0) / 1e6)


def test_anthropic_forces_tool_use_for_json(server: FakeLLMServer) -> None:
    server.responder = lambda req: Reply(text='{"x": 3}')
    client = client_for(server, "anthropic")
    completion = ask(client, json_schema=SCHEMA, schema_name="answer", temperature=0.2)
    (req,) = server.requests
    assert req.body["tool_choice"] == {"type": "tool", "name": "answer"}
    assert req.body["tools"][0]["input_schema"] == SCHEMA
    assert req.body["system"] == "system prompt" and req.body["temperature"] == 0.2
    assert "sk-ant-test" in req.headers.get("x-api-key", "") + req.headers.get("authorization", "")
    assert completion.data == {"x": 3} and completion.finish_reason == "tool_use"
    assert client.accounting.stage("stage").cost_usd == pytest.approx((req.usage[0] * 1 + req.usage[1] * 5) / 1e6)


def test_anthropic_prompt_caching_is_requested_and_billed_at_cache_prices(server: FakeLLMServer) -> None:
    server.responder = lambda req: Reply(text="ok")
    client = client_for(server, "anthropic")
    system = "You know this environment. " * 200

    async def go():
        try:
            for text in ("first", "second"):
                await client.complete("stage", system, [("user", text)], cache_system=True)
        finally:
            await client.close()

    asyncio.run(go())
    first, second = server.requests
    assert first.body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert first.cache[1] > 0 and second.cache[0] == first.cache[1]  # written once, then read
    stats = client.accounting.stage("stage")
    assert stats.input_tokens == first.usage[0] + second.usage[0] and stats.cache_read_tokens == second.cache[0]
    billed = sum((r.usage[0] - sum(r.cache)) * 1.0 + r.cache[0] * 0.1 + r.cache[1] * 1.25 + r.usage[1] * 5.0
                 for r in (first, second)) / 1e6
    assert stats.cost_usd == pytest.approx(billed)


def test_truncation_is_reported(server: FakeLLMServer) -> None:
    server.responder = lambda req: Reply(text="def f(", finish="length")
    for provider in ("anthropic", "openai"):
        completion = ask(client_for(server, provider))
        assert completion.truncated, provider
    streamed = ask(client_for(server, "anthropic"), max_tokens=32_000)
    assert streamed.truncated and streamed.text == "def f(" and server.requests[-1].streamed


def test_anthropic_long_answers_are_streamed(server: FakeLLMServer) -> None:
    code = "x = 1\n" * 3000
    server.responder = lambda req: Reply(text=code if not req.wants_structured else '{"x": 5}')
    client = client_for(server, "anthropic")
    long_text = ask(client, max_tokens=32_000)
    assert long_text.text == code and server.requests[-1].streamed and server.requests[-1].body["stream"] is True
    assert (long_text.input_tokens, long_text.output_tokens) == server.requests[-1].usage
    structured = ask(client_for(server, "anthropic"), max_tokens=32_000, json_schema=SCHEMA)
    assert structured.data == {"x": 5} and server.requests[-1].streamed
    assert not ask(client_for(server, "anthropic")).cached and not server.requests[-1].streamed


# ---- retries ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_429_then_success(server: FakeLLMServer, provider: str) -> None:
    server.responder = lambda req: Reply(text="ok")
    server.fail(lambda r: True, Reply(status=429, headers={"retry-after": "0"}, error_type="rate_limit_error"))
    client = client_for(server, provider)
    assert ask(client).text == "ok"
    assert [r.status for r in server.requests] == [429, 200]
    assert client.accounting.stage("stage").transport_retries == 1
    assert client.accounting.stage("stage").requests == 1


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_500_retried_then_gives_up(server: FakeLLMServer, provider: str) -> None:
    server.responder = lambda req: Reply(text="ok")
    server.fail(lambda r: True, Reply(status=500), times=1)
    client = client_for(server, provider)
    assert ask(client).text == "ok"
    assert [r.status for r in server.requests] == [500, 200]
    server.requests.clear()
    server.fail(lambda r: True, Reply(status=503), times=100)
    client = client_for(server, provider)
    with pytest.raises(LLMRequestError, match="gave up after 4 attempts: HTTP 503") as info:
        ask(client, "again")
    assert info.value.status == 503
    # exactly our 1 + 3 retries: the SDK's own retries are off
    assert len(server.requests) == FAST_RETRY.max_retries + 1


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_timeout_then_success(server: FakeLLMServer, provider: str) -> None:
    server.responder = lambda req: Reply(text="ok")
    server.fail(lambda r: True, Reply(text="late", delay_s=6.0))
    client = client_for(server, provider, timeout_s=2.0)
    started = time.monotonic()
    assert ask(client).text == "ok"
    assert client.accounting.stage("stage").transport_retries >= 1
    assert time.monotonic() - started < 6.0  # we gave up on the slow answer instead of waiting for it


def test_retry_after_is_respected(server: FakeLLMServer) -> None:
    server.responder = lambda req: Reply(text="ok")
    server.fail(lambda r: True, Reply(status=429, headers={"retry-after": "1"}))
    started = time.monotonic()
    ask(client_for(server, "openai"))
    assert time.monotonic() - started >= 0.95  # FAST_RETRY alone would wait < 0.05 s


def test_client_errors_are_not_retried(server: FakeLLMServer) -> None:
    server.responder = lambda req: Reply(status=400, text="bad request", error_type="invalid_request_error")
    with pytest.raises(LLMRequestError, match="HTTP 400") as info:
        ask(client_for(server, "anthropic"))
    assert info.value.status == 400 and len(server.requests) == 1


# ---- cache and concurrency --------------------------------------------------------------------------------------


def test_response_cache_answers_repeated_requests(server: FakeLLMServer, tmp_path: Path) -> None:
    server.responder = lambda req: Reply(text=f"answer {len(server.requests)}")
    first = ask(client_for(server, "openai", cache_dir=tmp_path))
    client = client_for(server, "openai", cache_dir=tmp_path)
    again = ask(client)
    assert again.text == first.text and again.cached and len(server.requests) == 1
    assert client.accounting.stage("stage").cache_hits == 1
    assert client.accounting.stage("stage").requests == 0 and client.accounting.stage("stage").cost_usd == 0
    ask(client_for(server, "openai", cache_dir=tmp_path), max_tokens=100)  # different params: a new request
    ask(client_for(server, "anthropic", cache_dir=tmp_path))  # different provider/model: a new request
    assert len(server.requests) == 3


def test_concurrency_limit(server: FakeLLMServer) -> None:
    lock, state = threading.Lock(), {"now": 0, "max": 0}

    def slow(req: Recorded) -> Reply:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.2)
        with lock:
            state["now"] -= 1
        return Reply(text="ok")

    server.responder = slow
    client = client_for(server, "openai", concurrency=2)

    async def go():
        try:
            await asyncio.gather(*(client.complete("s", "sys", [("user", str(i))]) for i in range(6)))
        finally:
            await client.close()

    asyncio.run(go())
    assert len(server.requests) == 6 and state["max"] == 2
