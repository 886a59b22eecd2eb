"""Where session work runs: a thread pool, one event loop per thread, and aborts for runaway calls.

Session work runs on pool threads (never on a transport's event loop) so that a tool that loops
forever can be stopped: on timeout we cancel its asyncio task, interrupt SQLite, and raise
`CallAborted` inside its thread. One abort per call, injected only while the call is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agentworld.runtime.errors import DeadlineExceeded, FailedPrecondition

LOCK_WAIT_S = 5.0  # how long a call waits for its session (busy with another call) before giving up


class CallAborted(BaseException):  # BaseException: an app's `except Exception` must not swallow it
    """Raised inside a worker thread whose call ran past its deadline."""


@dataclass
class CallHandle:
    """What an abort needs to reach one running call."""

    connection: Any = None
    thread_id: int = 0
    loop: asyncio.AbstractEventLoop | None = None
    task: asyncio.Task | None = None
    started: bool = False
    finished: bool = False
    aborted: bool = False
    guard: threading.Lock = field(default_factory=threading.Lock)


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)


class CallExecutor:
    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="envd-call")
        self._local = threading.local()

    def submit(self, lock: threading.Lock, handle: CallHandle, fn: Callable[[CallHandle], Any]) -> Future:
        """Run fn(handle) on a pool thread while holding `lock` (the session's)."""
        return self._pool.submit(self._run, lock, handle, fn)

    def _run(self, lock: threading.Lock, handle: CallHandle, fn: Callable[[CallHandle], Any]) -> Any:
        if not lock.acquire(timeout=LOCK_WAIT_S):
            raise FailedPrecondition("the session is busy with another call (or finishing a timed-out one); retry")
        try:
            try:
                handle.thread_id = threading.get_ident()
                handle.started = True
                result = fn(handle)
            except CallAborted:
                raise DeadlineExceeded("the call ran past its deadline and was stopped; its writes were rolled back") from None
            finally:
                with handle.guard:
                    handle.finished = True
                if handle.aborted:
                    _set_async_exc(handle.thread_id, None)  # drop an abort that has not fired yet
                    stale, self._local.loop = getattr(self._local, "loop", None), None
                    if stale is not None:  # the loop may have been interrupted mid-step: start afresh
                        with contextlib.suppress(BaseException):
                            if handle.task is not None and not handle.task.done():
                                handle.task.cancel()  # let the coroutine unwind before its loop goes
                                stale.run_until_complete(asyncio.wait([handle.task], timeout=1.0))
                        with contextlib.suppress(Exception):
                            stale.close()
        finally:
            lock.release()
        return result

    def run_coroutine(self, coro: Coroutine[Any, Any, Any], handle: CallHandle) -> Any:
        """Run a coroutine to completion on this worker thread's own event loop."""
        loop = getattr(self._local, "loop", None)
        if loop is None:
            loop = self._local.loop = asyncio.new_event_loop()
        task = loop.create_task(coro)
        handle.loop, handle.task = loop, task
        try:
            return loop.run_until_complete(task)
        except asyncio.CancelledError:
            if handle.aborted:
                raise CallAborted() from None
            raise

    @staticmethod
    def abort(handle: CallHandle) -> bool:
        """Stop a running call; returns False if it had already finished (or never started)."""
        with handle.guard:
            if not handle.started or handle.finished or handle.aborted:
                return False
            handle.aborted = True
            if handle.connection is not None:
                handle.connection.interrupt()
            if handle.loop is not None and handle.task is not None:
                handle.loop.call_soon_threadsafe(handle.task.cancel)
            _set_async_exc(handle.thread_id, CallAborted)
            return True

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
