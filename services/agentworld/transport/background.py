"""A gRPC server on a daemon thread with its own event loop (tests, benchmarks, the demo, in-process use).

Both envd and the gateway use it: `serve(on_ready, stop)` is their asyncio serve coroutine, bound to its
arguments; `on_ready(port)` reports the bound port and `stop` ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

ServeFn = Callable[[Callable[[int], None], asyncio.Event], Awaitable[None]]


@dataclass
class BackgroundServer:
    port: int
    host: str
    _loop: asyncio.AbstractEventLoop
    _stop: asyncio.Event
    _thread: threading.Thread

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` (or await the coroutine it returns) on the server's loop; for tests and admin actions."""

        async def run() -> Any:
            result = fn()
            return await result if asyncio.iscoroutine(result) else result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_thread(serve: ServeFn, host: str, name: str, timeout_s: float) -> tuple[int, asyncio.AbstractEventLoop,
                                                                                   asyncio.Event, threading.Thread]:
    """Run `serve` on a new daemon thread; returns (port, loop, stop event, thread) once it is accepting calls."""
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def main() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        stop = asyncio.Event()
        holder.update(loop=loop, stop=stop)

        def on_ready(bound: int) -> None:
            holder["port"] = bound
            ready.set()

        try:
            loop.run_until_complete(serve(on_ready, stop))
        except BaseException as exc:  # surface start-up errors (bind, backends) to the caller
            holder["error"] = exc
            ready.set()
            if "port" in holder:
                log.exception("%s stopped with an error", name)
        finally:
            loop.close()

    thread = threading.Thread(target=main, name=name, daemon=True)
    thread.start()
    ready.wait(timeout=timeout_s)
    if "error" in holder:
        raise holder["error"]
    if "port" not in holder:
        raise TimeoutError(f"{name} did not start within {timeout_s:.0f}s")
    return holder["port"], holder["loop"], holder["stop"], thread
