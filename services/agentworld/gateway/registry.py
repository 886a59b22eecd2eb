"""Backends and sessions: which envd hosts what, placement of new sessions, and sessions lost with a dead backend.

Pure bookkeeping (no I/O) so the placement rules can be read and tested on their own. The gateway's event loop is
the only writer, so no locks.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import grpc

LOST_SESSIONS_KEPT = 200_000  # remembered so calls on them say "lost" instead of "unknown"


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
    conn: Any = None  # gateway.forward.BackendConn; opaque here
    envs: list[Any] = field(default_factory=list)  # agentworld.v1.EnvInfo messages
    env_ids: frozenset[str] = frozenset()
    sessions: set[str] = field(default_factory=set)
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
        being created. Counting the backend's figure rather than our map covers sessions from other gateways and
        direct-mode clients, whose closes we never see."""
        return self.reported_active + self.pending

    @property
    def full(self) -> bool:
        return self.max_sessions > 0 and self.load >= self.max_sessions


class Registry:
    """Live backends keyed by address, the session -> backend map, and recently lost sessions."""

    def __init__(self) -> None:
        self.backends: dict[str, Backend] = {}
        self.sessions: dict[str, Backend] = {}
        self.lost: OrderedDict[str, str] = OrderedDict()  # session id -> why it was lost
        self._rr = 0

    # -- backends -------------------------------------------------------------------------------------------
    def add(self, backend: Backend) -> None:
        old = self.backends.get(backend.address)
        if old is not None and old is not backend:
            self.remove(old.address, "replaced by a new backend at the same address")
        self.backends[backend.address] = backend

    def remove(self, address: str, reason: str) -> Backend | None:
        """Forget a backend; its sessions become lost (calls on them get UNAVAILABLE naming them)."""
        backend = self.backends.pop(address, None)
        if backend is None:
            return None
        backend.alive = False
        why = f"backend {backend.name} ({backend.address}) is gone: {reason}"
        for session_id in backend.sessions:
            self.sessions.pop(session_id, None)
            self.lost[session_id] = why
        while len(self.lost) > LOST_SESSIONS_KEPT:
            self.lost.popitem(last=False)
        backend.sessions.clear()
        return backend

    def live(self) -> list[Backend]:
        return [b for b in self.backends.values() if b.alive]

    # -- placement ------------------------------------------------------------------------------------------
    def candidates(self, env_id: str) -> list[Backend]:
        """Backends that may take a new session of env_id, least loaded first (ties rotate)."""
        serving = [b for b in self.live() if env_id in b.env_ids]
        if not serving:
            known = sorted({e for b in self.live() for e in b.env_ids})
            raise NoBackendError(
                f"unknown environment {env_id!r}; backends serve: {', '.join(known) or 'nothing (no live backends)'}",
                grpc.StatusCode.NOT_FOUND,
            )
        open_ = [b for b in serving if not b.draining and not b.full]
        if not open_:
            states = ", ".join(f"{b.name}: {'draining' if b.draining else 'full'}" for b in serving)
            all_full = all(b.full and not b.draining for b in serving)
            code = grpc.StatusCode.RESOURCE_EXHAUSTED if all_full else grpc.StatusCode.UNAVAILABLE
            raise NoBackendError(f"no backend can take a new {env_id!r} session ({states})", code)
        self._rr += 1
        n = len(open_)
        order = {id(b): (i - self._rr) % n for i, b in enumerate(open_)}
        return sorted(open_, key=lambda b: (b.load / b.max_sessions if b.max_sessions else b.load, order[id(b)]))

    # -- sessions -------------------------------------------------------------------------------------------
    def bind(self, session_id: str, backend: Backend) -> None:
        self.sessions[session_id] = backend
        backend.sessions.add(session_id)
        backend.reported_active += 1  # keep the last reported figure current until the next health check
        self.lost.pop(session_id, None)

    def unbind(self, session_id: str) -> Backend | None:
        backend = self.sessions.pop(session_id, None)
        if backend is not None:
            backend.sessions.discard(session_id)
            backend.reported_active = max(0, backend.reported_active - 1)
        return backend

    def envs(self) -> list[Any]:
        """The union of the live backends' environments (first seen wins for an env id)."""
        seen: dict[str, Any] = {}
        for backend in self.live():
            for env in backend.envs:
                seen.setdefault(env.env_id, env)
        return [seen[k] for k in sorted(seen)]
