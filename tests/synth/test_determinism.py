"""Same seed, same bytes: across runs, worker counts and Python hash seeds; no wall clock in the output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from agentworld.synth.run import synthesize

FILES = ("env.json", "schema.sql", "seed.sql", "app.py", "tasks.jsonl", "verifiers.py")


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name in FILES}


def test_two_runs_same_seed_are_byte_identical(tmp_path: Path) -> None:
    a = synthesize(3, seed=5, out=tmp_path / "a", workers=1, validate=False)
    b = synthesize(3, seed=5, out=tmp_path / "b", workers=1, validate=False)
    assert [r.content_hash for r in a.results] == [r.content_hash for r in b.results]
    assert all(r.content_hash.startswith("sha256:") for r in a.results)
    tree_a, tree_b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert len(tree_a) == 3 * len(FILES)
    assert tree_a == tree_b


def test_other_seed_gives_other_environments() -> None:
    a = synthesize(3, seed=5, workers=1, validate=False)
    b = synthesize(3, seed=6, workers=1, validate=False)
    assert {r.content_hash for r in a.results}.isdisjoint({r.content_hash for r in b.results})


def test_prefix_is_stable() -> None:
    """Environment i does not depend on how many are generated after it."""
    short = synthesize(2, seed=9, workers=1, validate=False)
    longer = synthesize(3, seed=9, workers=1, validate=False)
    assert [r.content_hash for r in short.results] == [r.content_hash for r in longer.results[:2]]


def test_independent_of_python_hash_randomisation() -> None:
    """A subprocess with another string-hash seed produces the same bundles as this process."""
    from agentworld.synth.generate import generate_bundle

    code = ("from agentworld.synth.generate import generate_bundle\n"
            "print(' '.join(generate_bundle(3, i).manifest.content_hash for i in range(2)))")
    hash_seed = "4242" if os.environ.get("PYTHONHASHSEED") != "4242" else "7"
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    other = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    here = " ".join(generate_bundle(3, i).manifest.content_hash for i in range(2))
    assert other.stdout.strip() == here and here.count("sha256:") == 2


def test_no_wall_clock_anywhere(sample) -> None:  # noqa: ANN001
    for _, _, bundle in sample:
        for text in (bundle.app_py, bundle.seed_sql, bundle.schema_sql, bundle.verifiers_py):
            for needle in ("datetime.now", "date.today", "time.time(", "CURRENT_TIMESTAMP", "'now'", "utcnow"):
                assert needle not in text, needle


def test_resume_skips_finished_environments(tmp_path: Path) -> None:
    first = synthesize(3, seed=4, out=tmp_path, workers=1, validate=False)
    (tmp_path / first.results[1].env_id / "app.py").unlink()  # damage one: it is regenerated, not resumed
    (tmp_path / first.results[1].env_id / "env.json").unlink()
    again = synthesize(3, seed=4, out=tmp_path, workers=1, validate=False, resume=True)
    assert [r.resumed for r in again.results] == [True, False, True]
    assert [r.content_hash for r in again.results] == [r.content_hash for r in first.results]
    assert (tmp_path / first.results[1].env_id / "app.py").is_file()
