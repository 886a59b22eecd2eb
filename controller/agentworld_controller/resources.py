"""Manifests the controller owns for a pool: hardened envd pods, a headless Service, a NetworkPolicy, a PDB."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from agentworld_controller.constants import (
    API_VERSION,
    CONTAINER_NAME,
    ENV_POD_NAME,
    ENV_TOKEN_FILE,
    GRPC_PORT_NAME,
    KIND,
    LABEL_MANAGED_BY,
    LABEL_POOL,
    LABEL_TEMPLATE_HASH,
    MANAGED_BY,
    RUN_AS_USER,
    TOKEN_MOUNT_DIR,
)
from agentworld_controller.spec import PoolSpec

TOKEN_VOLUME = "auth-token"


def owner_reference(pool: dict[str, Any]) -> dict[str, Any]:
    """Controller reference so the garbage collector cascades pool deletion to everything we create."""
    meta = pool["metadata"]
    return {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def selector_labels(pool_name: str) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_POOL: pool_name}


def selector_string(pool_name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in selector_labels(pool_name).items())


def _container(spec: PoolSpec) -> dict[str, Any]:
    env = [
        {"name": "AGENTWORLD_MAX_SESSIONS", "value": str(spec.sessions_per_pod)},
        {"name": "AGENTWORLD_IDLE_TTL_S", "value": str(spec.idle_session_ttl_seconds)},
        {"name": "AGENTWORLD_PORT", "value": str(spec.port)},
        {"name": ENV_POD_NAME, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "AGENTWORLD_POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    if spec.auth_token_secret:
        env.append({"name": ENV_TOKEN_FILE, "value": f"{TOKEN_MOUNT_DIR}/{spec.auth_token_secret.key}"})
        mounts.append({"name": TOKEN_VOLUME, "mountPath": TOKEN_MOUNT_DIR, "readOnly": True})
    if spec.envs:
        env.append({"name": "AGENTWORLD_ENVS", "value": ",".join(spec.envs)})
    env += [{"name": e.name, "value": e.value} for e in spec.env]
    grpc_probe = {"grpc": {"port": spec.port}}
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        # Appended to the env image's entrypoint (`agentworld serve /bundles --host 0.0.0.0 --port 50051`).
        "args": ["--port", str(spec.port), "--max-sessions", str(spec.sessions_per_pod),
                 "--idle-ttl", str(spec.idle_session_ttl_seconds)],
        "ports": [{"name": GRPC_PORT_NAME, "containerPort": spec.port, "protocol": "TCP"}],
        "env": env,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # Native gRPC probes against grpc.health.v1 (envd serves it), no exec helper in the image.
        "startupProbe": {**grpc_probe, "periodSeconds": 2, "failureThreshold": 60},
        "readinessProbe": {**grpc_probe, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {**grpc_probe, "periodSeconds": 10, "failureThreshold": 3, "timeoutSeconds": 5},
        "volumeMounts": mounts,
    }
    if spec.resources:
        container["resources"] = {k: dict(v) for k, v in spec.resources.items()}
    return container


def pod_template(spec: PoolSpec) -> dict[str, Any]:
    """Everything in a pod that depends on the spec (not on the pod's name): hashed to detect outdated pods."""
    sched = spec.scheduling
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationGracePeriodSeconds": 30,
        "containers": [_container(spec)],
        # Session databases live in /tmp (envd's state directory): memory-backed, so they never touch a disk.
        "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}}],
    }
    if spec.auth_token_secret:  # a directory mount, not subPath: kubelet updates it when the Secret rotates
        secret = spec.auth_token_secret
        pod_spec["volumes"].append({"name": TOKEN_VOLUME, "secret": {
            "secretName": secret.name, "items": [{"key": secret.key, "path": secret.key}], "defaultMode": 0o440}})
    if spec.runtime_class_name:
        pod_spec["runtimeClassName"] = spec.runtime_class_name
    if sched.node_selector:
        pod_spec["nodeSelector"] = dict(sched.node_selector)
    if sched.tolerations:
        pod_spec["tolerations"] = list(sched.tolerations)
    if sched.affinity:
        pod_spec["affinity"] = sched.affinity
    if sched.topology_spread_constraints:
        pod_spec["topologySpreadConstraints"] = list(sched.topology_spread_constraints)
    if sched.priority_class_name:
        pod_spec["priorityClassName"] = sched.priority_class_name
    return {"labels": dict(spec.pod_labels), "annotations": dict(spec.pod_annotations), "spec": pod_spec}


def template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def build_pod(pool: dict[str, Any], template: dict[str, Any], tmpl_hash: str, name: str) -> dict[str, Any]:
    pool_name = pool["metadata"]["name"]
    spec = json.loads(json.dumps(template["spec"]))  # deep copy: shared template, per-pod fields below
    spec["hostname"] = name
    spec["subdomain"] = pool_name  # DNS name <pod>.<pool>.<namespace>.svc via the headless Service
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": pool["metadata"]["namespace"],
            "labels": {
                **template["labels"],
                "app.kubernetes.io/name": "agentworld-envd",
                "app.kubernetes.io/instance": pool_name,
                **selector_labels(pool_name),
                LABEL_TEMPLATE_HASH: tmpl_hash,
            },
            "annotations": dict(template["annotations"]),
            "ownerReferences": [owner_reference(pool)],
        },
        "spec": spec,
    }


def _meta(pool: dict[str, Any], kind_labels: dict[str, str] | None = None) -> dict[str, Any]:
    name = pool["metadata"]["name"]
    return {
        "name": name,
        "namespace": pool["metadata"]["namespace"],
        "labels": {**selector_labels(name), **(kind_labels or {})},
        "ownerReferences": [owner_reference(pool)],
    }


def build_service(pool: dict[str, Any], spec: PoolSpec) -> dict[str, Any]:
    """Headless: the gateway resolves individual pods, because a session is pinned to the pod that holds it."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(pool),
        "spec": {
            "clusterIP": "None",
            "selector": selector_labels(pool["metadata"]["name"]),
            "ports": [{"name": GRPC_PORT_NAME, "port": spec.port, "targetPort": GRPC_PORT_NAME, "protocol": "TCP"}],
            "publishNotReadyAddresses": False,
        },
    }


def build_network_policy(pool: dict[str, Any], spec: PoolSpec) -> dict[str, Any]:
    """Generated tool APIs and verifiers are untrusted code: no egress at all, ingress only to the gRPC port."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(pool),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(pool["metadata"]["name"])},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": spec.port}]}],
            "egress": [],
        },
    }


def build_pdb(pool: dict[str, Any], spec: PoolSpec) -> dict[str, Any]:
    """Voluntary evictions (node drains) take at most maxUnavailable pods at once, each killing its sessions."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(pool),
        "spec": {
            "maxUnavailable": spec.disruption.max_unavailable,
            "selector": {"matchLabels": selector_labels(pool["metadata"]["name"])},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
