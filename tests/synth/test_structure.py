"""Shape of what the generator emits: table/tool/task counts, task mix, diversity, library size."""

from __future__ import annotations

import statistics

from agentworld.synth.compose import build_scenario, plan_scenarios
from agentworld.synth.diversity import diversity
from agentworld.synth.domains import DOMAINS
from agentworld.synth.tools import tool_defs


def test_domain_library_has_forty_plus_everyday_domains() -> None:
    keys = {d.key for d in DOMAINS}
    assert len(keys) >= 40
    for expected in ("shopping", "library", "clinic", "airline", "banking", "hr", "helpdesk", "food_delivery",
                     "property_rental", "school", "gym", "logistics"):
        assert expected in keys


def test_scenarios_have_12_to_25_tables_and_35_tools_on_average() -> None:
    scenarios = [build_scenario(1, i) for i in range(120)]
    tables = [len(s.tables) for s in scenarios]
    tools = [len(tool_defs(s)) for s in scenarios]
    assert min(tables) >= 12 and max(tables) <= 25
    assert statistics.mean(tools) >= 35
    for s in scenarios:  # every foreign key points at a table of the scenario, defined before it
        seen: set[str] = set()
        for t in s.tables:
            for c in t.fks:
                assert c.fk_table in seen, (s.env_id, t.name, c.name)
            seen.add(t.name)


def test_ten_tasks_with_a_third_long_and_search_before_update(sample) -> None:  # noqa: ANN001
    for _, _, bundle in sample:
        tasks = bundle.tasks
        assert len(tasks) == 10
        assert sum(len(t.solution) >= 3 for t in tasks) >= 4
        assert {t.kind for t in tasks} == {"query", "mutation"}
        searched = [t for t in tasks if t.kind == "mutation" and t.solution[0].tool.startswith(("search_", "list_"))
                    and "_id" not in str(t.instruction)]
        assert len(searched) >= 3
        for t in tasks:
            if t.kind == "query":
                assert t.expected_answer
            assert f"def {t.verifier}(" in bundle.verifiers_py


def test_scenarios_are_distinct_and_diverse() -> None:
    n = 200
    attempts = plan_scenarios(2, n)
    scenarios = [build_scenario(2, i, a) for i, a in enumerate(attempts)]
    report = diversity([s.env_id for s in scenarios], [s.title for s in scenarios],
                       [[t.name for t in s.tables] for s in scenarios], [[d.name for d in tool_defs(s)] for s in scenarios],
                       [[s.primary, *s.secondaries] for s in scenarios])
    assert report.distinct_titles == n and report.distinct_ids == n
    assert report.domains_used >= 40
    assert report.tables.max < 1.0 and report.tables.mean < 0.15
    assert report.tools.mean < 0.15


def test_domain_actions_only_use_columns_the_scenario_has() -> None:
    """Regression: an action on an optional field (airline miles) must vanish when the field is left out."""
    for i in range(300):
        s = build_scenario(0, i)
        for t in s.tables:
            names = {c.name for c in t.columns}
            assert all(a.field in names for a in t.adjusts), (s.env_id, t.name)
            assert all(tr.field in names for tr in t.transfers), (s.env_id, t.name)
            assert all(b.capacity in names for b in t.books), (s.env_id, t.name)
