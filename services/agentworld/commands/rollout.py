"""`agentworld rollout`: drive a policy through AWM-style episodes against envd or a gateway."""

from __future__ import annotations

from pathlib import Path

import typer

from agentworld.auth import TOKEN_FILE_ENV


def register(app: typer.Typer) -> None:
    app.command("rollout")(rollout_cmd)
    app.command("mcp")(mcp_cmd)


def rollout_cmd(
    address: str = typer.Option("localhost:50051", "--address", "-a", help="envd or gateway address (HOST:PORT)."),
    policy: str = typer.Option(
        "reference", "--policy", "-p", help=r"reference | random | openai:MODEL\[@BASE_URL] | anthropic:MODEL\[@BASE_URL]"
    ),
    envs: list[Path] = typer.Option(
        None, "--envs", help="Bundle directory (or a directory of bundles): runs only these envs; needed by `reference`."
    ),
    env: list[str] = typer.Option(None, "--env", "-e", help="Only these environment ids (repeatable)."),
    tasks: str = typer.Option("all", "--tasks", "-t", help="Comma-separated task ids (TASK or ENV/TASK), or `all`."),
    repeats: int = typer.Option(1, "--repeats", "-n", help="Episodes per task (e.g. 16 for a GRPO group)."),
    concurrency: int = typer.Option(32, "--concurrency", "-c", help="Episodes in flight at once."),
    group: bool = typer.Option(
        False, "--group", help="Start each task's repeats as one group of forked sessions (identical start, GRPO)."
    ),
    max_turns: int = typer.Option(20, "--max-turns", help="Policy turns per episode (AWM's RL setting: 20)."),
    rewards: str = typer.Option(
        None, "--rewards", help="Reward map: JSON, a .json file, or k=v,... (complete, partially_complete, others, "
        "error, format_error). Default: AWM's 1.0 / 0.1 / 0 / 0 / -1.0."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the random policy."),
    temperature: float = typer.Option(None, "--temperature", help="Sampling temperature for LLM policies."),
    max_tokens: int = typer.Option(None, "--max-tokens", help="Max tokens per LLM turn."),
    llm_timeout: float = typer.Option(120.0, "--llm-timeout", help="Seconds per LLM request (the SDK retries twice)."),
    tool_timeout: float = typer.Option(None, "--tool-timeout", help="Per tool call timeout in seconds."),
    out: Path = typer.Option(None, "--out", "-o", help="Write trajectories here as JSONL."),
    json_summary: bool = typer.Option(False, "--json", help="Print the summary as JSON instead of a table."),
) -> None:
    """Run episodes: tool list, up to --max-turns turns of one tool call each, final answer, verify, reward."""
    import asyncio
    import json

    from rich.console import Console

    from agentworld.bundle import BundleError, find_bundles, load_bundle
    from agentworld.client import AsyncEnvClient, EnvClientError
    from agentworld.rollout import (
        EpisodeConfig,
        PolicyError,
        RewardMap,
        RewardMapError,
        RolloutError,
        TrajectoryWriter,
        make_policy,
        plan_episodes,
        run_rollouts,
        summarize,
        summary_table,
    )
    from agentworld.rollout.progress import rollout_progress

    console = Console()
    err = Console(stderr=True)

    def fail(message: str, code: int = 2) -> typer.Exit:
        err.print(f"[red]error:[/red] {message}")
        return typer.Exit(code)

    try:
        reward_map = RewardMap.parse(rewards)
        pol = make_policy(policy, temperature=temperature, max_tokens=max_tokens, timeout_s=llm_timeout)
        bundles = {b.env_id: b for b in map(load_bundle, find_bundles(envs))} if envs else {}
    except (RewardMapError, PolicyError, BundleError) as exc:
        raise fail(str(exc)) from exc
    if max_turns < 1:
        raise fail(f"--max-turns must be >= 1, got {max_turns}")
    config = EpisodeConfig(max_turns=max_turns, rewards=reward_map, tool_timeout_s=tool_timeout)

    async def main() -> list:
        async with AsyncEnvClient(address) as client:
            specs = plan_episodes(
                await client.list_envs(), bundles, env_ids=env or (), tasks=tasks.split(","), repeats=repeats,
                seed=seed, need_solutions=pol.needs_solutions,
            )
            with TrajectoryWriter(out) as writer, rollout_progress(console, len(specs)) as advance:
                def done(traj) -> None:  # noqa: ANN001
                    writer.write(traj)
                    advance(traj)

                try:
                    return await run_rollouts(
                        client, pol, specs, config, concurrency=concurrency, on_done=done, group=group
                    )
                finally:
                    await pol.aclose()

    try:
        trajs = asyncio.run(main())
    except RolloutError as exc:
        raise fail(str(exc)) from exc
    except EnvClientError as exc:
        raise fail(f"{address}: {exc}", 1) from exc
    rows = summarize(trajs)
    if json_summary:
        console.print_json(json.dumps(rows))
    else:
        console.print(summary_table(rows, title=f"rollouts: {policy} @ {address}"))
    if out:
        console.print(f"{len(trajs)} trajectories -> {out}")
    failed = [t for t in trajs if t.termination == "error"]
    if failed:
        err.print(f"[yellow]{len(failed)} episode(s) failed:[/yellow] {failed[0].error}")
        raise typer.Exit(1)


def mcp_cmd(
    address: str = typer.Option(..., "--address", "-a", help="envd or gateway gRPC address (HOST:PORT) to front."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8765, "--port", "-p", help="HTTP port for MCP Streamable HTTP."),
    allowed_host: list[str] = typer.Option(
        [], "--allowed-host", help="Host header accepted besides the loopback names (NAME, NAME:PORT or NAME:*; "
                                   "repeatable). Others get 421."),
    auth_token_file: Path | None = typer.Option(
        None, "--auth-token-file", envvar=TOKEN_FILE_ENV,
        help="Require a bearer token listed in this file from HTTP callers (401 otherwise), and present its first "
             "token to the gRPC address."),
) -> None:
    """Serve the sessions behind a gateway (or envd) over MCP Streamable HTTP: /envs/{env}/mcp, /sessions/{id}/mcp."""
    from rich.console import Console

    from agentworld.auth import TokenFile
    from agentworld.transport.mcp_server import serve_mcp_in_thread

    console = Console()
    try:
        tokens = TokenFile(auth_token_file) if auth_token_file else None
        handle = serve_mcp_in_thread(address, host=host, port=port, token=tokens, allowed_hosts=allowed_host,
                                     backend_token=tokens)
    except (OSError, TimeoutError, ValueError) as exc:  # TokenError is a ValueError
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"MCP for {address} on http://{host}:{handle.port} (/envs/ENV/mcp, /sessions/ID/mcp); Ctrl-C stops")
    try:
        handle.wait()
    except KeyboardInterrupt:
        handle.stop()
