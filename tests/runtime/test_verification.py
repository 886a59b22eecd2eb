"""Slow verifiers cannot delay other clients' verifications or other RPCs beyond their fair share."""

from __future__ import annotations

import threading

import pytest

from agentworld.bundle import Bundle, EnvManifest, Task, write_bundle
from agentworld.client import EnvClient
from agentworld.runtime import EnvRuntime, RuntimeConfig
from agentworld.transport.grpc_server import serve_in_thread
from tests.runtime.hostile_env import APP, SCHEMA, SEED
from tests.waiting import wait_until

VERIFIERS = '''
import time

def verify_slow(initial_db_path, final_db_path, final_answer=None):
    time.sleep(60)  # stopped by the sandbox's wall limit
    return {"result": "complete"}

def verify_fast(initial_db_path, final_db_path, final_answer=None):
    return {"result": "complete"}
'''


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    manifest = EnvManifest(id="verifiers", title="Verifiers", provenance={"source": "test"})
    tasks = [Task(id=name, instruction="-", kind="mutation", verifier=f"verify_{name}") for name in ("slow", "fast")]
    bundle = Bundle(manifest=manifest, tasks=tasks, schema_sql=SCHEMA, seed_sql=SEED, app_py=APP,
                    verifiers_py=VERIFIERS)
    path = write_bundle(bundle, tmp_path_factory.mktemp("verifiers"))
    from agentworld.bundle import load_bundle

    runtime = EnvRuntime([load_bundle(path)], RuntimeConfig(verifier_workers=2, verifier_timeout_s=3.0))
    with serve_in_thread(runtime) as server:
        yield server, runtime


def test_a_slow_clients_backlog_does_not_hold_back_another_client(served):
    server, runtime = served
    with EnvClient(server.address, timeout=120) as slow_client, EnvClient(server.address) as other:
        slow = [slow_client.create_session("verifiers", "slow") for _ in range(4)]
        finished: list[str] = []
        threads = [threading.Thread(target=lambda s=s: finished.append(s.verify().outcome)) for s in slow]
        for t in threads:
            t.start()
        queue = runtime.verifications
        wait_until(lambda: queue.running == 2 and queue.waiting == 2, "2 slow verifications running, 2 waiting")
        with other.create_session("verifiers", "fast") as fast:
            assert fast.verify().outcome == "complete"
            assert len(finished) <= 2, "the other client waited for the slow client's whole backlog"
            slow[0].close()  # CloseSession does not wait for the session's verification
            assert len(finished) <= 2
            assert other.get_stats().active_sessions == 4
        for t in threads:
            t.join()
        assert finished == ["error"] * 4  # each stopped at the wall limit
