"""Typed view of an EnvPool spec; defaults mirror the CRD's so objects created before a default existed still work."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentworld_controller.constants import DEFAULT_GRPC_PORT, TOKEN_SECRET_KEY


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class Autoscaling(_Model):
    enabled: bool = True
    min_replicas: int = Field(1, alias="minReplicas", ge=0)
    max_replicas: int = Field(alias="maxReplicas", ge=1)
    target_session_utilization: int = Field(70, alias="targetSessionUtilization", ge=1, le=100)
    scale_down_stabilization_seconds: int = Field(120, alias="scaleDownStabilizationSeconds", ge=0)


class Scheduling(_Model):
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] | None = None
    topology_spread_constraints: list[dict[str, Any]] = Field(default_factory=list, alias="topologySpreadConstraints")
    priority_class_name: str | None = Field(None, alias="priorityClassName")


class EnvVar(_Model):
    name: str
    value: str = ""


class AuthTokenSecret(_Model):
    """The Secret whose key holds envd's bearer tokens (one per line): the gateway presents one of them."""

    name: str = Field(min_length=1)
    key: str = TOKEN_SECRET_KEY


class Disruption(_Model):
    max_unavailable: int | str = Field(1, alias="maxUnavailable")


class PoolSpec(_Model):
    image: str = Field(min_length=1)
    image_pull_policy: str = Field("IfNotPresent", alias="imagePullPolicy")
    envs: list[str] = Field(default_factory=list)
    replicas: int = Field(1, ge=0)
    sessions_per_pod: int = Field(64, alias="sessionsPerPod", ge=1)
    idle_session_ttl_seconds: int = Field(600, alias="idleSessionTTLSeconds", ge=0)
    drain_grace_period_seconds: int = Field(300, alias="drainGracePeriodSeconds", ge=0)
    port: int = Field(DEFAULT_GRPC_PORT, ge=1, le=65535)
    autoscaling: Autoscaling | None = None
    resources: dict[str, dict[str, int | str]] = Field(default_factory=dict)
    runtime_class_name: str | None = Field(None, alias="runtimeClassName")
    auth_token_secret: AuthTokenSecret | None = Field(None, alias="authTokenSecret")
    env: list[EnvVar] = Field(default_factory=list)
    pod_labels: dict[str, str] = Field(default_factory=dict, alias="podLabels")
    pod_annotations: dict[str, str] = Field(default_factory=dict, alias="podAnnotations")
    scheduling: Scheduling = Field(default_factory=Scheduling)
    disruption: Disruption = Field(default_factory=Disruption)

    @property
    def autoscaling_enabled(self) -> bool:
        return self.autoscaling is not None and self.autoscaling.enabled


class InvalidSpec(ValueError):
    """The stored EnvPool spec cannot be used (the CRD schema normally rejects this at admission)."""


def parse_spec(raw: dict[str, Any] | None) -> PoolSpec:
    try:
        return PoolSpec.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidSpec(problems) from exc
