"""Local container backend: environment containers run hardened on a Docker engine, reachable only from this host.

Contract (used by `agentworld up --backend docker`):

    with DockerBackend() as backend:                      # or backend = DockerBackend(); ...; backend.stop()
        backends = backend.start([bundle_dir, ...], replicas=1)
        # -> list[Backend(address="172.x.y.z:50051", env_ids=[...], container_id=..., name=..., image=...)]
        # each address answers agentworld's gRPC API (EnvClient(address)) and grpc.health.v1 once start() returns
        backend.crashes                                   # CrashReport list (exit code, OOM, last log lines)

`start` builds missing environment images (see agentworld.images.build), starts `replicas` containers per bundle and
waits until each answers health checks (raising ContainerCrashed, with its logs, if one exits first). Containers and
the network are removed by `stop()`, at interpreter exit (atexit) and on SIGINT/SIGTERM; `prune_stale()` removes
those of a process that was killed outright. A background monitor reports a container that dies later.

Network design: each backend creates its own bridge network with `internal=True` (Docker installs no route and no
NAT out of it: no egress) and inter-container traffic disabled (`enable_icc=false`). Docker cannot publish ports from
an internal network, so nothing is published on any host interface at all; on Linux the host reaches a container
directly at its address on that bridge, which exists only on this machine. That is stricter than publishing on
127.0.0.1. Docker enforces "internal" with FORWARD-chain DROP rules (a container still sees a default route to the
bridge's gateway, which is the host itself), so when running as root the backend also adds one INPUT rule dropping
new connections from the bridge to the host (`host_guard`), removed again by stop(): containers then reach neither
the outside world nor services on the host; replies to the host's own connections still flow.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from agentworld.images.build import (
    DEFAULT_TAG_PREFIX,
    LABEL_MANAGED,
    ImageBuilder,
    _hash_tag,
    docker_client,
    image_name,
)
from agentworld.images.errors import ContainerCrashed, ImagesError

LABEL_BACKEND = "dev.agentworld.backend"
LABEL_OWNER_PID = "dev.agentworld.owner-pid"
LABEL_OWNER_HOST = "dev.agentworld.owner-host"
LABEL_ENV_IDS = "dev.agentworld.env-ids"
ENVD_PORT = 50051
RUN_USER = "10001:10001"
HEALTHCHECK_TEST = ["CMD", "python", "-m", "agentworld.images.healthcheck", f"127.0.0.1:{ENVD_PORT}"]


@dataclass
class Backend:
    """One running environment container: the gRPC address to dial from this host and what it serves."""

    address: str
    env_ids: list[str]
    container_id: str
    name: str = ""
    image: str = ""


@dataclass
class CrashReport:
    """A container that exited while it was supposed to be serving."""

    name: str
    container_id: str
    env_ids: list[str]
    exit_code: int | None
    oom_killed: bool
    logs: str
    at: float = field(default_factory=time.time)

    def __str__(self) -> str:
        oom = " (OOM-killed)" if self.oom_killed else ""
        return f"container {self.name} [{', '.join(self.env_ids)}] exited with code {self.exit_code}{oom}:\n{self.logs}"


@dataclass
class Limits:
    """Per-container resource limits."""

    mem_limit: str = "512m"
    cpus: float = 1.0
    pids_limit: int = 256
    tmpfs_size: str = "256m"


def _port_open(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=0.2).close()
        return True
    except OSError:
        return False


def _stderr_report(report: CrashReport) -> None:
    print(f"agentworld: {report}", file=sys.stderr, flush=True)


class DockerBackend:
    """Runs environment containers (hardened, no egress) and keeps track of them until stop()."""

    def __init__(
        self,
        client=None,
        *,
        tag_prefix: str = DEFAULT_TAG_PREFIX,
        limits: Limits | None = None,
        ready_timeout_s: float = 180.0,
        poll_interval_s: float = 1.0,
        on_crash: Callable[[CrashReport], None] | None = _stderr_report,
        handle_signals: bool = True,
        builder: ImageBuilder | None = None,
    ) -> None:
        self.client = client or docker_client()
        self.tag_prefix = tag_prefix
        self.limits = limits or Limits()
        self.ready_timeout_s = ready_timeout_s
        self.poll_interval_s = poll_interval_s
        self.on_crash = on_crash
        self.id = uuid.uuid4().hex[:10]
        self.crashes: list[CrashReport] = []
        self.backends: list[Backend] = []
        self._builder = builder
        self._network = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._reported: set[str] = set()
        self._monitor: threading.Thread | None = None
        self._old_handlers: dict[int, object] = {}
        self._handle_signals = handle_signals
        self._stopped = False
        self.host_guard = False
        atexit.register(self.stop)

    # -- lifecycle --------------------------------------------------------------------------------------------
    def __enter__(self) -> DockerBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _install_signal_handlers(self) -> None:
        if not self._handle_signals or threading.current_thread() is not threading.main_thread() or self._old_handlers:
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._old_handlers.clear()

    def _on_signal(self, signum: int, frame) -> None:
        previous = self._old_handlers.get(signum)
        self.stop()
        if callable(previous):
            previous(signum, frame)
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            raise SystemExit(128 + signum)

    @property
    def bridge(self) -> str:
        return f"aw-{self.id}"

    def _iptables(self, action: str) -> bool:
        rule = ["INPUT", "-i", self.bridge, "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"]
        proc = subprocess.run(["iptables", "-w", "10", action, *rule], capture_output=True, text=True)
        return proc.returncode == 0

    def _guard_host(self) -> None:
        """Drop new connections from the containers to the host (root only; best effort, reported if missing)."""
        if os.geteuid() == 0 and shutil.which("iptables"):
            self.host_guard = self._iptables("-I")
        if not self.host_guard:
            print("agentworld: not root (or no iptables): containers have no egress but can reach host services "
                  "on the bridge gateway", file=sys.stderr)

    def _ensure_network(self):
        if self._network is None:
            self._network = self.client.networks.create(
                f"agentworld-{self.id}", driver="bridge", internal=True, check_duplicate=True,
                options={"com.docker.network.bridge.enable_icc": "false",
                         "com.docker.network.bridge.name": self.bridge},
                labels={LABEL_MANAGED: "true", LABEL_BACKEND: self.id, LABEL_OWNER_PID: str(os.getpid()),
                        LABEL_OWNER_HOST: socket.gethostname()},
            )
            self._guard_host()
        return self._network

    # -- starting ---------------------------------------------------------------------------------------------
    def images_for(self, bundle_dirs: Iterable[Path], build: bool = True) -> list[tuple[str, list[str]]]:
        """(image, env ids) for each bundle (directories of bundles are expanded), building missing or stale images."""
        from agentworld.bundle import find_bundles

        dirs = find_bundles([Path(d) for d in bundle_dirs])
        if build:
            builder = self._builder or ImageBuilder(self.client, tag_prefix=self.tag_prefix, log=lambda _m: None)
            self._builder = builder
            return [(img.image, [img.env_id]) for img in builder.build_all(dirs, progress=False)]
        from agentworld.bundle import compute_content_hash, load_bundle

        out = []
        for d in dirs:
            bundle = load_bundle(d)
            ref = f"{image_name(bundle.env_id, self.tag_prefix)}:{_hash_tag(compute_content_hash(bundle))}"
            out.append((ref, [bundle.env_id]))
        return out

    def start(self, bundle_dirs: Iterable[Path], replicas: int = 1, build: bool = True) -> list[Backend]:
        """Start `replicas` containers per bundle and wait until all serve; returns them (also in .backends)."""
        return self.start_images(self.images_for(bundle_dirs, build=build), replicas=replicas)

    def start_images(self, images: list[tuple[str, list[str]]], replicas: int = 1,
                     wait: bool = True) -> list[Backend]:
        """Start containers from already-built images (an env image or a suite image and the ids it serves)."""
        if self._stopped:
            raise ImagesError("this DockerBackend was stopped; create a new one")
        self._install_signal_handlers()
        network = self._ensure_network()
        jobs = [(ref, env_ids, r) for ref, env_ids in images for r in range(replicas)]
        workers = min(8, max(1, len(jobs)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aw-run") as pool:
            started = list(pool.map(lambda job: self._run_one(network, *job), jobs))
        with self._lock:
            self.backends.extend(started)
        self._start_monitor()
        if wait:
            self.wait_ready(started)
        return started

    def _run_one(self, network, ref: str, env_ids: list[str], replica: int) -> Backend:
        lim = self.limits
        name = f"aw-{self.id}-{env_ids[0][:40] if len(env_ids) == 1 else 'suite'}-{replica}".replace("_", "-")
        container = self.client.containers.run(
            ref, detach=True, name=name,
            user=RUN_USER,
            read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,size={lim.tmpfs_size},mode=1777"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            mem_limit=lim.mem_limit, memswap_limit=lim.mem_limit,
            nano_cpus=int(lim.cpus * 1e9),
            pids_limit=lim.pids_limit,
            network=network.name,
            ipc_mode="private",
            environment={"HOME": "/tmp"},
            # The backend health-checks from the host (wait_ready, the monitor); Docker's own check runs rarely.
            healthcheck={"test": HEALTHCHECK_TEST, "interval": 60 * 10**9, "timeout": 10 * 10**9,
                         "start_period": 60 * 10**9, "retries": 3},
            labels={LABEL_MANAGED: "true", LABEL_BACKEND: self.id, LABEL_OWNER_PID: str(os.getpid()),
                    LABEL_OWNER_HOST: socket.gethostname(), LABEL_ENV_IDS: ",".join(env_ids)},
        )
        container.reload()
        ip = container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        if not ip:
            raise ImagesError(f"container {name} got no address on {network.name}")
        return Backend(address=f"{ip}:{ENVD_PORT}", env_ids=env_ids, container_id=container.id, name=name, image=ref)

    def wait_ready(self, backends: list[Backend] | None = None, timeout_s: float | None = None) -> None:
        """Block until each backend answers grpc.health.v1 SERVING; ContainerCrashed if one exits first."""
        from agentworld.images.healthcheck import check

        pending = list(backends if backends is not None else self.backends)
        deadline = time.monotonic() + (timeout_s or self.ready_timeout_s)
        rounds = 0
        while pending:
            still = []
            # Cheap TCP probes first; a gRPC health check only where the port is open; the engine is asked about
            # exited containers once per ~second (one list call), so waiting on 50 containers costs little CPU.
            exited = self._exited_ids() if rounds % 10 == 0 else set()
            for b in pending:
                if _port_open(b.address) and check(b.address, timeout_s=2.0):
                    continue
                if b.container_id in exited:
                    report = self._report(self.client.containers.get(b.container_id))
                    raise ContainerCrashed(b.name, report.exit_code, report.logs)
                still.append(b)
            pending = still
            if pending and time.monotonic() > deadline:
                raise ImagesError(f"{len(pending)} container(s) not serving after {timeout_s or self.ready_timeout_s}s: "
                                  + ", ".join(b.name for b in pending))
            if pending:
                rounds += 1
                time.sleep(0.02 if len(pending) <= 4 else 0.1)

    def _exited_ids(self) -> set[str]:
        ids = set()
        for status in ("exited", "dead"):
            ids |= {c.id for c in self.client.containers.list(
                all=True, filters={"label": f"{LABEL_BACKEND}={self.id}", "status": status})}
        return ids

    # -- crash monitoring -------------------------------------------------------------------------------------
    def _start_monitor(self) -> None:
        if self._monitor is None:
            self._monitor = threading.Thread(target=self._monitor_loop, name=f"aw-monitor-{self.id}", daemon=True)
            self._monitor.start()

    def _monitor_loop(self) -> None:
        while not self._stopping.wait(self.poll_interval_s):
            try:
                self.poll()
            except Exception as exc:  # the engine going away must not kill the monitor silently
                print(f"agentworld: container monitor: {exc}", file=sys.stderr)

    def poll(self) -> list[CrashReport]:
        """Check every container of this backend once; new crashes are recorded, reported and returned."""
        if self._stopping.is_set():
            return []
        new = []
        listed = self.client.containers.list(all=True, filters={"label": f"{LABEL_BACKEND}={self.id}",
                                                                   "status": "exited"})
        listed += self.client.containers.list(all=True, filters={"label": f"{LABEL_BACKEND}={self.id}",
                                                                    "status": "dead"})
        for container in listed:
            if container.id in self._reported or self._stopping.is_set():
                continue
            report = self._report(container)
            new.append(report)
        return new

    def _report(self, container) -> CrashReport:
        with self._lock:
            existing = next((r for r in self.crashes if r.container_id == container.id), None)
            if existing:
                return existing
        container.reload()
        state = container.attrs.get("State", {})
        try:
            logs = container.logs(tail=30).decode(errors="replace")
        except Exception as exc:  # logs of a removed container
            logs = f"(logs unavailable: {exc})"
        report = CrashReport(
            name=container.name, container_id=container.id,
            env_ids=(container.labels.get(LABEL_ENV_IDS) or "").split(","),
            exit_code=state.get("ExitCode"), oom_killed=bool(state.get("OOMKilled")), logs=logs.rstrip(),
        )
        with self._lock:
            self.crashes.append(report)
            self._reported.add(container.id)
        if self.on_crash:
            self.on_crash(report)
        return report

    # -- stopping ---------------------------------------------------------------------------------------------
    def stop(self, timeout_s: int = 3) -> None:
        """Remove this backend's containers and network (idempotent; safe from atexit and signal handlers)."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        try:
            containers = self.client.containers.list(all=True, filters={"label": f"{LABEL_BACKEND}={self.id}"})

            def remove(c) -> None:
                try:
                    c.stop(timeout=timeout_s)
                except Exception:
                    pass
                try:
                    c.remove(force=True)
                except Exception:
                    pass

            if containers:
                with ThreadPoolExecutor(max_workers=min(16, len(containers))) as pool:
                    list(pool.map(remove, containers))
            if self._network is not None:
                try:
                    self._network.remove()
                except Exception:
                    pass
            if self.host_guard:
                self._iptables("-D")
                self.host_guard = False
        finally:
            self._restore_signal_handlers()
            atexit.unregister(self.stop)


def prune_stale(client=None, all_owners: bool = False) -> int:
    """Remove managed containers and networks whose owning process on this host is gone; returns how many."""
    client = client or docker_client()
    host = socket.gethostname()

    def stale(labels: dict[str, str]) -> bool:
        if all_owners:
            return True
        if labels.get(LABEL_OWNER_HOST) != host:
            return False
        try:
            os.kill(int(labels.get(LABEL_OWNER_PID, "0")), 0)
        except (ProcessLookupError, ValueError):
            return True
        except PermissionError:
            return False
        return False

    removed = 0
    for c in client.containers.list(all=True, filters={"label": f"{LABEL_MANAGED}=true"}):
        if LABEL_BACKEND in c.labels and stale(c.labels):
            c.remove(force=True)
            removed += 1
    for n in client.networks.list(filters={"label": f"{LABEL_MANAGED}=true"}):
        if stale(n.attrs.get("Labels") or {}):
            try:
                n.remove()
                removed += 1
            except Exception:
                pass
    if os.geteuid() == 0 and shutil.which("iptables"):  # host guards whose bridge is gone
        bridges = {(n.attrs.get("Options") or {}).get("com.docker.network.bridge.name") for n in client.networks.list()}
        rules = subprocess.run(["iptables", "-w", "10", "-S", "INPUT"], capture_output=True, text=True).stdout
        for line in rules.splitlines():
            parts = line.split()
            if "-i" in parts and parts[parts.index("-i") + 1].startswith("aw-") and parts[parts.index("-i") + 1] \
                    not in bridges and parts[-2:] == ["-j", "DROP"]:
                subprocess.run(["iptables", "-w", "10", "-D", *parts[1:]], capture_output=True)
                removed += 1
    return removed
