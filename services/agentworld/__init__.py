"""agentworld: synthesised tool-using environments for agent RL."""

__version__ = "0.1.0"
