"""Stages of the LLM synthesis pipeline, in order; each writes its output to disk before the next starts."""

STAGE_ORDER = ("scenarios", "tasks", "schema", "seed", "spec", "code", "solutions", "validate")
