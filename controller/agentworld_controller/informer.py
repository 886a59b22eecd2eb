"""List + watch cache for one resource, robust against silent watches.

Every watch carries a server-side timeoutSeconds and a client-side read timeout, so a stalled connection ends and is
re-established; a 410 Gone (or any error) falls back to a fresh list. Objects are kept as slim views (raw JSON, no
client model deserialisation), which is what makes 10,000 pods cheap.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from kubernetes.watch.watch import iter_resp_lines

log = logging.getLogger(__name__)
T = TypeVar("T")
Key = tuple[str, str]


class Informer(Generic[T]):
    def __init__(self, name: str, list_call: Callable[..., Any], view: Callable[[dict[str, Any]], T],
                 on_change: Callable[[str, T, T | None], None], *, label_selector: str = "",
                 watch_timeout_s: int = 60, page_size: int = 2000) -> None:
        self.name = name
        self._list_call = list_call
        self._view = view
        self._on_change = on_change
        self._selector = label_selector
        self._watch_timeout_s = watch_timeout_s
        self._page_size = page_size
        self._lock = threading.Lock()
        self._items: dict[Key, T] = {}
        self.synced = threading.Event()
        self.relists = 0

    def items(self) -> list[T]:
        with self._lock:
            return list(self._items.values())

    def get(self, key: Key) -> T | None:
        with self._lock:
            return self._items.get(key)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def _call(self, **kw: Any) -> Any:
        if self._selector:
            kw["label_selector"] = self._selector
        return self._list_call(_preload_content=False, **kw)

    def _list(self) -> str:
        fresh: dict[Key, T] = {}
        cont: str | None = None
        rv = ""
        while True:
            kw: dict[str, Any] = {"limit": self._page_size, "_request_timeout": 60}
            if cont:
                kw["_continue"] = cont
            body = json.loads(self._call(**kw).data)
            for obj in body.get("items") or []:
                meta = obj["metadata"]
                fresh[(meta.get("namespace", ""), meta["name"])] = self._view(obj)
            cont = body["metadata"].get("continue")
            rv = body["metadata"]["resourceVersion"]
            if not cont:
                break
        with self._lock:
            old, self._items = self._items, fresh
        for key, item in fresh.items():
            self._on_change("SYNC", item, old.get(key))
        for key, item in old.items():
            if key not in fresh:
                self._on_change("DELETED", item, item)
        self.relists += 1
        self.synced.set()
        return rv

    def _watch(self, rv: str, stop: threading.Event) -> str | None:
        """Stream events until the server closes the watch; returns the last resourceVersion or None to relist."""
        resp = self._call(watch=True, resource_version=rv, allow_watch_bookmarks=True,
                          timeout_seconds=self._watch_timeout_s,
                          _request_timeout=(10, self._watch_timeout_s + 15))
        try:
            for line in iter_resp_lines(resp):
                if stop.is_set():
                    return rv
                ev = json.loads(line)
                etype, obj = ev["type"], ev["object"]
                if etype == "ERROR":
                    log.info("%s watch error %s: relisting", self.name, obj.get("message"))
                    return None
                meta = obj["metadata"]
                rv = meta.get("resourceVersion", rv)
                if etype == "BOOKMARK":
                    continue
                key = (meta.get("namespace", ""), meta["name"])
                item = self._view(obj)
                with self._lock:
                    old = self._items.get(key)
                    if etype == "DELETED":
                        self._items.pop(key, None)
                    else:
                        self._items[key] = item
                self._on_change(etype, item, old)
        finally:
            resp.release_conn()
        return rv

    def run(self, stop: threading.Event) -> None:
        rv: str | None = None
        backoff = 0.5
        while not stop.is_set():
            try:
                if rv is None:
                    rv = self._list()
                rv = self._watch(rv, stop)
                backoff = 0.5
            except Exception as exc:  # noqa: BLE001 - any failure: relist after a backoff, never die
                if stop.is_set():
                    return
                log.warning("%s informer: %s; relisting in %.1fs", self.name, exc, backoff)
                rv = None
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def start(self, stop: threading.Event) -> threading.Thread:
        t = threading.Thread(target=self.run, args=(stop,), name=f"informer-{self.name}", daemon=True)
        t.start()
        return t


def wait_synced(informers: list[Informer[Any]], timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    return all(inf.synced.wait(max(0.0, end - time.monotonic())) for inf in informers)
