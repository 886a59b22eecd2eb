"""The blocking client: `EnvClient` and its `Session`s over one gRPC channel (plus one per backend in direct mode)."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any, TypeVar

import grpc

from agentworld.v1 import env_pb2_grpc

from . import _ops as ops
from ._channel import (
    CHANNEL_OPTIONS,
    DEFAULT_TIMEOUT_S,
    RETRY_BACKOFF_S,
    Credentials,
    call_metadata,
    channel_target,
    credentials,
    keepalive_interval,
    new_lease_id,
    should_retry,
    translate,
)
from .errors import ClientClosedError, EnvClientError, NotFoundError, UnavailableError
from .types import EnvInfo, SessionInfo, Snapshot, Stats, ToolResult, Verdict

R = TypeVar("R")

# Closing a session that is already gone (expired, closed elsewhere) is not an error worth raising.
_GONE_CODES = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)


class EnvClient:
    """A connection to envd or a gateway. Thread-safe; use one per process and share it."""

    def __init__(
        self,
        address: str,
        timeout: float = DEFAULT_TIMEOUT_S,
        *,
        direct: bool = False,
        retry_backoff: tuple[float, ...] = RETRY_BACKOFF_S,
        lease: bool = True,
        token: str | Credentials | None = None,
    ) -> None:
        """`timeout`: default RPC deadline in seconds. `direct`: talk to the backend a gateway names for a session.
        `lease`: create sessions under this client's lease, renewed in the background while the client lives.
        `address`: HOST:PORT, a gRPC target, or IP:PORT,IP:PORT,... (gateway replicas, used round-robin).
        `token`: the bearer token servers with a token file require (a value or a TokenFile; default
        $AGENTWORLD_TOKEN, else the first token of $AGENTWORLD_TOKEN_FILE)."""
        self.address = address
        self.timeout = timeout
        self.direct = direct
        self.retry_backoff = retry_backoff
        self.lease_id = new_lease_id() if lease else None
        self._credentials = credentials(token)
        self._lock = threading.Lock()
        self._closed = False
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, env_pb2_grpc.EnvServiceStub] = {}
        self._keepalive: threading.Thread | None = None
        self._stop = threading.Event()
        self._stub(address)

    # -- plumbing ---------------------------------------------------------------------------------------------
    def _stub(self, address: str | None = None) -> env_pb2_grpc.EnvServiceStub:
        address = address or self.address
        with self._lock:
            if self._closed:
                raise ClientClosedError(f"client for {self.address} is closed")
            stub = self._stubs.get(address)
            if stub is None:
                target, extra = channel_target(address)
                channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS + extra)
                self._channels[address] = channel
                stub = self._stubs[address] = env_pb2_grpc.EnvServiceStub(channel)
            return stub

    def _run(self, call: ops.Call[R], address: str | None = None) -> R:
        stub = self._stub(address)
        deadline = max(self.timeout, call.min_deadline_s or 0.0)
        attempt = 0
        while True:
            try:
                return call.convert(getattr(stub, call.method)(
                    call.request, timeout=deadline, metadata=call_metadata(self._credentials)))
            except grpc.RpcError as exc:
                wait = should_retry(exc, call.retryable, attempt, self.retry_backoff)
                if wait is None:
                    raise translate(exc, call.method) from None
                attempt += 1
                time.sleep(wait)

    def _session(self, info: SessionInfo) -> Session:
        return Session(self, info, info.backend_address if self.direct else None)

    def _start_keepalive(self) -> None:
        """Renew the lease on every server this client has sessions on, until the client closes."""
        with self._lock:
            if self.lease_id is None or self._keepalive is not None or self._closed:
                return
            self._keepalive = threading.Thread(target=self._renew_forever, name="agentworld-lease", daemon=True)
            self._keepalive.start()

    def _renew_forever(self) -> None:
        interval = keepalive_interval(None)
        while not self._stop.is_set():
            with self._lock:
                addresses = list(self._stubs)
            for address in addresses:
                try:
                    interval = keepalive_interval(self._run(ops.keep_alive(self.lease_id or ""), address))
                except (EnvClientError, ValueError):  # unreachable now, or the channel closed under us: next round
                    continue
            self._stop.wait(interval)

    # -- API ------------------------------------------------------------------------------------------------------
    def list_envs(self) -> list[EnvInfo]:
        return self._run(ops.list_envs())

    def create_session(self, env_id: str, task_id: str | None = None) -> Session:
        self._start_keepalive()
        return self._session(self._run(ops.create_session(env_id, task_id, self.lease_id)))

    def create_group(self, env_id: str, task_id: str | None, n: int) -> SessionGroup:
        """n sessions with identical starting state (one created, n-1 forked from it): the GRPO group shape."""
        if n < 1:
            raise ValueError(f"a group needs n >= 1, got {n}")
        base = self.create_session(env_id, task_id)
        try:
            return SessionGroup([base, *(base.fork(n - 1) if n > 1 else [])])
        except BaseException:
            base.close()
            raise

    def session(self, session_id: str, env_id: str = "", task_id: str | None = None) -> Session:
        """Attach to an existing session (e.g. one created by another process)."""
        return Session(self, SessionInfo(session_id=session_id, env_id=env_id, task_id=task_id, state_hash=""), None)

    def get_stats(self) -> Stats:
        return self._run(ops.get_stats())

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._closed = True
            channels, self._channels, self._stubs = list(self._channels.values()), {}, {}
        for channel in channels:
            channel.close()

    def __enter__(self) -> EnvClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EnvClient({self.address!r})"


class Session:
    """One isolated copy of an environment's database. Closes itself when used as a context manager."""

    def __init__(self, client: EnvClient, info: SessionInfo, backend_address: str | None) -> None:
        self.client = client
        self.info = info
        self.session_id = info.session_id
        self.env_id = info.env_id
        self.task_id = info.task_id
        self.initial_state_hash = info.state_hash
        self._address = backend_address
        self._tools: list[dict[str, Any]] | None = None
        self.closed = False

    def _run(self, call: ops.Call[R]) -> R:
        return self.client._run(call, self._address)

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The session's tools as dicts {name, description, input_schema}; fetched once, then cached."""
        if self._tools is None:
            self._tools = self._run(ops.list_tools(self.session_id))
        return self._tools

    def list_tools(self) -> list[dict[str, Any]]:
        self._tools = None
        return self.tools

    def call_tool(
        self, name: str, arguments: dict[str, Any] | str | None = None, timeout_s: float | None = None,
        call_id: str | None = None,
    ) -> ToolResult:
        """Run one tool. Resent with its call id after UNAVAILABLE (a gateway restart), so it runs once; give
        `call_id` yourself to retry across processes."""
        return self._run(ops.call_tool(self.session_id, name, arguments, timeout_s, call_id))

    def reset(self) -> str:
        return self._run(ops.reset(self.session_id))

    def snapshot(self, export: bool = False, ttl_s: float | None = None) -> Snapshot:
        """Keep this state on the server: for as long as this session or a fork of it lives, or `ttl_s` seconds."""
        return self._run(ops.snapshot(self.session_id, export, ttl_s))

    def restore(self, snapshot: Snapshot | str | bytes) -> str:
        """Back to a snapshot (a Snapshot, its id, or exported bytes); returns the state hash."""
        try:
            return self._run(ops.restore(self.session_id, snapshot))
        except NotFoundError:
            if not ops.can_fall_back_to_data(snapshot):
                raise
            return self._run(ops.restore(self.session_id, snapshot, by_data=True))

    def fork(self, n: int) -> list[Session]:
        """n new sessions starting at this session's current state (on the same server)."""
        infos = ops.on_backend(self._run(ops.fork(self.session_id, n)), self._address)
        return [Session(self.client, info, self._address) for info in infos]

    def verify(self, task_id: str | None = None, final_answer: str | None = None) -> Verdict:
        return self._run(ops.verify(self.session_id, task_id, final_answer))

    def state_hash(self) -> str:
        return self._run(ops.state_hash(self.session_id))

    def close(self) -> None:
        """Release the session on the server. Idempotent; a session the server already dropped is fine."""
        if self.closed:
            return
        self.closed = True
        try:
            self._run(ops.close_session(self.session_id))
        except EnvClientError as exc:
            if exc.code not in _GONE_CODES:
                raise

    def __enter__(self) -> Session:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            self.close()
        except (UnavailableError, ClientClosedError):
            if exc_type is None:  # never mask the error that ended the block
                raise

    def __repr__(self) -> str:
        return f"Session({self.session_id!r}, env={self.env_id!r}, task={self.task_id!r})"


class SessionGroup(list[Session]):
    """Sessions that start from one state (see EnvClient.create_group); closes them all on exit."""

    def close(self) -> None:
        errors: list[BaseException] = []
        for session in self:
            try:
                session.close()
            except EnvClientError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> SessionGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
