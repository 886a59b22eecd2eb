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
