"""Bundle format v1: one directory per environment, loaded into typed objects.

Files: env.json (manifest), schema.sql, seed.sql, app.py, tasks.jsonl, verifiers.py.
The content hash covers every file but env.json's own hash field, so identical inputs give
identical hashes (the offline generator's determinism and the image builder's skip rely on it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

FORMAT_VERSION = 1
# Hashed in this order; env.json is hashed separately without its content_hash.
BUNDLE_FILES = ("schema.sql", "seed.sql", "app.py", "tasks.jsonl", "verifiers.py")


class BundleError(Exception):
    """A bundle directory is missing files or holds malformed content."""


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class Task(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    instruction: str
    kind: Literal["query", "mutation"]
    verifier: str  # name of the function in verifiers.py
    solution: list[ToolCall] = Field(default_factory=list)
    expected_answer: str | None = None  # the reference final answer (query tasks)


class Counts(BaseModel):
    tables: int = 0
    tools: int = 0
    tasks: int = 0


class EnvManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format_version: int = FORMAT_VERSION
    id: str
    title: str
    description: str = ""
    provenance: dict[str, Any] = Field(default_factory=dict)
    counts: Counts = Field(default_factory=Counts)
    content_hash: str = ""


class Bundle(BaseModel):
    """An environment bundle held in memory; `path` is where it was loaded from, if anywhere."""

    manifest: EnvManifest
    schema_sql: str
    seed_sql: str
    app_py: str
    tasks: list[Task]
    verifiers_py: str
    path: Path | None = None

    @property
    def env_id(self) -> str:
        return self.manifest.id

    def task(self, task_id: str) -> Task | None:
        return next((t for t in self.tasks if t.id == task_id), None)

    def file_texts(self) -> dict[str, str]:
        return {
            "schema.sql": self.schema_sql,
            "seed.sql": self.seed_sql,
            "app.py": self.app_py,
            "tasks.jsonl": "".join(t.model_dump_json() + "\n" for t in self.tasks),
            "verifiers.py": self.verifiers_py,
        }


def _manifest_for_hash(manifest: EnvManifest) -> bytes:
    data = manifest.model_dump(mode="json", exclude={"content_hash"})
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def compute_content_hash(bundle: Bundle) -> str:
    digest = hashlib.sha256()
    parts = [("env.json", _manifest_for_hash(bundle.manifest))]
    parts += [(name, text.encode()) for name, text in bundle.file_texts().items()]
    for name, payload in parts:
        digest.update(f"{name}\0{len(payload)}\0".encode())
        digest.update(payload)
    return "sha256:" + digest.hexdigest()


def write_bundle(bundle: Bundle, out_dir: Path) -> Path:
    """Write `bundle` to out_dir/<env id>/, filling in the content hash; returns the directory."""
    target = Path(out_dir) / bundle.env_id
    target.mkdir(parents=True, exist_ok=True)
    bundle.manifest.content_hash = compute_content_hash(bundle)
    for name, text in bundle.file_texts().items():
        (target / name).write_text(text, encoding="utf-8")
    manifest_json = json.dumps(bundle.manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    (target / "env.json").write_text(manifest_json, encoding="utf-8")
    bundle.path = target
    return target


def load_bundle(path: str | Path) -> Bundle:
    """Load a bundle directory; raises BundleError naming the file and problem."""
    root = Path(path)
    if not (root / "env.json").is_file():
        raise BundleError(f"{root}: not a bundle (no env.json)")
    missing = [name for name in BUNDLE_FILES if not (root / name).is_file()]
    if missing:
        raise BundleError(f"{root}: missing {', '.join(missing)}")
    try:
        manifest = EnvManifest.model_validate_json((root / "env.json").read_text(encoding="utf-8"))
    except ValidationError as exc:
        raise BundleError(f"{root / 'env.json'}: {exc}") from exc
    if manifest.format_version != FORMAT_VERSION:
        raise BundleError(f"{root}: format_version {manifest.format_version} is not supported (want {FORMAT_VERSION})")
    tasks: list[Task] = []
    for lineno, line in enumerate((root / "tasks.jsonl").read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            tasks.append(Task.model_validate_json(line))
        except ValidationError as exc:
            raise BundleError(f"{root / 'tasks.jsonl'}:{lineno}: {exc}") from exc
    read = lambda name: (root / name).read_text(encoding="utf-8")  # noqa: E731
    return Bundle(
        manifest=manifest,
        schema_sql=read("schema.sql"),
        seed_sql=read("seed.sql"),
        app_py=read("app.py"),
        tasks=tasks,
        verifiers_py=read("verifiers.py"),
        path=root,
    )


def find_bundles(paths: list[Path]) -> list[Path]:
    """Expand each path: a bundle directory itself, or a directory whose children are bundles."""
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / "env.json").is_file():
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(c for c in p.iterdir() if (c / "env.json").is_file()))
        else:
            raise BundleError(f"{p}: no such bundle or directory of bundles")
    return found
