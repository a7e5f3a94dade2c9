"""The RuntimeInvoker service: run a signed UDF bundle for one claimed task attempt."""
