"""Verifier sandbox zygote: a long-lived process that forks one short-lived, locked-down child per verification.

Started by `agentworld.runtime.sandbox.VerifierPool` as `python -I -S sandbox_worker.py SCRATCH` (by path, stdlib
only, so the untrusted code never shares an interpreter with envd and never sees site-packages). The kernel-level
layers come from jail.py (loaded by path), the same ones environment code runs under; outermost first:

1. the launcher (the process the pool started) enters new network, PID, mount and IPC namespaces and forks the
   zygote, PID 1 there: it cannot see, signal or reach any process outside, and no network exists;
2. the zygote: a minimal root (read-only: the standard library, /usr, the pool's scratch directory; nothing else of
   the host), an unprivileged uid with no groups, no_new_privs, Landlock (read only beneath those paths, write
   nowhere, no TCP, no signals out), seccomp (no exec, sockets, ptrace, mounts; no file opened for writing,
   nothing created or removed);
3. per job, a fresh forked child: Landlock narrowed to its own job directory, seccomp without process creation or
   signals, rlimits on CPU, address space, file size (0), open files and core dumps, stdio swapped for buffers;
4. Python-level checks for clear messages: an audit hook denying sockets, processes, ctypes and writes, and
   `sqlite3.connect` opening only `mode=ro&immutable=1` URIs with ATTACH refused. Nothing depends on them.

Protocol on stdin/stdout: frames of a 4-byte big-endian length and UTF-8 JSON. The zygote first sends
`{"hello": true, "pid": ..., "layers": [...], "missing": {...}}`; then for each job `{"source", "function",
"initial_db_path", "final_db_path", "final_answer", "job_dir", "limits": {...}}` it answers
`{"outcome", "details", "duration_ms"}`. EOF on stdin ends the zygote (and any running child).
"""

from __future__ import annotations

# Pre-imported before the privilege drop: after it the standard library may be unreadable (e.g. under /root),
# so what is imported here is what verifiers get. Keep the list generous but stdlib-only.
import _strptime  # noqa: F401  (datetime.strptime imports it lazily)
import calendar  # noqa: F401
import collections  # noqa: F401
import dataclasses  # noqa: F401
import datetime  # noqa: F401
import decimal  # noqa: F401
import difflib  # noqa: F401
import encodings.ascii  # noqa: F401
import encodings.latin_1  # noqa: F401
import encodings.utf_8  # noqa: F401
import enum  # noqa: F401
import fractions  # noqa: F401
import functools  # noqa: F401
import hashlib
import inspect
import io
import itertools  # noqa: F401
import json
import linecache
import math  # noqa: F401
import operator  # noqa: F401
import os
import random  # noqa: F401
import re  # noqa: F401
import resource
import select
import signal
import sqlite3
import statistics  # noqa: F401
import string  # noqa: F401
import struct
import sys
import sysconfig
import textwrap  # noqa: F401
import time
import traceback
import typing  # noqa: F401
import unicodedata  # noqa: F401
import urllib.parse
import zoneinfo  # noqa: F401

OUTCOMES = ("complete", "partially_complete", "others")
MAX_RESULT_BYTES = 1 << 20
MAX_CAPTURED_OUTPUT = 4000
JAIL_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jail.py")
_DEVNULL: list[int] = []  # /dev/null, opened once by the zygote
VERIFIER_FILENAME = "<verifiers.py>"
DENIED_IMPORTS = {m: "network access" for m in ("socket", "_socket", "ssl", "_ssl", "http", "urllib3", "requests",
                                                   "httpx", "asyncio", "selectors", "ftplib", "smtplib", "socketserver",
                                                   "xmlrpc", "telnetlib", "poplib", "imaplib", "nntplib")}
DENIED_IMPORTS.update({m: "starting processes" for m in ("subprocess", "_posixsubprocess", "multiprocessing",
                                                         "concurrent", "pty")})
DENIED_IMPORTS.update({"ctypes": "ctypes", "_ctypes": "ctypes", "mmap": "mmap", "resource": "changing resource limits"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


# ----------------------------------------------------------------------------------------------- framing
def read_frame(fd: int) -> dict | None:
    """Read one length-prefixed JSON frame; None on EOF."""
    header = _read_exact(fd, 4)
    if header is None:
        return None
    (length,) = struct.unpack(">I", header)
    body = _read_exact(fd, length)
    if body is None:
        return None
    return json.loads(body.decode("utf-8"))


def write_frame(fd: int, obj: dict) -> None:
    body = json.dumps(obj, default=str).encode("utf-8")
    data = struct.pack(">I", len(body)) + body
    while data:
        n = os.write(fd, data)
        data = data[n:]


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks: list[bytes] = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


# ------------------------------------------------------------------------------------- zygote set-up
def _load_jail():  # noqa: ANN202 - the module
    """jail.py, by path (this interpreter runs without site-packages, so agentworld is not importable)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("agentworld_jail", JAIL_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _stdlib_paths() -> list[str]:
    paths = sysconfig.get_paths()
    found = {os.path.realpath(p) for p in (paths["stdlib"], paths["platstdlib"]) if p}
    return sorted(p for p in found if not any(p != q and p.startswith(q + os.sep) for q in found))


def confine_zygote(jail, layers, scratch: str, want_drop: bool) -> None:  # noqa: ANN001
    """In the zygote (PID 1 of its namespaces when it has them): the layers every job inherits. `scratch` holds
    `jobs/` (the job directories, bound read-only) and `root/` (the empty mount point of the minimal root)."""
    read = _stdlib_paths() + [os.path.join(scratch, "jobs")]
    if "pidns" in layers.applied:
        jail.pivot_to_minimal_root(os.path.join(scratch, "root"),
                                   jail.system_binds() + [jail.Bind(p) for p in read], layers)
    if want_drop:
        jail.drop_privileges(layers, needs=read)
    jail.set_dumpable(False)  # no ptrace of the zygote or its children by the same uid
    jail.no_new_privs(layers)
    jail.landlock(read + jail.READ_SYSTEM_PATHS, [], layers)
    jail.install_seccomp(jail.SeccompPolicy(read_only=True), layers)


def confine_child(job_dir: str) -> None:
    """In a job's child: only its own directory (and the standard library) stays readable; no processes, no
    signals."""
    jail = sys.modules["agentworld_jail"]
    layers = jail.Layers()
    jail.landlock(_stdlib_paths() + [job_dir] + jail.READ_SYSTEM_PATHS, [], layers)
    jail.install_seccomp(jail.SeccompPolicy(base=False, no_processes=True, no_signals=True), layers)
    for name in [m for m in sys.modules if m in ("agentworld_jail", "ctypes") or m.startswith(("ctypes.", "_ctypes"))]:
        del sys.modules[name]  # cosmetic: the kernel layers above hold with or without them


# --------------------------------------------------------------------------------------- child layers
def _read_roots(job_dir: str) -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {job_dir, paths["stdlib"], paths["platstdlib"], sys.base_prefix, "/usr/share/zoneinfo", "/dev/null"}
    return tuple(os.path.realpath(r) for r in roots if r)


def install_audit_hook(job_dir: str) -> None:
    """Deny, with a message naming the layer, everything a verifier has no business doing."""
    roots = _read_roots(job_dir)
    denied_prefixes = ("socket.", "subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty",
                       "os.kill", "os.killpg", "pty.", "ctypes.", "sqlite3.enable_load_extension",
                       "sqlite3.load_extension", "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod",
                       "os.chown", "os.link", "os.symlink", "os.truncate", "os.utime", "shutil.", "os.system",
                       "os.startfile", "os.setxattr", "os.removexattr", "mmap.", "resource.setrlimit",
                       "resource.prlimit", "sys.remote_exec", "webbrowser.", "urllib.Request", "ftplib.",
                       "http.client.", "smtplib.", "imaplib.", "poplib.", "nntplib.", "telnetlib.")
    what = {"socket": "network access", "subprocess": "starting processes", "os.exec": "starting processes",
            "os.spawn": "starting processes", "os.posix_spawn": "starting processes", "os.fork": "starting processes",
            "os.system": "starting processes", "ctypes": "ctypes", "sqlite3": "loading SQLite extensions",
            "resource": "changing resource limits"}

    def allowed_path(path: object) -> bool:
        if isinstance(path, int):
            return False
        try:
            real = os.path.realpath(os.fsdecode(path))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
        return any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots)

    def hook(event: str, args: tuple) -> None:
        if event == "import" and args:
            top = str(args[0]).split(".")[0]
            if top in DENIED_IMPORTS:
                raise PermissionError(f"sandbox: {DENIED_IMPORTS[top]} is not allowed in a verifier (import {args[0]})")
            return
        if event == "open":
            path, mode, flags = (list(args) + [None, None, None])[:3]
            writing = (isinstance(flags, int) and flags & _WRITE_FLAGS) or (
                isinstance(mode, str) and any(c in mode for c in "wax+"))
            if writing:
                raise PermissionError(f"sandbox: verifiers may not write files (open {path!r} mode {mode!r})")
            if not allowed_path(path):
                raise PermissionError(f"sandbox: verifiers may only read the two databases (open {path!r})")
            return
        if event == "sqlite3.connect" and args:
            db = os.fsdecode(args[0]) if isinstance(args[0], str | bytes | os.PathLike) else str(args[0])
            if db in ("", ":memory:"):
                return
            parts = urllib.parse.urlsplit(db) if db.startswith("file:") else None
            if parts is None or "mode=ro" not in parts.query or not allowed_path(urllib.parse.unquote(parts.path)):
                raise PermissionError(f"sandbox: SQLite databases open read-only, through sqlite3.connect ({db!r})")
            return
        if event in ("os.listdir", "os.scandir") and args and not allowed_path(args[0] if args[0] else "."):
            raise PermissionError(f"sandbox: listing {args[0]!r} is not allowed")
        if event.startswith(denied_prefixes):
            label = next((v for k, v in what.items() if event.startswith(k)), "this operation")
            raise PermissionError(f"sandbox: {label} is not allowed in a verifier ({event})")

    sys.addaudithook(hook)


class _Unavailable:
    """Last meta-path finder: a module the sandbox cannot load gets a message that says what is available."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> None:
        raise ModuleNotFoundError(
            f"sandbox: module {name!r} is not available to verifiers; use the standard library modules "
            "sqlite3, json, re, math, datetime, collections, itertools, functools, statistics, decimal", name=name)


def readonly_sqlite(job_dir: str) -> None:
    """Make `sqlite3.connect` open every file read-only and immutable, and refuse ATTACH."""
    real_connect = sqlite3.connect

    def deny_attach(action: int, *_: object) -> int:
        return sqlite3.SQLITE_DENY if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH) else sqlite3.SQLITE_OK

    def connect(database, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003 - same signature as sqlite3.connect
        db = os.fsdecode(database)
        uri = kwargs.pop("uri", False)
        if db == ":memory:" or db == "":
            conn = real_connect(db, *args, **kwargs)
        else:
            path = urllib.parse.urlsplit(db).path if (uri and db.startswith("file:")) else db
            if not os.path.realpath(path).startswith(os.path.realpath(job_dir) + "/"):
                raise sqlite3.OperationalError(f"sandbox: verifiers may only open the two databases, not {path!r}")
            conn = real_connect(f"file:{urllib.parse.quote(path)}?mode=ro&immutable=1", *args, uri=True, **kwargs)
        conn.set_authorizer(deny_attach)
        return conn

    sqlite3.connect = connect  # type: ignore[assignment]


def apply_rlimits(limits: dict) -> None:
    cpu = max(1, int(limits.get("cpu_seconds", 20)))
    mem = int(limits.get("memory_mb", 512)) << 20
    nofile = int(limits.get("max_open_files", 32))

    def setl(res: int, soft: int, hard: int | None = None) -> None:
        try:
            resource.setrlimit(res, (soft, soft if hard is None else hard))
        except (ValueError, OSError):
            pass

    setl(resource.RLIMIT_CPU, cpu, cpu + 1)  # SIGXCPU at the soft limit, SIGKILL one second later
    setl(resource.RLIMIT_AS, mem)
    setl(resource.RLIMIT_FSIZE, 0)  # with SIGXFSZ ignored, a write fails with EFBIG instead of killing
    setl(resource.RLIMIT_NOFILE, nofile)
    setl(resource.RLIMIT_CORE, 0)
    if os.geteuid() != 0:  # not enforced for root anyway
        setl(resource.RLIMIT_NPROC, 0)


# ---------------------------------------------------------------------------------------------- child
def run_child(job: dict, code, result_fd: int) -> None:  # noqa: ANN001 - code object
    """In the forked child: lock down, run the verifier, write one JSON result to result_fd, _exit."""
    status = 0
    out = io.StringIO()
    try:
        for fd in (0, 1, 2):
            os.dup2(_DEVNULL[0], fd)  # opened before seccomp, which refuses opening anything for writing
        os.closerange(3, result_fd)
        os.closerange(result_fd + 1, 1 << 16)
        sys.stdin = io.StringIO()
        sys.stdout = sys.stderr = out
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.chdir(job["job_dir"])
        confine_child(job["job_dir"])
        apply_rlimits(job.get("limits", {}))
        readonly_sqlite(job["job_dir"])
        sys.meta_path.append(_Unavailable)
        install_audit_hook(job["job_dir"])
        result = _call_verifier(job, code)
    except BaseException as exc:  # noqa: BLE001 - anything the untrusted code raises is a verdict
        result = _error_from_exception(exc)
        status = 1
    captured = out.getvalue()
    if result["outcome"] == "error" and captured:
        result["details"]["output"] = captured[-MAX_CAPTURED_OUTPUT:]
    try:
        body = json.dumps(result, default=str).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        body = json.dumps({"outcome": "error", "details": {"error": f"verifier result is not JSON: {exc}"}}).encode()
    if len(body) > MAX_RESULT_BYTES:
        body = json.dumps({"outcome": "error", "details": {
            "error": f"verifier result is {len(body)} bytes; the limit is {MAX_RESULT_BYTES}"}}).encode()
    try:
        while body:
            body = body[os.write(result_fd, body):]
    finally:
        os._exit(status)


def _call_verifier(job: dict, code) -> dict:  # noqa: ANN001
    namespace: dict = {"__name__": "verifiers", "__builtins__": __builtins__}
    exec(code, namespace)  # noqa: S102 - the point of the sandbox
    name = job["function"]
    fn = namespace.get(name)
    if not callable(fn):
        available = sorted(k for k, v in namespace.items() if callable(v) and not k.startswith("_")
                           and getattr(v, "__module__", None) == "verifiers")
        return {"outcome": "error", "details": {
            "error": f"verifier function {name!r} not found; verifiers.py defines: {', '.join(available) or 'nothing'}"}}
    args = [job["initial_db_path"], job["final_db_path"]]
    try:
        params = inspect.signature(fn).parameters.values()
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        takes_answer = len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params)
    except (TypeError, ValueError):
        takes_answer = True
    if takes_answer:
        args.append(job.get("final_answer"))
    value = fn(*args)
    if not isinstance(value, dict) or "result" not in value:
        return {"outcome": "error", "details": {
            "error": f"verifier {name} returned {type(value).__name__} {str(value)[:200]!r}; "
                     "expected a dict with a 'result' key"}}
    outcome = value.get("result")
    if outcome not in OUTCOMES:
        return {"outcome": "error", "details": {
            "error": f"verifier {name} returned result={outcome!r}; expected one of {', '.join(OUTCOMES)}",
            "returned": value}}
    return {"outcome": outcome, "details": value}


def _error_from_exception(exc: BaseException) -> dict:
    if isinstance(exc, MemoryError):
        msg = "verifier exceeded its memory limit (MemoryError)"
    elif isinstance(exc, RecursionError):
        msg = "verifier recursed too deeply (RecursionError)"
    else:
        msg = f"verifier raised {type(exc).__name__}: {exc}"
    try:
        tb = "".join(traceback.format_exception(exc)[-6:])
    except BaseException:  # noqa: BLE001
        tb = ""
    return {"outcome": "error", "details": {"error": msg, "traceback": tb[-MAX_CAPTURED_OUTPUT:]}}


# --------------------------------------------------------------------------------------------- zygote
class Zygote:
    """Reads jobs, forks a child per job, enforces the wall-clock timeout, reports results."""

    def __init__(self, proto_in: int, proto_out: int) -> None:
        self.proto_in = proto_in
        self.proto_out = proto_out
        self.code_cache: collections.OrderedDict[str, object] = collections.OrderedDict()

    def compile(self, source: str):  # noqa: ANN201 - code object; compiling runs nothing
        key = hashlib.sha256(source.encode("utf-8")).hexdigest()
        code = self.code_cache.get(key)
        if code is None:
            code = compile(source, VERIFIER_FILENAME, "exec")
            self.code_cache[key] = code
            if len(self.code_cache) > 64:
                self.code_cache.popitem(last=False)
        else:
            self.code_cache.move_to_end(key)
        linecache.cache[VERIFIER_FILENAME] = (len(source), None, source.splitlines(True), VERIFIER_FILENAME)
        return code

    def handle(self, job: dict) -> dict | None:
        """Run one job; None means the pool went away while it ran."""
        start = time.perf_counter()
        try:
            code = self.compile(job["source"])
        except (SyntaxError, ValueError) as exc:
            return {"outcome": "error", "details": {"error": f"verifiers.py does not compile: {exc}"}}
        timeout = float(job.get("limits", {}).get("wall_timeout_s", 30.0))
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            os.close(r)
            run_child(job, code, w)
        os.close(w)
        chunks: list[bytes] = []
        size = 0
        deadline = start + timeout
        timed_out = gone = False
        try:
            while True:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    timed_out = True
                    break
                ready, _, _ = select.select([r, self.proto_in], [], [], remaining)
                if self.proto_in in ready and _stdin_closed(self.proto_in):
                    gone = True
                    break
                if r in ready:
                    chunk = os.read(r, 65536)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > MAX_RESULT_BYTES + 4096:
                        break
                    chunks.append(chunk)
        finally:
            os.close(r)
            if timed_out or gone:
                _kill(pid)
            _, wstatus = os.waitpid(pid, 0)
        if gone:
            return None
        ms = (time.perf_counter() - start) * 1000
        if timed_out:
            return {"outcome": "error", "duration_ms": ms, "details": {
                "error": f"verifier exceeded the wall-clock limit of {timeout:g} s and was killed"}}
        if os.WIFSIGNALED(wstatus):
            sig = os.WTERMSIG(wstatus)
            reason = {signal.SIGXCPU: f"exceeded its CPU limit of {job.get('limits', {}).get('cpu_seconds')} s",
                      signal.SIGKILL: "was killed (SIGKILL: CPU or memory limit)",
                      signal.SIGSEGV: "crashed (SIGSEGV)"}.get(sig, f"was killed by {signal.Signals(sig).name}")
            return {"outcome": "error", "duration_ms": ms, "details": {"error": f"verifier {reason}"}}
        try:
            result = json.loads(b"".join(chunks).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            result = {"outcome": "error", "details": {
                "error": f"verifier process exited with status {os.waitstatus_to_exitcode(wstatus)} without a result"}}
        result["duration_ms"] = ms
        return result

    def serve(self) -> None:
        while True:
            job = read_frame(self.proto_in)
            if job is None:
                return
            if job.get("ping"):
                write_frame(self.proto_out, {"pong": True})
                continue
            try:
                result = self.handle(job)
            except Exception as exc:  # noqa: BLE001 - the zygote itself must survive bad jobs
                result = {"outcome": "error", "details": {"error": f"sandbox zygote failed: {type(exc).__name__}: {exc}"}}
            if result is None:
                return
            write_frame(self.proto_out, result)


def _stdin_closed(fd: int) -> bool:
    """The pool never writes while a job runs, so readable stdin means EOF (the pool is gone)."""
    return True


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> None:
    """The launcher: new namespaces (where allowed), then fork the zygote and wait for it."""
    argv = sys.argv[1:] if argv is None else argv
    scratch = next(a for a in argv if not a.startswith("--"))
    want_ns = "--no-netns" not in argv
    want_drop = "--no-drop" not in argv
    jail = _load_jail()
    layers = jail.Layers()
    if want_ns:
        jail.enter_namespaces(layers)
    launcher = os.getpid()
    pid = os.fork()
    if pid:
        os.close(0)
        os.close(1)
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    jail.die_with_parent(launcher)
    # Move the protocol off fds 0/1 so stray prints can never corrupt it.
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    _DEVNULL.append(devnull)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    sys.stdout = sys.stderr
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        confine_zygote(jail, layers, scratch, want_drop)
    except OSError as exc:
        write_frame(proto_out, {"hello": False, "error": f"sandbox set-up failed: {exc}"})
        os._exit(1)
    for name in ("fresh_child", "rlimits", "audit_hook", "readonly_sqlite"):
        layers.add(name)
    write_frame(proto_out, {"hello": True, "pid": os.getpid(), "uid": os.getuid(), **layers.as_dict(),
                            "layers": layers.applied})
    Zygote(proto_in, proto_out).serve()


if __name__ == "__main__":
    main()
