"""Killing a backend mid-episode: only its sessions fail (UNAVAILABLE naming them); the rest keep working."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from agentworld.client import EnvClient, UnavailableError

from .conftest import ENV, start_pool_gateway


def test_killed_backends_fail_only_their_sessions(gw_bundle_dir: Path) -> None:
    running, source = start_pool_gateway(gw_bundle_dir, replicas=3, respawn_backoff_s=(600.0,))  # no respawn here
    try:
        registry = running.gateway.registry
        first, second, third = source.pool.members
        with EnvClient(running.address) as client:
            sessions = [client.create_session(ENV, "task_1") for _ in range(9)]
            for s in sessions:  # mid-episode: the first step is done everywhere
                assert not s.call_tool("list_my_loans", {"status": "active"}).is_error
            home = {s.session_id: registry.route(s.session_id).address for s in sessions}
            doomed = [s for s in sessions if home[s.session_id] == first.address]
            assert len(doomed) == 3

            # 1. SIGKILL; the next call on one of its sessions finds out (then a health check confirms).
            os.kill(first.pid, signal.SIGKILL)
            for s in doomed:
                with pytest.raises(UnavailableError) as info:
                    s.call_tool("renew_loan", {"loan_id": 1})
                assert s.session_id in info.value.message and "lost" in info.value.message
            survivors = [s for s in sessions if s not in doomed]
            for s in survivors:  # the other backends' episodes finish normally
                assert not s.call_tool("renew_loan", {"loan_id": 1}).is_error
                assert s.verify().outcome == "complete"

            # 2. A backend that dies with no call in flight leaves placement on its own (process watch/health).
            os.kill(second.pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while second.address in registry.backends:
                assert time.monotonic() < deadline, "dead backend still placed"
                time.sleep(0.1)
            on_second = [s for s in survivors if home[s.session_id] == second.address]
            with pytest.raises(UnavailableError, match=on_second[0].session_id):
                on_second[0].state_hash()

            fresh = [client.create_session(ENV) for _ in range(3)]  # new sessions go to the live backend
            assert {registry.route(s.session_id).address for s in fresh} == {third.address}
            assert client.get_stats().max_sessions == 4096  # one backend left
            for s in sessions + fresh:
                s.close()  # closing a lost session is not an error
    finally:
        running.stop()
    assert all(r.process.returncode is not None for r in source.pool.members)
