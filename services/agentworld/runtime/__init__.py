"""envd's core: environments loaded once, many isolated in-memory sessions, sandboxed verifiers."""

from agentworld.runtime import errors
from agentworld.runtime.core import EnvRuntime
from agentworld.runtime.tools import ToolSpec
from agentworld.runtime.types import (
    EnvInfo,
    RuntimeConfig,
    RuntimeStats,
    SessionInfo,
    SnapshotInfo,
    TaskInfo,
    ToolResult,
    Verdict,
)

__all__ = [
    "EnvInfo",
    "EnvRuntime",
    "RuntimeConfig",
    "RuntimeStats",
    "SessionInfo",
    "SnapshotInfo",
    "TaskInfo",
    "ToolResult",
    "ToolSpec",
    "Verdict",
    "errors",
]
