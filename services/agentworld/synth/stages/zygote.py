"""The sandbox's zygote: `python -m agentworld.synth.stages.zygote`, started by sandbox.py with a scrubbed
environment (no API keys). It preloads FastAPI, SQLAlchemy and the validator once, then for each request (one JSON
line on stdin) forks a child in its own session with CPU/memory rlimits and stdio on /dev/null, runs the job, enforces
the wall-clock timeout (killing the child's process group) and answers with one JSON line on stdout:
{"status": "ok"|"error"|"timeout"|"crash", "payload": ...}.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import sys
import time
import traceback

import fastapi  # noqa: F401 - preloaded so every forked job starts warm
import sqlalchemy  # noqa: F401

import agentworld.validate  # noqa: F401
from agentworld.synth.stages.child_jobs import JOBS


def _child(job: str, args: list, cpu_s: int, memory_mb: int, w: int) -> None:
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # generated code's prints must not reach the protocol pipe
        os.dup2(devnull, fd)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    try:
        out = {"status": "ok", "payload": JOBS[job](*args)}
    except BaseException:  # noqa: BLE001 - SystemExit from generated code included
        out = {"status": "error", "payload": traceback.format_exc(limit=-12)}
    data = json.dumps(out, default=str).encode()
    with os.fdopen(w, "wb") as fh:
        fh.write(data)
    os._exit(0)


def _serve(req: dict) -> dict:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            _child(req["job"], req["args"], int(req["cpu_s"]), int(req["memory_mb"]), w)
        finally:
            os._exit(70)
    os.close(w)
    deadline = time.monotonic() + float(req["timeout_s"])
    chunks: list[bytes] = []
    timed_out = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([r], [], [], left)
        if not ready:
            continue
        chunk = os.read(r, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    if timed_out:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _, status = os.waitpid(pid, 0)
    try:
        os.killpg(pid, signal.SIGKILL)  # anything the job left behind in its session
    except ProcessLookupError:
        pass
    if timed_out:
        return {"status": "timeout", "payload": f"timed out after {req['timeout_s']}s (killed)"}
    if not chunks:
        how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit code {os.waitstatus_to_exitcode(status)}"
        return {"status": "crash", "payload": f"the job process died ({how}; CPU or memory limit?)"}
    return json.loads(b"".join(chunks))


def main() -> None:
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = _serve(json.loads(line))
        except Exception:  # noqa: BLE001 - the zygote must survive a bad request
            reply = {"status": "error", "payload": traceback.format_exc(limit=-5)}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
