"""`agentworld cluster ...`: run the EnvPool controller, list pools, or start a local kwok control plane."""

from __future__ import annotations

import typer

cluster_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Kubernetes: EnvPools and their controller.")


@cluster_app.callback()
def _group() -> None:
    """Kubernetes: EnvPools and their controller."""


@cluster_app.command("controller")
def controller(
    kubeconfig: str = typer.Option(None, help="Default: in-cluster config, else $KUBECONFIG / ~/.kube/config."),
    namespace: str = typer.Option(None, help="Watch one namespace only (default: all)."),
    workers: int = typer.Option(4, help="Pools reconciled in parallel."),
    create_concurrency: int = typer.Option(32, help="Concurrent pod create/delete calls."),
    resync_seconds: float = typer.Option(30.0, help="Re-queue every pool this often (covers lost events)."),
    watch_timeout_seconds: int = typer.Option(60, help="Server-side watch timeout; a silent watch ends after it."),
    metrics_addr: str = typer.Option("0.0.0.0:8080", help="host:port for /healthz, /metrics, /metrics.json."),
    log_level: str = typer.Option("INFO"),
) -> None:
    """Run the EnvPool controller until SIGTERM."""
    from agentworld_controller.main import run

    run(kubeconfig, namespace, workers, create_concurrency, resync_seconds, watch_timeout_seconds, metrics_addr,
        log_level)


@cluster_app.command("pools")
def pools(
    namespace: str = typer.Option(None, "--namespace", "-n", help="Default: all namespaces."),
    kubeconfig: str = typer.Option(None),
) -> None:
    """List EnvPools with their pods, sessions and conditions."""
    import json

    from kubernetes import client
    from rich.console import Console
    from rich.table import Table

    from agentworld_controller.client import load_api_client, raw
    from agentworld_controller.constants import GROUP, PLURAL, VERSION

    try:
        api = client.CustomObjectsApi(load_api_client(kubeconfig))
        resp = (api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _preload_content=False)
                if namespace else api.list_cluster_custom_object(GROUP, VERSION, PLURAL, _preload_content=False))
        items = raw(resp)["items"]
    except Exception as exc:  # noqa: BLE001 - CLI edge: one clear line
        typer.echo(f"error: cannot list EnvPools: {exc}", err=True)
        raise typer.Exit(1) from exc
    table = Table(title="EnvPools")
    for col in ("namespace", "name", "ready", "sessions", "draining", "utilisation", "conditions", "image"):
        table.add_column(col)
    for p in items:
        st = p.get("status") or {}
        conds = ", ".join(f"{c['type']}={c['status']}" for c in st.get("conditions", []))
        table.add_row(p["metadata"]["namespace"], p["metadata"]["name"], st.get("ready", "-"), st.get("sessions", "-"),
                      str(st.get("drainingReplicas", 0)), f"{st.get('utilization', 0)}%", conds,
                      json.dumps(p["spec"].get("image")))
    Console().print(table)


@cluster_app.command("local")
def local(
    nodes: int = typer.Option(4, help="kwok fake nodes."),
    node_pods: int = typer.Option(1000, help="Pod capacity per fake node."),
) -> None:
    """Start etcd + kube-apiserver + scheduler + controller-manager + kwok on loopback (for trying the controller).

    Needs the binaries from `bash tests/infra/install-k8s.sh`. Prints the kubeconfig path; Ctrl-C stops it.
    """
    import signal
    import threading

    from agentworld_controller.localcluster import LocalCluster, MissingBinaries

    try:
        c = LocalCluster(nodes=nodes, node_pods=node_pods)
    except MissingBinaries as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with c:
        typer.echo(f"export KUBECONFIG={c.kubeconfig}")
        typer.echo("kubectl apply -f helm/agentworld/crds/  # then: agentworld cluster controller")
        stop.wait()


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")
