"""Our own retry policy (the SDKs' retries are disabled so ours are the ones measured):
exponential backoff with jitter on 429, 5xx, 408/409 and timeouts/connection errors, honouring Retry-After."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anthropic
import openai

from agentworld.llm.errors import LLMRequestError

T = TypeVar("T")
RETRY_STATUSES = {408, 409, 429}


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 6
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    max_retry_after_s: float = 300.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """attempt 0, 1, 2...: base*2^n capped, times a jitter factor in [0.5, 1.0]."""
        return min(self.max_delay_s, self.base_delay_s * 2**attempt) * (0.5 + rng.random() / 2)


def _status_and_headers(exc: BaseException) -> tuple[int | None, Any]:
    if isinstance(exc, (anthropic.APIStatusError, openai.APIStatusError)):
        return exc.status_code, exc.response.headers
    return None, None


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, (anthropic.APITimeoutError, openai.APITimeoutError,
                        anthropic.APIConnectionError, openai.APIConnectionError, asyncio.TimeoutError)):
        return True
    status, _ = _status_and_headers(exc)
    return status is not None and (status in RETRY_STATUSES or status >= 500)


def retry_after_s(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (retry-after-ms, retry-after in seconds or as an HTTP date)."""
    _, headers = _status_and_headers(exc)
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def describe(exc: BaseException) -> str:
    status, _ = _status_and_headers(exc)
    if status is not None:
        return f"HTTP {status}: {getattr(exc, 'message', exc)}"
    return f"{type(exc).__name__}: {exc}"


async def call_with_retries(call: Callable[[], Awaitable[T]], policy: RetryPolicy, *,
                            on_retry: Callable[[BaseException, float], None] | None = None,
                            rng: random.Random | None = None) -> T:
    rng = rng or random.Random()
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as exc:  # noqa: BLE001 - classified below
            status, _ = _status_and_headers(exc)
            if not is_retryable(exc):
                raise LLMRequestError(describe(exc), status=status, attempts=attempt + 1) from exc
            if attempt >= policy.max_retries:
                raise LLMRequestError(f"gave up after {attempt + 1} attempts: {describe(exc)}", status=status,
                                      attempts=attempt + 1) from exc
            wait = retry_after_s(exc)
            delay = min(wait, policy.max_retry_after_s) if wait is not None else policy.backoff(attempt, rng)
            if on_retry is not None:
                on_retry(exc, delay)
            await asyncio.sleep(delay)
            attempt += 1
