"""1,024 concurrent reference-policy episodes through the gateway: wall time, tool calls/s, CallTool p50/p99, memory.

Starts `agentworld gateway --envs <mini_library> --replicas N` as a subprocess (its envd processes are its
children), drives the episodes from this process with `AsyncEnvClient` + the rollout runner, and samples the RSS
of every process (driver, gateway, each envd, verifier sandboxes) to report peaks. Baseline in the same run: the same
episodes one at a time (concurrency 1), so the concurrent latencies can be read against an unloaded system.
Prints one JSON object.

    .venv/bin/python bench/rollouts.py [--episodes 1024] [--replicas 2] [--baseline-episodes 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
MINI_LIBRARY = ROOT.parent / "shared" / "awm" / "mini_library"
TARGET_P99_MS = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


async def run_batch(addresses: list[str], bundle, episodes: int, concurrency: int) -> dict:
    """The episodes, spread round-robin over `addresses` (one client each), `concurrency` in flight in total."""
    from rich.console import Console

    from agentworld.client import AsyncEnvClient
    from agentworld.rollout import EpisodeConfig, make_policy, plan_episodes, run_rollouts
    from agentworld.rollout.progress import rollout_progress

    clients = [AsyncEnvClient(a, timeout=120.0) for a in addresses]
    try:
        envs = await clients[0].list_envs()
        per_task = -(-episodes // len(bundle.tasks))
        specs = plan_episodes(envs, {bundle.env_id: bundle}, repeats=per_task, need_solutions=True)
        specs = sorted(specs, key=lambda s: (s.repeat, s.task_id))[:episodes]  # interleave tasks
        shares = [specs[i :: len(clients)] for i in range(len(clients))]
        policy = make_policy("reference")
        with rollout_progress(Console(stderr=True), len(specs)) as advance:
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
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "not_reward_1": sum(1 for t in trajs if t.reward != 1.0),
    }


def envd_addresses(gateway_pid: int) -> list[str]:
    """The gateway's envd children, by their listening sockets (for the run that bypasses the gateway)."""
    found = []
    for child in psutil.Process(gateway_pid).children(recursive=True):
        try:
            if MemorySampler.role(child) != "envd":
                continue
            ports = sorted(c.laddr.port for c in child.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN)
        except psutil.Error:
            continue
        found.extend(f"127.0.0.1:{p}" for p in ports[:1])
    return sorted(found)


def wait_ready(address: str, proc: subprocess.Popen, timeout_s: float = 120.0) -> None:
    from agentworld.client import EnvClient, EnvClientError

    deadline = time.monotonic() + timeout_s
    with EnvClient(address, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {proc.returncode}")
            try:
                if client.list_envs() and client.get_stats().active_sessions >= 0:
                    return
            except EnvClientError:
                pass
            time.sleep(0.25)
    raise TimeoutError(f"gateway at {address} not ready within {timeout_s:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=None, help="default: all episodes at once")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--baseline-episodes", type=int, default=50)
    parser.add_argument("--no-direct-comparison", action="store_true", help="skip the run that bypasses the gateway")

    args = parser.parse_args()

    from agentworld.bundle import load_bundle
    from agentworld.bundle.awm_import import import_awm

    with tempfile.TemporaryDirectory(prefix="aw-bench-rollouts-") as tmp:
        (bundle_dir,) = import_awm(MINI_LIBRARY, Path(tmp) / "bundles")
        bundle = load_bundle(bundle_dir)
        log_path = Path(tmp) / "gateway.log"
        log = open(log_path, "w")  # noqa: SIM115 - closed below
        for attempt in range(3):  # a replica that dies while starting fails the whole gateway: try again
            port = free_port()
            address = f"127.0.0.1:{port}"
            cmd = [sys.executable, "-m", "agentworld", "gateway", "--envs", str(bundle_dir),
                   "--replicas", str(args.replicas), "--port", str(port)]
            gateway = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                wait_ready(address, gateway)
                break
            except (RuntimeError, TimeoutError) as exc:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(gateway.pid, signal.SIGKILL)  # the gateway and the envd processes it started
                gateway.wait()
                tail = log_path.read_text(errors="replace").splitlines()[-3:]
                print(f"gateway start attempt {attempt + 1} failed: {exc}: {tail}", file=sys.stderr)
        else:
            raise SystemExit("the gateway did not start (see messages above)")
        try:
            baseline = asyncio.run(run_batch([address], bundle, args.baseline_episodes, 1))
            mem = MemorySampler([os.getpid(), gateway.pid])
            mem.sample()
            cpu_start = dict(mem.cpu)
            with mem:
                main_run = asyncio.run(run_batch([address], bundle, args.episodes, args.concurrency or args.episodes))
            for r in (baseline, main_run):
                r["route"] = f"client -> gateway -> {args.replicas} envd"
            direct_run = None
            if not args.no_direct_comparison:
                backends = envd_addresses(gateway.pid)
                direct_run = asyncio.run(run_batch(backends, bundle, args.episodes, args.concurrency or args.episodes))
                direct_run["route"] = f"client -> envd directly, episodes split over {len(backends)} (no gateway hop)"
        finally:
            gateway.terminate()
            try:
                gateway.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(gateway.pid, signal.SIGKILL)
            log.close()
        gateway_log_tail = (Path(tmp) / "gateway.log").read_text(errors="replace").splitlines()[-2:]
    p99 = main_run["call_tool_ms"]["p99"]
    result = {
        "bench": "rollouts",
        "target": f"gateway ({args.replicas} envd processes, local pool)",
        "policy": "reference",
        "env": bundle.env_id,
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "run": main_run,
        "baseline_sequential": baseline,
        "comparison_direct_to_envd": direct_run,
        "peak_rss_mb": mem.report(),
        "cpu_s_during_run": mem.cpu_report(cpu_start),
        "call_tool_p99_target_ms": TARGET_P99_MS,
        "meets_target": p99 <= TARGET_P99_MS and main_run["errors"] == 0,
        "gateway_log_tail": gateway_log_tail,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
