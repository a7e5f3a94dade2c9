-- name: resolve_published
-- The versions users read, org scoped, by registry name or published name (an alias,
-- dataset_aliases): a versioned dataset's current version, or the range versions of a
-- partitioned one (chain_sync streams) that the trusted ledger says its own stream's
-- completed ranges produced (the planned task, stream and version), or the outputs of a
-- DAG udf job (a versioned dataset without a current version): each version a completed
-- routed task (dag_routes) declared at routing and produced, one per upstream version.
-- Never a value a task sent: a version row's config_hash joins nothing.
SELECT d.id::text AS dataset_uuid,
       v.dataset_version::text AS dataset_version, v.storage_ref::text AS storage_ref,
       v.range_start, v.range_end
FROM datasets d
LEFT JOIN dataset_versions v ON v.dataset_uuid = d.id
    AND ((d.kind = 'versioned' AND v.dataset_version = d.current_version)
         OR (d.kind = 'partitioned' AND EXISTS (
             SELECT 1 FROM chain_sync_ranges r
             JOIN chain_sync_streams s ON s.job_id = r.job_id AND s.dataset_key = r.dataset_key
             JOIN chain_sync_jobs j ON j.id = r.job_id
             WHERE r.task_id = v.producer_task_id AND r.status = 'completed'
               AND r.dataset_version = v.dataset_version AND s.dataset_uuid = d.id AND j.org_id = d.org_id))
         OR (d.kind = 'versioned' AND d.current_version IS NULL AND EXISTS (
             SELECT 1 FROM dag_routes r JOIN tasks t ON t.id = r.task_id
             WHERE t.id = v.producer_task_id AND t.status = 'completed' AND r.org_id = d.org_id
               AND t.declared_outputs @> jsonb_build_array(jsonb_build_object(
                   'dataset_uuid', d.id::text, 'dataset_version', v.dataset_version::text)))))
WHERE d.org_id = $1 AND d.published
  AND (d.name = $2 OR (d.id = (SELECT a.dataset_uuid FROM dataset_aliases a WHERE a.org_id = $1 AND a.name = $2)
                        -- a registry name wins over an alias made before it: one name, one dataset
                        AND NOT EXISTS (SELECT 1 FROM datasets x WHERE x.org_id = $1 AND x.name = $2)))
ORDER BY v.range_start NULLS FIRST, v.dataset_version;

-- name: open_query_audit
-- The audit row ('running') and, when the dataset has classified columns the query reads,
-- the PII access row, in one statement and one round trip, sent while the query runs.
-- $9: the query reads every column; $10: the names it reads. Committed durably: this
-- is the record that the data was asked for, and the answer waits for it.
-- A task's query ($2, $3 set) is recorded only while (task, attempt) is the task's current,
-- running attempt (a primary-key lookup of tasks in the same statement): no row when it
-- is not, and the caller refuses the answer (ATTEMPT_NOT_CURRENT). A user's query ($2
-- NULL) is always recorded.
WITH current_attempt AS (
    SELECT 1 AS ok
    WHERE $2::uuid IS NULL
       OR EXISTS (SELECT 1 FROM tasks t WHERE t.id = $2::uuid AND t.attempt = $3::int AND t.status = 'running')
), audit AS (
    INSERT INTO query_audit (org_id, task_id, attempt, user_id, dataset_uuid, dataset_version, sql_sha256,
                             rpc, outcome)
    SELECT $1::uuid, $2::uuid, $3::int, $4::text, $5::uuid, $6::uuid, $7::text, $8::text, 'running'
    FROM current_attempt
    RETURNING id
), classified AS (
    SELECT ARRAY(SELECT c FROM unnest(d.pii_columns) AS c WHERE $9 OR lower(c) = ANY ($10::text[])) AS cols
    FROM datasets d
    WHERE d.id = $5 AND d.org_id = $1
), pii AS (
    INSERT INTO pii_access_audit (query_audit_id, org_id, task_id, user_id, dataset_uuid, columns)
    SELECT audit.id, $1, $2, $4, $5, classified.cols
    FROM audit, classified
    WHERE cardinality(classified.cols) > 0
    RETURNING id
)
SELECT audit.id AS audit_id, (SELECT count(*) FROM pii) AS pii_rows FROM audit;

-- name: close_query_audits
-- Outcome, row count and duration of finished queries, many per statement. Only a
-- 'running' row changes, so a close can be retried. set_config(..., true) skips the WAL
-- flush wait for this transaction only: these are statistics of an access already recorded.
WITH async_commit AS (
    SELECT set_config('synchronous_commit', 'off', true) AS setting
)
UPDATE query_audit a
SET outcome = c.outcome, row_count = c.row_count, duration_ms = c.duration_ms, failure_reason = c.reason
FROM async_commit,
     unnest($1::bigint[], $2::text[], $3::bigint[], $4::float8[], $5::text[])
         AS c (id, outcome, row_count, duration_ms, reason)
WHERE a.id = c.id AND a.outcome = 'running';

-- name: insert_version
INSERT INTO dataset_versions (dataset_uuid, dataset_version, storage_ref, config_hash, range_start, range_end, producer_task_id)
VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7)
ON CONFLICT (dataset_uuid, dataset_version) DO NOTHING
RETURNING dataset_version;

-- name: version_storage
SELECT storage_ref::text AS storage_ref FROM dataset_versions WHERE dataset_uuid = $1 AND dataset_version = $2;

-- name: upsert_dataset
-- Create the registry entry, or find it. A name already bound to another uuid is a conflict.
INSERT INTO datasets (id, org_id, name, pii_columns)
VALUES ($1, $2, $3, $4)
ON CONFLICT (org_id, name) DO UPDATE SET updated_at = now()
RETURNING id;

-- name: cut_over
-- Atomic cutover: readers see the old version until this commits, then the new one.
UPDATE datasets SET current_version = $2, published = true, pii_columns = $3, updated_at = now()
WHERE id = $1;
