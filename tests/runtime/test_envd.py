"""envd over real gRPC on loopback: isolation, state operations, verification, bad input and misbehaving tools."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from agentworld.bundle import load_bundle
from agentworld.client import (
    AsyncEnvClient,
    EnvClient,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
)
from agentworld.runtime import EnvRuntime, RuntimeConfig
from agentworld.transport.grpc_server import serve_in_thread
from agentworld.v1 import env_pb2, env_pb2_grpc
from tests.runtime.toy_env import toy_bundle
from tests.waiting import wait_until

ENV = "library_lending_1"


@pytest.fixture(scope="module")
def client(envd_address):
    with EnvClient(envd_address) as c:
        yield c


@pytest.fixture(scope="module")
def mini(mini_library_bundle_dir):
    return load_bundle(mini_library_bundle_dir)


@pytest.fixture(scope="module")
def toy_server(tmp_path_factory):
    bundle = load_bundle(toy_bundle(tmp_path_factory.mktemp("toy")))
    runtime = EnvRuntime([bundle], RuntimeConfig(call_timeout_s=1.0, max_sessions=64, idle_ttl_s=0))
    with serve_in_thread(runtime) as server:
        yield server


@pytest.fixture(scope="module")
def toy(toy_server):
    with EnvClient(toy_server.address) as c:
        yield c


def notes(session) -> list[dict]:
    return session.call_tool("list_notes").json()


def test_list_envs_and_tools(client):
    (env,) = client.list_envs()
    assert env.env_id == ENV and env.tool_count == 21 and env.table_count == 8
    assert [t.task_id for t in env.tasks] == [f"task_{i}" for i in range(10)]
    with client.create_session(ENV) as session:
        tools = {t["name"]: t for t in session.tools}
        assert len(tools) == 21
        pay = tools["pay_fine"]["input_schema"]
        # path parameter and body fields merged into one object schema, as AWM's MCP view shows them
        assert set(pay["properties"]) == {"fine_id", "payment_method"}
        assert set(pay["required"]) == {"fine_id", "payment_method"}


def test_sessions_are_isolated(client):
    with client.create_session(ENV) as a, client.create_session(ENV) as b:
        assert a.state_hash() == b.state_hash()
        result = a.call_tool("update_my_profile", {"phone": "555-9999"})
        assert not result.is_error and result.json()["phone"] == "555-9999"
        assert a.state_hash() != b.state_hash()
        assert b.call_tool("get_my_profile").json()["phone"] == "555-0101"


def test_reset_returns_exactly_the_initial_hash(client):
    with client.create_session(ENV) as session:
        initial = session.state_hash()
        session.call_tool("add_review", {"book_id": 5, "rating": 4, "review_text": "fine"})
        assert session.state_hash() != initial
        assert session.reset() == initial
        assert session.state_hash() == initial
        assert all(r["book_title"] != "Educated" for r in session.call_tool("list_my_reviews").json())


def test_snapshot_restore_and_fork_reproduce_hashes(client):
    with client.create_session(ENV) as session:
        session.call_tool("renew_loan", {"loan_id": 1})
        snap = session.snapshot(export=True)
        assert snap.state_hash == session.state_hash() and snap.data.startswith(b"SQLite format 3")
        session.call_tool("return_loan", {"loan_id": 2})
        changed = session.state_hash()
        assert changed != snap.state_hash
        assert session.restore(snap) == snap.state_hash == session.state_hash()

        children = session.fork(3)
        assert len({c.session_id for c in children}) == 3
        assert {c.state_hash() for c in children} == {snap.state_hash}
        children[0].call_tool("return_loan", {"loan_id": 2})
        assert children[0].state_hash() not in (snap.state_hash, "")  # forks are independent copies
        assert children[1].state_hash() == snap.state_hash
        for child in children:
            child.close()

        with client.create_session(ENV) as other:  # exported bytes restore into any session of the env
            assert other.restore(snap.data) == snap.state_hash
            assert other.state_hash() == snap.state_hash


def test_every_mini_library_task_verifies(client, mini):
    for task in mini.tasks:
        with client.create_session(ENV, task.id) as session:
            untouched = session.verify()
            for call in task.solution:
                assert not session.call_tool(call.tool, call.arguments).is_error
            verdict = session.verify(final_answer=task.expected_answer)
        assert verdict.outcome == "complete" and verdict.reward == 1.0, (task.id, verdict)
        assert untouched.outcome == "others" and untouched.reward == 0.0, (task.id, untouched)


def test_wrong_solution_is_not_complete(client):
    with client.create_session(ENV, "task_1") as session:  # renew 'A Wizard of Earthsea' (loan 1)
        session.call_tool("renew_loan", {"loan_id": 2})  # the right action on the wrong loan
        assert session.verify().outcome == "others"
    with client.create_session(ENV, "task_9") as session:
        assert session.verify(final_answer="You owe $3.00").outcome == "others"


def test_forked_group_verifies_against_the_fork_point(client):
    with client.create_session(ENV, "task_7") as base:
        group = base.fork(2)
        group[0].call_tool("add_review", {"book_id": 5, "rating": 5,
                                          "review_text": "A gripping, unforgettable memoir about the power of learning."})
        assert group[0].verify().outcome == "complete"
        assert group[1].verify().outcome == "others"
        for s in group:
            s.close()


def test_unknown_env_task_tool_and_session(client):
    with pytest.raises(NotFoundError, match="unknown environment 'nope'.*library_lending_1"):
        client.create_session("nope")
    with pytest.raises(NotFoundError, match="no task 'task_99'"):
        client.create_session(ENV, "task_99")
    with client.create_session(ENV) as session:
        with pytest.raises(NotFoundError, match="no tool 'fly'"):
            session.call_tool("fly", {})
        with pytest.raises(NotFoundError, match="unknown snapshot"):
            session.restore("snap-missing")
    with pytest.raises(NotFoundError, match="unknown session"):
        client.session("s-doesnotexist").call_tool("list_branches")


def test_closed_session_is_failed_precondition(client):
    session = client.create_session(ENV)
    session_id = session.session_id
    session.close()
    with pytest.raises(FailedPreconditionError, match="was closed"):
        client.session(session_id).call_tool("list_branches")


def test_bad_arguments_name_the_field(client):
    with client.create_session(ENV) as session:
        before = session.state_hash()
        with pytest.raises(InvalidArgumentError, match="field 'book_id'"):
            session.call_tool("get_book", {"book_id": "not-a-number"})
        with pytest.raises(InvalidArgumentError, match="field 'rating'"):
            session.call_tool("add_review", {"book_id": 5, "rating": 9})
        with pytest.raises(InvalidArgumentError, match="field 'payment_method'"):
            session.call_tool("pay_fine", {"fine_id": 1})
        with pytest.raises(InvalidArgumentError, match="no argument 'colour'"):
            session.call_tool("list_branches", {"colour": "red"})
        assert session.state_hash() == before


def test_malformed_and_oversized_payloads(envd_address, client):
    with client.create_session(ENV) as session, grpc.insecure_channel(envd_address) as channel:
        stub = env_pb2_grpc.EnvServiceStub(channel)
        for bad, message in (("{not json", "not valid JSON"), ("[1, 2]", "must be a JSON object")):
            with pytest.raises(grpc.RpcError) as err:
                stub.CallTool(env_pb2.CallToolRequest(session_id=session.session_id, tool_name="list_branches",
                                                      arguments_json=bad))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in err.value.details()
        huge = json.dumps({"query": "x" * (2 << 20)})
        with pytest.raises(grpc.RpcError) as err:
            stub.CallTool(env_pb2.CallToolRequest(session_id=session.session_id, tool_name="search_books",
                                                  arguments_json=huge))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "limit" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            stub.Restore(env_pb2.RestoreRequest(session_id=session.session_id, data=b"garbage" * 100))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert session.call_tool("list_branches").json()[0]["name"] == "Central Library"


def test_same_writes_from_the_same_state_give_the_same_hash(toy):
    with toy.create_session("toy_notes") as base:  # toy tools write no timestamps, so replay is exact
        a, b = base.fork(2)
        for child in (a, b):
            child.call_tool("add_note", {"title": "same", "stars": 1})
        assert a.state_hash() == b.state_hash() != base.state_hash()
        a.close()
        b.close()


def test_environment_errors_are_results_not_statuses(toy):
    with toy.create_session("toy_notes") as session:
        result = session.call_tool("get_note", {"note_id": 42})
        assert result.is_error and result.http_status == 404 and "note 42 not found" in result.content


def test_failing_tool_rolls_back_its_own_writes(toy):
    with toy.create_session("toy_notes") as session:
        session.call_tool("add_note", {"title": "kept", "stars": 2})
        before_hash, before = session.state_hash(), notes(session)
        crashed = session.call_tool("commit_then_crash")
        assert crashed.is_error and crashed.http_status == 500 and "disk on fire" in crashed.content
        refused = session.call_tool("write_then_refuse")
        assert refused.is_error and refused.http_status == 409
        assert notes(session) == before and session.state_hash() == before_hash
        assert [n["title"] for n in before] == ["groceries", "ideas", "kept"]


@pytest.mark.parametrize("tool", ["spin_forever", "sleep_forever"])
def test_runaway_tool_times_out_while_others_keep_working(toy, tool):
    with toy.create_session("toy_notes") as stuck, toy.create_session("toy_notes") as other:
        before = stuck.state_hash()
        served: list[float] = []
        done = threading.Event()

        def keep_calling():
            while not done.is_set():
                started = time.perf_counter()
                assert not other.call_tool("list_notes").is_error
                served.append(time.perf_counter() - started)

        worker = threading.Thread(target=keep_calling)
        worker.start()
        started = time.perf_counter()
        with pytest.raises(Exception) as err:
            stuck.call_tool(tool)
        elapsed = time.perf_counter() - started
        done.set()
        worker.join()
        assert getattr(err.value, "code", None) == grpc.StatusCode.DEADLINE_EXCEEDED, err.value
        assert 0.9 < elapsed < 5, elapsed
        assert len(served) >= 5  # the other session was served throughout
        # the runaway call was stopped and rolled back: the stuck session works again, unchanged
        time.sleep(0.2)
        assert [n["title"] for n in notes(stuck)] == ["groceries", "ideas"]
        assert stuck.state_hash() == before


def test_verifiers_cannot_write_connect_or_hog_memory(toy):
    with toy.create_session("toy_notes") as session:
        before = session.state_hash()
        for task_id, hint in (("evil_write", "readonly|read-only|denied|write"), ("evil_socket", "socket|network|denied"),
                              ("evil_memory", "memory|MemoryError")):
            verdict = session.verify(task_id)
            assert verdict.outcome != "complete" and verdict.reward == 0.0, (task_id, verdict)
            assert any(w.lower() in json.dumps(verdict.details).lower() for w in hint.split("|")), (task_id, verdict)
        assert session.state_hash() == before and len(notes(session)) == 2
        assert session.verify("count", final_answer="There are 2 notes.").outcome == "complete"


def test_session_limit_is_resource_exhausted(tmp_path):
    bundle = load_bundle(toy_bundle(tmp_path))
    with serve_in_thread(EnvRuntime([bundle], RuntimeConfig(max_sessions=3, idle_ttl_s=0))) as server, \
            EnvClient(server.address) as c:
        sessions = [c.create_session("toy_notes") for _ in range(3)]
        with pytest.raises(ResourceExhaustedError, match="session limit of 3"):
            c.create_session("toy_notes")
        with pytest.raises(ResourceExhaustedError):
            sessions[0].fork(1)
        sessions[0].close()
        c.create_session("toy_notes")


def test_idle_sessions_without_a_lease_expire(tmp_path):
    bundle = load_bundle(toy_bundle(tmp_path))
    with serve_in_thread(EnvRuntime([bundle], RuntimeConfig(idle_ttl_s=0.3))) as server, \
            EnvClient(server.address, lease=False) as c:
        session = c.create_session("toy_notes")
        wait_until(lambda: c.get_stats().sessions_expired == 1, "the idle session to expire")
        with pytest.raises(FailedPreconditionError, match="idle"):
            session.call_tool("list_notes")


def test_health_and_reflection(envd_address):
    with grpc.insecure_channel(envd_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "agentworld.v1.EnvService"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        (response,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for s in response.list_services_response.service}
        assert {"agentworld.v1.EnvService", "grpc.health.v1.Health"} <= names


async def test_async_client_surface(envd_address):
    async with AsyncEnvClient(envd_address) as client:
        session = await client.create_session(ENV, "task_9")
        result = await session.call_tool("list_my_fines", {"status": "unpaid"})
        assert sum(f["amount"] for f in result.json()) == pytest.approx(6.75)
        verdict = await session.verify(final_answer="You currently owe $6.75 in unpaid fines.")
        assert verdict.outcome == "complete"
        await session.close()


def test_serve_cli_starts_and_answers(mini_library_bundle_dir: Path):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "agentworld", "serve", str(mini_library_bundle_dir), "--port", "0",
                             "--workers", "1", "--memory-budget", "10MiB", "--lease-ttl", "7"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line, logged = "", []
        for line in proc.stdout:  # the log (sandbox layers) comes first
            logged.append(line)
            if "envd listening" in line:
                break
        assert "envd listening on 127.0.0.1:" in line and "1 workers" in line, line
        assert any("sandbox layers: " in entry for entry in logged), logged
        address = line.split(" on ")[1].split(" ")[0]
        with EnvClient(address) as c, c.create_session(ENV) as s:
            assert len(s.tools) == 21
            s.call_tool("list_branches")
            stats = c.get_stats()
            assert stats.memory_budget_bytes == 10 << 20 and stats.workers == 1
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
