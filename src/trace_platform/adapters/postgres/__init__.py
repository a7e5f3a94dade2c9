"""PostgreSQL adapter: pool, migrations, named queries and repositories."""
