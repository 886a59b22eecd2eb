"""EnvRuntime: many isolated sessions of many environments in one process.

The one core every transport (gRPC, MCP, in-process validation) calls. Each session is an in-memory
SQLite database; tool calls run the environment's FastAPI app in-process against it, one call at a
time per session, atomically. Every public method has an async twin (prefixed `a`) for asyncio edges.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from agentworld.bundle import Bundle
from agentworld.runtime.app_loader import using_connection
from agentworld.runtime.asgi import asgi_request
from agentworld.runtime.calls import CallExecutor, CallHandle
from agentworld.runtime.database import SessionConnection, load_image, open_connection, state_hash
from agentworld.runtime.environment import LoadedEnv, load_env, schema_signature
from agentworld.runtime.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
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

MAX_ENDED_REMEMBERED = 100_000


@dataclass
class Session:
    session_id: str
    env: LoadedEnv
    task_id: str | None
    conn: SessionConnection
    episode_start: bytes  # the image Verify compares against: the state the episode began in
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)
    closed: bool = False
    # The state hash is cached until the database changes (SQLite's total_changes moves).
    cached_hash: str | None = None
    hash_changes: int = -1

    def current_hash(self) -> str:
        if self.cached_hash is None or self.hash_changes != self.conn.total_changes:
            self.cached_hash = state_hash(self.conn)
            self.hash_changes = self.conn.total_changes
        return self.cached_hash

    def set_known_hash(self, value: str) -> None:
        self.cached_hash, self.hash_changes = value, self.conn.total_changes


@dataclass
class _Snapshot:
    env_id: str
    image: bytes
    state_hash: str


@dataclass
class _Job:
    """Work on one session, run on a pool thread while holding the session's lock."""

    session: Session
    fn: Callable[[CallHandle], Any]
    timeout_s: float | None = None
    after: Callable[[Any], Any] | None = None  # slow follow-up off the call threads (the verifier)
    handle: CallHandle = field(default_factory=CallHandle)
    # Bounded work (copying database images) may run right on an asyncio edge's loop when the session is free,
    # skipping the hop to a pool thread; tool calls (the environment's own code) never do.
    inline: bool = True

    def call(self, handle: CallHandle) -> Any:
        """Run fn; called with the session's lock held, so a session closed meanwhile is seen here."""
        if self.session.closed:
            raise FailedPrecondition(f"session {self.session.session_id!r} was closed; create a new session")
        return self.fn(handle)


class EnvRuntime:
    def __init__(self, bundles: Iterable[Bundle], config: RuntimeConfig | None = None, verifier_pool=None) -> None:
        """Load every bundle now (a broken one raises BundleLoadError). `verifier_pool` may be shared; else one is
        started on the first Verify and closed with the runtime."""
        self.config = config or RuntimeConfig()
        self._envs: dict[str, LoadedEnv] = {}
        for bundle in bundles:
            if bundle.env_id in self._envs:
                raise InvalidArgument(f"environment {bundle.env_id!r} given twice")
            self._envs[bundle.env_id] = load_env(bundle, foreign_keys=self.config.foreign_keys)
        self._sessions: dict[str, Session] = {}
        self._snapshots: OrderedDict[str, _Snapshot] = OrderedDict()
        self._ended: OrderedDict[str, str] = OrderedDict()  # recently ended session id -> why, for clear errors
        self._registry_lock = threading.Lock()
        self._executor = CallExecutor(self.config.call_workers)
        # Verifications wait on sandbox processes; they get their own threads so tool calls never queue behind them.
        self._side_executor = ThreadPoolExecutor(max_workers=2 * self.config.verifier_workers + 2,
                                                 thread_name_prefix="envd-verify")
        self._verifiers = verifier_pool
        self._owns_verifiers = verifier_pool is None
        self._verifiers_lock = threading.Lock()
        self._counters = {"tool_calls": 0, "tool_errors": 0, "sessions_created": 0, "sessions_expired": 0}
        self.draining = False
        self._closed = threading.Event()
        if self.config.idle_ttl_s > 0:
            threading.Thread(target=self._reap_idle, name="envd-reaper", daemon=True).start()

    # ---- environments -------------------------------------------------------------------------

    def envs(self) -> list[EnvInfo]:
        return [env.info for env in self._envs.values()]

    def env(self, env_id: str) -> LoadedEnv:
        env = self._envs.get(env_id)
        if env is None:
            known = ", ".join(sorted(self._envs)) or "none"
            raise NotFound(f"unknown environment {env_id!r}; this server hosts: {known}")
        return env

    # ---- sessions -------------------------------------------------------------------------------

    def create_session(self, env_id: str, task_id: str | None = None) -> SessionInfo:
        env = self.env(env_id)
        if task_id and env.bundle.task(task_id) is None:
            raise NotFound(f"environment {env_id!r} has no task {task_id!r}; tasks: {_task_ids(env)}")
        return self._info(self._new_sessions(env, env.template, env.template_hash, task_id or None, 1)[0])

    def _new_sessions(self, env: LoadedEnv, image: bytes, known_hash: str, task_id: str | None, n: int) -> list[Session]:
        with self._registry_lock:
            if self._closed.is_set():
                raise FailedPrecondition("the server is shutting down")
            if len(self._sessions) + n > self.config.max_sessions:
                raise ResourceExhausted(
                    f"session limit of {self.config.max_sessions} reached ({len(self._sessions)} open); "
                    "close sessions you no longer need or start more servers"
                )
            sessions = []
            for _ in range(n):
                conn = open_connection(image, foreign_keys=self.config.foreign_keys)
                session = Session(f"s-{secrets.token_hex(8)}", env, task_id, conn, image)
                session.set_known_hash(known_hash)
                self._sessions[session.session_id] = session
                sessions.append(session)
            self._counters["sessions_created"] += n
        return sessions

    def _session(self, session_id: str) -> Session:
        session = self._sessions.get(session_id)
        if session is None or session.closed:
            ended = self._ended.get(session_id)
            if ended:
                raise FailedPrecondition(f"session {session_id!r} was {ended}; create a new session")
            raise NotFound(f"unknown session {session_id!r}; create one with CreateSession")
        session.last_used = time.monotonic()
        return session

    @staticmethod
    def _info(session: Session) -> SessionInfo:
        return SessionInfo(session.session_id, session.env.env_id, session.task_id, session.cached_hash or "")

    def close_session(self, session_id: str) -> None:
        with self._registry_lock:
            session = self._sessions.pop(session_id, None)
        if session is None:
            self._session(session_id)  # raises the precise error
        self._dispose(session, "closed")

    async def aclose_session(self, session_id: str) -> None:
        await asyncio.get_running_loop().run_in_executor(self._side_executor, self.close_session, session_id)

    def _dispose(self, session: Session, why: str) -> None:
        session.closed = True
        with self._registry_lock:
            self._ended[session.session_id] = why
            while len(self._ended) > MAX_ENDED_REMEMBERED:
                self._ended.popitem(last=False)
        if session.lock.acquire(timeout=1.0):  # a running call keeps its connection until it ends
            try:
                session.conn.really_close()
            finally:
                session.lock.release()

    def _reap_idle(self) -> None:
        interval = max(0.05, min(self.config.idle_ttl_s / 4, 30.0))
        while not self._closed.wait(interval):
            deadline = time.monotonic() - self.config.idle_ttl_s
            with self._registry_lock:
                idle = [s for s in self._sessions.values() if s.last_used < deadline and not s.lock.locked()]
                for session in idle:
                    del self._sessions[session.session_id]
                self._counters["sessions_expired"] += len(idle)
            for session in idle:
                self._dispose(session, f"closed after {self.config.idle_ttl_s:g} s idle")

    # ---- tools ----------------------------------------------------------------------------------

    def list_tools(self, session_id: str) -> list[ToolSpec]:
        return list(self._session(session_id).env.tools.values())

    def _call_tool_job(self, session_id: str, name: str, arguments: dict[str, Any] | str | None,
                       timeout_s: float | None) -> _Job:
        session = self._session(session_id)
        tool = session.env.tools.get(name)
        if tool is None:
            raise NotFound(f"environment {session.env.env_id!r} has no tool {name!r}; ListTools shows the {len(session.env.tools)} tools")
        arguments = self._parse_arguments(arguments)
        request = tool.build_request(arguments)
        env = session.env

        def run(handle: CallHandle) -> ToolResult:
            started = time.perf_counter()
            conn = handle.connection = session.conn
            conn.begin_call()
            keep = False
            try:
                with using_connection(conn):
                    status, body = self._executor.run_coroutine(asgi_request(env.app, request), handle)
                keep = 200 <= status < 300
            except Exception as exc:  # the environment's own code failed: the agent sees it
                status, body = 500, f"{type(exc).__name__}: {exc}".encode()
            finally:
                conn.end_call(keep=keep)
            content = body.decode("utf-8", errors="replace")
            if status == 422:
                _raise_if_validation_error(name, content)
            self._counters["tool_calls"] += 1
            self._counters["tool_errors"] += not keep
            return ToolResult(not keep, content, status, (time.perf_counter() - started) * 1000)

        return _Job(session, run, timeout_s or self.config.call_timeout_s, inline=False)

    def _parse_arguments(self, arguments: dict[str, Any] | str | None) -> dict[str, Any]:
        if arguments is None or arguments == "":
            return {}
        if isinstance(arguments, str):
            if len(arguments) > self.config.max_arguments_bytes:
                raise InvalidArgument(
                    f"arguments are {len(arguments)} bytes; the limit is {self.config.max_arguments_bytes} bytes"
                )
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError as exc:
                raise InvalidArgument(f"arguments are not valid JSON: {exc}") from None
        if not isinstance(arguments, dict):
            raise InvalidArgument(f"arguments must be a JSON object, got {type(arguments).__name__}")
        return arguments

    # ---- state ----------------------------------------------------------------------------------

    def _reset_job(self, session_id: str) -> _Job:
        session = self._session(session_id)

        def run(_: CallHandle) -> str:
            load_image(session.conn, session.env.template)
            session.episode_start = session.env.template
            session.set_known_hash(session.env.template_hash)
            return session.env.template_hash

        return _Job(session, run)

    def _snapshot_job(self, session_id: str, export: bool) -> _Job:
        session = self._session(session_id)

        def run(_: CallHandle) -> SnapshotInfo:
            image, digest = session.conn.serialize(), session.current_hash()
            snapshot_id = f"snap-{secrets.token_hex(8)}"
            with self._registry_lock:
                self._snapshots[snapshot_id] = _Snapshot(session.env.env_id, image, digest)
                while len(self._snapshots) > self.config.max_snapshots:
                    self._snapshots.popitem(last=False)
            return SnapshotInfo(snapshot_id, digest, image if export else None)

        return _Job(session, run)

    def _restore_job(self, session_id: str, snapshot_id: str | None, data: bytes | None) -> _Job:
        session = self._session(session_id)
        if snapshot_id:
            snap = self._snapshots.get(snapshot_id)
            if snap is None:
                raise NotFound(f"unknown snapshot {snapshot_id!r} (snapshots live in the server that made them)")
            if snap.env_id != session.env.env_id:
                raise InvalidArgument(
                    f"snapshot {snapshot_id!r} is of environment {snap.env_id!r}, the session is {session.env.env_id!r}"
                )
            image, digest = snap.image, snap.state_hash
        elif data:
            image, digest = data, self._check_image(session.env, data)
        else:
            raise InvalidArgument("Restore needs a snapshot_id or exported snapshot data")

        def run(_: CallHandle) -> str:
            load_image(session.conn, image)
            session.set_known_hash(digest)
            return digest

        return _Job(session, run)

    @staticmethod
    def _check_image(env: LoadedEnv, data: bytes) -> str:
        if not data.startswith(b"SQLite format 3\x00"):
            raise InvalidArgument("snapshot data is not a SQLite database image (export one with Snapshot(export=true))")
        try:
            scratch = open_connection(data)
            try:
                if schema_signature(scratch) != env.schema_signature:
                    raise InvalidArgument(f"snapshot data is a database of another schema than environment {env.env_id!r}")
                return state_hash(scratch)
            finally:
                scratch.really_close()
        except sqlite3.Error as exc:
            raise InvalidArgument(f"snapshot data is a damaged SQLite image: {exc}") from None

    def _fork_job(self, session_id: str, n: int) -> _Job:
        session = self._session(session_id)
        if n < 1:
            raise InvalidArgument("Fork needs n >= 1")

        def run(_: CallHandle) -> list[SessionInfo]:
            image, digest = session.conn.serialize(), session.current_hash()
            children = self._new_sessions(session.env, image, digest, session.task_id, n)
            return [self._info(child) for child in children]

        return _Job(session, run)

    def _state_hash_job(self, session_id: str) -> _Job:
        session = self._session(session_id)
        return _Job(session, lambda _: session.current_hash())

    def _verify_job(self, session_id: str, task_id: str | None, final_answer: str | None) -> _Job:
        session = self._session(session_id)
        task_id = task_id or session.task_id
        if not task_id:
            raise InvalidArgument("Verify needs a task_id (the session was created without one)")
        task = session.env.bundle.task(task_id)
        if task is None:
            raise NotFound(f"environment {session.env.env_id!r} has no task {task_id!r}; tasks: {_task_ids(session.env)}")
        source = session.env.bundle.verifiers_py

        def grab(_: CallHandle) -> tuple[bytes, bytes]:
            return session.episode_start, session.conn.serialize()

        def judge(images: tuple[bytes, bytes]) -> Verdict:
            started = time.perf_counter()
            result = self._verifier_pool().run(
                source=source, function=task.verifier, initial_db=images[0], final_db=images[1], final_answer=final_answer
            )
            reward = self.config.rewards.get(result.outcome, 0.0)
            return Verdict(result.outcome, reward, result.details, (time.perf_counter() - started) * 1000)

        return _Job(session, grab, after=judge)

    def _verifier_pool(self):
        with self._verifiers_lock:
            if self._verifiers is None:
                from agentworld.runtime.sandbox import SandboxLimits, VerifierPool

                limits = SandboxLimits(
                    cpu_seconds=self.config.verifier_cpu_s,
                    memory_mb=self.config.verifier_memory_mb,
                    wall_timeout_s=self.config.verifier_timeout_s,
                )
                self._verifiers = VerifierPool(workers=self.config.verifier_workers, limits=limits)
            return self._verifiers

    # ---- running jobs ---------------------------------------------------------------------------

    def _submit(self, job: _Job) -> Future:
        return self._executor.submit(job.session.lock, job.handle, job.call)

    def _timed_out(self, job: _Job) -> DeadlineExceeded:
        self._executor.abort(job.handle)
        return DeadlineExceeded(
            f"tool call ran past its {job.timeout_s:g} s deadline and was stopped; its writes were rolled back"
        )

    def _run(self, job: _Job) -> Any:
        future = self._submit(job)
        try:
            result = future.result(timeout=job.timeout_s)
        except FutureTimeout:
            raise self._timed_out(job) from None
        return job.after(result) if job.after else result

    async def _arun(self, job: _Job) -> Any:
        if job.inline and job.session.lock.acquire(blocking=False):
            try:
                result = job.call(job.handle)
            finally:
                job.session.lock.release()
        else:
            future = asyncio.wrap_future(self._submit(job))
            try:
                result = await asyncio.wait_for(future, timeout=job.timeout_s)
            except TimeoutError:
                raise self._timed_out(job) from None
        if job.after is None:
            return result
        return await asyncio.get_running_loop().run_in_executor(self._side_executor, job.after, result)

    def call_tool(self, session_id: str, name: str, arguments: dict[str, Any] | str | None = None,
                  timeout_s: float | None = None) -> ToolResult:
        return self._run(self._call_tool_job(session_id, name, arguments, timeout_s))

    async def acall_tool(self, session_id: str, name: str, arguments: dict[str, Any] | str | None = None,
                         timeout_s: float | None = None) -> ToolResult:
        return await self._arun(self._call_tool_job(session_id, name, arguments, timeout_s))

    def reset(self, session_id: str) -> str:
        return self._run(self._reset_job(session_id))

    async def areset(self, session_id: str) -> str:
        return await self._arun(self._reset_job(session_id))

    def snapshot(self, session_id: str, export: bool = False) -> SnapshotInfo:
        return self._run(self._snapshot_job(session_id, export))

    async def asnapshot(self, session_id: str, export: bool = False) -> SnapshotInfo:
        return await self._arun(self._snapshot_job(session_id, export))

    def restore(self, session_id: str, snapshot_id: str | None = None, data: bytes | None = None) -> str:
        return self._run(self._restore_job(session_id, snapshot_id, data))

    async def arestore(self, session_id: str, snapshot_id: str | None = None, data: bytes | None = None) -> str:
        return await self._arun(self._restore_job(session_id, snapshot_id, data))

    def fork(self, session_id: str, n: int) -> list[SessionInfo]:
        return self._run(self._fork_job(session_id, n))

    async def afork(self, session_id: str, n: int) -> list[SessionInfo]:
        return await self._arun(self._fork_job(session_id, n))

    def state_hash(self, session_id: str) -> str:
        return self._run(self._state_hash_job(session_id))

    async def astate_hash(self, session_id: str) -> str:
        return await self._arun(self._state_hash_job(session_id))

    def verify(self, session_id: str, task_id: str | None = None, final_answer: str | None = None) -> Verdict:
        return self._run(self._verify_job(session_id, task_id, final_answer))

    async def averify(self, session_id: str, task_id: str | None = None, final_answer: str | None = None) -> Verdict:
        return await self._arun(self._verify_job(session_id, task_id, final_answer))

    # ---- process --------------------------------------------------------------------------------

    def stats(self) -> RuntimeStats:
        return RuntimeStats(
            active_sessions=len(self._sessions),
            max_sessions=self.config.max_sessions,
            tool_calls=self._counters["tool_calls"],
            tool_errors=self._counters["tool_errors"],
            sessions_created=self._counters["sessions_created"],
            sessions_expired=self._counters["sessions_expired"],
            rss_bytes=_rss_bytes(),
            env_ids=list(self._envs),
            draining=self.draining,
        )

    def close(self) -> None:
        self._closed.set()
        with self._registry_lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            self._dispose(session, "closed at server shutdown")
        self._executor.shutdown()
        self._side_executor.shutdown(wait=False, cancel_futures=True)
        if self._verifiers is not None and self._owns_verifiers:
            self._verifiers.close()

    def __enter__(self) -> EnvRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _task_ids(env: LoadedEnv) -> str:
    return ", ".join(t.id for t in env.bundle.tasks) or "none"


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
