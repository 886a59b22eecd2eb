"""Container health check: exit 0 when envd answers grpc.health.v1 Check with SERVING (used by HEALTHCHECK)."""

from __future__ import annotations

import sys


def check(address: str = "127.0.0.1:50051", timeout_s: float = 3.0, service: str = "") -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return 0 if check(args[0] if args else "127.0.0.1:50051") else 1


if __name__ == "__main__":
    raise SystemExit(main())
