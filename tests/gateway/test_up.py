"""`agentworld up`: a local pool plus gateway from one command; Ctrl-C (or the parent dying) leaves no processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentworld.client import EnvClient
from tests.waiting import wait_until

from .conftest import ENV

AGENTWORLD = str(Path(sys.executable).parent / "agentworld")


def _children(pid: int) -> set[int]:
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        kids |= {int(k) for k in text}
    return kids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _envds(pid: int) -> set[int]:
    return {c for c in _children(pid) if " serve " in _cmdline(c)}


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pids: set[int], timeout_s: float = 15.0) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while (left := {p for p in pids if _alive(p)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.fixture
def up_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`agentworld up --replicas 2 --port 0` with no --envs: mini_library imported into a fresh cache."""
    env = {**os.environ, "AGENTWORLD_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [AGENTWORLD, "up", "--replicas", "2", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stdout is not None
    started = time.monotonic()
    line = proc.stdout.readline()
    match = re.search(r"gateway listening on (\S+)", line)
    if not match:
        proc.kill()
        raise AssertionError(f"up did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    print(f"agentworld up ready in {time.monotonic() - started:.1f}s")
    try:
        yield proc, match.group(1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_up_serves_then_ctrl_c_cleans_up(up_process: tuple[subprocess.Popen[str], str], tmp_path: Path) -> None:
    proc, address = up_process
    assert list((tmp_path / "cache" / "up-envs").glob("*/library_lending_1/env.json"))
    with EnvClient(address) as client, client.create_session(ENV, "task_1") as session:
        assert [e.env_id for e in client.list_envs()] == [ENV]
        session.call_tool("renew_loan", {"loan_id": 1})
        assert session.verify().outcome == "complete"
    # up is ready at the first replica: wait for the second (the router, its data plane, is a child too)
    wait_until(lambda: len(_envds(proc.pid)) == 2, "both envd replicas")
    children = _children(proc.pid)
    assert any("agentworld-router" in _cmdline(c) for c in children)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 0
    assert not _wait_gone(children), "envd processes outlived `agentworld up`"


def test_killed_up_takes_its_children_along(up_process: tuple[subprocess.Popen[str], str]) -> None:
    proc, _ = up_process
    wait_until(lambda: len(_envds(proc.pid)) == 2, "both envd replicas")
    children = _children(proc.pid)
    proc.kill()  # no chance to clean up: the kernel's parent-death signal must do it
    proc.wait()
    assert not _wait_gone(children), "orphaned envd processes after SIGKILL of `agentworld up`"


def test_gateway_command_over_static_backends(envd_address: str) -> None:
    proc = subprocess.Popen(
        [AGENTWORLD, "gateway", "--backend", envd_address, "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        match = re.search(r"gateway listening on (\S+)", proc.stdout.readline())
        assert match, proc.stderr.read() if proc.stderr else ""
        with EnvClient(match.group(1)) as client, client.create_session(ENV) as session:
            assert session.call_tool("list_branches").json()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_rejects_bad_options(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from agentworld.cli import app

    runner = CliRunner(env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    result = runner.invoke(app, ["gateway", "--port", "0"])
    assert result.exit_code == 2 and "--backend" in result.output
    result = runner.invoke(app, ["up", "--backend", "kubernetes"])
    assert result.exit_code == 2 and "process or docker" in result.output
    result = runner.invoke(app, ["up", "--envs", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no such directory" in result.output
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["up", "--envs", str(tmp_path / "empty"), "--port", "0", "--replicas", "1"])
    assert result.exit_code == 2 and "error" in result.output
