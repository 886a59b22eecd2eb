"""Pure reconciliation: from a pool, its pods and the time, decide what to create, drain, delete and report.

No API calls here, so every scaling and draining rule is unit-testable without a cluster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from agentworld_controller.podview import PodView
from agentworld_controller.spec import PoolSpec


@dataclass
class Plan:
    replicas: int  # desired serving pods after autoscaling
    scale_to: int | None = None  # autoscaler wants spec.replicas changed to this
    create: list[str] = field(default_factory=list)
    drain: list[str] = field(default_factory=list)  # label draining + deadline
    undrain: list[str] = field(default_factory=list)  # scale-up reuses draining pods before creating new ones
    delete: list[str] = field(default_factory=list)
    adopt: list[str] = field(default_factory=list)  # our labels but no controller reference (orphaned)
    status: dict[str, Any] = field(default_factory=dict)
    requeue_after: float | None = None


@dataclass
class AutoscaleMemory:
    """Per pool: since when the autoscaler has recommended fewer pods (scale-down stabilisation)."""

    low_since: datetime | None = None


def free_names(pool: str, taken: set[str], n: int) -> list[str]:
    """Lowest free ordinals: deterministic names make a create after a restart collide (409) instead of duplicating."""
    out: list[str] = []
    i = 0
    while len(out) < n:
        name = f"{pool}-{i}"
        if name not in taken:
            out.append(name)
        i += 1
    return out


def _drain_order(p: PodView) -> tuple[int, int, int, int]:
    # Pods that cannot hold sessions go first, then the fewest sessions, then the newest (highest ordinal).
    return (1 if p.ready else 0, 1 if p.scheduled else 0, p.sessions, -p.ordinal)


def _autoscale(spec: PoolSpec, sessions: int, current: int, now: datetime, mem: AutoscaleMemory) -> int:
    a = spec.autoscaling
    assert a is not None
    per_pod = spec.sessions_per_pod * a.target_session_utilization / 100.0
    want = math.ceil(sessions / per_pod) if sessions else 0
    want = min(max(want, a.min_replicas), a.max_replicas)
    current_clamped = min(max(current, a.min_replicas), a.max_replicas)
    if want >= current_clamped:
        mem.low_since = None
        return want if want > current else current_clamped
    if mem.low_since is None:
        mem.low_since = now
    if now - mem.low_since >= timedelta(seconds=a.scale_down_stabilization_seconds):
        mem.low_since = None
        return want
    return current_clamped


def _condition(ctype: str, ok: bool, reason: str, message: str, gen: int, previous: dict[str, dict[str, Any]],
               now: datetime) -> dict[str, Any]:
    status = "True" if ok else "False"
    prev = previous.get(ctype)
    since = prev["lastTransitionTime"] if prev and prev.get("status") == status and prev.get("lastTransitionTime") \
        else now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": ctype, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": since, "observedGeneration": gen}


def plan(pool: dict[str, Any], spec: PoolSpec, pods: list[PodView], tmpl_hash: str, *, pending: set[str],
         now: datetime | None = None, mem: AutoscaleMemory | None = None, selector: str = "",
         errors: list[str] | None = None) -> Plan:
    """Decide the next step for one pool.

    `pending` are pod names created but not yet seen in the cache (counted as present, never re-created).
    """
    now = now or datetime.now(UTC)
    mem = mem or AutoscaleMemory()
    meta = pool["metadata"]
    name, uid, gen = meta["name"], meta["uid"], meta.get("generation", 0)

    orphans = [p for p in pods if p.owner_uid is None and not p.deleting]
    ours = [p for p in pods if p.owner_uid == uid] + orphans  # orphans count as ours: they are adopted below
    live = [p for p in ours if not p.deleting]
    finished = [p for p in live if p.finished]
    live = [p for p in live if not p.finished]
    serving = [p for p in live if not p.draining]
    draining = [p for p in live if p.draining]

    sessions = sum(p.sessions for p in live)
    replicas = spec.replicas
    result = Plan(replicas=replicas, adopt=[p.name for p in orphans])
    if spec.autoscaling_enabled:
        target = _autoscale(spec, sessions, replicas, now, mem)
        if target != replicas:
            result.scale_to = replicas = result.replicas = target

    result.delete += [p.name for p in finished]
    current = [p for p in serving if p.template_hash == tmpl_hash]
    outdated = [p for p in serving if p.template_hash != tmpl_hash]
    pending_new = [n for n in pending if n not in {p.name for p in pods}]
    have = len(current) + len(pending_new)

    if have < replicas:
        reusable = sorted((p for p in draining if p.template_hash == tmpl_hash and p.ready),
                          key=lambda p: -p.sessions)[: replicas - have]
        result.undrain += [p.name for p in reusable]
        draining = [p for p in draining if p not in reusable]
        missing = replicas - have - len(reusable)
        taken = {p.name for p in pods} | set(pending)
        result.create += free_names(name, taken, missing)
    elif have > replicas:
        excess = have - replicas
        for p in sorted(current, key=_drain_order)[:excess]:
            (result.delete if (p.sessions == 0 or not p.ready) else result.drain).append(p.name)

    # Rolling replacement: retire outdated pods only as ready up-to-date pods take over their load.
    if outdated:
        ready_current = sum(1 for p in current if p.ready)
        spare = ready_current + sum(1 for p in outdated if p.ready) - replicas
        not_ready = [p for p in outdated if not p.ready]
        result.delete += [p.name for p in not_ready]
        for p in sorted((p for p in outdated if p.ready), key=_drain_order)[: max(0, spare)]:
            (result.delete if p.sessions == 0 else result.drain).append(p.name)

    # Draining pods leave when empty, not ready, or past their deadline.
    next_deadline: float | None = None
    for p in draining:
        deadline = p.drain_deadline or now
        if p.sessions == 0 or not p.ready or deadline <= now:
            result.delete.append(p.name)
        else:
            wait = (deadline - now).total_seconds()
            next_deadline = wait if next_deadline is None else min(next_deadline, wait)
    result.requeue_after = next_deadline

    # Status from the pods, as they are now (the next event brings the effect of this plan).
    ready_serving = [p for p in serving if p.ready]
    capacity = len(ready_serving) * spec.sessions_per_pod
    problems = sorted({f"{p.name}: {p.problem}" for p in live + finished if p.problem})
    errors = errors or []
    utilization = round(100 * sessions / capacity) if capacity else 0
    previous = {c["type"]: c for c in (pool.get("status") or {}).get("conditions") or []}
    updated_ready = sum(1 for p in current if p.ready)
    is_ready = updated_ready >= replicas and not outdated
    progressing = bool(result.create or result.drain or result.delete or draining or pending_new or outdated
                       or any(not p.ready for p in serving))
    degraded = bool(problems or errors)
    if result.create or pending_new:
        prog_reason = "ScalingUp"
    elif outdated:
        prog_reason = "RollingUpdate"
    elif draining or result.drain:
        prog_reason = "Draining"
    elif progressing:
        prog_reason = "PodsStarting"
    else:
        prog_reason = "Stable"
    conditions = [
        _condition("Ready", is_ready, "AllPodsReady" if is_ready else "PodsNotReady",
                   f"{updated_ready}/{replicas} up-to-date pods ready", gen, previous, now),
        _condition("Progressing", progressing, prog_reason,
                   f"{len(draining)} draining, {len(outdated)} outdated, {len(pending_new) + len(result.create)} starting",
                   gen, previous, now),
        _condition("Degraded", degraded, "PodProblems" if problems else ("ApiErrors" if errors else "Healthy"),
                   "; ".join((errors + problems)[:5]) or "no pod problems", gen, previous, now),
    ]
    result.status = {
        "observedGeneration": gen,
        "replicas": len(serving),
        "readyReplicas": len(ready_serving),
        "updatedReplicas": len(current),
        "drainingReplicas": len(draining),
        "activeSessions": sessions,
        "capacity": capacity,
        "utilization": utilization,
        "ready": f"{len(ready_serving)}/{replicas}",
        "sessions": f"{sessions}/{capacity}",
        "selector": selector,
        "conditions": conditions,
    }
    return result
