-- Reorg detection and repair of chain_sync jobs (migration 0014).

-- name: watched_jobs
-- Enabled, unfinished jobs with a blocks stream (the sentinel every stream is checked by)
-- and no repair in progress. At most $1.
SELECT j.id::text AS job_id, j.org_id::text AS org_id, j.name, j.spec::text AS spec,
       s.dataset_key, s.dataset_uuid::text AS dataset_uuid, s.rpc_pool
FROM chain_sync_jobs j
JOIN chain_sync_streams s ON s.job_id = j.id AND s.cryo_dataset_name = 'blocks'
WHERE j.enabled AND j.completed_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM chain_sync_reorgs o WHERE o.job_id = j.id AND o.status = 'repairing')
ORDER BY j.id
LIMIT $1;

-- name: unrecorded_ranges
-- Completed ranges of the blocks stream whose published version's hashes are not recorded
-- yet (new ranges, and ranges a repair cut over to a new version), lowest first, at most $3.
-- Only ranges reaching past $5 (the kept window's floor): older ones are past any reorg
-- the job repairs, and their pruned rows must not make them look unrecorded.
SELECT r.range_start, r.range_end, r.dataset_version::text AS dataset_version, v.storage_ref::text AS storage_ref
FROM chain_sync_ranges r
JOIN dataset_versions v ON v.dataset_uuid = $4 AND v.dataset_version = r.dataset_version
WHERE r.job_id = $1 AND r.dataset_key = $2 AND r.status = 'completed' AND r.range_end > $5
  AND NOT EXISTS (SELECT 1 FROM chain_sync_block_hashes h
                  WHERE h.job_id = r.job_id AND h.block_number = r.range_start
                    AND h.dataset_version = r.dataset_version)
ORDER BY r.range_start
LIMIT $3;

-- name: published_end
-- Exclusive end of the highest completed range of the blocks stream.
SELECT max(range_end) FROM chain_sync_ranges WHERE job_id = $1 AND dataset_key = $2 AND status = 'completed';

-- name: record_hashes
INSERT INTO chain_sync_block_hashes (job_id, block_number, block_hash, parent_hash, dataset_version)
SELECT $1, b.n, b.h, b.p, $5
FROM unnest($2::bigint[], $3::bytea[], $4::bytea[]) AS b (n, h, p)
ON CONFLICT (job_id, block_number) DO UPDATE
SET block_hash = EXCLUDED.block_hash, parent_hash = EXCLUDED.parent_hash,
    dataset_version = EXCLUDED.dataset_version, recorded_at = now();

-- name: recorded_tip
-- The highest recorded block that a completed range of the blocks stream still publishes.
SELECT max(h.block_number) AS tip
FROM chain_sync_block_hashes h
WHERE h.job_id = $1;

-- name: prune_hashes
-- Recorded hashes below the kept window (the tip minus twice max_reorg_depth): the
-- table stays bounded however long the job runs.
DELETE FROM chain_sync_block_hashes WHERE job_id = $1 AND block_number < $2;

-- name: recorded_between
SELECT block_number, block_hash, parent_hash
FROM chain_sync_block_hashes
WHERE job_id = $1 AND block_number >= $2 AND block_number < $3;

-- name: lock_job
SELECT id FROM chain_sync_jobs WHERE id = $1 AND enabled FOR UPDATE;

-- name: unsettled_ranges
-- Ranges of the job still being extracted that start at or below the tip: they may hold
-- the old fork's blocks, so the repair waits for them and takes them in.
SELECT count(*) FROM chain_sync_ranges WHERE job_id = $1 AND status = 'scheduled' AND range_start <= $2;

-- name: affected_ranges
-- Every stream's completed ranges that hold a block at or past the fork point.
SELECT r.dataset_key, r.range_start, r.range_end, r.task_id::text AS task_id,
       r.dataset_version::text AS dataset_version, s.dataset_uuid::text AS dataset_uuid, s.rpc_pool
FROM chain_sync_ranges r
JOIN chain_sync_streams s ON s.job_id = r.job_id AND s.dataset_key = r.dataset_key
WHERE r.job_id = $1 AND r.status = 'completed' AND r.range_end > $2
ORDER BY r.range_start, r.dataset_key;

-- name: insert_reorg
INSERT INTO chain_sync_reorgs (job_id, fork_block, tip_block, depth, status, ranges)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id;

-- name: insert_repair_tasks
-- The repair tasks (ordinary cryo_ingest tasks: declared outputs from their config, the
-- wake-up in the same statement) and one repair row per range and stream.
WITH r AS (
    SELECT * FROM unnest($2::uuid[], $3::jsonb[], $4::bigint[], $5::bigint[])
        AS r (task_id, config, range_start, range_end)
), t AS (
    INSERT INTO tasks (id, org_id, operator, config, inputs, datasets, status, attempt, max_attempts,
                       declared_outputs)
    SELECT r.task_id, $1, 'cryo_ingest', r.config, '[]', '[]', 'queued', 1, $6,
           (SELECT jsonb_agg(jsonb_build_object(
                       'dataset_uuid', o ->> 'dataset_uuid', 'dataset_version', o ->> 'dataset_version',
                       'config_hash', o ->> 'config_hash', 'range_start', r.range_start, 'range_end', r.range_end))
            FROM jsonb_array_elements(r.config -> 'outputs') AS o)
    FROM r
    RETURNING id
), wake AS (
    INSERT INTO outbox (kind, queue, payload)
    SELECT 'enqueue_task', 'tasks', jsonb_build_object('task_id', id) FROM t
)
INSERT INTO chain_sync_repairs (reorg_id, job_id, dataset_key, range_start, range_end, task_id, old_task_id,
                                old_version, new_version)
SELECT $7, $8, p.dataset_key, p.range_start, p.range_end, p.task_id, p.old_task_id, p.old_version, p.new_version
FROM unnest($9::text[], $10::bigint[], $11::bigint[], $12::uuid[], $13::uuid[], $14::uuid[], $15::uuid[])
    AS p (dataset_key, range_start, range_end, task_id, old_task_id, old_version, new_version);

-- name: stop_too_deep
-- A reorg deeper than the job allows: the job stops (paused) and every stream says why.
WITH j AS (
    UPDATE chain_sync_jobs SET enabled = false, last_error_category = 'reorg', last_error_at = now(),
                               updated_at = now()
    WHERE id = $1
    RETURNING id
)
UPDATE chain_sync_streams SET last_error = 'reorg/REORG_TOO_DEEP', last_error_at = now()
WHERE job_id = (SELECT id FROM j);

-- name: reorg_summary
-- Per job of the org (or the named one): reorgs seen, deepest and latest depth, ranges
-- re-extracted by finished repairs, whether one is in progress, and why the job stopped.
SELECT j.id::text AS job_id,
       count(o.id) AS reorgs_seen,
       coalesce(max(o.depth), 0) AS max_depth,
       coalesce((array_agg(o.depth ORDER BY o.id DESC))[1], 0) AS last_depth,
       coalesce(sum(o.ranges) FILTER (WHERE o.status = 'repaired'), 0) AS ranges_repaired,
       bool_or(o.status = 'repairing') AS repairing,
       CASE WHEN NOT j.enabled AND (array_agg(o.status ORDER BY o.id DESC))[1] = 'too_deep'
            THEN 'REORG_TOO_DEEP' ELSE '' END AS stopped_reason,
       -- A repair task of the open repair that failed for good: its `<category>/<REASON>`
       -- (`trace resume` retries it); the rest of the message may quote the node.
       coalesce((SELECT coalesce(substring(t.error_message FROM '^[a-z]+/[A-Z_]+'), 'task/TASK_FAILED')
                 FROM chain_sync_repairs p
                 JOIN chain_sync_reorgs r ON r.id = p.reorg_id AND r.status = 'repairing'
                 JOIN tasks t ON t.id = p.task_id
                 WHERE p.job_id = j.id AND t.status = 'failed' AND t.next_retry_at IS NULL
                 LIMIT 1), '') AS repair_error
FROM chain_sync_jobs j
JOIN chain_sync_reorgs o ON o.job_id = j.id
WHERE j.org_id = $1 AND ($2 = '' OR j.name = $2)
GROUP BY j.id, j.enabled;

-- name: recent_reorgs
SELECT job_id::text AS job_id, id, fork_block, tip_block, depth, status, ranges, detected_at, repaired_at
FROM (
    SELECT o.*, row_number() OVER (PARTITION BY o.job_id ORDER BY o.id DESC) AS n
    FROM chain_sync_reorgs o
    JOIN chain_sync_jobs j ON j.id = o.job_id
    WHERE j.org_id = $1 AND ($2 = '' OR j.name = $2)
) recent
WHERE n <= $3
ORDER BY job_id, id DESC;

-- name: invalidations
-- The invalidations of a job's datasets, newest first, at most $3.
SELECT i.id, i.dataset_uuid::text AS dataset_uuid, i.reason, i.reorg_id, i.range_start, i.range_end,
       i.replaced_version::text AS replaced_version, i.new_version::text AS new_version, i.created_at
FROM data_invalidations i
JOIN chain_sync_streams s ON s.dataset_uuid = i.dataset_uuid
JOIN chain_sync_jobs j ON j.id = s.job_id
WHERE j.org_id = $1 AND j.name = $2
ORDER BY i.id DESC
LIMIT $3;

-- name: retry_failed_repairs
-- Resume gives the repair tasks of the job's open repair that failed for good one more
-- attempt (same range, same declared version: nothing is duplicated); returns how many.
WITH stuck AS (
    SELECT t.id FROM tasks t
    WHERE t.status = 'failed' AND t.next_retry_at IS NULL
      AND t.id IN (SELECT p.task_id FROM chain_sync_repairs p
                   JOIN chain_sync_reorgs o ON o.id = p.reorg_id AND o.status = 'repairing'
                   JOIN chain_sync_jobs j ON j.id = p.job_id
                   WHERE j.org_id = $1 AND j.name = $2 AND p.status = 'pending')
    FOR UPDATE OF t
), requeued AS (
    UPDATE tasks t
    SET status = 'queued', attempt = t.attempt + 1, max_attempts = t.attempt + 1, lease_token = NULL,
        lease_expires_at = NULL, worker_id = NULL, error_message = NULL, updated_at = now()
    FROM stuck WHERE t.id = stuck.id
    RETURNING t.id
), wake AS (
    INSERT INTO outbox (kind, queue, payload)
    SELECT 'enqueue_task', 'tasks', jsonb_build_object('task_id', id) FROM requeued
)
SELECT count(*) FROM requeued;
