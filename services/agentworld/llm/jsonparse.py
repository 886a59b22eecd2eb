"""Tolerant parsing of model output: JSON objects inside prose or fences, and code blocks.

Used when a provider gives no structured-output guarantee (OpenAI-compatible servers, Anthropic text).
"""

from __future__ import annotations

import json
import re
from typing import Any

from agentworld.llm.errors import LLMParseError

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:\n```|\Z)", re.S)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")


def strip_fences(text: str) -> str:
    """The body of the first fenced block, or the text itself."""
    m = _FENCE.search(text)
    return m.group(2) if m else text


def _balanced_objects(text: str) -> list[str]:
    """Every top-level {...} span, honouring strings, so prose around the object is ignored."""
    spans, depth, start, in_str, esc = [], 0, -1, False, False
    for i, ch in enumerate(text):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"' and depth > 0:
            in_str = True
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                spans.append(text[start : i + 1])
    return spans


def _loads(candidate: str) -> Any:
    try:
        return json.loads(candidate)
    except json.JSONDecodeError:
        return json.loads(_TRAILING_COMMA.sub(r"\1", candidate))


def parse_json_object(text: str) -> dict[str, Any]:
    """Find and parse the JSON object in `text`: fenced or bare, with trailing commas repaired."""
    candidates = []
    for m in _FENCE.finditer(text):
        candidates.append(m.group(2).strip())
    candidates.append(text.strip())
    for blob in list(candidates):
        candidates.extend(sorted(_balanced_objects(blob), key=len, reverse=True))
    last_error = "no JSON object found"
    for cand in candidates:
        if not cand.startswith("{"):
            continue
        try:
            value = _loads(cand)
        except json.JSONDecodeError as exc:
            last_error = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
            continue
        if isinstance(value, dict):
            return value
    raise LLMParseError(f"the answer is not a valid JSON object ({last_error})")


def extract_code(text: str, language: str = "python") -> str:
    """The longest fenced code block (preferring `language`), or the whole text when there is no fence."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    preferred = [body for lang, body in blocks if lang in (language, "py" if language == "python" else language)]
    pool = preferred or [body for _, body in blocks]
    if pool:
        return max(pool, key=len).strip("\n") + "\n"
    return text.strip("\n") + "\n"
