"""Plain result types returned by both clients (frozen dataclasses, no protobuf leaks into trainer code)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TaskInfo:
    task_id: str
    instruction: str
    kind: str  # "query" or "mutation"


@dataclass(frozen=True)
class EnvInfo:
    env_id: str
    title: str
    description: str
    content_hash: str
    tool_count: int
    table_count: int
    tasks: list[TaskInfo] = field(default_factory=list)


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    env_id: str
    task_id: str | None
    state_hash: str
    backend_address: str | None = None  # set by a gateway in direct mode


@dataclass(frozen=True)
class ToolResult:
    is_error: bool
    content: str
    http_status: int
    duration_ms: float

    def json(self) -> Any:
        """The content parsed as JSON (tools answer with JSON bodies); ValueError if it is not JSON."""
        try:
            return json.loads(self.content)
        except json.JSONDecodeError as exc:
            raise ValueError(f"tool result is not JSON ({exc}): {self.content[:200]!r}") from exc


@dataclass(frozen=True)
class Snapshot:
    snapshot_id: str
    state_hash: str
    data: bytes | None = None  # the SQLite image, only when exported


@dataclass(frozen=True)
class Verdict:
    outcome: str  # "complete", "partially_complete" or "others"
    reward: float
    details: dict[str, Any]
    duration_ms: float

    @property
    def complete(self) -> bool:
        return self.outcome == "complete"


@dataclass(frozen=True)
class Stats:
    active_sessions: int
    max_sessions: int
    tool_calls: int
    tool_errors: int
    sessions_created: int
    sessions_expired: int
    rss_bytes: int
    env_ids: list[str]
    draining: bool
    memory_budget_bytes: int = 0
    memory_used_bytes: int = 0
    snapshots: int = 0
    workers: int = 0
    sandbox_layers: list[str] = field(default_factory=list)
    node_id: str = ""  # envd: the identity in its session ids
    backends: int = 0  # a gateway: the live backends it routes to
