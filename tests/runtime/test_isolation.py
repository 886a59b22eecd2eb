"""envd v2: no environment's code or client can crash, stall, corrupt or read another session.

Real envd (gRPC on loopback), real worker processes in the sandbox, real SQLite files. Each test is one finding of
the hostile probe (issue 10): it failed on the in-process runtime and passes with environment code in workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from agentworld.bundle import load_bundle
from agentworld.client import AbortedError, DeadlineExceededError, EnvClient
from agentworld.runtime import EnvRuntime, RuntimeConfig
from agentworld.transport.grpc_server import serve_in_thread
from tests.runtime.hostile_env import hostile_bundle
from tests.runtime.toy_env import toy_bundle
from tests.waiting import holds_for, wait_until

SECRET_VAR = "AGENTWORLD_TEST_SECRET_TOKEN"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    os.environ[SECRET_VAR] = "hunter2"  # envd's environment: the sandbox must not inherit it
    root = tmp_path_factory.mktemp("hostile")
    bundles = [load_bundle(hostile_bundle(root)), load_bundle(toy_bundle(root, evil_verifiers=False))]
    runtime = EnvRuntime(bundles, RuntimeConfig(call_timeout_s=5.0, workers=2, idle_ttl_s=0))
    try:
        with serve_in_thread(runtime) as server:
            yield server, runtime
    finally:
        os.environ.pop(SECRET_VAR, None)


@pytest.fixture(scope="module")
def client(served):
    server, _ = served
    with EnvClient(server.address) as c:
        yield c


def marks(session) -> list[str]:
    return session.call_tool("list_marks").json()


# ------------------------------------------------------------------------------------------- deadlines
@pytest.mark.parametrize("tool", ["slow_sync_write", "slow_async_write"])
def test_a_write_after_the_deadline_is_never_committed(client, tool):
    """`def` routes ran on FastAPI's thread pool, which the abort never reached; `async def` ones blocked."""
    with client.create_session("hostile") as session:
        with pytest.raises(DeadlineExceededError, match="nothing it wrote was kept"):
            session.call_tool(tool, {"seconds": 1.0, "label": "late"}, timeout_s=0.2)
        holds_for(lambda: "late" not in marks(session), "no late write", window_s=1.5)
        assert marks(session) == ["seed"]
        session.call_tool("add_mark", {"label": "after"})
        assert marks(session) == ["seed", "after"]


def test_a_call_waiting_on_a_busy_session_never_runs(served, client):
    _, runtime = served
    with client.create_session("hostile") as session:
        first = threading.Thread(target=session.call_tool, args=("write_then_block", {"seconds": 1.0,
                                                                                     "label": "first"}))
        first.start()
        wait_until(lambda: runtime.reg.sessions[session.session_id].lock.locked(), "the first call to be running")
        with pytest.raises(DeadlineExceededError, match="busy with another call.*never ran"):
            session.call_tool("add_mark", {"label": "second"}, timeout_s=0.2)
        first.join()
        assert marks(session) == ["seed", "first"]
        holds_for(lambda: marks(session) == ["seed", "first"], "no write from the call that timed out waiting",
                  window_s=0.5)


def test_after_a_timed_out_call_the_session_keeps_working(client):
    """Stopped mid-SQL, 78 of 120 calls left the session failing later calls with INTERNAL ("interrupted", "cannot
    open savepoint - SQL statements in progress")."""
    failures = []
    with client.create_session("hostile") as session:
        kept = ["seed"]
        for i in range(60):
            try:
                session.call_tool("busy_sql", {"rows": 300}, timeout_s=(1 + i % 8) / 1000)
                kept += [f"busy{k}" for k in range(300)]  # fast enough: all of it, committed
            except DeadlineExceededError:
                pass  # none of it
            try:
                session.call_tool("add_mark", {"label": f"ok{i}"})
                kept.append(f"ok{i}")
            except grpc.RpcError as exc:  # pragma: no cover - the failure being tested for
                failures.append(exc)
        assert not failures
        assert marks(session) == kept


def test_tiny_deadlines_then_reset_and_restore_do_not_crash_envd(mini_library_bundle_dir: Path):
    """A 1-8 ms timeout left a SQLite statement active; the next Reset's deserialize then freed memory it used:
    SIGSEGV. Against `agentworld serve` in its own process, so a crash shows as a dead process."""
    proc = subprocess.Popen([sys.executable, "-m", "agentworld", "serve", str(mini_library_bundle_dir), "--port",
                             "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        address = _listening_address(proc)
        codes: dict[str, int] = {}
        with EnvClient(address) as c, c.create_session("library_lending_1") as session:
            snap = session.snapshot()
            for i in range(150):
                try:
                    session.call_tool("update_my_profile", {"phone": f"555-{i:04d}"}, timeout_s=(1 + i % 8) / 1000)
                    codes["OK"] = codes.get("OK", 0) + 1
                except DeadlineExceededError:
                    codes["DEADLINE_EXCEEDED"] = codes.get("DEADLINE_EXCEEDED", 0) + 1
                if i % 2:
                    session.reset()
                else:
                    session.restore(snap)
            assert proc.poll() is None, "envd died"
            assert set(codes) <= {"OK", "DEADLINE_EXCEEDED"} and codes.get("DEADLINE_EXCEEDED"), codes
            assert session.call_tool("get_my_profile").json()["phone"] == "555-0101"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _listening_address(proc: subprocess.Popen) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        if "envd listening on " in line:
            return line.split(" on ")[1].split(" ")[0]
    raise AssertionError(f"envd exited with {proc.wait()} before listening")


# --------------------------------------------------------------------------------------- runaway code
RUNAWAYS = {
    "blocking sleep": ("slow_async_write", {"seconds": 60, "label": "x"}),
    "pure-Python loop": ("spin", {}),
    "loop swallowing BaseException": ("spin_swallowing", {}),
    "catastrophic regex (C code holding the GIL)": ("catastrophic_regex", {}),
}


@pytest.mark.parametrize("kind", list(RUNAWAYS))
def test_runaway_calls_delay_only_their_own_sessions(client, kind):
    """Four runaway calls used to hold every call thread (or the GIL): everyone else's calls timed out."""
    tool, args = RUNAWAYS[kind]
    runaways = [client.create_session("hostile") for _ in range(4)]
    same_env, other_env = client.create_session("hostile"), client.create_session("toy_notes")
    outcomes: list[BaseException | None] = []

    def run(session) -> None:
        try:
            session.call_tool(tool, args, timeout_s=4.0)
            outcomes.append(None)
        except BaseException as exc:  # noqa: BLE001 - recorded and asserted on
            outcomes.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in runaways]
    for t in threads:
        t.start()
    served_while_running = {"same environment": 0, "another environment": 0}
    latencies: list[float] = []
    while served_while_running["same environment"] < 20 or served_while_running["another environment"] < 20:
        for label, session, name in (("same environment", same_env, "list_marks"),
                                     ("another environment", other_env, "list_notes")):
            started = time.perf_counter()
            assert not session.call_tool(name).is_error
            latencies.append((time.perf_counter() - started) * 1000)
            served_while_running[label] += 1
        assert len(outcomes) < 4 or served_while_running["same environment"] >= 20, \
            f"the runaway calls ended before the other sessions got 20 calls each: {served_while_running}"
    assert len(outcomes) < 4, "other sessions were served only after the runaway calls ended"
    for t in threads:
        t.join()
    assert all(isinstance(o, DeadlineExceededError) for o in outcomes), outcomes
    for session in runaways:  # each runaway session works again, at its last committed state
        assert marks(session) == ["seed"]
        session.close()
    same_env.close()
    other_env.close()
    print(f"{kind}: other sessions' call p50 {sorted(latencies)[len(latencies) // 2]:.1f} ms while runaways ran")


def test_os_exit_fails_only_that_call(client):
    with client.create_session("hostile") as session, client.create_session("hostile") as bystander:
        with pytest.raises(AbortedError, match="exited with status 3.*nothing the call wrote was kept"):
            session.call_tool("exit_process", {"code": 3})
        assert marks(session) == ["seed"]  # its "before exit" write was rolled back
        assert marks(bystander) == ["seed"]
        session.call_tool("add_mark", {"label": "still works"})
        assert marks(session) == ["seed", "still works"]


def test_a_huge_allocation_fails_the_call_and_keeps_nothing(client):
    with client.create_session("hostile") as session:
        result = session.call_tool("allocate", {"gib": 3})
        assert result.is_error and result.http_status == 500 and "MemoryError" in result.content
        assert marks(session) == ["seed"]


# ------------------------------------------------------------------------------------------- isolation
def test_a_hostile_route_reaches_no_other_session_host_file_network_or_process(served, client):
    _, runtime = served
    Path("/tmp/agentworld-hostile-was-here").unlink(missing_ok=True)
    with client.create_session("toy_notes", "count") as victim, client.create_session("hostile") as attacker:
        victim.call_tool("add_note", {"title": "victim-secret", "stars": 1})
        victim_file = runtime.reg.sessions[victim.session_id].file
        assert victim_file and Path(victim_file).is_file()
        report = attacker.call_tool("attack", {"target": victim_file}).json()
        denied = ("list_state_dirs", "open_target", "shadow", "passwd", "socket", "subprocess", "fork",
                  "parent_memory", "write_outside")
        for attempt in denied:
            assert report[attempt].startswith("denied"), (attempt, report[attempt])
        assert "victim-secret" not in report["other_sessions"], report["other_sessions"]
        assert report["kill_everyone"] in ("ok: 0", ) or report["kill_everyone"].startswith("denied"), report
        assert report["environ"] == "ok: []", report["environ"]
        assert not Path("/tmp/agentworld-hostile-was-here").exists()
        # whatever the route did to reward tables in its own process, envd's pays as configured
        verdict = victim.verify(final_answer="I have no idea")
        assert (verdict.outcome, verdict.reward) == ("others", 0.0), verdict
        assert [n["title"] for n in victim.call_tool("list_notes").json()] == ["groceries", "ideas", "victim-secret"]


def test_environment_code_runs_confined(served, client):
    server, runtime = served
    stats = client.get_stats()
    assert stats.workers >= 1 and stats.sandbox_layers == runtime.sandbox.layers["applied"]
    if os.geteuid() == 0:  # as root every layer is available (CI runs as root)
        expected = {"netns", "pidns", "mountns", "ipcns", "minimal_root", "uid_drop", "no_new_privs", "landlock",
                    "seccomp", "rlimits"}
        assert expected <= set(stats.sandbox_layers), stats.sandbox_layers
        with client.create_session("hostile") as session:
            who = session.call_tool("whoami").json()
            assert who["uid"] == 65534 and who["pid"] < 100, who  # an unprivileged uid, in a PID namespace


def test_one_envd_runs_calls_on_several_workers_at_once(client):
    sessions = [client.create_session("hostile") for _ in range(2)]
    pids: list[int] = []
    threads = [threading.Thread(target=lambda s=s: pids.append(s.call_tool("whoami", {"seconds": 0.5}).json()["pid"]))
               for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(pids)) == 2, pids  # two workers served the two sessions at the same time
    for s in sessions:
        s.close()


def test_path_parameters_reach_the_app_exactly_as_sent(client):
    with client.create_session("hostile") as session:
        for value in ("a b", "a/b", "50%", "%41", "é ü", "..", "a?b#c", "+"):
            echoed = session.call_tool("echo_path", {"value": value, "q": value}).json()
            assert echoed == {"value": value, "q": value}, (value, echoed)


def test_tool_results_are_not_json_reencoded(client):
    with client.create_session("hostile") as session:
        assert json.loads(session.call_tool("echo_path", {"value": "x"}).content) == {"value": "x", "q": ""}
