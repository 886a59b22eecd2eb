"""Plain data the runtime takes and returns; transports convert these to protobuf or JSON."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from agentworld import placement
from agentworld.limits import DEFAULT_LEASE_TTL_S, MAX_ARGUMENTS_BYTES, MAX_DATABASE_BYTES

# The verifier outcomes and what each pays by default (AWM's reward map). A request may override the reward map.
OUTCOMES = ("complete", "partially_complete", "others", "error")
DEFAULT_REWARDS = {"complete": 1.0, "partially_complete": 0.1, "others": 0.0, "error": 0.0}


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (a container's limit)."""
    cpus = len(os.sched_getaffinity(0))
    for quota_file, period_file in (("/sys/fs/cgroup/cpu.max", None),
                                    ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us")):
        try:
            with open(quota_file) as f:
                fields = f.read().split()
            if period_file:
                with open(period_file) as f:
                    fields.append(f.read().strip())
            quota, period = fields[0], fields[1]
            if quota not in ("max", "-1"):
                cpus = min(cpus, max(1, -(-int(quota) // int(period))))
            break
        except (OSError, IndexError, ValueError):
            continue
    return max(1, cpus)


@dataclass(frozen=True)
class RuntimeConfig:
    node_id: str = field(default_factory=placement.default_node_id)  # written into every session id it mints
    # sessions
    max_sessions: int = 4096
    idle_ttl_s: float = 600.0  # sessions without a lease, untouched this long, are closed; 0 disables
    lease_ttl_s: float = DEFAULT_LEASE_TTL_S  # a lease not renewed this long closes its sessions
    memory_budget_bytes: int | None = None  # sessions' and snapshots' databases; None: half the state dir's room
    snapshot_ttl_max_s: float = 7 * 24 * 3600.0
    state_dir: str | None = None  # where the databases live; None: /dev/shm if roomy, else the temp dir
    # tool calls
    call_timeout_s: float = 10.0  # default per-call deadline
    max_arguments_bytes: int = MAX_ARGUMENTS_BYTES
    workers: int = field(default_factory=available_cpus)  # worker processes running calls at once (one per core)
    max_workers: int = 0  # all worker processes, parked runaway calls included; 0: 8 x workers
    long_call_s: float = 0.05  # a call running longer is parked: lower CPU priority, and its slot goes to others
    cancel_grace_s: float = 0.1  # after a deadline, how long cooperative cancellation may take before a kill
    worker_memory_mb: int = 1024  # address space a worker may add to what its environment's zygote maps
    max_database_bytes: int = MAX_DATABASE_BYTES
    foreign_keys: bool = True
    isolate: bool = True  # run environment code in new namespaces with a minimal root (where possible)
    # verification
    verifier_workers: int = field(default_factory=available_cpus)
    verifier_queue: int = 4096  # verifications waiting for a sandbox; more get RESOURCE_EXHAUSTED
    verifier_cpu_s: int = 20
    verifier_memory_mb: int = 512
    verifier_timeout_s: float = 30.0
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
    outcome: str  # one of OUTCOMES
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
    memory_budget_bytes: int = 0
    memory_used_bytes: int = 0
    snapshots: int = 0
    workers: int = 0
    sandbox_layers: list[str] = field(default_factory=list)
    node_id: str = ""
