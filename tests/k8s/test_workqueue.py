"""The controller's work queue: deduplication, no concurrent processing of one key, delayed adds."""

from __future__ import annotations

import threading
import time

from agentworld_controller.workqueue import WorkQueue


def test_duplicate_adds_collapse_and_a_key_added_while_processing_comes_back() -> None:
    q = WorkQueue()
    for _ in range(5):
        q.add("a")
    q.add("b")
    assert len(q) == 2
    assert q.get(0.1) == "a"
    q.add("a")  # while "a" is being processed: not handed to another worker
    assert q.get(0.1) == "b"
    assert q.get(0.05) is None
    q.done("a")
    assert q.get(0.1) == "a"


def test_add_after_delays_and_shutdown_wakes_waiters() -> None:
    q = WorkQueue()
    t0 = time.monotonic()
    q.add_after("k", 0.2)
    assert q.get(1.0) == "k"
    assert time.monotonic() - t0 >= 0.19
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(q.get()))
    t.start()
    q.shutdown()
    t.join(2)
    assert got == [None]
