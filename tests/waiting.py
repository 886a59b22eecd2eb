"""Waiting on a condition (never a fixed sleep): poll until it holds, with a generous deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(pred: Callable[[], Any], what: str, timeout_s: float = 60.0, interval_s: float = 0.05) -> Any:
    """The first truthy value of `pred()`; AssertionError naming `what` if none comes within `timeout_s`."""
    end = time.monotonic() + timeout_s
    last: Any = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what} (last: {last!r})")
        time.sleep(interval_s)


def holds_for(pred: Callable[[], Any], what: str, window_s: float, interval_s: float = 0.05) -> None:
    """Assert `pred()` stays truthy for the whole window: for checking that something does NOT happen later
    (a write after its call's deadline), the only kind of wait that has no event to wait on."""
    end = time.monotonic() + window_s
    while time.monotonic() < end:
        assert pred(), f"{what} stopped holding"
        time.sleep(interval_s)
