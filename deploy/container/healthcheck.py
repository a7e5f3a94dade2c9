"""Container HEALTHCHECK: exit 0 only when grpc.health.v1 says SERVING, asked on the
plaintext health-only port (TRACE_HEALTH_LISTEN) when there is one (the main port may
serve TLS only), else on TRACE_LISTEN's port.

Uses the grpcio the image already has, so no probe binary is added to the image."""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main() -> int:
    listen = os.environ.get("TRACE_HEALTH_LISTEN") or os.environ.get("TRACE_LISTEN", "0.0.0.0:50051")
    port = listen.rsplit(":", 1)[1]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=3)
        except grpc.RpcError as exc:
            print(f"unhealthy: {exc.code().name}", file=sys.stderr)
            return 1
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
