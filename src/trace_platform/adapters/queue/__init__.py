"""Wake-up queues: Postgres-backed for Lite, SQS for the cluster profile."""
