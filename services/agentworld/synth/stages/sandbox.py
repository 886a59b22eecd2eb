"""Run generated code in a sandboxed child: its own session, CPU/memory rlimits, no credentials, a wall-clock timeout.

The pipeline executes model-written code (app imports, validation) before it is trusted. Jobs run in children forked
by zygote processes (`zygote.py`) that were started with a scrubbed environment (no API keys) and preloaded FastAPI,
SQLAlchemy and the validator, so a job starts in milliseconds rather than the seconds a fresh interpreter takes. A
crash, hang or `sys.exit` in generated code ends only that child.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

SAFE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "SYSTEMROOT")
STARTUP_TIMEOUT_S = 120.0
MARGIN_S = 15.0  # the zygote enforces job timeouts; we give up on the zygote itself this much later


class ChildJobError(Exception):
    """The job raised (message: its traceback), crashed, or timed out."""


class SandboxUnavailable(RuntimeError):
    """The sandbox itself cannot start (not the generated code's fault): the run stops with this message."""


def child_env() -> dict[str, str]:
    """A whitelist, so API keys and other secrets of the pipeline never reach generated code."""
    env = {k: v for k, v in os.environ.items() if k in SAFE_ENV_KEYS}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[3])  # services/: this agentworld
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


class _Zygote:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(  # noqa: S603 - fixed argv
            [sys.executable, "-m", "agentworld.synth.stages.zygote"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=child_env(), cwd="/", start_new_session=True)
        try:
            line = self._readline(STARTUP_TIMEOUT_S)
        except ChildJobError as exc:
            raise SandboxUnavailable(f"the sandbox zygote did not start within {STARTUP_TIMEOUT_S:.0f}s") from exc
        if line.strip() != b"ready":
            self.close()
            raise SandboxUnavailable("the sandbox zygote failed to start (python -m agentworld.synth.stages.zygote)")

    def _readline(self, timeout_s: float) -> bytes:
        result: list[bytes] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout_s)
        if not result:
            self.close()
            raise ChildJobError("the sandbox zygote stopped answering (killed)")
        return result[0]

    def run(self, job: str, args: tuple, timeout_s: float, cpu_s: int, memory_mb: int) -> dict[str, Any]:
        req = {"job": job, "args": list(args), "timeout_s": timeout_s, "cpu_s": cpu_s, "memory_mb": memory_mb}
        try:
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            self.close()
            raise ChildJobError(f"the sandbox zygote is gone: {exc}") from exc
        line = self._readline(timeout_s + MARGIN_S)
        if not line:
            self.close()
            raise ChildJobError("the sandbox zygote exited")
        return json.loads(line)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class ZygotePool:
    """Up to `size` zygotes, each serving one job at a time; created lazily, replaced when they die."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self.idle: queue.Queue[_Zygote] = queue.Queue()
        self.created = 0
        self.lock = threading.Lock()
        self.all: list[_Zygote] = []

    def _take(self) -> _Zygote:
        with self.lock:
            if self.idle.empty() and self.created < self.size:
                self.created += 1
                try:
                    z = _Zygote()
                except BaseException:
                    self.created -= 1
                    raise
                self.all.append(z)
                return z
        return self.idle.get()

    def run(self, job: str, args: tuple, timeout_s: float, cpu_s: int, memory_mb: int) -> Any:
        z = self._take()
        try:
            reply = z.run(job, args, timeout_s, cpu_s, memory_mb)
        finally:
            if z.alive:
                self.idle.put(z)
            else:
                with self.lock:
                    self.created -= 1
                    self.all.remove(z)
        if reply["status"] != "ok":
            raise ChildJobError(str(reply["payload"]))
        return reply["payload"]

    def close(self) -> None:
        with self.lock:
            for z in self.all:
                z.close()
            self.all.clear()
            self.created = 0
            self.idle = queue.Queue()


_pool: ZygotePool | None = None
_pool_lock = threading.Lock()


def pool(size: int = 2) -> ZygotePool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ZygotePool(size)
            atexit.register(_pool.close)
        _pool.size = max(_pool.size, size)
        return _pool


async def run_job(job: str, *args: Any, timeout_s: float, cpu_s: int = 300, memory_mb: int = 4096,
                  workers: int = 2) -> Any:
    """Run child_jobs.JOBS[job](*args) in a fresh sandboxed child; returns its result or raises ChildJobError."""
    return await asyncio.to_thread(pool(workers).run, job, args, timeout_s, cpu_s, memory_mb)
