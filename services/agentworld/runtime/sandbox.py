"""Run untrusted verifiers outside the server process: a pool of sandboxed zygote subprocesses.

Each zygote (`sandbox_worker.py`, stdlib only) runs in namespaces of its own with a minimal root, as an unprivileged
uid under Landlock and seccomp (jail.py, the layers environment code runs under too), and forks a fresh, further
confined child per verification (see that module for the layers). The pool puts the two database states of each job
in a private directory (0555 under a 0711 parent, files 0444; hard links of envd's immutable images, or copies)
that only that job knows the random name of, and removes it afterwards. Thread-safe: `run()` takes an idle zygote
from a queue.

    with VerifierPool(workers=2, limits=SandboxLimits(cpu_seconds=20, memory_mb=512, wall_timeout_s=30)) as pool:
        verdict = pool.run(source=text, function="verify_task_3", initial_db=b"...", final_db=b"...")
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import secrets
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from agentworld.lifecycle import kill_and_wait

WORKER_PATH = Path(__file__).with_name("sandbox_worker.py")
OUTCOMES = ("complete", "partially_complete", "others", "error")
MAX_SOURCE_BYTES = 4 << 20
STARTUP_TIMEOUT_S = 20.0
RESPONSE_MARGIN_S = 5.0  # the zygote enforces the wall timeout; the pool gives up on the zygote this much later


class SandboxError(RuntimeError):
    """The pool cannot run jobs (closed, or zygotes fail to start)."""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-verification limits. CPU and memory are rlimits of the child; wall time is enforced by its zygote."""

    cpu_seconds: float = 20.0
    memory_mb: int = 512
    wall_timeout_s: float = 30.0
    max_open_files: int = 32

    def as_dict(self) -> dict:
        return {"cpu_seconds": self.cpu_seconds, "memory_mb": self.memory_mb,
                "wall_timeout_s": self.wall_timeout_s, "max_open_files": self.max_open_files}


@dataclass
class SandboxVerdict:
    """What a verifier said: outcome in complete|partially_complete|others|error, its dict (or the error)."""

    outcome: str
    details: dict = field(default_factory=dict)
    duration_ms: float = 0.0


class _WorkerGone(Exception):
    pass


class _Zygote:
    """One zygote subprocess and its framed pipe protocol. Used by one thread at a time (via the idle queue)."""

    def __init__(self, scratch: Path, isolate_network: bool, drop_privileges: bool) -> None:
        args = [sys.executable, "-I", "-S", str(WORKER_PATH), str(scratch)]
        if not isolate_network:
            args.append("--no-netns")
        if not drop_privileges:
            args.append("--no-drop")
        self.proc = subprocess.Popen(  # noqa: S603 - fixed argv
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/",
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, start_new_session=True, close_fds=True)
        self.pid = self.proc.pid
        self.layers: list[str] = []

    def await_hello(self) -> None:
        try:
            hello = self._read(time.monotonic() + STARTUP_TIMEOUT_S)
            if not hello.get("hello"):
                raise _WorkerGone(hello.get("error", "no hello"))
        except _WorkerGone as exc:
            err = b""
            if self.proc.poll() is not None and self.proc.stderr is not None:
                err = self.proc.stderr.read() or b""
            self.kill()
            raise SandboxError(
                f"verifier sandbox worker failed to start: {exc}; {err.decode(errors='replace')[-2000:]}") from exc
        self.layers = list(hello.get("layers", []))
        self.missing = dict(hello.get("missing", {}))
        self.pid = _child_of(self.proc.pid)  # the zygote proper (the launcher's child), as this host sees it

    def request(self, job: dict, timeout_s: float) -> dict:
        body = json.dumps(job).encode("utf-8")
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(struct.pack(">I", len(body)) + body)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as exc:
            raise _WorkerGone(f"worker pipe closed ({exc})") from exc
        return self._read(time.monotonic() + timeout_s)

    def _read(self, deadline: float) -> dict:
        header = self._read_exact(4, deadline)
        (length,) = struct.unpack(">I", header)
        return json.loads(self._read_exact(length, deadline).decode("utf-8"))

    def _read_exact(self, n: int, deadline: float) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        chunks: list[bytes] = []
        while n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _WorkerGone("worker did not answer in time")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, n)
            if not chunk:
                raise _WorkerGone(f"worker exited (status {self.proc.poll()})")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        kill_and_wait(self.proc, 5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass

    def close(self) -> None:
        """Polite shutdown: EOF on stdin ends the zygote (and any child it runs)."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


def _child_of(pid: int) -> int:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return pid
    return int(children[0]) if children else pid


SCRATCH_PREFIX = "agentworld-verify-"


def _scratch_root() -> Path:
    """tmpfs when there is one: the per-job database copies never touch a disk. It holds `jobs/` and `root/` (the
    zygotes' minimal-root mount point)."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else Path(tempfile.gettempdir())
    _sweep_stale(base)
    root = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=base))
    root.chmod(0o711)
    (root / "jobs").mkdir(mode=0o711)  # traversable by the sandbox uid, not listable: found only by random name
    (root / "root").mkdir(mode=0o755)
    return root


def _sweep_stale(base: Path) -> None:
    """Remove scratch roots left by pools whose process died without close() (e.g. a SIGTERMed server)."""
    for path in base.glob(f"{SCRATCH_PREFIX}*-*"):
        pid = path.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        _remove_scratch(path)


def _remove_scratch(root: Path) -> None:
    jobs = root / "jobs"
    for job_dir in jobs.iterdir() if jobs.is_dir() else ():
        _chmod_quiet(job_dir, 0o700)
    shutil.rmtree(root, ignore_errors=True)


def _chmod_quiet(path: Path, mode: int) -> None:
    try:
        path.chmod(mode)
    except OSError:
        pass


class VerifierPool:
    """A fixed-size pool of sandbox zygotes; `run()` is thread-safe and blocks while all are busy."""

    def __init__(self, workers: int = 2, limits: SandboxLimits | None = None, *, isolate_network: bool = True,
                 drop_privileges: bool = True) -> None:
        if workers < 1:
            raise ValueError("VerifierPool needs at least one worker")
        self.limits = limits or SandboxLimits()
        self._isolate_network = isolate_network
        self._drop_privileges = drop_privileges
        self._lock = threading.Lock()
        self._closed = False
        self._idle: queue.Queue[_Zygote | None] = queue.Queue()
        self._all: list[_Zygote] = []
        self._root = _scratch_root()
        atexit.register(self.close)  # a clean interpreter exit removes the scratch root; SIGKILL is swept later
        self.replaced = 0
        started = [_Zygote(self._root, isolate_network, drop_privileges) for _ in range(workers)]
        try:
            for z in started:
                z.await_hello()
        except SandboxError:
            for z in started:
                z.kill()
            _remove_scratch(self._root)
            raise
        for z in started:
            self._all.append(z)
            self._idle.put(z)
        common = set.intersection(*(set(z.layers) for z in started))
        self.layers: list[str] = [x for x in started[0].layers if x in common] + [
            "readonly_db_copies", "private_job_dir", "wall_timeout"]
        self.missing: dict[str, str] = started[0].missing

    # ------------------------------------------------------------------------------------------ public
    def run(self, source: str, function: str, initial_db: bytes | str | Path, final_db: bytes | str | Path,
            final_answer: str | None = None, limits: SandboxLimits | None = None) -> SandboxVerdict:
        """Run `function` from verifiers.py `source` on the two databases (bytes, or paths of files that do not
        change: they are hard-linked, or copied, into the job's directory); never raises for bad code."""
        if self._closed:
            raise SandboxError("verifier pool is closed")
        start = time.perf_counter()
        lim = limits or self.limits
        if len(source.encode("utf-8")) > MAX_SOURCE_BYTES:
            return SandboxVerdict("error", {"error": f"verifiers.py is larger than {MAX_SOURCE_BYTES} bytes"},
                                  (time.perf_counter() - start) * 1000)
        job_dir = self._write_job_dir(initial_db, final_db)
        try:
            job = {"source": source, "function": function, "final_answer": final_answer, "job_dir": str(job_dir),
                   "initial_db_path": str(job_dir / "initial.db"), "final_db_path": str(job_dir / "final.db"),
                   "limits": lim.as_dict()}
            result = self._dispatch(job, lim.wall_timeout_s + RESPONSE_MARGIN_S)
        finally:
            self._remove_job_dir(job_dir)
        outcome = result.get("outcome")
        details = result.get("details")
        if outcome not in OUTCOMES or not isinstance(details, dict):
            outcome, details = "error", {"error": f"malformed sandbox result: {str(result)[:300]}"}
        return SandboxVerdict(outcome, details, (time.perf_counter() - start) * 1000)

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [z.pid for z in self._all]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            zygotes = list(self._all)
            self._all.clear()
        for z in zygotes:
            self._idle.put(None)  # wake waiters
            z.close()
        _remove_scratch(self._root)
        atexit.unregister(self.close)

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; close() is the contract
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    # ----------------------------------------------------------------------------------------- private
    def _dispatch(self, job: dict, timeout_s: float) -> dict:
        if self._closed:
            raise SandboxError("verifier pool is closed")
        z = self._idle.get()
        if z is None:
            self._idle.put(None)
            raise SandboxError("verifier pool is closed")
        try:
            try:
                if not z.alive():
                    z = self._replace(z)
            except SandboxError as exc:  # z stays dead in the queue; the next run tries again
                return {"outcome": "error", "details": {"error": str(exc)}}
            try:
                return z.request(job, timeout_s)
            except _WorkerGone as exc:
                error = f"verifier sandbox worker failed: {exc}"
                try:
                    z = self._replace(z)
                except SandboxError as again:
                    error += f"; restarting it failed too: {again}"
                return {"outcome": "error", "details": {"error": error}}
        finally:
            if self._closed:
                z.kill()
            else:
                self._idle.put(z)

    def _replace(self, dead: _Zygote) -> _Zygote:
        dead.kill()
        if self._closed:
            raise SandboxError("verifier pool is closed")
        fresh = _Zygote(self._root, self._isolate_network, self._drop_privileges)
        fresh.await_hello()
        with self._lock:
            self._all = [fresh if z is dead else z for z in self._all]
            self.replaced += 1
        return fresh

    def _write_job_dir(self, initial_db: bytes | str | Path, final_db: bytes | str | Path) -> Path:
        job_dir = self._root / "jobs" / secrets.token_hex(16)
        job_dir.mkdir(mode=0o700)
        for name, data in (("initial.db", initial_db), ("final.db", final_db)):
            path = job_dir / name
            if isinstance(data, bytes | bytearray):
                with open(path, "wb") as fh:
                    fh.write(data)
            else:
                try:
                    os.link(data, path)
                except OSError:  # another filesystem: copy
                    shutil.copyfile(data, path)
            path.chmod(0o444)
        job_dir.chmod(0o555)
        return job_dir

    @staticmethod
    def _remove_job_dir(job_dir: Path) -> None:
        _chmod_quiet(job_dir, 0o700)
        shutil.rmtree(job_dir, ignore_errors=True)
