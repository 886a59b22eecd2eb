"""Frames between envd and its sandbox processes: a JSON header plus an optional binary payload.

    frame = u32 header_len | u32 payload_len | header (UTF-8 JSON object) | payload (bytes)

Standard library only (the sandbox side imports it before its imports are frozen). Blocking helpers serve the
sandbox processes, which do one thing at a time; envd's side is asyncio (`read_frame`). File descriptors (a new
worker's socket and pidfd) travel with `send_fds`, and `FdReader` reads them (envd side, never blocking).
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct

_HEAD = struct.Struct(">II")
MAX_HEADER_BYTES = 16 << 20
MAX_PAYLOAD_BYTES = 1 << 30


class WireError(Exception):
    """The other side sent something that is not a frame (or hung up mid-frame)."""


def encode(header: dict, payload: bytes = b"") -> bytes:
    body = json.dumps(header, separators=(",", ":")).encode()
    return _HEAD.pack(len(body), len(payload)) + body + payload


def _decode_header(raw: bytes) -> dict:
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise WireError(f"malformed frame header: {exc}") from None
    if not isinstance(header, dict):
        raise WireError("frame header is not a JSON object")
    return header


def _sizes(head: bytes) -> tuple[int, int]:
    n_header, n_payload = _HEAD.unpack(head)
    if n_header > MAX_HEADER_BYTES or n_payload > MAX_PAYLOAD_BYTES:
        raise WireError(f"frame too large ({n_header} + {n_payload} bytes)")
    return n_header, n_payload


# ------------------------------------------------------------------------------------------ blocking side
def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv(sock: socket.socket) -> tuple[dict, bytes] | None:
    """One frame, or None when the peer closed the connection between frames."""
    try:
        head = _recv_exact(sock, _HEAD.size)
    except ConnectionResetError:
        return None
    if head is None:
        return None
    n_header, n_payload = _sizes(head)
    body = _recv_exact(sock, n_header + n_payload)
    if body is None:
        raise WireError("connection closed mid-frame")
    return _decode_header(body[:n_header]), body[n_header:]


def send(sock: socket.socket, header: dict, payload: bytes = b"") -> None:
    sock.sendall(encode(header, payload))


def send_fds(sock: socket.socket, header: dict, fds: list[int]) -> None:
    """A frame with no payload, carrying `fds` as SCM_RIGHTS on its first byte (its header says how many)."""
    data = encode({**header, "nfds": len(fds)})
    sent = socket.send_fds(sock, [data], fds)
    if sent < len(data):
        sock.sendall(data[sent:])


class FdReader:
    """Frames from a socket that may carry descriptors (the zygotes' sockets), read without blocking.

    `feed()` takes what the socket has; `frames()` yields each complete (header, payload, fds). Descriptors arrive
    with the first byte of their frame, so they are matched to frames in order (a frame's header says how many).
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setblocking(False)
        self._buf = bytearray()
        self._fds: list[int] = []
        self.closed = False

    def feed(self) -> None:
        while not self.closed:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.sock, 1 << 16, 8)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.closed = True
                return
            self._fds.extend(fds)
            if not data:
                self.closed = True
                return
            self._buf += data

    def frames(self):  # noqa: ANN201 - an iterator of (header, payload, fds)
        while len(self._buf) >= _HEAD.size:
            n_header, n_payload = _sizes(bytes(self._buf[:_HEAD.size]))
            end = _HEAD.size + n_header + n_payload
            if len(self._buf) < end:
                return
            header = _decode_header(bytes(self._buf[_HEAD.size:_HEAD.size + n_header]))
            payload = bytes(self._buf[_HEAD.size + n_header:end])
            del self._buf[:end]
            count = int(header.get("nfds", 0))
            fds, self._fds = self._fds[:count], self._fds[count:]
            yield header, payload, fds


# --------------------------------------------------------------------------------------------- async side
async def read_frame(reader: asyncio.StreamReader) -> tuple[dict, bytes] | None:
    """One frame from an asyncio stream, or None at a clean end of stream."""
    try:
        head = await reader.readexactly(_HEAD.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise WireError("connection closed mid-frame") from None
        return None
    n_header, n_payload = _sizes(head)
    try:
        body = await reader.readexactly(n_header + n_payload)
    except asyncio.IncompleteReadError:
        raise WireError("connection closed mid-frame") from None
    return _decode_header(body[:n_header]), body[n_header:]
