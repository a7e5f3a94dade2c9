"""Attacks from the security review (issue 13), each run against real servers, real
PostgreSQL and real sandboxed runs. A test here fails if its wall stops holding."""
