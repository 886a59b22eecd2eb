"""Plain data the runtime returns; transports convert these to protobuf or JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_REWARDS = {"complete": 1.0, "partially_complete": 0.1, "others": 0.0, "error": 0.0}


@dataclass(frozen=True)
class RuntimeConfig:
    max_sessions: int = 4096
    idle_ttl_s: float = 600.0  # sessions untouched this long are closed; 0 disables
    call_timeout_s: float = 10.0  # default per-call timeout
    max_arguments_bytes: int = 1 << 20
    max_snapshots: int = 10_000
    call_workers: int = 4  # threads running tool calls: more only adds contention for the GIL
    verifier_workers: int = 2
    verifier_cpu_s: int = 20
    verifier_memory_mb: int = 512
    verifier_timeout_s: float = 30.0
    foreign_keys: bool = True
    rewards: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_REWARDS))


@dataclass(frozen=True)
class TaskInfo:
    task_id: str
    instruction: str
    kind: str


@dataclass(frozen=True)
class EnvInfo:
    env_id: str
    title: str
    description: str
    content_hash: str
    tool_count: int
    table_count: int
    tasks: list[TaskInfo]


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    env_id: str
    task_id: str | None
    state_hash: str


@dataclass(frozen=True)
class ToolResult:
    is_error: bool
    content: str
    http_status: int
    duration_ms: float


@dataclass(frozen=True)
class SnapshotInfo:
    snapshot_id: str
    state_hash: str
    data: bytes | None = None


@dataclass(frozen=True)
class Verdict:
    outcome: str  # complete | partially_complete | others | error
    reward: float
    details: dict[str, Any]
    duration_ms: float


@dataclass(frozen=True)
class RuntimeStats:
    active_sessions: int
    max_sessions: int
    tool_calls: int
    tool_errors: int
    sessions_created: int
    sessions_expired: int
    rss_bytes: int
    env_ids: list[str]
    draining: bool
