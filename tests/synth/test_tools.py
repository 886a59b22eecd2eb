"""Every tool of sample environments: a valid call succeeds, an invalid one fails with a clear error."""

from __future__ import annotations

import json

import pytest

from agentworld.runtime import errors
from agentworld.synth.probe import probes


@pytest.mark.parametrize("index", [0, 1])
def test_every_tool_valid_and_invalid(sample, runtime, index: int) -> None:  # noqa: ANN001
    scenario, rows, bundle = sample[index]
    session = runtime.create_session(bundle.env_id).session_id
    listed = {t.name for t in runtime.list_tools(session)}
    found = probes(scenario, rows)
    assert {p.tool for p in found} == listed
    succeeded = 0
    for probe in found:
        runtime.reset(session)
        if probe.valid is not None:
            ok = runtime.call_tool(session, probe.tool, probe.valid)
            assert not ok.is_error, (probe.tool, probe.valid, ok.http_status, ok.content)
            assert 200 <= ok.http_status < 300
            json.loads(ok.content)
            succeeded += 1
        before = runtime.state_hash(session)
        if probe.invalid_status == 422:  # schema violations surface as InvalidArgument naming the field
            with pytest.raises(errors.InvalidArgument, match=r"field '"):
                runtime.call_tool(session, probe.tool, probe.invalid)
        else:
            bad = runtime.call_tool(session, probe.tool, probe.invalid)
            assert bad.is_error, (probe.tool, probe.invalid, bad.content)
            assert bad.http_status == probe.invalid_status, (probe.tool, probe.invalid, bad.http_status, bad.content)
            assert "detail" in bad.content and len(bad.content) > 20
        assert runtime.state_hash(session) == before, f"{probe.tool}: a failed call changed the database"
    assert succeeded >= 0.9 * len(found)
    runtime.close_session(session)
