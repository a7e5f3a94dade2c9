-- The Query Service's own database role: it reads what resolving a query needs (the
-- dataset registry, the chain_sync ledger of partitioned versions, the DAG routing ledger
-- of udf outputs, whether an attempt is current, who a user is) and writes only its audit
-- rows. It cannot read task configs, alert definitions (webhook URLs), bundles or the
-- outbox, and cannot change any state.
-- A deployment logs in as a member: CREATE ROLE trace_query_login LOGIN IN ROLE trace_query.
-- The role is cluster-wide, so it is created only once; the grants are this database's.

DO $$
BEGIN
    CREATE ROLE trace_query NOLOGIN;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;  -- another database made it first
END
$$;

GRANT USAGE ON SCHEMA public TO trace_query;
GRANT SELECT ON datasets, dataset_versions, dataset_aliases,
                chain_sync_jobs, chain_sync_streams, chain_sync_ranges,
                dag_routes, users, memberships
    TO trace_query;
-- Whether an attempt is the task's current, running one, and which versions a routed udf
-- task declared: these columns, never its config.
GRANT SELECT (id, attempt, status, declared_outputs) ON tasks TO trace_query;
-- Open an audit row (RETURNING id) and close it (outcome, counts, duration) by id.
GRANT INSERT ON query_audit, pii_access_audit TO trace_query;
GRANT SELECT (id, outcome) ON query_audit TO trace_query;
GRANT SELECT (id) ON pii_access_audit TO trace_query;
GRANT UPDATE (outcome, row_count, duration_ms, failure_reason) ON query_audit TO trace_query;
GRANT USAGE ON SEQUENCE query_audit_id_seq, pii_access_audit_id_seq TO trace_query;
