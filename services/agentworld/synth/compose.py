"""Scenario composition: a primary domain plus slices of secondary domains, with naming variations.

Everything is derived from (seed, index, attempt) through `rng_for`, so any worker process can rebuild
scenario i alone; `plan_scenarios` (run once, in order) picks the attempt that makes each scenario's
table-name set new, which keeps the 1,000 scenarios distinct.
"""

from __future__ import annotations

import functools
import hashlib
import random
from dataclasses import dataclass, field

from agentworld.synth.domains import DOMAINS, DOMAINS_BY_KEY
from agentworld.synth.spec import KINDS, Adjust, DomainSpec, EntitySpec, Transfer, Transition

MIN_TABLES, MAX_TABLES = 12, 25

_BRAND_A = (
    "Amber", "Aspen", "Atlas", "Azure", "Beacon", "Birch", "Bright", "Cedar", "Cobalt", "Copper", "Coral", "Crest",
    "Crystal", "Delta", "Ember", "Evergreen", "Falcon", "Fern", "Golden", "Granite", "Harbor", "Hazel", "Horizon",
    "Indigo", "Iron", "Juniper", "Kestrel", "Lakeside", "Lantern", "Laurel", "Lunar", "Maple", "Meadow", "Mesa",
    "Northwind", "Oak", "Onyx", "Orchard", "Pacific", "Pine", "Pioneer", "Prairie", "Quartz", "Raven", "Redwood",
    "Ridge", "River", "Saffron", "Sage", "Silver", "Sky", "Solstice", "Spruce", "Stone", "Summit", "Sunrise",
    "Tidal", "Timber", "Valley", "Willow",
)
_BRAND_B = (
    "Bay", "Bridge", "Brook", "Canyon", "Circle", "City", "Coast", "Commons", "Corner", "Court", "Cove", "Crossing",
    "Dale", "Field", "Forge", "Gate", "Glen", "Grove", "Harvest", "Haven", "Heights", "Hill", "Hollow", "Island",
    "Junction", "Key", "Landing", "Lane", "Ledge", "Line", "Loop", "Mill", "Mountain", "North", "Park", "Pass",
    "Peak", "Pier", "Place", "Point", "Port", "Quarter", "Reach", "Road", "Rock", "Row", "Shore", "Side", "South",
    "Spring", "Square", "Station", "Street", "Terrace", "Trail", "Union", "View", "Vista", "Way", "Works",
)


def rng_for(seed: int, *parts: object) -> random.Random:
    """An independent, reproducible stream (sha256 of the parts, never Python's salted hash())."""
    key = ":".join(str(p) for p in (seed, *parts)).encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


def singular(plural: str) -> str:
    head, _, last = plural.rpartition("_")
    for suffix, repl in (("ies", "y"), ("sses", "ss"), ("xes", "x"), ("ches", "ch"), ("shes", "sh")):
        if last.endswith(suffix):
            last = last[: -len(suffix)] + repl
            break
    else:
        if last.endswith("s") and not last.endswith("ss"):
            last = last[:-1]
    return f"{head}_{last}" if head else last


# Names the emitted app.py imports or defines; a model class must not shadow them.
_RESERVED = frozenset({"Field", "Query", "Path", "Column", "Text", "Float", "Integer", "Boolean", "ForeignKey",
                       "BaseModel", "ConfigDict", "FastAPI", "HTTPException", "Optional", "List", "Literal", "Base",
                       "SessionLocal", "DeleteResult", "Session", "Engine"})


def camel(name: str) -> str:
    cls = "".join(part.capitalize() for part in name.split("_"))
    return f"{cls}Record" if cls in _RESERVED else cls


@dataclass
class Column:
    name: str
    kind: str  # a spec kind, or "fk" / "status"
    args: tuple[str, ...] = ()
    nullable: bool = False
    unique: bool = False
    fk_table: str | None = None

    @property
    def sql_type(self) -> str:
        if self.kind in ("fk",):
            return "INTEGER"
        if self.kind == "status":
            return "TEXT"
        return KINDS[self.kind][0]

    @property
    def py_type(self) -> str:
        if self.kind == "fk":
            return "int"
        if self.kind == "status":
            return "str"
        return KINDS[self.kind][1]


@dataclass
class BookAction:
    verb: str
    child: str  # table name of the booking rows
    capacity: str
    parent_col: str  # child's FK column to the booked table
    person_col: str  # child's FK column to the person table
    person_table: str


@dataclass
class Table:
    name: str
    singular: str
    cls: str
    domain: str
    entity: str
    role: str
    columns: list[Column]
    label: str | None
    status: tuple[str, ...] = ()
    transitions: tuple[Transition, ...] = ()
    adjusts: tuple[Adjust, ...] = ()
    books: list[BookAction] = field(default_factory=list)
    transfers: tuple[Transfer, ...] = ()
    rows: int = 10
    ops: tuple[str, ...] = ()  # generic tools this table exposes: search get create update delete

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def fks(self) -> list[Column]:
        return [c for c in self.columns if c.kind == "fk"]

    @property
    def words(self) -> str:
        return self.name.replace("_", " ")

    @property
    def sing_words(self) -> str:
        return self.singular.replace("_", " ")


@dataclass
class Scenario:
    env_id: str
    title: str
    description: str
    seed: int
    index: int
    primary: str
    secondaries: list[str]
    person: str
    tables: list[Table]

    def table(self, name: str) -> Table:
        return next(t for t in self.tables if t.name == name)

    def children_of(self, name: str) -> list[tuple[Table, Column]]:
        return [(t, c) for t in self.tables for c in t.fks if c.fk_table == name]


def _slice(domain: DomainSpec, rng: random.Random, size: int) -> list[EntitySpec]:
    """A dependency-closed subset of a secondary domain (its person entity excluded)."""
    candidates = [e for e in domain.entities if e.role != "person"]
    chosen: set[str] = set()
    order = candidates[:]
    rng.shuffle(order)
    for root in order:
        closure = [root.key]
        stack = [root]
        while stack:
            ent = stack.pop()
            for fk in ent.fks:
                target = domain.entity(fk.target)
                if target.role != "person" and target.key not in closure:
                    closure.append(target.key)
                    stack.append(target)
        if len(chosen | set(closure)) <= size:
            chosen |= set(closure)
        if len(chosen) >= size:
            break
    return [e for e in domain.entities if e.key in chosen]


def _surface(rng: random.Random, role: str, labelled: bool, primary: bool,
             transitions: tuple[Transition, ...]) -> tuple[tuple[str, ...], tuple[Transition, ...]]:
    """Which generic tools and domain actions a table exposes: like real APIs, not full CRUD everywhere."""
    ops = ["search"]
    if role == "person":
        ops += ["get", "create", "update"]
    elif role == "core":
        if primary or rng.random() < 0.5:
            ops.append("get")
        if labelled and rng.random() < (0.7 if primary else 0.35):
            ops.append("create")
        if rng.random() < (0.5 if primary else 0.25):
            ops.append("update")
    elif role == "child":
        if rng.random() < 0.2:
            ops.append("get")
        if rng.random() < 0.5:
            ops.append("create")
        if rng.random() < 0.4:
            ops.append("delete")
    keep = (2 if primary else 1) if role in ("core", "person") else 1
    if len(transitions) > keep:
        picks = sorted(rng.sample(range(len(transitions)), keep))
        transitions = tuple(transitions[i] for i in picks)
    return tuple(ops), transitions


@functools.lru_cache(maxsize=8)
def _brand_pairs(seed: int) -> list[tuple[str, str]]:
    pairs = [(a, b) for a in _BRAND_A for b in _BRAND_B]
    rng_for(seed, "brands").shuffle(pairs)
    return pairs


def build_scenario(seed: int, index: int, attempt: int = 0) -> Scenario:
    rng = rng_for(seed, "scenario", index, attempt)
    order = list(range(len(DOMAINS)))
    rng_for(seed, "primary-order", index // len(DOMAINS)).shuffle(order)
    primary = DOMAINS[order[index % len(DOMAINS)]] if attempt == 0 else rng.choice(DOMAINS)
    others = [d for d in DOMAINS if d.key != primary.key]
    n_secondary = rng.choice((2, 2, 3))
    secondaries = rng.sample(others, n_secondary)

    picked: list[tuple[DomainSpec, EntitySpec]] = [(primary, e) for e in primary.entities]
    for sec in secondaries:
        room = MAX_TABLES - len(picked)
        want = min(room, rng.randint(3, 5))
        if want <= 0:
            break
        picked += [(sec, e) for e in _slice(sec, rng, want)]
    if len(picked) < MIN_TABLES:  # top up from the last secondary's remaining entities
        sec = secondaries[-1]
        have = {e.key for d, e in picked if d.key == sec.key}
        picked += [(sec, e) for e in _slice(sec, rng, len(have) + MIN_TABLES - len(picked)) if e.key not in have]

    # Table names: a synonym per entity, unique across the scenario.
    names: dict[tuple[str, str], str] = {}
    used: set[str] = set()
    for dom, ent in picked:
        options = list(ent.names)
        first = rng.choice(options)
        for cand in [first, *options, *(f"{dom.key}_{o}" for o in options)]:
            if cand not in used and singular(cand) not in {singular(u) for u in used}:
                names[(dom.key, ent.key)] = cand
                used.add(cand)
                break
    person_name = names[(primary.key, primary.person.key)]

    def resolve(dom: DomainSpec, target: str) -> str:
        ent = dom.entity(target)
        if ent.role == "person" and dom.key != primary.key:
            return person_name
        return names[(dom.key, target)]

    tables: list[Table] = []
    for dom, ent in picked:
        name = names[(dom.key, ent.key)]
        sing = singular(name)
        cols: list[Column] = []
        label = None
        for f in ent.fields:
            if f.optional and rng.random() < 0.5:
                continue
            cols.append(Column(f.name, f.kind, f.args, nullable=f.optional, unique=f.label))
            if f.label:
                label = f.name
        for fk in ent.fks:
            target = resolve(dom, fk.target)
            col = fk.column or f"{singular(target)}_id"
            cols.insert(len([c for c in cols if c.kind == "fk"]) + (1 if label else 0),
                        Column(col, "fk", nullable=fk.nullable, fk_table=target))
        if ent.status:
            cols.append(Column("status", "status", ent.status))
        role = ent.role if not (ent.role == "person" and dom.key != primary.key) else "core"
        base_rows = {"person": 16, "lookup": 6, "child": 28}.get(role, 18)
        rows = base_rows + rng.randint(-3, 5)
        if label and cols[0].kind == "enum":
            rows = min(rows, len(cols[0].args))
        if label and role == "lookup":
            lab = next(c for c in cols if c.name == label)
            if lab.kind == "words":
                rows = min(rows, len(lab.args))
        ops, transitions = _surface(rng, role, bool(label), dom.key == primary.key, ent.transitions)
        present = {c.name for c in cols}  # actions on an optional field this scenario left out are dropped
        adjusts = tuple(a for a in ent.adjusts if a.field in present)
        transfers = tuple(tr for tr in ent.transfers if tr.field in present)
        tables.append(Table(name, sing, camel(sing), dom.key, ent.key, role, cols, label, ent.status,
                            transitions, adjusts, [], transfers, rows, ops))
    by_entity = {(t.domain, t.entity): t for t in tables}
    for dom, ent in picked:
        table = by_entity[(dom.key, ent.key)]
        for b in ent.books:
            child = by_entity.get((dom.key, b.child))
            if child is None or b.capacity not in {c.name for c in table.columns}:
                continue
            parent_col = next(c.name for c in child.fks if c.fk_table == table.name)
            person_col = next((c.name for c in child.fks if c.fk_table == person_name), None)
            if person_col is None:
                continue
            table.books.append(BookAction(b.verb, child.name, b.capacity, parent_col, person_col, person_name))

    pairs = _brand_pairs(seed)
    a, b = pairs[index % len(pairs)]
    brand = f"{a} {b}"
    suffix = "" if index < len(pairs) else f"_{index}"
    env_id = f"{primary.key}_{a.lower()}_{b.lower()}{suffix}"
    extra = " and ".join(s.title.lower() for s in secondaries)
    title = f"{brand} {primary.title}"
    description = (f"{brand} runs {primary.description}. The same back office also covers {extra}. "
                   f"Tools act as the operator (user id 1).")
    return Scenario(env_id, title, description, seed, index, primary.key, [s.key for s in secondaries],
                    person_name, tables)


def plan_scenarios(seed: int, n: int, max_attempts: int = 20) -> list[int]:
    """The attempt number per index such that no two scenarios share a table-name set."""
    seen: set[tuple[str, ...]] = set()
    attempts: list[int] = []
    for i in range(n):
        for attempt in range(max_attempts):
            sig = tuple(sorted(t.name for t in build_scenario(seed, i, attempt).tables))
            if sig not in seen or attempt == max_attempts - 1:
                seen.add(sig)
                attempts.append(attempt)
                break
    return attempts


__all__ = ["DOMAINS_BY_KEY", "Column", "Scenario", "Table", "build_scenario", "plan_scenarios", "rng_for", "singular"]
