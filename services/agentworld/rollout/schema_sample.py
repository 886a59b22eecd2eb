"""Draw random values that fit a JSON Schema (the subset tool schemas use), for the `random` policy.

Covers what FastAPI/pydantic emit: type (also lists), enum, const, anyOf/oneOf/allOf, $ref into $defs,
min/max bounds, string formats, arrays and nested objects. Optional properties are included at random.
"""

from __future__ import annotations

import random
import string
from typing import Any

_MAX_DEPTH = 6
_FORMATS = {
    "date": lambda r: f"2025-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
    "date-time": lambda r: f"2025-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T{r.randint(0, 23):02d}:00:00",
    "time": lambda r: f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:00",
    "email": lambda r: f"user{r.randint(1, 999)}@example.com",
    "uri": lambda r: f"https://example.com/{r.randint(1, 999)}",
    "uuid": lambda r: f"{r.getrandbits(32):08x}-0000-4000-8000-{r.getrandbits(48):012x}",
}


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    node: Any = root
    for part in ref[2:].split("/"):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    merged = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    return _resolve(merged, root) if "$ref" in node else merged


def sample(schema: dict[str, Any] | bool, rng: random.Random, root: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A random value valid (in the common cases) under `schema`."""
    if schema is True or schema == {}:
        return rng.choice([rng.randint(0, 10), "x", True])
    if not isinstance(schema, dict):
        return None
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            options = [s for s in schema[key] if not (isinstance(s, dict) and s.get("type") == "null")] or schema[key]
            return sample(rng.choice(options), rng, root, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged.update(_resolve(part, root) if isinstance(part, dict) else {})
        return sample(merged, rng, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = rng.choice([k for k in kind if k != "null"] or ["null"])
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        return _object(schema, rng, root, depth)
    if kind == "array":
        if depth >= _MAX_DEPTH:
            return []
        lo = int(schema.get("minItems", 0))
        hi = max(lo, min(int(schema.get("maxItems", lo + 3)), lo + 3))
        return [sample(schema.get("items", {}), rng, root, depth + 1) for _ in range(rng.randint(lo, hi))]
    if kind == "integer":
        lo = int(schema.get("minimum", schema.get("exclusiveMinimum", 0) + (1 if "exclusiveMinimum" in schema else 0)))
        hi = int(schema.get("maximum", max(lo, 0) + 20))
        return rng.randint(lo, max(lo, hi))
    if kind == "number":
        lo = float(schema.get("minimum", 0.0))
        hi = float(schema.get("maximum", lo + 100.0))
        return round(rng.uniform(lo, max(lo, hi)), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    fmt = schema.get("format")
    if fmt in _FORMATS:
        return _FORMATS[fmt](rng)
    lo = int(schema.get("minLength", 1))
    hi = max(lo, min(int(schema.get("maxLength", lo + 11)), lo + 11))
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(lo, hi)))


def _object(schema: dict[str, Any], rng: random.Random, root: dict[str, Any], depth: int) -> dict[str, Any]:
    props: dict[str, Any] = schema.get("properties", {}) or {}
    required = set(schema.get("required", []) or [])
    out: dict[str, Any] = {}
    for name, sub in props.items():
        if name in required or (depth < _MAX_DEPTH and rng.random() < 0.5):
            out[name] = sample(sub, rng, root, depth + 1)
    return out
