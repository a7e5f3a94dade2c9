"""Dispatcher service: task lifecycle, leases, fencing, retries, outbox."""
