"""Which worker runs a call, and what happens when it runs too long or dies.

`slots` workers run calls at once (one per core by default): that many calls make progress in parallel, and no
more, so each call's server-side time stays what it is alone. A call for an environment goes to an idle worker of
that environment (any one: sessions are not pinned to workers); with none idle and a slot free, a worker is forked
from the environment's zygote (milliseconds). Otherwise calls wait, first come first served.

A call still running after `long_call_s` is parked: its worker gives its slot to the next call, moves to SCHED_IDLE
on one CPU, and while other calls run (or ran within the last period), parked workers only run PARKED_QUANTUM_S out
of every PARKED_PERIOD_S (stopped in between; with nothing else to do they run freely). SCHED_IDLE alone still let
four spinning workers triple a victim's p99 on these machines; the duty cycle holds it near its unloaded value. So
a sleeping, looping or GIL-holding call slows only its own session, and a legitimately slow one still finishes.

At its deadline a call is cancelled (SIGUSR1, cooperative) and, if it has not answered within `cancel_grace_s`,
killed. A worker that dies is replaced in the background, so an environment keeps its warm workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field

from agentworld.runtime import wire
from agentworld.runtime.envcode.host import EnvZygote, Sandbox, SandboxProcess, WorkerLimits, describe_exit
from agentworld.runtime.errors import DeadlineExceeded, EnvError

log = logging.getLogger("agentworld.envd.workers")
_EXIT_REPORT_WAIT_S = 0.5  # after a worker's socket closes, how long to wait for its zygote's exit report
PARKED_PERIOD_S = 0.1
PARKED_QUANTUM_S = 0.01  # parked workers' share of the time while other calls run
ALL_CPUS = os.sched_getaffinity(0)
PARKED_CPUS = {max(ALL_CPUS)}  # parked workers share one CPU, whatever their number


class WorkerGone(EnvError):
    """The worker died during the call. `killed` when envd killed it (the deadline and its grace passed)."""

    def __init__(self, reason: str, killed: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.killed = killed


@dataclass(eq=False)
class Worker:
    env_key: str
    proc: SandboxProcess
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    reply: asyncio.Future | None = None  # the running call's answer: a frame, or None if the worker went away
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    state: str = "idle"  # idle | busy | parked | gone
    holds_slot: bool = False  # counted in WorkerPool.running (busy, not parked)
    opened: set[str] = field(default_factory=set)  # session files it holds connections to
    forget: list[str] = field(default_factory=list)  # files to close before its next call
    reader_task: asyncio.Task | None = None


class WorkerPool:
    def __init__(self, sandbox: Sandbox, limits: WorkerLimits, *, slots: int, max_workers: int, long_call_s: float,
                 cancel_grace_s: float) -> None:
        self.sandbox = sandbox
        self.limits = limits
        self.slots = max(1, slots)
        self.max_workers = max(self.slots, max_workers)
        self.long_call_s = long_call_s
        self.cancel_grace_s = cancel_grace_s
        self.idle: dict[str, list[Worker]] = {}
        self.workers: set[Worker] = set()
        self.warm: dict[str, int] = {}  # workers an environment keeps (its peak of concurrent calls, <= slots)
        self.running = 0  # calls holding a slot, plus spawns for them
        self._waiters: deque[tuple[str, asyncio.Future]] = deque()
        self._closed = False
        self._background: set[asyncio.Task] = set()
        self.parked: set[Worker] = set()
        self._governor: asyncio.Task | None = None
        self.last_active = 0.0  # when a non-parked call last started or ended

    # ------------------------------------------------------------------------------------------ calls
    async def call(self, env_key: str, header: dict, body: bytes, deadline: float) -> tuple[dict, bytes]:
        """Run one call; returns (reply header, reply body). Raises DeadlineExceeded if no worker could take it in
        time (it never ran), or WorkerGone if its worker died (or was killed at the deadline) mid-call."""
        worker = await self._acquire(env_key, deadline)
        try:
            reply = await self._run(worker, header, body, deadline)
            if reply[0].get("retire"):  # it exits by itself after answering
                self._retire(worker)
            return reply
        finally:
            self._release(worker)

    async def _run(self, worker: Worker, header: dict, body: bytes, deadline: float) -> tuple[dict, bytes]:
        loop = asyncio.get_running_loop()
        header = {**header, "forget": worker.forget}
        worker.forget = []
        worker.opened.add(header["db"])
        self.last_active = time.monotonic()
        park = loop.call_later(self.long_call_s, self._park, worker)
        worker.reply = loop.create_future()
        try:
            worker.writer.write(wire.encode(header, body))
            reply = await self._reply(worker, deadline - time.monotonic())
            if reply is not None:
                return reply
            self._unpark(worker)  # a stopped process cannot take the cancel
            worker.proc.signal(signal.SIGUSR1)  # the deadline: ask the call to stop, then insist
            reply = await self._reply(worker, self.cancel_grace_s)
            if reply is not None:
                return reply
            worker.proc.signal(signal.SIGKILL)
            await self._gone(worker)
            raise WorkerGone("the call ran past its deadline and was killed", killed=True)
        finally:
            park.cancel()

    async def _reply(self, worker: Worker, timeout: float) -> tuple[dict, bytes] | None:
        """The worker's answer; None on timeout; WorkerGone if it died first."""
        reply = worker.reply
        assert reply is not None
        if not reply.done():
            await asyncio.wait((reply,), timeout=max(0.0, timeout))  # unlike wait_for, leaves `reply` pending
            if not reply.done():
                return None
        frame = reply.result()
        if frame is None:
            await self._gone(worker)
            raise WorkerGone(f"the environment's code took down its worker: {describe_exit(worker.proc.exit_status)}",
                             killed=False)
        return frame

    async def _gone(self, worker: Worker) -> None:
        """Wait until the worker's process is really gone (its locks released), and for its exit status."""
        worker.state = "gone"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(worker.exited.wait(), 30.0)
        if worker.proc.exit_status is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit_reported(worker), _EXIT_REPORT_WAIT_S)

    @staticmethod
    async def _exit_reported(worker: Worker) -> None:
        while worker.proc.exit_status is None:
            await asyncio.sleep(0.01)

    # --------------------------------------------------------------------------------------- capacity
    async def _acquire(self, env_key: str, deadline: float) -> Worker:
        while True:
            worker = self._take_idle(env_key)
            if worker is not None:
                return worker
            if self.running < self.slots and self._room_for(env_key):
                self.running += 1
                return await self._spawn_for_call(env_key, deadline)
            future = asyncio.get_running_loop().create_future()
            self._waiters.append((env_key, future))
            try:
                await asyncio.wait((future,), timeout=max(0.0, deadline - time.monotonic()))
            finally:
                if not future.done():  # _pump skips it from now on; nothing was handed to it
                    future.cancel()
            if future.cancelled():
                raise DeadlineExceeded(
                    f"the call waited its whole deadline for a worker ({self.running} calls running on "
                    f"{self.slots} slots, {len(self.workers)} workers) and never ran")
            granted = future.result()
            if isinstance(granted, Worker):
                return granted
            if granted == "spawn":
                return await self._spawn_for_call(env_key, deadline)

    def _take_idle(self, env_key: str) -> Worker | None:
        idle = self.idle.get(env_key)
        while idle and self.running < self.slots:
            worker = idle.pop()
            if worker.state == "idle":
                worker.state = "busy"
                worker.holds_slot = True
                self.running += 1
                return worker
        return None

    def _room_for(self, env_key: str) -> bool:
        """Room for one more worker process, evicting an idle worker of another environment if need be."""
        if len(self.workers) < self.max_workers:
            return True
        for key, idle in self.idle.items():
            if key != env_key and idle:
                self._retire(idle.pop(0))
                return True
        return False

    async def _spawn_for_call(self, env_key: str, deadline: float) -> Worker:
        """Spawn a worker for a call that already holds a slot (self.running counts it)."""
        try:
            worker = await asyncio.wait_for(self._spawn(env_key), max(0.01, deadline - time.monotonic()))
        except BaseException:
            self.running -= 1
            self._pump()
            if time.monotonic() >= deadline:
                raise DeadlineExceeded("the call's deadline passed while a worker was being started") from None
            raise
        worker.state = "busy"
        worker.holds_slot = True
        busy = sum(1 for w in self.workers if w.env_key == env_key and w.state == "busy")
        self.warm[env_key] = min(self.slots, max(self.warm.get(env_key, 0), busy))
        return worker

    async def _spawn(self, env_key: str) -> Worker:
        zygote: EnvZygote = self.sandbox.env(env_key)
        made = await zygote.spawn(self.limits.spawn_params(zygote))
        reader, writer = await asyncio.open_unix_connection(sock=made.sock, limit=1 << 20)
        worker = Worker(env_key, made.proc, reader, writer)
        worker.reader_task = asyncio.ensure_future(self._read_replies(worker))
        loop = asyncio.get_running_loop()
        loop.add_reader(made.proc.pidfd, self._on_exit, worker)
        self.workers.add(worker)
        return worker

    async def _read_replies(self, worker: Worker) -> None:
        """Deliver each frame to the call waiting for it; None (and the end) when the worker goes away."""
        frame: tuple[dict, bytes] | None = None
        try:
            while True:
                frame = await wire.read_frame(worker.reader)
                if worker.reply is not None and not worker.reply.done():
                    worker.reply.set_result(frame)
                if frame is None:
                    return
        except (wire.WireError, OSError):
            pass
        finally:
            worker.state = "gone" if frame is None else worker.state
            if worker.reply is not None and not worker.reply.done():
                worker.reply.set_result(None)

    def _on_exit(self, worker: Worker) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(worker.proc.pidfd)
        worker.exited.set()
        was_idle = worker.state == "idle"
        worker.state = "gone"
        self.workers.discard(worker)
        self.parked.discard(worker)
        worker.writer.close()
        worker.proc.close()
        if was_idle:
            self._pump()
        if not self._closed:
            self._replenish(worker.env_key)

    def _replenish(self, env_key: str) -> None:
        """Keep an environment's warm workers: replace one that died, retired or was parked, in the background."""
        have = sum(1 for w in self.workers if w.env_key == env_key and w.state in ("idle", "busy"))
        if have >= self.warm.get(env_key, 0) or len(self.workers) >= self.max_workers:
            return

        async def respawn() -> None:
            try:
                worker = await self._spawn(env_key)
            except Exception as exc:  # noqa: BLE001 - the next call will try again and report it
                log.warning("could not replace a worker of %s: %s", env_key, exc)
                return
            self._make_idle(worker)

        task = asyncio.ensure_future(respawn())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------------------------ after a call
    def _park(self, worker: Worker) -> None:
        """A long call: idle CPU priority, and its slot goes to the next call."""
        if worker.state != "busy":
            return
        worker.state = "parked"
        worker.holds_slot = False
        self.running -= 1
        with contextlib.suppress(OSError):
            os.sched_setscheduler(worker.proc.host_pid, os.SCHED_IDLE, os.sched_param(0))
            os.sched_setaffinity(worker.proc.host_pid, PARKED_CPUS)
        self.parked.add(worker)
        if self._governor is None or self._governor.done():
            self._governor = asyncio.ensure_future(self._govern_parked())
        self._replenish(worker.env_key)
        self._pump()

    def _unpark(self, worker: Worker) -> None:
        if worker in self.parked:
            self.parked.discard(worker)
            worker.proc.signal(signal.SIGCONT)

    async def _govern_parked(self) -> None:
        """While other calls run, parked workers get PARKED_QUANTUM_S of every PARKED_PERIOD_S."""
        while self.parked:
            for worker in list(self.parked):
                worker.proc.signal(signal.SIGCONT)
            busy = self.running or self._waiters or time.monotonic() - self.last_active < PARKED_PERIOD_S
            if not busy:
                await asyncio.sleep(PARKED_PERIOD_S)  # nothing else to do lately: let them run
                continue
            await asyncio.sleep(PARKED_QUANTUM_S)
            for worker in list(self.parked):
                worker.proc.signal(signal.SIGSTOP)
            await asyncio.sleep(PARKED_PERIOD_S - PARKED_QUANTUM_S)

    def _release(self, worker: Worker) -> None:
        self.last_active = time.monotonic()
        self._unpark(worker)
        if worker.holds_slot:
            worker.holds_slot = False
            self.running -= 1
        if worker.state == "parked":
            try:  # back to normal scheduling (root may; without CAP_SYS_NICE the worker retires instead)
                os.sched_setscheduler(worker.proc.host_pid, os.SCHED_OTHER, os.sched_param(0))
                os.sched_setaffinity(worker.proc.host_pid, ALL_CPUS)
            except OSError:
                self._retire(worker)
        if worker.state in ("busy", "parked"):
            self._make_idle(worker)
        self._pump()

    def _make_idle(self, worker: Worker) -> None:
        worker.state = "idle"
        self.idle.setdefault(worker.env_key, []).append(worker)
        self._pump()

    def _retire(self, worker: Worker) -> None:
        """End a worker now (idle, or one that asked to): EOF on its socket, and a kill to be sure."""
        if worker.state == "idle":
            with contextlib.suppress(ValueError):
                self.idle.get(worker.env_key, []).remove(worker)
        worker.state = "gone"
        worker.writer.close()
        worker.proc.signal(signal.SIGKILL)

    def _pump(self) -> None:
        """Hand idle workers and free slots to waiting calls, oldest first."""
        i = 0
        while i < len(self._waiters):
            env_key, future = self._waiters[i]
            if future.done():
                del self._waiters[i]
                continue
            worker = self._take_idle(env_key)
            if worker is not None:
                future.set_result(worker)
                del self._waiters[i]
                continue
            if self.running < self.slots and self._room_for(env_key):
                self.running += 1
                future.set_result("spawn")
                del self._waiters[i]
                continue
            if self.running >= self.slots:
                return
            i += 1

    # ------------------------------------------------------------------------------------ housekeeping
    def forget(self, path: str) -> None:
        """A session file is going away: workers that opened it close their connection before their next call."""
        for worker in self.workers:
            if path in worker.opened:
                worker.opened.discard(path)
                worker.forget.append(path)

    async def prewarm(self, env_key: str, n: int) -> None:
        """Start `n` idle workers for an environment (a single-environment envd warms all its slots)."""
        self.warm[env_key] = max(self.warm.get(env_key, 0), n)
        for _ in range(n):
            if len(self.workers) >= self.max_workers:
                return
            self._make_idle(await self._spawn(env_key))

    def count(self) -> int:
        return len(self.workers)

    def close(self) -> None:
        self._closed = True
        if self._governor is not None:
            self._governor.cancel()
        for task in self._background:
            task.cancel()
        for worker in list(self.workers):
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(worker.proc.pidfd)
            worker.proc.signal(signal.SIGKILL)
            worker.writer.close()
            worker.proc.close()
            if worker.reader_task is not None:
                worker.reader_task.cancel()
        self.workers.clear()
        self.idle.clear()
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(DeadlineExceeded("the server is shutting down"))
        self._waiters.clear()
