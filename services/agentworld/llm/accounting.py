"""Token and cost accounting per stage, plus the stage's attempt counters for the final report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class StageStats:
    """LLM usage and outcome counters of one stage (one row of the report table)."""

    requests: int = 0  # requests answered by the provider (cache hits excluded)
    cache_hits: int = 0
    transport_retries: int = 0  # 429/5xx/timeouts retried by our backoff
    input_tokens: int = 0  # all prompt tokens, prompt-cache reads included
    output_tokens: int = 0
    cache_read_tokens: int = 0  # prompt tokens billed at the provider's cache-read price
    cost_usd: float = 0.0
    unpriced_requests: int = 0  # model not in the price table (e.g. a local server)
    units: int = 0  # work items attempted (scenarios, envs, tasks)
    first_attempt_ok: int = 0
    feedback_retries: int = 0  # extra attempts after a failure was fed back
    failed: int = 0
    skipped_resumed: int = 0  # units whose output was already on disk


@dataclass
class Accounting:
    stages: dict[str, StageStats] = field(default_factory=dict)

    def stage(self, name: str) -> StageStats:
        return self.stages.setdefault(name, StageStats())

    def add_usage(self, stage: str, input_tokens: int, output_tokens: int, cost: float | None,
                  cache_read_tokens: int = 0) -> None:
        s = self.stage(stage)
        s.requests += 1
        s.input_tokens += input_tokens
        s.output_tokens += output_tokens
        s.cache_read_tokens += cache_read_tokens
        if cost is None:
            s.unpriced_requests += 1
        else:
            s.cost_usd += cost

    def totals(self) -> StageStats:
        total = StageStats()
        for s in self.stages.values():
            for key, value in asdict(s).items():
                setattr(total, key, getattr(total, key) + value)
        return total

    def to_dict(self) -> dict[str, dict]:
        return {name: asdict(s) for name, s in self.stages.items()}
