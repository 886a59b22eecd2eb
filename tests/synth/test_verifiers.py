"""Verifiers reject plausible wrong solutions: right change on the wrong row, partial change, extra change,
wrong answer, and a correct answer alongside an unwanted change."""

from __future__ import annotations

import re

import pytest

from agentworld.runtime import errors


def _run(runtime, bundle, task, calls, answer=None):  # noqa: ANN001, ANN202
    session = runtime.create_session(bundle.env_id, task.id).session_id
    try:
        for tool, args in calls:
            try:
                result = runtime.call_tool(session, tool, args)
            except errors.InvalidArgument:
                return None
            if result.is_error:
                return None
        return runtime.verify(session, task.id, answer).outcome
    finally:
        runtime.close_session(session)


def _calls(task):  # noqa: ANN001, ANN202
    return [(c.tool, dict(c.arguments)) for c in task.solution]


@pytest.mark.parametrize("index", [0, 3])
def test_wrong_solutions_are_rejected(sample, runtime, index: int) -> None:  # noqa: ANN001
    _, _, bundle = sample[index]
    checked = 0
    for task in bundle.tasks:
        calls = _calls(task)
        assert _run(runtime, bundle, task, calls, task.expected_answer) == "complete"
        if task.kind == "query":
            wrong = re.sub(r"\d", lambda m: str((int(m.group()) + 3) % 10), task.expected_answer or "")
            if wrong != task.expected_answer and '"' not in (task.expected_answer or ""):
                assert _run(runtime, bundle, task, calls, wrong) == "others", task.instruction
                checked += 1
            continue
        *prefix, last = calls
        # The same final call aimed at other rows: whichever succeed must not verify.
        id_keys = [k for k in last[1] if k.endswith("_id")]
        for key in id_keys[:1]:
            for other in range(1, 8):
                if other == last[1][key]:
                    continue
                outcome = _run(runtime, bundle, task, [*prefix, (last[0], {**last[1], key: other})])
                if outcome is not None:
                    assert outcome == "others", (task.instruction, key, other)
                    checked += 1
                    break
        # Partial: a multi-step mutation without its last call (bulk) or with one field left out (update).
        if len(calls) >= 4:
            assert _run(runtime, bundle, task, calls[:-1]) == "others", task.instruction
            checked += 1
        fields = [k for k in last[1] if not k.endswith("_id") and k != "amount"]
        if last[0].startswith("update_") and len(fields) >= 2:
            partial = {k: v for k, v in last[1].items() if k != fields[-1]}
            assert _run(runtime, bundle, task, [*prefix, (last[0], partial)]) == "others", task.instruction
            checked += 1
        if last[0].startswith("create_") and fields:
            changed = dict(last[1])
            value = changed[fields[-1]]
            changed[fields[-1]] = (value + 1 if isinstance(value, int | float) and not isinstance(value, bool)
                                   else (not value if isinstance(value, bool) else f"{value} X"))
            outcome = _run(runtime, bundle, task, [*prefix, (last[0], changed)])
            assert outcome in ("others", None), task.instruction
            checked += 1
        # Correct change plus doing it twice / plus an unrelated extra call: extra changes are rejected.
        if last[0].startswith(("create_", "book_", "enroll_", "register_")) or "amount" in last[1]:
            outcome = _run(runtime, bundle, task, [*calls, last])
            assert outcome in ("others", None), task.instruction
            checked += 1
    assert checked >= 5


def test_query_answer_with_side_effect_is_rejected(sample, runtime) -> None:  # noqa: ANN001
    _, _, bundle = sample[0]
    query = next(t for t in bundle.tasks if t.kind == "query")
    mutation = next(t for t in bundle.tasks if t.kind == "mutation")
    calls = _calls(query) + _calls(mutation)
    assert _run(runtime, bundle, query, calls, query.expected_answer) == "others"


def test_answers_are_read_flexibly_but_strictly(sample) -> None:  # noqa: ANN001
    namespace: dict = {}
    exec(compile(sample[0][2].verifiers_py, "verifiers.py", "exec"), namespace)  # noqa: S102 - our own output
    check = namespace["_answer_problems"]
    assert check("The total is $1,234.50, due June 3rd.", [1234.5, "2025-06-03"]) == []
    assert check("Total 1234.5 due 06/03/2025", [1234.5, "2025-06-03"]) == []
    assert check("The total is 1234.05, due June 30.", [1234.5, "2025-06-03"])  # both facts wrong
    assert check("It is the gig 'amber lamp'.", ["Amber Lamp"]) == []
    assert check("", ["Amber Lamp"]) and check(None, [3])
