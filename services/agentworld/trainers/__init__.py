"""Adapters from agentworld sessions to RL libraries' environment interfaces (SkyRL-Gym: `agentworld.trainers.skyrl`).

Each adapter imports its library lazily, so `agentworld` itself does not depend on any trainer.
"""
