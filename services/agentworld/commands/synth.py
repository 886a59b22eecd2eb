"""`agentworld synth` (offline generator by default, LLM pipeline with --llm) and `agentworld diversity`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command()(synth)
    app.command()(diversity)


def synth(
    out: Annotated[Path, typer.Option(help="Directory to write bundles into (one subdirectory per environment).")],
    n: Annotated[int, typer.Option(min=1, help="Number of environments.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives byte-identical bundles.")] = 0,
    llm: Annotated[str | None, typer.Option(envvar="AGENTWORLD_LLM",
                                                help="Use the LLM pipeline: PROVIDER:MODEL[@URL]. Default: offline.")] = None,
    stages: Annotated[str | None, typer.Option(help="LLM pipeline only: comma-separated stages to run.")] = None,
    resume: Annotated[bool, typer.Option(help="Skip environments already generated and validated in OUT.")] = False,
    workers: Annotated[int, typer.Option(help="Processes for generate+validate (default: CPU count).")] = 0,
    validate: Annotated[bool, typer.Option(help="Validate every environment (offline); failures are not written.")]
    = True,
) -> None:
    """Synthesise environments into bundles; every one is validated before it is written."""
    from rich.console import Console

    console = Console()
    if llm is not None:
        from agentworld.llm.errors import LLMError
        from agentworld.synth.pipeline import PipelineError, run_llm_pipeline  # lazy: offline never imports LLM SDKs

        stage_list = [s.strip() for s in stages.split(",") if s.strip()] if stages else None
        try:
            report = run_llm_pipeline(llm=llm, n=n, out=out, stages=stage_list, resume=resume, seed=seed)
        except (LLMError, PipelineError) as exc:
            console.print(f"[red]error:[/red] {type(exc).__name__}: {exc}")
            raise typer.Exit(2) from None
        if getattr(report, "ok", True) is False:
            raise typer.Exit(1)
        return
    if stages:
        console.print("[red]error:[/red] --stages applies to the LLM pipeline only (add --llm PROVIDER:MODEL)")
        raise typer.Exit(2)
    ok = run_offline(n=n, seed=seed, out=out, workers=workers or os.cpu_count() or 1, resume=resume,
                     validate=validate, console=console)
    if not ok:
        raise typer.Exit(1)


def run_offline(n: int, seed: int, out: Path, workers: int, resume: bool, validate: bool, console) -> bool:  # noqa: ANN001
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from agentworld.synth.diversity import diversity
    from agentworld.synth.run import synthesize

    with Progress(TextColumn("[bold]synth[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        bar = progress.add_task("offline generator", total=n)
        failed = 0

        def done(result) -> None:  # noqa: ANN001
            nonlocal failed
            failed += not result.ok
            progress.update(bar, advance=1, description=f"offline generator ({failed} failed)")

        report = synthesize(n, seed=seed, out=out, workers=workers, resume=resume, validate=validate, on_result=done)
    results = report.results
    good = [r for r in results if r.ok]
    table = Table(title=f"agentworld synth: {len(good)}/{n} environments in {report.wall_s:.1f}s -> {out}")
    table.add_column("metric")
    for col in ("mean", "min", "max"):
        table.add_column(col, justify="right")
    for label, key in (("tools", "tools"), ("tables", "tables"), ("tasks", "tasks"), ("tasks with 3+ calls", "long_tasks"),
                       ("query tasks", "query_tasks")):
        vals = [getattr(r, key) for r in good] or [0]
        table.add_row(label, f"{sum(vals) / len(vals):.1f}", str(min(vals)), str(max(vals)))
    console.print(table)
    div = diversity([r.env_id for r in results], [r.title for r in results], [r.table_names for r in results],
                    [r.tool_names for r in results], [r.domains for r in results])
    _print_diversity(console, div)
    for r in results:
        if not r.ok:
            console.print(f"[red]{r.env_id}[/red]: " + "; ".join(r.problems[:5]))
    return len(good) == n


def _print_diversity(console, div) -> None:  # noqa: ANN001
    from rich.table import Table

    table = Table(title=f"diversity: {div.envs} environments, {div.distinct_titles} distinct titles, "
                        f"{div.domains_used} domains used")
    for col in ("name set", "max Jaccard", "mean Jaccard", "p99", "most similar pair"):
        table.add_column(col)
    for label, s in (("tables", div.tables), ("tools", div.tools)):
        table.add_row(label, f"{s.max:.3f}", f"{s.mean:.3f}", f"{s.p99:.3f}", " / ".join(s.max_pair))
    console.print(table)


def diversity(
    bundles: Annotated[Path, typer.Argument(help="A directory of bundles.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Diversity of a set of bundles: distinct names, pairwise Jaccard of table and tool name sets."""
    import json

    from rich.console import Console

    from agentworld.bundle import BundleError
    from agentworld.synth.diversity import diversity_of_dir

    try:
        div = diversity_of_dir(bundles)
    except BundleError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(div.to_dict(), indent=2))
    else:
        _print_diversity(Console(), div)
