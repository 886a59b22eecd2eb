"""Where a session lives, written into its id: `<local>@<node>`.

`node` is the stable identity of the envd that created the session (the pod name in Kubernetes, the pool slot
`envd-<i>` in a local pool, `--node-id` otherwise). `local` starts with that process's boot id, so a session id
from before a restart is recognisably stale. Any gateway replica routes any session by reading its id against the
backends it currently sees: no shared map, nothing lost when a gateway restarts.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from dataclasses import dataclass

from agentworld_controller.constants import ENV_POD_NAME  # the EnvPool pod template sets it (downward API)

NODE_ID_ENV = "AGENTWORLD_NODE_ID"
SEPARATOR = "@"
# Trailing metadata on an UNAVAILABLE that no retry can cure (the session's backend is gone): clients give up at once.
LOST_TRAILER = "agentworld-session-lost"
# DNS-label-like (a pod name fits); no SEPARATOR, so the split is unambiguous.
_NODE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9])?")
_LOCAL = re.compile(r"s-(?P<boot>[0-9a-f]{8})(?P<rand>[0-9a-f]{16})")


class BadNodeId(ValueError):
    pass


def check_node_id(node_id: str) -> str:
    if not _NODE.fullmatch(node_id):
        raise BadNodeId(f"node id {node_id!r} must be 1-128 letters, digits, '.', '_' or '-', starting and ending "
                        "with a letter or digit (a pod name works)")
    return node_id


def default_node_id() -> str:
    """$AGENTWORLD_NODE_ID, else the pod name, else `<host name>-<6 random hex>` (unique even among runtimes in one
    process; a restart gets a new one, so the old ids route nowhere instead of to a stranger)."""
    for value in (os.environ.get(NODE_ID_ENV), os.environ.get(ENV_POD_NAME)):
        if value:
            return check_node_id(value)
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip("._-")[:100] or "envd"
    return check_node_id(f"{host}-{secrets.token_hex(3)}")


def new_boot_id() -> str:
    return secrets.token_hex(4)


def new_session_id(node_id: str, boot_id: str) -> str:
    return f"s-{boot_id}{secrets.token_hex(8)}{SEPARATOR}{node_id}"


@dataclass(frozen=True)
class SessionRef:
    session_id: str
    node_id: str
    boot_id: str


def parse_session_id(session_id: str) -> SessionRef | None:
    """The placement a session id carries, or None if it is not one envd mints."""
    local, sep, node = session_id.rpartition(SEPARATOR)
    match = _LOCAL.fullmatch(local) if sep else None
    if match is None or not _NODE.fullmatch(node):
        return None
    return SessionRef(session_id, node, match.group("boot"))


def node_of(session_id: str) -> str | None:
    """The node part alone (the gateway's hot path: no regex)."""
    local, sep, node = session_id.rpartition(SEPARATOR)
    return node if sep and local else None


ID_FORMAT_HINT = f"session ids look like s-<24 hex digits>{SEPARATOR}<backend node id>, as CreateSession returns them"
