"""A worker: the process that runs an environment's tool calls, one at a time, forked from its environment zygote.

It inherits the app (imported once in the zygote, shared copy-on-write) and every sandbox layer, and adds its own:
no process creation, signals to itself only, rlimits on memory, file size and descriptors. envd sends it one call
at a time on its socket:

    {"op": "call", "db", "method", "path_template", "path_params", "query", "has_body", "commit_by", "forget"} + body
    -> {"op": "result", "status", "committed", "wrote", "cancelled", "late", "retire", "ms"} + response body

The call is one transaction on the session's database file (see connection.py). It commits only if the app
answered 2xx and the clock (CLOCK_MONOTONIC, shared with envd) is still before `commit_by`; otherwise it rolls
back. SIGUSR1 is envd's cooperative cancel: it raises `CallCancelled` inside the running call, which rolls back.
When the app leaves anything behind (threads, pending tasks) or the process may be unsound (MemoryError,
SystemExit, a cancel that did not unwind), the worker answers `retire` and exits; envd forks a fresh one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from agentworld.runtime import wire
from agentworld.runtime.envcode.app_loader import using_connection
from agentworld.runtime.envcode.asgi import asgi_request
from agentworld.runtime.envcode.connection import SessionConnection, open_session_db

MAX_OPEN_SESSIONS = 512  # connections a worker keeps open (least recently used closed first), ~120 KB each
CANCEL_UNWIND_S = 0.05  # after a cancel, how long the interrupted coroutine may take to unwind


class CallCancelled(BaseException):  # BaseException: an app's `except Exception` must not swallow it
    """Raised inside the running call by envd's SIGUSR1 (its deadline passed)."""


@dataclass
class Worker:
    sock: Any
    app: Any
    foreign_keys: bool
    max_response_bytes: int
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    conns: collections.OrderedDict[str, SessionConnection] = field(default_factory=collections.OrderedDict)
    in_call: bool = False
    cancel_requested: bool = False  # set by the cancel even where its exception is swallowed (SQLite callbacks)
    max_open: int = MAX_OPEN_SESSIONS

    def __post_init__(self) -> None:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft != resource.RLIM_INFINITY:  # each connection holds a descriptor (two while it writes)
            self.max_open = max(1, min(MAX_OPEN_SESSIONS, soft // 2 - 16))

    def on_cancel(self, _signum: int, _frame: object) -> None:
        if self.in_call:
            self.cancel_requested = True
            raise CallCancelled()

    def connection(self, path: str) -> SessionConnection:
        conn = self.conns.pop(path, None)
        if conn is None:
            conn = open_session_db(path, foreign_keys=self.foreign_keys)
            while len(self.conns) >= self.max_open:
                self.conns.popitem(last=False)[1].really_close()
        self.conns[path] = conn
        return conn

    def forget(self, paths: list[str]) -> None:
        for path in paths:
            conn = self.conns.pop(path, None)
            if conn is not None:
                conn.really_close()

    def serve(self) -> None:
        signal.signal(signal.SIGUSR1, self.on_cancel)
        while True:
            frame = wire.recv(self.sock)
            if frame is None:
                return
            header, body = frame
            self.forget(header.get("forget", ()))
            reply, content = self.call(header, body)
            wire.send(self.sock, reply, content)
            if reply["retire"]:
                return

    def call(self, req: dict, body: bytes) -> tuple[dict, bytes]:
        started = time.perf_counter()
        reply = {"op": "result", "status": 500, "committed": False, "wrote": False, "cancelled": False,
                 "late": False, "retire": False}
        try:
            conn = self.connection(req["db"])
            conn.begin_call()
        except Exception as exc:  # noqa: BLE001 - not the app's doing: envd reports it as unavailable
            self.conns.pop(req["db"], None)
            return {"op": "failed", "error": f"the session's database could not be opened: {exc}",
                    "retire": False}, b""
        changes = conn.total_changes
        task: asyncio.Task | None = None
        self.cancel_requested = False
        clean = True  # False when the app's code was interrupted or raised: its cursors may still be open
        try:
            self.in_call = True
            with using_connection(conn):
                task = self.loop.create_task(asgi_request(
                    self.app, req["method"], req["path_template"], req["path_params"], req["query"].encode(),
                    body if req["has_body"] else None))
                status, content = self.loop.run_until_complete(task)
            self.in_call = False
        except CallCancelled:
            self.in_call = False
            reply["retire"] = not self._unwind(task)
            status, content, clean = 500, b"", False
        except BaseException as exc:  # the environment's own code failed: the agent sees it as an error result
            self.in_call = False
            status, content, clean = 500, f"{type(exc).__name__}: {exc}".encode(errors="replace"), False
            reply["retire"] = isinstance(exc, MemoryError | SystemExit | KeyboardInterrupt)
        if self.cancel_requested:  # however the app's code ended after the cancel, the call is cancelled
            reply["cancelled"], status, content, clean = True, 500, b"cancelled: past its deadline", False
        if len(content) > self.max_response_bytes:
            status = 500
            content = (f"the tool's response is {len(content)} bytes; the limit is {self.max_response_bytes} "
                       "bytes").encode()
        reply["status"] = status
        reply["wrote"] = conn.total_changes != changes
        try:
            if not clean:  # statements the interrupted code left open would hold locks: close them first
                self.conns.pop(req["db"], None)
                conn.really_close()  # which rolls the transaction back
            elif 200 <= status < 300 and time.monotonic() < req["commit_by"]:
                conn.commit_call()
                reply["committed"] = True
            else:
                reply["late"] = 200 <= status < 300 and not reply["cancelled"]
                conn.rollback_call()
        except BaseException:  # the transaction cannot be ended cleanly: die; envd rolls the file back
            traceback.print_exc()  # to envd's log when the sandbox keeps stderr (debugging)
            os._exit(70)
        reply["retire"] = reply["retire"] or self._left_behind()
        reply["ms"] = (time.perf_counter() - started) * 1000
        return reply, content

    def _unwind(self, task: asyncio.Task | None) -> bool:
        """Let the interrupted coroutine unwind; True when it did (the worker can go on)."""
        if task is None or task.done():
            return True
        task.cancel()
        try:
            self.loop.run_until_complete(asyncio.wait([task], timeout=CANCEL_UNWIND_S))
        except BaseException:  # noqa: BLE001 - whatever it raised, this worker retires
            return False
        return task.done()

    def _left_behind(self) -> bool:
        """Threads or tasks the app started and left running would act during later calls (other sessions')."""
        pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for t in pending:
            t.cancel()
        return bool(pending) or threading.active_count() > 1


def run(sock: Any, app: Any, foreign_keys: bool, max_response_bytes: int) -> None:
    """The worker's whole life (called in the freshly forked child); never returns."""
    status = 0
    try:
        Worker(sock, app, foreign_keys, max_response_bytes).serve()
    except BaseException as exc:  # noqa: BLE001 - tell envd why, then go; envd replaces us
        status = 71
        with contextlib.suppress(BaseException):
            wire.send(sock, {"op": "failed", "error": f"its worker failed: {type(exc).__name__}: {exc}",
                             "retire": True})
    finally:
        os._exit(status)
