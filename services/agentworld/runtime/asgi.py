"""One HTTP request to an ASGI app, in-process: no sockets, no HTTP parsing."""

from __future__ import annotations

from typing import Any

from agentworld.runtime.tools import HttpRequest


async def asgi_request(app: Any, request: HttpRequest) -> tuple[int, bytes]:
    """Run `request` through the app and return (status, body). Exceptions from the app propagate."""
    body = request.body or b""
    headers = [(b"host", b"envd"), (b"content-length", str(len(body)).encode())]
    if request.body is not None:
        headers.append((b"content-type", b"application/json"))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": request.path,
        "raw_path": request.path.encode(),
        "root_path": "",
        "query_string": request.query_string,
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
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)
