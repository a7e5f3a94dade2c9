"""The `trace` command line."""

import os

# Cryo runs in child processes; gRPC's fork handlers only add warnings there.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
