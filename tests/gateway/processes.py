"""`agentworld serve` and `agentworld gateway` as real processes the tests can SIGKILL and start again."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.waiting import wait_until

_CLI = "import sys; from agentworld.cli import main; sys.argv[0] = 'agentworld'; main()"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health(address: str) -> int | None:
    """The server's grpc.health.v1 status, or None while it cannot be reached."""
    with grpc.insecure_channel(address) as channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status
        except grpc.RpcError:
            return None


class Service:
    """One CLI server process on a fixed loopback port; `start()` again after `kill()` reuses the port."""

    def __init__(self, args: Sequence[str], log_dir: Path, name: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.args = [*args, "--port", str(self.port)]
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_serving: bool = True) -> Service:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", _CLI, *self.args], stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        if wait_serving:
            wait_until(self._serving, f"{self.args[0]} on {self.address} to report SERVING", timeout_s=120)
        return self

    def _serving(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.args[0]} exited with {self.proc.returncode}: {self.log_tail()}")
        return health(self.address) == health_pb2.HealthCheckResponse.SERVING

    def kill(self) -> None:
        """SIGKILL the process and its children (a crash: nothing is cleaned up)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def envd(bundle_dir: Path, log_dir: Path, node_id: str, *extra: str) -> Service:
    return Service(["serve", str(bundle_dir), "--node-id", node_id, "--verifier-workers", "1", "--workers", "1",
                    *extra], log_dir, node_id)


def gateway(backends: Sequence[str], log_dir: Path, name: str, *extra: str) -> Service:
    args = ["gateway", *(a for b in backends for a in ("--backend", b)), "--health-interval", "0.5", *extra]
    return Service(args, log_dir, name)
