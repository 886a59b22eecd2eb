"""Per-environment summary of a rollout batch: counts, mean reward, latencies; as data and as a rich table."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from agentworld.rollout.trajectory import Trajectory

if TYPE_CHECKING:
    from rich.table import Table


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[k]


def summarize(trajectories: Iterable[Trajectory]) -> dict[str, dict[str, Any]]:
    """env_id -> summary row (plus an `ALL` row when there is more than one environment)."""
    groups: dict[str, list[Trajectory]] = defaultdict(list)
    for t in trajectories:
        groups[t.env_id].append(t)
    rows = {env: _row(ts) for env, ts in sorted(groups.items())}
    if len(rows) > 1:
        rows["ALL"] = _row([t for ts in groups.values() for t in ts])
    return rows


def _row(ts: list[Trajectory]) -> dict[str, Any]:
    rewards = [t.reward for t in ts if t.reward is not None]
    calls = [s.call_ms for t in ts for s in t.steps]
    outcomes = [t.outcome for t in ts]
    return {
        "episodes": len(ts),
        "complete": outcomes.count("complete"),
        "partial": outcomes.count("partially_complete"),
        "others": outcomes.count("others") + outcomes.count("error"),
        "format_errors": sum(t.termination == "format_error" for t in ts),
        "max_turns": sum(t.termination == "max_turns" for t in ts),
        "errors": sum(t.termination == "error" for t in ts),
        "mean_reward": statistics.fmean(rewards) if rewards else 0.0,
        "mean_turns": statistics.fmean(t.turns for t in ts) if ts else 0.0,
        "tool_calls": len(calls),
        "tool_errors": sum(s.is_error for t in ts for s in t.steps),
        "call_p50_ms": percentile(calls, 50),
        "call_p99_ms": percentile(calls, 99),
        "episode_p50_ms": percentile([t.timings.total_ms for t in ts], 50),
    }


def summary_table(rows: dict[str, dict[str, Any]], title: str = "rollouts") -> Table:
    from rich.table import Table

    table = Table(title=title)
    cols = [
        ("env", "env"), ("episodes", "episodes"), ("complete", "complete"), ("partial", "partial"),
        ("others", "others"), ("format_errors", "fmt err"), ("max_turns", "turns out"), ("errors", "errors"),
        ("mean_reward", "reward"), ("mean_turns", "turns"), ("tool_calls", "calls"), ("call_p99_ms", "call p99 ms"),
    ]
    for key, label in cols:
        table.add_column(label, justify="left" if key == "env" else "right")
    for env, row in rows.items():
        cells = [env]
        for key, _ in cols[1:]:
            v = row[key]
            cells.append(f"{v:.3f}" if key == "mean_reward" else f"{v:.1f}" if isinstance(v, float) else str(v))
        table.add_row(*cells, style="bold" if env == "ALL" else None)
    return table
