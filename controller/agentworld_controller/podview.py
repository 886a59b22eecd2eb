"""A slim, immutable view of a pod: all the controller needs, so 10,000 cached pods stay small and cheap to parse."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agentworld_controller.constants import (
    ANN_ACTIVE_SESSIONS,
    ANN_DRAIN_DEADLINE,
    LABEL_DRAINING,
    LABEL_POOL,
    LABEL_TEMPLATE_HASH,
)

_BAD_WAITING = {"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError",
                "CreateContainerError", "InvalidImageName", "RunContainerError"}
_ORDINAL = re.compile(r"-(\d+)$")


@dataclass(frozen=True, slots=True)
class PodView:
    namespace: str
    name: str
    uid: str
    pool: str
    owner_uid: str | None
    template_hash: str
    phase: str
    ready: bool
    scheduled: bool
    deleting: bool
    draining: bool
    drain_deadline: datetime | None
    sessions: int
    problem: str | None  # e.g. "CrashLoopBackOff" — feeds the Degraded condition

    @property
    def ordinal(self) -> int:
        m = _ORDINAL.search(self.name)
        return int(m.group(1)) if m else -1

    @property
    def finished(self) -> bool:
        return self.phase in ("Failed", "Succeeded")


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _sessions(value: str | None) -> int:
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0


def pod_view(obj: dict[str, Any]) -> PodView:
    meta = obj.get("metadata", {})
    labels = meta.get("labels") or {}
    ann = meta.get("annotations") or {}
    status = obj.get("status") or {}
    owner = next((o.get("uid") for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    problem = None
    for cs in status.get("containerStatuses") or []:
        reason = ((cs.get("state") or {}).get("waiting") or {}).get("reason")
        if reason in _BAD_WAITING:
            problem = reason
    if status.get("phase") == "Failed":
        problem = status.get("reason") or "PodFailed"
    return PodView(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        pool=labels.get(LABEL_POOL, ""),
        owner_uid=owner,
        template_hash=labels.get(LABEL_TEMPLATE_HASH, ""),
        phase=status.get("phase", "Pending"),
        ready=ready and not meta.get("deletionTimestamp"),
        scheduled=bool((obj.get("spec") or {}).get("nodeName")),
        deleting=bool(meta.get("deletionTimestamp")),
        draining=labels.get(LABEL_DRAINING) == "true",
        drain_deadline=_parse_time(ann.get(ANN_DRAIN_DEADLINE)),
        sessions=_sessions(ann.get(ANN_ACTIVE_SESSIONS)),
        problem=problem,
    )
