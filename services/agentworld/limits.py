"""Limits every side of the wire shares (envd, the gateway, the client): defined once, imported everywhere."""

from __future__ import annotations

# gRPC message size, both directions. Exported snapshots travel whole in one message, so this also bounds the
# largest session database envd lets an environment grow (MAX_DATABASE_BYTES leaves room for the envelope).
MAX_MESSAGE_BYTES = 64 << 20
MAX_DATABASE_BYTES = MAX_MESSAGE_BYTES - (1 << 20)

# Tool-call arguments: their JSON text, how deeply it may nest, and the integer range apps can store (SQLite INTEGER).
MAX_ARGUMENTS_BYTES = 1 << 20
MAX_ARGUMENT_DEPTH = 32
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

# Leases: a client library renews its lease every LEASE_TTL_S / 3; envd closes a lease's sessions when it lapses.
DEFAULT_LEASE_TTL_S = 30.0
MAX_LEASE_ID_CHARS = 128

# gRPC servers (envd and the gateway). gRPC core holds calls that arrived before the application asked for them in
# a pending queue and cancels them (CANCELLED, no details) once more than 1,000 wait: a burst of 1,024 concurrent
# episodes on one connection hit it. The queue is sized for bursts far beyond the sessions a server holds.
MAX_PENDING_CALLS = 1 << 16
GRPC_SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
    ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
    ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_CALLS),
]

# Exactly-once tool calls: envd remembers the outcome of the last CALL_IDS_KEPT call ids of each session (for as long
# as the session lives), so a CallTool retried with its call id returns the first outcome instead of running again.
CALL_IDS_KEPT = 64
MAX_CALL_ID_CHARS = 128
