"""The trainer-facing client for envd and the gateway (`agentworld.v1.EnvService`).

    from agentworld.client import EnvClient

    with EnvClient("localhost:50051") as client:
        env = client.list_envs()[0]
        task = env.tasks[0]
        with client.create_session(env.env_id, task.task_id) as session:
            print([t["name"] for t in session.tools])
            result = session.call_tool("search_books", {"query": "dune"})
            print(result.is_error, result.json())
            verdict = session.verify(final_answer="...")
            print(verdict.outcome, verdict.reward)
        group = client.create_group(env.env_id, task.task_id, 8)  # 8 identical starting states (GRPO)
        group.close()

`AsyncEnvClient` has the same surface with `await` (`await session.tools`, `async with`). Calls are resent on
UNAVAILABLE (backing off from 50 ms for about 6 s, e.g. while a gateway replica restarts): reads, Reset, Restore,
Close, CreateSession, and CallTool, whose call id makes envd run it once however often it arrives; Fork and
Snapshot are not. Failures raise typed subclasses of `agentworld.client.errors.EnvClientError` carrying `.code`
and the server's message. `EnvClient("10.0.0.1:50050,10.0.0.2:50050")` spreads calls over gateway replicas.

Each client holds a lease: its sessions are created under it and a background keepalive renews it, so when the
client's process dies its sessions are closed by the server within one lease TTL (30 s by default) instead of
holding capacity until they idle out. `lease=False` opts out (sessions then follow the server's idle TTL).
"""

from __future__ import annotations

from .aio import AsyncEnvClient, AsyncSession, AsyncSessionGroup
from .errors import (
    AbortedError,
    ClientClosedError,
    DeadlineExceededError,
    EnvClientError,
    EnvNotFound,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from .sync import EnvClient, Session, SessionGroup
from .types import EnvInfo, SessionInfo, Snapshot, Stats, TaskInfo, ToolResult, Verdict

__all__ = [
    "AbortedError",
    "AsyncEnvClient",
    "AsyncSession",
    "AsyncSessionGroup",
    "ClientClosedError",
    "DeadlineExceededError",
    "EnvClient",
    "EnvClientError",
    "EnvInfo",
    "EnvNotFound",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "NotFoundError",
    "ResourceExhaustedError",
    "Session",
    "SessionGroup",
    "SessionInfo",
    "Snapshot",
    "Stats",
    "TaskInfo",
    "ToolResult",
    "UnauthenticatedError",
    "UnavailableError",
    "Verdict",
]
