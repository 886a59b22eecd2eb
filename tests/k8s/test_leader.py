"""Controller high availability on a real API server: two controller processes elect a leader through the chart's
Lease; killing the leader hands the pools to the standby without touching their pods; the Lease loop on its own."""

from __future__ import annotations

import json
import logging
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from agentworld_controller.constants import (
    ENV_CONTROLLER_POD_NAME,
    ENV_CONTROLLER_POD_NAMESPACE,
    LEASE_DURATION_S,
    LEASE_NAME,
    RENEW_DEADLINE_S,
    RETRY_PERIOD_S,
)
from agentworld_controller.leader import LeaderElector
from agentworld_controller.main import build_parser

from .conftest import CHART, RELEASE_NS, ControllerProcess
from .helpers import pods, pool, pool_manifest, ready, wait_for

pytestmark = pytest.mark.timeout(240)

# Short leases so a takeover after a kill takes seconds (lease > renew deadline > retry period, as in the chart).
FAST = ["--leader-election-lease-seconds=4", "--leader-election-renew-deadline-seconds=3",
        "--leader-election-retry-seconds=1"]


def _lease(api: Any, namespace: str = RELEASE_NS, name: str = LEASE_NAME) -> dict[str, Any]:
    """The Lease's spec ({} while it does not exist)."""
    try:
        resp = client.CoordinationV1Api(api).read_namespaced_lease(name, namespace, _preload_content=False)
    except ApiException as exc:
        if exc.status == 404:
            return {}
        raise
    return json.loads(resp.data).get("spec") or {}


def _delete_lease(api: Any) -> None:
    try:
        client.CoordinationV1Api(api).delete_namespaced_lease(LEASE_NAME, RELEASE_NS)
    except ApiException as exc:
        if exc.status != 404:
            raise


def _ready_pods(api: Any, ns: str, name: str, n: int) -> dict[str, str]:
    """name -> uid once the pool has exactly n ready pods."""
    def check() -> dict[str, str] | None:
        ps = pods(api, ns, name)
        return {p["metadata"]["name"]: p["metadata"]["uid"] for p in ps} if len(ps) == n and all(
            ready(p) for p in ps) else None

    return wait_for(check, f"{n} ready pods of {ns}/{name}", 45)


class Candidates:
    """Controller processes campaigning for the chart's Lease as the chart's ServiceAccount (so the leader-election
    Role is what lets them in), each named by its holderIdentity."""

    def __init__(self, cluster: Any, api: Any, kubeconfig: Path, tmp: Path, namespace: str) -> None:
        self.cluster, self.api, self.kubeconfig, self.tmp, self.namespace = cluster, api, kubeconfig, tmp, namespace
        self.procs: dict[str, ControllerProcess] = {}

    def start(self, identity: str, *args: str) -> ControllerProcess:
        # --namespace: this test's pools only, so the counters in /metrics.json are this test's.
        p = ControllerProcess(self.cluster, self.kubeconfig, self.tmp / f"{identity}.log", [
            "--leader-elect", f"--leader-election-identity={identity}", f"--leader-election-namespace={RELEASE_NS}",
            f"--namespace={self.namespace}", *args])
        p.start()
        self.procs[identity] = p
        return p

    def running(self) -> dict[str, ControllerProcess]:
        return {n: p for n, p in self.procs.items() if p.proc is not None}

    def leader(self) -> str | None:
        """The Lease holder, when it is one of the running processes, reports leader=1 and is healthy (caches
        synced), and every other running process reports leader=0."""
        holder = _lease(self.api).get("holderIdentity")
        running = self.running()
        if holder not in running:
            return None
        flags = {n: p.metrics()["leader"] for n, p in running.items()}
        ok = flags == {n: int(n == holder) for n in running} and running[holder].healthy()
        return holder if ok else None

    def stop_all(self) -> None:
        for p in self.procs.values():
            p.stop()

    def logs(self) -> str:
        return "\n".join(f"== {n}\n{p.log_path.read_text()[-3000:]}" for n, p in self.procs.items())


@pytest.fixture
def candidates(cluster: Any, chart: Any, controller: ControllerProcess, api: Any, namespace: str,
               tmp_path: Path) -> Iterator[Candidates]:
    # The session's controller runs without leader election and would reconcile these pools as well.
    controller.stop()
    _delete_lease(api)
    c = Candidates(cluster, api, controller.kubeconfig, tmp_path, namespace)
    try:
        yield c
    finally:
        c.stop_all()
        print(c.logs())  # shown when the test failed
        _delete_lease(api)
        controller.start()


def test_killed_leader_is_replaced_and_pods_are_untouched(cluster: Any, api: Any, namespace: str,
                                                           candidates: Candidates) -> None:
    candidates.start("a", *FAST)
    candidates.start("b", *FAST)
    first = wait_for(candidates.leader, "exactly one leader", 30)
    second = "b" if first == "a" else "a"
    leader, standby = candidates.procs[first], candidates.procs[second]

    cluster.kubectl("apply", "-f", "-", input=pool_manifest("ha", namespace, replicas=3))
    before = _ready_pods(api, namespace, "ha", 3)
    m = standby.metrics()
    assert m["leader"] == 0 and m["reconciles"] == 0 and m["pods_created"] == 0 and m["pools"] == 0, m
    transitions = _lease(api)["leaseTransitions"]

    leader.kill()  # no shutdown code runs: the Lease is left to expire
    def took_over() -> bool:
        spec = _lease(api)
        return spec.get("holderIdentity") == second and spec.get("leaseTransitions") == transitions + 1 and \
            candidates.leader() == second

    wait_for(took_over, f"{second} to take the Lease over", 60)
    # The new leader reconciles the pool as it finds it: nothing created, nothing deleted.
    wait_for(lambda: (m := standby.metrics())["reconciles"] >= 1 and m["pods"] == 3, "the new leader's reconcile")
    m = standby.metrics()
    assert m["pods_created"] == 0 and m["pods_deleted"] == 0, m
    assert _ready_pods(api, namespace, "ha", 3) == before

    # The killed process comes back (as a kubelet would restart it): a standby now.
    candidates.start(f"{first}-restarted", *FAST)
    wait_for(lambda: candidates.leader() == second, "the restarted process to stay a standby")

    cluster.kubectl("scale", "envpool/ha", "--replicas=5", "-n", namespace)
    after = _ready_pods(api, namespace, "ha", 5)
    assert {n: after[n] for n in before} == before  # the original pods, same uids
    wait_for(lambda: (p := pool(api, namespace, "ha")).get("status", {}).get("observedGeneration") ==
             p["metadata"]["generation"] and p["status"].get("readyReplicas") == 5, "status of the scaled pool")
    # A few more reconciles (pod events, the 5 s resync) change nothing: exactly the two new pods, once.
    r = standby.metrics()["reconciles"]
    wait_for(lambda: standby.metrics()["reconciles"] >= r + 2, "more reconciles", 30)
    m = standby.metrics()
    assert m["pods_created"] == 2 and m["pods_deleted"] == 0, m
    assert candidates.procs[f"{first}-restarted"].metrics()["reconciles"] == 0
    assert {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods(api, namespace, "ha",
                                                                         include_deleting=True)} == after


def test_sigterm_releases_the_lease(cluster: Any, api: Any, namespace: str, candidates: Candidates) -> None:
    # A lease far longer than the wait below: only a release lets the standby in that fast.
    slow = ["--leader-election-lease-seconds=120", "--leader-election-renew-deadline-seconds=60",
            "--leader-election-retry-seconds=1"]
    candidates.start("a", *slow)
    candidates.start("b", *slow)
    first = wait_for(candidates.leader, "exactly one leader", 30)
    second = "b" if first == "a" else "a"
    transitions = _lease(api)["leaseTransitions"]

    candidates.procs[first].stop()  # SIGTERM
    assert candidates.procs[first].returncode == 0
    assert _lease(api).get("holderIdentity") in (None, "", second)  # released, not left to expire
    wait_for(lambda: candidates.leader() == second and _lease(api)["leaseTransitions"] == transitions + 1,
             f"{second} to take the released Lease", 30)


def test_leader_that_cannot_renew_exits(cluster: Any, api: Any, namespace: str, candidates: Candidates) -> None:
    a = candidates.start("a", *FAST)
    wait_for(lambda: candidates.leader() == "a", "a to lead", 30)
    # Someone else holds the Lease now (what a partitioned leader finds when it reaches the API server again).
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    client.CoordinationV1Api(api).patch_namespaced_lease(LEASE_NAME, RELEASE_NS, {"spec": {
        "holderIdentity": "intruder", "leaseDurationSeconds": 120, "renewTime": now, "acquireTime": now}},
        _content_type="application/merge-patch+json")
    assert a.proc is not None
    wait_for(lambda: a.proc.poll() is not None, "the deposed leader to exit", 30)
    assert a.proc.returncode == 1
    assert "lost the leader lease" in a.log_path.read_text()
    assert _lease(api)["holderIdentity"] == "intruder"  # it never wrote over the new holder


# -- the Lease loop in-process ----------------------------------------------------------------------------------
def _elector(api: Any, namespace: str, identity: str, name: str = "unit", **kw: Any) -> LeaderElector:
    return LeaderElector(api, namespace, name, identity, lease_duration_s=3, renew_deadline_s=2, retry_period_s=0.5,
                         **kw)


def test_elector_one_leader_release_and_conflict(api: Any, namespace: str, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    started = {n: threading.Event() for n in "ab"}
    stopped = {n: threading.Event() for n in "ab"}
    electors = {n: _elector(api, namespace, n, on_started_leading=started[n].set, on_stopped_leading=stopped[n].set)
                for n in "ab"}
    stop = threading.Event()
    threads = [threading.Thread(target=e.run, args=(stop,), daemon=True) for e in electors.values()]
    for t in threads:
        t.start()
    try:
        first = wait_for(lambda: [n for n, e in electors.items() if e.is_leader] == [h := _lease(
            api, namespace, "unit").get("holderIdentity")] and h, "one leader")
        second = "b" if first == "a" else "a"
        assert started[first].wait(5) and not started[second].is_set()
        # It renews (renewTime moves on) and the other stays a standby meanwhile.
        renewed = _lease(api, namespace, "unit")["renewTime"]
        wait_for(lambda: _lease(api, namespace, "unit")["renewTime"] != renewed, "a renewal")
        assert not electors[second].is_leader and not started[second].is_set()
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    # A clean stop releases the Lease: free at once for the next candidate, no lease duration to wait.
    assert stopped[first].is_set() and not stopped[second].is_set()
    spec = _lease(api, namespace, "unit")
    assert not spec.get("holderIdentity") and spec["leaseDurationSeconds"] == 1, spec
    transitions = spec["leaseTransitions"]

    # Both read the free Lease; the first write wins and the second, carrying the same stale resourceVersion, gets
    # 409 Conflict from the API server.
    a, b = electors["a"], electors["b"]
    stale = b._read(5)
    assert a.try_acquire_or_renew()
    monkeypatch.setattr(b, "_read", lambda timeout_s: stale)
    caplog.set_level(logging.DEBUG, logger="agentworld_controller.leader")
    assert not b.try_acquire_or_renew()
    assert "conflict, another candidate wrote it first" in caplog.text
    spec = _lease(api, namespace, "unit")
    assert spec["holderIdentity"] == "a" and spec["leaseTransitions"] == transitions + 1, spec


def test_elector_takes_an_expired_lease_and_races_have_one_winner(api: Any, namespace: str) -> None:
    a, b = _elector(api, namespace, "a"), _elector(api, namespace, "b")
    assert a.try_acquire_or_renew()  # creates the Lease and takes it
    assert not b.try_acquire_or_renew()  # held, and just renewed as far as b knows
    # a stops renewing (a dead process): b takes over once the record has not changed for the lease duration.
    wait_for(b.try_acquire_or_renew, "b to take the expired Lease", 20, interval_s=0.5)
    spec = _lease(api, namespace, "unit")
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1, spec
    assert not a.try_acquire_or_renew()  # a comes back: b's record is fresh

    # Candidates racing for a Lease that does not exist yet (create) and then for a free one (patch): one wins each.
    for _ in range(2):
        racers = [_elector(api, namespace, f"r{i}", name="race") for i in range(4)]
        won = _race(racers)
        assert len(won) == 1 and _lease(api, namespace, "race")["holderIdentity"] == won[0].identity, won
        won[0].release()


def _race(electors: list[LeaderElector]) -> list[LeaderElector]:
    """Every elector's try_acquire_or_renew at the same moment; the ones that won."""
    barrier = threading.Barrier(len(electors))
    won: list[LeaderElector] = []

    def race(e: LeaderElector) -> None:
        barrier.wait()
        if e.try_acquire_or_renew():
            won.append(e)

    threads = [threading.Thread(target=race, args=(e,)) for e in electors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return won


def test_lease_settings_validated() -> None:
    with pytest.raises(ValueError, match="renew deadline"):
        LeaderElector(client.ApiClient(), "ns", "x", "me", lease_duration_s=4, renew_deadline_s=4, retry_period_s=1)


# -- the chart --------------------------------------------------------------------------------------------------
def _render(cluster: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([cluster.bin("helm"), "template", "agentworld", str(CHART), "--namespace", "ns1", *args],
                          capture_output=True, text=True)


def test_chart_runs_two_replicas_with_the_codes_leader_election(cluster: Any) -> None:
    t = _render(cluster)
    assert t.returncode == 0, t.stderr
    docs = [d for d in yaml.safe_load_all(t.stdout) if d]
    (dep,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == LEASE_NAME]
    assert dep["spec"]["replicas"] == 2 and dep["spec"]["strategy"]["type"] == "RollingUpdate"
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["python", "-m", "agentworld_controller"]
    a = build_parser().parse_args(c["args"])  # every flag the chart passes exists
    # The chart's defaults are the code's: the Lease's name, its timings.
    assert a.leader_elect and a.leader_election_id == LEASE_NAME
    assert (a.leader_election_lease_seconds, a.leader_election_renew_deadline_seconds,
            a.leader_election_retry_seconds) == (LEASE_DURATION_S, RENEW_DEADLINE_S, RETRY_PERIOD_S)
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
    assert env == {ENV_CONTROLLER_POD_NAME: "metadata.name", ENV_CONTROLLER_POD_NAMESPACE: "metadata.namespace"}
    (role,) = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == f"{LEASE_NAME}-leader-election"]
    assert role["metadata"]["namespace"] == "ns1"
    assert {(tuple(r["verbs"]), tuple(r.get("resourceNames", ()))) for r in role["rules"]
            if r["resources"] == ["leases"]} == {(("create",), ()), (("get", "patch"), (LEASE_NAME,))}

    single = _render(cluster, "--set", "controller.leaderElection.enabled=false", "--set", "controller.replicas=1")
    assert single.returncode == 0, single.stderr
    (dep,) = [d for d in yaml.safe_load_all(single.stdout) if d and d["kind"] == "Deployment"
              and d["metadata"]["name"] == LEASE_NAME]
    assert dep["spec"]["strategy"]["type"] == "Recreate" and "--leader-elect" not in dep["spec"]["template"][
        "spec"]["containers"][0]["args"]
    two_active = _render(cluster, "--set", "controller.leaderElection.enabled=false")
    assert two_active.returncode != 0 and "needs controller.leaderElection.enabled" in two_active.stderr

