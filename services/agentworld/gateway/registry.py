"""Backends: which envd serves what, placement of new sessions, and routing a session by the node in its id.

No session map: a session id names the backend that holds it (agentworld.placement), so every gateway replica
routes every session the same way, and a restarted gateway has lost nothing. Pure bookkeeping (no I/O) so the rules
can be read and tested on their own. The gateway's event loop is the only writer, so no locks.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import grpc

from agentworld import placement

GONE_NODES_KEPT = 10_000  # backends removed lately: calls on their sessions say why they were lost


class RouteError(Exception):
    """A session id that routes nowhere; `.code` is the status to answer with, `.lost` says no retry can help."""

    def __init__(self, message: str, code: grpc.StatusCode, lost: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.lost = lost


class NoBackendError(Exception):
    """No live backend can take a session of the requested environment; `.code` is the status to answer with."""

    def __init__(self, message: str, code: grpc.StatusCode) -> None:
        super().__init__(message)
        self.code = code


@dataclass(eq=False)
class Backend:
    """One envd process (or pod, or container) the gateway forwards to."""

    address: str
    name: str
    node_id: str = ""  # what the backend writes into its session ids (it says so in GetStats)
    conn: Any = None  # gateway.conn.BackendConn; opaque here
    envs: list[Any] = field(default_factory=list)  # agentworld.v1.EnvInfo messages
    env_ids: frozenset[str] = frozenset()
    pending: int = 0  # CreateSession calls in flight
    reported_active: int = 0
    max_sessions: int = 0
    stats: Any = None  # last agentworld.v1.GetStatsResponse
    reported_draining: bool = False
    forced_draining: bool = False
    alive: bool = True
    failures: int = 0
    last_ok: float = field(default_factory=time.monotonic)

    @property
    def draining(self) -> bool:
        return self.reported_draining or self.forced_draining

    @property
    def load(self) -> int:
        """Sessions the backend holds (its last report, kept current by our own creates and closes) plus those
        being created. The backend's own figure covers sessions from other gateway replicas and direct-mode
        clients, so every replica places by the same numbers."""
        return self.reported_active + self.pending

    @property
    def full(self) -> bool:
        return self.max_sessions > 0 and self.load >= self.max_sessions


class Registry:
    """Live backends, by address and by node id, and the backends removed lately (why their sessions were lost)."""

    def __init__(self) -> None:
        self.backends: dict[str, Backend] = {}
        self.nodes: dict[str, Backend] = {}
        self.gone: OrderedDict[str, str] = OrderedDict()  # node id -> why its backend was removed
        self._rr = 0

    # -- backends -------------------------------------------------------------------------------------------
    def add(self, backend: Backend) -> None:
        """Route the backend's sessions to it. Two live backends may not claim one node id (each would get the
        other's sessions): the second is refused."""
        other = self.nodes.get(backend.node_id)
        if other is not None and other.address != backend.address:
            raise ValueError(f"backend {backend.name} at {backend.address} says its node id is {backend.node_id!r}, "
                             f"which backend {other.name} at {other.address} already uses; give each envd its own "
                             "--node-id")
        old = self.backends.get(backend.address)
        if old is not None and old is not backend:
            self.remove(old.address, "replaced by a new backend at the same address")
        self.backends[backend.address] = backend
        self.nodes[backend.node_id] = backend
        self.gone.pop(backend.node_id, None)

    def remove(self, address: str, reason: str) -> Backend | None:
        """Forget a backend; calls on its sessions get UNAVAILABLE saying why."""
        backend = self.backends.pop(address, None)
        if backend is None:
            return None
        backend.alive = False
        if self.nodes.get(backend.node_id) is backend:
            del self.nodes[backend.node_id]
        self.gone[backend.node_id] = f"backend {backend.name} ({backend.address}) is gone: {reason}"
        while len(self.gone) > GONE_NODES_KEPT:
            self.gone.popitem(last=False)
        return backend

    def live(self) -> list[Backend]:
        return [b for b in self.backends.values() if b.alive]

    # -- placement ------------------------------------------------------------------------------------------
    def candidates(self, env_id: str) -> list[Backend]:
        """Backends that may take a new session of env_id, least loaded first (ties rotate), by the backends' own
        load reports (so every gateway replica places alike)."""
        if not self.live():
            raise NoBackendError(f"no live backend to create a {env_id!r} session on; the gateway is waiting for its "
                                 "backends (its health check says NOT_SERVING until one is up)",
                                 grpc.StatusCode.UNAVAILABLE)
        serving = [b for b in self.live() if env_id in b.env_ids]
        if not serving:
            known = sorted({e for b in self.live() for e in b.env_ids})
            raise NoBackendError(
                f"unknown environment {env_id!r}; backends serve: {', '.join(known) or 'nothing (no live backends)'}",
                grpc.StatusCode.NOT_FOUND,
            )
        open_ = [b for b in serving if not b.draining]
        if not open_:
            states = ", ".join(f"{b.name}: draining" for b in serving)
            raise NoBackendError(f"no backend can take a new {env_id!r} session ({states})",
                                 grpc.StatusCode.UNAVAILABLE)
        self._rr += 1
        n = len(open_)
        order = {id(b): (i - self._rr) % n for i, b in enumerate(open_)}
        # Backends that look full go last, not away: the figures lag closes made elsewhere (other replicas, the
        # router), so a "full" backend may have room; it answers RESOURCE_EXHAUSTED itself if it has none.
        return sorted(open_, key=lambda b: (b.full, b.load / b.max_sessions if b.max_sessions else b.load,
                                            order[id(b)]))

    # -- routing --------------------------------------------------------------------------------------------
    def route(self, session_id: str) -> Backend:
        """The live backend holding `session_id`, read from the node its id names."""
        node = placement.node_of(session_id)
        backend = self.nodes.get(node) if node else None
        if backend is not None and backend.alive:
            return backend
        if not session_id:
            raise RouteError("session_id is required", grpc.StatusCode.INVALID_ARGUMENT)
        if node is None:
            raise RouteError(f"unknown session {session_id[:200]!r}: {placement.ID_FORMAT_HINT}",
                             grpc.StatusCode.NOT_FOUND)
        if node in self.gone:
            raise RouteError(f"session {session_id} was lost: {self.gone[node]}", grpc.StatusCode.UNAVAILABLE,
                             lost=True)
        live = ", ".join(sorted(self.nodes)) or "none"
        raise RouteError(f"session {session_id[:200]} lives on backend {node[:128]!r}, which is not among the live "
                         f"backends ({live}); it may still be starting, or gone", grpc.StatusCode.UNAVAILABLE)

    def created(self, backend: Backend, n: int = 1) -> None:
        """Keep the backend's last reported load current until its next health check."""
        backend.reported_active += n

    def closed(self, backend: Backend) -> None:
        backend.reported_active = max(0, backend.reported_active - 1)

    def envs(self) -> list[Any]:
        """The union of the live backends' environments (first seen wins for an env id)."""
        seen: dict[str, Any] = {}
        for backend in self.live():
            for env in backend.envs:
                seen.setdefault(env.env_id, env)
        return [seen[k] for k in sorted(seen)]
