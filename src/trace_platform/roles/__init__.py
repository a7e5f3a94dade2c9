"""One composition root per role, and the host that runs any set of them in one process.

A role is built from Settings and what its host gives it (``RoleContext``: a pool, a
queue, named wake-ups, the process's address); it never patches a component after
construction. The cluster profile runs one role per process (``trace serve ROLE``),
Lite all of them in one (``trace_platform.lite.platform``).
"""
