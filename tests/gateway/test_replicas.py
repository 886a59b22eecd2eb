"""Gateway replicas with no shared state: any replica routes any session, a restarted replica has lost nothing, and a
tool call resent after its gateway died mid-call runs once. envd and the gateways are real processes, SIGKILLed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentworld.bundle import Bundle, load_bundle
from agentworld.client import AsyncEnvClient, EnvClient, NotFoundError, UnavailableError
from agentworld.gateway import Gateway, StaticSource
from agentworld.gateway.server import serve_in_thread as gateway_in_thread
from agentworld.rollout import EpisodeConfig, make_policy, plan_episodes, run_rollouts
from agentworld.runtime import EnvRuntime, RuntimeConfig
from agentworld.transport.grpc_server import serve_in_thread as envd_in_thread
from tests.runtime.hostile_env import hostile_bundle
from tests.waiting import wait_until

from . import processes
from .conftest import ENV

pytestmark = pytest.mark.timeout(600)
PATIENT = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8)  # resends spanning a gateway restart on a busy machine


@pytest.fixture
def two_envds(gw_bundle_dir: Path, tmp_path: Path) -> Iterator[list[processes.Service]]:
    envds = [processes.envd(gw_bundle_dir, tmp_path, f"envd-{i}").start() for i in range(2)]
    try:
        yield envds
    finally:
        for e in envds:
            e.stop()


def test_any_gateway_replica_routes_any_session(two_envds: list[processes.Service], tmp_path: Path) -> None:
    backends = [e.address for e in two_envds]
    a, b = (processes.gateway(backends, tmp_path, name).start() for name in ("gw-a", "gw-b"))
    try:
        with EnvClient(a.address, retry_backoff=PATIENT) as via_a, EnvClient(b.address) as via_b:
            sessions = [via_a.create_session(ENV, "task_1") for _ in range(4)]
            assert {s.session_id.rpartition("@")[2] for s in sessions} == {"envd-0", "envd-1"}
            for s in sessions:  # created through A, used through B
                same = via_b.session(s.session_id)
                assert not same.call_tool("renew_loan", {"loan_id": 1}).is_error
            forks = sessions[0].fork(2)  # children carry their parent's backend
            assert {f.session_id.rpartition("@")[2] for f in forks} == {sessions[0].session_id.rpartition("@")[2]}
            assert via_b.session(forks[1].session_id).state_hash() == sessions[0].state_hash()

            a.kill()  # a crash: whatever A knew is gone
            for s in sessions:  # B never knew these sessions were created; it routes them all the same
                assert via_b.session(s.session_id).verify().outcome == "complete"
            a.start()
            for s in sessions:  # the restarted A still routes every session
                assert s.verify().outcome == "complete"
                s.close()
    finally:
        a.stop()
        b.stop()


def test_forged_stale_and_foreign_ids_name_the_backend(
    two_envds: list[processes.Service], gw_bundle_dir: Path, tmp_path: Path
) -> None:
    gw = processes.gateway([e.address for e in two_envds], tmp_path, "gw").start()
    try:
        with EnvClient(gw.address, retry_backoff=()) as client:
            with pytest.raises(NotFoundError, match="session ids look like"):
                client.session("made-up").state_hash()
            with pytest.raises(UnavailableError, match="backend 'nowhere'"):
                client.session("s-0123456789abcdef01234567@nowhere").state_hash()
            old = client.create_session(ENV)
            node = old.session_id.rpartition("@")[2]
            guessed = old.session_id[:10] + "0123456789abcdef" + old.session_id[26:]  # this boot, no such session
            with pytest.raises(NotFoundError, match=f"unknown session .* on backend {node}"):
                client.session(guessed).state_hash()
            envd = next(e for e in two_envds if e.args[e.args.index("--node-id") + 1] == node)
            envd.kill()
            with pytest.raises(UnavailableError, match=f"{old.session_id} was lost: backend"):
                old.state_hash()  # the gateway saw its backend go
            envd.start()
            wait_until(lambda: client.get_stats().backends == 2, "the restarted backend to rejoin")
            with pytest.raises(NotFoundError, match=f"created before backend {node} restarted"):
                old.state_hash()
    finally:
        gw.stop()


def test_a_call_resent_after_its_gateway_died_mid_call_runs_once(tmp_path: Path) -> None:
    runtime = EnvRuntime([load_bundle(hostile_bundle(tmp_path / "bundles"))], RuntimeConfig(node_id="envd-h"))
    envd = envd_in_thread(runtime)
    gw = processes.gateway([envd.address], tmp_path, "gw").start()
    try:
        with EnvClient(gw.address, retry_backoff=PATIENT) as client:
            session = client.create_session("hostile")
            outcome: dict[str, object] = {}

            def call() -> None:
                try:
                    outcome["result"] = session.call_tool("slow_sync_write", {"seconds": 1.5, "label": "once"},
                                                          timeout_s=60)
                except Exception as exc:  # noqa: BLE001 - reported below
                    outcome["error"] = exc

            caller = threading.Thread(target=call)
            caller.start()
            wait_until(lambda: runtime.reg.sessions[session.session_id].lock.locked(), "the call to be running")
            gw.kill()  # mid-call: the reply is lost with the gateway
            gw.start()
            caller.join(timeout=120)
            assert "error" not in outcome, outcome
            assert not outcome["result"].is_error  # type: ignore[attr-defined]
            assert session.call_tool("list_marks").json() == ["seed", "once"]  # one write, not two
            assert runtime.stats().tool_calls == 2  # the resent call did not run again; list_marks is the other
    finally:
        gw.stop()
        envd.stop()


def test_a_call_on_a_backend_removed_mid_call_says_the_session_was_lost(tmp_path: Path) -> None:
    # Before: the router's connection to the removed backend closed under the call, which the client got as
    # CANCELLED "the client connection is closing" (seen with a killed Docker container).
    runtime = EnvRuntime([load_bundle(hostile_bundle(tmp_path / "bundles"))], RuntimeConfig(node_id="envd-h"))
    envd = envd_in_thread(runtime)
    gateway = Gateway(health_interval_s=60)  # only the removal below takes the backend away
    running = gateway_in_thread(gateway, [StaticSource([envd.address])], router="on")
    try:
        with EnvClient(running.address, retry_backoff=()) as client:
            session = client.create_session("hostile")
            outcome: dict[str, object] = {}

            def call() -> None:
                try:
                    session.call_tool("slow_sync_write", {"seconds": 3, "label": "x"}, timeout_s=60)
                except Exception as exc:  # noqa: BLE001 - checked below
                    outcome["error"] = exc

            caller = threading.Thread(target=call)
            caller.start()
            wait_until(lambda: runtime.reg.sessions[session.session_id].lock.locked(), "the call to be running")
            running.call(lambda: gateway.remove_backend(envd.address, "removed by the test"))
            caller.join(timeout=120)
            error = outcome.get("error")
            assert isinstance(error, UnavailableError) and "is gone: removed by the test" in str(error), error
    finally:
        running.stop()
        envd.stop()


async def _episodes(address: str, bundle: Bundle, n: int, halfway: threading.Event) -> list:
    async with AsyncEnvClient(address, timeout=120.0, retry_backoff=PATIENT) as client:
        envs = await client.list_envs()
        specs = plan_episodes(envs, {bundle.env_id: bundle}, repeats=-(-n // len(bundle.tasks)), need_solutions=True)
        done = 0

        def count(_trajectory: object) -> None:
            nonlocal done
            done += 1
            if done >= n // 2:
                halfway.set()

        # 1,024 episodes at once on 2 cores queue for workers far past envd's default 10 s call timeout: this test
        # is about restarts, not load, so calls get the client's whole deadline.
        return await run_rollouts(client, make_policy("reference"), specs[:n], EpisodeConfig(tool_timeout_s=110),
                                  concurrency=n, on_done=count)


def test_1024_episodes_through_two_replicas_one_restarted_midway(
    two_envds: list[processes.Service], gw_bundle: Bundle, tmp_path: Path
) -> None:
    backends = [e.address for e in two_envds]
    gateways = [processes.gateway(backends, tmp_path, f"gw-{i}").start() for i in range(2)]
    halfway = threading.Event()

    def restart_one() -> None:
        halfway.wait()
        gateways[0].kill()
        gateways[0].start(wait_serving=False)

    restarter = threading.Thread(target=restart_one, daemon=True)
    restarter.start()
    try:
        trajectories = asyncio.run(_episodes(",".join(g.address for g in gateways), gw_bundle, 1024, halfway))
        restarter.join(timeout=60)
        assert halfway.is_set() and not restarter.is_alive()
        errors = [t.error for t in trajectories if t.termination == "error"]
        assert errors == [] and len(trajectories) == 1024
        assert {t.reward for t in trajectories} == {1.0}
    finally:
        for g in gateways:
            g.stop()
