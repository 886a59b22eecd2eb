"""The first half of `make demo`: an AWM scenario imported, served by envd, replayed through the client."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from agentworld.bundle import load_bundle
from agentworld.bundle.awm_import import import_awm
from agentworld.client import EnvClient
from agentworld.runtime import EnvRuntime
from agentworld.transport.grpc_server import serve_in_thread


def run_awm_demo(awm_dir: Path, workdir: Path, console: Console) -> bool:
    """Returns True when every task's reference solution verifies complete."""
    bundles = [load_bundle(p) for p in import_awm(awm_dir, workdir / "awm")]
    runtime = EnvRuntime(bundles)
    ok = True
    with serve_in_thread(runtime) as server, EnvClient(server.address) as client:
        console.print(f"envd serving {', '.join(b.env_id for b in bundles)} on {server.address}")
        for bundle in bundles:
            table = Table(title=f"{bundle.manifest.title} ({bundle.env_id}): reference solutions over gRPC")
            for column, justify in (("task", "left"), ("kind", "left"), ("calls", "right"), ("outcome", "left"),
                                    ("reward", "right"), ("latency ms", "right")):
                table.add_column(column, justify=justify, no_wrap=True)
            table.add_column("instruction", no_wrap=True, overflow="ellipsis", max_width=60)
            for task in bundle.tasks:
                started = time.perf_counter()
                with client.create_session(bundle.env_id, task.id) as session:
                    for call in task.solution:
                        session.call_tool(call.tool, call.arguments)
                    verdict = session.verify(final_answer=task.expected_answer)
                latency = (time.perf_counter() - started) * 1000
                ok &= verdict.outcome == "complete"
                colour = "green" if verdict.outcome == "complete" else "red"
                table.add_row(task.id, task.kind, str(len(task.solution)), f"[{colour}]{verdict.outcome}[/{colour}]",
                              f"{verdict.reward:.1f}", f"{latency:.1f}", task.instruction)
            console.print(table)
    return ok
