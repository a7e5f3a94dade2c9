"""chain_sync: admin RPCs, the range planner and the head observer (Dispatcher process)."""
