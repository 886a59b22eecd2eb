"""The offline half of `make demo`: synthesise environments, serve them with envd, and show the verifiers
discriminate: reference solutions succeed, a random policy (random tools, random schema-valid arguments,
answering with whatever the last call returned) almost never does.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RANDOM_STEPS = 5


def random_arguments(schema: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Arguments that satisfy the JSON Schema's types (required properties always, others sometimes)."""
    props: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    args: dict[str, Any] = {}
    for name in sorted(props):
        if name not in required and rng.random() < 0.7:
            continue
        args[name] = _random_value(props[name], rng)
    return args


def _random_value(prop: dict[str, Any], rng: random.Random) -> Any:
    options = prop.get("anyOf") or prop.get("oneOf")
    if options:
        prop = next((o for o in options if o.get("type") != "null"), options[0])
    if "enum" in prop:
        return rng.choice(prop["enum"])
    if "const" in prop:
        return prop["const"]
    kind = prop.get("type")
    if kind == "integer":
        return rng.randint(1, 25)
    if kind == "number":
        return round(rng.uniform(1, 200), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if "date" in prop.get("description", "") or prop.get("pattern", "").startswith(r"^\d{4}"):
        return f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    return rng.choice(["alpha", "test", "new value", "ok@example.com", "Smith", "10:00"])


def run_random_episode(session: Any, rng: random.Random, steps: int = RANDOM_STEPS) -> str:
    """Random tool calls; the final answer is the last successful result (a lazy agent's reply)."""
    from agentworld.client.errors import EnvClientError

    answer = "I don't know."
    tools = session.tools
    for _ in range(steps):
        tool = rng.choice(tools)
        try:
            result = session.call_tool(tool["name"], random_arguments(tool["input_schema"], rng))
        except EnvClientError:
            continue
        if not result.is_error:
            answer = result.content[:2000]
    return answer


def run_demo(n_envs: int = 20, seed: int = 0, console: Console | None = None, workers: int | None = None) -> bool:
    """Synthesise, serve over gRPC, replay reference and random policies; True when every reference succeeds."""
    from agentworld.bundle import load_bundle
    from agentworld.client import EnvClient
    from agentworld.runtime import EnvRuntime, RuntimeConfig
    from agentworld.synth.run import synthesize
    from agentworld.transport.grpc_server import serve_in_thread

    console = console or Console()
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="agentworld-synth-demo-") as tmp:
        out = Path(tmp)
        started = time.perf_counter()
        with console.status(f"synthesising {n_envs} environments (offline generator, seed {seed})"):
            report = synthesize(n_envs, seed=seed, out=out, workers=workers, validate=False)
        console.print(f"synthesised {n_envs} environments in {time.perf_counter() - started:.1f}s into {out}")
        bundles = [load_bundle(out / r.env_id) for r in report.results if r.ok]
        runtime = EnvRuntime(bundles, RuntimeConfig(idle_ttl_s=0))
        table = Table(title=f"offline environments served by envd: reference vs random policy ({n_envs} envs)")
        table.add_column("environment", no_wrap=True)
        table.add_column("domains", overflow="fold")
        for col in ("tools", "tables", "reference", "random"):
            table.add_column(col, justify="right", no_wrap=True)
        ref_total = rand_total = tasks_total = 0
        with runtime, serve_in_thread(runtime) as server, EnvClient(server.address) as client:
            console.print(f"envd serving {len(bundles)} environments on {server.address}")
            for bundle in bundles:
                ref_ok = rand_ok = 0
                for task in bundle.tasks:
                    with client.create_session(bundle.env_id, task.id) as session:
                        for call in task.solution:
                            session.call_tool(call.tool, call.arguments)
                        ref_ok += session.verify(final_answer=task.expected_answer).outcome == "complete"
                    with client.create_session(bundle.env_id, task.id) as session:
                        answer = run_random_episode(session, rng)
                        rand_ok += session.verify(final_answer=answer).outcome == "complete"
                n = len(bundle.tasks)
                ref_total, rand_total, tasks_total = ref_total + ref_ok, rand_total + rand_ok, tasks_total + n
                colour = "green" if ref_ok == n else "red"
                table.add_row(bundle.env_id, ", ".join(bundle.manifest.provenance.get("domains", [])),
                              str(bundle.manifest.counts.tools), str(bundle.manifest.counts.tables),
                              f"[{colour}]{100 * ref_ok / n:.0f}%[/{colour}]", f"{100 * rand_ok / n:.0f}%")
        table.add_section()
        table.add_row("all", "", "", "", f"{100 * ref_total / max(1, tasks_total):.1f}%",
                      f"{100 * rand_total / max(1, tasks_total):.1f}%")
        console.print(table)
    return len(bundles) == n_envs and ref_total == tasks_total
