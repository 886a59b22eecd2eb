"""`agentworld validate`: valid bundles pass, and each kind of broken bundle is caught with a reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentworld.bundle import load_bundle, write_bundle
from agentworld.validate import validate_bundle
from tests.runtime.toy_env import APP, SEED, VERIFIERS, toy_bundle


def run_validate(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "250"}  # one table row per line
    return subprocess.run([sys.executable, "-m", "agentworld", "validate", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_mini_library_is_valid_via_cli(mini_library_bundle_dir: Path):
    proc = run_validate(str(mini_library_bundle_dir), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (report,) = json.loads(proc.stdout)
    assert report["ok"] and report["tools"] == 21 and report["tables"] == 8
    assert {t["solved"] for t in report["tasks"]} == {"complete"}
    assert {t["untouched"] for t in report["tasks"]} == {"others"}


def test_toy_bundle_is_valid(tmp_path: Path):
    report = validate_bundle(load_bundle(toy_bundle(tmp_path, evil_verifiers=False)))
    assert report.ok, report.all_problems()
    assert [t.solved for t in report.tasks] == ["complete", "complete"]


BROKEN = {
    "verifier always complete": (
        {"verifiers_py": VERIFIERS.replace('ok = len(rows) == before + 1 and ("poem", 4) in rows', "ok = True")},
        "does not discriminate",
    ),
    "verifier rejects the reference": (
        {"verifiers_py": VERIFIERS.replace('("poem", 4)', '("poem", 5)')},
        "reference solution gives 'others'",
    ),
    "seed uses the wall clock": ({"seed_sql": SEED.replace("'ideas'", "CURRENT_TIMESTAMP")}, "wall-clock"),
    "seed breaks a constraint": ({"seed_sql": SEED + "INSERT INTO notes (title) VALUES ('x');\n"}, "schema/seed failed"),
    "app does not import": ({"app_py": APP.replace("from fastapi import", "from fastapi_missing import")},
                            "failed to import"),
    "solution calls a failing tool": ({"app_py": APP.replace('"INSERT INTO notes (title, stars) VALUES (:t, :s)"',
                                                             '"INSERT INTO nope (title, stars) VALUES (:t, :s)"')},
                                      "solution step 1 add_note failed"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_bundles_are_reported(tmp_path: Path, case: str):
    overrides, expected = BROKEN[case]
    report = validate_bundle(load_bundle(toy_bundle(tmp_path, evil_verifiers=False, **overrides)))
    assert not report.ok
    assert any(expected in p for p in report.all_problems()), report.all_problems()


def test_edited_bundle_and_cli_exit_code(tmp_path: Path):
    path = toy_bundle(tmp_path, evil_verifiers=False)
    (path / "seed.sql").write_text(SEED + "INSERT INTO notes (title, stars) VALUES ('sneaky', 1);\n")
    proc = run_validate(str(path))
    assert proc.returncode == 1
    assert "content_hash does not match" in proc.stdout and "INVALID" in proc.stdout
    bundle = load_bundle(path)
    write_bundle(bundle, tmp_path)  # rewriting refreshes the hash: valid again
    assert run_validate(str(path)).returncode == 0
