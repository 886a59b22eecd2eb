"""Import a bundle's app.py in its environment zygote, with its SQLAlchemy engine routed to session connections.

AWM-style apps create a module-level engine from DATABASE_PATH. While the module executes we replace
`sqlalchemy.create_engine` with a factory whose connections come from a context variable: whichever
session connection is current when the app opens a connection is the one it gets. The module's own
import (e.g. `Base.metadata.create_all(engine)`) runs against the template database.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
import types
from collections.abc import Iterator
from typing import Any

import sqlalchemy
import sqlalchemy.engine
from fastapi import FastAPI
from sqlalchemy.pool import NullPool

from agentworld.runtime.envcode.connection import SessionConnection
from agentworld.runtime.errors import BundleLoadError

_current_connection: contextvars.ContextVar[SessionConnection | None] = contextvars.ContextVar(
    "agentworld_session_connection", default=None
)
_real_create_engine = sqlalchemy.create_engine
_import_lock = threading.Lock()


def _session_connection() -> SessionConnection:
    conn = _current_connection.get()
    if conn is None:
        raise RuntimeError("the environment opened a database connection outside of a session")
    return conn


def routed_create_engine(*_args: Any, **kwargs: Any) -> sqlalchemy.Engine:
    """Stands in for sqlalchemy.create_engine inside app modules: URL and pool options are ignored."""
    options = {k: v for k, v in kwargs.items() if k in ("echo", "future")}
    return _real_create_engine("sqlite://", creator=_session_connection, poolclass=NullPool, **options)


@contextlib.contextmanager
def using_connection(conn: SessionConnection) -> Iterator[None]:
    """Make `conn` the connection the app's engine hands out in this context."""
    token = _current_connection.set(conn)
    try:
        yield
    finally:
        _current_connection.reset(token)


@contextlib.contextmanager
def _engine_routed() -> Iterator[None]:
    saved = sqlalchemy.create_engine, sqlalchemy.engine.create_engine
    sqlalchemy.create_engine = sqlalchemy.engine.create_engine = routed_create_engine
    try:
        yield
    finally:
        sqlalchemy.create_engine, sqlalchemy.engine.create_engine = saved


def import_app(env_id: str, source: str, filename: str, template: SessionConnection) -> tuple[types.ModuleType, Any]:
    """Execute app.py as module `agentworld_env_<env_id>` and return (module, FastAPI app)."""
    module_name = f"agentworld_env_{env_id}"
    module = types.ModuleType(module_name)
    module.__file__ = filename
    with _import_lock, _engine_routed(), using_connection(template):
        sys.modules[module_name] = module  # pydantic resolves annotations through sys.modules
        try:
            exec(compile(source, filename, "exec"), module.__dict__)
        except Exception as exc:
            sys.modules.pop(module_name, None)
            raise BundleLoadError(f"{env_id}: app.py failed to import: {type(exc).__name__}: {exc}") from exc
    app = module.__dict__.get("app")
    if not isinstance(app, FastAPI):
        app = next((v for v in module.__dict__.values() if isinstance(v, FastAPI)), None)
    if app is None:
        raise BundleLoadError(f"{env_id}: app.py defines no FastAPI application")
    return module, app
