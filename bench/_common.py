"""Shared helpers for bench/ scripts: percentiles, envd as a subprocess, RSS, one-JSON-object output."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

err = Console(stderr=True)


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank on sorted values; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def summarize(prefix: str, values: Sequence[float], digits: int = 3) -> dict[str, float]:
    """{prefix_p50_ms, prefix_p99_ms} rounded."""
    return {f"{prefix}_p50_ms": round(pct(values, 50), digits), f"{prefix}_p99_ms": round(pct(values, 99), digits)}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid: int) -> int:
    """Resident set size of a process from /proc/PID/status (VmRSS, kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True)


class ServerProcess:
    """An `agentworld` server command (serve, gateway) as a separate process on a fixed loopback port; waits for
    grpc.health.v1 SERVING. `kill()` then `start()` again is a crash and a restart on the same address."""

    def __init__(self, args: Sequence[str], port: int | None = None) -> None:
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.mkstemp(prefix=f"{args[0]}-bench-", suffix=".log")[1])
        entry = "import sys; from agentworld.cli import main; sys.argv[0] = 'agentworld'; main()"
        self.argv = [sys.executable, "-c", entry, *args, "--port", str(self.port)]
        self.proc: subprocess.Popen | None = None
        self.startup_ms = float("nan")

    @classmethod
    def envd(cls, bundle_dirs: Iterable[Path], port: int | None = None, extra_args: Sequence[str] = ()
             ) -> ServerProcess:
        """`agentworld serve BUNDLE... --port P`."""
        return cls(["serve", *map(str, bundle_dirs), *extra_args], port)

    def start(self, wait: bool = True) -> ServerProcess:
        start = time.perf_counter()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
        if wait:
            self._wait_serving(timeout_s=90)
            self.startup_ms = (time.perf_counter() - start) * 1000
        return self

    def __enter__(self) -> ServerProcess:
        return self.start()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _wait_serving(self, timeout_s: float) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.argv[3]} exited with {self.proc.returncode}: {self.log_tail()}")
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"{self.argv[3]} did not report SERVING within {timeout_s} s: {self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kill(self) -> None:
        """SIGKILL: a crash, nothing cleaned up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """End the process (idempotent)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log_path.unlink(missing_ok=True)


def import_bundle(awm_dir: Path, out_dir: Path) -> Path:
    """Import one AWM scenario directory into bundles under out_dir; return the (single) bundle directory."""
    from agentworld.bundle.awm_import import import_awm

    paths = list(import_awm(awm_dir, out_dir))
    if not paths:
        raise RuntimeError(f"importing {awm_dir} produced no bundle")
    return Path(paths[0])


def scratch_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def emit(result: dict[str, Any], title: str, targets: dict[str, tuple[str, float, bool]] | None = None) -> None:
    """Print a rich table to stderr and exactly one JSON object to stdout."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if isinstance(value, dict | list):
            continue
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    err.print(table)
    if targets:
        t = Table(title="targets")
        for col in ("target", "value", "met"):
            t.add_column(col)
        for name, (target, value, met) in targets.items():
            t.add_row(f"{name} {target}", f"{value:.3f}" if isinstance(value, float) else str(value),
                      "[green]yes" if met else "[red]no")
        err.print(t)
    sys.stdout.write(json.dumps(result, sort_keys=False) + "\n")
    sys.stdout.flush()


def env_note() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": sys.version.split()[0], "load_avg_1m": round(os.getloadavg()[0], 2)}
