"""Request builders and response converters shared by the sync and async clients.

Each builder returns a `Call`: the stub method to invoke, the request message, the converter for the response, and
whether the call is safe to retry. The clients differ only in how they run a `Call` (blocking or awaited).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from agentworld.v1 import env_pb2 as pb

from .types import EnvInfo, SessionInfo, Snapshot, Stats, TaskInfo, ToolResult, Verdict

R = TypeVar("R")

# Extra RPC deadline on top of a tool call's own timeout, so the server's DEADLINE_EXCEEDED (with its message) wins.
TOOL_DEADLINE_MARGIN_S = 5.0


# Methods safe to send again after UNAVAILABLE (a gateway replica restarting, a lost reply): reads; calls whose
# repeat ends in the same state (Reset, Restore, Close); CallTool, whose call id envd deduplicates; and
# CreateSession (a lost reply may leave an unused session under the client's lease, closed with it). Fork and
# Snapshot are not (gRPC itself still transparently retries a request that provably never left the client).
RESENDABLE = frozenset({"ListEnvs", "CreateSession", "ListTools", "CallTool", "Reset", "Restore", "Verify",
                        "GetStateHash", "CloseSession", "GetStats", "KeepAlive"})


@dataclass(frozen=True)
class Call(Generic[R]):
    method: str  # attribute of EnvServiceStub
    request: Any
    convert: Callable[[Any], R]
    min_deadline_s: float | None = None  # the RPC deadline is at least this long

    @property
    def retryable(self) -> bool:
        return self.method in RESENDABLE


def session_info(msg: pb.SessionInfo) -> SessionInfo:
    return SessionInfo(
        session_id=msg.session_id,
        env_id=msg.env_id,
        task_id=msg.task_id or None,
        state_hash=msg.state_hash,
        backend_address=msg.backend_address or None,
    )


def env_info(msg: pb.EnvInfo) -> EnvInfo:
    return EnvInfo(
        env_id=msg.env_id,
        title=msg.title,
        description=msg.description,
        content_hash=msg.content_hash,
        tool_count=msg.tool_count,
        table_count=msg.table_count,
        tasks=[TaskInfo(task_id=t.task_id, instruction=t.instruction, kind=t.kind) for t in msg.tasks],
    )


def tool_dict(msg: pb.Tool) -> dict[str, Any]:
    schema = json.loads(msg.input_schema_json) if msg.input_schema_json else {"type": "object", "properties": {}}
    return {"name": msg.name, "description": msg.description, "input_schema": schema}


def _arguments_json(arguments: dict[str, Any] | str | None) -> str:
    if arguments is None:
        return ""
    if isinstance(arguments, str):  # already JSON: passed through so the server can reject malformed text itself
        return arguments
    if not isinstance(arguments, dict):
        raise TypeError(f"tool arguments must be a dict (a JSON object), got {type(arguments).__name__}")
    return json.dumps(arguments, separators=(",", ":"))


def list_envs() -> Call[list[EnvInfo]]:
    return Call("ListEnvs", pb.ListEnvsRequest(), lambda r: [env_info(e) for e in r.envs])


def create_session(env_id: str, task_id: str | None, lease_id: str | None = None) -> Call[SessionInfo]:
    return Call(
        "CreateSession",
        pb.CreateSessionRequest(env_id=env_id, task_id=task_id or "", lease_id=lease_id or ""),
        lambda r: session_info(r.session),
    )


def keep_alive(lease_id: str) -> Call[float]:
    """Renew a lease; returns the server's lease TTL in seconds."""
    return Call("KeepAlive", pb.KeepAliveRequest(lease_id=lease_id), lambda r: r.ttl_s)


def list_tools(session_id: str) -> Call[list[dict[str, Any]]]:
    return Call(
        "ListTools", pb.ListToolsRequest(session_id=session_id), lambda r: [tool_dict(t) for t in r.tools]
    )


def call_tool(
    session_id: str, name: str, arguments: dict[str, Any] | str | None, timeout_s: float | None,
    call_id: str | None = None,
) -> Call[ToolResult]:
    """One tool call with its own call id (fresh unless given): resending it never runs the tool twice."""
    timeout_ms = 0 if timeout_s is None else max(1, int(timeout_s * 1000))
    return Call(
        "CallTool",
        pb.CallToolRequest(
            session_id=session_id, tool_name=name, arguments_json=_arguments_json(arguments), timeout_ms=timeout_ms,
            call_id=call_id or uuid.uuid4().hex,
        ),
        lambda r: ToolResult(
            is_error=r.is_error, content=r.content, http_status=r.http_status, duration_ms=r.duration_ms
        ),
        min_deadline_s=None if timeout_s is None else timeout_s + TOOL_DEADLINE_MARGIN_S,
    )


def reset(session_id: str) -> Call[str]:
    return Call("Reset", pb.ResetRequest(session_id=session_id), lambda r: r.state_hash)


def snapshot(session_id: str, export: bool, ttl_s: float | None = None) -> Call[Snapshot]:
    return Call(
        "Snapshot",
        pb.SnapshotRequest(session_id=session_id, export=export, ttl_s=int(ttl_s or 0)),
        lambda r: Snapshot(snapshot_id=r.snapshot_id, state_hash=r.state_hash, data=r.data if export else None),
    )


def restore(session_id: str, source: Snapshot | str | bytes, *, by_data: bool = False) -> Call[str]:
    """Restore from a snapshot id, exported bytes, or a Snapshot (by id; by its data when `by_data`)."""
    if isinstance(source, Snapshot):
        if by_data:
            if source.data is None:
                raise ValueError("snapshot was not exported: no data to restore from")
            request = pb.RestoreRequest(session_id=session_id, data=source.data)
        else:
            request = pb.RestoreRequest(session_id=session_id, snapshot_id=source.snapshot_id)
    elif isinstance(source, bytes | bytearray | memoryview):
        request = pb.RestoreRequest(session_id=session_id, data=bytes(source))
    elif isinstance(source, str):
        request = pb.RestoreRequest(session_id=session_id, snapshot_id=source)
    else:
        raise TypeError(f"restore() takes a Snapshot, a snapshot id or exported bytes, got {type(source).__name__}")
    return Call("Restore", request, lambda r: r.state_hash)


def on_backend(infos: list[SessionInfo], address: str | None) -> list[SessionInfo]:
    """Forks answered by a backend directly (direct mode) carry no backend address: they live with their parent."""
    if address is None:
        return infos
    return [i if i.backend_address else dataclasses.replace(i, backend_address=address) for i in infos]


def can_fall_back_to_data(source: Snapshot | str | bytes) -> bool:
    """A Snapshot restored by id on a server that does not know the id can still be restored from its bytes."""
    return isinstance(source, Snapshot) and source.data is not None


def fork(session_id: str, n: int) -> Call[list[SessionInfo]]:
    if n < 1:
        raise ValueError(f"fork needs n >= 1, got {n}")
    return Call("Fork", pb.ForkRequest(session_id=session_id, n=n), lambda r: [session_info(s) for s in r.sessions])


def verify(session_id: str, task_id: str | None, final_answer: str | None) -> Call[Verdict]:
    return Call(
        "Verify",
        pb.VerifyRequest(
            session_id=session_id,
            task_id=task_id or "",
            final_answer=final_answer or "",
            has_final_answer=final_answer is not None,
        ),
        lambda r: Verdict(
            outcome=r.outcome,
            reward=r.reward,
            details=json.loads(r.details_json) if r.details_json else {},
            duration_ms=r.duration_ms,
        ),
    )


def state_hash(session_id: str) -> Call[str]:
    return Call("GetStateHash", pb.GetStateHashRequest(session_id=session_id), lambda r: r.state_hash)


def close_session(session_id: str) -> Call[None]:
    return Call("CloseSession", pb.CloseSessionRequest(session_id=session_id), lambda r: None)


def get_stats() -> Call[Stats]:
    return Call(
        "GetStats",
        pb.GetStatsRequest(),
        lambda r: Stats(
            active_sessions=r.active_sessions,
            max_sessions=r.max_sessions,
            tool_calls=r.tool_calls,
            tool_errors=r.tool_errors,
            sessions_created=r.sessions_created,
            sessions_expired=r.sessions_expired,
            rss_bytes=r.rss_bytes,
            env_ids=list(r.env_ids),
            draining=r.draining,
            memory_budget_bytes=r.memory_budget_bytes,
            memory_used_bytes=r.memory_used_bytes,
            snapshots=r.snapshots,
            workers=r.workers,
            sandbox_layers=list(r.sandbox_layers),
            node_id=r.node_id,
            backends=r.backends,
        ),
    )
