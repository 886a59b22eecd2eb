"""envd's core: sessions of many environments, with environment code run in a sandbox of worker processes.

The supervisor side (this package's top level: core, sessions, store, scheduler) holds every session's truth and
never imports an environment's code; `envcode/` is what runs inside the sandbox; `jail.py` is the kernel-level
confinement both sandboxes (environment code and verifiers) are built from. See docs/runtime.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_EXPORTS = {
    "EnvRuntime": "agentworld.runtime.core",
    "ToolSpec": "agentworld.runtime.tools",
    **{name: "agentworld.runtime.types" for name in (
        "EnvInfo", "RuntimeConfig", "RuntimeStats", "SessionInfo", "SnapshotInfo", "TaskInfo", "ToolResult",
        "Verdict")},
}

__all__ = ["EnvInfo", "EnvRuntime", "RuntimeConfig", "RuntimeStats", "SessionInfo", "SnapshotInfo", "TaskInfo",
           "ToolResult", "ToolSpec", "Verdict", "errors"]


def __getattr__(name: str) -> Any:
    """Imported on first use, so the sandbox's processes can import envcode/ without envd's supervisor side."""
    import importlib

    if name == "errors":
        return importlib.import_module(f"{__name__}.errors")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agentworld.runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
