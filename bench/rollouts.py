"""1,024 concurrent reference-policy episodes through the gateway: wall time, tool calls/s, CallTool p50/p99, memory,
the gateway's cost, and a run through 2 gateway replicas with one SIGKILLed and restarted halfway.

Starts N `agentworld serve` processes and `agentworld gateway --backend ...` processes in front of them, drives the
episodes from this process with `AsyncEnvClient` + the rollout runner, and samples the RSS and CPU of every process.
Runs, in this order (the direct and gateway runs alternate `--rounds` times, so drift of this VM's speed hits both):
- `baseline_sequential`: episodes one at a time through the gateway (unloaded latencies);
- `comparison_direct_to_envd`: the same 1,024 episodes split over the envd processes, no gateway hop;
- `run`: the 1,024 episodes through one gateway: `gateway_wall_ratio` (its wall / the direct wall, summed over the
  rounds) and `gateway_cpu_ms_per_call` (gateway CPU / RPCs it forwarded);
- `replicas_restart_run`: through 2 gateway replicas (the client spreads calls round-robin over both); halfway, one
  replica is SIGKILLed and started again on its port. Target: 0 errors, every reward 1.0.
Prints one JSON object.

    .venv/bin/python bench/rollouts.py [--episodes 1024] [--replicas 2] [--baseline-episodes 50] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import psutil
from _common import ServerProcess, env_note, import_bundle

ROOT = Path(__file__).resolve().parents[1]
MINI_LIBRARY = ROOT.parent / "shared" / "awm" / "mini_library"
PATIENT_BACKOFF_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4)  # resends spanning a replica's restart
TARGET_P99_MS = 20.0
TARGET_GATEWAY_CPU_MS_PER_CALL = 0.3
TARGET_GATEWAY_WALL_RATIO = 1.1
RPCS_PER_EPISODE = 4  # CreateSession, ListTools, Verify, CloseSession; plus one CallTool per step


class MemorySampler:
    """Peak RSS per process (this one, the gateway and all its descendants), sampled every `interval_s`."""

    def __init__(self, root_pids: list[int], interval_s: float = 0.1) -> None:
        self.root_pids = root_pids
        self.interval_s = interval_s
        self.peaks: dict[int, tuple[str, int]] = {}
        self.cpu: dict[int, float] = {}  # last seen user+system CPU seconds
        self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def role(proc: psutil.Process) -> str:
        if proc.pid == os.getpid():
            return "driver"
        try:
            cmd = " ".join(proc.cmdline())
        except psutil.Error:
            return "?"
        for needle, name in (("sandbox_worker", "verifier"), (" serve ", "envd"), ("gateway", "gateway")):
            if needle in f" {cmd} ":
                return name
        return proc.name()

    def sample(self) -> None:
        procs: list[psutil.Process] = []
        for pid in self.root_pids:
            try:
                root = psutil.Process(pid)
                procs.append(root)
                procs.extend(root.children(recursive=True))
            except psutil.Error:
                continue
        total = 0
        for proc in procs:
            try:
                rss = proc.memory_info().rss
                times = proc.cpu_times()
                self.cpu[proc.pid] = times.user + times.system
                role = self.peaks[proc.pid][0] if proc.pid in self.peaks else self.role(proc)
            except psutil.Error:
                continue
            if rss == 0:
                continue
            total += rss
            self.peaks[proc.pid] = (role, max(self.peaks.get(proc.pid, (role, 0))[1], rss))
        self.peak_total = max(self.peak_total, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> MemorySampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def report(self) -> dict[str, object]:
        """Long-lived processes one by one; short-lived helpers (verifier sandboxes) as a count and a max."""
        mb = lambda b: round(b / 2**20, 1)  # noqa: E731
        out: dict[str, object] = {}
        helpers: dict[str, list[int]] = {}
        for pid, (role, peak) in sorted(self.peaks.items()):
            if role in ("driver", "gateway", "envd"):
                out[f"{role}:{pid}"] = mb(peak)
            else:
                helpers.setdefault(role, []).append(peak)
        for role, peaks in helpers.items():
            out[f"{role} (short-lived)"] = {"processes_seen": len(peaks), "max_mb": mb(max(peaks))}
        out["all_processes_peak_sum_mb"] = mb(self.peak_total)
        return out

    def cpu_report(self, start: dict[int, float]) -> dict[str, float]:
        """CPU seconds each process spent during the run (short-lived helpers summed by role)."""
        out: dict[str, float] = {}
        for pid, (role, _) in sorted(self.peaks.items()):
            used = self.cpu.get(pid, 0.0) - start.get(pid, 0.0)
            key = f"{role}:{pid}" if role in ("driver", "gateway", "envd") else f"{role} (all)"
            out[key] = round(out.get(key, 0.0) + used, 2)
        return out


def pct(values: list[float], q: float) -> float:
    from agentworld.rollout.summary import percentile

    return round(percentile(values, q), 3)


async def run_batch(addresses: list[str], bundle, episodes: int, concurrency: int,
                    halfway: threading.Event | None = None) -> dict:
    """The episodes, spread round-robin over `addresses` (one client each), `concurrency` in flight in total;
    `halfway` is set once half of them are done."""
    from rich.console import Console

    from agentworld.client import AsyncEnvClient
    from agentworld.rollout import EpisodeConfig, make_policy, plan_episodes, run_rollouts
    from agentworld.rollout.progress import rollout_progress

    clients = [AsyncEnvClient(a, timeout=120.0, retry_backoff=PATIENT_BACKOFF_S) for a in addresses]
    try:
        envs = await clients[0].list_envs()
        per_task = -(-episodes // len(bundle.tasks))
        specs = plan_episodes(envs, {bundle.env_id: bundle}, repeats=per_task, need_solutions=True)
        specs = sorted(specs, key=lambda s: (s.repeat, s.task_id))[:episodes]  # interleave tasks
        shares = [specs[i :: len(clients)] for i in range(len(clients))]
        policy = make_policy("reference")
        finished = 0

        def count(_t: object) -> None:
            nonlocal finished
            finished += 1
            if halfway is not None and finished >= len(specs) // 2:
                halfway.set()

        with rollout_progress(Console(stderr=True), len(specs)) as bar:
            def advance(t: object) -> None:
                count(t)
                bar(t)

            t0 = time.perf_counter()
            parts = await asyncio.gather(*(
                run_rollouts(c, policy, share, EpisodeConfig(), concurrency=max(1, concurrency // len(clients)),
                             on_done=advance)
                for c, share in zip(clients, shares, strict=True)
            ))
            wall = time.perf_counter() - t0
    finally:
        for c in clients:
            await c.close()
    trajs = [t for part in parts for t in part]
    calls = [s.call_ms for t in trajs for s in t.steps]
    server = [s.server_ms for t in trajs for s in t.steps]
    errors = [t.error for t in trajs if t.termination == "error"]
    return {
        "route": " | ".join(addresses),
        "episodes": len(trajs),
        "concurrency": concurrency,
        "wall_s": round(wall, 3),
        "episodes_per_s": round(len(trajs) / wall, 1),
        "tool_calls": len(calls),
        "tool_calls_per_s": round(len(calls) / wall, 1),
        "call_tool_ms": {"p50": pct(calls, 50), "p99": pct(calls, 99), "max": round(max(calls, default=0), 3)},
        "server_tool_ms": {"p50": pct(server, 50), "p99": pct(server, 99)},
        "create_session_ms_p99": pct([t.timings.create_session_ms for t in trajs], 99),
        "verify_ms": {"p50": pct([t.timings.verify_ms for t in trajs], 50),
                      "p99": pct([t.timings.verify_ms for t in trajs], 99)},
        "episode_ms": {"p50": pct([t.timings.total_ms for t in trajs], 50),
                       "p99": pct([t.timings.total_ms for t in trajs], 99)},
        "rpcs": len(calls) + RPCS_PER_EPISODE * len(trajs),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "not_reward_1": sum(1 for t in trajs if t.reward != 1.0),
    }


def gateway_run(addresses: list[str], bundle, episodes: int, concurrency: int, gateway: ServerProcess) -> dict:
    """The episodes through one gateway, with the CPU seconds of the gateway and its router child over the run."""
    before = tree_cpu_s(gateway.pid)
    out = asyncio.run(run_batch(addresses, bundle, episodes, concurrency))
    out["gateway_cpu_s"] = round(tree_cpu_s(gateway.pid) - before, 3)
    return out


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants (the gateway and agentworld-router)."""
    root = psutil.Process(pid)
    return sum(t.user + t.system for t in (p.cpu_times() for p in [root, *root.children(recursive=True)]))


def restart_run(backends: list[str], bundle, episodes: int, concurrency: int) -> dict:
    """Through 2 gateway replicas; halfway one is SIGKILLed and restarted on its port."""
    replicas = [ServerProcess(gateway_args(backends)).start() for _ in range(2)]
    halfway = threading.Event()
    restarted: dict[str, float] = {}

    def crash_and_restart() -> None:
        if not halfway.wait(timeout=600):
            return
        t0 = time.perf_counter()
        replicas[0].kill()
        replicas[0].start()
        restarted["down_ms"] = round((time.perf_counter() - t0) * 1000, 1)

    restarter = threading.Thread(target=crash_and_restart, daemon=True)
    restarter.start()
    try:
        out = asyncio.run(run_batch([",".join(r.address for r in replicas)], bundle, episodes, concurrency, halfway))
        restarter.join(timeout=120)
    finally:
        for r in replicas:
            r.stop()
    out["route"] = f"client -> 2 gateway replicas (round-robin) -> {len(backends)} envd"
    out["replica_restarted"] = bool(restarted)
    out["replica_down_ms"] = restarted.get("down_ms")
    return out


def gateway_args(backends: list[str]) -> list[str]:
    return ["gateway", *(a for b in backends for a in ("--backend", b))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=None, help="default: all episodes at once")
    parser.add_argument("--replicas", type=int, default=2, help="envd processes")
    parser.add_argument("--baseline-episodes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2, help="alternating direct/gateway runs")
    args = parser.parse_args()
    concurrency = args.concurrency or args.episodes

    from agentworld.bundle import load_bundle
    from agentworld.gateway.router import find_router
    from agentworld.runtime.types import available_cpus

    with tempfile.TemporaryDirectory(prefix="aw-bench-rollouts-") as tmp:
        bundle_dir = import_bundle(MINI_LIBRARY, Path(tmp) / "bundles")
        bundle = load_bundle(bundle_dir)
        workers = str(max(1, available_cpus() // args.replicas))
        envds = [ServerProcess.envd([bundle_dir], extra_args=["--node-id", f"envd-{i}", "--workers", workers])
                 for i in range(args.replicas)]
        for e in envds:
            e.start()
        backends = [e.address for e in envds]
        gateway = ServerProcess(gateway_args(backends)).start()
        try:
            baseline = asyncio.run(run_batch([gateway.address], bundle, args.baseline_episodes, 1))
            mem = MemorySampler([os.getpid(), gateway.pid, *(e.pid for e in envds)])
            mem.sample()
            cpu_start = dict(mem.cpu)
            direct_runs, gateway_runs = [], []
            with mem:
                for _ in range(args.rounds):
                    direct_runs.append(asyncio.run(run_batch(backends, bundle, args.episodes, concurrency)))
                    gateway_runs.append(gateway_run([gateway.address], bundle, args.episodes, concurrency, gateway))
            replicas_run = restart_run(backends, bundle, args.episodes, concurrency)
        finally:
            gateway.stop()
            for e in envds:
                e.stop()
    main_run, direct_run = gateway_runs[-1], direct_runs[-1]
    main_run["route"] = baseline["route"] = f"client -> gateway -> {args.replicas} envd"
    direct_run["route"] = f"client -> envd directly, episodes split over {args.replicas} (no gateway hop)"
    wall_ratio = sum(r["wall_s"] for r in gateway_runs) / sum(r["wall_s"] for r in direct_runs)
    cpu_per_call = 1000 * sum(r["gateway_cpu_s"] for r in gateway_runs) / sum(r["rpcs"] for r in gateway_runs)
    p99 = main_run["call_tool_ms"]["p99"]
    replicas_ok = replicas_run["errors"] == 0 and replicas_run["not_reward_1"] == 0
    result = {
        "bench": "rollouts",
        "target": f"{args.replicas} envd processes; one gateway; 2 gateway replicas with a restart",
        "policy": "reference",
        "env": bundle.env_id,
        **env_note(),
        "run": main_run,
        "baseline_sequential": baseline,
        "comparison_direct_to_envd": direct_run,
        "replicas_restart_run": replicas_run,
        "gateway_wall_ratio": round(wall_ratio, 3),
        "gateway_wall_ratios_by_round": [round(g["wall_s"] / d["wall_s"], 3)
                                         for g, d in zip(gateway_runs, direct_runs, strict=True)],
        "gateway_cpu_ms_per_call": round(cpu_per_call, 3),
        "gateway_data_plane": "agentworld-router" if find_router() else "python (router not built: make router)",
        "peak_rss_mb": mem.report(),
        "cpu_s_during_runs": mem.cpu_report(cpu_start),
        "targets": {
            "call_tool_p99_ms": [TARGET_P99_MS, p99 <= TARGET_P99_MS and main_run["errors"] == 0],
            "gateway_wall_ratio": [TARGET_GATEWAY_WALL_RATIO, wall_ratio <= TARGET_GATEWAY_WALL_RATIO],
            "gateway_cpu_ms_per_call": [TARGET_GATEWAY_CPU_MS_PER_CALL, cpu_per_call <= TARGET_GATEWAY_CPU_MS_PER_CALL],
            "replicas_restart_run.errors": [0, replicas_ok],
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
