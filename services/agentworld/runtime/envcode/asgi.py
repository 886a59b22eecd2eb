"""One HTTP request to an ASGI app, in-process: no sockets, no HTTP parsing.

Path parameters reach the app exactly as sent, slashes and percent signs included. Routing would split a value
containing "/" (and percent-decoding would change "%41"), so the routed path carries a placeholder per parameter
and Starlette's string convertor, patched once per sandbox (`install_exact_path_params`), swaps each placeholder
back for its value. `raw_path` holds the percent-encoded real path for apps that read the URL.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

_PLACEHOLDER = "agentworld-path-param-{}"
_TEMPLATE_PARAM = re.compile(r"{([^{}:]+)(?::([^{}]+))?}")
_values: dict[str, str] = {}  # placeholder -> value, for the request being routed (one at a time per worker)


def install_exact_path_params() -> None:
    """Make string (and path) convertors return the real value behind a placeholder."""
    from starlette import convertors

    for cls in (convertors.StringConvertor, convertors.PathConvertor):
        original = cls.convert

        def convert(self: Any, value: str, _original: Any = original) -> Any:
            return _values[value] if value in _values else _original(self, value)

        cls.convert = convert  # type: ignore[method-assign]


def _paths(template: str, params: dict[str, str]) -> tuple[str, str]:
    """(the path to route, with placeholders; the real path, percent-encoded)."""
    _values.clear()
    routed: list[str] = []
    raw: list[str] = []
    last = 0
    for i, match in enumerate(_TEMPLATE_PARAM.finditer(template)):
        name, kind = match.group(1), match.group(2) or "str"
        literal = template[last:match.start()]
        routed.append(literal)
        raw.append(quote(literal))
        value = params.get(name, match.group(0))
        if kind in ("str", "path"):
            token = _PLACEHOLDER.format(i)
            _values[token] = value
            routed.append(token)
        else:  # typed convertors (int, float, uuid) match the value itself
            routed.append(value)
        raw.append(quote(value, safe=""))
        last = match.end()
    routed.append(template[last:])
    raw.append(quote(template[last:]))
    return "".join(routed), "".join(raw)


async def asgi_request(app: Any, method: str, path_template: str, path_params: dict[str, str],
                       query_string: bytes, body: bytes | None) -> tuple[int, bytes]:
    """Run one request through the app and return (status, body). Exceptions from the app propagate."""
    path, raw_path = _paths(path_template, path_params)
    payload = body or b""
    headers = [(b"host", b"envd"), (b"content-length", str(len(payload)).encode())]
    if body is not None:
        headers.append((b"content-type", b"application/json"))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": raw_path.encode(),
        "root_path": "",
        "query_string": query_string,
        "headers": headers,
        "client": ("127.0.0.1", 0),
        "server": ("envd", 80),
        "state": {},
    }
    delivered = False
    status = 500
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": payload, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    try:
        await app(scope, receive, send)
    finally:
        _values.clear()
    return status, b"".join(chunks)
