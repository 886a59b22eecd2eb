"""Typed errors of the image builder and the Docker backend, mapped to CLI messages at the edge."""

from __future__ import annotations


class ImagesError(Exception):
    """Base of agentworld.images errors; the message says what failed and what to do."""


class ImageBuildError(ImagesError):
    """A base, runtime or environment image could not be built or pushed."""


class DockerUnavailable(ImagesError):
    """No Docker engine answers on the configured socket."""


class ContainerCrashed(ImagesError):
    """An environment container exited; carries its exit code and last log lines."""

    def __init__(self, name: str, exit_code: int | None, logs: str) -> None:
        self.name, self.exit_code, self.logs = name, exit_code, logs
        super().__init__(f"container {name} exited (code {exit_code}); last log lines:\n{logs}")
