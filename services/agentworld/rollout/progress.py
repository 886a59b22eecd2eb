"""A rich progress bar for rollouts that shows the running mean reward."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from agentworld.rollout.trajectory import Trajectory


@contextmanager
def rollout_progress(console: Console, total: int) -> Iterator[Callable[[Trajectory], None]]:
    """Yields `advance(trajectory)`; the bar's text shows mean reward and failures so far."""
    progress = Progress(
        TextColumn("[bold]episodes"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    rewards: list[float] = []
    errors = 0
    with progress:
        bar = progress.add_task("episodes", total=total, stats="")

        def advance(traj: Trajectory) -> None:
            nonlocal errors
            if traj.reward is None:
                errors += 1
            else:
                rewards.append(traj.reward)
            mean = sum(rewards) / len(rewards) if rewards else 0.0
            progress.update(bar, advance=1, stats=f"mean reward {mean:.3f}  errors {errors}")

        yield advance
