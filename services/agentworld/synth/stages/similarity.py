"""Near-duplicate detection for scenarios: OpenAI embeddings when configured, else TF-IDF over char n-grams."""

from __future__ import annotations

import math
import re
from collections import Counter

NGRAMS = (3, 4, 5)


def _grams(text: str) -> Counter[str]:
    norm = " " + re.sub(r"\s+", " ", re.sub(r"[^a-z0-9 ]", " ", text.lower())).strip() + " "
    return Counter(norm[i : i + n] for n in NGRAMS for i in range(max(0, len(norm) - n + 1)))


def tfidf_vectors(texts: list[str]) -> list[dict[str, float]]:
    """L2-normalised TF-IDF vectors (sublinear tf, smoothed idf) over the given corpus."""
    counts = [_grams(t) for t in texts]
    df: Counter[str] = Counter()
    for c in counts:
        df.update(c.keys())
    n = len(texts)
    vectors = []
    for c in counts:
        vec = {g: (1 + math.log(tf)) * (math.log((1 + n) / (1 + df[g])) + 1) for g, tf in c.items()}
        norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
        vectors.append({g: v / norm for g, v in vec.items()})
    return vectors


def cosine_sparse(a: dict[str, float], b: dict[str, float]) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(v * b.get(g, 0.0) for g, v in a.items())


def cosine_dense(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


def local_similarity_matrix(candidates: list[str], existing: list[str]) -> list[list[float]]:
    """sim[i][j]: candidate i vs (existing + candidates)[j], so candidates are also compared with each other."""
    vectors = tfidf_vectors(existing + candidates)
    cand = vectors[len(existing) :]
    return [[cosine_sparse(c, v) for v in vectors] for c in cand]
