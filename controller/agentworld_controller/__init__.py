"""agentworld EnvPool controller: keeps pools of envd pods (each hosting many sessions) healthy, scaled and drained."""

from agentworld_controller.constants import GROUP, KIND, PLURAL, VERSION

__all__ = ["GROUP", "KIND", "PLURAL", "VERSION"]
