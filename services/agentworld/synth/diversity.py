"""Diversity report: distinct scenario names and pairwise Jaccard similarity of table and tool name sets.

Name sets become bitmasks over a shared vocabulary, so all n(n-1)/2 pairs of 1,000 environments cost two
int ANDs/ORs and popcounts each (about a second), not set objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Similarity:
    max: float
    mean: float
    p99: float
    pairs: int
    max_pair: tuple[str, str] = ("", "")


@dataclass
class DiversityReport:
    envs: int
    distinct_titles: int
    distinct_ids: int
    domains_used: int
    tables: Similarity
    tools: Similarity

    def to_dict(self) -> dict:
        def sim(s: Similarity) -> dict:
            return {"max": round(s.max, 4), "mean": round(s.mean, 4), "p99": round(s.p99, 4), "pairs": s.pairs,
                    "max_pair": list(s.max_pair)}

        return {"envs": self.envs, "distinct_titles": self.distinct_titles, "distinct_ids": self.distinct_ids,
                "domains_used": self.domains_used, "table_jaccard": sim(self.tables), "tool_jaccard": sim(self.tools)}


def pairwise_jaccard(ids: list[str], sets: list[list[str]]) -> Similarity:
    vocab: dict[str, int] = {}
    masks = []
    for names in sets:
        m = 0
        for name in names:
            m |= 1 << vocab.setdefault(name, len(vocab))
        masks.append(m)
    values: list[float] = []
    best, best_pair = 0.0, ("", "")
    for i in range(len(masks)):
        a = masks[i]
        for j in range(i + 1, len(masks)):
            b = masks[j]
            union = (a | b).bit_count()
            v = (a & b).bit_count() / union if union else 1.0
            values.append(v)
            if v > best:
                best, best_pair = v, (ids[i], ids[j])
    if not values:
        return Similarity(0.0, 0.0, 0.0, 0)
    values.sort()
    return Similarity(best, sum(values) / len(values), values[min(len(values) - 1, int(len(values) * 0.99))],
                      len(values), best_pair)


def diversity(ids: list[str], titles: list[str], table_sets: list[list[str]], tool_sets: list[list[str]],
              domains: list[list[str]]) -> DiversityReport:
    return DiversityReport(
        envs=len(ids), distinct_titles=len(set(titles)), distinct_ids=len(set(ids)),
        domains_used=len({d for ds in domains for d in ds}),
        tables=pairwise_jaccard(ids, table_sets), tools=pairwise_jaccard(ids, tool_sets))


_TABLE = re.compile(r'^CREATE TABLE "?([A-Za-z0-9_]+)"?', re.MULTILINE)
_TOOL = re.compile(r'operation_id="([A-Za-z0-9_]+)"')


def diversity_of_dir(root: Path) -> DiversityReport:
    """The report for bundles on disk (any generator): names read from schema.sql and app.py."""
    from agentworld.bundle import find_bundles, load_bundle

    ids, titles, tables, tools, domains = [], [], [], [], []
    for path in find_bundles([root]):
        b = load_bundle(path)
        ids.append(b.env_id)
        titles.append(b.manifest.title)
        tables.append(_TABLE.findall(b.schema_sql))
        tools.append(_TOOL.findall(b.app_py))
        domains.append(list(b.manifest.provenance.get("domains", [])))
    return diversity(ids, titles, tables, tools, domains)
