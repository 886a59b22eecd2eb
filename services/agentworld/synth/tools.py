"""The tool surface of a scenario: which routes each table gets, named once here.

The app emitter writes these routes and the task builder writes solutions against the same names, so
the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentworld.synth.compose import Column, Scenario, Table

CLOSED_STATES = frozenset({"cancelled", "closed", "retired", "full", "completed", "departed", "sold_out", "removed"})


@dataclass(frozen=True)
class ToolDef:
    name: str
    table: str
    op: str  # search | list | get | create | update | delete | transition | adjust | book | transfer
    verb: str = ""


def search_name(t: Table) -> str:
    return f"search_{t.name}" if t.label and t.role != "lookup" else f"list_{t.name}"


def is_book_child(scenario: Scenario, t: Table) -> bool:
    return any(b.child == t.name for other in scenario.tables for b in other.books)


def updatable(t: Table) -> list[Column]:
    return [c for c in t.columns if not (c.kind == "status" and t.transitions)]


def tool_defs(scenario: Scenario) -> list[ToolDef]:
    tools: list[ToolDef] = []
    used: set[str] = set()

    def add(name: str, table: Table, op: str, verb: str = "") -> None:
        if name in used:
            name = f"{name}_{table.singular}"
        used.add(name)
        tools.append(ToolDef(name, table.name, op, verb))

    for t in scenario.tables:
        add(search_name(t), t, "search")
        if "get" in t.ops:
            add(f"get_{t.singular}", t, "get")
        if "create" in t.ops and not is_book_child(scenario, t):
            add(f"create_{t.singular}", t, "create")
        if "update" in t.ops and updatable(t):
            add(f"update_{t.singular}", t, "update")
        if "delete" in t.ops:
            add(f"delete_{t.singular}", t, "delete")
        for tr in t.transitions:
            add(f"{tr.verb}_{t.singular}", t, "transition", tr.verb)
        for a in t.adjusts:
            add(f"{a.verb}_{t.singular}", t, "adjust", a.verb)
        for b in t.books:
            add(f"{b.verb}_{t.singular}", t, "book", b.verb)
        for tr in t.transfers:
            add(tr.verb, t, "transfer", tr.verb)
    return tools


def tool_index(scenario: Scenario) -> dict[tuple[str, str, str], str]:
    """(table, op, verb) -> tool name."""
    return {(d.table, d.op, d.verb): d.name for d in tool_defs(scenario)}
