"""Benchmark container images and the Docker backend; prints one JSON object.

- build_s_per_env: environment image build time with a warm base/runtime (sequential, then `--workers 2` in parallel)
- added_bytes_per_env: bytes each environment image adds over the runtime image (target <= 1 MB)
- start_to_first_call_ms: container start -> first successful CallTool, p50/p99 (target p50 <= 300 ms), next to the
  same measure for `agentworld serve` as a plain host process (the baseline: what the container itself costs)
- burst: 50 containers started at once: seconds until all run and until all serve, containers/s

Needs a Docker engine (tests/infra/install-docker.sh) and shared/awm/mini_library. Only loopback and networks this
script creates are contacted.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict:
    return {"n": len(values), "p50": round(pct(values, 50), 1), "p99": round(pct(values, 99), 1),
            "mean": round(statistics.fmean(values), 1), "min": round(min(values), 1), "max": round(max(values), 1)}


def first_call(address: str, env_id: str, tool: str, args: dict, t0: float, deadline_s: float = 120) -> float:
    """Milliseconds from t0 until a session is created and a tool call succeeds at address."""
    from agentworld.client import EnvClient

    host, port = address.rsplit(":", 1)
    while time.perf_counter() - t0 < deadline_s:
        try:
            socket.create_connection((host, int(port)), timeout=0.2).close()
        except OSError:
            time.sleep(0.005)
            continue
        try:
            with EnvClient(address) as client, client.create_session(env_id) as session:
                result = session.call_tool(tool, args)
                if not result.is_error:
                    return (time.perf_counter() - t0) * 1000
        except Exception:
            time.sleep(0.01)
    raise TimeoutError(f"{address} did not serve within {deadline_s}s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=6, help="environment images to build")
    parser.add_argument("--starts", type=int, default=10, help="container start samples")
    parser.add_argument("--host-starts", type=int, default=5, help="host-process start samples (baseline)")
    parser.add_argument("--burst", type=int, default=50, help="containers started at once")
    opts = parser.parse_args()

    from agentworld.bundle import load_bundle, write_bundle
    from agentworld.bundle.awm_import import import_awm
    from agentworld.images.backend import DockerBackend
    from agentworld.images.build import ImageBuilder

    mini = REPO.parent / "shared" / "awm" / "mini_library"
    out: dict = {"bench": "images"}
    tmp = Path(tempfile.mkdtemp(prefix="aw-bench-images-"))
    source = list(import_awm(mini, tmp / "awm"))[0]
    run_tag = os.urandom(3).hex()  # fresh ids: every build below is a real build, not a skip

    def bundles(n: int, label: str) -> list[Path]:
        dirs = []
        for i in range(n):
            b = load_bundle(source)
            b.manifest.id = f"bench_{label}_{run_tag}_{i}"
            dirs.append(write_bundle(b, tmp / label))
        return dirs

    builder = ImageBuilder(workers=2, log=lambda m: print(m, file=sys.stderr))
    t0 = time.perf_counter()
    builder.build_runtime()
    out["runtime"] = {"image": builder.runtime_image, "size_bytes": builder.runtime_size,
                      "build_s_warm_cache": round(time.perf_counter() - t0, 1)}

    seq = bundles(opts.builds, "seq")
    seq_times = []
    for d in seq:
        t = time.perf_counter()
        img = builder.build_env(d)
        seq_times.append(time.perf_counter() - t)
        assert not img.skipped
    par = bundles(opts.builds, "par")
    t = time.perf_counter()
    par_images = builder.build_all(par, progress=False)
    par_s = time.perf_counter() - t
    t = time.perf_counter()
    skipped = builder.build_all(par, progress=False)
    skip_s = time.perf_counter() - t
    assert all(i.skipped for i in skipped)
    added = [i.added_bytes for i in par_images]
    print(json.dumps({"progress": "builds done"}), file=sys.stderr)
    out["build_s_per_env"] = {"sequential": summary(seq_times),
                              "parallel_workers_2": round(par_s / len(par), 2),
                              "unchanged_skip_s_per_env": round(skip_s / len(par), 3)}
    out["added_bytes_per_env"] = {"max": max(added), "mean": round(statistics.fmean(added)),
                                  "bundle_bytes": sum(p.stat().st_size for p in par[0].iterdir()),
                                  "target_max": 1_000_000, "ok": max(added) <= 1_000_000}

    bundle = load_bundle(par[0])
    step = bundle.tasks[0].solution[0]
    image = par_images[0].image

    # Baseline: envd as a plain host process on loopback.
    host_ms = []
    for _ in range(opts.host_starts):
        port = free_port()
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(Path(sys.executable).with_name("agentworld")), "serve", str(par[0]),
                                 "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            host_ms.append(first_call(f"127.0.0.1:{port}", bundle.env_id, step.tool, step.arguments, t0))
        finally:
            proc.terminate()
            proc.wait(10)

    with DockerBackend(handle_signals=False, builder=builder) as backend:
        # Docker's own share: create + start a hardened container on the internal network running /bin/true to exit.
        network = backend._ensure_network()
        docker_ms = []
        for _ in range(opts.starts):
            t0 = time.perf_counter()
            c = backend.client.containers.run(image, entrypoint=["/bin/true"], detach=True, user="10001:10001",
                                              read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges"],
                                              network=network.name, labels={"dev.agentworld.backend": backend.id})
            c.wait()
            docker_ms.append((time.perf_counter() - t0) * 1000)
            c.remove(force=True)
        container_ms = []
        for _ in range(opts.starts):
            t0 = time.perf_counter()
            [b] = backend.start_images([(image, [bundle.env_id])], wait=False)
            container_ms.append(first_call(b.address, bundle.env_id, step.tool, step.arguments, t0))
            backend.client.containers.get(b.container_id).remove(force=True)
        out["start_to_first_call_ms"] = {"container": summary(container_ms), "host_process_baseline": summary(host_ms),
                                         "docker_run_true_to_exit": summary(docker_ms),
                                         "container_overhead_p50_ms": round(pct(container_ms, 50) - pct(host_ms, 50)),
                                         "target_p50": 300, "ok": pct(container_ms, 50) <= 300}
        print(json.dumps(out), file=sys.stderr)

    with DockerBackend(handle_signals=False, builder=builder, ready_timeout_s=600) as backend:
        t0 = time.perf_counter()
        started = backend.start_images([(image, [bundle.env_id])], replicas=opts.burst, wait=False)
        running_s = time.perf_counter() - t0
        backend.wait_ready(started, timeout_s=600)
        serving_s = time.perf_counter() - t0
        out["burst"] = {"containers": len(started), "all_running_s": round(running_s, 2),
                        "all_serving_s": round(serving_s, 2),
                        "containers_per_s_running": round(len(started) / running_s, 1),
                        "containers_per_s_serving": round(len(started) / serving_s, 2),
                        "crashes": len(backend.crashes)}
        t = time.perf_counter()
    out["burst"]["teardown_s"] = round(time.perf_counter() - t, 2)

    for img in par_images + [builder.build_env(d) for d in seq]:
        try:
            builder.client.images.remove(img.image, noprune=False)
        except Exception:
            pass
    out["machine"] = {"cpus": os.cpu_count(), "note": "2 shared cores; other work runs concurrently"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
