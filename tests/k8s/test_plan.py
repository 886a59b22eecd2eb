"""The controller's decisions without a cluster: scale-down order, draining, undraining, autoscaling, names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agentworld_controller import resources
from agentworld_controller.plan import AutoscaleMemory, free_names, plan
from agentworld_controller.podview import PodView, pod_view
from agentworld_controller.spec import parse_spec

NOW = datetime(2026, 1, 1, tzinfo=UTC)
POOL = {"metadata": {"name": "p", "namespace": "ns", "uid": "u1", "generation": 3}, "status": {}}


def _pod(i: int, sessions: int = 0, *, ready: bool = True, draining: bool = False, hash_: str = "h",
         deadline: datetime | None = None, owner: str | None = "u1") -> PodView:
    return PodView(namespace="ns", name=f"p-{i}", uid=f"uid{i}", pool="p", owner_uid=owner, template_hash=hash_,
                   phase="Running", ready=ready, scheduled=True, deleting=False, draining=draining,
                   drain_deadline=deadline, sessions=sessions, problem=None)


def test_scale_up_uses_lowest_free_ordinals_and_counts_pending() -> None:
    spec = parse_spec({"image": "i", "replicas": 4})
    p = plan(POOL, spec, [_pod(0), _pod(2)], "h", pending={"p-1"}, now=NOW)
    assert p.create == ["p-3"]
    assert free_names("p", {"p-0", "p-2"}, 3) == ["p-1", "p-3", "p-4"]


def test_scale_down_deletes_empty_and_drains_busy_pods_with_fewest_sessions() -> None:
    spec = parse_spec({"image": "i", "replicas": 2})
    pods = [_pod(0, 5), _pod(1, 0), _pod(2, 3), _pod(3, 1)]
    p = plan(POOL, spec, pods, "h", pending=set(), now=NOW)
    assert p.delete == ["p-1"] and p.drain == ["p-3"]
    assert p.status["replicas"] == 4 and p.status["activeSessions"] == 9


def test_not_ready_pods_go_first_on_scale_down() -> None:
    spec = parse_spec({"image": "i", "replicas": 1})
    p = plan(POOL, spec, [_pod(0, 0), _pod(1, 0, ready=False)], "h", pending=set(), now=NOW)
    assert p.delete == ["p-1"] and not p.drain


def test_draining_pod_deleted_when_empty_or_past_deadline_else_waited_for() -> None:
    spec = parse_spec({"image": "i", "replicas": 1})
    later = NOW + timedelta(seconds=30)
    pods = [_pod(0, 2), _pod(1, 4, draining=True, deadline=later), _pod(2, 0, draining=True, deadline=later),
            _pod(3, 9, draining=True, deadline=NOW - timedelta(seconds=1))]
    p = plan(POOL, spec, pods, "h", pending=set(), now=NOW)
    assert sorted(p.delete) == ["p-2", "p-3"]
    assert p.requeue_after == 30
    assert p.status["drainingReplicas"] == 3 and p.status["replicas"] == 1


def test_scale_up_takes_back_draining_pods_before_creating() -> None:
    spec = parse_spec({"image": "i", "replicas": 3})
    later = NOW + timedelta(seconds=30)
    pods = [_pod(0, 1), _pod(1, 4, draining=True, deadline=later), _pod(2, 7, draining=True, deadline=later)]
    p = plan(POOL, spec, pods, "h", pending=set(), now=NOW)
    assert sorted(p.undrain) == ["p-1", "p-2"] and not p.create and not p.delete


def test_orphans_are_adopted_and_foreign_pods_ignored() -> None:
    spec = parse_spec({"image": "i", "replicas": 1})
    p = plan(POOL, spec, [_pod(0, owner=None), _pod(1, owner="other-uid")], "h", pending=set(), now=NOW)
    assert p.adopt == ["p-0"] and not p.create and not p.delete  # the adopted pod fills the pool
    p = plan(POOL, parse_spec({"image": "i", "replicas": 3}), [_pod(0), _pod(2, owner=None)], "h", pending=set(),
             now=NOW)
    assert p.adopt == ["p-2"] and p.create == ["p-1"]


def test_autoscaling_up_immediately_down_after_stabilisation() -> None:
    spec = parse_spec({"image": "i", "replicas": 2, "sessionsPerPod": 10,
                       "autoscaling": {"minReplicas": 1, "maxReplicas": 10, "targetSessionUtilization": 50,
                                       "scaleDownStabilizationSeconds": 60}})
    mem = AutoscaleMemory()
    up = plan(POOL, spec, [_pod(0, 20), _pod(1, 3)], "h", pending=set(), now=NOW, mem=mem)
    assert up.scale_to == 5 and up.create == ["p-2", "p-3", "p-4"]
    down = plan(POOL, spec, [_pod(0, 1), _pod(1, 0)], "h", pending=set(), now=NOW, mem=mem)
    assert down.scale_to is None  # recommendation 1 < 2, but inside the window
    later = plan(POOL, spec, [_pod(0, 1), _pod(1, 0)], "h", pending=set(), now=NOW + timedelta(seconds=61), mem=mem)
    assert later.scale_to == 1 and later.delete == ["p-1"]


def test_rolling_update_retires_outdated_pods_as_new_ones_become_ready() -> None:
    spec = parse_spec({"image": "i", "replicas": 2})
    old = [_pod(0, 3, hash_="old"), _pod(1, 0, hash_="old")]
    p = plan(POOL, spec, old, "new", pending=set(), now=NOW)
    assert p.create == ["p-2", "p-3"] and not p.delete and not p.drain
    p = plan(POOL, spec, [*old, _pod(2, hash_="new")], "new", pending={"p-3"}, now=NOW)
    assert p.delete == ["p-1"] and not p.drain  # one new pod ready: the empty old one goes
    p = plan(POOL, spec, [*old, _pod(2, hash_="new"), _pod(3, hash_="new")], "new", pending=set(), now=NOW)
    assert sorted(p.delete + p.drain) == ["p-0", "p-1"] and p.drain == ["p-0"]


def test_pod_view_reads_the_session_annotation_and_problems() -> None:
    obj = {"metadata": {"name": "p-7", "namespace": "ns", "uid": "x", "labels": {"agentworld.dev/pool": "p"},
                        "annotations": {"agentworld.dev/active-sessions": "12"},
                        "ownerReferences": [{"uid": "u1", "controller": True}]},
           "spec": {"nodeName": "n"},
           "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                      "containerStatuses": [{"state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}
    v = pod_view(obj)
    assert (v.sessions, v.ready, v.owner_uid, v.ordinal, v.problem) == (12, True, "u1", 7, "CrashLoopBackOff")
    bad = pod_view({**obj, "metadata": {**obj["metadata"], "annotations": {"agentworld.dev/active-sessions": "x"}}})
    assert bad.sessions == 0


def test_template_hash_changes_with_the_spec_only() -> None:
    a = resources.pod_template(parse_spec({"image": "i:1", "replicas": 1}))
    b = resources.pod_template(parse_spec({"image": "i:1", "replicas": 9}))
    c = resources.pod_template(parse_spec({"image": "i:2", "replicas": 1}))
    assert resources.template_hash(a) == resources.template_hash(b) != resources.template_hash(c)


def test_auth_token_secret_is_mounted_as_a_directory_and_named_to_envd() -> None:
    from agentworld_controller.constants import ENV_TOKEN_FILE, TOKEN_MOUNT_DIR

    spec = parse_spec({"image": "i:1", "authTokenSecret": {"name": "aw-auth"}})
    pod = resources.pod_template(spec)["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[ENV_TOKEN_FILE] == f"{TOKEN_MOUNT_DIR}/tokens"
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == TOKEN_MOUNT_DIR)
    assert mount["readOnly"] and "subPath" not in mount  # subPath copies never see a rotated Secret
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "aw-auth"
    # Without it the template (and so every existing pool's hash) is what it was.
    plain = resources.pod_template(parse_spec({"image": "i:1"}))["spec"]
    assert ENV_TOKEN_FILE not in {e["name"] for e in plain["containers"][0]["env"]}
    assert [v["name"] for v in plain["volumes"]] == ["tmp"]
