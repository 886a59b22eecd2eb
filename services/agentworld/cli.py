"""The `agentworld` command line: one root Typer app; each area registers its commands from agentworld.commands."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Synthesised tool-using environments for agent RL.")

# Each module defines register(app: typer.Typer) and keeps heavy imports inside its command functions.
COMMAND_MODULES = ("core", "synth", "images", "cluster", "gateway", "rollout", "awm")

for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"agentworld.commands.{_name}")
    except ModuleNotFoundError as exc:  # an area not built yet
        if exc.name != f"agentworld.commands.{_name}":
            raise
        continue
    _module.register(app)


def main() -> None:
    app()
