-- name: ensure_dag
INSERT INTO dags (id, org_id, name) VALUES ($1, $2, $3)
ON CONFLICT (org_id, name) DO NOTHING;

-- name: lock_dag
-- Every write to a DAG (deploy, activate, rollback) holds its row: they serialize per DAG.
SELECT id, active_version_id, previous_version_id FROM dags WHERE org_id = $1 AND name = $2 FOR UPDATE;

-- name: version_by_sha
SELECT id, seq, yaml_sha256, created_at FROM dag_versions WHERE dag_id = $1 AND yaml_sha256 = $2;

-- name: insert_version
INSERT INTO dag_versions (id, dag_id, org_id, seq, yaml, yaml_sha256, created_by)
SELECT $1, $2, $3, coalesce(max(seq), 0) + 1, $4, $5, $6 FROM dag_versions WHERE dag_id = $2
RETURNING id, seq, yaml_sha256, created_at;

-- name: insert_jobs
INSERT INTO dag_jobs (dag_version_id, name, kind, spec, resolved)
SELECT $1, j.name, j.kind, j.spec::jsonb, j.resolved::jsonb
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS j (name, kind, spec, resolved);

-- name: get_dag
SELECT d.id, d.name, d.created_at, a.id AS active_id, a.seq AS active_seq, a.yaml_sha256 AS active_sha256,
       a.created_at AS active_created_at,
       (SELECT count(*) FROM dag_versions v WHERE v.dag_id = d.id) AS version_count
FROM dags d LEFT JOIN dag_versions a ON a.id = d.active_version_id
WHERE d.org_id = $1 AND d.name = $2;

-- name: list_versions
-- Keyset page in deploy order: after ($3 created_at, $4 id), $5 rows.
SELECT v.id, v.seq, v.yaml_sha256, v.created_at, (v.id = d.active_version_id) AS active
FROM dag_versions v JOIN dags d ON d.id = v.dag_id
WHERE d.org_id = $1 AND d.name = $2
  AND ($3::timestamptz IS NULL OR (v.created_at, v.id) > ($3::timestamptz, $4::uuid))
ORDER BY v.created_at, v.id
LIMIT $5;

-- name: find_version
-- A version of this DAG by id ($2 uuid) or number ($3).
SELECT id, seq, yaml_sha256, created_at FROM dag_versions
WHERE dag_id = $1 AND (id = $2::uuid OR seq = $3::int);

-- name: version_jobs
SELECT name, kind, spec::text AS spec, resolved::text AS resolved FROM dag_jobs WHERE dag_version_id = $1;

-- name: chain_sync_owner
SELECT id, owner_dag_id FROM chain_sync_jobs WHERE org_id = $1 AND name = $2;

-- name: adopt_chain_sync
UPDATE chain_sync_jobs SET owner_dag_id = $2, enabled = true, updated_at = now() WHERE id = $1;

-- name: pause_dropped_chain_sync
-- The DAG's chain_sync jobs its new version no longer has stop planning.
UPDATE chain_sync_jobs SET enabled = false, updated_at = now()
WHERE owner_dag_id = $1 AND NOT (name = ANY($2::text[])) AND enabled;

-- name: stream_dataset
SELECT s.dataset_uuid FROM chain_sync_streams s JOIN chain_sync_jobs j ON j.id = s.job_id
WHERE j.org_id = $1 AND j.name = $2 AND s.dataset_key = $3;

-- name: register_udf_dataset
INSERT INTO datasets (id, org_id, name, kind) VALUES ($1, $2, $3, 'versioned')
ON CONFLICT DO NOTHING;

-- name: dataset_owner
SELECT id FROM datasets WHERE org_id = $1 AND name = $2;

-- name: insert_inputs
INSERT INTO dag_job_inputs (dag_version_id, job_name, upstream, dataset_uuid)
SELECT $1, i.job_name, i.upstream, i.dataset_uuid
FROM unnest($2::text[], $3::text[], $4::uuid[]) AS i (job_name, upstream, dataset_uuid)
ON CONFLICT DO NOTHING;

-- name: set_active
UPDATE dags SET previous_version_id = active_version_id, active_version_id = $2, updated_at = now()
WHERE id = $1;

-- name: route_targets
-- The published version, and every job of an ACTIVE version in the dataset's org that
-- reads it. FOR SHARE on the DAG rows: an activation committing now waits for this
-- routing to end, and a routing after it sees the new version.
SELECT g.id AS dag_id, g.name AS dag_name, g.org_id, g.active_version_id AS dag_version_id,
       j.name AS job_name, j.kind, j.spec::text AS spec, j.resolved::text AS resolved, i.upstream,
       v.storage_ref::text AS storage_ref, v.config_hash, v.range_start, v.range_end
FROM dataset_versions v
JOIN datasets ds ON ds.id = v.dataset_uuid
JOIN dags g ON g.org_id = ds.org_id AND g.active_version_id IS NOT NULL
JOIN dag_job_inputs i ON i.dag_version_id = g.active_version_id AND i.dataset_uuid = v.dataset_uuid
JOIN dag_jobs j ON j.dag_version_id = i.dag_version_id AND j.name = i.job_name
WHERE v.dataset_uuid = $1 AND v.dataset_version = $2
ORDER BY g.id, j.name
FOR SHARE OF g;

-- name: insert_routes
-- One ledger row per (DAG job, upstream version): a second routing of the same version
-- (a duplicate event, a retried batch, a Dispatcher killed before its commit) inserts
-- nothing, and only the rows this statement created get their task and wake-up.
WITH r AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::uuid[], $6::uuid[], $7::uuid[],
                         $8::text[], $9::jsonb[], $10::jsonb[], $11::jsonb[], $12::int[])
        AS r (dag_id, job_name, dataset_uuid, dataset_version, org_id, dag_version_id, task_id,
              operator, config, datasets, declared_outputs, max_attempts)
), ledger AS (
    INSERT INTO dag_routes (dag_id, job_name, dataset_uuid, dataset_version, org_id, dag_version_id, task_id)
    SELECT dag_id, job_name, dataset_uuid, dataset_version, org_id, dag_version_id, task_id FROM r
    ON CONFLICT DO NOTHING
    RETURNING task_id
), created AS (
    INSERT INTO tasks (id, org_id, operator, config, datasets, status, attempt, max_attempts,
                       declared_outputs, dag_version_id)
    SELECT r.task_id, r.org_id, r.operator, r.config, r.datasets, 'queued', 1, r.max_attempts,
           r.declared_outputs, r.dag_version_id
    FROM r JOIN ledger USING (task_id)
    RETURNING id
)
INSERT INTO outbox (kind, queue, payload)
SELECT 'enqueue_task', 'tasks', jsonb_build_object('task_id', id) FROM created
RETURNING payload ->> 'task_id' AS task_id;

-- name: event_version
-- An event names a version: route it only if it is registered (a publication).
SELECT 1 FROM dataset_versions WHERE dataset_uuid = $1 AND dataset_version = $2;
