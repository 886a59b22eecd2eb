"""Bursts far beyond gRPC's defaults: 1,500 calls in flight on one connection, to envd and through the gateway."""

from __future__ import annotations

import asyncio

from agentworld.client.aio import AsyncEnvClient
from agentworld.gateway import Gateway, StaticSource, serve_in_thread

BURST = 1500  # gRPC core cancels calls beyond 1,000 waiting for the application unless told otherwise


def _burst(address: str) -> list[str]:
    async def run() -> list[str]:
        async with AsyncEnvClient(address, lease=False) as client:
            results = await asyncio.gather(*(client.list_envs() for _ in range(BURST)), return_exceptions=True)
        return [repr(r) for r in results if isinstance(r, BaseException)]

    return asyncio.run(run())


def test_a_burst_of_calls_on_one_connection_is_never_cancelled(envd_address: str) -> None:
    assert _burst(envd_address) == []
    running = serve_in_thread(Gateway(), [StaticSource([envd_address])])
    try:
        assert _burst(running.address) == []
    finally:
        running.stop()
