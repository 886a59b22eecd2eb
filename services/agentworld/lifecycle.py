"""Child processes that must not outlive their parent (gateway pools, `agentworld up`).

The parent sets AGENTWORLD_PARENT_PID in the child's environment; the child asks the kernel for SIGTERM when
the parent dies. Done in the child at start-up rather than in a `preexec_fn`, which is unsafe to run after
fork() in a parent that has gRPC threads.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PARENT_PID_ENV = "AGENTWORLD_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child that should die with this process."""
    return {**(os.environ if env is None else env), PARENT_PID_ENV: str(os.getpid())}


def die_with_parent() -> None:
    """Called early by a child: SIGTERM when the parent named in the environment exits (Linux only)."""
    parent = os.environ.get(PARENT_PID_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):  # the parent died before we asked
        os.kill(os.getpid(), signal.SIGTERM)


def kill_and_wait(proc: subprocess.Popen, timeout_s: float) -> None:
    """SIGKILL a child (if it still runs) and reap it, giving up after `timeout_s`."""
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass
