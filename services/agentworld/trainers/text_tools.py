"""Tool calls inside plain model text (Hermes/Qwen style), for trainers whose environments see raw completions.

    <tool_call>{"name": "renew_loan", "arguments": {"loan_id": 1}}</tool_call>

One call per turn; text without a <tool_call> block is the final answer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_OPEN = "<tool_call>"


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ParsedAnswer:
    text: str


@dataclass(frozen=True)
class ParseError:
    reason: str


def parse_action(text: str, tool_names: set[str] | None = None) -> ParsedCall | ParsedAnswer | ParseError:
    """Classify one completion: a single tool call, a final answer, or a format error (with the reason)."""
    blocks = _CALL.findall(text)
    if not blocks:
        if _OPEN in text:
            return ParseError("unterminated <tool_call> block")
        return ParsedAnswer(text.strip())
    if len(blocks) > 1:
        return ParseError(f"{len(blocks)} tool calls in one turn (one per turn allowed)")
    try:
        payload = json.loads(blocks[0])
    except json.JSONDecodeError as exc:
        return ParseError(f"tool call is not valid JSON: {exc}")
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
        return ParseError('tool call must be a JSON object {"name": ..., "arguments": {...}}')
    arguments = payload.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            return ParseError(f"arguments of {payload['name']!r} are not valid JSON: {exc}")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return ParseError(f"arguments of {payload['name']!r} are not a JSON object")
    if tool_names is not None and payload["name"] not in tool_names:
        return ParseError(f"unknown tool {payload['name']!r}")
    return ParsedCall(payload["name"], arguments)


def tools_system_prompt(tools: list[dict[str, Any]], preamble: str = "") -> str:
    """A system prompt listing the tools in the Hermes format Qwen-style chat templates use."""
    specs = "\n".join(
        json.dumps({"type": "function", "function": {"name": t["name"], "description": t.get("description", ""),
                                                      "parameters": t.get("input_schema") or {"type": "object"}}})
        for t in tools
    )
    return (
        f"{preamble}\n\n# Tools\n\nYou may call one function per turn to assist with the user query.\n\n"
        f"You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{specs}\n</tools>\n\n"
        "For a function call, return a json object with function name and arguments within <tool_call></tool_call> "
        'XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>\n\n'
        "When the task is done, reply with your final answer without a tool call."
    ).strip()


def tool_response(content: str) -> str:
    return f"<tool_response>\n{content}\n</tool_response>"
