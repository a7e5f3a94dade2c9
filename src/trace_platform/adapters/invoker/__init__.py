"""Runtime invokers: run an untrusted UDF bundle for one claimed task attempt."""
