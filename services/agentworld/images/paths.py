"""Where the image builder finds its Dockerfiles and keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Expensive artefacts (Debian .debs, dependency wheels) live outside the clone so re-runs are fast."""
    root = Path(os.environ.get("AGENTWORLD_CACHE", Path.home() / ".cache" / "agentworld")) / "images"
    root.mkdir(parents=True, exist_ok=True)
    return root


def project_root() -> Path:
    """The source checkout (pyproject.toml + env_images/); the runtime image is built from it."""
    override = os.environ.get("AGENTWORLD_SOURCE")
    if override:
        return Path(override)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "env_images").is_dir():
            return parent
    raise FileNotFoundError(
        "agentworld source checkout not found (need pyproject.toml and env_images/); set AGENTWORLD_SOURCE"
    )


def dockerfiles_dir() -> Path:
    return project_root() / "env_images"
