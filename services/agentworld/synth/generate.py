"""One scenario -> one Bundle: compose, seed, emit schema/seed/app/tasks/verifiers."""

from __future__ import annotations

from agentworld.bundle import Bundle, EnvManifest, Task, ToolCall
from agentworld.bundle.model import Counts
from agentworld.synth.compose import Scenario, build_scenario
from agentworld.synth.data import generate_rows
from agentworld.synth.emit_app import emit_app
from agentworld.synth.emit_sql import schema_sql, seed_sql
from agentworld.synth.emit_verifiers import emit_verifiers
from agentworld.synth.tasks import build_tasks
from agentworld.synth.tools import tool_defs

GENERATOR = "agentworld-offline/1"


def bundle_for(scenario: Scenario) -> Bundle:
    rows = generate_rows(scenario)
    drafts = build_tasks(scenario, rows)
    tasks = [
        Task(id=f"task_{i}", instruction=d.instruction, kind=d.kind, verifier=f"verify_task_{i}",  # type: ignore[arg-type]
             solution=[ToolCall(tool=name, arguments=args) for name, args in d.solution],
             expected_answer=d.expected_answer)
        for i, d in enumerate(drafts, 1)
    ]
    manifest = EnvManifest(
        id=scenario.env_id,
        title=scenario.title,
        description=scenario.description,
        provenance={"source": "offline", "generator": GENERATOR, "seed": scenario.seed, "index": scenario.index,
                    "domains": [scenario.primary, *scenario.secondaries]},
        counts=Counts(tables=len(scenario.tables), tools=len(tool_defs(scenario)), tasks=len(tasks)),
    )
    bundle = Bundle(manifest=manifest, schema_sql=schema_sql(scenario), seed_sql=seed_sql(scenario, rows),
                    app_py=emit_app(scenario), tasks=tasks, verifiers_py=emit_verifiers(scenario, drafts))
    from agentworld.bundle import compute_content_hash

    bundle.manifest.content_hash = compute_content_hash(bundle)
    return bundle


def generate_bundle(seed: int, index: int, attempt: int = 0) -> Bundle:
    """The bundle of scenario `index` under `seed` (attempt as chosen by compose.plan_scenarios)."""
    return bundle_for(build_scenario(seed, index, attempt))
