"""AWM import/export: mini_library end to end, synthetic edge cases, bad input, and the wall-clock pinning."""

from __future__ import annotations

import inspect
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from agentworld.bundle import BUNDLE_FILES, load_bundle
from agentworld.bundle.awm_export import export_awm, verifier_codes
from agentworld.bundle.awm_import import (
    FIXED_INSTANT,
    AwmFormatError,
    build_verifiers,
    import_awm,
    normalise_name,
    pin_wall_clock,
    reads_wall_clock,
    split_sql,
)

EXPECTED_ROWS = {
    "branches": 3,
    "members": 5,
    "books": 8,
    "copies": 13,
    "loans": 8,
    "holds": 4,
    "fines": 4,
    "reviews": 7,
}
QUERY_TASKS = {0, 8, 9}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def build_db(bundle_dir: Path, db_path: Path, conn_factory=sqlite3.connect) -> sqlite3.Connection:
    conn = conn_factory(db_path)
    conn.execute("PRAGMA foreign_keys=ON")
    conn.executescript((bundle_dir / "schema.sql").read_text())
    conn.executescript((bundle_dir / "seed.sql").read_text())
    conn.commit()
    return conn


def load_verifiers(bundle_dir: Path) -> dict[str, Any]:
    ns: dict[str, Any] = {}
    exec(compile((bundle_dir / "verifiers.py").read_text(), str(bundle_dir / "verifiers.py"), "exec"), ns)
    return ns


# ---------------------------------------------------------------------------------------------------------------
# An oracle for "reads the wall clock", independent of pin_wall_clock: SQLite lets a connection override its
# built-in date functions (CURRENT_TIMESTAMP & co. are calls to current_timestamp() etc. internally).

_TIME_ARG = {"date": 0, "time": 0, "datetime": 0, "julianday": 0, "unixepoch": 0, "strftime": 1}


def clock_spy_connection(db: str = ":memory:") -> tuple[sqlite3.Connection, list[str]]:
    reads: list[str] = []
    conn = sqlite3.connect(db)

    def spy(name: str, pos: int | None):
        def fn(*args):
            if pos is None or len(args) <= pos or (isinstance(args[pos], str) and args[pos].lower() == "now"):
                reads.append(f"{name}{args}")
            return "x"

        return fn

    for name, pos in _TIME_ARG.items():
        conn.create_function(name, -1, spy(name, pos))
    for name in ("current_timestamp", "current_date", "current_time"):
        conn.create_function(name, 0, spy(name, None))
    return conn, reads


def test_clock_spy_detects_clock_reads() -> None:
    conn, reads = clock_spy_connection()
    conn.execute("SELECT CURRENT_TIMESTAMP, datetime('now', '+1 day'), date(), strftime('%Y'), julianday('NOW')")
    assert len(reads) == 5
    reads.clear()
    conn.execute("SELECT datetime('2025-01-01'), strftime('%Y', '2024-01-01'), 'now', lower('now')")
    assert reads == []


# ---------------------------------------------------------------------------------------------------------------
# mini_library


def test_import_writes_bundle_with_counts(imported) -> None:
    result, out = imported
    assert result.skipped == [] and result.warnings == []
    assert [p.name for p in result] == ["library_lending_1"]
    bdir = out / "library_lending_1"
    for name in (*BUNDLE_FILES, "env.json"):
        assert (bdir / name).is_file(), name
    bundle = load_bundle(bdir)
    m = bundle.manifest
    assert (m.counts.tables, m.counts.tools, m.counts.tasks) == (8, 21, 10)
    assert m.title == "Library Lending API"
    assert m.description.startswith("A public library lending system")
    assert m.provenance == {"source": "awm-import", "scenario": "library_lending_1"}
    assert m.content_hash.startswith("sha256:") and len(m.content_hash) == 7 + 64


def test_tasks_from_solutions(imported, mini_library: Path) -> None:
    _, out = imported
    bundle = load_bundle(out / "library_lending_1")
    instructions = read_jsonl(mini_library / "gen_tasks.jsonl")[0]["tasks"]
    solutions = {s["task_idx"]: s for s in read_jsonl(mini_library / "solutions.jsonl")}
    assert [t.id for t in bundle.tasks] == [f"task_{i}" for i in range(10)]
    for i, task in enumerate(bundle.tasks):
        assert task.instruction == instructions[i]
        assert task.verifier == f"verify_task_{i}"
        assert task.kind == ("query" if i in QUERY_TASKS else "mutation")
        assert [c.model_dump() for c in task.solution] == [
            {"tool": c["tool"], "arguments": c["arguments"]} for c in solutions[i]["calls"]
        ]
        assert task.expected_answer == solutions[i]["final_answer"]


def test_app_is_verbatim(imported, mini_library: Path) -> None:
    _, out = imported
    code = read_jsonl(mini_library / "gen_envs.jsonl")[0]["full_code"]
    assert (out / "library_lending_1" / "app.py").read_text() == code


def test_schema_and_seed_execute_with_foreign_keys(imported, tmp_path: Path) -> None:
    _, out = imported
    conn = build_db(out / "library_lending_1", tmp_path / "init.db")
    assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    tables = [
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")
    ]
    assert sorted(tables) == sorted(EXPECTED_ROWS)
    for table, n in EXPECTED_ROWS.items():
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (n,), table
    indexes = conn.execute("SELECT count(*) FROM sqlite_master WHERE type='index' AND name LIKE 'idx_%'").fetchone()
    assert indexes == (12,)


def test_schema_orders_each_tables_ddl_then_its_indexes(imported, mini_library: Path) -> None:
    _, out = imported
    tables = read_jsonl(mini_library / "gen_db.jsonl")[0]["db_schema"]["tables"]
    expected = [s for t in tables for s in [t["ddl"], *t["indexes"]]]
    assert split_sql((out / "library_lending_1" / "schema.sql").read_text()) == expected


def test_seed_reads_no_clock(imported) -> None:
    _, out = imported
    bdir = out / "library_lending_1"
    seed = (bdir / "seed.sql").read_text()
    assert "'now'" not in seed.lower() and "current_" not in seed.lower()
    conn, reads = clock_spy_connection()
    conn.executescript((bdir / "schema.sql").read_text())
    conn.executescript(seed)
    assert reads == []


def test_import_is_deterministic(mini_library: Path, tmp_path: Path) -> None:
    a = import_awm(mini_library, tmp_path / "a")
    b = import_awm(mini_library, tmp_path / "b")
    assert a.bundles[0].manifest.content_hash == b.bundles[0].manifest.content_hash
    for name in (*BUNDLE_FILES, "env.json"):
        assert (a[0] / name).read_bytes() == (b[0] / name).read_bytes(), name


def test_verifiers_compile_and_judge_initial_state(imported, tmp_path: Path) -> None:
    _, out = imported
    bdir = out / "library_lending_1"
    ns = load_verifiers(bdir)
    assert "verify_task_completion" not in ns
    db = tmp_path / "init.db"
    build_db(bdir, db).close()
    bundle = load_bundle(bdir)
    for task in bundle.tasks:
        fn = ns[task.verifier]
        untouched = fn(str(db), str(db), final_answer=None)
        assert untouched["result"] == "others", task.id
        if task.kind == "query":
            assert fn(str(db), str(db), final_answer=task.expected_answer)["result"] == "complete", task.id


def test_verifier_code_is_verbatim_but_for_the_name(imported, mini_library: Path) -> None:
    _, out = imported
    text = (out / "library_lending_1" / "verifiers.py").read_text()
    for rec in read_jsonl(mini_library / "gen_verifier.pure_code.jsonl"):
        code = rec["verification"]["code"].rstrip()
        renamed = code.replace("def verify_task_completion(", f"def verify_task_{rec['task_idx']}(", 1)
        assert renamed in text


# ---------------------------------------------------------------------------------------------------------------
# Variants of the input


def test_no_solutions_file_takes_kind_from_verifier(awm_copy: Path, tmp_path: Path) -> None:
    (awm_copy / "solutions.jsonl").unlink()
    result = import_awm(awm_copy, tmp_path / "out")
    tasks = result.bundles[0].tasks
    assert {i for i, t in enumerate(tasks) if t.kind == "query"} == QUERY_TASKS
    assert all(t.solution == [] and t.expected_answer is None for t in tasks)


def test_bare_list_sample_and_no_spec(awm_copy: Path, tmp_path: Path, mini_library: Path) -> None:
    rec = read_jsonl(awm_copy / "gen_sample.jsonl")[0]
    rec["sample_data"] = rec["sample_data"]["tables"]
    write_jsonl(awm_copy / "gen_sample.jsonl", [rec])
    (awm_copy / "gen_spec.jsonl").unlink()
    a = import_awm(awm_copy, tmp_path / "a")
    b = import_awm(mini_library, tmp_path / "b")
    assert a.bundles[0].manifest.content_hash == b.bundles[0].manifest.content_hash


def test_scenario_names_are_normalised(awm_copy: Path, tmp_path: Path) -> None:
    assert normalise_name("  Library--Lending 1!! ") == "library_lending_1"
    assert normalise_name("__A__b__") == "a_b"
    for fname, key, spelling in [
        ("gen_scenario.jsonl", "name", "Library Lending 1"),
        ("gen_tasks.jsonl", "scenario", "library-lending-1"),
        ("gen_db.jsonl", "scenario", "LIBRARY_LENDING_1"),
    ]:
        recs = read_jsonl(awm_copy / fname)
        recs[0][key] = spelling
        write_jsonl(awm_copy / fname, recs)
    result = import_awm(awm_copy, tmp_path / "out")
    assert [p.name for p in result] == ["library_lending_1"]
    assert result.bundles[0].manifest.description


def test_wall_clock_functions_pinned_in_seed(awm_copy: Path, tmp_path: Path) -> None:
    rec = read_jsonl(awm_copy / "gen_sample.jsonl")[0]
    tables = rec["sample_data"]["tables"]
    tables[0]["insert_statements"].append(
        "INSERT INTO branches (id, name, address, phone, opening_hours, created_at) VALUES "
        "(4, 'Now Branch', 'the ''now'' street', 'now', datetime('now', '+1 day'), datetime('now', '-3 days'));"
    )
    tables[-1]["insert_statements"].append(
        "INSERT INTO reviews (id, member_id, book_id, rating, review_text) VALUES (8, 1, 2, 4, 'Read it just now');"
    )
    write_jsonl(awm_copy / "gen_sample.jsonl", [rec])
    result = import_awm(awm_copy, tmp_path / "out")
    bdir = result[0]
    conn = build_db(bdir, tmp_path / "db")
    row = conn.execute("SELECT name, address, phone, opening_hours, created_at FROM branches WHERE id = 4").fetchone()
    assert row == ("Now Branch", "the 'now' street", "now", "2025-06-02 12:00:00", "2025-05-29 12:00:00")
    assert conn.execute("SELECT review_text FROM reviews WHERE id = 8").fetchone() == ("Read it just now",)
    # That review leaves created_at/updated_at to DEFAULT CURRENT_TIMESTAMP: the import says so.
    assert any("reads the clock 2 time(s)" in w and "current_timestamp" in w for w in result.warnings)
    spy, reads = clock_spy_connection()
    spy.executescript((bdir / "schema.sql").read_text().replace("CURRENT_TIMESTAMP", "'d'"))
    spy.executescript((bdir / "seed.sql").read_text())
    assert reads == []


def test_two_statements_in_one_entry_round_trip(awm_copy: Path, tmp_path: Path) -> None:
    rec = read_jsonl(awm_copy / "gen_sample.jsonl")[0]
    stmts = rec["sample_data"]["tables"][0]["insert_statements"]
    stmts[:2] = [stmts[0] + "\n-- and the second;\n" + stmts[1].rstrip(";")]
    write_jsonl(awm_copy / "gen_sample.jsonl", [rec])
    first = import_awm(awm_copy, tmp_path / "a")
    assert len(split_sql(first.bundles[0].seed_sql)) == 52
    export_awm(list(first), tmp_path / "awm")
    again = import_awm(tmp_path / "awm", tmp_path / "b")
    assert again.bundles[0].manifest.content_hash == first.bundles[0].manifest.content_hash


def test_seed_that_does_not_execute_is_reported(awm_copy: Path, tmp_path: Path) -> None:
    rec = read_jsonl(awm_copy / "gen_sample.jsonl")[0]
    rec["sample_data"]["tables"][0]["insert_statements"].append("INSERT INTO branches (id) VALUES (1);")
    write_jsonl(awm_copy / "gen_sample.jsonl", [rec])
    result = import_awm(awm_copy, tmp_path / "out")
    assert any("do not execute" in w and "NOT NULL" in w for w in result.warnings)


def test_scenario_filter(awm_copy: Path, tmp_path: Path) -> None:
    result = import_awm(awm_copy, tmp_path / "out", scenarios=["Library Lending 1", "nope"])
    assert [p.name for p in result] == ["library_lending_1"]
    assert [(s.scenario, "not found" in s.reason) for s in result.skipped] == [("nope", True)]


def _second_scenario(src: Path, name: str) -> dict[str, list[dict[str, Any]]]:
    """Records of mini_library renamed to `name` (a second scenario in the same files)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for f in src.glob("gen_*.jsonl"):
        recs = read_jsonl(f)
        for r in recs:
            r["name" if f.name == "gen_scenario.jsonl" else "scenario"] = name
        out[f.name] = recs
    return out


def test_missing_required_file_skips_scenario(awm_copy: Path, tmp_path: Path) -> None:
    for fname, recs in _second_scenario(awm_copy, "second_library").items():
        if fname == "gen_envs.jsonl":
            continue  # the second scenario has no server code
        with (awm_copy / fname).open("a") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in recs))
    result = import_awm(awm_copy, tmp_path / "out")
    assert [p.name for p in result] == ["library_lending_1"]
    assert len(result.skipped) == 1
    assert result.skipped[0].scenario == "second_library" and "gen_envs.jsonl" in result.skipped[0].reason
    # solutions.jsonl has no scenario field: ambiguous with two scenarios, so it is not applied.
    assert any("ambiguous" in w for w in result.warnings)


def test_verifier_without_function_skips_scenario(awm_copy: Path, tmp_path: Path) -> None:
    recs = read_jsonl(awm_copy / "gen_verifier.pure_code.jsonl")
    recs[3]["verification"]["code"] = "def check(a, b):\n    return {'result': 'others'}\n"
    write_jsonl(awm_copy / "gen_verifier.pure_code.jsonl", recs)
    result = import_awm(awm_copy, tmp_path / "out")
    assert list(result) == []
    assert "task 3" in result.skipped[0].reason and "verify_task_completion" in result.skipped[0].reason


def test_missing_verifier_for_a_task_skips_scenario(awm_copy: Path, tmp_path: Path) -> None:
    recs = read_jsonl(awm_copy / "gen_verifier.pure_code.jsonl")
    write_jsonl(awm_copy / "gen_verifier.pure_code.jsonl", [r for r in recs if r["task_idx"] != 7])
    result = import_awm(awm_copy, tmp_path / "out")
    assert list(result) == [] and "task(s) 7" in result.skipped[0].reason


@pytest.mark.parametrize(
    ("fname", "line2", "needle"),
    [
        ("gen_tasks.jsonl", '{"scenario": "x", "tasks": [1, 2', "invalid JSON"),
        ("gen_tasks.jsonl", '["not", "an", "object"]', "expected a JSON object"),
        ("gen_tasks.jsonl", '{"scenario": "x", "tasks": "one task"}', "tasks"),
        ("gen_db.jsonl", '{"scenario": "x", "db_schema": {"tables": [{"name": "t"}]}}', "ddl"),
        (
            "gen_verifier.pure_code.jsonl",
            '{"scenario": "x", "task_idx": "seven", "verification": {"code": ""}}',
            "task_idx",
        ),
        ("solutions.jsonl", '{"task_idx": 1, "calls": [{"arguments": {}}]}', "tool"),
    ],
)
def test_malformed_line_names_file_and_line(
    awm_copy: Path, tmp_path: Path, fname: str, line2: str, needle: str
) -> None:
    first = (awm_copy / fname).read_text().splitlines()[0]
    (awm_copy / fname).write_text(first + "\n" + line2 + "\n")
    with pytest.raises(AwmFormatError) as exc:
        import_awm(awm_copy, tmp_path / "out")
    msg = str(exc.value)
    assert f"{fname}:2:" in msg and needle in msg


def test_empty_or_missing_input_dir(tmp_path: Path) -> None:
    with pytest.raises(AwmFormatError, match="not a directory"):
        import_awm(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AwmFormatError, match="no AWM scenarios"):
        import_awm(tmp_path / "empty", tmp_path / "out")


# ---------------------------------------------------------------------------------------------------------------
# Verifier assembly with colliding helpers

V_SHARED_A = '''
THRESHOLD = 1


def helper(x):
    return x + THRESHOLD


def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    """doc
    with a second line"""
    return {"result": "complete" if helper(0) == 1 else "others", "who": "a", "t": THRESHOLD}
'''
V_SHARED_B = '''
import json as helper_json

THRESHOLD = 2


def helper(x):
    text = """multi-line
string kept"""
    return x + THRESHOLD + len(text) * 0


def verify_task_completion(initial_db_path: str, final_db_path: str, final_answer: str | None = None) -> dict:
    return {"result": "complete" if helper(0) == 2 else "others", "who": "b", "answer": final_answer}
'''
V_PLAIN = """
import sqlite3


def verify_task_completion(initial_db_path, final_db_path):
    return {"result": "others", "who": "c"}
"""
V_SAME_IMPORT = """
import sqlite3


def verify_task_completion(initial_db_path, final_db_path, final_answer=None):
    return {"result": "others", "who": "d", "answer": final_answer}
"""


def test_colliding_helpers_stay_private() -> None:
    source, reads = build_verifiers({0: V_SHARED_A, 1: V_SHARED_B, 2: V_PLAIN, 3: V_SAME_IMPORT})
    ns: dict[str, Any] = {}
    exec(compile(source, "verifiers.py", "exec"), ns)
    assert ns["verify_task_0"]("a", "b") == {"result": "complete", "who": "a", "t": 1}
    assert ns["verify_task_1"]("a", "b", final_answer="42") == {"result": "complete", "who": "b", "answer": "42"}
    assert ns["verify_task_2"]("a", "b") == {"result": "others", "who": "c"}
    assert ns["verify_task_3"]("a", "b", "x")["answer"] == "x"
    assert "helper" not in ns and "THRESHOLD" not in ns  # nested, so nothing leaks between tasks
    assert "(task_idx 0, nested)" in source and "(task_idx 1, nested)" in source
    assert "(task_idx 2, renamed)" in source and "(task_idx 3, renamed)" in source  # `import sqlite3` twice is fine
    assert "def verify_task_2(initial_db_path, final_db_path):" in source
    assert '"""multi-line\nstring kept"""' in source  # string contents are not re-indented
    assert reads == {0: False, 1: True, 2: False, 3: True}


def test_colliding_helpers_survive_export(tmp_path: Path, awm_copy: Path) -> None:
    recs = read_jsonl(awm_copy / "gen_verifier.pure_code.jsonl")
    originals = {0: V_SHARED_A, 1: V_SHARED_B, 2: "from __future__ import annotations\n" + V_PLAIN}
    for idx, code in originals.items():
        recs[idx]["verification"]["code"] = code
    write_jsonl(awm_copy / "gen_verifier.pure_code.jsonl", recs)
    first = import_awm(awm_copy, tmp_path / "a")
    export_awm(list(first), tmp_path / "awm")
    codes = {
        r["task_idx"]: r["verification"]["code"] for r in read_jsonl(tmp_path / "awm/gen_verifier.pure_code.jsonl")
    }
    assert codes[0].strip() == V_SHARED_A.strip()
    assert codes[1].strip() == V_SHARED_B.strip()
    assert codes[2].strip() == ("from __future__ import annotations\n" + V_PLAIN.strip()).strip()
    second = import_awm(tmp_path / "awm", tmp_path / "b")
    assert second.bundles[0].manifest.content_hash == first.bundles[0].manifest.content_hash


def test_nested_verifiers_validate_in_the_runtime(awm_copy: Path, tmp_path: Path) -> None:
    """Tasks whose verifiers bind the same top-level names differently still validate 10/10 in envd's sandbox."""
    from agentworld.validate import validate_bundle

    recs = read_jsonl(awm_copy / "gen_verifier.pure_code.jsonl")
    for r in recs:
        if r["task_idx"] in (1, 2, 8):
            r["verification"]["code"] = (
                f"from __future__ import annotations\nimport sqlite3\nLABEL = 'task{r['task_idx']}'\n\n"
                + r["verification"]["code"]
            )
    write_jsonl(awm_copy / "gen_verifier.pure_code.jsonl", recs)
    result = import_awm(awm_copy, tmp_path / "out")
    text = result.bundles[0].verifiers_py
    assert text.count(", nested, future annotations) ===") == 3
    report = validate_bundle(load_bundle(result[0]))
    assert report.ok, report.all_problems()
    assert [t.solved for t in report.tasks] == ["complete"] * 10


# ---------------------------------------------------------------------------------------------------------------
# Export


def test_export_round_trip(imported, tmp_path: Path, mini_library: Path) -> None:
    result, _ = imported
    files = export_awm(list(result), tmp_path / "awm")
    assert sorted(p.name for p in files) == sorted(
        [
            "gen_scenario.jsonl",
            "gen_tasks.jsonl",
            "gen_db.jsonl",
            "gen_sample.jsonl",
            "gen_spec.jsonl",
            "gen_envs.jsonl",
            "gen_verifier.pure_code.jsonl",
            "solutions.jsonl",
        ]
    )
    again = import_awm(tmp_path / "awm", tmp_path / "again")
    assert again.bundles[0].manifest.content_hash == result.bundles[0].manifest.content_hash
    # What AWM gave us comes back as it was (only gen_sample's LLM `reasoning` text is not kept in a bundle).
    for fname in ("gen_scenario.jsonl", "gen_tasks.jsonl", "gen_db.jsonl", "gen_envs.jsonl"):
        assert read_jsonl(tmp_path / "awm" / fname) == read_jsonl(mini_library / fname), fname
    orig = read_jsonl(mini_library / "gen_verifier.pure_code.jsonl")
    back = read_jsonl(tmp_path / "awm" / "gen_verifier.pure_code.jsonl")
    assert [b["verification"]["code"].strip() for b in back] == [o["verification"]["code"].strip() for o in orig]
    sample = read_jsonl(tmp_path / "awm" / "gen_sample.jsonl")[0]
    assert (sample["tables_count"], sample["inserts_count"]) == (8, 52)
    spec = read_jsonl(tmp_path / "awm" / "gen_spec.jsonl")[0]["api_spec"]
    ops = [e["operation_id"] for g in spec["api_groups"] for e in g["endpoints"]]
    orig_spec = read_jsonl(mini_library / "gen_spec.jsonl")[0]["api_spec"]
    assert sorted(ops) == sorted(e["operation_id"] for g in orig_spec["api_groups"] for e in g["endpoints"])


def test_export_of_a_non_awm_bundle(imported, tmp_path: Path) -> None:
    """A bundle whose verifiers.py shares helpers (no AWM sections) exports self-contained, working verifiers."""
    from agentworld.bundle import write_bundle

    result, _ = imported
    bundle = result.bundles[0].model_copy(deep=True)
    bundle.manifest.provenance = {"source": "offline", "generator": "test", "seed": 1}
    bundle.verifiers_py = "SHARED = 'others'\n\n\n" + "".join(
        f"def verify_task_{i}(initial_db_path, final_db_path, final_answer=None):\n"
        f"    return {{'result': SHARED, 'task': {i}}}\n\n\n"
        for i in range(10)
    )
    bdir = write_bundle(bundle, tmp_path / "bundles")
    codes = verifier_codes(load_bundle(bdir))
    for i, code in enumerate(codes):
        assert run_like_awm(code, "a", "b") == {"result": "others", "task": i}
    export_awm([bdir], tmp_path / "awm")
    again = import_awm(tmp_path / "awm", tmp_path / "again")
    ns = load_verifiers(again[0])
    assert [ns[f"verify_task_{i}"]("a", "b")["task"] for i in range(10)] == list(range(10))


def run_like_awm(code: str, initial_db_path: str, final_db_path: str, final_answer: str | None = None) -> Any:
    """AWM's verifier runner's selection rule: execute the code, then call the function named on its first line
    that starts with `def verify_`."""
    first = next(line for line in code.splitlines() if line.startswith("def verify_"))
    name = re.match(r"def (verify_\w+)\s*\(", first).group(1)  # type: ignore[union-attr]
    ns: dict[str, Any] = {}
    exec(compile(code, "verification", "exec"), ns)
    fn = ns[name]
    args = [initial_db_path, final_db_path]
    if "final_answer" in inspect.signature(fn).parameters:
        args.append(final_answer)
    return fn(*args)


def test_exported_offline_environments_verify_as_intended_under_awms_rule(tmp_path: Path) -> None:
    """Every task's exported code, run by AWM's rule, is that task's own verifier: complete on the task's reference
    replay, and not complete on the untouched database. (Before: AWM ran verify_task_1 for every task.)"""
    from agentworld.runtime import EnvRuntime
    from agentworld.synth.run import synthesize

    synthesize(2, seed=3, out=tmp_path / "envs", workers=1, validate=False)
    bundles = [load_bundle(p) for p in sorted((tmp_path / "envs").iterdir()) if (p / "env.json").is_file()]
    assert len(bundles) == 2
    runtime = EnvRuntime(bundles)
    try:
        for bundle in bundles:
            for task, code in zip(bundle.tasks, verifier_codes(bundle), strict=True):
                session = runtime.create_session(bundle.env_id, task.id).session_id
                initial, final = tmp_path / f"{task.id}-initial.db", tmp_path / f"{task.id}-final.db"
                initial.write_bytes(runtime.snapshot(session, export=True).data or b"")
                for step in task.solution:
                    assert not runtime.call_tool(session, step.tool, step.arguments).is_error, (task.id, step)
                final.write_bytes(runtime.snapshot(session, export=True).data or b"")
                runtime.close_session(session)
                answer = task.expected_answer
                assert run_like_awm(code, str(initial), str(final), answer)["result"] == "complete", task.id
                untouched = run_like_awm(code, str(initial), str(initial), None if task.kind == "query" else answer)
                assert untouched["result"] != "complete", task.id
    finally:
        runtime.close()


def test_export_rejects_duplicate_scenarios(imported, tmp_path: Path) -> None:
    from agentworld.bundle import BundleError

    result, _ = imported
    with pytest.raises(BundleError, match="already exported"):
        export_awm([result[0], result[0]], tmp_path / "awm")


# ---------------------------------------------------------------------------------------------------------------
# CLI


def test_cli_import_and_export(mini_library: Path, tmp_path: Path) -> None:
    from agentworld.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["import", "awm", "--from", str(mini_library), "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert "library_lending_1" in res.output and "21" in res.output
    res = runner.invoke(app, ["export", "awm", str(tmp_path / "b"), "--out", str(tmp_path / "awm")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "awm" / "gen_envs.jsonl").is_file()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "gen_tasks.jsonl").write_text("{oops\n")
    res = runner.invoke(app, ["import", "awm", "--from", str(tmp_path / "bad"), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2
    assert "gen_tasks.jsonl:1" in res.output


# ---------------------------------------------------------------------------------------------------------------
# Wall-clock pinning, property-based

_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
_nowish_text = st.sampled_from(
    ["now", "NOW", "'now'", "datetime('now')", "CURRENT_TIMESTAMP", "current_date", " now", "now()", "-- now", "/*"]
)


def _sql_string(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _case(draw, word: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(c.upper() if f else c.lower() for c, f in zip(word, flips, strict=True))


@st.composite
def clock_free_values(draw, executable: bool = False) -> str:
    """SQL values that must not be touched: literals (some mentioning "now"), quoted names, clock-free calls."""
    kind = draw(st.integers(0, 7))
    if executable and kind == 6:
        return draw(st.sampled_from(['"current_date"', "'now' || 'x'", "NULL"]))
    if kind == 0:
        return str(draw(st.integers(-(10**12), 10**12)))
    if kind == 1:
        return repr(draw(st.floats(allow_nan=False, allow_infinity=False, width=32)))
    if kind == 2:
        return _sql_string(draw(st.one_of(_text, _nowish_text)))
    if kind == 3:
        fn = _case(draw, draw(st.sampled_from(["date", "time", "datetime", "julianday", "unixepoch"])))
        mods = draw(st.lists(st.sampled_from(["'+1 day'", "'start of month'", "'-3 hours'"]), max_size=2))
        args = ", ".join(["'2024-02-29 08:30:00'", *mods])
        return f"{fn}({args})"
    if kind == 4:
        return f"strftime({_sql_string(draw(st.sampled_from(['%Y', '%s', 'now', '%H:%M'])))}, '2023-01-01')"
    if kind == 5:
        fn = draw(st.sampled_from(["lower", "upper", "length", "quote", "trim"]))
        return f"{fn}({_sql_string(draw(st.one_of(_text, _nowish_text)))})"
    if kind == 6:
        return draw(st.sampled_from(['"current_date"', "[current_time]", "`now`", "'now' || 'x'", "NULL"]))
    return draw(st.sampled_from(["/* datetime('now') */ 1", "2 -- CURRENT_TIMESTAMP\n"]))


@st.composite
def clock_reads(draw) -> tuple[str, str]:
    """(a SQL expression reading the wall clock, the same expression at the fixed instant)."""
    fixed = f"'{FIXED_INSTANT}'"
    kind = draw(st.integers(0, 4))
    now = _sql_string(_case(draw, "now"))
    mods = draw(st.lists(st.sampled_from(["'+1 day'", "'start of month'", "'-3 hours'", "'weekday 1'"]), max_size=2))
    tail = "".join(f", {m}" for m in mods)
    if kind == 0:
        kw = draw(st.sampled_from(["current_timestamp", "current_date", "current_time"]))
        value = {"current_timestamp": fixed, "current_date": "'2025-06-01'", "current_time": "'12:00:00'"}[kw]
        return _case(draw, kw), value
    if kind == 1:
        fn = _case(draw, draw(st.sampled_from(["date", "time", "datetime", "julianday", "unixepoch"])))
        return f"{fn}({now}{tail})", f"{fn}({fixed}{tail})"
    if kind == 2:
        fmt = _sql_string(draw(st.sampled_from(["%Y-%m-%d", "%s", "%H"])))
        return f"strftime({fmt}, {now}{tail})", f"strftime({fmt}, {fixed}{tail})"
    if kind == 3:
        fn = draw(st.sampled_from(["date", "datetime", "julianday"]))
        return f"{fn}()", f"{fn}({fixed})"
    inner_raw, inner_fixed = f"datetime({now})", f"datetime({fixed})"
    return f"date({inner_raw}, '+7 days')", f"date({inner_fixed}, '+7 days')"


def _insert(values: list[str]) -> str:
    cols = ", ".join(f"c{i}" for i in range(len(values)))
    return f"INSERT INTO t ({cols}) VALUES ({', '.join(values)});"


@settings(max_examples=150, deadline=None)
@given(st.lists(clock_free_values(), min_size=1, max_size=6))
def test_pin_leaves_clock_free_statements_alone(values: list[str]) -> None:
    sql = _insert(values)
    assert pin_wall_clock(sql) == sql


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.one_of(clock_free_values(executable=True).map(lambda v: (v, v)), clock_reads()), min_size=1, max_size=6)
)
def test_pin_removes_every_clock_read(pairs: list[tuple[str, str]]) -> None:
    raw = "SELECT " + ", ".join(r for r, _ in pairs)
    expected = "SELECT " + ", ".join(e for _, e in pairs)
    pinned = pin_wall_clock(raw)
    assert pinned == expected
    assert pin_wall_clock(pinned) == pinned
    spy, reads = clock_spy_connection()
    spy.execute(pinned)
    assert reads == []
    plain = sqlite3.connect(":memory:")
    assert plain.execute(pinned).fetchall() == plain.execute(expected).fetchall()


def test_pin_examples() -> None:
    assert reads_wall_clock("INSERT INTO t VALUES (CURRENT_DATE)") and not reads_wall_clock(
        "INSERT INTO t VALUES ('now')"
    )
    assert pin_wall_clock("SELECT datetime('now', '-3 days'), 'now'") == (
        f"SELECT datetime('{FIXED_INSTANT}', '-3 days'), 'now'"
    )
    assert pin_wall_clock("SELECT strftime('%Y')") == f"SELECT strftime('%Y', '{FIXED_INSTANT}')"
    assert pin_wall_clock("SELECT t.current_date FROM t") == "SELECT t.current_date FROM t"
    assert pin_wall_clock("INSERT INTO strftime (x) VALUES (1)") == "INSERT INTO strftime (x) VALUES (1)"
    assert pin_wall_clock("INSERT INTO t VALUES (Date ( /* c */ 'Now' ))") == (
        f"INSERT INTO t VALUES (Date ( /* c */ '{FIXED_INSTANT}' ))"
    )
    assert pin_wall_clock("SELECT julianday('now') - julianday('2025-01-01')") == (
        f"SELECT julianday('{FIXED_INSTANT}') - julianday('2025-01-01')"
    )
