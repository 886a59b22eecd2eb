"""Benchmark envd against AWM-style reset (fresh server process per episode), and against itself, in the same run.

    .venv/bin/python bench/runtime.py [--quick] [--sessions 1000] [--baseline-launches 5]

Measures, on the mini_library scenario imported from AWM format (plus a hostile environment for runaway calls):
- reset / snapshot / restore / fork latency through EnvRuntime's blocking API and over gRPC against
  `agentworld serve` in its own process (p50/p99);
- the app's own cost of a call, in this process, with nothing of envd around it (the baseline for CallTool's
  overhead), and CallTool over gRPC at 1, 64 and 512 concurrent sessions with 1 worker and with 2 (calls/s, round
  trip p50/p99, server-side time p50/p99): each session one closed loop, so the round trip includes queueing;
- a victim session's p99 alone and while 4 other sessions run runaway calls (same environment, and another);
- worker respawn: how much longer the first call after a worker's crash takes than a normal one (1 worker);
- memory per idle session, per used session and per snapshot: envd's RSS, the sandbox processes' unique memory and
  the state directory's bytes, before and after;
- the baseline: copy the database file, launch `python app.py` (uvicorn) and time until its first tool call over
  HTTP succeeds (median of a few launches).
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
import threading
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # tests.runtime.hostile_env: the runaway routes

from _common import (  # noqa: E402
    ServerProcess,
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
MUTATION_TASK = "task_3"  # search, list copies, borrow: three calls, then verify
HOSTILE = "hostile"


def read_op(i: int) -> tuple[str, dict[str, Any]]:
    return ("search_books", {"query": "the"}) if i % 2 == 0 else ("get_book", {"book_id": 1 + i % 8})


def write_op(i: int) -> tuple[str, dict[str, Any]]:
    return "update_my_profile", {"phone": f"555-{i % 10000:04d}"}


def call_op(i: int) -> tuple[str, dict[str, Any]]:
    """The CallTool mix: half reads, half writes."""
    return write_op(i) if i % 2 else read_op(i // 2)


def solutions() -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in (AWM_DIR / "solutions.jsonl").read_text().splitlines() if line.strip()]
    return {f"task_{r['task_idx']}": r for r in rows}


def timed(fn, *args, **kwargs) -> tuple[float, Any]:  # noqa: ANN001
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return (time.perf_counter() - t0) * 1000, out


# ----------------------------------------------------------------------------------------- in this process
def bench_blocking_api(bundle_dir: Path, n: int) -> dict[str, float]:
    """EnvRuntime's blocking API (no gRPC): the runtime core and its workers alone."""
    from agentworld.bundle import load_bundle
    from agentworld.runtime import EnvRuntime, RuntimeConfig

    rt = EnvRuntime([load_bundle(bundle_dir)], RuntimeConfig())
    out: dict[str, float] = {}
    try:
        env_id = rt.envs()[0].env_id
        sid = rt.create_session(env_id).session_id
        rt.call_tool(sid, *read_op(0))
        lat: dict[str, list[float]] = {k: [] for k in ("reset", "snapshot", "restore", "fork", "read", "write")}
        with progress() as bar:
            task = bar.add_task("runtime API reset/snapshot/restore/fork", total=n)
            for i in range(n):
                lat["write"].append(timed(rt.call_tool, sid, *write_op(i))[0])
                lat["read"].append(timed(rt.call_tool, sid, *read_op(i))[0])
                ms, snap = timed(rt.snapshot, sid)
                lat["snapshot"].append(ms)
                lat["reset"].append(timed(rt.reset, sid)[0])
                lat["restore"].append(timed(rt.restore, sid, snap.snapshot_id)[0])
                ms, forks = timed(rt.fork, sid, 1)
                lat["fork"].append(ms)
                for f in forks:
                    rt.close_session(f.session_id)
                bar.advance(task)
        for key, values in lat.items():
            out.update(summarize(f"inproc_{'call_' + key if key in ('read', 'write') else key}", values, 4))
    finally:
        rt.close()
    return out


def bench_app_alone(bundle_dir: Path, work: Path, n: int) -> dict[str, float]:
    """The app's own cost of each call of the mix: imported here, called through ASGI on a database file, with
    the transaction a worker wraps around it; nothing of envd (no sandbox, no gRPC, no scheduling)."""
    from agentworld.bundle import load_bundle
    from agentworld.runtime.envcode.app_loader import import_app, using_connection
    from agentworld.runtime.envcode.asgi import asgi_request, install_exact_path_params
    from agentworld.runtime.envcode.connection import build_template, open_session_db
    from agentworld.runtime.tools import ToolSpec, extract_tools

    bundle = load_bundle(bundle_dir)
    install_exact_path_params()
    template = build_template(bundle.schema_sql, bundle.seed_sql, foreign_keys=True)
    _, app = import_app("bench_" + bundle.env_id, bundle.app_py, "app.py", template)
    tools: dict[str, ToolSpec] = {t.name: t for t in extract_tools(app.openapi())}
    db = work / "alone.db"
    db.write_bytes(template.serialize())
    conn = open_session_db(str(db), foreign_keys=True)
    loop = asyncio.new_event_loop()
    lat: list[float] = []
    for i in range(n + 20):
        name, args = call_op(i)
        req = tools[name].build_request(args)
        t0 = time.perf_counter()
        conn.begin_call()
        with using_connection(conn):
            status, _ = loop.run_until_complete(asgi_request(app, req.method, req.path_template, req.path_params,
                                                             req.query_string, req.body))
        conn.commit_call()
        if i >= 20:  # after warm-up, as a warm worker is
            lat.append((time.perf_counter() - t0) * 1000)
        assert 200 <= status < 300, (name, status)
    loop.close()
    return summarize("app_alone_call", lat, 4)


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
            lat["reset"].append(timed(s.reset)[0])
            lat["restore"].append(timed(s.restore, snap)[0])
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

    async with AsyncEnvClient(address, timeout=120) as client:
        made: list = []
        for start in range(0, sessions, 64):
            made += await asyncio.gather(*(client.create_session(env_id) for _ in range(min(64, sessions - start))))
        for _ in range(3):  # warm-up, not timed: every session's own database file exists, workers are warm
            await asyncio.gather(*(s.call_tool(*read_op(0)) for s in made))
        rtt: list[float] = []
        server: list[float] = []
        outside: list[float] = []  # per call: the round trip less the worker's own time (all envd and gRPC add)
        errors = 0

        async def loop(idx: int, s) -> None:  # noqa: ANN001
            nonlocal errors
            for k in range(calls_each):
                name, args = call_op(idx * 31 + k)
                t0 = time.perf_counter()
                result = await s.call_tool(name, args)
                rtt.append((time.perf_counter() - t0) * 1000)
                server.append(result.duration_ms)
                outside.append(rtt[-1] - result.duration_ms)
                errors += int(result.is_error)

        t0 = time.perf_counter()
        await asyncio.gather(*(loop(i, s) for i, s in enumerate(made)))
        wall = time.perf_counter() - t0
        await asyncio.gather(*(s.close() for s in made))
    return {"p50": pct(rtt, 50), "p99": pct(rtt, 99), "server_p50": pct(server, 50), "server_p99": pct(server, 99),
            "outside_p50": pct(outside, 50), "calls_per_s": len(rtt) / wall, "errors": errors}


def bench_calltool(addresses: dict[int, str], env_id: str, quick: bool, rounds: int = 3) -> dict[str, float]:
    """CallTool at 1, 64 and 512 sessions on envds with different worker counts (`addresses`: workers -> envd),
    in alternating rounds, so that the machine's drift in speed (large on these VMs) falls on every count alike;
    each figure is the median over the rounds."""
    plan = {1: 100 if quick else 300, 64: 4 if quick else 12, 512: 1 if quick else 3}
    samples: dict[str, list[float]] = {}
    with progress() as bar:
        task = bar.add_task("CallTool at 1/64/512 sessions, by workers", total=rounds * len(plan) * len(addresses))
        for _ in range(rounds):
            for level, calls_each in plan.items():
                for workers, address in addresses.items():
                    r = asyncio.run(_calltool_level(address, env_id, level, calls_each))
                    for key in ("p50", "p99", "server_p50", "server_p99", "outside_p50"):
                        samples.setdefault(f"call_{key}_ms_{level}_w{workers}", []).append(r[key])
                    samples.setdefault(f"calls_per_s_{level}_w{workers}", []).append(r["calls_per_s"])
                    samples.setdefault(f"call_errors_{level}_w{workers}", []).append(r["errors"])
                    bar.advance(task)
    out: dict[str, float] = {k: round(statistics.median(v), 3) for k, v in samples.items() if "errors" not in k}
    out.update({k: int(sum(v)) for k, v in samples.items() if "errors" in k})
    out["calls_per_s_64_by_round"] = {k: [round(x, 1) for x in v] for k, v in samples.items()
                                      if k.startswith("calls_per_s_64")}
    return out


def bench_victim(address: str, env_id: str, n: int) -> dict[str, float]:
    """A victim's p99 alone (n calls before and n after) and while 4 sessions of the hostile environment run
    runaway calls (n calls), for a victim in the same environment and in another one."""
    from agentworld.client import EnvClient, EnvClientError

    out: dict[str, float] = {}
    with EnvClient(address, timeout=300) as client:
        for label, victim_env, tool in (("", HOSTILE, ("list_marks", {})), ("_other_env", env_id, read_op(1))):
            victim = client.create_session(victim_env)
            for _ in range(20):
                victim.call_tool(*tool)
            alone = [timed(victim.call_tool, *tool)[0] for _ in range(n)]
            runaways = [client.create_session(HOSTILE) for _ in range(4)]
            started = threading.Event()

            def run(s, started=started) -> None:  # noqa: ANN001
                started.set()
                try:
                    s.call_tool("spin", {}, timeout_s=3.0 + n * 0.02)
                except EnvClientError:
                    pass

            threads = [threading.Thread(target=run, args=(s,)) for s in runaways]
            for t in threads:
                t.start()
            started.wait()
            time.sleep(0.3)  # all four running, and parked (after 50 ms each)
            loaded = [timed(victim.call_tool, *tool)[0] for _ in range(n)]
            for t in threads:
                t.join()
            alone += [timed(victim.call_tool, *tool)[0] for _ in range(n)]
            out[f"victim_p99_ms_alone{label}"] = round(pct(alone, 99), 3)
            out[f"victim_p99_ms_runaways{label}"] = round(pct(loaded, 99), 3)
            out[f"victim_p99_ratio{label}"] = round(pct(loaded, 99) / pct(alone, 99), 2)
            out[f"victim_p50_ratio{label}"] = round(pct(loaded, 50) / pct(alone, 50), 2)
            for s in [victim, *runaways]:
                s.close()
    return out


def bench_respawn(address: str, crashes: int) -> dict[str, float]:
    """With one worker: the first call after that worker's crash waits for its replacement."""
    from agentworld.client import AbortedError, EnvClient

    extra: list[float] = []
    with EnvClient(address) as client, client.create_session(HOSTILE) as s:
        for _ in range(10):
            s.call_tool("whoami")
        normal = statistics.median(timed(s.call_tool, "whoami")[0] for _ in range(20))
        for _ in range(crashes):
            try:
                s.call_tool("exit_process", {"code": 3})
            except AbortedError:
                pass
            extra.append(timed(s.call_tool, "whoami")[0] - normal)
    return {"worker_respawn_ms": round(statistics.median(extra), 2), "worker_respawn_p99_ms": round(pct(extra, 99), 2)}


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


# -------------------------------------------------------------------------------------------- memory
def memory_kb(pid: int) -> dict[str, int]:
    """envd's RSS, its sandbox processes' unique memory (USS), and its state directories' bytes on tmpfs."""
    root = psutil.Process(pid)
    sandbox = 0
    for child in root.children(recursive=True):
        try:
            sandbox += child.memory_full_info().uss
        except psutil.Error:
            pass
    state = 0
    for base in (Path("/dev/shm"), Path("/tmp")):
        for d in base.glob(f"agentworld-envd-{pid}-*"):
            state += sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
    return {"envd": rss_kb(pid), "sandbox": sandbox // 1024, "state": state // 1024}


def _total(m: dict[str, int]) -> int:
    return m["envd"] + m["sandbox"] + m["state"]


def bench_sessions(address: str, env_id: str, pid: int, n: int) -> dict[str, Any]:
    """n idle sessions (memory per session), one call on each (per used session), a snapshot of each after a write
    (per snapshot)."""
    from agentworld.client import EnvClient

    with EnvClient(address, timeout=60) as client:
        warm = client.create_session(env_id)
        warm.call_tool(*read_op(0))
        warm.close()
        before = memory_kb(pid)
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
        idle = memory_kb(pid)
        alive = sum(int(not s.call_tool(*write_op(i)).is_error) for i, s in enumerate(made))
        used = memory_kb(pid)
        sample = made[: min(200, len(made))]
        for s in sample:
            s.snapshot()
        snapped = memory_kb(pid)
        for s in made:
            s.close()
    k = max(1, len(made))
    out: dict[str, Any] = {
        "sessions_max": len(made), "sessions_alive": alive, **summarize("create_session", create_ms),
        "rss_per_session_kb": round((_total(idle) - _total(before)) / k, 2),
        "bytes_per_used_session_kb": round((_total(used) - _total(before)) / k, 2),
        "rss_per_snapshot_kb": round((_total(snapped) - _total(used)) / max(1, len(sample)), 2),
        "memory_idle_kb": idle, "memory_used_kb": used}
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
    args = ap.parse_args()
    n_ops = args.ops or (100 if args.quick else 500)
    n_sessions = args.sessions or (200 if args.quick else 1000)
    launches = args.baseline_launches or (3 if args.quick else 5)

    from tests.runtime.hostile_env import hostile_bundle

    work = scratch_dir("agentworld-bench-")
    result: dict[str, Any] = {"bench": "runtime", "quick": args.quick, **env_note()}
    try:
        bundle_dir = import_bundle(AWM_DIR, work / "bundles")
        hostile_dir = hostile_bundle(work / "bundles", HOSTILE)
        env_id = json.loads((bundle_dir / "env.json").read_text())["id"]
        result["env_id"] = env_id
        err.print(f"[bold]bundle[/] {bundle_dir}  env {env_id}")

        result.update(bench_blocking_api(bundle_dir, n_ops))
        result.update(bench_app_alone(bundle_dir, work, n_ops))
        with ServerProcess.envd([bundle_dir, hostile_dir], extra_args=["--workers", "1"]) as one, \
                ServerProcess.envd([bundle_dir, hostile_dir], extra_args=["--workers", "2"]) as envd:
            result["envd_startup_ms"] = round(envd.startup_ms, 1)
            result.update(bench_calltool({1: one.address, 2: envd.address}, env_id, args.quick))
            result.update(bench_respawn(one.address, 5 if args.quick else 20))
            one.stop()  # not needed from here; stopped before the memory figures
            result.update(bench_grpc_ops(envd.address, env_id, n_ops))
            result.update(bench_victim(envd.address, env_id, 200 if args.quick else 600))
            result.update(bench_verify(envd.address, env_id, 5 if args.quick else 20))
            result.update(bench_sessions(envd.address, env_id, envd.pid, n_sessions))
        result.update(bench_baseline(bundle_dir, work, launches))
    finally:
        remove(work)

    result["worker_scaling"] = round(result["calls_per_s_64_w2"] / result["calls_per_s_64_w1"], 2)
    for level in (64, 512):
        result[f"server_time_ratio_{level}"] = round(
            result[f"call_server_p50_ms_{level}_w2"] / result["call_server_p50_ms_1_w2"], 2)
    # CallTool's overhead: per call, its round trip less the worker's own time running the app (one session); the
    # worker's time itself is compared with the same calls run in this process with nothing of envd around them.
    result["calltool_overhead_p50_ms"] = result["call_outside_p50_ms_1_w2"]
    result["calltool_envd_overhead_p50_ms"] = round(result["calltool_overhead_p50_ms"] - result["rpc_floor_p50_ms"],
                                                    3)  # less the bare gRPC round trip (GetStats)
    result["worker_vs_app_alone"] = round(result["call_server_p50_ms_1_w2"] / result["app_alone_call_p50_ms"], 2)
    result["reset_ratio"] = round(result["baseline_reset_ms"] / result["reset_p50_ms"], 1)
    result["memory_ratio"] = round(result["baseline_rss_per_instance_kb"] / max(0.01, result["rss_per_session_kb"]),
                                   1)
    targets = {
        "reset_p50_ms": ("<= 1", result["reset_p50_ms"], result["reset_p50_ms"] <= 1.0),
        "snapshot_p50_ms": ("<= 1", result["snapshot_p50_ms"], result["snapshot_p50_ms"] <= 1.0),
        "restore_p50_ms": ("<= 1", result["restore_p50_ms"], result["restore_p50_ms"] <= 1.0),
        "fork_p50_ms": ("<= 1", result["fork_p50_ms"], result["fork_p50_ms"] <= 1.0),
        "calltool_overhead_p50_ms": ("<= 0.5", result["calltool_overhead_p50_ms"],
                                     result["calltool_overhead_p50_ms"] <= 0.5),
        "worker_scaling": (">= 1.8", result["worker_scaling"], result["worker_scaling"] >= 1.8),
        "server_time_ratio_64": ("<= 1.5", result["server_time_ratio_64"], result["server_time_ratio_64"] <= 1.5),
        "server_time_ratio_512": ("<= 1.5", result["server_time_ratio_512"], result["server_time_ratio_512"] <= 1.5),
        "victim_p99_ratio": ("<= 1.5", result["victim_p99_ratio"], result["victim_p99_ratio"] <= 1.5),
        "worker_respawn_ms": ("<= 100", result["worker_respawn_ms"], result["worker_respawn_ms"] <= 100),
        "rss_per_session_kb": ("<= 200", result["rss_per_session_kb"], result["rss_per_session_kb"] <= 200),
        "sessions_max": (">= 1000", result["sessions_max"], result["sessions_max"] >= 1000),
        "reset_ratio": (">= 500", result["reset_ratio"], result["reset_ratio"] >= 500),
    }
    result["targets_met"] = {k: v[2] for k, v in targets.items()}
    emit(result, "envd runtime vs AWM-style fresh-process reset", targets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
