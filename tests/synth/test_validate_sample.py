"""Generated environments pass `agentworld validate` (the runtime-backed check), across domains."""

from __future__ import annotations

import pytest

from agentworld.validate import validate_bundle


@pytest.mark.parametrize("index", range(4))
def test_sample_environment_is_valid(sample, verifier_pool, index: int) -> None:  # noqa: ANN001
    _, _, bundle = sample[index]
    report = validate_bundle(bundle, verifier_pool=verifier_pool)
    assert report.ok, report.all_problems()
    assert report.tools == bundle.manifest.counts.tools
    assert len(report.tasks) == 10
    assert all(t.solved == "complete" for t in report.tasks)
    assert all(t.untouched != "complete" for t in report.tasks)
