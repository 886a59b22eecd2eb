"""The session registry: sessions, the trees they form by forking, client leases, snapshots and the byte budget.

All of it lives in envd's process and no environment code can reach it. Ownership rules:
- a **tree** is a CreateSession and every session forked from it; its snapshots live as long as one of its sessions
  does (or, with a TTL, until the TTL ends), never evicted to make room;
- a **lease** is a client's: sessions created under it close when the client stops renewing it (it died);
- the **budget** counts bytes: each session's database (its own copy, or what it will copy at its first call) plus
  every non-template image (fork points, snapshots, restored data). Over it, the call that would allocate gets
  RESOURCE_EXHAUSTED naming the budget; nothing is evicted.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from agentworld import placement
from agentworld.runtime.environment import EnvSpec
from agentworld.runtime.errors import FailedPrecondition, NotFound, ResourceExhausted, clip
from agentworld.runtime.store import Image, StateStore

MAX_ENDED_REMEMBERED = 100_000  # ended session and snapshot ids kept for clear errors


def mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


@dataclass(eq=False)
class Tree:
    tree_id: int
    live: int = 0
    snapshots: set[str] = field(default_factory=set)


@dataclass(eq=False)
class Lease:
    lease_id: str
    expires_at: float
    sessions: set[str] = field(default_factory=set)


@dataclass(eq=False)
class Session:
    session_id: str
    env: EnvSpec
    task_id: str | None
    tree: Tree
    lease: Lease | None
    image: Image  # the state the session is at (or its own copy started from)
    episode: Image  # where its episode began: what Verify compares against
    file: str | None = None  # its own writable copy, once a tool call needed one
    clean_version: tuple | None = None  # the copy's file version while it still equals `image`
    bytes: int = 0  # what it counts against the budget
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used: float = field(default_factory=time.monotonic)
    closed: bool = False
    hash_cache: tuple[tuple, str] | None = None  # (file version, state hash)
    calls: OrderedDict[str, CallRecord] = field(default_factory=OrderedDict)  # call id -> outcome, newest last


@dataclass(eq=False)
class CallRecord:
    """A tool call made with a call id: what was asked (a retry must ask the same) and its outcome."""

    fingerprint: tuple[str, str]  # (tool name, arguments as sent)
    outcome: asyncio.Future  # of ToolResult; done once the call committed or rolled back


@dataclass(eq=False)
class SnapshotRecord:
    snapshot_id: str
    env_key: str
    image: Image
    tree: Tree
    expires_at: float | None  # None: as long as its tree lives


class Budget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def reserve(self, n: int, what: str) -> None:
        if n > 0 and self.used + n > self.limit:
            raise ResourceExhausted(
                f"memory budget of {mib(self.limit)} for sessions and snapshots is used up ({mib(self.used)} in use; "
                f"{what} needs {mib(n)} more); close sessions or snapshots you no longer need, or raise envd's "
                "--memory-budget")
        self.used += n

    def release(self, n: int) -> None:
        self.used = max(0, self.used - n)


class Registry:
    def __init__(self, store: StateStore, max_sessions: int, budget_bytes: int, lease_ttl_s: float,
                 node_id: str) -> None:
        self.store = store
        self.node_id = placement.check_node_id(node_id)
        self.boot_id = placement.new_boot_id()
        self.max_sessions = max_sessions
        self.lease_ttl_s = lease_ttl_s
        self.budget = Budget(budget_bytes)
        self.sessions: dict[str, Session] = {}
        self.snapshots: dict[str, SnapshotRecord] = {}
        self.leases: dict[str, Lease] = {}
        self._ended: OrderedDict[str, str] = OrderedDict()
        self._gone_snapshots: OrderedDict[str, str] = OrderedDict()
        self._trees = itertools.count(1)

    # -------------------------------------------------------------------------------------------- images
    def admit(self, image: Image, what: str) -> Image:
        """Count a new (non-template) image against the budget; over it, the image is deleted and the call fails."""
        try:
            self.budget.reserve(image.size, what)
        except ResourceExhausted:
            self.store.release(image)
            raise
        return image

    def hold(self, image: Image) -> Image:
        image.refs += 1
        return image

    def drop(self, image: Image) -> None:
        """One holder fewer; with the last one a non-template image's file and bytes go."""
        if image.refs == 1 and not image.permanent:
            self.budget.release(image.size)
        self.store.release(image)

    # ------------------------------------------------------------------------------------------ sessions
    def get(self, session_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            ended = self._ended.get(session_id)
            if ended:
                raise FailedPrecondition(f"session {clip(session_id)} was {ended}; create a new session")
            raise NotFound(self._unknown(session_id))
        session.last_used = time.monotonic()
        if session.lease is not None:
            self.renew(session.lease)
        return session

    def _unknown(self, session_id: str) -> str:
        """Why an id names no session here, as precisely as the id allows."""
        ref = placement.parse_session_id(session_id)
        here = f"backend {self.node_id}"
        if ref is None:
            return f"unknown session {clip(session_id)} on {here}; {placement.ID_FORMAT_HINT}"
        if ref.node_id != self.node_id:
            return f"session {clip(session_id)} belongs to backend {ref.node_id}, not to {here}"
        if ref.boot_id != self.boot_id:
            return (f"session {clip(session_id)} was created before {here} restarted; its state is gone, create a "
                    "new session")
        return f"unknown session {clip(session_id)} on {here}; create one with CreateSession"

    def check_room(self, n: int) -> None:
        if len(self.sessions) + n > self.max_sessions:
            raise ResourceExhausted(
                f"session limit of {self.max_sessions} reached ({len(self.sessions)} open); close sessions you no "
                "longer need or start more servers")

    def add(self, env: EnvSpec, image: Image, episode: Image, task_id: str | None, tree: Tree | None,
            lease: Lease | None, n: int = 1) -> list[Session]:
        """n new sessions at `image` (all or none: room and budget are checked first)."""
        self.check_room(n)
        self.budget.reserve(n * image.size, f"{'Fork of ' + str(n) if n > 1 else 'a new session'}")
        tree = tree or Tree(next(self._trees))
        made = []
        for _ in range(n):
            session = Session(placement.new_session_id(self.node_id, self.boot_id), env, task_id, tree, lease,
                              self.hold(image), self.hold(episode), bytes=image.size)
            tree.live += 1
            if lease is not None:
                lease.sessions.add(session.session_id)
            self.sessions[session.session_id] = session
            made.append(session)
        return made

    def remove(self, session: Session, why: str) -> bool:
        """Forget a session (and, if its tree died with it, the tree's snapshots without a TTL). The caller removes
        its own file once no call uses it. False if it was already gone."""
        if self.sessions.pop(session.session_id, None) is None:
            return False
        session.closed = True
        self._remember(self._ended, session.session_id, why)
        self.budget.release(session.bytes)
        session.bytes = 0
        self.drop(session.image)
        self.drop(session.episode)
        if session.lease is not None:
            session.lease.sessions.discard(session.session_id)
        session.tree.live -= 1
        if session.tree.live == 0:
            for snapshot_id in list(session.tree.snapshots):
                record = self.snapshots[snapshot_id]
                if record.expires_at is None:
                    self.drop_snapshot(record, "was released when the last session of the tree that made it closed "
                                               "(give Snapshot a ttl_s to keep one longer)")
        return True

    def move(self, session: Session, image: Image) -> None:
        """Point a session at another image (reset, restore, a rebase after copying its state out)."""
        old = session.image
        session.image = self.hold(image)
        self.drop(old)

    def set_bytes(self, session: Session, n: int) -> None:
        """A session's database changed size (a call grew it, or it moved to another image): always accepted."""
        if session.closed:  # its bytes went back when it was removed
            return
        self.budget.used += n - session.bytes
        session.bytes = n

    # ---------------------------------------------------------------------------------------- snapshots
    def add_snapshot(self, session: Session, image: Image, ttl_s: float | None) -> SnapshotRecord:
        expires = time.monotonic() + ttl_s if ttl_s else None
        record = SnapshotRecord(f"snap-{secrets.token_hex(8)}", session.env.key, self.hold(image), session.tree,
                                expires)
        session.tree.snapshots.add(record.snapshot_id)
        self.snapshots[record.snapshot_id] = record
        return record

    def snapshot(self, snapshot_id: str) -> SnapshotRecord:
        record = self.snapshots.get(snapshot_id)
        if record is not None and record.expires_at is not None and time.monotonic() >= record.expires_at:
            self.drop_snapshot(record, "expired (its ttl_s ended)")
            record = None
        if record is None:
            gone = self._gone_snapshots.get(snapshot_id)
            if gone:
                raise NotFound(f"snapshot {clip(snapshot_id)} {gone}")
            raise NotFound(f"unknown snapshot {clip(snapshot_id)} (snapshots live in the server that made them)")
        return record

    def drop_snapshot(self, record: SnapshotRecord, why: str) -> None:
        if self.snapshots.pop(record.snapshot_id, None) is None:
            return
        record.tree.snapshots.discard(record.snapshot_id)
        self._remember(self._gone_snapshots, record.snapshot_id, why)
        self.drop(record.image)

    def expire_snapshots(self, now: float) -> None:
        """TTL'd snapshots end at their TTL; until then they outlive their tree."""
        for record in [r for r in self.snapshots.values() if r.expires_at is not None and now >= r.expires_at]:
            self.drop_snapshot(record, "expired (its ttl_s ended)")

    # ------------------------------------------------------------------------------------------- leases
    def lease(self, lease_id: str) -> Lease:
        lease = self.leases.get(lease_id)
        if lease is None:
            lease = self.leases[lease_id] = Lease(lease_id, 0.0)
        self.renew(lease)
        return lease

    def renew(self, lease: Lease) -> None:
        lease.expires_at = time.monotonic() + self.lease_ttl_s

    def lapsed(self, now: float) -> list[Lease]:
        gone = [lease for lease in self.leases.values() if lease.expires_at <= now]
        for lease in gone:
            del self.leases[lease.lease_id]
        return gone

    # ---------------------------------------------------------------------------------------------- misc
    @staticmethod
    def _remember(book: OrderedDict[str, str], key: str, why: str) -> None:
        book[key] = why
        while len(book) > MAX_ENDED_REMEMBERED:
            book.popitem(last=False)
