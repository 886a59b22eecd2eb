"""The domain-library mini language and the typed entity model it parses into.

Domains are written as short one-line entity specs (see domains.py) so that 40+ domains fit in one
readable file; this module turns them into dataclasses the composer, data generator and emitters share.

Entity line grammar (segments separated by " | "):
    "<name>/<synonym>... [person|lookup|child] :: <field> <field> ..."
    field:   [*]name:kind(args)   '*' marks the label (unique, human-facing name used in instructions)
             ?name:kind(args)     an optional attribute: included in some scenarios only (variation)
             @target[=column]     required foreign key to entity `target` (column defaults to <singular>_id)
             @?target[=column]    nullable foreign key
    "status a,b,c"                status column, default a
    "act verb a,b>c ; verb2 x>y"  state transitions (domain actions such as cancel, approve, refund)
    "adjust verb field +|- ; ..." increment/decrement a numeric field (restock, redeem)
    "book verb child capacity"    create a `child` row linking this entity and the person, using one unit
    "transfer verb field"         move an amount of `field` between two rows (transfer funds, points)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KINDS = {
    # kind: (sql type, python annotation)
    "person": ("TEXT", "str"),
    "company": ("TEXT", "str"),
    "email": ("TEXT", "str"),
    "phone": ("TEXT", "str"),
    "city": ("TEXT", "str"),
    "address": ("TEXT", "str"),
    "country": ("TEXT", "str"),
    "text": ("TEXT", "str"),
    "word": ("TEXT", "str"),
    "words": ("TEXT", "str"),
    "code": ("TEXT", "str"),
    "url": ("TEXT", "str"),
    "job": ("TEXT", "str"),
    "plate": ("TEXT", "str"),
    "money": ("REAL", "float"),
    "float": ("REAL", "float"),
    "int": ("INTEGER", "int"),
    "date": ("TEXT", "str"),
    "time": ("TEXT", "str"),
    "enum": ("TEXT", "str"),
    "bool": ("INTEGER", "bool"),
}


class SpecError(ValueError):
    """A domain spec line does not parse; the message names the domain and the token."""


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str
    args: tuple[str, ...] = ()
    label: bool = False
    optional: bool = False  # included in some scenarios only


@dataclass(frozen=True)
class FKSpec:
    target: str  # entity key
    column: str | None = None
    nullable: bool = False


@dataclass(frozen=True)
class Transition:
    verb: str
    sources: tuple[str, ...]
    target: str


@dataclass(frozen=True)
class Adjust:
    verb: str
    field: str
    sign: int


@dataclass(frozen=True)
class Book:
    verb: str
    child: str  # entity key of the booking table
    capacity: str


@dataclass(frozen=True)
class Transfer:
    verb: str
    field: str


@dataclass(frozen=True)
class EntitySpec:
    key: str
    names: tuple[str, ...]
    role: str  # person | lookup | child | core
    fields: tuple[FieldSpec, ...]
    fks: tuple[FKSpec, ...]
    status: tuple[str, ...] = ()
    transitions: tuple[Transition, ...] = ()
    adjusts: tuple[Adjust, ...] = ()
    books: tuple[Book, ...] = ()
    transfers: tuple[Transfer, ...] = ()


@dataclass(frozen=True)
class DomainSpec:
    key: str
    title: str
    description: str
    entities: tuple[EntitySpec, ...]

    @property
    def person(self) -> EntitySpec:
        return next(e for e in self.entities if e.role == "person")

    def entity(self, key: str) -> EntitySpec:
        for e in self.entities:
            if e.key == key:
                return e
        raise KeyError(key)


_FIELD = re.compile(r"^([*?]?)([a-z_][a-z0-9_]*):([a-z]+)(?:\(([^)]*)\))?$")
_FK = re.compile(r"^@(\??)([a-z_]+)(?:=([a-z_]+))?$")


def _parse_entity(domain: str, line: str) -> EntitySpec:
    head, *segments = [s.strip() for s in line.split(" | ")]
    if "::" not in head:
        raise SpecError(f"{domain}: entity line without '::': {line!r}")
    names_part, fields_part = (s.strip() for s in head.split("::", 1))
    name_tokens = names_part.split()
    names = tuple(name_tokens[0].split("/"))
    role = name_tokens[1] if len(name_tokens) > 1 else "core"
    fields: list[FieldSpec] = []
    fks: list[FKSpec] = []
    for token in fields_part.split():
        if m := _FK.match(token):
            fks.append(FKSpec(target=m.group(2), column=m.group(3), nullable=bool(m.group(1))))
            continue
        m = _FIELD.match(token)
        if not m or m.group(3) not in KINDS:
            raise SpecError(f"{domain}: bad field {token!r} in {names[0]}")
        args = tuple(m.group(4).split(",")) if m.group(4) else ()
        if m.group(3) == "words":  # word lists spell spaces as underscores
            args = tuple(a.replace("_", " ") for a in args)
        fields.append(FieldSpec(m.group(2), m.group(3), args, label=m.group(1) == "*", optional=m.group(1) == "?"))
    status: tuple[str, ...] = ()
    transitions: list[Transition] = []
    adjusts: list[Adjust] = []
    books: list[Book] = []
    transfers: list[Transfer] = []
    for seg in segments:
        word, _, rest = seg.partition(" ")
        if word == "status":
            status = tuple(rest.split(","))
        elif word == "act":
            for item in rest.split(";"):
                verb, arrow = item.split()
                src, dst = arrow.split(">")
                transitions.append(Transition(verb, tuple(src.split(",")), dst))
        elif word == "adjust":
            for item in rest.split(";"):
                verb, fld, sign = item.split()
                adjusts.append(Adjust(verb, fld, 1 if sign == "+" else -1))
        elif word == "book":
            verb, child, cap = rest.split()
            books.append(Book(verb, child, cap))
        elif word == "transfer":
            verb, fld = rest.split()
            transfers.append(Transfer(verb, fld))
        else:
            raise SpecError(f"{domain}: unknown segment {seg!r} in {names[0]}")
    for t in transitions:
        unknown = [s for s in (*t.sources, t.target) if s not in status]
        if unknown:
            raise SpecError(f"{domain}: {names[0]}.{t.verb} uses unknown status {unknown[0]!r}")
    return EntitySpec(names[0], names, role, tuple(fields), tuple(fks), status, tuple(transitions),
                      tuple(adjusts), tuple(books), tuple(transfers))


def parse_domain(key: str, title: str, description: str, lines: list[str]) -> DomainSpec:
    """Parse one domain; checks references so a typo fails at import, not in generated code."""
    entities = tuple(_parse_entity(key, line) for line in lines)
    keys = {e.key for e in entities}
    if sum(e.role == "person" for e in entities) != 1:
        raise SpecError(f"{key}: exactly one entity must be marked 'person'")
    for e in entities:
        for fk in e.fks:
            if fk.target not in keys:
                raise SpecError(f"{key}: {e.key} references unknown entity {fk.target!r}")
        for b in e.books:
            if b.child not in keys or b.capacity not in {f.name for f in e.fields}:
                raise SpecError(f"{key}: {e.key}.{b.verb} has a bad child or capacity")
        for a in (*e.adjusts, *e.transfers):
            if a.field not in {f.name for f in e.fields}:
                raise SpecError(f"{key}: {e.key}.{a.verb} adjusts unknown field {a.field!r}")
    return DomainSpec(key, title, description, entities)
