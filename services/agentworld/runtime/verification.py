"""Verifications wait their turn fairly: a fixed number run at once, owners take turns, the queue is bounded.

An owner is a client lease (or, without one, a session tree). When a sandbox frees up, the waiting owner with the
fewest verifications running goes next (ties in turn), so a client whose verifiers are slow (each runs up to the
sandbox's wall limit) gets its share of the sandboxes and no more: everyone else's next verification starts as
soon as any sandbox frees, ahead of the slow client's backlog.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agentworld.runtime.errors import ResourceExhausted


class FairQueue:
    def __init__(self, concurrency: int, limit: int) -> None:
        self.concurrency = max(1, concurrency)
        self.limit = limit
        self.running = 0
        self.waiting = 0
        self._running_by: dict[str, int] = {}
        self._queues: OrderedDict[str, deque[asyncio.Future]] = OrderedDict()
        self._threads = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="envd-verify")

    async def run(self, owner: str, fn: Callable[[], Any]) -> Any:
        """Run blocking `fn` in a verification thread when this owner's turn comes."""
        if self.running >= self.concurrency or self.waiting:
            if self.waiting >= self.limit:
                raise ResourceExhausted(f"{self.waiting} verifications are already waiting (the limit is {self.limit});"
                                        " retry later or run envd with more --verifier-workers")
            turn = asyncio.get_running_loop().create_future()
            self._queues.setdefault(owner, deque()).append(turn)
            self.waiting += 1
            try:
                await turn
            except BaseException:
                if turn.done() and not turn.cancelled():  # our turn came, but we are leaving: pass it on
                    self._finished(owner)
                else:
                    self._discard(owner, turn)
                raise
        else:
            self._started(owner)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._threads, fn)
        finally:
            self._finished(owner)

    def _started(self, owner: str) -> None:
        self.running += 1
        self._running_by[owner] = self._running_by.get(owner, 0) + 1

    def _finished(self, owner: str) -> None:
        self.running -= 1
        left = self._running_by.get(owner, 1) - 1
        if left:
            self._running_by[owner] = left
        else:
            self._running_by.pop(owner, None)
        self._next()

    def _discard(self, owner: str, turn: asyncio.Future) -> None:
        queue = self._queues.get(owner)
        if queue is not None and turn in queue:
            queue.remove(turn)
            self.waiting -= 1
            if not queue:
                del self._queues[owner]

    def _next(self) -> None:
        """Start the oldest verification of the waiting owner with the fewest running (ties: in turn)."""
        while self.running < self.concurrency and self._queues:
            owner = min(self._queues, key=lambda o: self._running_by.get(o, 0))  # min keeps the first of ties
            self._queues.move_to_end(owner)
            queue = self._queues[owner]
            turn = queue.popleft()
            self.waiting -= 1
            if not queue:
                del self._queues[owner]
            if not turn.done():
                self._started(owner)
                turn.set_result(None)

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
