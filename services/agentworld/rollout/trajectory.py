"""Trajectory records: one JSON line per episode, with everything a trainer or an analyst needs to replay it."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, Field

Termination = Literal["final_answer", "max_turns", "format_error", "error"]


class Step(BaseModel):
    """One turn that called a tool."""

    turn: int
    tool: str
    arguments: dict[str, Any]
    call_id: str = ""
    is_error: bool = False
    content: str = ""
    http_status: int = 0
    policy_ms: float = 0.0  # time the policy took to choose this call
    call_ms: float = 0.0  # CallTool round trip seen by the runner
    server_ms: float = 0.0  # the tool's own run time reported by the server


class Timings(BaseModel):
    create_session_ms: float = 0.0
    list_tools_ms: float = 0.0
    policy_ms: float = 0.0
    tools_ms: float = 0.0
    verify_ms: float = 0.0
    total_ms: float = 0.0


class Trajectory(BaseModel):
    """One episode. `reward` is None when the episode failed for infrastructure reasons (see `error`)."""

    episode: int
    env_id: str
    task_id: str
    instruction: str
    policy: str
    repeat: int = 0
    seed: int | None = None
    session_id: str = ""
    group: int | None = None  # index of the group of forked sessions this episode started in (--group)
    initial_state_hash: str = ""  # the session's state hash when the episode started
    messages: list[dict[str, Any]] = Field(default_factory=list)  # the policy's conversation, in its own wire format
    steps: list[Step] = Field(default_factory=list)
    turns: int = 0
    final_answer: str | None = None
    termination: Termination = "max_turns"
    format_error: str | None = None
    outcome: str | None = None  # the verifier's outcome; None when not verified
    reward: float | None = None
    verify_details: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    usage: dict[str, int] = Field(default_factory=dict)  # LLM tokens (input_tokens, output_tokens) over the episode
    started_at: str = ""
    timings: Timings = Field(default_factory=Timings)


class TrajectoryWriter:
    """Appends trajectories to a JSONL file as episodes finish, so a crash keeps what was done."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fh: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = path.open("w", encoding="utf-8")

    def write(self, trajectory: Trajectory) -> None:
        if self._fh is not None:
            self._fh.write(trajectory.model_dump_json() + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_trajectories(path: Path) -> list[Trajectory]:
    with path.open(encoding="utf-8") as fh:
        return [Trajectory.model_validate_json(line) for line in fh if line.strip()]
