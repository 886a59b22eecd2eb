"""Bearer tokens on every edge (envd's and the gateway's gRPC, MCP and REST), read from a file that may change.

The file holds one token per line (blank lines and `#` comments ignored). Any listed token is accepted, so a token
rotates without a restart and without a gap: add the new line, move the clients over, delete the old line. A
Kubernetes Secret mounted as a volume is such a file (the kubelet swaps it in place when the Secret changes).
Clients send the file's first token.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from pathlib import Path

from agentworld_controller.constants import ENV_TOKEN_FILE

log = logging.getLogger(__name__)

AUTH_METADATA_KEY = "authorization"  # gRPC metadata key and HTTP header (lower case, as gRPC requires)
SCHEME = "Bearer"
TOKEN_ENV = "AGENTWORLD_TOKEN"  # clients: the token itself
TOKEN_FILE_ENV = ENV_TOKEN_FILE  # clients and servers: a token file (EnvPool pods get it from their Secret)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")  # binding here, tokens are off by default
RECHECK_S = 1.0  # how often a changed file is noticed (one stat per interval, not per call)


class TokenError(ValueError):
    """A token file that cannot be used (missing, unreadable, or without a token)."""


def _read(path: Path) -> tuple[str, ...]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise TokenError(f"cannot read token file {path}: {exc.strerror or exc}") from exc
    tokens = tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    if not tokens:
        raise TokenError(f"token file {path} holds no token (one per line; # starts a comment)")
    bad = [t for t in tokens if any(c.isspace() for c in t) or not t.isprintable()]
    if bad:
        raise TokenError(f"token file {path}: a token may not contain spaces or control characters")
    return tokens


class TokenFile:
    """The tokens in a file, re-read when the file changes. A file that later becomes unreadable or empty keeps
    the last good tokens (logged), so a botched rotation never locks every client out."""

    def __init__(self, path: str | os.PathLike[str], recheck_s: float = RECHECK_S) -> None:
        self.path = Path(path)
        self.recheck_s = recheck_s
        self._tokens = _read(self.path)  # fails loudly at start-up
        self._stamp = self._stat()
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()  # follows the symlinks a Secret volume swaps
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def tokens(self) -> tuple[str, ...]:
        now = time.monotonic()
        if now - self._checked < self.recheck_s:
            return self._tokens
        with self._lock:
            self._checked = now
            stamp = self._stat()
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._tokens = _read(self.path)
                    log.info("token file %s reloaded (%d tokens)", self.path, len(self._tokens))
                except TokenError as exc:
                    log.error("%s; keeping the previous tokens", exc)
        return self._tokens

    def current(self) -> str:
        """The token a client sends: the file's first."""
        return self.tokens()[0]

    def accepts(self, authorization: str | None) -> bool:
        """True if `authorization` is "Bearer <a listed token>" (compared in constant time)."""
        if not authorization:
            return False
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != SCHEME.lower() or not presented:
            return False
        given = presented.strip().encode()
        return any(hmac.compare_digest(given, t.encode()) for t in self.tokens())


def bearer(token: str) -> str:
    return f"{SCHEME} {token}"


class StaticToken:
    """A token given as a value (it never changes)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def current(self) -> str:
        return self.token


def client_token(token: str | None = None, token_file: str | os.PathLike[str] | None = None
                 ) -> StaticToken | TokenFile | None:
    """What a client sends: an explicit token, else a token file (followed as it rotates), else $AGENTWORLD_TOKEN,
    else $AGENTWORLD_TOKEN_FILE; None when none is set (servers on loopback need none by default)."""
    if token:
        return StaticToken(token)
    if token_file:
        return TokenFile(token_file)
    if os.environ.get(TOKEN_ENV):
        return StaticToken(os.environ[TOKEN_ENV])
    if os.environ.get(TOKEN_FILE_ENV):
        return TokenFile(os.environ[TOKEN_FILE_ENV])
    return None


UNAUTHENTICATED_HINT = (
    f"send the header '{AUTH_METADATA_KEY}: {SCHEME} <token>' with a token from the server's token file "
    f"(clients: token=..., ${TOKEN_ENV} or ${TOKEN_FILE_ENV})"
)
