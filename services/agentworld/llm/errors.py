"""Typed errors of the LLM layer; the CLI maps them to one-line messages."""

from __future__ import annotations


class LLMError(Exception):
    """Base class for every error raised by agentworld.llm."""


class LLMConfigError(LLMError):
    """A bad --llm spec, a missing API key, an unreadable price file."""


class LLMRequestError(LLMError):
    """A request failed for good: retries exhausted or a non-retryable status (400, 401, ...)."""

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts


class LLMParseError(LLMError):
    """The model's answer holds no parseable JSON object / code block; the message is fed back to the model."""
