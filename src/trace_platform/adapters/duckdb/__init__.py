"""DuckDB for untrusted SQL: hardened databases and a bounded pool of them."""
