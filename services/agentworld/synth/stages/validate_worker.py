"""Validation of a candidate bundle for the self-correction loop, run in a sandboxed child (child_jobs).

Runs `agentworld.validate.validate_bundle` (the logic of `agentworld validate`) and reshapes its report into what the
loop feeds back: {"ok", "problems", "env_problems", "task_failures": {task_id: reason}}.
`python -m agentworld.synth.stages.validate_worker BUNDLE_DIR` prints that as one JSON line (for debugging).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from agentworld.bundle import load_bundle
from agentworld.validate import ValidationReport, validate_bundle


def _adapt(report: ValidationReport) -> dict[str, Any]:
    """Per-task problems go back to that task's solution/verifier; the rest (import errors, tool schemas, counts)
    are the environment's and go back to app.py."""
    failures = {t.task_id: t.problem for t in report.tasks if t.problem}
    problems = report.all_problems()
    return {"ok": report.ok, "problems": problems, "env_problems": list(report.problems), "task_failures": failures}


def validate_dir(path: str) -> dict[str, Any]:
    return {**_adapt(validate_bundle(load_bundle(path))), "validator": "agentworld.validate"}


if __name__ == "__main__":
    print(json.dumps(validate_dir(sys.argv[1])))
    sys.stdout.flush()
