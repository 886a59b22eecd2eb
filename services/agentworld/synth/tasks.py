"""Tasks for a scenario: instructions, reference solutions and what their verifiers must see.

Every template reads the seed rows, so the reference solution's ids and the expected answer are exact.
Mutation drafts carry an `expect` spec (rows changed/added/removed); verifiers compare the whole
database before/after against it, so the right change on the wrong row, a partial change or any extra
change fails. Query drafts carry `facts` the answer must state, and nothing may change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agentworld.synth.compose import Column, Scenario, Table, rng_for
from agentworld.synth.data import Rows, _pools, value_for
from agentworld.synth.emit_app import _TEXTY
from agentworld.synth.tools import CLOSED_STATES, tool_index, updatable

TASKS_PER_ENV = 10
MIN_LONG = 4  # tasks needing 3+ calls (at least a third of 10)


class TaskGenerationError(RuntimeError):
    """The scenario offers too few task templates (a generator bug: every domain must support 10)."""


@dataclass
class Draft:
    template: str
    kind: str
    instruction: str
    solution: list[tuple[str, dict[str, Any]]]
    expected_answer: str | None = None
    facts: list[Any] = field(default_factory=list)
    expect: dict[str, Any] = field(default_factory=dict)


def _fmt(col: Column, v: Any) -> str:
    if col.kind == "money":
        return f"{v:.2f}"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _shown(col: Column, v: Any) -> str:
    s = _fmt(col, v)
    return f'"{s}"' if isinstance(v, str) else s


def _fact(col: Column, v: Any) -> Any:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return round(float(v), 2)
    return str(v)


def _words(name: str) -> str:
    return name.replace("_", " ")


class Builder:
    def __init__(self, scenario: Scenario, rows: Rows) -> None:
        self.s = scenario
        self.rows = rows
        self.tools = tool_index(scenario)
        self.rng = rng_for(scenario.seed, "tasks", scenario.env_id)
        self.tables = {t.name: t for t in scenario.tables}

    # -- helpers --------------------------------------------------------------------------------------
    def tool(self, table: Table, op: str, verb: str = "") -> str | None:
        return self.tools.get((table.name, op, verb))

    def findable(self, t: Table) -> bool:
        return bool(t.label) and t.column(t.label).kind in _TEXTY

    def ref(self, t: Table, row: dict[str, Any]) -> str:
        return f'the {t.sing_words} "{row[t.label]}"'

    def find(self, t: Table, row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        search = self.tool(t, "search")
        assert search
        return search, {"q": str(row[t.label])}

    def kids(self, t: Table) -> list[tuple[Table, Column]]:
        return self.s.children_of(t.name)

    def referenced(self, t: Table, row_id: int) -> bool:
        return any(r[c.name] == row_id for kt, c in self.kids(t) for r in self.rows[kt.name])

    def pick(self, seq: list[Any]) -> Any:
        return seq[self.rng.randrange(len(seq))]

    def new_value(self, t: Table, col: Column, current: Any) -> Any:
        pools = _pools()
        for attempt in range(20):
            if col.kind == "enum":
                options = [a for a in col.args if a != current]
                return self.pick(options) if options else None
            if col.kind == "bool":
                return not current
            v = value_for(col, len(self.rows[t.name]) + 100 + attempt, self.rng, pools)
            if v != current and (col.name != t.label or all(str(r[col.name]).lower() != str(v).lower()
                                                            for r in self.rows[t.name])):
                return v
        return None

    # -- query templates ------------------------------------------------------------------------------
    def q_lookup(self, t: Table) -> Draft | None:
        if not self.findable(t):
            return None
        cols = [c for c in t.columns if c.name != t.label and c.kind not in ("fk", "bool", "text", "status")]
        if not cols:
            return None
        col = self.pick(cols)
        candidates = [r for r in self.rows[t.name] if r[col.name] is not None]
        if not candidates:
            return None
        row = self.pick(candidates)
        calls = [self.find(t, row)]
        if self.tool(t, "get"):
            calls.append((self.tool(t, "get"), {f"{t.singular}_id": row["id"]}))
        value = _fmt(col, row[col.name])
        return Draft("lookup", "query", f"What is the {_words(col.name)} of {self.ref(t, row)}?", calls,
                     f"The {_words(col.name)} of {self.ref(t, row)} is {value}.", [_fact(col, row[col.name])])

    def q_count(self, t: Table) -> Draft | None:
        if not t.status:
            return None
        counts = {s: sum(r["status"] == s for r in self.rows[t.name]) for s in t.status}
        options = [s for s in t.status if 1 <= counts[s] <= 100]
        if not options:
            return None
        status = self.pick(options)
        return Draft("count", "query", f"How many {t.words} are currently {_words(status)}?",
                     [(self.tool(t, "search") or "", {"status": status})],
                     f"There are {counts[status]} {_words(status)} {t.words}.", [counts[status]])

    def q_sum(self, parent: Table) -> Draft | None:
        if not self.findable(parent):
            return None
        for child, fk in self.kids(parent):
            money = [c for c in child.columns if c.kind == "money" and not c.nullable]
            if not money:
                continue
            col = money[0]
            groups = [(p, [r for r in self.rows[child.name] if r[fk.name] == p["id"]]) for p in self.rows[parent.name]]
            groups = [(p, g) for p, g in groups if 2 <= len(g) <= 100]
            if not groups:
                continue
            p, g = self.pick(groups)
            total = round(sum(r[col.name] for r in g), 2)
            return Draft("sum", "query",
                         f"What is the total {_words(col.name)} of all {child.words} of {self.ref(parent, p)}?",
                         [self.find(parent, p), (self.tool(child, "search") or "", {fk.name: p["id"]})],
                         f"The {len(g)} {child.words} of {self.ref(parent, p)} add up to {total:.2f}.", [total])
        return None

    def q_chain(self, parent: Table) -> Draft | None:
        if not self.findable(parent):
            return None
        for child, fk in self.kids(parent):
            nums = [c for c in child.columns if c.kind in ("money", "int", "float") and not c.nullable]
            others = [c for c in child.fks if c.name != fk.name and not c.nullable
                      and self.tables[c.fk_table or ""].label]
            if not nums or not others:
                continue
            num, other = nums[0], others[0]
            target = self.tables[other.fk_table or ""]
            options = []
            for p in self.rows[parent.name]:
                g = [r for r in self.rows[child.name] if r[fk.name] == p["id"]]
                if len(g) >= 2:
                    best = max(r[num.name] for r in g)
                    if sum(r[num.name] == best for r in g) == 1:
                        options.append((p, next(r for r in g if r[num.name] == best)))
            if not options:
                continue
            p, top = self.pick(options)
            q_row = self.rows[target.name][top[other.name] - 1]
            last = ((self.tool(target, "get") or "", {f"{target.singular}_id": q_row["id"]}) if self.tool(target, "get")
                    else (self.tool(target, "search") or "", {}))
            answer = str(q_row[target.label or "id"])
            return Draft("chain", "query",
                         f"Among the {child.words} of {self.ref(parent, p)}, take the one with the highest "
                         f"{_words(num.name)}. What is the {_words(target.label or 'id')} of its {target.sing_words}?",
                         [self.find(parent, p), (self.tool(child, "search") or "", {fk.name: p["id"]}), last],
                         f'It is the {target.sing_words} "{answer}".', [answer])
        return None

    # -- mutation templates ---------------------------------------------------------------------------
    def m_update(self, t: Table) -> Draft | None:
        tool = self.tool(t, "update")
        if not tool or not self.findable(t):
            return None
        cols = [c for c in updatable(t) if c.name != t.label and c.kind not in ("fk", "status", "text", "bool")]
        if not cols:
            return None
        row = self.pick(self.rows[t.name])
        chosen = self.rng.sample(cols, min(len(cols), self.rng.choice((1, 2))))
        chosen.sort(key=lambda c: t.columns.index(c))
        changes = {}
        for c in chosen:
            v = self.new_value(t, c, row[c.name])
            if v is None:
                return None
            changes[c.name] = v
        phrase = " and ".join(f"its {_words(k)} to {_shown(t.column(k), v)}" for k, v in changes.items())
        return Draft("update", "mutation", f"Update {self.ref(t, row)}: set {phrase}.",
                     [self.find(t, row), (tool, {f"{t.singular}_id": row["id"], **changes})],
                     expect={"changed": {t.name: {str(row["id"]): changes}}})

    def m_transition(self, t: Table) -> Draft | None:
        if not self.findable(t):
            return None
        options = [(tr, r) for tr in t.transitions for r in self.rows[t.name] if r["status"] in tr.sources]
        if not options:
            return None
        tr, row = self.pick(options)
        verb = tr.verb.replace("_", " ")
        text = (f"Mark {self.ref(t, row)} as {verb[5:]}." if verb.startswith("mark ")
                else f"{verb.capitalize()} {self.ref(t, row)}.")
        return Draft("transition", "mutation", text,
                     [self.find(t, row), (self.tool(t, "transition", tr.verb) or "", {f"{t.singular}_id": row["id"]})],
                     expect={"changed": {t.name: {str(row["id"]): {"status": tr.target}}}})

    def m_bulk(self, parent: Table) -> Draft | None:
        if not self.findable(parent):
            return None
        options = []
        for child, fk in self.kids(parent):
            for tr in child.transitions:
                for p in self.rows[parent.name]:
                    for status in tr.sources:
                        hit = [r for r in self.rows[child.name] if r[fk.name] == p["id"] and r["status"] == status]
                        if 1 <= len(hit) <= 6:
                            options.append((child, fk, tr, p, status, hit))
        if not options:
            return None
        several = [o for o in options if len(o[5]) >= 2]
        child, fk, tr, p, status, hit = self.pick(several or options)
        verb = tr.verb.replace("_", " ")
        tool = self.tool(child, "transition", tr.verb) or ""
        what = f"every {_words(status)} {child.sing_words} of {self.ref(parent, p)}"
        text = f"Mark {what} as {verb[5:]}." if verb.startswith("mark ") else f"{verb.capitalize()} {what}."
        calls = [self.find(parent, p), (self.tool(child, "search") or "", {fk.name: p["id"], "status": status})]
        calls += [(tool, {f"{child.singular}_id": r["id"]}) for r in hit]
        return Draft("bulk", "mutation", text, calls,
                     expect={"changed": {child.name: {str(r["id"]): {"status": tr.target} for r in hit}}})

    def m_create(self, t: Table) -> Draft | None:
        tool = self.tool(t, "create")
        if not tool:
            return None
        fks = [c for c in t.fks if not c.nullable]
        if any(not self.findable(self.tables[c.fk_table or ""]) for c in fks):
            return None
        calls: list[tuple[str, dict[str, Any]]] = []
        args: dict[str, Any] = {}
        refs = []
        for c in fks:
            target = self.tables[c.fk_table or ""]
            row = self.pick(self.rows[target.name])
            calls.append(self.find(target, row))
            args[c.name] = row["id"]
            refs.append(f"{_words(c.name[:-3])} {self.ref(target, row)[4:]}" if c.name[:-3] != target.singular
                        else self.ref(target, row))
        shown = []
        for c in t.columns:
            if c.kind in ("fk", "status") or c.nullable:
                continue
            v = self.new_value(t, c, None)
            if v is None:
                return None
            args[c.name] = v
            shown.append(f"{_words(c.name)} {_shown(c, v)}")
        calls.append((tool, args))
        link = f" for {' and '.join(refs)}" if refs else ""
        fields = f" with {', '.join(shown)}" if shown else ""
        want = dict(args)
        if t.status:
            want["status"] = t.status[0]
        return Draft("create", "mutation", f"Create a new {t.sing_words}{link}{fields}.", calls,
                     expect={"added": {t.name: [want]}})

    def m_delete(self, parent: Table) -> Draft | None:
        if not self.findable(parent):
            return None
        for child, fk in self.kids(parent):
            tool = self.tool(child, "delete")
            if not tool:
                continue
            attrs = [c for c in child.columns if c.kind in ("money", "date", "int", "enum", "float", "words")]
            options = []
            for p in self.rows[parent.name]:
                g = [r for r in self.rows[child.name] if r[fk.name] == p["id"]]
                for a in attrs:
                    for r in g:
                        if (sum(x[a.name] == r[a.name] for x in g) == 1 and r[a.name] is not None
                                and not self.referenced(child, r["id"])):
                            options.append((p, a, r))
            if not options:
                continue
            p, a, r = self.pick(options)
            return Draft("delete", "mutation",
                         f"Delete the {child.sing_words} of {self.ref(parent, p)} whose {_words(a.name)} is "
                         f"{_shown(a, r[a.name])}.",
                         [self.find(parent, p), (self.tool(child, "search") or "", {fk.name: p["id"]}),
                          (tool, {f"{child.singular}_id": r["id"]})],
                         expect={"removed": {child.name: [r["id"]]}})
        return None

    def m_adjust(self, t: Table) -> Draft | None:
        if not self.findable(t) or not t.adjusts:
            return None
        a = self.pick(list(t.adjusts))
        col = t.column(a.field)
        rows = [r for r in self.rows[t.name] if (r[a.field] or 0) >= (2 if a.sign < 0 else 0)]
        if not rows:
            return None
        row = self.pick(rows)
        cur = row[a.field] or 0
        if col.py_type == "float":
            amount = round(self.rng.uniform(1, max(1.5, cur * 0.6 if a.sign < 0 else 50)), 2)
            new = round(cur + a.sign * amount, 2)
        else:
            amount = self.rng.randint(1, max(1, cur // 2 if a.sign < 0 else 40))
            new = cur + a.sign * amount
        verb = a.verb.replace("_", " ")
        direction = "adds to" if a.sign > 0 else "takes from"
        return Draft("adjust", "mutation",
                     f"{verb.capitalize()} {_fmt(col, amount)} for {self.ref(t, row)} (this {direction} its "
                     f"{_words(a.field)}).",
                     [self.find(t, row), (self.tool(t, "adjust", a.verb) or "", {f"{t.singular}_id": row["id"],
                                                                               "amount": amount})],
                     expect={"changed": {t.name: {str(row["id"]): {a.field: new}}}})

    def m_book(self, t: Table) -> Draft | None:
        if not self.findable(t) or not t.books:
            return None
        b = t.books[0]
        person = self.tables[b.person_table]
        child = self.tables[b.child]
        live = child.status[0] if child.status else None
        options = []
        for r in self.rows[t.name]:
            if r[b.capacity] <= 0 or (t.status and r["status"] in CLOSED_STATES):
                continue
            for p in self.rows[person.name]:
                taken = any(x[b.parent_col] == r["id"] and x[b.person_col] == p["id"]
                            and (live is None or x["status"] == live) for x in self.rows[child.name])
                if not taken:
                    options.append((r, p))
        if not options:
            return None
        r, p = self.pick(options)
        verb = b.verb.replace("_", " ")
        phrases = {
            "enroll": f"Enroll {self.ref(person, p)} in {self.ref(t, r)}.",
            "register": f"Register {self.ref(person, p)} for {self.ref(t, r)}.",
            "buy ticket": f"Buy a ticket to {self.ref(t, r)} for {self.ref(person, p)}.",
            "issue permit": f"Issue a parking permit at {self.ref(t, r)} to {self.ref(person, p)}.",
            "assign seat": f"Assign a seat of {self.ref(t, r)} to {self.ref(person, p)}.",
        }
        text = phrases.get(verb, f"{verb.capitalize()} {self.ref(t, r)} for {self.ref(person, p)}.")
        want = {b.parent_col: r["id"], b.person_col: p["id"]}
        if live:
            want["status"] = live
        return Draft("book", "mutation", text,
                     [self.find(person, p), self.find(t, r),
                      (self.tool(t, "book", b.verb) or "", {f"{t.singular}_id": r["id"], b.person_col: p["id"]})],
                     expect={"changed": {t.name: {str(r["id"]): {b.capacity: r[b.capacity] - 1}}},
                             "added": {child.name: [want]}})

    def m_transfer(self, t: Table) -> Draft | None:
        if not self.findable(t) or not t.transfers:
            return None
        tr = t.transfers[0]
        col = t.column(tr.field)
        live = next((s for s in ("active", "open") if s in t.status), None)
        ok = [r for r in self.rows[t.name] if (live is None or r["status"] == live) and (r[tr.field] or 0) >= 2]
        if len(ok) < 2:
            return None
        src = self.pick(ok)
        dst = self.pick([r for r in self.rows[t.name] if r["id"] != src["id"] and (live is None or r["status"] == live)])
        if col.py_type == "float":
            amount = round(self.rng.uniform(1, src[tr.field] * 0.5), 2)
            new_src, new_dst = round(src[tr.field] - amount, 2), round((dst[tr.field] or 0) + amount, 2)
        else:
            amount = self.rng.randint(1, max(1, src[tr.field] // 2))
            new_src, new_dst = src[tr.field] - amount, (dst[tr.field] or 0) + amount
        return Draft("transfer", "mutation",
                     f"Move {_fmt(col, amount)} of {_words(tr.field)} from {self.ref(t, src)} to {self.ref(t, dst)}.",
                     [self.find(t, src), self.find(t, dst),
                      (self.tool(t, "transfer", tr.verb) or "", {f"from_{t.singular}_id": src["id"],
                                                                 f"to_{t.singular}_id": dst["id"], "amount": amount})],
                     expect={"changed": {t.name: {str(src["id"]): {tr.field: new_src},
                                                  str(dst["id"]): {tr.field: new_dst}}}})

    # -- selection ------------------------------------------------------------------------------------
    def candidates(self) -> dict[str, list[Draft]]:
        templates = {
            "lookup": self.q_lookup, "count": self.q_count, "sum": self.q_sum, "chain": self.q_chain,
            "update": self.m_update, "transition": self.m_transition, "bulk": self.m_bulk, "create": self.m_create,
            "delete": self.m_delete, "adjust": self.m_adjust, "book": self.m_book, "transfer": self.m_transfer,
        }
        out: dict[str, list[Draft]] = {}
        for name, fn in templates.items():
            drafts = [d for t in self.s.tables if (d := fn(t)) is not None]
            self.rng.shuffle(drafts)
            out[name] = drafts
        return out

    def select(self) -> list[Draft]:
        pools = self.candidates()
        chosen: list[Draft] = []
        seen: set[str] = set()

        def take(names: list[str], want: int, pred=lambda d: True) -> None:  # noqa: ANN001
            names = names[:]
            self.rng.shuffle(names)
            progress = True
            while len(chosen) < TASKS_PER_ENV and want > 0 and progress:
                progress = False
                for n in names:
                    d = next((d for d in pools[n] if d.instruction not in seen and pred(d)), None)
                    if d is None:
                        continue
                    chosen.append(d)
                    seen.add(d.instruction)
                    pools[n].remove(d)
                    want -= 1
                    progress = True
                    if want == 0 or len(chosen) >= TASKS_PER_ENV:
                        break

        take(["book", "transfer", "bulk", "create", "delete", "chain"], MIN_LONG, lambda d: len(d.solution) >= 3)
        n_query = 3 + self.rng.randint(0, 1) - sum(d.kind == "query" for d in chosen)
        take(["lookup", "count", "sum", "chain"], n_query)
        take(["update", "transition", "adjust", "book", "transfer", "bulk", "create", "delete"], TASKS_PER_ENV)
        take(list(pools), TASKS_PER_ENV)
        long_ = sum(len(d.solution) >= 3 for d in chosen)
        if len(chosen) < TASKS_PER_ENV or long_ < MIN_LONG:
            raise TaskGenerationError(f"{self.s.env_id}: only {len(chosen)} tasks ({long_} long) could be built")
        order = list(range(len(chosen)))
        self.rng.shuffle(order)
        return [chosen[i] for i in order]


def build_tasks(scenario: Scenario, rows: Rows) -> list[Draft]:
    """Ten tasks (at least four needing 3+ calls), each with its reference solution and verifier spec."""
    return Builder(scenario, rows).select()
