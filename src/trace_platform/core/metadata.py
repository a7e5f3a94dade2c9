"""gRPC metadata keys: the wire contract shared by servers and the SDK."""

WORKER_TOKEN = "x-trace-worker-token"
ADMIN_TOKEN = "x-trace-admin-token"
TASK_CAPABILITY = "x-trace-task-capability"
AUTHORIZATION = "authorization"
