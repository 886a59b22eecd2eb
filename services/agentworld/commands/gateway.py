"""`agentworld gateway` (EnvService in front of many envd backends) and `agentworld up` (local pool + gateway)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agentworld.auth import TOKEN_FILE_ENV, TokenFile

if TYPE_CHECKING:
    from agentworld.gateway import BackendSource, Gateway

# The shared AWM sample beside the checkout (override with AGENTWORLD_AWM_DIR).
_MINI_LIBRARY = Path(__file__).resolve().parents[4] / "shared" / "awm" / "mini_library"


def register(app: typer.Typer) -> None:
    app.command()(gateway)
    app.command()(up)


def _cache_dir() -> Path:
    return Path(os.environ.get("AGENTWORLD_CACHE", Path.home() / ".cache" / "agentworld"))


def default_envs() -> Path:
    """mini_library imported (once per content) into the cache: `up`'s environments when --envs is not given."""
    import hashlib

    from agentworld.bundle import find_bundles
    from agentworld.bundle.awm_import import import_awm

    source = Path(os.environ.get("AGENTWORLD_AWM_DIR", _MINI_LIBRARY))
    if not source.is_dir():
        raise FileNotFoundError(f"no --envs given and the default AWM sample {source} is missing")
    digest = hashlib.sha256()
    for path in sorted(source.glob("*.jsonl")):
        digest.update(path.name.encode() + path.read_bytes())
    out = _cache_dir() / "up-envs" / digest.hexdigest()[:16]
    if not (out.is_dir() and find_bundles([out])):
        import shutil

        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        import_awm(source, tmp)
        try:
            tmp.rename(out)
        except OSError:  # another `up` finished first
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def synth_envs(n: int, seed: int = 0) -> Path:
    """n environments from the offline generator (agentworld.synth), cached by (n, seed); generated once."""
    from rich.console import Console
    from rich.progress import Progress

    from agentworld.synth.run import synthesize

    out = _cache_dir() / "up-synth" / f"seed{seed}-n{n}"
    with Progress(console=Console(stderr=True), transient=True) as progress:
        bar = progress.add_task(f"synthesising {n} environments", total=n)
        synthesize(n, seed=seed, out=out, resume=True, validate=True, on_result=lambda _r: progress.advance(bar))
    return out


def _run(gw: Gateway, sources: list[BackendSource], host: str, port: int, banner: str, router: str = "auto") -> None:
    """Serve until SIGINT/SIGTERM, printing a table of backends once ready; every source cleans up on the way out."""
    import asyncio
    import logging
    import signal

    from rich.console import Console
    from rich.table import Table

    from agentworld.gateway import serve

    console = Console(stderr=True)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def ready(bound: int) -> None:
            table = Table(title=f"{banner} on {host}:{bound}")
            for column in ("backend", "address", "environments", "max sessions"):
                table.add_column(column)
            for b in gw.registry.live():
                table.add_row(b.name, b.address, ", ".join(sorted(b.env_ids)), str(b.max_sessions))
            console.print(table)
            print(f"gateway listening on {host}:{bound}", flush=True)  # machine-readable, like envd's line

        await serve(gw, sources, host, port, on_ready=ready, stop=stop, router=router)

    from agentworld.bundle import BundleError

    expected: tuple[type[BaseException], ...] = (OSError, RuntimeError, TimeoutError, BundleError)
    try:
        from agentworld.images.errors import ImagesError

        expected += (ImagesError,)
    except ImportError:
        pass
    try:
        asyncio.run(main())
    except expected as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print("stopped; backends released")


def gateway(
    backend: Annotated[
        list[str],
        typer.Option("--backend", "-b", help="envd address HOST:PORT (repeatable), or 'kubernetes' (same as --k8s)."),
    ] = [],  # noqa: B006
    k8s: Annotated[bool, typer.Option("--k8s", help="Discover envd pods of EnvPools by watching the Kubernetes API.")] = False,
    namespace: Annotated[
        str | None, typer.Option(help="Kubernetes namespace to watch (default: all).", envvar="AGENTWORLD_K8S_NAMESPACE")
    ] = None,
    pool: Annotated[list[str], typer.Option("--pool", help="Only these EnvPools (repeatable; default all).")] = [],  # noqa: B006
    envs: Annotated[list[Path], typer.Option("--envs", help="Also run a local envd pool over these bundles.")] = [],  # noqa: B006
    replicas: Annotated[int, typer.Option(help="Local envd processes when --envs is given.")] = 2,
    port: Annotated[int, typer.Option(help="Gateway gRPC port (0 picks a free one).")] = 50050,
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default 127.0.0.1; 0.0.0.0 when running in a Kubernetes pod).")
    ] = None,
    direct: Annotated[bool, typer.Option(help="Hand clients each session's backend address (skip a hop).")] = False,
    health_interval: Annotated[float, typer.Option(help="Seconds between backend health checks.")] = 1.0,
    auth_token_file: Annotated[Path | None, typer.Option(
        help="Require a bearer token listed in this file (one per line, re-read when it changes) from callers, and "
             "present its first token to the backends (one Secret for gateway and envd pods).",
        envvar=TOKEN_FILE_ENV)] = None,
    router: Annotated[str, typer.Option(
        help="agentworld-router, the Go data plane that forwards session calls: auto (use it when built: `make "
             "router`), on (require it) or off (forward in Python).")] = "auto",
) -> None:
    """Serve EnvService in front of envd backends: place sessions, route calls, survive dead backends.

    Session ids name their backend, so any number of gateway replicas route the same sessions with no shared
    state, and a restarted gateway loses none."""
    from agentworld.gateway import Gateway, ProcessSource, StaticSource

    tokens = _tokens(auth_token_file)

    sources: list[BackendSource] = []
    k8s = k8s or any(b in ("kubernetes", "k8s") for b in backend)
    addresses = [b for b in backend if b not in ("kubernetes", "k8s")]
    if addresses:
        sources.append(StaticSource(addresses))
    if envs:
        sources.append(ProcessSource.for_bundles(envs, replicas, token_file=auth_token_file))
    if k8s:
        from agentworld.gateway.kube import KubernetesSource

        sources.append(KubernetesSource(namespace=namespace, pools=pool))
    if not sources:
        raise typer.BadParameter("give at least one of --backend, --envs or --k8s")
    if host is None:
        host = "0.0.0.0" if os.environ.get("KUBERNETES_SERVICE_HOST") else "127.0.0.1"
    if router not in ("auto", "on", "off"):
        raise typer.BadParameter(f"must be auto, on or off, not {router!r}", param_hint="--router")
    _run(Gateway(direct=direct, health_interval_s=health_interval, tokens=tokens), sources, host, port,
         "agentworld gateway", router=router)


def _tokens(path: Path | None) -> TokenFile | None:
    from agentworld.auth import TokenError

    try:
        return TokenFile(path) if path else None
    except TokenError as exc:
        raise typer.BadParameter(str(exc), param_hint="--auth-token-file") from None


def up(
    backend: Annotated[str, typer.Option("--backend", help="Where envd runs: process or docker.")] = "process",
    envs: Annotated[list[Path], typer.Option("--envs", help="Bundle directories (default: mini_library).")] = [],  # noqa: B006
    replicas: Annotated[int, typer.Option(help="envd processes (or containers).")] = 2,
    port: Annotated[int, typer.Option(help="Gateway gRPC port (0 picks a free one).")] = 50050,
    host: Annotated[str, typer.Option(help="Address to bind the gateway.")] = "127.0.0.1",
    direct: Annotated[bool, typer.Option(help="Hand clients each session's backend address (skip a hop).")] = False,
    max_sessions: Annotated[int, typer.Option(help="Sessions per envd process.")] = 4096,
    synth: Annotated[int, typer.Option(help="Also serve N offline-generated environments (cached after the first run).")] = 0,
) -> None:
    """A local envd pool plus a gateway on loopback, ready for a trainer in seconds; Ctrl-C cleans everything up."""
    from agentworld.gateway import DockerSource, Gateway, ProcessSource

    if replicas < 1:
        raise typer.BadParameter("--replicas must be >= 1")
    try:
        bundle_dirs = list(envs) or [default_envs()]
        if synth > 0:
            bundle_dirs.append(synth_envs(synth))
    except FileNotFoundError as exc:
        raise typer.BadParameter(str(exc)) from None
    for path in bundle_dirs:
        if not path.exists():
            raise typer.BadParameter(f"--envs {path}: no such directory")
    source: BackendSource
    if backend == "process":
        source = ProcessSource.for_bundles(
            bundle_dirs, replicas, serve_args=["--max-sessions", str(max_sessions)], ready_when="first"
        )
    elif backend == "docker":
        source = DockerSource(bundle_dirs, replicas)
    else:
        raise typer.BadParameter(f"--backend must be process or docker, not {backend!r}")
    _run(Gateway(direct=direct), [source], host, port, f"agentworld up ({replicas} x {backend})")
