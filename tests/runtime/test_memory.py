"""Memory is budgeted in bytes, nothing is evicted silently, Fork is all or nothing, dead clients give capacity back,
and big copies never stall the edge. Real envd over gRPC on loopback."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from agentworld.bundle import load_bundle
from agentworld.client import EnvClient, NotFoundError, ResourceExhaustedError
from agentworld.runtime import EnvRuntime, RuntimeConfig
from agentworld.transport.grpc_server import serve_in_thread
from tests.waiting import holds_for, wait_until

ENV = "library_lending_1"
DB_BYTES = 122_880  # mini_library's database


def serve(mini_library_bundle_dir, **config):
    runtime = EnvRuntime([load_bundle(mini_library_bundle_dir)], RuntimeConfig(idle_ttl_s=0, **config))
    return serve_in_thread(runtime), runtime


def dirty(session, i: int) -> None:
    session.call_tool("update_my_profile", {"phone": f"555-{i:04d}"})


def test_snapshots_past_the_byte_budget_fail_and_evict_nothing(mini_library_bundle_dir):
    server, _ = serve(mini_library_bundle_dir, memory_budget_bytes=12 * DB_BYTES)
    with server, EnvClient(server.address) as alice, EnvClient(server.address) as bob:
        mine = alice.create_session(ENV)
        dirty(mine, 1)
        kept = mine.snapshot()  # alice's snapshot, taken before bob fills the budget
        theirs = bob.create_session(ENV)
        taken = 0
        with pytest.raises(ResourceExhaustedError, match=r"memory budget of 1\.4 MiB.*--memory-budget"):
            for i in range(100):
                dirty(theirs, i + 2)
                theirs.snapshot()
                taken += 1
        assert 0 < taken < 100
        assert mine.restore(kept) == kept.state_hash  # never evicted to make room
        stats = alice.get_stats()
        assert stats.memory_budget_bytes == 12 * DB_BYTES and stats.memory_used_bytes <= stats.memory_budget_bytes


def test_a_fork_that_does_not_fit_creates_no_session(mini_library_bundle_dir):
    server, _ = serve(mini_library_bundle_dir, memory_budget_bytes=20 * DB_BYTES, max_sessions=30)
    with server, EnvClient(server.address) as c:
        base = c.create_session(ENV)
        dirty(base, 1)
        before = c.get_stats().active_sessions
        with pytest.raises(ResourceExhaustedError, match="session limit of 30"):
            base.fork(40)
        with pytest.raises(ResourceExhaustedError, match="memory budget.*Fork of 29"):
            base.fork(29)
        assert c.get_stats().active_sessions == before  # all or nothing: no orphans
        children = base.fork(8)
        assert len({s.session_id for s in children}) == 8 and c.get_stats().active_sessions == before + 8


def test_a_snapshot_lives_as_long_as_its_session_tree_or_its_ttl(mini_library_bundle_dir):
    server, runtime = serve(mini_library_bundle_dir)
    with server, EnvClient(server.address) as c:
        parent = c.create_session(ENV)
        dirty(parent, 1)
        (child,) = parent.fork(1)
        tree_snapshot = child.snapshot()
        ttl_snapshot = child.snapshot(ttl_s=1)
        parent.close()
        other = c.create_session(ENV)
        assert other.restore(tree_snapshot) == tree_snapshot.state_hash  # the child still holds the tree
        child.close()
        with pytest.raises(NotFoundError, match="released when the last session of the tree"):
            other.restore(tree_snapshot.snapshot_id)
        assert other.restore(ttl_snapshot.snapshot_id) == ttl_snapshot.state_hash  # its TTL outlives the tree
        wait_until(lambda: _expired(other, ttl_snapshot.snapshot_id), "the TTL snapshot to expire", timeout_s=30)
        with pytest.raises(NotFoundError, match="expired"):
            other.restore(ttl_snapshot.snapshot_id)
        wait_until(lambda: c.get_stats().snapshots == 0, "no snapshot left", timeout_s=30)


def _expired(session, snapshot_id: str) -> bool:
    try:
        session.restore(snapshot_id)
    except NotFoundError:
        return True
    return False


CLIENT = """
import sys
from agentworld.client import EnvClient
client = EnvClient(sys.argv[1])
sessions = [client.create_session("library_lending_1") for _ in range(int(sys.argv[2]))]
print("ready", flush=True)
sys.stdin.read()
"""


def test_a_dead_clients_sessions_are_reaped_after_its_lease(mini_library_bundle_dir):
    server, _ = serve(mini_library_bundle_dir, lease_ttl_s=1.0, max_sessions=64)
    with server, EnvClient(server.address) as observer:
        proc = subprocess.Popen([sys.executable, "-c", CLIENT, server.address, "40"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        # alive, its keepalive renews the lease: its sessions outlive several lease TTLs
        holds_for(lambda: observer.get_stats().active_sessions == 40, "the live client's 40 sessions", window_s=3.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        wait_until(lambda: observer.get_stats().active_sessions == 0, "the dead client's sessions to be reaped",
                   timeout_s=30)
        assert observer.get_stats().sessions_expired == 40


def test_big_copies_and_hashes_do_not_stall_the_edge(mini_library_bundle_dir, tmp_path):
    """Restoring a big image and hashing a big database ran on the event loop: every RPC waited behind them."""
    import sqlite3

    server, _ = serve(mini_library_bundle_dir)
    with server, EnvClient(server.address, timeout=300) as c, EnvClient(server.address) as other, \
            c.create_session(ENV) as session:
        big = tmp_path / "big.db"
        big.write_bytes(session.snapshot(export=True).data)
        conn = sqlite3.connect(big)
        conn.executemany("INSERT INTO members (username, email, full_name, phone) VALUES (?, ?, ?, '555')",
                         [(f"user{i}", f"u{i}@example.com", "x" * 200) for i in range(120_000)])
        conn.commit()
        conn.close()
        data = big.read_bytes()
        assert len(data) > 30 << 20
        for what in ("restore", "hash"):
            if what == "hash":
                session.call_tool("update_my_profile", {"phone": "555-0000"})  # a changed database: rehashed
            big_operation = (lambda: session.restore(data)) if what == "restore" else session.state_hash
            done = threading.Event()
            worker = threading.Thread(target=lambda op=big_operation, done=done: (op(), done.set()))
            started = time.monotonic()
            worker.start()
            answers: list[float] = []
            while not done.is_set():  # another client's calls, on a channel of its own
                other.get_stats()
                answers.append(time.monotonic())
            worker.join()
            ended = time.monotonic()
            # Uploading the request takes the first part of the time; the server's own work is the rest, so a
            # stalled event loop answers nothing in the second half.
            late = [t for t in answers if t > started + (ended - started) / 2 and t < ended]
            assert len(late) >= 3, f"the edge stopped answering while the server ran the big {what}"
