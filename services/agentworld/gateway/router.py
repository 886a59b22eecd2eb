"""The gateway's data plane: `agentworld-router` (router/, Go), a child process on the gateway's public port.

Forwarding in Python costs about 0.6 ms of CPU per call (grpc.aio serving one call and making another), more than
the calls it forwards often take. So the gateway starts the router in front of itself: session calls whose id
names a live backend go straight from the router to that backend as raw bytes, and everything else (placement,
fan-outs, health, reflection, misses, authentication failures) reaches this gateway on a private loopback port and
is answered here, by one set of rules. The gateway sends the router its routing table and tokens as JSON lines on
stdin; the router reports backends it found unreachable on stdout. Without the binary the gateway forwards by itself.

    make router        # builds the binary into ~/.cache/agentworld/bin (make test does it too)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from agentworld.auth import AUTH_METADATA_KEY, SCHEME
from agentworld.client._ops import RESENDABLE
from agentworld.limits import MAX_MESSAGE_BYTES
from agentworld.placement import SEPARATOR

from .conn import SERVICE
from .core import Gateway

log = logging.getLogger(__name__)

BINARY = "agentworld-router"
ROUTER_ENV = "AGENTWORLD_ROUTER"  # path to the binary, overriding the lookup
MODES = ("auto", "on", "off")  # auto: the router when its binary is there, else Python forwards


class RouterMissing(RuntimeError):
    pass


def find_router() -> Path | None:
    """$AGENTWORLD_ROUTER, else the build cache (`make router`), else PATH."""
    explicit = os.environ.get(ROUTER_ENV)
    if explicit:
        path = Path(explicit)
        if not os.access(path, os.X_OK):
            raise RouterMissing(f"${ROUTER_ENV}={explicit} is not an executable file")
        return path
    caches = {Path(os.environ["AGENTWORLD_CACHE"])} if os.environ.get("AGENTWORLD_CACHE") else set()
    caches.add(Path.home() / ".cache" / "agentworld")
    for cache in caches:
        candidate = cache / "bin" / BINARY
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(BINARY)
    return Path(found) if found else None


def resolve(mode: str) -> Path | None:
    """The binary to run for `mode`, or None to forward in Python."""
    if mode not in MODES:
        raise ValueError(f"router mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "off":
        return None
    binary = find_router()
    if binary is None and mode == "on":
        raise RouterMissing(f"{BINARY} not found (build it with `make router`, or set ${ROUTER_ENV})")
    if binary is None:
        log.warning("%s not found (`make router` builds it): the gateway forwards calls itself, at several times "
                    "the CPU per call", BINARY)
    return binary


class Router:
    """One router process: started with `start`, kept current by `push`, followed by `run` until it exits."""

    def __init__(self, binary: Path, gateway: Gateway, routed: Sequence[str]) -> None:
        self.binary = binary
        self.gateway = gateway
        self.routed = list(routed)
        self.process: asyncio.subprocess.Process | None = None
        self._last: bytes = b""

    def _table(self) -> bytes:
        gw = self.gateway
        tokens = list(gw.tokens.tokens()) if gw.tokens is not None else []
        line = {
            "service": SERVICE,
            "routed": self.routed,
            "resendable": sorted(RESENDABLE),
            "nodes": {b.node_id: b.address for b in gw.registry.live()},
            "tokens": tokens,
            "backend_token": tokens[0] if tokens else "",
            "auth_key": AUTH_METADATA_KEY,
            "scheme": SCHEME,
            "separator": SEPARATOR,
            "exempt": ["/grpc.health.v1.Health/"],
            "max_message_bytes": MAX_MESSAGE_BYTES,
        }
        return json.dumps(line, separators=(",", ":")).encode() + b"\n"

    async def start(self, listen: str, control: str) -> int:
        """Start the router on `listen` in front of the gateway's private `control` address; returns its port."""
        self.process = await asyncio.create_subprocess_exec(
            str(self.binary), "--listen", listen, "--control", control,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, start_new_session=False,
        )
        self.push()
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout=30)
        except TimeoutError:
            await self.stop()
            raise RuntimeError(f"{BINARY} did not start listening on {listen} within 30 s") from None
        if not line:
            code = await self.process.wait()
            raise OSError(f"{BINARY} could not serve on {listen} (exit code {code}; is the port in use?)")
        return int(json.loads(line)["listening"].rpartition(":")[2])

    def push(self) -> None:
        """Send the current table and tokens (only when they changed)."""
        if self.process is None or self.process.stdin is None or self.process.stdin.is_closing():
            return
        table = self._table()
        if table != self._last:
            self._last = table
            self.process.stdin.write(table)

    async def run(self, recheck_s: float = 1.0) -> None:
        """Follow the router: confirm the backends it reports unreachable, push token rotations; returns (raising)
        only if the router exits."""
        assert self.process is not None and self.process.stdout is not None
        reader = asyncio.ensure_future(self._events())
        try:
            while not reader.done():
                await asyncio.wait([reader], timeout=recheck_s)
                self.push()  # the token file may have changed
            await reader
        finally:
            reader.cancel()
        raise RuntimeError(f"{BINARY} exited with code {await self.process.wait()}")

    async def _events(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            event = json.loads(line)
            backend = self.gateway.registry.backends.get(event.get("suspect", ""))
            if backend is not None:
                asyncio.ensure_future(self.gateway.confirm_dead(backend))

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        if self.process.stdin is not None:
            self.process.stdin.close()  # the router exits when its stdin closes
        try:
            await asyncio.wait_for(self.process.wait(), timeout=5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
