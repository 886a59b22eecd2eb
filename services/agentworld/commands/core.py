"""Core commands: `serve` (envd), `validate`, `demo`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from agentworld.auth import LOOPBACK_HOSTS, TOKEN_FILE_ENV
from agentworld.limits import DEFAULT_LEASE_TTL_S

DEFAULT_AWM_DIR = Path(__file__).resolve().parents[4] / "shared" / "awm" / "mini_library"
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 10**6, "mib": 1 << 20,
          "g": 1 << 30, "gb": 10**9, "gib": 1 << 30, "t": 1 << 40, "tb": 10**12, "tib": 1 << 40}


def parse_bytes(text: str) -> int:
    """'4GiB', '512m', '1000000' -> bytes."""
    import re

    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"--memory-budget {text!r}: give a number of bytes, optionally with a unit (4GiB, 512MiB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(validate)
    app.command()(demo)


def serve(
    bundles: Annotated[list[Path], typer.Argument(help="Bundle directories, or directories of bundles.")],
    port: Annotated[int, typer.Option(help="gRPC port (0 picks a free one).")] = 50051,
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 inside containers.")] = "127.0.0.1",
    max_sessions: Annotated[int, typer.Option(help="Sessions this process may hold.")] = 4096,
    idle_ttl: Annotated[float, typer.Option(help="Close sessions without a client lease idle this many seconds "
                                                 "(0: never).")] = 600.0,
    lease_ttl: Annotated[float, typer.Option(help="Close a client's sessions when it has not renewed its lease "
                                                  "for this many seconds.")] = DEFAULT_LEASE_TTL_S,
    call_timeout: Annotated[float, typer.Option(help="Default per-tool-call timeout in seconds.")] = 10.0,
    workers: Annotated[int, typer.Option(help="Worker processes running tool calls at once (default: the CPUs "
                                              "this process may use).")] = 0,
    memory_budget: Annotated[str, typer.Option(help="Bytes the sessions' and snapshots' databases may use, e.g. "
                                                    "4GiB (default: half the state directory's free space).")] = "",
    state_dir: Annotated[Path | None, typer.Option(help="Where session databases live (default: /dev/shm if it "
                                                       "has room, else the temporary directory).")] = None,
    verifier_workers: Annotated[int, typer.Option(help="Sandboxed verifications at once (default: the CPUs).")] = 0,
    mcp_port: Annotated[int | None, typer.Option(help="Also serve MCP Streamable HTTP on this port.")] = None,
    allowed_host: Annotated[list[str], typer.Option(
        "--allowed-host", help="Host header the MCP/REST edge accepts besides the loopback names (NAME, NAME:PORT "
                               "or NAME:*; repeatable). Requests naming any other host get 421.")] = [],  # noqa: B006
    node_id: Annotated[str | None, typer.Option(help="This envd's identity, written into its session ids so any "
                                                     "gateway routes them (default: $AGENTWORLD_NODE_ID, the pod "
                                                     "name, else <host>-<pid>).")] = None,
    auth_token_file: Annotated[Path | None, typer.Option(help="Require a bearer token listed in this file (one per "
                                                              "line, re-read when it changes) on every call but "
                                                              "health checks.", envvar=TOKEN_FILE_ENV)] = None,
) -> None:
    """Run envd: host many isolated sessions of the given environments behind gRPC.

    Environment code runs in a sandbox of worker processes (namespaces, an unprivileged uid, Landlock, seccomp,
    rlimits: the log's "sandbox layers" line says which apply here); envd itself only holds the sessions."""
    import asyncio
    import logging
    import signal

    from agentworld.auth import TokenFile
    from agentworld.bundle import BundleError, find_bundles, load_bundle
    from agentworld.lifecycle import die_with_parent
    from agentworld.placement import check_node_id
    from agentworld.runtime import EnvRuntime, RuntimeConfig
    from agentworld.runtime.errors import EnvError
    from agentworld.transport import grpc_server

    die_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        loaded = [load_bundle(p) for p in find_bundles(bundles)]
        if not loaded:
            raise BundleError(f"no bundles found in {', '.join(map(str, bundles))}")
        tokens = TokenFile(auth_token_file) if auth_token_file else None
        overrides: dict[str, Any] = {"workers": workers, "verifier_workers": verifier_workers}
        if node_id:
            overrides["node_id"] = check_node_id(node_id)
        config = RuntimeConfig(
            max_sessions=max_sessions, idle_ttl_s=idle_ttl, lease_ttl_s=lease_ttl, call_timeout_s=call_timeout,
            memory_budget_bytes=parse_bytes(memory_budget) if memory_budget else None,
            state_dir=str(state_dir) if state_dir else None,
            **{k: v for k, v in overrides.items() if isinstance(v, str) or v > 0},
        )
        runtime = EnvRuntime(loaded, config)
    except (BundleError, EnvError, ValueError) as exc:  # TokenError and BadNodeId are ValueErrors
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if tokens is None and host not in LOOPBACK_HOSTS:
        logging.getLogger("agentworld.envd").warning(
            "serving on %s without --auth-token-file: anyone who can reach it can use every session", host)
    if "uid_drop" not in runtime.sandbox.layers["applied"]:
        from agentworld.runtime import jail

        jail.set_dumpable(False)  # the sandbox shares our uid: keep /proc/<envd>/mem and environ closed to it

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if mcp_port is not None:
            from agentworld.transport.mcp_server import serve_mcp

            loop.create_task(serve_mcp(runtime, host, mcp_port, token=tokens, allowed_hosts=allowed_host))

        def ready(bound: int) -> None:
            envs = ", ".join(e.env_id for e in runtime.envs())
            print(f"envd listening on {host}:{bound} ({len(loaded)} environments: {envs}; "
                  f"{runtime.config.workers} workers)", flush=True)

        await grpc_server.serve(runtime, host, port, on_ready=ready, stop=stop, tokens=tokens)

    asyncio.run(main())


def validate(
    bundles: Annotated[list[Path], typer.Argument(help="Bundle directories, or directories of bundles.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report instead of a table.")] = False,
) -> None:
    """Prove bundles work: schema, seed, app, tools, reference solutions and discriminating verifiers."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from agentworld.bundle import BundleError, find_bundles
    from agentworld.validate import validate_paths

    console = Console(stderr=as_json)
    try:
        paths = find_bundles(bundles)
    except BundleError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("validating", total=len(paths))
        reports = validate_paths(paths, on_report=lambda _: progress.advance(bar))
    if as_json:
        json.dump([r.to_dict() for r in reports], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        table = Table(title="agentworld validate")
        for column in ("environment", "tools", "tables", "tasks ok", "result", "problems"):
            table.add_column(column)
        for r in reports:
            ok_tasks = sum(t.ok for t in r.tasks)
            problems = "\n".join(r.all_problems()[:5])
            table.add_row(r.env_id, str(r.tools), str(r.tables), f"{ok_tasks}/{len(r.tasks)}",
                          "[green]valid[/green]" if r.ok else "[red]INVALID[/red]", problems)
        console.print(table)
        failed = sum(not r.ok for r in reports)
        console.print(f"{len(reports) - failed}/{len(reports)} valid")
    if any(not r.ok for r in reports):
        raise typer.Exit(1)


def demo(
    awm_dir: Annotated[Path, typer.Option(help="AWM-format scenario to import.")] = DEFAULT_AWM_DIR,
    envs: Annotated[int, typer.Option(help="Offline-generated environments for the second part.")] = 20,
    seed: Annotated[int, typer.Option(help="Offline generator seed.")] = 0,
) -> None:
    """Import an AWM scenario, serve it, replay every reference solution through the client, and verify."""
    import tempfile

    from rich.console import Console

    from agentworld.demo import run_awm_demo

    console = Console(width=None if sys.stdout.isatty() else 140)  # readable tables in logs and CI too
    with tempfile.TemporaryDirectory(prefix="agentworld-demo-") as tmp:
        ok = run_awm_demo(awm_dir, Path(tmp), console)
        try:
            from agentworld.synth.demo import run_demo as run_offline_demo
        except ImportError:
            run_offline_demo = None
        if run_offline_demo is not None and envs > 0:
            ok = run_offline_demo(n_envs=envs, seed=seed, console=console) and ok
    if not ok:
        raise typer.Exit(1)
