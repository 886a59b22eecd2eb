"""Benchmark envd against AWM-style reset (fresh server process per episode), in the same run.

    .venv/bin/python bench/runtime.py [--quick] [--sessions 1000] [--baseline-launches 5]

Measures, on the mini_library scenario imported from AWM format:
- reset / snapshot / restore / fork latency, in-process on EnvRuntime and over gRPC against `agentworld serve`
  running as a separate process (p50/p99);
- CallTool round-trip latency over gRPC at 1, 64 and 512 concurrent sessions, reads (search_books, get_book) and
  writes (update_my_profile) alike, each session one closed loop (so latency includes queueing), plus calls/s and
  the server-side time per call;
- resident memory per idle session (server VmRSS before/after creating N sessions) and verify latency;
- the baseline: copy the database file, launch `python app.py` (uvicorn, DATABASE_PATH/HOST/PORT from the
  environment) and time until its first tool call over HTTP succeeds (median of a few launches).
Prints one JSON object on stdout; tables and progress go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    EnvdProcess,
    emit,
    env_note,
    err,
    free_port,
    import_bundle,
    pct,
    progress,
    remove,
    rss_kb,
    scratch_dir,
    summarize,
)

AWM_DIR = Path(os.environ.get("AGENTWORLD_AWM_DIR", "/work/shared/awm")) / "mini_library"
ROOT = Path(__file__).resolve().parent.parent
MUTATION_TASK = "task_3"  # search, list copies, borrow: three calls, then verify


def read_op(i: int) -> tuple[str, dict[str, Any]]:
    return ("search_books", {"query": "the"}) if i % 2 == 0 else ("get_book", {"book_id": 1 + i % 8})


def write_op(i: int) -> tuple[str, dict[str, Any]]:
    return "update_my_profile", {"phone": f"555-{i % 10000:04d}"}


def solutions() -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in (AWM_DIR / "solutions.jsonl").read_text().splitlines() if line.strip()]
    return {f"task_{r['task_idx']}": r for r in rows}


def timed(fn, *args, **kwargs) -> tuple[float, Any]:  # noqa: ANN001
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return (time.perf_counter() - t0) * 1000, out


# ------------------------------------------------------------------------------------------ in-process
def bench_inprocess(bundle_dir: Path, n: int) -> dict[str, float]:
    from agentworld.bundle import load_bundle
    from agentworld.runtime import EnvRuntime, RuntimeConfig

    rt = EnvRuntime([load_bundle(bundle_dir)], RuntimeConfig())
    out: dict[str, float] = {}
    try:
        env_id = rt.envs()[0].env_id
        sid = rt.create_session(env_id).session_id
        lat: dict[str, list[float]] = {k: [] for k in ("reset", "snapshot", "restore", "fork", "read", "write")}
        with progress() as bar:
            task = bar.add_task("in-process reset/snapshot/restore/fork", total=n)
            for i in range(n):
                name, args = write_op(i)
                ms, _ = timed(rt.call_tool, sid, name, args)
                lat["write"].append(ms)
                name, args = read_op(i)
                ms, _ = timed(rt.call_tool, sid, name, args)
                lat["read"].append(ms)
                ms, snap = timed(rt.snapshot, sid)
                lat["snapshot"].append(ms)
                ms, _ = timed(rt.reset, sid)  # after a write: a dirty session goes back to the initial state
                lat["reset"].append(ms)
                ms, _ = timed(rt.restore, sid, snap.snapshot_id)
                lat["restore"].append(ms)
                ms, forks = timed(rt.fork, sid, 1)
                lat["fork"].append(ms)
                for f in forks:
                    rt.close_session(f.session_id)
                bar.advance(task)
        for key, values in lat.items():
            label = f"call_{key}" if key in ("read", "write") else key
            out.update(summarize(f"inproc_{label}", values, 4))
    finally:
        rt.close()
    return out


# ------------------------------------------------------------------------------------------------ gRPC
def bench_grpc_ops(address: str, env_id: str, n: int) -> dict[str, float]:
    from agentworld.client import EnvClient

    lat: dict[str, list[float]] = {k: [] for k in ("reset", "snapshot", "restore", "fork", "rpc_floor")}
    with EnvClient(address) as client, client.create_session(env_id) as s, progress() as bar:
        s.call_tool(*read_op(0))
        for _ in range(n):  # the cheapest RPC (GetStats): what the transport alone costs per call
            lat["rpc_floor"].append(timed(client.get_stats)[0])
        task = bar.add_task("gRPC reset/snapshot/restore/fork", total=n)
        for i in range(n):
            s.call_tool(*write_op(i))
            ms, snap = timed(s.snapshot)
            lat["snapshot"].append(ms)
            ms, _ = timed(s.reset)
            lat["reset"].append(ms)
            ms, _ = timed(s.restore, snap)
            lat["restore"].append(ms)
            ms, forks = timed(s.fork, 1)
            lat["fork"].append(ms)
            for f in forks:
                f.close()
            bar.advance(task)
    out: dict[str, float] = {}
    for key, values in lat.items():
        out.update(summarize(key, values))
    return out


async def _calltool_level(address: str, env_id: str, sessions: int, calls_each: int) -> dict[str, Any]:
    from agentworld.client import AsyncEnvClient

    async with AsyncEnvClient(address, timeout=60) as client:
        made: list = []
        for start in range(0, sessions, 64):
            made += await asyncio.gather(*(client.create_session(env_id) for _ in range(min(64, sessions - start))))
        await asyncio.gather(*(s.call_tool(*read_op(0)) for s in made))  # warm-up, not timed
        rtt: dict[str, list[float]] = {"read": [], "write": []}
        server: list[float] = []
        errors = 0

        async def loop(idx: int, s) -> None:  # noqa: ANN001
            nonlocal errors
            for k in range(calls_each):
                kind = "write" if (idx + k) % 2 else "read"
                name, args = write_op(idx * 31 + k) if kind == "write" else read_op(idx + k)
                t0 = time.perf_counter()
                result = await s.call_tool(name, args)
                rtt[kind].append((time.perf_counter() - t0) * 1000)
                server.append(result.duration_ms)
                errors += int(result.is_error)

        t0 = time.perf_counter()
        await asyncio.gather(*(loop(i, s) for i, s in enumerate(made)))
        wall = time.perf_counter() - t0
        await asyncio.gather(*(s.close() for s in made))
    both = rtt["read"] + rtt["write"]
    return {"p50": pct(both, 50), "p99": pct(both, 99), "read_p50": pct(rtt["read"], 50),
            "write_p50": pct(rtt["write"], 50), "read_p99": pct(rtt["read"], 99), "write_p99": pct(rtt["write"], 99),
            "server_p50": pct(server, 50), "server_p99": pct(server, 99), "calls": len(both),
            "calls_per_s": len(both) / wall, "errors": errors}


def bench_calltool(address: str, env_id: str, quick: bool) -> dict[str, float]:
    plan = {1: 60 if quick else 400, 64: 8 if quick else 40, 512: 2 if quick else 8}
    out: dict[str, float] = {}
    with progress() as bar:
        task = bar.add_task("CallTool at 1/64/512 sessions", total=len(plan))
        for level, calls_each in plan.items():
            r = asyncio.run(_calltool_level(address, env_id, level, calls_each))
            for key in ("p50", "p99", "read_p50", "read_p99", "write_p50", "write_p99", "server_p50", "server_p99"):
                out[f"call_{key}_ms_{level}"] = round(r[key], 3)
            out[f"calls_per_s_{level}"] = round(r["calls_per_s"], 1)
            out[f"call_errors_{level}"] = r["errors"]
            bar.advance(task)
    return out


def bench_verify(address: str, env_id: str, n: int) -> dict[str, float]:
    from agentworld.client import EnvClient

    sol = solutions()[MUTATION_TASK]
    lat: list[float] = []
    outcomes: set[str] = set()
    with EnvClient(address) as client, client.create_session(env_id, MUTATION_TASK) as s:
        for call in sol["calls"]:
            s.call_tool(call["tool"], call["arguments"])
        s.verify(MUTATION_TASK, sol.get("final_answer"))  # the verifier pool starts on first use: not timed
        for _ in range(n):
            ms, verdict = timed(s.verify, MUTATION_TASK, sol.get("final_answer"))
            lat.append(ms)
            outcomes.add(verdict.outcome)
    return {**summarize("verify", lat), "verify_outcomes": ",".join(sorted(outcomes))}


def bench_sessions(address: str, env_id: str, pid: int, n: int) -> dict[str, float]:
    """Create n idle sessions in the server; RSS delta per session; prove they are alive with a call on each."""
    from agentworld.client import EnvClient

    with EnvClient(address, timeout=60) as client:
        warm = client.create_session(env_id)
        warm.call_tool(*read_op(0))
        warm.close()
        time.sleep(0.2)
        before = rss_kb(pid)
        made = []
        create_ms: list[float] = []
        failure = ""
        with progress() as bar:
            task = bar.add_task(f"creating {n} sessions", total=n)
            for _ in range(n):
                try:
                    ms, s = timed(client.create_session, env_id)
                except Exception as exc:  # noqa: BLE001 - report how far it got
                    failure = f"{type(exc).__name__}: {exc}"
                    break
                create_ms.append(ms)
                made.append(s)
                bar.advance(task)
        time.sleep(0.2)
        after = rss_kb(pid)
        alive = 0
        for s in made[:: max(1, len(made) // 50)]:
            alive += int(not s.call_tool(*read_op(1)).is_error)
        for s in made:
            s.close()
    out: dict[str, Any] = {"sessions_max": len(made), "rss_before_kb": before, "rss_after_kb": after,
                           "rss_per_session_kb": round((after - before) / max(1, len(made)), 2),
                           **summarize("create_session", create_ms), "sessions_sampled_alive": alive}
    if failure:
        out["sessions_failure"] = failure
    return out


# -------------------------------------------------------------------------------------------- baseline
def build_db(bundle_dir: Path, path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys=ON")
    conn.executescript((bundle_dir / "schema.sql").read_text())
    conn.executescript((bundle_dir / "seed.sql").read_text())
    conn.commit()
    conn.close()


def bench_baseline(bundle_dir: Path, work: Path, launches: int) -> dict[str, Any]:
    """AWM-style reset: copy the DB file, start a fresh server process, wait for the first successful tool call."""
    import httpx

    template = work / "template.db"
    build_db(bundle_dir, template)
    times: list[float] = []
    rss: list[int] = []
    calls: dict[str, float] = {}
    with progress() as bar:
        task = bar.add_task("baseline: fresh server per reset", total=launches)
        for i in range(launches):
            port = free_port()
            db = work / f"episode-{i}.db"
            env = {**os.environ, "DATABASE_PATH": f"sqlite:///{db}", "HOST": "127.0.0.1", "PORT": str(port)}
            t0 = time.perf_counter()
            shutil.copyfile(template, db)
            proc = subprocess.Popen([sys.executable, str(bundle_dir / "app.py")], env=env, cwd=work,  # noqa: S603
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + 120
                with httpx.Client(timeout=2.0) as http:
                    while True:
                        if proc.poll() is not None:
                            raise RuntimeError(f"baseline server exited with {proc.returncode}")
                        if time.monotonic() > deadline:
                            raise RuntimeError("baseline server never answered")
                        try:
                            if http.get(f"http://127.0.0.1:{port}/api/branches").status_code == 200:
                                break
                        except httpx.TransportError:
                            pass
                        time.sleep(0.005)
                times.append((time.perf_counter() - t0) * 1000)
                rss.append(rss_kb(proc.pid))
                if i == 0:  # the same tool calls over HTTP to the long-lived server, for scale
                    calls = _baseline_calls(port, 50 if launches <= 3 else 200)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                db.unlink(missing_ok=True)
            bar.advance(task)
    return {"baseline_reset_ms": round(statistics.median(times), 1), "baseline_reset_all_ms": [round(t, 1) for t in times],
            "baseline_rss_per_instance_kb": int(statistics.median(rss)), **calls}


def _baseline_calls(port: int, n: int) -> dict[str, float]:
    """Sequential HTTP tool calls (same reads/writes as the gRPC bench) on one keep-alive connection."""
    import httpx

    base = f"http://127.0.0.1:{port}"
    lat: dict[str, list[float]] = {"read": [], "write": []}
    with httpx.Client(base_url=base, timeout=10.0) as http:
        for i in range(n):
            t0 = time.perf_counter()
            if i % 4 == 0:
                http.get("/api/books", params={"query": "the"}).raise_for_status()
            elif i % 4 == 1:
                http.get(f"/api/books/{1 + i % 8}").raise_for_status()
            else:
                http.patch("/api/members/me", json=write_op(i)[1]).raise_for_status()
            lat["read" if i % 4 < 2 else "write"].append((time.perf_counter() - t0) * 1000)
    return {**summarize("baseline_call_read", lat["read"]), **summarize("baseline_call_write", lat["write"])}


# ------------------------------------------------------------------------------------------------ main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short run (fewer iterations, 200 sessions, 3 launches)")
    ap.add_argument("--sessions", type=int, default=None, help="idle sessions to create (default 1000; quick 200)")
    ap.add_argument("--ops", type=int, default=None, help="iterations of reset/snapshot/restore/fork (default 500)")
    ap.add_argument("--baseline-launches", type=int, default=None, help="fresh-server launches (default 5; quick 3)")
    ap.add_argument("--envd-workers", type=int, default=None, help="pass --workers N to `agentworld serve`")
    args = ap.parse_args()
    n_ops = args.ops or (100 if args.quick else 500)
    n_sessions = args.sessions or (200 if args.quick else 1000)
    launches = args.baseline_launches or (3 if args.quick else 5)

    work = scratch_dir("agentworld-bench-")
    result: dict[str, Any] = {"bench": "runtime", "quick": args.quick, **env_note()}
    try:
        bundle_dir = import_bundle(AWM_DIR, work / "bundles")
        env_id = json.loads((bundle_dir / "env.json").read_text())["id"]
        result["env_id"] = env_id
        err.print(f"[bold]bundle[/] {bundle_dir}  env {env_id}")

        result.update(bench_inprocess(bundle_dir, n_ops))
        extra = ["--workers", str(args.envd_workers)] if args.envd_workers else []
        result["envd_workers"] = args.envd_workers or "default"
        with EnvdProcess([bundle_dir], extra_args=extra) as envd:
            result["envd_startup_ms"] = round(envd.startup_ms, 1)
            result.update(bench_sessions(envd.address, env_id, envd.pid, n_sessions))
            result.update(bench_grpc_ops(envd.address, env_id, n_ops))
            result.update(bench_calltool(envd.address, env_id, args.quick))
            result.update(bench_verify(envd.address, env_id, 5 if args.quick else 20))
            result["envd_rss_kb"] = rss_kb(envd.pid)
        result.update(bench_baseline(bundle_dir, work, launches))
        result["reset_ratio"] = round(result["baseline_reset_ms"] / result["reset_p50_ms"], 1)
        result["reset_ratio_inproc"] = round(result["baseline_reset_ms"] / result["inproc_reset_p50_ms"], 1)
        result["memory_ratio"] = round(result["baseline_rss_per_instance_kb"] / max(0.01, result["rss_per_session_kb"]),
                                       1)
    finally:
        remove(work)

    targets = {
        "reset_p50_ms": ("<= 1", result["reset_p50_ms"], result["reset_p50_ms"] <= 1.0),
        "call_p50_ms_64": ("<= 1", result["call_p50_ms_64"], result["call_p50_ms_64"] <= 1.0),
        "call_write_p50_ms_64": ("<= 1", result["call_write_p50_ms_64"], result["call_write_p50_ms_64"] <= 1.0),
        "sessions_max": (">= 1000", result["sessions_max"], result["sessions_max"] >= 1000),
        "reset_ratio": (">= 500", result["reset_ratio"], result["reset_ratio"] >= 500),
    }
    result["targets_met"] = {k: v[2] for k, v in targets.items()}
    emit(result, "envd runtime vs AWM-style fresh-process reset", targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
