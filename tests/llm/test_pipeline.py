"""The synthesis pipeline end to end against scripted protocol servers, driven through the real SDKs."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from agentworld.bundle import load_bundle
from agentworld.synth.pipeline import PipelineError, run_llm_pipeline
from tests.llm.fake_servers import FakeLLMServer, Reply
from tests.llm.scripted import (
    LIBRARY_DESCRIPTION,
    SEED_PATH,
    TODO_DESCRIPTION,
    TODO_SCHEMA_BROKEN,
    TODO_SEED,
    TODO_TABLES,
    TODO_TASKS,
    ScriptedModel,
    _verifier,
    library_answers,
    scenarios_answer,
    todo_answers,
)

REPO = Path(__file__).resolve().parents[2]
MODELS = {"openai": "gpt-4o", "anthropic": "claude-haiku-4-5"}
PRICES = {"gpt-4o": (2.5, 10.0), "claude-haiku-4-5": (1.0, 5.0)}
UP_TO_SEED = ["scenarios", "tasks", "schema", "seed"]


def llm_spec(server: FakeLLMServer, provider: str) -> str:
    url = server.openai_url if provider == "openai" else server.anthropic_url
    return f"{provider}:{MODELS[provider]}@{url}"


def run(server: FakeLLMServer, provider: str, out: Path, n: int = 1, **options):
    defaults = {"seed_path": SEED_PATH, "show_progress": False, "print_report": False, "retry_base_delay_s": 0.01,
                "max_retries": 3}
    return run_llm_pipeline(llm_spec(server, provider), n, out, **{**defaults, **options})


def todo_only(overrides: dict | None = None) -> dict:
    answers = todo_answers()
    answers[("scenarios", None, None)] = [scenarios_answer(("team_todos", TODO_DESCRIPTION))]
    answers.update(overrides or {})
    return answers


def two_envs() -> dict:
    answers = {**library_answers(), **todo_answers()}
    answers[("scenarios", None, None)] = [scenarios_answer(
        ("library_lending_1", LIBRARY_DESCRIPTION),
        ("library_lending_2", LIBRARY_DESCRIPTION.replace("city library", "town library")),  # a near-duplicate
        ("team_todos", TODO_DESCRIPTION))]
    return answers


def expected_cost(server: FakeLLMServer, model: str) -> float:
    """What the scripted provider billed: prompt-cache reads at 10% (Anthropic) or 50% (OpenAI), writes at 125%."""
    price_in, price_out = PRICES[model]
    read_factor, write_factor = (0.1, 1.25) if model.startswith("claude") else (0.5, 1.0)
    total = 0.0
    for r in server.ok_requests():
        read, write = r.cache
        plain = r.usage[0] - read - write
        total += (plain + read * read_factor + write * write_factor) * price_in + r.usage[1] * price_out
    return total / 1e6


# ---- the scripted end-to-end run ----------------------------------------------------------------------------------


def test_end_to_end_two_validated_environments(server: FakeLLMServer, tmp_path: Path) -> None:
    answers = two_envs()
    # task_3 of team_todos: the first verifier checks the wrong row; the validator's verdict is fed back and the
    # second answer is right. task_9: the verifier can never pass, so the task is dropped with its reason.
    good_3 = json.loads(answers[("solutions", "team_todos", 3)][0])
    wrong_3 = {**good_3, "verifier_code": _verifier(
        "    q = 'SELECT COUNT(*) FROM todos WHERE id = 5'\n"
        "    ok = rows(initial_db_path, q)[0][0] == 1 and rows(final_db_path, q)[0][0] == 0\n"
        "    return {'result': 'complete' if ok else 'others'}\n")}
    answers[("solutions", "team_todos", 3)] = [json.dumps(wrong_3), json.dumps(good_3)]
    hopeless = {**TODO_TASKS[9][1], "verifier_code": _verifier("    return {'result': 'others'}\n")}
    answers[("solutions", "team_todos", 9)] = [json.dumps(hopeless)]
    server.responder = ScriptedModel(answers)

    out = tmp_path / "out"
    report = run(server, "openai", out, n=2, validate_rounds=2)
    text = report.render()
    print(text)
    (tmp_path / "report.txt").write_text(text)

    assert sorted(v["env_id"] for v in report.validated) == ["library_lending_1", "team_todos"]
    assert report.dropped == []
    assert [s["name"] for s in report.scenarios_rejected] == ["library_lending_2"]
    assert "near-duplicate of library_lending_1" in report.scenarios_rejected[0]["reason"]
    (dropped,) = report.dropped_tasks
    assert (dropped["env_id"], dropped["task_id"]) == ("team_todos", "task_9")
    assert "reference solution gives 'others'" in dropped["reason"]

    library, todos = load_bundle(out / "library_lending_1"), load_bundle(out / "team_todos")
    assert len(library.tasks) == 10 and len(todos.tasks) == 9
    assert todos.manifest.provenance["source"] == "llm" and todos.manifest.counts.tools == 7
    assert library.manifest.counts.tools > 20 and library.manifest.content_hash.startswith("sha256:")

    # each environment's first task goes alone, so the other nine reuse the shared context from the prompt cache
    for env_id in ("library_lending_1", "team_todos"):
        sols = [r for r in server.ok_requests("solutions") if r.scenario == env_id]
        assert sols[0].task_index == 0 and sols[0].cache == (0, 0)
        assert all(r.cache[0] > 0 for r in sols[1:])
    assert report.stages["solutions"].cache_read_tokens == sum(r.cache[0] for r in server.ok_requests("solutions"))
    # gpt-4o writes at most 16,384 tokens per answer: the code stage's 32,000 is clamped to it
    assert {r.body["max_tokens"] for r in server.ok_requests("code")} == {16_384}
    # the correction request for task_3 carried the validator's verdict
    fixes = [r for r in server.ok_requests("solutions") if r.scenario == "team_todos" and r.task_index == 3]
    assert len(fixes) == 2 and "Validating this task in the running environment failed" in fixes[1].last_user
    assert "reference solution gives 'others'" in fixes[1].last_user

    validate, solutions = report.stages["validate"], report.stages["solutions"]
    assert (validate.units, validate.first_attempt_ok, validate.feedback_retries) == (2, 1, 1)
    assert (solutions.units, solutions.first_attempt_ok, solutions.feedback_retries) == (20, 20, 2)
    # cost accounting equals what the server billed, stage by stage and in total
    assert report.total.cost_usd == pytest.approx(expected_cost(server, "gpt-4o"))
    assert report.total.input_tokens == sum(r.usage[0] for r in server.ok_requests())
    assert report.stages["code"].output_tokens == sum(r.usage[1] for r in server.ok_requests("code"))
    assert json.loads((out / ".synth" / "report.json").read_text())["validated"][0]["tasks"] in (9, 10)


# ---- feedback of concrete failures ------------------------------------------------------------------------------


def test_validation_failures_of_most_tasks_go_back_to_the_app_code(server: FakeLLMServer, tmp_path: Path) -> None:
    answers = todo_only()
    good = answers[("code", "team_todos", None)][0]
    buggy = good.replace("def todo_out(t):\n", "def todo_out(t):\n    raise RuntimeError('todo_out is broken')\n")
    answers[("code", "team_todos", None)] = [buggy, good]
    server.responder = ScriptedModel(answers)
    report = run(server, "openai", tmp_path / "out", validate_rounds=2)
    assert [v["env_id"] for v in report.validated] == ["team_todos"] and not report.dropped_tasks
    first, fix = server.ok_requests("code")
    assert "Running the environment's tasks against this app.py found problems" in fix.last_user
    assert "list_todos failed (500)" in fix.last_user and "todo_out is broken" in fix.last_user
    assert fix.messages[1]["content"].count("raise RuntimeError('todo_out is broken')") == 1  # its own code shown
    assert report.stages["validate"].feedback_retries == 1
    assert (report.stages["code"].units, report.stages["code"].feedback_retries) == (1, 1)
    assert "raise RuntimeError" not in (tmp_path / "out/team_todos/app.py").read_text()



def test_schema_error_is_fed_back_and_fixed(server: FakeLLMServer, tmp_path: Path) -> None:
    server.responder = ScriptedModel(todo_only({("schema", "team_todos", None): [
        json.dumps({"tables": TODO_SCHEMA_BROKEN}), json.dumps({"tables": TODO_TABLES})]}))
    report = run(server, "anthropic", tmp_path / "out", stages=["scenarios", "tasks", "schema"])
    first, second = server.ok_requests("schema")
    assert first.attempt == 1 and second.attempt == 2
    assert 'near "TABLEE": syntax error' in second.last_user
    assert "CREATE TABLEE todos" in second.last_user  # the failing statement is quoted back
    stats = report.stages["schema"]
    assert (stats.units, stats.first_attempt_ok, stats.feedback_retries, stats.failed) == (1, 0, 1, 0)
    saved = json.loads((tmp_path / "out/.synth/envs/team_todos/schema.json").read_text())
    assert [t["name"] for t in saved["tables"]] == ["users", "projects", "todos"]


def test_seed_foreign_key_violation_is_fed_back(server: FakeLLMServer, tmp_path: Path) -> None:
    bad = json.loads(json.dumps(TODO_SEED))
    bad[2]["insert_statements"][0] = bad[2]["insert_statements"][0].replace("(1, 1, 'Fix login bug'",
                                                                            "(1, 99, 'Fix login bug'")
    server.responder = ScriptedModel(todo_only({("seed", "team_todos", None): [
        json.dumps({"tables": bad}), json.dumps({"tables": TODO_SEED})]}))
    report = run(server, "openai", tmp_path / "out", stages=UP_TO_SEED)
    _, second = server.ok_requests("seed")
    assert "FOREIGN KEY constraint failed" in second.last_user and "(1, 99, 'Fix login bug'" in second.last_user
    assert report.stages["seed"].feedback_retries == 1 and not report.dropped


def test_malformed_json_is_fed_back_and_tolerant_parsing_accepts_sloppy_json(server: FakeLLMServer,
                                                                             tmp_path: Path) -> None:
    tasks = [t for t, _ in TODO_TASKS]
    sloppy = "Here you go:\n```json\n" + json.dumps({"tasks": tasks})[:-2] + ",],}\n```"  # trailing commas
    server.responder = ScriptedModel(todo_only({("tasks", "team_todos", None): ['{"tasks": ["Do X", ', sloppy]}))
    console = Console(file=io.StringIO(), width=160)
    report = run(server, "openai", tmp_path / "out", stages=["scenarios", "tasks"], show_progress=True,
                 print_report=True, console=console)
    printed = console.file.getvalue()
    assert "1st-try ok" in printed and "tasks" in printed
    first, second = server.ok_requests("tasks")
    assert "not a valid JSON object" in second.last_user
    assert report.stages["tasks"].feedback_retries == 1
    assert json.loads((tmp_path / "out/.synth/envs/team_todos/tasks.json").read_text())["tasks"] == tasks


def test_truncated_code_and_import_traceback_are_fed_back(server: FakeLLMServer, tmp_path: Path) -> None:
    answers = todo_only()
    good = answers[("code", "team_todos", None)][0]
    broken = good.replace("Base.metadata.create_all(engine)", "Base.metadata.create_all(engine)\nundefined_name()")
    answers[("code", "team_todos", None)] = ["TRUNCATED:" + good[: len(good) // 2], broken, good]
    server.responder = ScriptedModel(answers)
    report = run(server, "anthropic", tmp_path / "out", stages=["scenarios", "tasks", "schema", "seed", "spec", "code"])
    _, second, third = server.ok_requests("code")
    assert all(r.streamed and r.body["max_tokens"] == 32_000 for r in (second, third))  # long answers are streamed
    assert "cut off at the output limit" in second.last_user
    assert "NameError: name 'undefined_name' is not defined" in third.last_user  # the child's traceback
    stats = report.stages["code"]
    assert (stats.first_attempt_ok, stats.feedback_retries) == (0, 2) and not report.dropped
    assert "def delete_todo" in (tmp_path / "out/.synth/envs/team_todos/app.py").read_text()


def test_code_failing_every_attempt_drops_the_environment(server: FakeLLMServer, tmp_path: Path) -> None:
    answers = todo_only()
    answers[("code", "team_todos", None)] = ["```python\ndef broken(:\n```"]
    server.responder = ScriptedModel(answers)
    report = run(server, "openai", tmp_path / "out", stages=["scenarios", "tasks", "schema", "seed", "spec", "code"],
                 max_attempts=2)
    (dropped,) = report.dropped
    assert dropped["stage"] == "code" and "still failing after 2 attempts" in dropped["reason"]
    assert "does not compile" in dropped["reason"]
    assert json.loads((tmp_path / "out/.synth/envs/team_todos/dropped.json").read_text())["stage"] == "code"


# ---- transport failures inside a run ------------------------------------------------------------------------------


def test_429_500_and_timeout_are_retried_and_a_dead_env_is_dropped(server: FakeLLMServer, tmp_path: Path) -> None:
    answers = {**todo_answers(), **library_answers()}
    answers[("scenarios", None, None)] = [scenarios_answer(("team_todos", TODO_DESCRIPTION),
                                                           ("library_lending_1", LIBRARY_DESCRIPTION))]
    server.responder = ScriptedModel(answers)
    todos = lambda stage: lambda r: r.stage == stage and r.scenario == "team_todos"  # noqa: E731
    server.fail(todos("tasks"), Reply(status=429, headers={"retry-after": "0"}, error_type="rate_limit_error"))
    server.fail(todos("schema"), Reply(status=500))
    server.fail(todos("seed"), Reply(text="too late", delay_s=6.0))
    server.fail(lambda r: r.stage == "schema" and r.scenario == "library_lending_1", Reply(status=500), times=100)
    report = run(server, "openai", tmp_path / "out", n=2, stages=UP_TO_SEED, timeout_s=2.0)
    for stage in ("tasks", "schema", "seed"):
        assert report.stages[stage].transport_retries >= 1, stage
    assert (tmp_path / "out/.synth/envs/team_todos/seed.json").exists()
    (dropped,) = report.dropped
    assert dropped["env_id"] == "library_lending_1" and dropped["stage"] == "schema"
    assert "gave up after 4 attempts: HTTP 500" in dropped["reason"]
    assert len([r for r in server.requests if r.stage == "schema" and r.scenario == "library_lending_1"]) == 4


# ---- near-duplicates with OpenAI embeddings -------------------------------------------------------------------


def test_scenario_dedup_with_openai_embeddings(server: FakeLLMServer, tmp_path: Path) -> None:
    answers = two_envs()
    server.responder = ScriptedModel(answers)
    report = run(server, "openai", tmp_path / "out", n=2, stages=["scenarios"],
                 embeddings="openai:text-embedding-3-small")
    embeds = [r for r in server.requests if r.api == "embeddings"]
    assert embeds and embeds[0].body["model"] == "text-embedding-3-small"
    assert [s["name"] for s in report.scenarios_rejected] == ["library_lending_2"]
    accepted = json.loads((tmp_path / "out/.synth/scenarios.json").read_text())["accepted"]
    assert [s["id"] for s in accepted] == ["library_lending_1", "team_todos"]


# ---- resume ---------------------------------------------------------------------------------------------------


def test_resume_after_a_crash_repeats_no_finished_work(server: FakeLLMServer, tmp_path: Path) -> None:
    server.responder = ScriptedModel(todo_only())
    out = tmp_path / "out"

    def crash_after(stage: str) -> None:
        if stage == "seed":
            raise RuntimeError("injected crash after the seed stage")

    with pytest.raises(RuntimeError, match="injected crash"):
        run(server, "openai", out, stages=[*UP_TO_SEED, "spec"], on_stage_done=crash_after, no_cache=True)
    before = {s: server.count(s) for s in UP_TO_SEED}
    assert before == {"scenarios": 1, "tasks": 1, "schema": 1, "seed": 1} and server.count("spec") == 0

    with pytest.raises(PipelineError, match="--resume"):
        run(server, "openai", out)
    report = run(server, "openai", out, stages=[*UP_TO_SEED, "spec"], resume=True)
    assert {s: server.count(s) for s in UP_TO_SEED} == before  # nothing finished was asked again
    assert server.count("spec") == 1
    assert report.stages["seed"].skipped_resumed == 1 and report.stages["seed"].requests == 0


def test_resume_after_kill_mid_stage(server: FakeLLMServer, tmp_path: Path) -> None:
    """SIGKILL a run while one environment's seed request hangs; the other's finished seed is not asked again."""
    answers = {**todo_answers(), **library_answers()}
    answers[("scenarios", None, None)] = [scenarios_answer(("team_todos", TODO_DESCRIPTION),
                                                           ("library_lending_1", LIBRARY_DESCRIPTION))]
    server.responder = ScriptedModel(answers)
    import threading

    server.block = threading.Event()
    server.block_when = lambda r: r.stage == "seed" and r.scenario == "library_lending_1"
    out = tmp_path / "out"
    script = (
        "import sys; from pathlib import Path; from agentworld.synth.pipeline import run_llm_pipeline\n"
        f"run_llm_pipeline({llm_spec(server, 'openai')!r}, 2, Path({str(out)!r}), stages={UP_TO_SEED!r}, "
        f"seed_path={str(SEED_PATH)!r}, show_progress=False, print_report=False)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "services") + os.pathsep + str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        todo_seed = out / ".synth/envs/team_todos/seed.json"
        while not (server.blocked.is_set() and todo_seed.exists()):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended or stalled before the kill"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    server.block_when = None
    server.block.set()
    before = {s: server.count(s) for s in ("scenarios", "tasks", "schema")}
    todo_seed_before = len([r for r in server.requests if r.stage == "seed" and r.scenario == "team_todos"])

    report = run(server, "openai", out, n=2, stages=UP_TO_SEED, resume=True)
    assert {s: server.count(s) for s in ("scenarios", "tasks", "schema")} == before
    assert len([r for r in server.requests if r.stage == "seed" and r.scenario == "team_todos"]) == todo_seed_before
    assert (out / ".synth/envs/library_lending_1/seed.json").exists()
    assert report.stages["seed"].skipped_resumed == 1 and not report.dropped


def test_rerun_with_a_shared_cache_pays_nothing(server: FakeLLMServer, tmp_path: Path) -> None:
    """A crashed run's answers are reused from the response cache even where no stage output was written."""
    server.responder = ScriptedModel(todo_only())
    stages = ["scenarios", "tasks", "schema", "seed", "spec", "code"]
    first = run(server, "openai", tmp_path / "a", stages=stages, cache_dir=tmp_path / "cache")
    sent = len(server.requests)
    again = run(server, "openai", tmp_path / "b", stages=stages, cache_dir=tmp_path / "cache")
    assert len(server.requests) == sent == first.total.requests == 6
    assert again.total.cache_hits == 6 and again.total.requests == 0 and again.total.cost_usd == 0
    assert (tmp_path / "a/.synth/envs/team_todos/app.py").read_text() == (
        tmp_path / "b/.synth/envs/team_todos/app.py").read_text()


def test_bad_options_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="unknown stage"):
        run_llm_pipeline("openai:gpt-4o@http://127.0.0.1:9/v1", 1, tmp_path, stages=["nope"])
    with pytest.raises(PipelineError, match="unknown pipeline option"):
        run_llm_pipeline("openai:gpt-4o@http://127.0.0.1:9/v1", 1, tmp_path, colour="red")
    with pytest.raises(PipelineError, match="seed scenarios not found"):
        run_llm_pipeline("openai:gpt-4o@http://127.0.0.1:9/v1", 1, tmp_path, seed_path=tmp_path / "none.jsonl")

