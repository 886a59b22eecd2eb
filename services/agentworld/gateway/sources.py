"""Where backends come from. A source is an async context: `run(gateway)` adds backends and keeps them current until
cancelled, then releases what it owns."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from .core import Gateway
from .pool import ProcessPool, Replica

log = logging.getLogger(__name__)


class BackendSource(Protocol):
    name: str

    async def run(self, gateway: Gateway, ready: asyncio.Event) -> None:
        """Add backends (set `ready` once the first batch is in), follow changes until cancelled, then clean up."""


class StaticSource:
    """A fixed list of envd addresses (`agentworld gateway --backend HOST:PORT ...`)."""

    name = "static"

    def __init__(self, addresses: Sequence[str], wait_s: float = 30.0) -> None:
        self.addresses = list(addresses)
        self.wait_s = wait_s

    async def run(self, gateway: Gateway, ready: asyncio.Event) -> None:
        results = await asyncio.gather(
            *(gateway.add_backend(a, f"static-{i}", wait_s=self.wait_s) for i, a in enumerate(self.addresses)),
            return_exceptions=True,
        )
        for address, result in zip(self.addresses, results, strict=True):
            if isinstance(result, BaseException):
                log.error("backend %s not added: %s", address, result)
        ready.set()
        await asyncio.Event().wait()


class ProcessSource:
    """A local pool of envd processes; a replica that exits is removed at once (its sessions are lost).

    `ready_when="first"` lets the gateway serve as soon as one replica is up (the rest join as they start);
    "all" waits for every replica.
    """

    name = "process"

    def __init__(self, pool: ProcessPool, *, ready_when: str = "all", poll_s: float = 0.2) -> None:
        if ready_when not in ("all", "first"):
            raise ValueError(f"ready_when must be 'all' or 'first', got {ready_when!r}")
        self.pool = pool
        self.ready_when = ready_when
        self.poll_s = poll_s

    @classmethod
    def for_bundles(
        cls, bundle_dirs: Sequence[Path], replicas: int, serve_args: Sequence[str] = (), ready_when: str = "all"
    ) -> ProcessSource:
        return cls(ProcessPool(bundle_dirs, replicas, serve_args=serve_args), ready_when=ready_when)

    async def _start_one(self, gateway: Gateway, index: int) -> Replica:
        replica = await self.pool.spawn(index)
        await gateway.add_backend(replica.address, f"envd-{index}")
        return replica

    async def run(self, gateway: Gateway, ready: asyncio.Event) -> None:
        starting = [asyncio.ensure_future(self._start_one(gateway, i)) for i in range(self.pool.replicas)]
        try:
            watched: dict[str, Replica] = {}
            errors: list[BaseException] = []
            for next_done in asyncio.as_completed(starting):
                try:
                    replica = await next_done
                except Exception as exc:  # reported; other replicas may still come up
                    errors.append(exc)
                    if self.ready_when == "all":
                        raise
                    log.error("envd replica failed to start: %s", exc)
                    continue
                watched[replica.address] = replica
                if self.ready_when == "first":
                    ready.set()
            if not watched:
                raise RuntimeError(f"no envd replica started: {errors[0] if errors else 'unknown error'}")
            ready.set()
            while True:
                for address, replica in list(watched.items()):
                    code = replica.process.returncode
                    if code is not None:
                        del watched[address]
                        await gateway.remove_backend(address, f"envd process {replica.pid} exited with code {code}")
                await asyncio.sleep(self.poll_s)
        finally:
            for task in starting:
                task.cancel()
            await asyncio.gather(*starting, return_exceptions=True)
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
