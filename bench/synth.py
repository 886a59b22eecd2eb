"""Benchmark the offline generator: environments/second for N validated environments, peak memory, and the
shape of what it made. Prints one JSON object.

    .venv/bin/python bench/synth.py --n 1000            # the target: 1,000 validated in < 5 min on 2 cores

Baseline in the same run: generation alone (no validation) for the first --baseline-n environments, so the
cost of validation (runtime load + replays + sandboxed verifiers) is visible next to the generator's own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services"))

from agentworld.synth.diversity import diversity  # noqa: E402
from agentworld.synth.run import synthesize  # noqa: E402


def _stats(values: list[int]) -> dict:
    return {"mean": round(statistics.mean(values), 2), "min": min(values), "max": max(values)} if values else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--baseline-n", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None, help="keep the bundles here (default: a temp dir)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="agentworld-bench-synth-") as tmp:
        out = args.out or Path(tmp) / "bundles"
        base_n = min(args.baseline_n, args.n)
        started = time.perf_counter()
        synthesize(base_n, seed=args.seed, out=None, workers=args.workers, validate=False)
        base_s = time.perf_counter() - started

        started = time.perf_counter()
        report = synthesize(args.n, seed=args.seed, out=out, workers=args.workers, validate=True)
        wall = time.perf_counter() - started
        written = sum(1 for p in out.iterdir() if (p / "env.json").is_file())

    results = report.results
    ok = [r for r in results if r.ok]
    div = diversity([r.env_id for r in results], [r.title for r in results], [r.table_names for r in results],
                    [r.tool_names for r in results], [r.domains for r in results])
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    cpu = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = sum(x.ru_utime + x.ru_stime for x in cpu)  # load-independent cost (this machine is shared)
    print(json.dumps({
        "bench": "synth-offline",
        "n": args.n,
        "seed": args.seed,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "wall_s": round(wall, 2),
        "envs_per_s": round(args.n / wall, 3),
        "target_wall_s": 300,
        "meets_target": wall < 300 and len(ok) == args.n,
        "baseline_generate_only": {"n": base_n, "wall_s": round(base_s, 2), "envs_per_s": round(base_n / base_s, 2)},
        "mean_generate_s": round(statistics.mean(r.generate_s for r in results), 4),
        "mean_validate_s": round(statistics.mean(r.validate_s for r in results), 4),
        "cpu_s": round(cpu_s, 1),
        "cpu_s_per_env": round(cpu_s / (args.n + base_n), 3),
        "projected_wall_s_on_idle_cores": round(cpu_s * args.n / (args.n + base_n) / (os.cpu_count() or 1), 1),
        "peak_rss_mb": {"self": round(self_rss, 1), "largest_child": round(child_rss, 1)},
        "validation_pass_rate": round(len(ok) / args.n, 4),
        "bundles_written": written,
        "failures": [{"env_id": r.env_id, "problems": r.problems[:3]} for r in results if not r.ok][:10],
        "tools_per_env": _stats([r.tools for r in ok]),
        "tables_per_env": _stats([r.tables for r in ok]),
        "tasks_per_env": _stats([r.tasks for r in ok]),
        "tasks_3plus_calls_per_env": _stats([r.long_tasks for r in ok]),
        "query_tasks_per_env": _stats([r.query_tasks for r in ok]),
        "diversity": div.to_dict(),
    }, sort_keys=False))


if __name__ == "__main__":
    main()
