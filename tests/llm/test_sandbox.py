"""The sandbox that runs generated code for the pipeline: no credentials, timeouts, limits, crashes contained."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from agentworld.synth.stages.sandbox import ChildJobError, run_job


def probe(code: str, tmp_path: Path, **kw):
    return asyncio.run(run_job("probe_app", code, str(tmp_path / "db.sqlite"), **kw))


def test_generated_code_sees_no_api_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    assert os.environ["OPENAI_API_KEY"] == "sk-secret"
    code = "import os\nraise SystemExit('env=' + repr(sorted(k for k in os.environ if 'KEY' in k or 'TOKEN' in k)))"
    with pytest.raises(ChildJobError, match=r"SystemExit: env=\[\]"):
        probe(code, tmp_path, timeout_s=60)


def test_hang_is_killed_at_the_timeout(tmp_path: Path) -> None:
    with pytest.raises(ChildJobError, match="timed out after 1"):
        probe("import time\ntime.sleep(60)\n", tmp_path, timeout_s=1)
    assert probe(_tiny_app(), tmp_path, timeout_s=60)["tools"][0]["name"] == "ping"  # the pool still works after


def test_cpu_limit_kills_a_busy_loop(tmp_path: Path) -> None:
    with pytest.raises(ChildJobError, match="died"):
        probe("while True:\n    pass\n", tmp_path, timeout_s=30, cpu_s=1)


def test_tools_are_listed_as_envd_sees_them(tmp_path: Path) -> None:
    probed = probe(_tiny_app(), tmp_path, timeout_s=60)
    (tool,) = probed["tools"]
    assert tool["input_schema"]["properties"].keys() == {"who", "loud"}
    assert tool["input_schema"]["required"] == ["who"]
    assert probed["tables"] == 1  # the app's own create_all added `extra`, as envd would count it


def _tiny_app() -> str:
    return (
        "import os\nfrom fastapi import FastAPI\nfrom pydantic import BaseModel\n"
        "from sqlalchemy import Column, Integer, create_engine\n"
        "from sqlalchemy.orm import declarative_base\n"
        "engine = create_engine(os.environ['DATABASE_PATH'])\n"
        "Base = declarative_base()\n"
        "class Extra(Base):\n    __tablename__ = 'extra'\n    id = Column(Integer, primary_key=True)\n"
        "Base.metadata.create_all(engine)\n"
        "app = FastAPI()\n"
        "class Body(BaseModel):\n    loud: bool = False\n"
        "@app.post('/ping/{who}', operation_id='ping', summary='Ping')\n"
        "async def ping(who: str, body: Body):\n    return {'who': who}\n"
    )
