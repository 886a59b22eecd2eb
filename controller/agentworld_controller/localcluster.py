"""A throwaway Kubernetes control plane on loopback, from binaries built by tests/infra/install-k8s.sh.

etcd + kube-apiserver (real, with TLS, RBAC and service-account keys) + kube-controller-manager (garbage collector,
service accounts, namespaces, disruption) + kube-scheduler + kwok (fake nodes that make pods Running and Ready
without containers). Used by tests/k8s and bench/k8s_scale.py; no cluster is downloaded.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kubectl", "helm")
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_TAINT = {"key": KWOK_NODE_ANNOTATION, "value": "fake", "effect": "NoSchedule"}
# What an EnvPool needs in spec.scheduling to land on kwok nodes.
KWOK_SCHEDULING = {"nodeSelector": {"type": "kwok"}, "tolerations": [{"key": KWOK_NODE_ANNOTATION, "operator": "Exists",
                                                                      "effect": "NoSchedule"}]}


class MissingBinaries(RuntimeError):
    """The Kubernetes binaries are not built; run tests/infra/install-k8s.sh (or `make infra`)."""


def cache_root() -> Path:
    return Path(os.environ.get("AGENTWORLD_CACHE", Path.home() / ".cache" / "agentworld"))


def find_bin_dir() -> Path:
    """$AGENTWORLD_K8S_BIN, else the newest complete directory under the cache's k8s-bin/."""
    override = os.environ.get("AGENTWORLD_K8S_BIN")
    candidates = [Path(override)] if override else sorted(
        (cache_root() / "k8s-bin").glob("*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for d in candidates:
        if all((d / b).is_file() and os.access(d / b, os.X_OK) for b in BINARIES) and (d / "kwok-stages.yaml").is_file():
            return d
    missing_in = candidates[0] if candidates else cache_root() / "k8s-bin"
    raise MissingBinaries(f"Kubernetes test binaries {', '.join(BINARIES)} not found in {missing_in}; "
                          "build them with `bash tests/infra/install-k8s.sh`")


def die_with_parent() -> list[str]:
    """A command prefix that SIGKILLs the component when the process that started it dies (no orphaned control
    planes): util-linux's setpriv sets PR_SET_PDEATHSIG and execs it. A `preexec_fn` could do the same, but Python
    code between fork and exec crashes children of processes with gRPC threads (they abort in gRPC's fork handler)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- certificates ---------------------------------------------------------------------------------------------------
def _key():  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject_cn: str, key: Any, issuer: tuple[Any, Any] | None, *, ca: bool = False, orgs: tuple[str, ...] = (),
          sans: tuple[str, ...] = (), server: bool = False) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
                     + [x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(name)
         .issuer_name(issuer_cert.subject if issuer_cert else name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
    else:
        usage = [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
        b = b.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    if sans:
        alt: list[Any] = []
        for s in sans:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(s)))
            except ValueError:
                alt.append(x509.DNSName(s))
        b = b.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem_cert(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Identity:
    """A client certificate identity (user + groups), written as a kubeconfig."""

    kubeconfig: Path
    user: str


@dataclass
class LocalCluster:
    workdir: Path | None = None
    nodes: int = 4
    node_pods: int = 1000
    scheduler_qps: int = 2000
    kwok_parallelism: int = 32
    bin_dir: Path = field(default_factory=find_bin_dir)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _own_workdir: bool = False

    def __post_init__(self) -> None:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="aw-k8s-", dir="/dev/shm" if Path("/dev/shm").is_dir()
                                                 else None))
            self._own_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.api_port = free_port()
        self.server = f"https://127.0.0.1:{self.api_port}"

    # -- paths ----------------------------------------------------------------------------------------------------
    def bin(self, name: str) -> str:
        return str(self.bin_dir / name)

    @property
    def kubeconfig(self) -> Path:
        assert self.workdir
        return self.workdir / "admin.kubeconfig"

    def _write(self, name: str, data: bytes | str, mode: int = 0o600) -> Path:
        assert self.workdir
        p = self.workdir / name
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        p.chmod(mode)
        return p

    # -- pki --------------------------------------------------------------------------------------------------------
    def _pki(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        self._ca_key = _key()
        self._ca = _cert("agentworld-test-ca", self._ca_key, None, ca=True)
        self._write("ca.crt", _pem_cert(self._ca))
        skey = _key()
        scert = _cert("kube-apiserver", skey, (self._ca, self._ca_key), server=True,
                      sans=("127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                            "10.0.0.1"))
        self._write("apiserver.crt", _pem_cert(scert))
        self._write("apiserver.key", _pem_key(skey))
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._write("sa.key", _pem_key(sa))
        self._write("sa.pub", sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo))
        self.identity("admin", groups=("system:masters",), filename="admin.kubeconfig")

    def identity(self, user: str, groups: tuple[str, ...] = (), filename: str | None = None) -> Identity:
        """A kubeconfig authenticating as `user` by client certificate (RBAC treats
        `system:serviceaccount:NS:NAME` exactly like that service account)."""
        key = _key()
        cert = _cert(user, key, (self._ca, self._ca_key), orgs=groups)
        safe = user.replace(":", "_")
        crt, k = self._write(f"{safe}.crt", _pem_cert(cert)), self._write(f"{safe}.key", _pem_key(key))
        assert self.workdir
        cfg = f"""apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {{server: "{self.server}", certificate-authority: "{self.workdir / 'ca.crt'}"}}
users:
- name: {safe}
  user: {{client-certificate: "{crt}", client-key: "{k}"}}
contexts:
- name: local
  context: {{cluster: local, user: {safe}, namespace: default}}
current-context: local
"""
        return Identity(self._write(filename or f"{safe}.kubeconfig", cfg), user)

    # -- processes --------------------------------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> None:
        assert self.workdir
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.procs[name] = subprocess.Popen([*die_with_parent(), self.bin(name), *args], stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)

    def _check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode}:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 30) -> str:
        assert self.workdir
        try:
            return "\n".join((self.workdir / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _wait(self, what: str, check: Any, timeout_s: float = 60.0) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            self._check_alive()
            try:
                if check():
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{what} did not become ready in {timeout_s}s")

    def _apiserver_ready(self) -> bool:
        assert self.workdir
        ctx = ssl.create_default_context(cafile=str(self.workdir / "ca.crt"))
        ctx.load_cert_chain(str(self.workdir / "admin.crt"), str(self.workdir / "admin.key"))
        with urllib.request.urlopen(f"{self.server}/readyz", context=ctx, timeout=2) as r:  # noqa: S310 - loopback
            return r.status == 200

    def start(self) -> LocalCluster:
        assert self.workdir
        self._pki()
        wd = self.workdir
        etcd_port, peer_port = free_port(), free_port()
        self._spawn("etcd", [
            "--name=default", f"--data-dir={wd / 'etcd'}", f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}", f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=default=http://127.0.0.1:{peer_port}", "--unsafe-no-fsync",
            "--quota-backend-bytes=8589934592", "--log-level=warn", "--listen-metrics-urls="])
        self._spawn("kube-apiserver", [
            f"--etcd-servers=http://127.0.0.1:{etcd_port}", f"--secure-port={self.api_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--tls-cert-file={wd / 'apiserver.crt'}", f"--tls-private-key-file={wd / 'apiserver.key'}",
            f"--client-ca-file={wd / 'ca.crt'}", f"--service-account-key-file={wd / 'sa.pub'}",
            f"--service-account-signing-key-file={wd / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc", "--service-cluster-ip-range=10.0.0.0/24",
            "--authorization-mode=RBAC", "--allow-privileged=false", "--enable-priority-and-fairness=false",
            "--max-requests-inflight=2000", "--max-mutating-requests-inflight=1000", "--profiling=false",
            "--endpoint-reconciler-type=none", "--v=1"])
        self._wait("kube-apiserver", self._apiserver_ready, 90)
        kc = str(self.kubeconfig)
        self._spawn("kube-controller-manager", [
            f"--kubeconfig={kc}", "--leader-elect=false", "--secure-port=0", "--use-service-account-credentials=false",
            "--controllers=garbagecollector,serviceaccount,namespace,disruption", "--concurrent-gc-syncs=20",
            "--kube-api-qps=1000", "--kube-api-burst=2000", "--v=1"])
        sched_cfg = self._write("scheduler.yaml", f"""apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
leaderElection: {{leaderElect: false}}
clientConnection: {{kubeconfig: "{kc}", qps: {self.scheduler_qps}, burst: {self.scheduler_qps * 2}}}
""")
        self._spawn("kube-scheduler", [f"--config={sched_cfg}", "--secure-port=0", "--v=1"])
        # kwok plays 4 pod stages at a time by default: the bottleneck at thousands of pods.
        kwok_cfg = self._write("kwok.yaml", f"""apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  podPlayStageParallelism: {self.kwok_parallelism}
  nodePlayStageParallelism: 8
""")
        self._spawn("kwok", [
            f"--kubeconfig={kc}", f"--config={self.bin_dir / 'kwok-stages.yaml'}", f"--config={kwok_cfg}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake", "--cidr=10.128.0.1/12",
            "--node-ip=10.0.0.2", "--node-lease-duration-seconds=0", "--server-address=127.0.0.1:0", "--v=WARN"])
        self.kubectl("apply", "-f", "-", input=self._nodes_yaml())
        self._wait("kwok nodes", lambda: self.kubectl(
            "wait", "--for=condition=Ready", "node", "--all", "--timeout=2s", check=False).returncode == 0, 60)
        # TaintNodesByCondition marks new nodes not-ready; without a node-lifecycle controller nobody lifts it.
        self.kubectl("taint", "nodes", "--all", "node.kubernetes.io/not-ready:NoSchedule-")
        return self

    def _nodes_yaml(self) -> str:
        docs = []
        for i in range(self.nodes):
            docs.append(f"""apiVersion: v1
kind: Node
metadata:
  name: kwok-node-{i}
  annotations: {{"{KWOK_NODE_ANNOTATION}": fake, node.alpha.kubernetes.io/ttl: "0"}}
  labels: {{type: kwok, kubernetes.io/hostname: kwok-node-{i}, kubernetes.io/os: linux, kubernetes.io/arch: amd64}}
spec:
  taints: [{{key: "{KWOK_NODE_ANNOTATION}", value: fake, effect: NoSchedule}}]
status:
  allocatable: {{cpu: "1000", memory: 4Ti, pods: "{self.node_pods}"}}
  capacity: {{cpu: "1000", memory: 4Ti, pods: "{self.node_pods}"}}
""")
        return "---\n".join(docs)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, kubeconfig: Path | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; raises with kubectl's stderr when check and it fails."""
        cp = subprocess.run([self.bin("kubectl"), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
                            input=input, capture_output=True, text=True, timeout=timeout)
        if check and cp.returncode != 0:
            raise subprocess.CalledProcessError(cp.returncode, cp.args, cp.stdout, cp.stderr)
        return cp

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def stop(self) -> None:
        for name in ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            p = self.procs.pop(name, None)
            if p is None:
                continue
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self._own_workdir and self.workdir and not os.environ.get("AGENTWORLD_KEEP_K8S"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
