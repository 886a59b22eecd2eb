"""EnvPool end to end on a real API server: CRD validation, pods and hardening, status, scaling with draining,
autoscaling, rolling updates, cascading deletion, controller restarts."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest

from .conftest import CHART
from .helpers import condition, pods, pool, pool_manifest, ready, set_sessions, wait_for

pytestmark = pytest.mark.timeout(240)


def _ready_pods(api: Any, ns: str, name: str, n: int, timeout_s: float = 45) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        ps = pods(api, ns, name)
        serving = [p for p in ps if p["metadata"]["labels"].get("agentworld.dev/draining") != "true"]
        return ps if len(ps) == n and len(serving) == n and all(ready(p) for p in ps) else None

    return wait_for(check, f"{n} ready pods of {ns}/{name}", timeout_s)


def _pool_ready(api: Any, ns: str, name: str, n: int, timeout_s: float = 30) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = pool(api, ns, name)
        st = obj.get("status") or {}
        c = condition(obj, "Ready")
        ok = (st.get("readyReplicas") == n and st.get("replicas") == n and c and c["status"] == "True"
              and st.get("observedGeneration") == obj["metadata"]["generation"])
        return obj if ok else None

    return wait_for(check, f"{ns}/{name} Ready with {n} pods", timeout_s)


def test_invalid_specs_are_rejected_with_the_crds_message(cluster: Any, chart: Any, namespace: str) -> None:
    cases = [
        ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
         "autoscaling.minReplicas must not exceed autoscaling.maxReplicas"),
        ({"image": "agentworld/env x"}, "spec.image must be an image reference without spaces"),
        ({"sessionsPerPod": 0}, "spec.sessionsPerPod: Invalid value: 0: spec.sessionsPerPod in body should be greater than or equal to 1"),
        ({"replicas": -1}, "should be greater than or equal to 0"),
        ({"imagePullPolicy": "Sometimes"}, 'Unsupported value: "Sometimes"'),
    ]
    for spec, message in cases:
        cp = cluster.kubectl("apply", "-f", "-", input=pool_manifest("bad", namespace, **spec), check=False)
        assert cp.returncode != 0, f"{spec} was accepted"
        assert message in cp.stderr, cp.stderr
    cp = cluster.kubectl("apply", "-f", "-", input=pool_manifest("x" * 51, namespace), check=False)
    assert "EnvPool name must be a DNS-1035 label of at most 50 characters" in cp.stderr, cp.stderr
    cp = cluster.kubectl("apply", "-f", "-", input=pool_manifest("9lives", namespace), check=False)
    assert "EnvPool name must be a DNS-1035 label" in cp.stderr, cp.stderr
    missing = pool_manifest("noimage", namespace, image=None)
    cp = cluster.kubectl("apply", "-f", "-", input=missing, check=False)
    assert 'spec.image: Required value' in cp.stderr, cp.stderr


def test_pool_creates_hardened_pods_and_owned_objects(cluster: Any, controller: Any, api: Any, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=pool_manifest("lib", namespace, replicas=3, runtimeClassName="",
                                                             resources={"requests": {"cpu": "100m"}}))
    ps = _ready_pods(api, namespace, "lib", 3)
    assert sorted(p["metadata"]["name"] for p in ps) == ["lib-0", "lib-1", "lib-2"]
    for p in ps:
        spec = p["spec"]
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["hostname"] == p["metadata"]["name"] and spec["subdomain"] == "lib"
        (c,) = spec["containers"]
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert c[probe]["grpc"]["port"] == 50051
        assert {"name": "AGENTWORLD_MAX_SESSIONS", "value": "8"} in c["env"]
        assert c["args"] == ["--port", "50051", "--max-sessions", "8", "--idle-ttl", "600"]
        assert c["resources"]["requests"]["cpu"] == "100m"
        (owner,) = p["metadata"]["ownerReferences"]
        assert owner["kind"] == "EnvPool" and owner["controller"] is True and owner["blockOwnerDeletion"] is True
        assert p["spec"]["nodeName"].startswith("kwok-node-")
    obj = _pool_ready(api, namespace, "lib", 3)
    st = obj["status"]
    assert st["capacity"] == 24 and st["activeSessions"] == 0 and st["ready"] == "3/3"
    assert st["selector"] == "app.kubernetes.io/managed-by=agentworld-controller,agentworld.dev/pool=lib"
    out = cluster.kubectl("get", "envpool", "lib", "-n", namespace).stdout
    assert out.split("\n")[0].split() == ["NAME", "READY", "SESSIONS", "AGE"], out
    assert out.split("\n")[1].split()[:3] == ["lib", "3/3", "0/24"], out

    svc = cluster.kubectl("get", "service", "lib", "-n", namespace, "-o", "jsonpath={.spec.clusterIP}").stdout
    assert svc == "None"
    egress = cluster.kubectl("get", "networkpolicy", "lib", "-n", namespace, "-o",
                             "jsonpath={.spec.policyTypes}").stdout
    assert "Egress" in egress
    assert "egress" not in cluster.kubectl("get", "networkpolicy", "lib", "-n", namespace, "-o",
                                           "jsonpath={.spec}").stdout.replace('"policyTypes"', "")
    pdb = cluster.kubectl("get", "pdb", "lib", "-n", namespace, "-o", "jsonpath={.spec.maxUnavailable}").stdout
    assert pdb == "1"


def test_scale_up_and_down_respects_draining(cluster: Any, controller: Any, api: Any, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=pool_manifest("web", namespace, replicas=2,
                                                             drainGracePeriodSeconds=600))
    _ready_pods(api, namespace, "web", 2)
    cluster.kubectl("scale", "envpool/web", "--replicas=5", "-n", namespace)
    _ready_pods(api, namespace, "web", 5)
    _pool_ready(api, namespace, "web", 5)
    for name, n in {"web-0": 5, "web-1": 0, "web-2": 3, "web-3": 1, "web-4": 2}.items():
        set_sessions(api, namespace, name, n)
    wait_for(lambda: pool(api, namespace, "web")["status"].get("activeSessions") == 11, "sessions in status")

    cluster.kubectl("scale", "envpool/web", "--replicas=3", "-n", namespace)
    # The two pods with the fewest sessions leave: web-1 (empty) at once, web-3 (1 session) drains first.
    def drained() -> bool:
        ps = {p["metadata"]["name"]: p for p in pods(api, namespace, "web")}
        return set(ps) == {"web-0", "web-2", "web-3", "web-4"} and \
            ps["web-3"]["metadata"]["labels"].get("agentworld.dev/draining") == "true"

    wait_for(drained, "web-1 deleted and web-3 draining")
    st = wait_for(lambda: (s := pool(api, namespace, "web")["status"]).get("drainingReplicas") == 1 and s, "status")
    assert st["replicas"] == 3 and st["activeSessions"] == 11
    assert condition(pool(api, namespace, "web"), "Progressing")["reason"] == "Draining"
    time.sleep(1.0)  # still there while it holds a session
    assert "web-3" in {p["metadata"]["name"] for p in pods(api, namespace, "web")}
    set_sessions(api, namespace, "web-3", 0)  # its last session ended
    wait_for(lambda: {p["metadata"]["name"] for p in pods(api, namespace, "web")} == {"web-0", "web-2", "web-4"},
             "web-3 deleted once empty")
    _pool_ready(api, namespace, "web", 3)

    # Scaling up again reuses free ordinals.
    cluster.kubectl("scale", "envpool/web", "--replicas=4", "-n", namespace)
    ps = _ready_pods(api, namespace, "web", 4)
    assert {p["metadata"]["name"] for p in ps} == {"web-0", "web-1", "web-2", "web-4"}


def test_drain_grace_period_and_undrain(cluster: Any, controller: Any, api: Any, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=pool_manifest("g", namespace, replicas=3, drainGracePeriodSeconds=3))
    _ready_pods(api, namespace, "g", 3)
    for i in range(3):
        set_sessions(api, namespace, f"g-{i}", 4 - i)
    wait_for(lambda: pool(api, namespace, "g")["status"].get("activeSessions") == 9, "sessions")
    cluster.kubectl("scale", "envpool/g", "--replicas=2", "-n", namespace)
    wait_for(lambda: any(p["metadata"]["labels"].get("agentworld.dev/draining") == "true"
                         for p in pods(api, namespace, "g")), "a draining pod")
    (d,) = [p for p in pods(api, namespace, "g") if p["metadata"]["labels"].get("agentworld.dev/draining")]
    assert d["metadata"]["name"] == "g-2"  # fewest sessions (2)
    assert "agentworld.dev/drain-deadline" in d["metadata"]["annotations"]
    t0 = time.monotonic()
    wait_for(lambda: "g-2" not in {p["metadata"]["name"] for p in pods(api, namespace, "g")},
             "g-2 deleted after the grace period", 20)
    assert time.monotonic() - t0 >= 1.0  # not before its deadline

    # A scale-up while a pod drains takes the draining pod back instead of creating one.
    cluster.kubectl("patch", "envpool/g", "-n", namespace, "--type=merge", "-p",
                    '{"spec":{"drainGracePeriodSeconds":600}}')
    cluster.kubectl("scale", "envpool/g", "--replicas=1", "-n", namespace)
    wait_for(lambda: any(p["metadata"]["labels"].get("agentworld.dev/draining") == "true"
                         for p in pods(api, namespace, "g")), "a draining pod")
    uid_before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods(api, namespace, "g")}
    cluster.kubectl("scale", "envpool/g", "--replicas=2", "-n", namespace)
    ps = _ready_pods(api, namespace, "g", 2)
    assert {p["metadata"]["name"]: p["metadata"]["uid"] for p in ps} == uid_before


def test_autoscaling_follows_reported_sessions(cluster: Any, controller: Any, api: Any, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=pool_manifest(
        "auto", namespace, replicas=1, sessionsPerPod=10,
        autoscaling={"minReplicas": 1, "maxReplicas": 6, "targetSessionUtilization": 50,
                     "scaleDownStabilizationSeconds": 1}))
    _ready_pods(api, namespace, "auto", 1)
    set_sessions(api, namespace, "auto-0", 12)  # 12 sessions / (10 * 50%) -> 3 pods
    wait_for(lambda: pool(api, namespace, "auto")["spec"]["replicas"] == 3, "autoscaled to 3")
    _ready_pods(api, namespace, "auto", 3)
    obj = _pool_ready(api, namespace, "auto", 3)
    assert obj["status"]["utilization"] == 40 and obj["status"].get("lastScaleTime")
    set_sessions(api, namespace, "auto-0", 100)  # capped at maxReplicas
    wait_for(lambda: pool(api, namespace, "auto")["spec"]["replicas"] == 6, "autoscaled to max 6")
    set_sessions(api, namespace, "auto-0", 0)  # back to minReplicas after the stabilisation window
    wait_for(lambda: pool(api, namespace, "auto")["spec"]["replicas"] == 1, "scaled back down to 1", 20)
    _ready_pods(api, namespace, "auto", 1)


def test_rolling_update_replaces_outdated_pods(cluster: Any, controller: Any, api: Any, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=pool_manifest("roll", namespace, replicas=2))
    old = {p["metadata"]["labels"]["agentworld.dev/template-hash"] for p in _ready_pods(api, namespace, "roll", 2)}
    cluster.kubectl("patch", "envpool/roll", "-n", namespace, "--type=merge", "-p",
                    '{"spec":{"image":"agentworld/env-mini-library:v2"}}')

    def rolled() -> bool:
        ps = pods(api, namespace, "roll")
        return len(ps) == 2 and all(ready(p) and p["spec"]["containers"][0]["image"].endswith(":v2") for p in ps)

    wait_for(rolled, "pods replaced with the new image", 45)
    new = {p["metadata"]["labels"]["agentworld.dev/template-hash"] for p in pods(api, namespace, "roll")}
    assert new.isdisjoint(old)
    _pool_ready(api, namespace, "roll", 2)


def test_deleting_the_pool_cascades(cluster: Any, controller: Any, api: Any, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=pool_manifest("gone", namespace, replicas=3))
    _ready_pods(api, namespace, "gone", 3)
    wait_for(lambda: cluster.kubectl("get", "pdb", "gone", "-n", namespace, check=False).returncode == 0, "pdb")
    cluster.kubectl("delete", "envpool", "gone", "-n", namespace, "--wait=true", "--timeout=60s")
    # kube-controller-manager's garbage collector follows our ownerReferences.
    wait_for(lambda: not pods(api, namespace, "gone", include_deleting=True), "pods garbage-collected", 45)
    for kind in ("service", "networkpolicy", "pdb"):
        wait_for(lambda kind=kind: cluster.kubectl("get", kind, "gone", "-n", namespace, check=False).returncode != 0,
                 f"{kind} garbage-collected", 30)


def test_controller_restart_is_idempotent(cluster: Any, controller: Any, api: Any, namespace: str) -> None:
    # The controller's counters are global: let earlier tests' namespaces finish terminating first.
    wait_for(lambda: cluster.kubectl("get", "namespaces", "-o", "name").stdout.count("namespace/t-") == 1,
             "earlier test namespaces deleted", 60, interval_s=0.5)
    cluster.kubectl("apply", "-f", "-", input=pool_manifest("rs", namespace, replicas=4))
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in _ready_pods(api, namespace, "rs", 4)}
    controller.stop()
    try:
        # While it is down: a pod disappears and an orphan (our labels, no owner) shows up.
        cluster.kubectl("delete", "pod", "rs-1", "-n", namespace, "--wait=true")
        orphan = cluster.kubectl("get", "pod", "rs-2", "-n", namespace, "-o", "json").stdout
        o = json.loads(orphan)
        cluster.kubectl("patch", "pod", "rs-2", "-n", namespace, "--type=json", "-p",
                        '[{"op":"remove","path":"/metadata/ownerReferences"}]')
        assert "ownerReferences" not in json.loads(
            cluster.kubectl("get", "pod", "rs-2", "-n", namespace, "-o", "json").stdout)["metadata"]
    finally:
        controller.start()
    ps = _ready_pods(api, namespace, "rs", 4)
    after = {p["metadata"]["name"]: p["metadata"]["uid"] for p in ps}
    assert set(after) == set(before)  # same names: rs-1 recreated, nothing duplicated
    assert after["rs-0"] == before["rs-0"] and after["rs-3"] == before["rs-3"]
    assert after["rs-2"] == o["metadata"]["uid"]  # adopted, not replaced
    wait_for(lambda: all(p["metadata"].get("ownerReferences") for p in pods(api, namespace, "rs")), "adoption")
    # Restart again with everything in place: nothing is created or deleted.
    m = controller.metrics()
    assert m["pods_created"] == 1 and m["pods_deleted"] == 0, m  # only rs-1; rs-2 adopted, nothing extra
    controller.stop()
    controller.start()
    time.sleep(6)  # more than a resync period (5 s in these tests)
    m = controller.metrics()
    assert m["pods_created"] == 0 and m["pods_deleted"] == 0, m
    assert {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods(api, namespace, "rs")} == after


def test_create_errors_surface_as_degraded(cluster: Any, controller: Any, api: Any, namespace: str) -> None:
    # A RuntimeClass the cluster does not have (gVisor not installed): the API server rejects every pod; the pool
    # reports Degraded with the API server's reason instead of hammering it.
    cluster.kubectl("apply", "-f", "-", input=pool_manifest("rc", namespace, replicas=3, runtimeClassName="gvisor"))

    def degraded() -> dict[str, Any] | None:
        c = condition(pool(api, namespace, "rc"), "Degraded")
        return c if c and c["status"] == "True" else None

    c = wait_for(degraded, "Degraded condition", 30)
    assert c["reason"] == "ApiErrors" and 'RuntimeClass "gvisor" not found' in c["message"], c
    assert pods(api, namespace, "rc") == []
    assert condition(pool(api, namespace, "rc"), "Ready")["status"] == "False"


def test_chart_lint_and_template(cluster: Any, chart: Any) -> None:
    helm = cluster.bin("helm")
    lint = subprocess.run([helm, "lint", str(CHART), "--strict"], capture_output=True, text=True)
    assert lint.returncode == 0 and "0 chart(s) failed" in lint.stdout, lint.stdout + lint.stderr
    for extra in ([], ["--set", "controller.namespaced=true", "--set", "examplePool.enabled=true"]):
        t = subprocess.run([helm, "template", "aw", str(CHART), "--namespace", "ns1", "--include-crds", *extra],
                           capture_output=True, text=True)
        assert t.returncode == 0, t.stderr
        # Authentication is on by default: a generated token Secret, the gateway requires and presents it.
        assert "kind: Secret" in t.stdout and "--auth-token-file=/var/run/agentworld/auth/tokens" in t.stdout
        # The rendered manifests are valid for the real API server.
        dry = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=t.stdout.replace(
            "namespace: ns1", "namespace: default"), check=False)
        assert dry.returncode == 0, dry.stderr
    off = subprocess.run([helm, "template", "aw", str(CHART), "--set", "auth.enabled=false"], capture_output=True,
                         text=True)
    assert off.returncode == 0 and "auth-token" not in off.stdout, off.stderr


def test_pdb_budget_is_computed_through_the_scale_subresource(cluster: Any, controller: Any, api: Any,
                                                              namespace: str) -> None:
    # kube-controller-manager's disruption controller finds the pool as the pods' controller and reads its scale
    # subresource (it rediscovers new CRDs every ~30 s, so this test runs last).
    cluster.kubectl("apply", "-f", "-", input=pool_manifest("budget", namespace, replicas=3))
    _ready_pods(api, namespace, "budget", 3)

    def status() -> dict[str, Any] | None:
        out = cluster.kubectl("get", "pdb", "budget", "-n", namespace, "-o", "json", check=False)
        st = json.loads(out.stdout).get("status", {}) if out.returncode == 0 else {}
        return st if st.get("expectedPods") == 3 else None

    st = wait_for(status, "PDB status", 60, interval_s=1)
    assert st["disruptionsAllowed"] == 1 and st["currentHealthy"] == 3
