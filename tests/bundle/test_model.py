"""The bundle model: write/load round trip, the content hash, and load errors that name the problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentworld.bundle import (
    BUNDLE_FILES,
    Bundle,
    BundleError,
    EnvManifest,
    Task,
    ToolCall,
    compute_content_hash,
    find_bundles,
    load_bundle,
    write_bundle,
)


def make_bundle(env_id: str = "tiny_env") -> Bundle:
    return Bundle(
        manifest=EnvManifest(id=env_id, title="Tiny", description="d", provenance={"source": "offline", "seed": 1}),
        schema_sql="CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);\n",
        seed_sql="INSERT INTO t (id, v) VALUES (1, 'a');\n",
        app_py="from fastapi import FastAPI\napp = FastAPI(title='Tiny')\n",
        tasks=[
            Task(
                id="task_0",
                instruction="Set v to b.",
                kind="mutation",
                verifier="verify_task_0",
                solution=[ToolCall(tool="set_v", arguments={"v": "b"})],
            )
        ],
        verifiers_py="def verify_task_0(initial_db_path, final_db_path, final_answer=None):\n    return {'result': 'others'}\n",
    )


def test_write_then_load_round_trips(tmp_path: Path) -> None:
    bundle = make_bundle()
    bdir = write_bundle(bundle, tmp_path)
    assert bdir == tmp_path / "tiny_env"
    loaded = load_bundle(bdir)
    assert loaded.path == bdir
    assert loaded.manifest == bundle.manifest
    assert loaded.file_texts() == bundle.file_texts()
    assert compute_content_hash(loaded) == loaded.manifest.content_hash == bundle.manifest.content_hash
    assert loaded.task("task_0") is not None and loaded.task("task_9") is None


def test_write_is_deterministic(tmp_path: Path) -> None:
    a = write_bundle(make_bundle(), tmp_path / "a")
    b = write_bundle(make_bundle(), tmp_path / "b")
    for name in (*BUNDLE_FILES, "env.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_hash_ignores_its_own_field() -> None:
    bundle = make_bundle()
    h = compute_content_hash(bundle)
    bundle.manifest.content_hash = "sha256:whatever"
    assert compute_content_hash(bundle) == h


@pytest.mark.parametrize("name", BUNDLE_FILES)
def test_hash_changes_when_any_file_changes(tmp_path: Path, name: str) -> None:
    bdir = write_bundle(make_bundle(), tmp_path)
    before = compute_content_hash(load_bundle(bdir))
    path = bdir / name
    if name == "tasks.jsonl":
        task = json.loads(path.read_text())
        task["instruction"] += " Now."
        path.write_text(json.dumps(task) + "\n")
    else:
        path.write_text(path.read_text() + "-- one more byte\n" if name.endswith(".sql") else path.read_text() + "#\n")
    assert compute_content_hash(load_bundle(bdir)) != before


@pytest.mark.parametrize(
    "change",
    [
        lambda m: setattr(m, "title", "Other"),
        lambda m: setattr(m, "description", "other"),
        lambda m: m.provenance.update(seed=2),
        lambda m: setattr(m.counts, "tools", 3),
        lambda m: setattr(m, "id", "tiny_env_2"),
    ],
)
def test_hash_changes_when_manifest_changes(change) -> None:
    bundle = make_bundle()
    before = compute_content_hash(bundle)
    change(bundle.manifest)
    assert compute_content_hash(bundle) != before


def test_hash_covers_file_boundaries() -> None:
    """Moving bytes from one file to the next must change the hash (files are length-prefixed)."""
    a, b = make_bundle(), make_bundle()
    b.schema_sql = a.schema_sql + a.seed_sql
    b.seed_sql = ""
    assert compute_content_hash(a) != compute_content_hash(b)


@pytest.mark.parametrize("missing", BUNDLE_FILES)
def test_load_names_missing_file(tmp_path: Path, missing: str) -> None:
    bdir = write_bundle(make_bundle(), tmp_path)
    (bdir / missing).unlink()
    with pytest.raises(BundleError, match=f"missing {missing}"):
        load_bundle(bdir)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a bundle"):
        load_bundle(tmp_path)
    bdir = write_bundle(make_bundle(), tmp_path / "b")

    (bdir / "env.json").write_text("{not json")
    with pytest.raises(BundleError, match="env.json"):
        load_bundle(bdir)

    manifest = make_bundle().manifest.model_dump(mode="json")
    (bdir / "env.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(BundleError, match="format_version 99"):
        load_bundle(bdir)

    (bdir / "env.json").write_text(json.dumps({**manifest, "surprise": 1}))
    with pytest.raises(BundleError, match="surprise"):
        load_bundle(bdir)

    (bdir / "env.json").write_text(json.dumps(manifest))
    good = (bdir / "tasks.jsonl").read_text()
    (bdir / "tasks.jsonl").write_text(good + '{"id": "task_1", "instruction": "x", "kind": "maybe", "verifier": "v"}\n')
    with pytest.raises(BundleError, match=r"tasks\.jsonl:2"):
        load_bundle(bdir)
    (bdir / "tasks.jsonl").write_text(good + "\n{oops\n")
    with pytest.raises(BundleError, match=r"tasks\.jsonl:3"):
        load_bundle(bdir)


def test_find_bundles(tmp_path: Path) -> None:
    a = write_bundle(make_bundle("env_a"), tmp_path / "lib")
    b = write_bundle(make_bundle("env_b"), tmp_path / "lib")
    (tmp_path / "lib" / "not_a_bundle").mkdir()
    assert find_bundles([tmp_path / "lib"]) == [a, b]
    assert find_bundles([a]) == [a]
    with pytest.raises(BundleError, match="no such bundle"):
        find_bundles([tmp_path / "nope"])
