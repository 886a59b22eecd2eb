"""Tool-call arguments checked before any environment code sees them: size, depth, text, numbers.

JSON allows what an app cannot store or a client did not mean: NaN and Infinity, integers beyond 64 bits, lone
surrogates (invalid UTF-8 once encoded), nesting deep enough to exhaust a parser. Each gives InvalidArgument naming
the field ("field 'filters.tags[2]'"), so a client knows what to fix.
"""

from __future__ import annotations

import json
import math
from typing import Any

from agentworld.limits import INT64_MAX, INT64_MIN, MAX_ARGUMENT_DEPTH, MAX_ARGUMENTS_BYTES
from agentworld.runtime.errors import InvalidArgument, clip


def _no_constants(name: str) -> Any:
    raise InvalidArgument(f"arguments contain {name}, which is not a JSON number; send a finite number or a string")


def parse_arguments(arguments: dict[str, Any] | str | None, limit: int = MAX_ARGUMENTS_BYTES) -> dict[str, Any]:
    """The arguments as a checked JSON object (text is parsed; a dict is checked as it is)."""
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, str):
        if len(arguments) > limit:
            raise InvalidArgument(f"arguments are {len(arguments)} bytes; the limit is {limit} bytes")
        try:
            arguments = json.loads(arguments, parse_constant=_no_constants)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"arguments are not valid JSON: {exc}") from None
        except RecursionError:
            raise InvalidArgument(f"arguments nest deeper than {MAX_ARGUMENT_DEPTH} levels") from None
    if not isinstance(arguments, dict):
        raise InvalidArgument(f"arguments must be a JSON object, got {type(arguments).__name__}")
    check_value(arguments)
    return arguments


def check_value(value: Any) -> None:
    """Walk a decoded JSON value (iteratively: depth is what is being checked) and reject what apps cannot take."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > MAX_ARGUMENT_DEPTH:
            raise InvalidArgument(f"field {_name(where)}: nests deeper than {MAX_ARGUMENT_DEPTH} levels")
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise InvalidArgument(f"field {_name(where)}: object keys must be strings")
                _check_text(key, f"{where}.{key}" if where else key)
                stack.append((child, f"{where}.{key}" if where else key, depth + 1))
        elif isinstance(item, list):
            for index, child in enumerate(item):
                stack.append((child, f"{where}[{index}]", depth + 1))
        elif isinstance(item, str):
            _check_text(item, where)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                raise InvalidArgument(f"field {_name(where)}: integer {clip(item)} is outside the 64-bit range")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidArgument(f"field {_name(where)}: {item} is not a finite number")
        else:
            raise InvalidArgument(f"field {_name(where)}: {type(item).__name__} is not a JSON value")


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"field {_name(where)}: text holds a lone surrogate (invalid Unicode)") from None


def _name(where: str) -> str:
    return clip(where or "arguments")
