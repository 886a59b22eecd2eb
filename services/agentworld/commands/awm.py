"""`agentworld import awm` and `agentworld export awm`: convert between AWM's JSONL files and bundles."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from agentworld.bundle import Bundle

import_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Import environments from other formats.")
export_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Export bundles to other formats.")


@import_app.callback()
def _import_group() -> None:
    """Import environments from other formats."""


@export_app.callback()
def _export_group() -> None:
    """Export bundles to other formats."""


def _table(title: str, bundles: list[Bundle]):  # noqa: ANN202 - rich imported lazily
    from rich.table import Table

    table = Table(title=title)
    for col in ("scenario", "tables", "tools", "tasks", "hash"):
        table.add_column(col, justify="right" if col in ("tables", "tools", "tasks") else "left")
    for b in bundles:
        c = b.manifest.counts
        h = b.manifest.content_hash.removeprefix("sha256:")[:12]
        table.add_row(b.env_id, str(c.tables), str(c.tools), str(c.tasks), h)
    return table


@import_app.command("awm")
def import_awm_cmd(
    from_dir: Path = typer.Option(..., "--from", help="Directory holding AWM's gen_*.jsonl files."),
    out: Path = typer.Option(..., "--out", help="Directory to write one bundle per scenario into."),
    scenario: list[str] = typer.Option(None, "--scenario", "-s", help="Import only these scenarios (repeatable)."),
) -> None:
    """Convert AWM JSONL files (gen_scenario, gen_tasks, gen_db, gen_sample, gen_envs, gen_verifier...) into bundles."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from agentworld.bundle import BundleError
    from agentworld.bundle.awm_import import import_awm

    console = Console()
    err = Console(stderr=True)
    try:
        with Progress(
            TextColumn("[bold]AWM import"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            bar = progress.add_task("reading JSONL", total=None)
            result = import_awm(
                from_dir,
                out,
                scenarios=scenario or None,
                on_start=lambda n: progress.update(bar, total=n, description=""),
                on_scenario=lambda name: progress.update(bar, advance=1, description=name),
            )
    except BundleError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    console.print(_table(f"AWM import -> {out}", result.bundles))
    for s in result.skipped:
        err.print(f"[yellow]skipped[/yellow] {s.scenario}: {s.reason}")
    for w in result.warnings:
        err.print(f"[yellow]warning:[/yellow] {w}")
    if not result:
        raise typer.Exit(1)


@export_app.command("awm")
def export_awm_cmd(
    bundles: list[Path] = typer.Argument(..., help="Bundle directories, or directories of bundles."),
    out: Path = typer.Option(..., "--out", help="Directory to write AWM's JSONL files into."),
) -> None:
    """Write bundles out as AWM JSONL files (gen_scenario, gen_tasks, gen_db, gen_sample, gen_spec, gen_envs, ...)."""
    from rich.console import Console

    from agentworld.bundle import BundleError, find_bundles, load_bundle
    from agentworld.bundle.awm_export import export_awm

    console = Console()
    err = Console(stderr=True)
    try:
        dirs = find_bundles(bundles)
        if not dirs:
            raise BundleError(f"no bundles found in {', '.join(map(str, bundles))}")
        files = export_awm(dirs, out)
        loaded = [load_bundle(d) for d in dirs]
    except BundleError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    console.print(_table(f"AWM export -> {out}", loaded))
    console.print(f"wrote {', '.join(p.name for p in files)}")


def register(app: typer.Typer) -> None:
    app.add_typer(import_app, name="import")
    app.add_typer(export_app, name="export")
