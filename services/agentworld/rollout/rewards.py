"""The reward map: verifier outcome (or a format error) -> scalar reward. AWM's values are the default."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError


class RewardMapError(ValueError):
    """A reward map given on the command line or in a file is malformed."""


class RewardMap(BaseModel):
    """Rewards per verifier outcome. `format_error` also stops the episode early (AWM's training setup)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    complete: float = 1.0
    partially_complete: float = 0.1
    others: float = 0.0
    error: float = 0.0  # the verifier itself crashed or timed out
    format_error: float = -1.0

    def for_outcome(self, outcome: str) -> float:
        """Reward for a verifier outcome; unknown outcomes earn `others` (never a silent bonus)."""
        if outcome in ("complete", "partially_complete", "others", "error"):
            return float(getattr(self, outcome))
        return self.others

    @classmethod
    def parse(cls, spec: str | None) -> RewardMap:
        """From `None` (defaults), a JSON object, a JSON file path, or `key=value,key=value`."""
        if not spec:
            return cls()
        text = spec.strip()
        try:
            if text.startswith("{"):
                return cls.model_validate_json(text)
            path = Path(text)
            if path.suffix == ".json" or path.is_file():
                if not path.is_file():
                    raise RewardMapError(f"reward map file {path} does not exist")
                return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
            values: dict[str, float] = {}
            for part in filter(None, (p.strip() for p in text.split(","))):
                key, sep, value = part.partition("=")
                if not sep:
                    raise RewardMapError(f"reward map entry {part!r} is not key=value")
                try:
                    values[key.strip()] = float(value)
                except ValueError as exc:
                    raise RewardMapError(f"reward for {key.strip()!r} is not a number: {value!r}") from exc
            return cls.model_validate(values)
        except ValidationError as exc:
            keys = ", ".join(cls.model_fields)
            raise RewardMapError(f"bad reward map {spec!r} (keys: {keys}): {exc.errors()[0]['msg']}") from exc
        except json.JSONDecodeError as exc:
            raise RewardMapError(f"reward map is not valid JSON: {exc}") from exc
