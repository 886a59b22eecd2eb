"""On-disk response cache keyed by a hash of (provider, model, messages, params).

A crashed or killed run re-sends the same requests when resumed; the cache answers them so nothing is paid twice.
Entries are written atomically (temp file + rename), so a kill mid-write never leaves a corrupt entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from agentworld.llm.types import Completion


def request_key(provider: str, model: str, material: dict[str, Any]) -> str:
    blob = json.dumps({"provider": provider, "model": model, **material}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    def __init__(self, root: Path | str | None) -> None:
        self.root = Path(root) if root is not None else None

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Completion | None:
        if self.root is None:
            return None
        path = self._path(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # unreadable entry: treat as a miss, it will be overwritten
        return Completion.from_json(data["completion"])

    def put(self, key: str, completion: Completion, material: dict[str, Any]) -> None:
        if self.root is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # key order kept: a cached answer must rebuild exactly the prompts the live answer built
        payload = json.dumps({"completion": completion.to_json(), "request": material})
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(payload)
        os.replace(tmp, path)
