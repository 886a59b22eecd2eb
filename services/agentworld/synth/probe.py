"""Example calls for every tool of a scenario: one that must succeed and one that must fail, with the HTTP
status a real service gives. Used by the test suite to exercise each generated tool both ways.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentworld.synth.compose import Scenario
from agentworld.synth.data import Rows
from agentworld.synth.tasks import Builder
from agentworld.synth.tools import CLOSED_STATES, tool_defs, updatable


@dataclass
class Probe:
    tool: str
    op: str
    valid: dict[str, Any] | None  # None: no row in the seed data allows a successful call
    invalid: dict[str, Any]
    invalid_status: int


def probes(scenario: Scenario, rows: Rows) -> list[Probe]:
    b = Builder(scenario, rows)
    out: list[Probe] = []
    missing = 99999
    for d in tool_defs(scenario):
        t = b.tables[d.table]
        pid = f"{t.singular}_id"
        data = rows[t.name]
        valid: dict[str, Any] | None = None
        invalid: dict[str, Any] = {pid: missing}
        status = 404
        if d.op == "search":
            valid = {"limit": 5}
            invalid, status = {"limit": 0}, 422
        elif d.op == "get":
            valid = {pid: data[0]["id"]}
        elif d.op == "create":
            draft_args: dict[str, Any] = {}
            for c in t.columns:
                if c.kind == "fk":
                    if not c.nullable:
                        draft_args[c.name] = rows[c.fk_table or ""][0]["id"]
                elif c.kind != "status" and not c.nullable:
                    draft_args[c.name] = b.new_value(t, c, None)
            valid = draft_args
            fk = next((c for c in t.fks if not c.nullable), None)
            if fk is not None:
                invalid = {**draft_args, fk.name: missing}
            else:
                first = next(c for c in t.columns if c.kind != "status" and not c.nullable)
                invalid = {k: v for k, v in draft_args.items() if k != first.name}
                status = 422
        elif d.op == "update":
            col = next(c for c in updatable(t) if c.kind not in ("fk", "status"))
            valid = {pid: data[0]["id"], col.name: b.new_value(t, col, data[0][col.name])}
            invalid, status = {pid: data[0]["id"]}, 400
        elif d.op == "delete":
            free = [r for r in data if not b.referenced(t, r["id"])]
            valid = {pid: free[0]["id"]} if free else None
        elif d.op == "transition":
            tr = next(x for x in t.transitions if x.verb == d.verb)
            ok = [r for r in data if r["status"] in tr.sources]
            bad = [r for r in data if r["status"] not in tr.sources]
            valid = {pid: ok[0]["id"]} if ok else None
            if bad:
                invalid, status = {pid: bad[0]["id"]}, 409
        elif d.op == "adjust":
            a = next(x for x in t.adjusts if x.verb == d.verb)
            valid = {pid: data[0]["id"], "amount": 1}
            if a.sign < 0:
                ok = [r for r in data if (r[a.field] or 0) >= 1]
                valid = {pid: ok[0]["id"], "amount": 1} if ok else None
                invalid, status = {pid: data[0]["id"], "amount": (data[0][a.field] or 0) + 1000}, 400
            else:
                invalid, status = {pid: data[0]["id"], "amount": -5}, 422
        elif d.op == "book":
            bk = next(x for x in t.books if x.verb == d.verb)
            draft = b.m_book(t)
            valid = draft.solution[-1][1] if draft else None
            full = [r for r in data if r[bk.capacity] <= 0 and not (t.status and r["status"] in CLOSED_STATES)]
            person_id = rows[bk.person_table][0]["id"]
            if full:
                invalid, status = {pid: full[0]["id"], bk.person_col: person_id}, 409
            else:
                invalid = {pid: data[0]["id"], bk.person_col: missing}
        elif d.op == "transfer":
            draft = b.m_transfer(t)
            valid = draft.solution[-1][1] if draft else None
            invalid, status = {f"from_{t.singular}_id": 1, f"to_{t.singular}_id": 1, "amount": 1}, 400
        out.append(Probe(d.name, d.op, valid, invalid, status))
    return out
