"""The gateway's control side: registering backends, health checking them, and declaring them dead."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc

from agentworld.auth import TokenFile

from .conn import BackendConn
from .registry import Backend, Registry

log = logging.getLogger(__name__)


class Gateway:
    """Backends plus the session map; `agentworld.gateway.service` serves EnvService on top of it.

    Backends are added by sources (a static list, the local process pool, Docker, Kubernetes). A backend is removed
    when its source says so, when its health check fails `fail_threshold` times in a row, or at once when a call to
    it fails with UNAVAILABLE and an immediate health check fails too.
    """

    def __init__(
        self,
        *,
        direct: bool = False,
        health_interval_s: float = 1.0,
        health_timeout_s: float = 1.0,
        fail_threshold: int = 2,
        hang_timeout_s: float = 30.0,
        tokens: TokenFile | None = None,
    ) -> None:
        """`tokens`: callers must present one of them, and the gateway presents the first to its backends (one
        Secret for the whole deployment)."""
        self.registry = Registry()
        self.direct = direct
        self.tokens = tokens
        self.draining = False  # set while the gateway shuts down
        self._membership: list[Callable[[int], None]] = []
        self.health_interval_s = health_interval_s
        self.health_timeout_s = health_timeout_s
        self.fail_threshold = fail_threshold
        self.hang_timeout_s = hang_timeout_s
        self._checks: dict[str, asyncio.Future[bool]] = {}
        self._monitor: asyncio.Task[None] | None = None
        self._names = 0

    # -- membership ------------------------------------------------------------------------------------------
    async def add_backend(
        self, address: str, name: str | None = None, *, wait_s: float = 60.0, draining: bool = False
    ) -> Backend:
        """Wait until the backend answers SERVING, learn its environments and limits, then place sessions on it."""
        self._names += 1
        conn = BackendConn(address, self.tokens)
        deadline = time.monotonic() + wait_s
        last: BaseException | None = None
        while True:
            try:
                if await conn.health(timeout=min(2.0, max(0.1, deadline - time.monotonic()))):
                    envs = await conn.envs(timeout=10.0)
                    stats = await conn.stats(timeout=10.0)
                    break
                last = RuntimeError("health check says NOT_SERVING")
            except grpc.RpcError as exc:
                last = exc
            if time.monotonic() >= deadline:
                await conn.close()
                detail = last.details() if isinstance(last, grpc.RpcError) else last  # type: ignore[union-attr]
                raise TimeoutError(f"backend {address} not ready after {wait_s:.0f}s: {detail}")
            await asyncio.sleep(0.1)
        backend = Backend(
            address=address,
            name=name or f"backend-{self._names}",
            node_id=stats.node_id or address,
            conn=conn,
            envs=envs,
            env_ids=frozenset(e.env_id for e in envs),
            forced_draining=draining,
        )
        self._apply_stats(backend, stats)
        try:
            self.registry.add(backend)
        except ValueError:
            await conn.close()
            raise
        log.info("backend %s (node %s) at %s serves %s", backend.name, backend.node_id, address,
                 ", ".join(sorted(backend.env_ids)))
        self._changed()
        return backend

    async def remove_backend(self, address: str, reason: str) -> None:
        backend = self.registry.remove(address, reason)
        if backend is not None:
            log.warning("backend %s (%s) removed: %s; its %d sessions are lost", backend.name, address, reason,
                        backend.reported_active)
            self._changed()
            await backend.conn.close()

    def on_membership(self, callback: Callable[[int], None]) -> Callable[[], None]:
        """Call `callback(live backends)` now and whenever a backend joins or leaves (health status follows it);
        returns the function that stops it."""
        self._membership.append(callback)
        callback(len(self.registry.live()))
        return lambda: self._membership.remove(callback)

    def _changed(self) -> None:
        live = len(self.registry.live())
        for callback in self._membership:
            callback(live)

    def set_draining(self, address: str, draining: bool = True) -> None:
        """A draining backend keeps its sessions but gets no new ones."""
        self.registry.backends[address].forced_draining = draining

    # -- health ----------------------------------------------------------------------------------------------
    @staticmethod
    def _apply_stats(backend: Backend, stats: object) -> None:
        backend.stats = stats
        backend.reported_active = stats.active_sessions  # type: ignore[attr-defined]
        backend.max_sessions = stats.max_sessions  # type: ignore[attr-defined]
        backend.reported_draining = stats.draining  # type: ignore[attr-defined]

    async def _check(self, backend: Backend) -> bool:
        """One health + stats probe. Unreachable `fail_threshold` times in a row: removed. Merely slow (a busy
        process misses the deadline): kept, unless nothing has succeeded for `hang_timeout_s`."""
        try:
            serving = await backend.conn.health(timeout=self.health_timeout_s)
            stats = await backend.conn.stats(timeout=self.health_timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if callable(getattr(exc, "code", None)) else grpc.StatusCode.UNKNOWN
            detail = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
            if code == grpc.StatusCode.UNIMPLEMENTED:  # health answered; stats not (an older envd): alive
                backend.failures = 0
                return True
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                silent = time.monotonic() - backend.last_ok
                if silent > self.hang_timeout_s:
                    await self.remove_backend(backend.address, f"no answer to health checks for {silent:.0f}s")
                return False
            backend.failures += 1
            if backend.failures >= self.fail_threshold:
                await self.remove_backend(backend.address, f"unreachable, {backend.failures} checks failed ({detail})")
            return False
        backend.failures = 0
        backend.last_ok = time.monotonic()
        self._apply_stats(backend, stats)
        if not serving:  # NOT_SERVING: shutting down, treat as draining
            backend.reported_draining = True
        return True

    async def confirm_dead(self, backend: Backend) -> bool:
        """After a failed call: check the backend now (one check shared by concurrent callers); True if removed."""
        if not backend.alive:
            return True
        pending = self._checks.get(backend.address)
        if pending is None:
            pending = asyncio.ensure_future(self._confirm(backend))
            self._checks[backend.address] = pending
            pending.add_done_callback(lambda _f, a=backend.address: self._checks.pop(a, None))
        return await asyncio.shield(pending)

    async def _confirm(self, backend: Backend) -> bool:
        backend.failures = max(backend.failures, self.fail_threshold - 1)  # one more failure is enough
        await self._check(backend)
        return not backend.alive

    async def _monitor_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            backends = self.registry.live()
            if backends:
                await asyncio.gather(*(self._check(b) for b in backends), return_exceptions=True)

    def start_monitor(self) -> None:
        if self._monitor is None:
            self._monitor = asyncio.ensure_future(self._monitor_loop())

    async def stop_monitor(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            try:
                await self._monitor
            except asyncio.CancelledError:
                pass
            self._monitor = None

    async def close(self) -> None:
        await self.stop_monitor()
        for address in list(self.registry.backends):
            backend = self.registry.backends.pop(address)
            await backend.conn.close()
