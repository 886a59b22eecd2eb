"""Benchmark the LLM pipeline's machinery (no real model): sandbox start-up and resuming from the response cache.

    .venv/bin/python bench/llm_pipeline.py [--repeats 5]

Measures, against a scripted local OpenAI-protocol server:
- importing and probing a generated app in a sandboxed child forked from the preloaded zygote, against the
  baseline of a fresh interpreter per job (what a plain subprocess costs): median ms each, and the speedup;
- a scripted run through the `code` stage (2 environments) cold, then the same run into a new directory sharing the
  response cache: wall time of each and the requests the second run sent (should be 0).
Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "services")]

from tests.llm.fake_servers import FakeLLMServer  # noqa: E402
from tests.llm.scripted import (  # noqa: E402
    LIBRARY_DESCRIPTION,
    SEED_PATH,
    TODO_APP,
    TODO_DESCRIPTION,
    TODO_SEED,
    TODO_TABLES,
    ScriptedModel,
    library_answers,
    scenarios_answer,
    todo_answers,
)

FRESH = """
import os, sys, types
os.environ["DATABASE_PATH"] = "sqlite:///" + sys.argv[1]
from agentworld.runtime.tools import extract_tools
m = types.ModuleType("generated_app"); sys.modules["generated_app"] = m
exec(compile(open(sys.argv[2]).read(), "app.py", "exec"), m.__dict__)
print(len(extract_tools(m.app.openapi())))
"""


def seeded_db(tmp: Path) -> Path:
    from agentworld.synth.stages.schema import schema_sql
    from agentworld.synth.stages.seed import seed_sql

    db = tmp / "env.db"
    conn = sqlite3.connect(db)
    conn.executescript(schema_sql(TODO_TABLES) + seed_sql(TODO_SEED))
    conn.close()
    return db


def bench_sandbox(repeats: int) -> dict[str, float]:
    from agentworld.synth.stages.sandbox import run_job

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        db = seeded_db(tmp)
        app = tmp / "app.py"
        app.write_text(TODO_APP)
        asyncio.run(run_job("probe_app", TODO_APP, str(db), timeout_s=120))  # start the zygote once
        fork_ms, fresh_ms = [], []
        env = {**os.environ, "PYTHONPATH": str(ROOT / "services")}
        for _ in range(repeats):
            t = time.perf_counter()
            tools = asyncio.run(run_job("probe_app", TODO_APP, str(db), timeout_s=120))
            fork_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", FRESH, str(db), str(app)], env=env, check=True,
                                 capture_output=True, text=True).stdout
            fresh_ms.append((time.perf_counter() - t) * 1000)
            assert int(out) == len(tools["tools"]) == 7
    f, b = statistics.median(fork_ms), statistics.median(fresh_ms)
    return {"probe_zygote_ms_median": round(f, 1), "probe_fresh_interpreter_ms_median": round(b, 1),
            "probe_speedup": round(b / f, 2)}


def bench_cache() -> dict[str, float]:
    from agentworld.synth.pipeline import run_llm_pipeline

    answers = {**library_answers(), **todo_answers()}
    answers[("scenarios", None, None)] = [scenarios_answer(("library_lending_1", LIBRARY_DESCRIPTION),
                                                           ("team_todos", TODO_DESCRIPTION))]
    os.environ.setdefault("OPENAI_API_KEY", "bench")
    stages = ["scenarios", "tasks", "schema", "seed", "spec", "code"]
    with FakeLLMServer(ScriptedModel(answers)) as server, tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        common = {"seed_path": SEED_PATH, "show_progress": False, "print_report": False, "stages": stages,
                  "cache_dir": tmp / "cache"}
        t = time.perf_counter()
        run_llm_pipeline(f"openai:gpt-4o@{server.openai_url}", 2, tmp / "cold", **common)
        cold = time.perf_counter() - t
        sent = len(server.requests)
        t = time.perf_counter()
        report = run_llm_pipeline(f"openai:gpt-4o@{server.openai_url}", 2, tmp / "warm", **common)
        warm = time.perf_counter() - t
        return {"pipeline_to_code_cold_s": round(cold, 2), "pipeline_to_code_cached_s": round(warm, 2),
                "requests_cold": sent, "requests_cached_rerun": len(server.requests) - sent,
                "cache_hits_rerun": report.total.cache_hits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps({**bench_sandbox(args.repeats), **bench_cache()}))


if __name__ == "__main__":
    main()
