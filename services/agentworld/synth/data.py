"""Seed rows for a scenario: Faker-drawn value pools sampled by a per-environment RNG, plus typed values.

No wall clock: dates are drawn from a fixed window around the environments' fixed "now" (2025-06-01).
Labels (the names instructions use) are unique per table so a task can name an entity unambiguously.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
from typing import Any

from faker import Faker

from agentworld.synth.compose import Column, Scenario, Table, rng_for

NOW = "2025-06-01T12:00:00"
_EPOCH = dt.date(2024, 1, 1)
_ADJECTIVES = (
    "Amber", "Arctic", "Bold", "Bright", "Classic", "Coastal", "Cosmic", "Crimson", "Daily", "Deluxe", "Emerald",
    "Grand", "Happy", "Hidden", "Ivory", "Jade", "Little", "Lucky", "Midnight", "Modern", "Noble", "Olive",
    "Royal", "Rustic", "Scarlet", "Silver", "Simple", "Smart", "Solar", "Swift", "Urban", "Velvet", "Vintage",
    "Wild", "Golden", "Blue", "Green", "Quiet", "Sunny", "Misty",
)

Rows = dict[str, list[dict[str, Any]]]


class Pools:
    """Value pools drawn once per process from Faker seeded with a constant.

    Faker's weighted sampling costs ~0.2 ms a value; sampling these pools with the environment's RNG is
    ~100x faster and just as deterministic (same Faker version and seed, same pools).
    """

    def __init__(self) -> None:
        fake = Faker("en_US")
        fake.seed_instance(20250601)
        self.first = sorted({fake.first_name() for _ in range(900)})
        self.last = sorted({fake.last_name() for _ in range(900)})
        self.company = sorted({fake.company() for _ in range(700)})
        self.city = sorted({fake.city() for _ in range(700)})
        self.street = sorted({fake.street_address() for _ in range(900)})
        self.country = sorted({fake.country() for _ in range(300)})
        self.sentence = sorted({fake.sentence(nb_words=8) for _ in range(900)})
        self.word = sorted({fake.word().capitalize() for _ in range(500)})
        self.user = sorted({fake.user_name() for _ in range(900)})
        self.mail = sorted({fake.free_email_domain() for _ in range(100)})
        self.job = sorted({fake.job() for _ in range(500)})


@functools.lru_cache(maxsize=1)
def _pools() -> Pools:
    return Pools()


def date_str(days: int) -> str:
    return (_EPOCH + dt.timedelta(days=days)).isoformat()


def value_for(col: Column, i: int, rng: random.Random, fake: Pools, *, lookup: bool = False) -> Any:
    """A realistic value of the column's kind; `i` (row number) keeps codes and emails unique."""
    k, a = col.kind, col.args
    if k == "person":
        return f"{rng.choice(fake.first)} {rng.choice(fake.last)}"
    if k == "company":
        return rng.choice(fake.company)
    if k == "email":
        return f"{rng.choice(fake.user)}{i}@{rng.choice(fake.mail)}"
    if k == "phone":
        return f"{rng.randint(201, 989)}-{rng.randint(200, 999)}-{rng.randint(0, 9999):04d}"
    if k == "city":
        return rng.choice(fake.city)
    if k == "address":
        return f"{rng.choice(fake.street)}, {rng.choice(fake.city)}"
    if k == "country":
        return rng.choice(fake.country)
    if k == "text":
        return rng.choice(fake.sentence)
    if k == "word":
        return rng.choice(fake.word)
    if k == "words":
        if lookup:
            return a[(i - 1) % len(a)]
        return f"{rng.choice(_ADJECTIVES)} {rng.choice(a)}"
    if k == "code":
        return f"{a[0] if a else 'C'}-{10000 + i * 37 + rng.randint(0, 36)}"
    if k == "url":
        return f"https://www.{rng.choice(fake.word).lower()}{i}.example.com"
    if k == "job":
        return rng.choice(fake.job)
    if k == "plate":
        return f"{rng.choice('ABCDEFGHJKLMNPRSTUVWXYZ')}{rng.choice('ABCDEFGHJKLMNPRSTUVWXYZ')}{i:02d}-{rng.randint(100, 999)}"
    if k == "money":
        return round(rng.uniform(float(a[0]), float(a[1])), 2)
    if k == "float":
        return round(rng.uniform(float(a[0]), float(a[1])), 1)
    if k == "int":
        return rng.randint(int(a[0]), int(a[1]))
    if k == "date":
        return date_str(rng.randint(0, 730))
    if k == "time":
        return f"{rng.randint(7, 20):02d}:{rng.choice((0, 15, 30, 45)):02d}"
    if k == "enum":
        return a[(i - 1) % len(a)] if lookup else rng.choice(a)
    if k == "bool":
        return rng.random() < 0.5
    raise ValueError(f"unknown kind {k}")


def _row(table: Table, i: int, rng: random.Random, fake: Pools, rows: Rows, labels: set[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"id": i}
    for col in table.columns:
        if col.kind == "fk":
            targets = rows[col.fk_table]
            row[col.name] = None if col.nullable and rng.random() < 0.15 else rng.choice(targets)["id"]
        elif col.kind == "status":
            row[col.name] = col.args[0] if rng.random() < 0.35 else rng.choice(col.args)
        elif col.name == table.label:
            value = value_for(col, i, rng, fake, lookup=table.role == "lookup")
            tries = 0
            while str(value).lower() in labels and tries < 8:
                value = value_for(col, i + 1000 * (tries + 1), rng, fake, lookup=False)
                tries += 1
            if str(value).lower() in labels:
                value = f"{value} {i}"
            labels.add(str(value).lower())
            row[col.name] = value
        elif col.nullable and rng.random() < 0.2:
            row[col.name] = None
        else:
            row[col.name] = value_for(col, i, rng, fake)
    for book in table.books:  # keep most bookable rows open, a few full (for the 409 path)
        row[book.capacity] = 0 if rng.random() < 0.15 else max(row[book.capacity], 2)
    stamp = f"{date_str(rng.randint(0, 500))}T{rng.randint(8, 18):02d}:{rng.choice((0, 15, 30, 45)):02d}:00"
    row["created_at"] = stamp
    row["updated_at"] = stamp
    return row


def generate_rows(scenario: Scenario) -> Rows:
    """Rows per table, in table order (referenced tables first, so foreign keys always resolve)."""
    fake = _pools()
    rows: Rows = {}
    for table in scenario.tables:
        rng = rng_for(scenario.seed, "data", scenario.env_id, table.name)
        labels: set[str] = set()
        rows[table.name] = [_row(table, i, rng, fake, rows, labels) for i in range(1, table.rows + 1)]
    return rows
