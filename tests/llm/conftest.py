"""Fixtures for the LLM layer and pipeline tests: protocol servers on loopback and dummy API keys."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.llm.fake_servers import FakeLLMServer


@pytest.fixture(autouse=True)
def api_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("AGENTWORLD_LLM", raising=False)


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv
