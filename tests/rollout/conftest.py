"""Fixtures for rollout tests: the mini_library bundle loaded, and scripted OpenAI/Anthropic servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rollout.scripted_llm import LocalServer, Script, anthropic_app, openai_app


@pytest.fixture(scope="session")
def mini_bundle(mini_library_bundle_dir: Path):
    from agentworld.bundle import load_bundle

    return load_bundle(mini_library_bundle_dir)


@pytest.fixture()
def openai_server() -> Iterator[tuple[LocalServer, Script]]:
    script = Script()
    server = LocalServer(openai_app(script))
    yield server, script
    server.stop()


@pytest.fixture()
def anthropic_server() -> Iterator[tuple[LocalServer, Script]]:
    script = Script()
    server = LocalServer(anthropic_app(script))
    yield server, script
    server.stop()


def solution_turns(bundle, task_id: str) -> list[dict]:
    """A task's reference solution as scripted model turns, ending with its expected answer."""
    task = bundle.task(task_id)
    turns = [{"tool": c.tool, "arguments": c.arguments} for c in task.solution]
    return [*turns, {"text": task.expected_answer or "Done."}]
