"""Where backends come from. A source is an async context: `run(gateway)` adds backends and keeps them current until
cancelled, then releases what it owns."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from .core import Gateway
from .pool import ProcessPool, Replica

log = logging.getLogger(__name__)

RESPAWN_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # before the 1st, 2nd, ... restart in a row
STABLE_AFTER_S = 60.0  # a replica that lived this long starts the backoff over


class BackendSource(Protocol):
    name: str

    async def run(self, gateway: Gateway, ready: asyncio.Event) -> None:
        """Add backends (set `ready` once the first batch is in), follow changes until cancelled, then clean up."""


class StaticSource:
    """A fixed list of envd addresses (`agentworld gateway --backend HOST:PORT ...`). An address that is not (or no
    longer) a live backend is tried again every `retry_s`, so a restarted envd rejoins by itself."""

    name = "static"

    def __init__(self, addresses: Sequence[str], wait_s: float = 30.0, retry_s: float = 1.0) -> None:
        self.addresses = list(addresses)
        self.wait_s = wait_s
        self.retry_s = retry_s

    async def run(self, gateway: Gateway, ready: asyncio.Event) -> None:
        names = {a: f"static-{i}" for i, a in enumerate(self.addresses)}
        results = await asyncio.gather(*(gateway.add_backend(a, names[a], wait_s=self.wait_s) for a in names),
                                       return_exceptions=True)
        for address, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                log.error("backend %s not added: %s; retrying every %.0fs", address, result, self.retry_s)
        ready.set()
        while True:
            await asyncio.sleep(self.retry_s)
            missing = [a for a in names if a not in gateway.registry.backends]
            if missing:
                await asyncio.gather(*(gateway.add_backend(a, names[a], wait_s=self.retry_s) for a in missing),
                                     return_exceptions=True)


class ProcessSource:
    """A local pool of envd processes. A replica that exits is removed at once (its sessions are lost) and its slot
    restarted after a backoff that doubles while restarts keep failing or dying young (RESPAWN_BACKOFF_S).

    `ready_when="first"` lets the gateway serve as soon as one replica is up (the rest join as they start);
    "all" waits for every replica.
    """

    name = "process"

    def __init__(self, pool: ProcessPool, *, ready_when: str = "all", poll_s: float = 0.2,
                 respawn_backoff_s: Sequence[float] = RESPAWN_BACKOFF_S) -> None:
        if ready_when not in ("all", "first"):
            raise ValueError(f"ready_when must be 'all' or 'first', got {ready_when!r}")
        self.pool = pool
        self.ready_when = ready_when
        self.poll_s = poll_s
        self.respawn_backoff_s = tuple(respawn_backoff_s)
        self.respawns = 0  # replicas restarted so far

    @classmethod
    def for_bundles(
        cls, bundle_dirs: Sequence[Path], replicas: int, serve_args: Sequence[str] = (), ready_when: str = "all",
        token_file: Path | None = None,
    ) -> ProcessSource:
        return cls(ProcessPool(bundle_dirs, replicas, serve_args=serve_args, token_file=token_file),
                   ready_when=ready_when)

    async def _start_one(self, gateway: Gateway, index: int, delay_s: float = 0.0) -> Replica:
        await asyncio.sleep(delay_s)
        replica = await self.pool.spawn(index)
        try:
            await gateway.add_backend(replica.address, f"envd-{index}")
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                replica.process.kill()
            raise
        return replica

    def _backoff(self, failures: int) -> float:
        return self.respawn_backoff_s[min(failures, len(self.respawn_backoff_s)) - 1] if failures else 0.0

    async def run(self, gateway: Gateway, ready: asyncio.Event) -> None:
        starting = {i: asyncio.ensure_future(self._start_one(gateway, i)) for i in range(self.pool.replicas)}
        watched: dict[int, Replica] = {}
        failures: dict[int, int] = {}  # slot -> restarts in a row that failed or died young
        try:
            errors: list[BaseException] = []
            for next_done in asyncio.as_completed(list(starting.values())):
                try:
                    replica = await next_done
                except Exception as exc:  # reported; other replicas may still come up
                    errors.append(exc)
                    if self.ready_when == "all":
                        raise
                    log.error("envd replica failed to start: %s", exc)
                    continue
                watched[replica.index] = replica
                if self.ready_when == "first":
                    ready.set()
            if not watched:
                raise RuntimeError(f"no envd replica started: {errors[0] if errors else 'unknown error'}")
            ready.set()
            for index in range(self.pool.replicas):  # the ones that failed to start are restarted like dead ones
                if index not in watched:
                    failures[index] = 1
                    starting[index] = asyncio.ensure_future(self._start_one(gateway, index, self._backoff(1)))
                else:
                    del starting[index]
            while True:
                for index, replica in list(watched.items()):
                    code = replica.process.returncode
                    if code is None:
                        continue
                    del watched[index]
                    await gateway.remove_backend(replica.address, f"envd process {replica.pid} exited with code {code}")
                    young = time.monotonic() - replica.started_at < STABLE_AFTER_S
                    failures[index] = failures.get(index, 0) + 1 if young else 1
                    delay = self._backoff(failures[index])
                    log.warning("restarting envd-%d in %.1fs", index, delay)
                    starting[index] = asyncio.ensure_future(self._start_one(gateway, index, delay))
                for index, task in list(starting.items()):
                    if not task.done():
                        continue
                    del starting[index]
                    if task.exception() is None:
                        watched[index] = task.result()
                        self.respawns += 1
                        continue
                    failures[index] = failures.get(index, 0) + 1
                    log.error("envd-%d did not restart: %s; trying again", index, task.exception())
                    starting[index] = asyncio.ensure_future(self._start_one(gateway, index,
                                                                            self._backoff(failures[index])))
                await asyncio.sleep(self.poll_s)
        finally:
            for task in starting.values():
                task.cancel()
            await asyncio.gather(*starting.values(), return_exceptions=True)
            await self.pool.stop()


class DockerSource:
    """Backends in hardened containers started by `agentworld.images.backend.DockerBackend` (the images area).

    `start(bundle_dirs, replicas)` builds missing images and returns once every container answers health checks;
    a container that dies later is reported by the backend's monitor and removed here at once; `stop()` removes
    containers and network (also at interpreter exit).
    """

    name = "docker"

    def __init__(self, envs: Sequence[Path], replicas: int, build: bool = True) -> None:
        self.envs = list(envs)
        self.replicas = replicas
        self.build = build
        self.docker: Any = None

    async def run(self, gateway: Gateway, ready: asyncio.Event) -> None:
        from agentworld.bundle import find_bundles
        from agentworld.images.backend import CrashReport, DockerBackend

        bundle_dirs = find_bundles(self.envs)  # DockerBackend takes bundle directories, not their parents
        if not bundle_dirs:
            raise RuntimeError(f"no bundles found in {', '.join(map(str, self.envs))}")

        loop = asyncio.get_running_loop()
        by_container: dict[str, str] = {}

        def crashed(report: CrashReport) -> None:  # the backend's monitor thread
            address = by_container.get(report.container_id)
            if address is not None:
                reason = f"container {report.name} exited with code {report.exit_code}"
                loop.call_soon_threadsafe(asyncio.ensure_future, gateway.remove_backend(address, reason))

        self.docker = DockerBackend(on_crash=crashed, handle_signals=False)
        try:
            started = await asyncio.to_thread(self.docker.start, bundle_dirs, self.replicas, self.build)
            by_container.update({b.container_id: b.address for b in started})
            await asyncio.gather(*(gateway.add_backend(b.address, b.name) for b in started))
            ready.set()
            await asyncio.Event().wait()
        finally:
            await asyncio.to_thread(self.docker.stop)
