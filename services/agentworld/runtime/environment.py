"""A bundle loaded once per process: its app imported, its tools extracted, its template database built."""

from __future__ import annotations

import sqlite3
import types
from dataclasses import dataclass
from typing import Any

from agentworld.bundle import Bundle
from agentworld.runtime.app_loader import import_app
from agentworld.runtime.database import build_database, state_hash
from agentworld.runtime.errors import BundleLoadError
from agentworld.runtime.tools import ToolSpec, extract_tools
from agentworld.runtime.types import EnvInfo, TaskInfo


@dataclass
class LoadedEnv:
    bundle: Bundle
    module: types.ModuleType
    app: Any
    tools: dict[str, ToolSpec]
    template: bytes  # the initial database image every session starts from
    template_hash: str
    schema_signature: frozenset[str]  # CREATE statements, to recognise images of this environment
    info: EnvInfo

    @property
    def env_id(self) -> str:
        return self.bundle.env_id


def schema_signature(conn: sqlite3.Connection) -> frozenset[str]:
    return frozenset(sql for (sql,) in conn.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL"))


def load_env(bundle: Bundle, *, foreign_keys: bool = True) -> LoadedEnv:
    """Build the template database (schema, seed, then the app's own import) and index the tools."""
    env_id = bundle.env_id
    try:
        template_conn = build_database(bundle.schema_sql, bundle.seed_sql, foreign_keys=foreign_keys)
    except sqlite3.Error as exc:
        raise BundleLoadError(f"{env_id}: schema/seed failed: {exc}") from exc
    filename = str(bundle.path / "app.py") if bundle.path else f"<bundle {env_id}>/app.py"
    module, app = import_app(env_id, bundle.app_py, filename, template_conn)
    try:
        tools = extract_tools(app.openapi())
    except Exception as exc:
        raise BundleLoadError(f"{env_id}: could not build the tool list from the app's routes: {exc}") from exc
    if not tools:
        raise BundleLoadError(f"{env_id}: the app has no routes with an operation_id (no tools)")
    names = [t.name for t in tools]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BundleLoadError(f"{env_id}: operation_id used by several routes: {', '.join(duplicates)}")
    template = template_conn.serialize()
    tables = template_conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).fetchone()[0]
    info = EnvInfo(
        env_id=env_id,
        title=bundle.manifest.title,
        description=bundle.manifest.description,
        content_hash=bundle.manifest.content_hash,
        tool_count=len(tools),
        table_count=tables,
        tasks=[TaskInfo(t.id, t.instruction, t.kind) for t in bundle.tasks],
    )
    loaded = LoadedEnv(
        bundle=bundle,
        module=module,
        app=app,
        tools={t.name: t for t in tools},
        template=template,
        template_hash=state_hash(template_conn),
        schema_signature=schema_signature(template_conn),
        info=info,
    )
    template_conn.really_close()
    return loaded
