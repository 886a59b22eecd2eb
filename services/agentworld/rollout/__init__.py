"""Rollouts: AWM-style episodes driven by a policy through envd or the gateway, written as JSONL trajectories.

    from agentworld.client import AsyncEnvClient
    from agentworld.rollout import EpisodeConfig, make_policy, plan_episodes, run_rollouts

    async with AsyncEnvClient("localhost:50051") as client:
        specs = plan_episodes(await client.list_envs(), repeats=16)
        trajs = await run_rollouts(client, make_policy("openai:qwen@http://localhost:8000/v1"), specs,
                                   EpisodeConfig(max_turns=20), concurrency=256)
"""

from __future__ import annotations

from agentworld.rollout.policies import EpisodeSpec, Policy, PolicyError, make_policy
from agentworld.rollout.rewards import RewardMap, RewardMapError
from agentworld.rollout.runner import EpisodeConfig, RolloutError, plan_episodes, run_episode, run_rollouts
from agentworld.rollout.summary import summarize, summary_table
from agentworld.rollout.trajectory import Step, Trajectory, TrajectoryWriter, read_trajectories

__all__ = [
    "EpisodeConfig",
    "EpisodeSpec",
    "Policy",
    "PolicyError",
    "RewardMap",
    "RewardMapError",
    "RolloutError",
    "Step",
    "Trajectory",
    "TrajectoryWriter",
    "make_policy",
    "plan_episodes",
    "read_trajectories",
    "run_episode",
    "run_rollouts",
    "summarize",
    "summary_table",
]
