"""envd's side of the sandbox (zygote.py): start its process tree, load environments into it, fork workers.

envd holds a socket and a pidfd for every sandbox process: the socket carries frames, the pidfd signals the process
(deadline cancels and kills) and tells when it is gone. Starting and loading block (they happen while envd starts);
once `attach(loop)` has run, spawns and exit reports are asyncio.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agentworld.lifecycle import kill_and_wait
from agentworld.runtime import jail, wire
from agentworld.runtime.errors import Unavailable
from agentworld.runtime.store import StateStore

log = logging.getLogger("agentworld.envd.sandbox")
_EXIT_STATUS_WAIT_S = 0.5  # a zygote that hung up mid-load: how long to wait for its exit status


@dataclass(frozen=True)
class SandboxConfig:
    isolate: bool = True  # namespaces and the minimal root (where the kernel and our privileges allow)
    uid: int = jail.UNPRIVILEGED_ID  # the sandbox's uid and gid when envd runs as root
    gid: int = jail.UNPRIVILEGED_ID
    start_timeout_s: float = 60.0
    load_timeout_s: float = 120.0  # per environment: schema, seed and the app's import
    keep_stderr: bool = False  # let sandbox processes write to envd's stderr (debugging)


def python_read_paths() -> list[str]:
    """What the sandbox must read to run Python and agentworld: the interpreter's prefixes and site-packages."""
    import agentworld

    candidates = {sys.base_prefix, sys.prefix, sys.exec_prefix, os.path.dirname(os.path.dirname(agentworld.__file__))}
    candidates |= {p for p in sys.path if p.endswith(("site-packages", "dist-packages"))}
    real = sorted({os.path.realpath(p) for p in candidates if p and os.path.isdir(p)})
    return [p for p in real if not any(p != q and p.startswith(q + os.sep) for q in real)]


class SandboxProcess:
    """A process inside the sandbox, seen from envd: its pid there, its pidfd here."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.host_pid = _host_pid(pidfd)
        self.exit_status: int | None = None

    def signal(self, sig: int) -> None:
        if self.pidfd < 0:
            return
        try:
            signal.pidfd_send_signal(self.pidfd, sig)
        except ProcessLookupError:  # already gone
            pass

    def close(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


def _host_pid(pidfd: int) -> int:
    with open(f"/proc/self/fdinfo/{pidfd}") as f:
        for line in f:
            if line.startswith("Pid:"):
                return int(line.split()[1])
    return -1


def describe_exit(status: int | None) -> str:
    """What a wait status says, in words an agent author can act on."""
    if status is None:
        return "its process went away"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        hint = {signal.SIGKILL: " (the kernel's OOM killer, or envd stopping it)",
                signal.SIGSEGV: " (a crash in native code)", signal.SIGXCPU: " (its CPU limit)"}.get(sig, "")
        return f"its process was killed by {name}{hint}"
    return f"its process exited with status {os.waitstatus_to_exitcode(status)} (the environment's code ended it)"


@dataclass
class WorkerProcess:
    """A new worker: its socket (to wrap in asyncio streams) and its process."""

    sock: socket.socket
    proc: SandboxProcess


@dataclass
class LoadedEnvCode:
    """What an environment zygote reported after importing its app."""

    key: str
    tools: list[dict]
    tables: int
    template: bytes
    layers: dict


class _Channel:
    """A sandbox socket with an FdReader; frames go to `on_frame`."""

    def __init__(self, sock: socket.socket, on_frame: Callable[[dict, bytes, list[int]], None]) -> None:
        self.reader = wire.FdReader(sock)
        self.sock = sock
        self.on_frame = on_frame
        self.loop: asyncio.AbstractEventLoop | None = None
        self.on_close: Callable[[], None] | None = None

    def pump(self) -> None:
        self.reader.feed()
        for header, payload, fds in self.reader.frames():
            self.on_frame(header, payload, fds)
        if self.reader.closed:
            self.detach()
            if self.on_close:
                self.on_close()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        loop.add_reader(self.sock.fileno(), self.pump)

    def detach(self) -> None:
        if self.loop is not None and self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
        self.loop = None

    def send_blocking(self, header: dict, payload: bytes = b"") -> None:
        self.sock.setblocking(True)
        try:
            wire.send(self.sock, header, payload)
        finally:
            self.sock.setblocking(False)

    async def send(self, header: dict, payload: bytes = b"") -> None:
        assert self.loop is not None
        await self.loop.sock_sendall(self.sock, wire.encode(header, payload))

    def close(self) -> None:
        self.detach()
        self.sock.close()


class EnvZygote:
    """One environment's zygote: it imported the app; it forks that environment's workers."""

    def __init__(self, key: str, sock: socket.socket, proc: SandboxProcess) -> None:
        self.key = key
        self.proc = proc
        self.channel = _Channel(sock, self._frame)
        self.loaded: LoadedEnvCode | None = None
        self.error: str | None = None
        self._spawns: deque[asyncio.Future[WorkerProcess]] = deque()
        self._spawn_lock = asyncio.Lock()
        self.workers: dict[int, SandboxProcess] = {}  # sandbox pid -> worker
        self.on_worker_exit: Callable[[SandboxProcess], None] | None = None
        self.channel.on_close = self._closed

    def _frame(self, header: dict, payload: bytes, fds: list[int]) -> None:
        op = header.get("op")
        if op == "loaded":
            self.loaded = LoadedEnvCode(self.key, header["tools"], header["tables"], payload, header["layers"])
        elif op == "error":
            self.error = header.get("message", "the environment failed to load")
        elif op == "worker" and len(fds) == 2:
            worker = WorkerProcess(socket.socket(fileno=fds[0]), SandboxProcess(header["pid"], fds[1]))
            self.workers[worker.proc.pid] = worker.proc
            future = self._spawns.popleft() if self._spawns else None
            if future is None or future.done():
                worker.proc.signal(signal.SIGKILL)
                worker.sock.close()
            else:
                future.set_result(worker)
        elif op == "exited":
            proc = self.workers.pop(header["pid"], None)
            if proc is not None:
                proc.exit_status = header["status"]
                if self.on_worker_exit:
                    self.on_worker_exit(proc)
        else:
            for fd in fds:
                os.close(fd)

    def _closed(self) -> None:
        while self._spawns:
            future = self._spawns.popleft()
            if not future.done():
                future.set_exception(Unavailable(f"the sandbox of environment {self.key} is gone"))

    async def spawn(self, params: dict, timeout_s: float = 30.0) -> WorkerProcess:
        """Fork a worker (tens of milliseconds: a fork of the zygote plus its own confinement)."""
        if self.channel.reader.closed:
            raise Unavailable(f"the zygote of environment {self.key} is gone "
                              f"({self.error or describe_exit(self.proc.exit_status)})")
        async with self._spawn_lock:
            future: asyncio.Future[WorkerProcess] = asyncio.get_running_loop().create_future()
            self._spawns.append(future)
            await self.channel.send({"op": "spawn", **params})
            return await asyncio.wait_for(future, timeout_s)

    def kill(self) -> None:
        self.proc.signal(signal.SIGKILL)
        self.channel.close()
        self.proc.close()


class Sandbox:
    """The sandbox process tree and the state directory it writes sessions in (it owns both; `close()` ends both).

    Thread-compatible: start and load from one thread, then attach to one event loop. Several runtimes may share one
    (validation loads bundle after bundle into one sandbox, each into a zygote of its own)."""

    def __init__(self, config: SandboxConfig | None = None, state_root: Path | None = None) -> None:
        self.config = config or SandboxConfig()
        as_root = os.geteuid() == 0
        self.store = StateStore(state_root, owner=(self.config.uid, self.config.gid) if as_root else None)
        envs_dir, root_dir = self.store.envs_dir, self.store.sandbox_root
        self.envs_dir = envs_dir
        self._keys = 0
        self.envs: dict[str, EnvZygote] = {}
        ours, theirs = socket.socketpair()
        spec = {
            "ctl_fd": theirs.fileno(), "isolate": self.config.isolate, "uid": self.config.uid,
            "gid": self.config.gid, "read_paths": python_read_paths(), "envs_dir": str(envs_dir),
            "root_dir": str(root_dir), "keep_stderr": self.config.keep_stderr,
        }
        self._proc = subprocess.Popen(  # noqa: S603 - our own module, fixed argv
            [sys.executable, "-I", "-m", "agentworld.runtime.envcode.zygote", json.dumps(spec)],
            pass_fds=(theirs.fileno(),), cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/nonexistent", "TZ": "UTC"})
        theirs.close()
        self.alive = False
        self._ready: dict | None = None
        self._error: str | None = None
        self.channel = _Channel(ours, self._frame)
        self.channel.on_close = self._closed
        deadline = time.monotonic() + self.config.start_timeout_s
        while self._ready is None:
            if self._error or self.channel.reader.closed or time.monotonic() > deadline:
                self.close()
                why = self._error or ("it exited" if self.channel.reader.closed else "it did not answer in time")
                raise Unavailable(f"the sandbox for environment code failed to start: {why}")
            self._wait([self.channel], deadline)
        self.layers: dict = self._ready["layers"]
        log.info("sandbox layers: %s; not available: %s", ", ".join(self.layers["applied"]) or "none",
                 "; ".join(f"{k} ({v})" for k, v in self.layers["missing"].items()) or "none")
        self.alive = True

    # ------------------------------------------------------------------------------------------ frames
    def _frame(self, header: dict, payload: bytes, fds: list[int]) -> None:
        op = header.get("op")
        if op == "ready":
            self._ready = header
        elif op == "error":
            self._error = header.get("message", "unknown error")
        elif op == "env" and len(fds) == 2:
            key = header["key"]
            zygote = EnvZygote(key, socket.socket(fileno=fds[0]), SandboxProcess(header["pid"], fds[1]))
            self.envs[key] = zygote
            if self.channel.loop is not None:
                zygote.channel.attach(self.channel.loop)
        elif op == "exited":
            for zygote in list(self.envs.values()):
                if zygote.proc.pid == header["pid"]:
                    zygote.proc.exit_status = header["status"]
        else:
            for fd in fds:
                os.close(fd)

    def _closed(self) -> None:
        if self.alive:
            log.error("the sandbox for environment code exited (status %s)", self._proc.poll())
        self.alive = False

    @staticmethod
    def _wait(channels: list[_Channel], deadline: float) -> None:
        live = [c for c in channels if not c.reader.closed]
        if not live:
            return
        ready, _, _ = select.select([c.sock for c in live], [], [], max(0.0, min(1.0, deadline - time.monotonic())))
        for channel in live:
            if channel.sock in ready:
                channel.pump()

    # ------------------------------------------------------------------------------------------- loading
    def new_key(self) -> str:
        self._keys += 1
        return f"e{self._keys}"

    def load(self, requests: list[dict], concurrency: int = 2) -> dict[str, LoadedEnvCode | str]:
        """Import environments (each `{"key", "env_id", "app_py", "schema_sql", "seed_sql", "foreign_keys",
        "filename"}`), `concurrency` at a time; returns key -> what it reported, or why it failed. Blocking."""
        results: dict[str, LoadedEnvCode | str] = {}
        request_env_ids = {r["key"]: r["env_id"] for r in requests}
        closed_at: dict[str, float] = {}
        waiting = deque(requests)
        started: dict[str, float] = {}
        while waiting or started:
            while waiting and len(started) < max(1, concurrency):
                request = waiting.popleft()
                (self.envs_dir / request["key"]).mkdir(mode=0o700)
                if self.store.owner is not None:
                    os.chown(self.envs_dir / request["key"], *self.store.owner)
                self.channel.send_blocking({"op": "load", **request,
                                            "env_dir": str(self.envs_dir / request["key"])})
                started[request["key"]] = time.monotonic()
            zygotes = [self.envs[k].channel for k in started if k in self.envs]
            self._wait([self.channel, *zygotes], time.monotonic() + 1.0)
            if self.channel.reader.closed:
                raise Unavailable(f"the sandbox exited while loading environments ({self._error or 'no reason'})")
            for key, since in list(started.items()):
                zygote = self.envs.get(key)
                if zygote is not None and zygote.loaded is not None:
                    results[key] = zygote.loaded
                elif zygote is not None and zygote.error:
                    results[key] = zygote.error
                elif zygote is not None and zygote.channel.reader.closed:
                    if zygote.proc.exit_status is None and time.monotonic() - since < self.config.load_timeout_s:
                        closed_at.setdefault(key, time.monotonic())
                        if time.monotonic() - closed_at[key] < _EXIT_STATUS_WAIT_S:
                            continue  # its exit status is on its way from the base zygote
                    results[key] = (f"{request_env_ids[key]}: loading failed: "
                                    f"{describe_exit(zygote.proc.exit_status)}")
                elif time.monotonic() - since > self.config.load_timeout_s:
                    results[key] = f"loading took longer than {self.config.load_timeout_s:g} s (stuck at import?)"
                else:
                    continue
                del started[key]
                if not isinstance(results[key], LoadedEnvCode):
                    self.unload(key)
        return results

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve spawns and exit reports on `loop` from now on."""
        if self.channel.loop is loop:
            return
        self.channel.detach()
        self.channel.attach(loop)
        for zygote in self.envs.values():
            zygote.channel.detach()
            zygote.channel.attach(loop)

    def env(self, key: str) -> EnvZygote:
        zygote = self.envs.get(key)
        if zygote is None or not self.alive:
            raise Unavailable(f"the sandbox has no zygote for environment {key} (sandbox alive: {self.alive})")
        return zygote

    def unload(self, key: str) -> None:
        zygote = self.envs.pop(key, None)
        if zygote is not None:
            zygote.kill()
        env_dir = self.envs_dir / key
        if env_dir.is_dir():
            import shutil

            shutil.rmtree(env_dir, ignore_errors=True)

    @property
    def launcher_pid(self) -> int:
        return self._proc.pid

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._proc.returncode is not None and not self.alive and self.channel.sock.fileno() < 0:
            return
        for key in list(self.envs):
            self.unload(key)
        self.alive = False
        self.channel.close()
        kill_and_wait(self._proc, 10)
        self.store.close()


@dataclass
class WorkerLimits:
    """rlimits of every worker (sent with each spawn)."""

    memory_bytes: int = 1 << 30  # address space beyond what the environment zygote already maps
    file_bytes: int = 63 << 20  # largest session database file
    open_files: int = 1024
    response_bytes: int = 32 << 20

    def spawn_params(self, zygote: EnvZygote) -> dict:
        return {"address_space": _vm_size(zygote.proc.host_pid) + self.memory_bytes, "file_size": self.file_bytes,
                "open_files": self.open_files, "max_response_bytes": self.response_bytes}


def _vm_size(host_pid: int) -> int:
    try:
        with open(f"/proc/{host_pid}/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 1 << 30


