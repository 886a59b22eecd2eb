"""EnvRuntime: the one core every transport (gRPC, MCP, in-process validation) calls.

It holds the truth of every session (registry, images, leases, budget) and never runs environment code: tool calls
go to worker processes in the sandbox (envcode/), each one transaction on the session's database file, committed by
the worker only while the call's deadline allows. So a call that times out, crashes or is killed leaves nothing
behind, and no environment's code can reach envd's memory, other environments' sessions or the reward table.

The methods prefixed `a` are coroutines for asyncio edges; the unprefixed twins block (for scripts and
validation). The runtime binds to the event loop of its first async call (a transport's), or starts a private loop
thread for blocking use; calls from other loops hop onto it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

from agentworld.bundle import Bundle
from agentworld.limits import CALL_IDS_KEPT, MAX_CALL_ID_CHARS, MAX_LEASE_ID_CHARS
from agentworld.runtime import database
from agentworld.runtime.arguments import parse_arguments
from agentworld.runtime.envcode.host import Sandbox, SandboxConfig, WorkerLimits
from agentworld.runtime.environment import EnvSpec, load_envs
from agentworld.runtime.errors import (
    Aborted,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    clip,
)
from agentworld.runtime.scheduler import WorkerGone, WorkerPool
from agentworld.runtime.sessions import CallRecord, Registry, Session
from agentworld.runtime.store import Image, free_bytes
from agentworld.runtime.tools import ToolSpec
from agentworld.runtime.types import (
    EnvInfo,
    RuntimeConfig,
    RuntimeStats,
    SessionInfo,
    SnapshotInfo,
    ToolResult,
    Verdict,
)
from agentworld.runtime.verification import FairQueue

log = logging.getLogger("agentworld.envd")
T = TypeVar("T")

COMMIT_MARGIN_S = 0.005  # a worker commits only this long before the deadline, so envd never has to guess
LARGE_BYTES = 1 << 20  # copies and hashes of databases larger than this run off the event loop
MAX_CALL_TIMEOUT_S = 3600.0
MAX_FORK = 10_000


def _on_home_loop(method: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., Coroutine[Any, Any, T]]:
    """Run a coroutine method on the runtime's event loop, whichever loop awaits it, and always to its end.

    A caller that goes away (a cancelled RPC: the client or its gateway gone) does not stop an operation halfway:
    a tool call still commits or rolls back before its session and worker are free again, and its outcome is
    recorded under its call id for the retry."""

    @functools.wraps(method)
    async def wrapper(self: EnvRuntime, *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._bind(loop)
        if loop is self._loop:
            work: asyncio.Future[T] = loop.create_task(method(self, *args, **kwargs))
        else:
            work = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(method(self, *args, **kwargs), self._loop))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            self._detached.add(work)  # runs on; its outcome stays with the runtime
            work.add_done_callback(_forget_detached(self._detached))
            raise

    return wrapper


def _forget_detached(detached: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    def done(work: asyncio.Future[Any]) -> None:
        detached.discard(work)
        if not work.cancelled() and work.exception() is not None:
            log.debug("a call whose caller went away ended with %r", work.exception())

    return done


class EnvRuntime:
    def __init__(self, bundles: Iterable[Bundle], config: RuntimeConfig | None = None, verifier_pool: Any = None,
                 sandbox: Sandbox | None = None) -> None:
        """Load every bundle into the sandbox now (a broken one raises BundleLoadError). `verifier_pool` and
        `sandbox` may be shared with runtimes used one after another (validation does); else each is started here
        and closed with the runtime (the verifier pool on first Verify)."""
        self.config = config or RuntimeConfig()
        self._owns_sandbox = sandbox is None
        state_root = Path(self.config.state_dir) if self.config.state_dir else None
        self.sandbox = sandbox or Sandbox(SandboxConfig(isolate=self.config.isolate), state_root)
        self.store = self.sandbox.store
        try:
            self._envs: dict[str, EnvSpec] = load_envs(
                list(bundles), self.sandbox, self.store, foreign_keys=self.config.foreign_keys,
                concurrency=self.config.workers)
        except BaseException:
            if self._owns_sandbox:
                self.sandbox.close()
            raise
        budget = self.config.memory_budget_bytes or free_bytes(self.store.root) // 2
        self.reg = Registry(self.store, self.config.max_sessions, budget, self.config.lease_ttl_s,
                            self.config.node_id)
        limits = WorkerLimits(memory_bytes=self.config.worker_memory_mb << 20,
                              file_bytes=self.config.max_database_bytes)
        self.pool = WorkerPool(self.sandbox, limits, slots=self.config.workers,
                               max_workers=self.config.max_workers or 8 * self.config.workers,
                               long_call_s=self.config.long_call_s, cancel_grace_s=self.config.cancel_grace_s)
        self.verifications = FairQueue(self.config.verifier_workers, self.config.verifier_queue)
        self._verifiers = verifier_pool
        self._owns_verifiers = verifier_pool is None
        self._verifiers_lock = threading.Lock()
        self._counters = {"tool_calls": 0, "tool_errors": 0, "sessions_created": 0, "sessions_expired": 0}
        self.draining = False
        self._closed = False
        self._detached: set[asyncio.Future[Any]] = set()  # operations whose callers went away
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task] = set()
        self._bind_lock = threading.Lock()

    # ---- the event loop ------------------------------------------------------------------------------
    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Adopt `loop` (called on it): sandbox messages, the reaper and warm workers live there from now on."""
        if self._closed:
            raise FailedPrecondition("the server is shutting down")
        self._loop = loop
        self.sandbox.attach(loop)
        self._spawn(self._reap_forever())
        if len(self._envs) == 1:
            (env,) = self._envs.values()
            self._spawn(self._prewarm(env))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _prewarm(self, env: EnvSpec) -> None:
        try:
            await self.pool.prewarm(env.key, self.config.workers)
        except Exception as exc:  # noqa: BLE001 - the first call will start a worker and report any problem
            log.warning("could not start workers for %s: %s", env.env_id, exc)

    def _blocking(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine from blocking code: on the runtime's loop (a private one if it has none yet)."""
        with self._bind_lock:
            if self._loop is None:
                self._start_private_loop()
        assert self._loop is not None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            coro.close()
            raise RuntimeError("EnvRuntime's blocking methods cannot run on its own event loop; await the a* twins")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _start_private_loop(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._loop_thread = threading.Thread(target=run, name="envd-runtime", daemon=True)
        self._loop_thread.start()
        ready.wait()
        asyncio.run_coroutine_threadsafe(self._bind_async(loop), loop).result()

    async def _bind_async(self, loop: asyncio.AbstractEventLoop) -> None:
        self._bind(loop)

    @_on_home_loop
    async def astart(self) -> None:
        """Adopt the running loop now (a transport's), so workers are warm before the first call."""

    # ---- environments --------------------------------------------------------------------------------
    def envs(self) -> list[EnvInfo]:
        return [env.info for env in self._envs.values()]

    def env(self, env_id: str) -> EnvSpec:
        env = self._envs.get(env_id)
        if env is None:
            known = ", ".join(sorted(self._envs)) or "none"
            raise NotFound(f"unknown environment {clip(env_id)}; this server hosts: {known}")
        return env

    # ---- sessions ------------------------------------------------------------------------------------
    @_on_home_loop
    async def acreate_session(self, env_id: str, task_id: str | None = None, lease_id: str | None = None
                              ) -> SessionInfo:
        self._check_open()
        env = self.env(env_id)
        if task_id and env.bundle.task(task_id) is None:
            raise NotFound(f"environment {env_id!r} has no task {clip(task_id)}; tasks: {_task_ids(env)}")
        lease = self.reg.lease(_check_lease_id(lease_id)) if lease_id else None
        (session,) = self.reg.add(env, env.template, env.template, task_id or None, None, lease)
        self._counters["sessions_created"] += 1
        return _info(session, env.template.state_hash())

    def list_tools(self, session_id: str) -> list[ToolSpec]:
        session = self.reg.sessions.get(session_id)
        if session is None:
            session = self.reg.get(session_id)  # raises the precise error
        return list(session.env.tools.values())

    @_on_home_loop
    async def aclose_session(self, session_id: str) -> None:
        self._close_session(self.reg.get(session_id), "closed")

    def _close_session(self, session: Session, why: str) -> None:
        if self.reg.remove(session, why) and not session.lock.locked():
            self._drop_file(session)  # with a call in flight, that call's ending drops it

    @_on_home_loop
    async def akeep_alive(self, lease_id: str) -> tuple[float, int]:
        """Renew a client's lease; returns (its TTL in seconds, its live sessions here)."""
        lease = self.reg.lease(_check_lease_id(lease_id))
        return self.config.lease_ttl_s, len(lease.sessions)

    async def _reap_forever(self) -> None:
        ttls = [t for t in (self.config.idle_ttl_s, self.config.lease_ttl_s) if t > 0]
        interval = max(0.05, min([t / 4 for t in ttls] + [5.0]))
        while True:
            await asyncio.sleep(interval)
            self.reap(time.monotonic())

    def reap(self, now: float) -> None:
        """Close sessions of lapsed leases and idle lease-less sessions; end expired snapshots."""
        for lease in self.reg.lapsed(now):
            for session_id in list(lease.sessions):
                session = self.reg.sessions.get(session_id)
                if session is not None:
                    self._close_session(session, f"closed: its client's lease lapsed (no KeepAlive for "
                                                 f"{self.config.lease_ttl_s:g} s)")
                    self._counters["sessions_expired"] += 1
        if self.config.idle_ttl_s > 0:
            cutoff = now - self.config.idle_ttl_s
            for session in [s for s in self.reg.sessions.values()
                            if s.lease is None and s.last_used < cutoff and not s.lock.locked()]:
                self._close_session(session, f"closed after {self.config.idle_ttl_s:g} s idle")
                self._counters["sessions_expired"] += 1
        self.reg.expire_snapshots(now)

    # ---- tools ---------------------------------------------------------------------------------------
    @_on_home_loop
    async def acall_tool(self, session_id: str, name: str, arguments: dict[str, Any] | str | None = None,
                         timeout_s: float | None = None, call_id: str | None = None) -> ToolResult:
        """Run one tool call. With a `call_id`, the session remembers its outcome (its last CALL_IDS_KEPT ids): the
        same id again returns that outcome, or waits for it while the first attempt runs, instead of running twice.
        Outcomes that leave nothing behind and are safe to repeat (it never ran, it was rolled back at its
        deadline, no worker could take it) are not remembered, so a retry runs the call."""
        if not call_id:
            return await self._call_tool(session_id, name, arguments, timeout_s)
        if len(call_id) > MAX_CALL_ID_CHARS or not call_id.isprintable():
            raise InvalidArgument(f"call_id must be at most {MAX_CALL_ID_CHARS} printable characters")
        session = self.reg.get(session_id)
        asked = (name, arguments if isinstance(arguments, str) or arguments is None else
                 json.dumps(arguments, sort_keys=True, separators=(",", ":")))
        record = session.calls.get(call_id)
        if record is not None:
            if record.fingerprint != asked:
                raise InvalidArgument(f"call_id {clip(call_id)} was already used on this session for another call "
                                      f"({clip(record.fingerprint[0])}); give every call its own id")
            session.calls.move_to_end(call_id)
            return await asyncio.shield(record.outcome)
        record = CallRecord(asked, asyncio.get_running_loop().create_future())
        session.calls[call_id] = record
        while len(session.calls) > CALL_IDS_KEPT:
            session.calls.popitem(last=False)
        try:
            result = await self._call_tool(session_id, name, arguments, timeout_s)
        except BaseException as exc:
            if not isinstance(exc, Aborted):  # nothing kept: a retry may run it afresh
                session.calls.pop(call_id, None)
            if isinstance(exc, asyncio.CancelledError):
                record.outcome.cancel()
            else:
                record.outcome.set_exception(exc)
                record.outcome.exception()  # retrieved: waiters, if any, re-raise it
            raise
        record.outcome.set_result(result)
        return result

    async def _call_tool(self, session_id: str, name: str, arguments: dict[str, Any] | str | None,
                         timeout_s: float | None) -> ToolResult:
        session = self.reg.get(session_id)
        tool = session.env.tools.get(name)
        if tool is None:
            raise NotFound(f"environment {session.env.env_id!r} has no tool {clip(name)}; ListTools shows the "
                           f"{len(session.env.tools)} tools")
        request = tool.build_request(parse_arguments(arguments, self.config.max_arguments_bytes))
        timeout = min(timeout_s or self.config.call_timeout_s, MAX_CALL_TIMEOUT_S)
        deadline = time.monotonic() + timeout
        async with self._locked(session, deadline, "tool call"):
            await self._own_file(session)
            assert session.file is not None
            before = database.file_version(session.file)
            header = {"op": "call", "db": session.file, "method": request.method,
                      "path_template": request.path_template, "path_params": request.path_params,
                      "query": request.query_string.decode(), "has_body": request.body is not None,
                      "commit_by": deadline - COMMIT_MARGIN_S}
            try:
                reply, content = await self.pool.call(session.env.key, header, request.body or b"", deadline)
            except WorkerGone as gone:
                raise self._after_lost_call(session, before, gone, timeout) from None
            finally:
                self._counters["tool_calls"] += 1
            self.reg.set_bytes(session, os.stat(session.file).st_size)
        if reply["op"] == "failed":
            self._counters["tool_errors"] += 1
            raise Unavailable(f"envd could not run the call: {reply['error']}; retry it")
        if reply["cancelled"] or reply["late"] or (not reply["committed"] and time.monotonic() >= deadline):
            self._counters["tool_errors"] += 1
            raise DeadlineExceeded(f"tool call ran past its {timeout:g} s deadline and was stopped; nothing it wrote "
                                   "was kept")
        text = content.decode("utf-8", errors="replace")
        if reply["status"] == 422:
            _raise_if_validation_error(name, text)
        kept = reply["committed"] and 200 <= reply["status"] < 300
        self._counters["tool_errors"] += not kept
        return ToolResult(not kept, text, reply["status"], reply["ms"])

    def _after_lost_call(self, session: Session, before: tuple, gone: WorkerGone, timeout: float) -> Exception:
        """The worker died mid-call: roll back what it left, and say truthfully what the session now holds."""
        assert session.file is not None
        database.recover(session.file)
        kept = database.file_version(session.file) != before
        self._counters["tool_errors"] += 1
        if gone.killed and not kept:
            return DeadlineExceeded(f"tool call ran past its {timeout:g} s deadline and its worker was killed; "
                                    "nothing it wrote was kept")
        if kept:
            return Aborted(f"{gone.reason}, after the call had committed its writes; the session keeps them")
        return Aborted(f"{gone.reason}; nothing the call wrote was kept and the session is at its last committed "
                       "state")

    # ---- state ---------------------------------------------------------------------------------------
    @_on_home_loop
    async def areset(self, session_id: str) -> str:
        session = self.reg.get(session_id)
        async with self._locked(session, self._op_deadline(), "Reset"):
            template = session.env.template
            self._drop_file(session)
            self.reg.move(session, template)
            old, session.episode = session.episode, self.reg.hold(template)
            self.reg.drop(old)
            self.reg.set_bytes(session, template.size)
            return template.state_hash()

    @_on_home_loop
    async def asnapshot(self, session_id: str, export: bool = False, ttl_s: float | None = None) -> SnapshotInfo:
        session = self.reg.get(session_id)
        if ttl_s is not None and not 0 <= ttl_s <= self.config.snapshot_ttl_max_s:
            raise InvalidArgument(f"ttl_s must be between 0 and {self.config.snapshot_ttl_max_s:g} seconds")
        async with self._locked(session, self._op_deadline(), "Snapshot"):
            image = await self._freeze(session, "Snapshot")
            record = self.reg.add_snapshot(session, image, ttl_s)
            digest = await self._image_hash(image)
            data = await self._off_loop(image.size, _read_bytes, image.path) if export else None
        return SnapshotInfo(record.snapshot_id, digest, data)

    @_on_home_loop
    async def arestore(self, session_id: str, snapshot_id: str | None = None, data: bytes | None = None) -> str:
        session = self.reg.get(session_id)
        if snapshot_id:
            record = self.reg.snapshot(snapshot_id)
            if record.env_key != session.env.key:
                raise InvalidArgument(f"snapshot {clip(snapshot_id)} is of another environment than the session "
                                      f"({session.env.env_id!r})")
            image = self.reg.hold(record.image)
        elif data:
            image = self.reg.hold(await self._image_from_data(session.env, data))
        else:
            raise InvalidArgument("Restore needs a snapshot_id or exported snapshot data")
        try:
            async with self._locked(session, self._op_deadline(), "Restore"):
                self._drop_file(session)
                self.reg.move(session, image)
                self.reg.set_bytes(session, image.size)
                return await self._image_hash(image)
        finally:
            self.reg.drop(image)

    @_on_home_loop
    async def afork(self, session_id: str, n: int) -> list[SessionInfo]:
        session = self.reg.get(session_id)
        if not 1 <= n <= MAX_FORK:
            raise InvalidArgument(f"Fork needs 1 <= n <= {MAX_FORK}, got {n}")
        async with self._locked(session, self._op_deadline(), "Fork"):
            image = await self._freeze(session, f"Fork of {n}")
            children = self.reg.add(session.env, image, image, session.task_id, session.tree, session.lease, n)
            digest = await self._image_hash(image)
        self._counters["sessions_created"] += n
        return [_info(child, digest) for child in children]

    @_on_home_loop
    async def astate_hash(self, session_id: str) -> str:
        session = self.reg.get(session_id)
        async with self._locked(session, self._op_deadline(), "GetStateHash"):
            return await self._hash(session)

    # ---- verification ----------------------------------------------------------------------------------
    @_on_home_loop
    async def averify(self, session_id: str, task_id: str | None = None, final_answer: str | None = None) -> Verdict:
        session = self.reg.get(session_id)
        task_id = task_id or session.task_id
        if not task_id:
            raise InvalidArgument("Verify needs a task_id (the session was created without one)")
        task = session.env.bundle.task(task_id)
        if task is None:
            raise NotFound(f"environment {session.env.env_id!r} has no task {clip(task_id)}; tasks: "
                           f"{_task_ids(session.env)}")
        async with self._locked(session, self._op_deadline(), "Verify"):
            initial = self.reg.hold(session.episode)
            final = self.reg.hold(await self._freeze(session, "Verify"))
        owner = session.lease.lease_id if session.lease else f"tree-{session.tree.tree_id}"
        source = session.env.bundle.verifiers_py
        try:
            pool = await self._verifier_pool()
            started = time.perf_counter()
            result = await self.verifications.run(owner, lambda: pool.run(
                source=source, function=task.verifier, initial_db=initial.path, final_db=final.path,
                final_answer=final_answer))
        finally:
            self.reg.drop(initial)
            self.reg.drop(final)
        reward = self.config.rewards.get(result.outcome, 0.0)
        return Verdict(result.outcome, reward, result.details, (time.perf_counter() - started) * 1000)

    async def _verifier_pool(self) -> Any:
        if self._verifiers is None:
            self._verifiers = await asyncio.to_thread(self._start_verifiers)
        return self._verifiers

    def _start_verifiers(self) -> Any:
        with self._verifiers_lock:
            if self._verifiers is None:
                from agentworld.runtime.sandbox import SandboxLimits, VerifierPool

                limits = SandboxLimits(cpu_seconds=self.config.verifier_cpu_s,
                                       memory_mb=self.config.verifier_memory_mb,
                                       wall_timeout_s=self.config.verifier_timeout_s)
                self._verifiers = VerifierPool(workers=self.config.verifier_workers, limits=limits)
            return self._verifiers

    # ---- helpers ---------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed or self.draining:
            raise FailedPrecondition("the server is shutting down; create sessions on another server")

    def _op_deadline(self) -> float:
        """State operations wait for the session's call in flight, at most that call's own deadline and a kill."""
        return time.monotonic() + self.config.call_timeout_s + self.config.cancel_grace_s + 5.0

    @contextlib.asynccontextmanager
    async def _locked(self, session: Session, deadline: float, what: str) -> AsyncIterator[None]:
        """One operation at a time per session, waiting at most until `deadline` (then it never ran)."""
        if not session.lock.locked():
            await session.lock.acquire()  # free: no wait, no timer
        else:
            try:
                await asyncio.wait_for(session.lock.acquire(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise DeadlineExceeded(f"session {session.session_id!r} was busy with another call until this "
                                       f"{what}'s deadline; it never ran") from None
        try:
            if session.closed:
                raise FailedPrecondition(f"session {session.session_id!r} was closed; create a new session")
            yield
        finally:
            session.lock.release()
            if session.closed:
                self._drop_file(session)

    async def _off_loop(self, size: int, fn: Callable[..., T], *args: Any) -> T:
        """Small work inline; copies and hashes of big databases in a thread, so the edges keep answering."""
        if size <= LARGE_BYTES:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    async def _own_file(self, session: Session) -> None:
        """Copy-on-write: the session's own database file, made from its image at the first call that needs it."""
        if session.file is None:
            session.file = await self._off_loop(session.image.size, self.store.own_copy, session.image,
                                                session.env.key)
            session.clean_version = database.file_version(session.file)

    def _drop_file(self, session: Session) -> None:
        if session.file is not None:
            self.pool.forget(session.file)
            self.store.remove_file(session.file)
            session.file = None
            session.clean_version = None
            session.hash_cache = None

    def _dirty(self, session: Session) -> tuple | None:
        """The own copy's version when it differs from the session's image, else None."""
        if session.file is None:
            return None
        version = database.file_version(session.file)
        return None if version == session.clean_version else version

    async def _freeze(self, session: Session, what: str) -> Image:
        """An immutable image of the session's current state (its own image if nothing changed since)."""
        version = self._dirty(session)
        if version is None:
            return session.image
        assert session.file is not None
        image = self.reg.admit(await self._off_loop(version[1], self.store.image_from_file, session.file), what)
        if session.hash_cache and session.hash_cache[0] == version:
            image.hash = session.hash_cache[1]
        self.reg.move(session, image)  # its own copy now equals its image again
        session.clean_version = database.file_version(session.file)
        return image

    async def _image_hash(self, image: Image) -> str:
        if image.hash is None:
            image.hash = await self._off_loop(image.size, database.hash_file, image.path)
        return image.hash

    async def _hash(self, session: Session) -> str:
        version = self._dirty(session)
        if version is None:
            return await self._image_hash(session.image)
        if session.hash_cache is None or session.hash_cache[0] != version:
            assert session.file is not None
            session.hash_cache = (version, await self._off_loop(version[1], database.hash_file, session.file))
        return session.hash_cache[1]

    async def _image_from_data(self, env: EnvSpec, data: bytes) -> Image:
        if len(data) > self.config.max_database_bytes:
            raise InvalidArgument(f"snapshot data is {len(data)} bytes; the largest database envd takes is "
                                  f"{self.config.max_database_bytes} bytes")
        if not data.startswith(database.SQLITE_MAGIC):
            raise InvalidArgument("snapshot data is not a SQLite database image (export one with "
                                  "Snapshot(export=true))")
        image = await self._off_loop(len(data), self.store.image_from_bytes, data)
        try:
            signature, digest = await self._off_loop(len(data), _signature_and_hash, image.path)
        except sqlite3.Error as exc:
            self.store.release(image)
            raise InvalidArgument(f"snapshot data is a damaged SQLite image: {exc}") from None
        if signature != env.schema_signature:
            self.store.release(image)
            raise InvalidArgument(f"snapshot data is a database of another schema than environment {env.env_id!r}")
        image.hash = digest
        return self.reg.admit(image, "Restore")

    # ---- blocking twins ----------------------------------------------------------------------------------
    def create_session(self, env_id: str, task_id: str | None = None, lease_id: str | None = None) -> SessionInfo:
        return self._blocking(self.acreate_session(env_id, task_id, lease_id))

    def call_tool(self, session_id: str, name: str, arguments: dict[str, Any] | str | None = None,
                  timeout_s: float | None = None, call_id: str | None = None) -> ToolResult:
        return self._blocking(self.acall_tool(session_id, name, arguments, timeout_s, call_id))

    def reset(self, session_id: str) -> str:
        return self._blocking(self.areset(session_id))

    def snapshot(self, session_id: str, export: bool = False, ttl_s: float | None = None) -> SnapshotInfo:
        return self._blocking(self.asnapshot(session_id, export, ttl_s))

    def restore(self, session_id: str, snapshot_id: str | None = None, data: bytes | None = None) -> str:
        return self._blocking(self.arestore(session_id, snapshot_id, data))

    def fork(self, session_id: str, n: int) -> list[SessionInfo]:
        return self._blocking(self.afork(session_id, n))

    def state_hash(self, session_id: str) -> str:
        return self._blocking(self.astate_hash(session_id))

    def verify(self, session_id: str, task_id: str | None = None, final_answer: str | None = None) -> Verdict:
        return self._blocking(self.averify(session_id, task_id, final_answer))

    def close_session(self, session_id: str) -> None:
        self._blocking(self.aclose_session(session_id))

    def keep_alive(self, lease_id: str) -> tuple[float, int]:
        return self._blocking(self.akeep_alive(lease_id))

    # ---- process -----------------------------------------------------------------------------------------
    def stats(self) -> RuntimeStats:
        return RuntimeStats(
            active_sessions=len(self.reg.sessions),
            max_sessions=self.config.max_sessions,
            tool_calls=self._counters["tool_calls"],
            tool_errors=self._counters["tool_errors"],
            sessions_created=self._counters["sessions_created"],
            sessions_expired=self._counters["sessions_expired"],
            rss_bytes=_rss_bytes(),
            env_ids=list(self._envs),
            draining=self.draining,
            memory_budget_bytes=self.reg.budget.limit,
            memory_used_bytes=self.reg.budget.used,
            snapshots=len(self.reg.snapshots),
            workers=self.pool.count(),
            sandbox_layers=list(self.sandbox.layers["applied"]),
            node_id=self.reg.node_id,
        )

    def close(self) -> None:
        """End every session, worker and sandbox process this runtime started. Safe from any thread, once."""
        if self._closed:
            return
        self._closed = True
        loop = self._loop
        if loop is not None and loop.is_running():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                self._shutdown()
            else:
                done = threading.Event()
                loop.call_soon_threadsafe(lambda: (self._shutdown(), done.set()))
                done.wait(30)
        else:
            self._shutdown()
        if self._loop_thread is not None and loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            self._loop_thread.join(timeout=10)
        self.verifications.close()
        if self._verifiers is not None and self._owns_verifiers:
            self._verifiers.close()
        if self._owns_sandbox:
            self.sandbox.close()
        else:
            for env in self._envs.values():
                self.sandbox.unload(env.key)

    def _shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for session in list(self.reg.sessions.values()):
            self.reg.remove(session, "closed at server shutdown")
        self.pool.close()

    def __enter__(self) -> EnvRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _info(session: Session, state_hash: str) -> SessionInfo:
    return SessionInfo(session.session_id, session.env.env_id, session.task_id, state_hash)


def _task_ids(env: EnvSpec) -> str:
    return ", ".join(t.id for t in env.bundle.tasks) or "none"


def _check_lease_id(lease_id: str | None) -> str:
    if not lease_id or len(lease_id) > MAX_LEASE_ID_CHARS or not lease_id.isprintable():
        raise InvalidArgument(f"lease_id must be 1 to {MAX_LEASE_ID_CHARS} printable characters, got {clip(lease_id)}")
    return lease_id


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _signature_and_hash(path: str) -> tuple[frozenset[str], str]:
    conn = database.read_only(path)
    try:
        return database.schema_signature(conn), database.state_hash(conn)
    finally:
        conn.close()


def _raise_if_validation_error(tool: str, content: str) -> None:
    """FastAPI's request validation (422 with a list of {loc, msg}) means the arguments failed the schema."""
    try:
        detail = json.loads(content).get("detail")
    except (json.JSONDecodeError, AttributeError):
        return
    if not isinstance(detail, list) or not all(isinstance(d, dict) and "loc" in d for d in detail):
        return
    problems = []
    for d in detail:
        names = [str(p) for p in d["loc"] if p not in ("body", "query", "path", "header")]
        field_name = ".".join(names) or "arguments"
        problems.append(f"field '{field_name}': {d.get('msg', 'invalid')}")
    raise InvalidArgument(f"invalid arguments for tool '{tool}': " + "; ".join(problems))


def _rss_bytes() -> int:
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0
