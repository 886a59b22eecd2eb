"""Running a gateway: the grpc.aio server (EnvService + health + reflection), its backend sources, and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from agentworld.limits import GRPC_SERVER_OPTIONS
from agentworld.transport.background import BackgroundServer, start_in_thread
from agentworld.transport.grpc_auth import interceptors

from .conn import SERVICE
from .core import Gateway
from .router import Router
from .router import resolve as resolve_router
from .service import GatewayService
from .sources import BackendSource

log = logging.getLogger("agentworld.gateway")


async def serve(
    gateway: Gateway,
    sources: Sequence[BackendSource],
    host: str = "127.0.0.1",
    port: int = 50050,
    on_ready: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
    ready_timeout_s: float = 300.0,
    router: str = "auto",
) -> None:
    """Serve until `stop` is set or a source fails; then stop taking calls, release every source, close backends.

    `router`: "auto" puts agentworld-router (the data plane, gateway/router.py) on host:port when its binary is
    there, and this process on a private loopback port behind it; "on" requires it; "off" forwards here."""
    binary = resolve_router(router)
    service = GatewayService(gateway)
    server = grpc.aio.server(options=GRPC_SERVER_OPTIONS, interceptors=interceptors(gateway.tokens))
    server.add_generic_rpc_handlers((service.handler(),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = "127.0.0.1:0" if binary is not None else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"could not bind the gateway to {address}")
    front = Router(binary, gateway, service.fast_path()) if binary is not None else None
    stop = stop or asyncio.Event()
    readies = [asyncio.Event() for _ in sources]
    tasks = [asyncio.ensure_future(src.run(gateway, ev)) for src, ev in zip(sources, readies, strict=True)]
    stopper = asyncio.ensure_future(stop.wait())
    unfollow: Callable[[], None] = lambda: None  # noqa: E731
    def follow(live: int) -> None:  # SERVING exactly while some backend is live; the router routes to them
        if front is not None:
            front.push()
        status = health_pb2.HealthCheckResponse.SERVING if live else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE):
            asyncio.ensure_future(health_servicer.set(name, status))

    try:
        for name in ("", SERVICE):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.start()
        if front is not None:  # public from the start: callers reach this gateway through it while it gets ready
            bound = await front.start(f"{host}:{port}", f"127.0.0.1:{bound}")
            tasks.append(asyncio.ensure_future(front.run()))
        await _wait_ready(tasks, readies, stopper, ready_timeout_s)
        if stop.is_set():
            return
        gateway.start_monitor()
        unfollow = gateway.on_membership(follow)
        if on_ready:
            on_ready(bound)
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        gateway.draining = True
        unfollow()  # NOT_SERVING from here on, whatever the backends do
        for name in ("", SERVICE):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if front is not None:
            await front.stop()
        await server.stop(grace=1.0)
        await gateway.stop_monitor()  # backends are about to go away on purpose
        stopper.cancel()
        for task in tasks:
            task.cancel()
        for task in tasks:  # sources release what they own (processes, containers, watches)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await gateway.close()


async def _wait_ready(
    tasks: list[asyncio.Future[Any]], readies: list[asyncio.Event], stopper: asyncio.Future[Any], timeout_s: float
) -> None:
    waits = [asyncio.ensure_future(ev.wait()) for ev in readies]
    try:
        pending = set(waits)
        async with asyncio.timeout(timeout_s):
            while pending:
                done, _ = await asyncio.wait([*pending, *tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
                if stopper in done:
                    return
                for task in tasks:
                    if task in done:  # a source ended before it was ready: it failed
                        exc = task.exception()
                        raise exc if exc is not None else RuntimeError("a backend source stopped before it was ready")
                pending -= done
    except TimeoutError:
        raise TimeoutError(f"backends not ready after {timeout_s:.0f}s") from None
    finally:
        for w in waits:
            w.cancel()


@dataclass
class RunningGateway(BackgroundServer):
    """A gateway on a background thread with its own event loop (tests, `agentworld up` in-process use)."""

    gateway: Gateway | None = None


def serve_in_thread(
    gateway: Gateway, sources: Sequence[BackendSource], host: str = "127.0.0.1", port: int = 0, timeout_s: float = 300.0,
    router: str = "auto",
) -> RunningGateway:
    """Start a gateway on a thread; returns once its backends are in and it accepts calls."""

    def run(on_ready: Callable[[int], None], stop: asyncio.Event) -> Awaitable[None]:
        return serve(gateway, sources, host, port, on_ready=on_ready, stop=stop, router=router)

    bound, loop, stop, thread = start_in_thread(run, host, "agentworld-gateway", timeout_s)
    return RunningGateway(bound, host, loop, stop, thread, gateway=gateway)
