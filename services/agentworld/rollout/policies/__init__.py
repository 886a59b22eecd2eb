"""Rollout policies and the `--policy` spec parser."""

from __future__ import annotations

from agentworld.rollout.policies.anthropic_policy import AnthropicPolicy
from agentworld.rollout.policies.base import (
    Action,
    Agent,
    EpisodeSpec,
    FinalAnswer,
    FormatError,
    Observation,
    Policy,
    PolicyError,
    ToolCallAction,
)
from agentworld.rollout.policies.openai_policy import OpenAIPolicy
from agentworld.rollout.policies.random_policy import RandomPolicy
from agentworld.rollout.policies.reference import ReferencePolicy

POLICY_HELP = "reference | random | openai:MODEL[@BASE_URL] | anthropic:MODEL[@BASE_URL]"


def make_policy(
    spec: str,
    *,
    temperature: float | None = None,
    max_tokens: int | None = None,
    api_key: str | None = None,
    timeout_s: float = 120.0,
) -> Policy:
    """Parse a `--policy` value."""
    kind, _, rest = spec.strip().partition(":")
    if kind == "reference" and not rest:
        return ReferencePolicy()
    if kind == "random" and not rest:
        return RandomPolicy()
    if kind in ("openai", "anthropic"):
        model, _, url = rest.partition("@")
        if not model:
            raise PolicyError(f"policy {spec!r} names no model: use {kind}:MODEL[@BASE_URL]")
        if url and not url.startswith(("http://", "https://")):
            raise PolicyError(f"base URL {url!r} in policy {spec!r} must start with http:// or https://")
        if kind == "openai":
            return OpenAIPolicy(model=model, base_url=url or None, api_key=api_key, temperature=temperature,
                                max_tokens=max_tokens, timeout_s=timeout_s, name=spec)
        return AnthropicPolicy(model=model, base_url=url or None, api_key=api_key, temperature=temperature,
                               max_tokens=max_tokens or 1024, timeout_s=timeout_s, name=spec)
    raise PolicyError(f"unknown policy {spec!r}: use {POLICY_HELP}")


__all__ = [
    "POLICY_HELP",
    "Action",
    "Agent",
    "AnthropicPolicy",
    "EpisodeSpec",
    "FinalAnswer",
    "FormatError",
    "Observation",
    "OpenAIPolicy",
    "Policy",
    "PolicyError",
    "RandomPolicy",
    "ReferencePolicy",
    "ToolCallAction",
    "make_policy",
]
