"""Shared fixtures for the offline generator's tests: a few environments generated once per session."""

from __future__ import annotations

import pytest

from agentworld.bundle import Bundle
from agentworld.synth.compose import Scenario, build_scenario
from agentworld.synth.data import Rows, generate_rows
from agentworld.synth.generate import bundle_for

SEED = 11


@pytest.fixture(scope="session")
def sample() -> list[tuple[Scenario, Rows, Bundle]]:
    """Four environments with four different primary domains."""
    out = []
    for i in range(4):
        scenario = build_scenario(SEED, i)
        out.append((scenario, generate_rows(scenario), bundle_for(scenario)))
    return out


@pytest.fixture(scope="session")
def runtime(sample):  # noqa: ANN001, ANN201
    from agentworld.runtime import EnvRuntime, RuntimeConfig

    rt = EnvRuntime([b for _, _, b in sample], RuntimeConfig(idle_ttl_s=0, verifier_workers=2))
    yield rt
    rt.close()


@pytest.fixture(scope="session")
def verifier_pool():  # noqa: ANN201
    from agentworld.runtime.sandbox import VerifierPool

    with VerifierPool(workers=1) as pool:
        yield pool
