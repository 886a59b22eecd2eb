"""The gateway: one EnvService address in front of many envd backends (local processes, Docker, Kubernetes).

Sessions are placed on the least-loaded live backend serving the environment and every later call is routed to the
backend holding the session; a dead backend's sessions answer UNAVAILABLE naming the session. In direct mode
(`Gateway(direct=True)` with `EnvClient(..., direct=True)`) the gateway only places sessions: SessionInfo carries
the backend address and the client calls the backend itself.

    from agentworld.gateway import Gateway, ProcessSource, serve_in_thread

    running = serve_in_thread(Gateway(), [ProcessSource.for_bundles([bundle_dir], replicas=2)])
    # EnvClient(running.address) ... ; running.stop() terminates the envd processes
"""

from __future__ import annotations

from .core import Gateway
from .pool import ProcessPool
from .registry import Backend, Registry
from .server import RunningGateway, serve, serve_in_thread
from .sources import BackendSource, DockerSource, ProcessSource, StaticSource

__all__ = [
    "Backend",
    "BackendSource",
    "DockerSource",
    "Gateway",
    "ProcessPool",
    "ProcessSource",
    "Registry",
    "RunningGateway",
    "StaticSource",
    "serve",
    "serve_in_thread",
]
