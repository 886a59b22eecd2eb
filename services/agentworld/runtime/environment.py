"""Environments as envd knows them: bundle, tools and template, as reported by each one's sandbox zygote."""

from __future__ import annotations

from dataclasses import dataclass

from agentworld.bundle import Bundle, compute_content_hash
from agentworld.runtime import database
from agentworld.runtime.envcode.host import LoadedEnvCode, Sandbox
from agentworld.runtime.errors import BundleLoadError, InvalidArgument
from agentworld.runtime.store import Image, StateStore
from agentworld.runtime.tools import ToolSpec
from agentworld.runtime.types import EnvInfo, TaskInfo


@dataclass
class EnvSpec:
    bundle: Bundle
    key: str  # the sandbox's name for it, and its session directory
    tools: dict[str, ToolSpec]
    template: Image  # the initial database every session starts from (permanent)
    schema_signature: frozenset[str]  # CREATE statements, to recognise images of this environment
    info: EnvInfo

    @property
    def env_id(self) -> str:
        return self.bundle.env_id


def check_bundle(bundle: Bundle) -> None:
    """A bundle read from disk must still be what was written: its files match its content hash."""
    if bundle.path is None:
        return
    actual = compute_content_hash(bundle)
    if bundle.manifest.content_hash != actual:
        raise BundleLoadError(
            f"{bundle.env_id}: the files in {bundle.path} do not match env.json's content_hash "
            f"({bundle.manifest.content_hash or 'none'} recorded, {actual} now); they were edited after the bundle "
            "was written. Re-create it with write_bundle (or `agentworld synth`/`import`) to refresh the hash")


def load_envs(bundles: list[Bundle], sandbox: Sandbox, store: StateStore, *, foreign_keys: bool,
              concurrency: int) -> dict[str, EnvSpec]:
    """Import every bundle in the sandbox; raise BundleLoadError naming each one that failed (none stays loaded)."""
    by_key: dict[str, Bundle] = {}
    seen: set[str] = set()
    for bundle in bundles:
        if bundle.env_id in seen:
            raise InvalidArgument(f"environment {bundle.env_id!r} given twice")
        seen.add(bundle.env_id)
        check_bundle(bundle)
        by_key[sandbox.new_key()] = bundle
    requests = [{"key": key, "env_id": b.env_id, "app_py": b.app_py, "schema_sql": b.schema_sql,
                 "seed_sql": b.seed_sql, "foreign_keys": foreign_keys,
                 "filename": str(b.path / "app.py") if b.path else f"<bundle {b.env_id}>/app.py"}
                for key, b in by_key.items()]
    reports = sandbox.load(requests, concurrency)
    envs: dict[str, EnvSpec] = {}
    problems: list[str] = []
    for key, bundle in by_key.items():
        report = reports.get(key, "not loaded")
        try:
            if isinstance(report, str):
                raise BundleLoadError(report)
            envs[bundle.env_id] = _spec(bundle, key, report, store)
        except BundleLoadError as exc:
            problems.append(str(exc))
    if problems:
        for env in envs.values():
            sandbox.unload(env.key)
        raise BundleLoadError("; ".join(problems))
    return envs


def _spec(bundle: Bundle, key: str, report: LoadedEnvCode, store: StateStore) -> EnvSpec:
    env_id = bundle.env_id
    tools = [ToolSpec.from_dict(t) for t in report.tools]
    if not tools:
        raise BundleLoadError(f"{env_id}: the app has no routes with an operation_id (no tools)")
    names = [t.name for t in tools]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BundleLoadError(f"{env_id}: operation_id used by several routes: {', '.join(duplicates)}")
    template = store.image_from_bytes(report.template, permanent=True)
    conn = database.read_only(template.path)
    try:
        template.hash = database.state_hash(conn)
        signature = database.schema_signature(conn)
    finally:
        conn.close()
    info = EnvInfo(
        env_id=env_id, title=bundle.manifest.title, description=bundle.manifest.description,
        content_hash=bundle.manifest.content_hash, tool_count=len(tools), table_count=report.tables,
        tasks=[TaskInfo(t.id, t.instruction, t.kind) for t in bundle.tasks],
    )
    return EnvSpec(bundle, key, {t.name: t for t in tools}, template, signature, info)
