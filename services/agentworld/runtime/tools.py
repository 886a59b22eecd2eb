"""Tools from an app's routes: one per operation_id, with the JSON Schema an MCP client of AWM sees.

The input schema merges path, query and body parameters (a body model's fields become top-level
properties). `ToolSpec.build_request` maps call arguments back onto the HTTP request. Tools are extracted in the
sandbox (which imports the app) and travel to envd as `to_dict()` JSON; envd builds requests without app code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from agentworld.runtime.errors import InvalidArgument, clip

_HTTP_METHODS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True)
class HttpRequest:
    """What a tool call becomes: the route's template and raw path values (filled in by the worker), query, body."""

    method: str
    path_template: str
    path_params: dict[str, str]
    query_string: bytes
    body: bytes | None


@dataclass
class ToolSpec:
    name: str
    description: str
    input_schema: dict[str, Any]
    method: str
    path_template: str
    locations: dict[str, str] = field(default_factory=dict)  # argument -> path | query | header | body
    whole_body: str | None = None  # name of an argument that is the entire (non-object) body
    input_schema_json: str = ""

    def build_request(self, arguments: dict[str, Any]) -> HttpRequest:
        unknown = sorted(set(arguments) - set(self.locations))
        if unknown:
            expected = ", ".join(sorted(self.locations)) or "no arguments"
            raise InvalidArgument(f"tool {clip(self.name)} has no argument {clip(unknown[0])}; expected: {expected}")
        path_params: dict[str, str] = {}
        query: list[tuple[str, str]] = []
        body: dict[str, Any] = {}
        whole: Any = None
        for name, value in arguments.items():
            where = self.locations[name]
            if where == "path":
                if value is None:
                    raise InvalidArgument(f"argument '{name}' of tool '{self.name}' is required (path parameter)")
                path_params[name] = _scalar(value)
            elif where == "query":
                if value is None:
                    continue
                for item in value if isinstance(value, list) else [value]:
                    query.append((name, _scalar(item)))
            elif name == self.whole_body:
                whole = value
            elif where == "body":
                body[name] = value
        missing = [n for n, where in self.locations.items() if where == "path" and n not in path_params]
        if missing:
            raise InvalidArgument(f"argument '{missing[0]}' of tool '{self.name}' is required (path parameter)")
        payload: bytes | None = None
        if self.whole_body is not None:
            payload = json.dumps(whole).encode()
        elif any(where == "body" for where in self.locations.values()):
            payload = json.dumps(body).encode()
        return HttpRequest(self.method.upper(), self.path_template, path_params, urlencode(query).encode(), payload)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form a sandbox sends envd (and envd keeps): everything but the cached schema text."""
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema,
                "method": self.method, "path_template": self.path_template, "locations": self.locations,
                "whole_body": self.whole_body}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolSpec:
        spec = cls(**data)
        spec.input_schema_json = json.dumps(spec.input_schema, sort_keys=True)
        return spec


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _resolve(schema: Any, components: dict[str, Any], seen: frozenset[str] = frozenset()) -> Any:
    """Inline local $refs so each tool's schema stands alone (MCP clients get no components)."""
    if isinstance(schema, list):
        return [_resolve(item, components, seen) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        name = ref.rsplit("/", 1)[1]
        if name in seen:  # recursive model: leave an open object rather than loop
            return {"type": "object"}
        target = _resolve(components.get(name, {}), components, seen | {name})
        extra = {k: v for k, v in schema.items() if k != "$ref"}
        return {**target, **extra}
    return {k: _resolve(v, components, seen) for k, v in schema.items()}


def extract_tools(openapi: dict[str, Any]) -> list[ToolSpec]:
    """Every operation with an operationId becomes a tool, in the app's route order."""
    components = openapi.get("components", {}).get("schemas", {})
    tools: list[ToolSpec] = []
    for path, operations in openapi.get("paths", {}).items():
        for method, op in operations.items():
            if method not in _HTTP_METHODS or not op.get("operationId"):
                continue
            properties: dict[str, Any] = {}
            required: list[str] = []
            locations: dict[str, str] = {}
            for param in op.get("parameters", []):
                param = _resolve(param, components)
                schema = dict(param.get("schema", {}))
                if param.get("description") and "description" not in schema:
                    schema["description"] = param["description"]
                properties[param["name"]] = schema
                locations[param["name"]] = param.get("in", "query")
                if param.get("required"):
                    required.append(param["name"])
            whole_body = None
            content = op.get("requestBody", {}).get("content", {})
            if content:
                body_schema = _resolve(next(iter(content.values())).get("schema", {}), components)
                if body_schema.get("type", "object") == "object" and "properties" in body_schema:
                    for name, prop in body_schema["properties"].items():
                        properties[name] = prop
                        locations[name] = "body"
                    required += [n for n in body_schema.get("required", []) if n not in required]
                else:
                    whole_body = "body"
                    properties["body"] = body_schema
                    locations["body"] = "body"
                    if op["requestBody"].get("required"):
                        required.append("body")
            schema = {"type": "object", "properties": properties}
            if required:
                schema["required"] = required
            description = op.get("description") or op.get("summary") or op["operationId"]
            tools.append(
                ToolSpec(
                    name=op["operationId"],
                    description=description,
                    input_schema=schema,
                    method=method,
                    path_template=path,
                    locations=locations,
                    whole_body=whole_body,
                    input_schema_json=json.dumps(schema, sort_keys=True),
                )
            )
    return tools
