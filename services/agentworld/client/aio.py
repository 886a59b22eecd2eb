"""The asyncio client: `AsyncEnvClient` and `AsyncSession`, the same surface as the sync client with `await`."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio

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

_GONE_CODES = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)


class AsyncEnvClient:
    """A connection to envd or a gateway for asyncio code. Channels open on first use, inside the running loop."""

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
        """See EnvClient: `lease` creates sessions under this client's lease, renewed while the client lives."""
        self.address = address
        self.timeout = timeout
        self.direct = direct
        self.retry_backoff = retry_backoff
        self.lease_id = new_lease_id() if lease else None
        self._credentials = credentials(token)
        self._closed = False
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, env_pb2_grpc.EnvServiceStub] = {}
        self._keepalive: asyncio.Task[None] | None = None

    def _stub(self, address: str | None = None) -> env_pb2_grpc.EnvServiceStub:
        address = address or self.address
        if self._closed:
            raise ClientClosedError(f"client for {self.address} is closed")
        stub = self._stubs.get(address)
        if stub is None:
            target, extra = channel_target(address)
            channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS + extra)
            self._channels[address] = channel
            stub = self._stubs[address] = env_pb2_grpc.EnvServiceStub(channel)
        return stub

    async def _run(self, call: ops.Call[R], address: str | None = None) -> R:
        stub = self._stub(address)
        deadline = max(self.timeout, call.min_deadline_s or 0.0)
        attempt = 0
        while True:
            try:
                return call.convert(await getattr(stub, call.method)(
                    call.request, timeout=deadline, metadata=call_metadata(self._credentials)))
            except grpc.RpcError as exc:
                wait = should_retry(exc, call.retryable, attempt, self.retry_backoff)
                if wait is None:
                    raise translate(exc, call.method) from None
                attempt += 1
                await asyncio.sleep(wait)

    def _session(self, info: SessionInfo) -> AsyncSession:
        return AsyncSession(self, info, info.backend_address if self.direct else None)

    def _start_keepalive(self) -> None:
        if self.lease_id is not None and self._keepalive is None and not self._closed:
            self._keepalive = asyncio.ensure_future(self._renew_forever())

    async def _renew_forever(self) -> None:
        interval = keepalive_interval(None)
        while not self._closed:
            for address in list(self._stubs):
                try:
                    interval = keepalive_interval(await self._run(ops.keep_alive(self.lease_id or ""), address))
                except (EnvClientError, ValueError):  # unreachable now, or the channel closed under us: next round
                    continue
            await asyncio.sleep(interval)

    async def list_envs(self) -> list[EnvInfo]:
        return await self._run(ops.list_envs())

    async def create_session(self, env_id: str, task_id: str | None = None) -> AsyncSession:
        self._start_keepalive()
        return self._session(await self._run(ops.create_session(env_id, task_id, self.lease_id)))

    async def create_group(self, env_id: str, task_id: str | None, n: int) -> AsyncSessionGroup:
        """n sessions with identical starting state (one created, n-1 forked from it): the GRPO group shape."""
        if n < 1:
            raise ValueError(f"a group needs n >= 1, got {n}")
        base = await self.create_session(env_id, task_id)
        try:
            return AsyncSessionGroup([base, *(await base.fork(n - 1) if n > 1 else [])])
        except BaseException:
            await base.close()
            raise

    def session(self, session_id: str, env_id: str = "", task_id: str | None = None) -> AsyncSession:
        """Attach to an existing session (e.g. one created by another process)."""
        info = SessionInfo(session_id=session_id, env_id=env_id, task_id=task_id, state_hash="")
        return AsyncSession(self, info, None)

    async def get_stats(self) -> Stats:
        return await self._run(ops.get_stats())

    async def close(self) -> None:
        self._closed = True
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._keepalive
        channels, self._channels, self._stubs = list(self._channels.values()), {}, {}
        for channel in channels:
            await channel.close()

    async def __aenter__(self) -> AsyncEnvClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncEnvClient({self.address!r})"


class AsyncSession:
    """One isolated copy of an environment's database; `async with` closes it."""

    def __init__(self, client: AsyncEnvClient, info: SessionInfo, backend_address: str | None) -> None:
        self.client = client
        self.info = info
        self.session_id = info.session_id
        self.env_id = info.env_id
        self.task_id = info.task_id
        self.initial_state_hash = info.state_hash
        self._address = backend_address
        self._tools: list[dict[str, Any]] | None = None
        self.closed = False

    async def _run(self, call: ops.Call[R]) -> R:
        return await self.client._run(call, self._address)

    @property
    async def tools(self) -> list[dict[str, Any]]:
        """`await session.tools`: dicts {name, description, input_schema}; fetched once, then cached."""
        if self._tools is None:
            self._tools = await self._run(ops.list_tools(self.session_id))
        return self._tools

    async def list_tools(self) -> list[dict[str, Any]]:
        self._tools = None
        return await self.tools

    async def call_tool(
        self, name: str, arguments: dict[str, Any] | str | None = None, timeout_s: float | None = None,
        call_id: str | None = None,
    ) -> ToolResult:
        """Run one tool. Resent with its call id after UNAVAILABLE (a gateway restart), so it runs once; give
        `call_id` yourself to retry across processes."""
        return await self._run(ops.call_tool(self.session_id, name, arguments, timeout_s, call_id))

    async def reset(self) -> str:
        return await self._run(ops.reset(self.session_id))

    async def snapshot(self, export: bool = False, ttl_s: float | None = None) -> Snapshot:
        return await self._run(ops.snapshot(self.session_id, export, ttl_s))

    async def restore(self, snapshot: Snapshot | str | bytes) -> str:
        try:
            return await self._run(ops.restore(self.session_id, snapshot))
        except NotFoundError:
            if not ops.can_fall_back_to_data(snapshot):
                raise
            return await self._run(ops.restore(self.session_id, snapshot, by_data=True))

    async def fork(self, n: int) -> list[AsyncSession]:
        infos = ops.on_backend(await self._run(ops.fork(self.session_id, n)), self._address)
        return [AsyncSession(self.client, info, self._address) for info in infos]

    async def verify(self, task_id: str | None = None, final_answer: str | None = None) -> Verdict:
        return await self._run(ops.verify(self.session_id, task_id, final_answer))

    async def state_hash(self) -> str:
        return await self._run(ops.state_hash(self.session_id))

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self._run(ops.close_session(self.session_id))
        except EnvClientError as exc:
            if exc.code not in _GONE_CODES:
                raise

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.close()
        except (UnavailableError, ClientClosedError):
            if exc_type is None:
                raise

    def __repr__(self) -> str:
        return f"AsyncSession({self.session_id!r}, env={self.env_id!r}, task={self.task_id!r})"


class AsyncSessionGroup(list[AsyncSession]):
    """Sessions that start from one state (see AsyncEnvClient.create_group); `async with` closes them all."""

    async def close(self) -> None:
        results = await asyncio.gather(*(s.close() for s in self), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def __aenter__(self) -> AsyncSessionGroup:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
