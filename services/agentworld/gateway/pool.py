"""A local pool of envd processes (`agentworld serve --port 0`) on loopback, owned by the gateway process.

Children die with their parent (PR_SET_PDEATHSIG on Linux, set by the child: agentworld.lifecycle), so even a SIGKILLed gateway leaves no orphans; a normal
stop sends SIGTERM, waits, then SIGKILLs stragglers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agentworld.lifecycle import child_env
from agentworld.runtime.types import available_cpus

log = logging.getLogger(__name__)

_READY = re.compile(r"envd listening on (\S+):(\d+)")
# `python -c` keeps argv[1:] for typer; no dependency on the console script being on PATH.
_CLI = "import sys; from agentworld.cli import main; sys.argv[0] = 'agentworld'; main()"


@dataclass
class Replica:
    index: int
    process: asyncio.subprocess.Process
    log_path: Path
    address: str = ""
    started_at: float = field(default_factory=time.monotonic)
    drain: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid


class ProcessPool:
    """N `agentworld serve` processes serving the same bundles, each on its own free loopback port."""

    def __init__(
        self,
        bundle_dirs: Sequence[Path],
        replicas: int = 2,
        *,
        host: str = "127.0.0.1",
        serve_args: Sequence[str] = (),
        log_dir: Path | None = None,
        start_timeout_s: float = 180.0,
        token_file: Path | None = None,
    ) -> None:
        """`token_file`: the replicas require its tokens (the gateway presents them)."""
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {replicas}")
        self.bundle_dirs = [Path(p) for p in bundle_dirs]
        self.replicas = replicas
        self.host = host
        self.serve_args = list(serve_args)
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="agentworld-pool-"))
        self.start_timeout_s = start_timeout_s
        self.token_file = token_file
        self._current: dict[int, Replica] = {}

    @property
    def members(self) -> list[Replica]:
        """The current process of each slot, by slot index."""
        return [self._current[i] for i in sorted(self._current)]

    def command(self, index: int) -> list[str]:
        """`agentworld serve` for slot `index` (its node id: envd-<index>, so its session ids name the slot); replicas
        share the CPUs (--workers each) unless told otherwise."""
        dirs = [str(p) for p in self.bundle_dirs]
        extra = [] if "--workers" in self.serve_args else ["--workers", str(max(1, available_cpus() // self.replicas))]
        if "--node-id" not in self.serve_args:
            extra += ["--node-id", f"envd-{index}"]
        if self.token_file is not None:
            extra += ["--auth-token-file", str(self.token_file)]
        return [sys.executable, "-c", _CLI, "serve", *dirs, "--host", self.host, "--port", "0", *extra,
                *self.serve_args]

    async def spawn(self, index: int) -> Replica:
        """Start (or restart) slot `index` and wait until it prints its listening address."""
        log_path = self.log_dir / f"envd-{index}.log"
        log_file = log_path.open("ab")
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command(index),
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
                stdin=asyncio.subprocess.DEVNULL,
                env=child_env(),
            )
        finally:
            log_file.close()
        replica = Replica(index, process, log_path)
        self._current[index] = replica
        assert process.stdout is not None
        try:
            async with asyncio.timeout(self.start_timeout_s):
                while True:
                    line = await process.stdout.readline()
                    if not line:
                        raise RuntimeError(
                            f"envd replica {index} exited with code {await process.wait()} before listening; "
                            f"last log lines:\n{self.tail(replica)}"
                        )
                    match = _READY.search(line.decode(errors="replace"))
                    if match:
                        replica.address = f"{self.host}:{match.group(2)}"
                        break
        except TimeoutError:
            raise RuntimeError(
                f"envd replica {index} not listening after {self.start_timeout_s:.0f}s; log: {log_path}"
            ) from None
        replica.drain = asyncio.ensure_future(self._drain(replica))
        return replica

    async def _drain(self, replica: Replica) -> None:
        """Keep reading the child's stdout (so it never blocks on a full pipe) into its log."""
        assert replica.process.stdout is not None
        with replica.log_path.open("ab") as out:
            while line := await replica.process.stdout.readline():
                out.write(line)
                out.flush()

    @staticmethod
    def tail(replica: Replica, lines: int = 15) -> str:
        try:
            return "\n".join(replica.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def start(self) -> list[Replica]:
        """Spawn all replicas concurrently; returns once each is listening. On failure, stops what started."""
        try:
            return list(await asyncio.gather(*(self.spawn(i) for i in range(self.replicas))))
        except BaseException:
            await self.stop()
            raise

    async def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM every child, wait up to `grace_s`, SIGKILL the rest; idempotent."""
        alive = [r for r in self.members if r.process.returncode is None]
        for replica in alive:
            with contextlib.suppress(ProcessLookupError):
                replica.process.terminate()
        if alive:
            _, pending = await asyncio.wait([asyncio.ensure_future(r.process.wait()) for r in alive], timeout=grace_s)
            for replica in alive:
                if replica.process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        replica.process.kill()
            for task in pending:
                await task
        for replica in self.members:
            if replica.drain is not None:
                replica.drain.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await replica.drain
