-- chain_sync jobs, streams, the range ledger and head observations.

-- name: get_job_for_update
SELECT id, chain_id, yaml_hash, spec::text AS spec FROM chain_sync_jobs WHERE org_id = $1 AND name = $2 FOR UPDATE;

-- name: insert_job
INSERT INTO chain_sync_jobs (id, org_id, name, chain_id, mode, from_block, to_block, tail_lag,
                             head_poll_interval_seconds, max_head_age_seconds, spec, yaml_hash)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12);

-- name: update_job
-- A changed target reopens a completed job; the cursor is never touched here.
UPDATE chain_sync_jobs
SET mode = $2, from_block = $3, to_block = $4, tail_lag = $5, head_poll_interval_seconds = $6,
    max_head_age_seconds = $7, spec = $8::jsonb, yaml_hash = $9, completed_at = NULL, updated_at = now()
WHERE id = $1;

-- name: upsert_stream
-- Returns the stream's dataset UUID: the stored one for an existing stream ($5 only mints a new one).
INSERT INTO chain_sync_streams (job_id, dataset_key, cryo_dataset_name, rpc_pool, dataset_uuid, config_hash,
                                chunk_size, max_inflight, next_block)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (job_id, dataset_key) DO UPDATE
SET rpc_pool = EXCLUDED.rpc_pool, chunk_size = EXCLUDED.chunk_size, max_inflight = EXCLUDED.max_inflight,
    updated_at = now()
RETURNING dataset_uuid;

-- name: stream_keys
SELECT dataset_key FROM chain_sync_streams WHERE job_id = $1;

-- name: register_partitioned_dataset
-- The registry entry users query; its rows are the stream's completed range versions.
INSERT INTO datasets (id, org_id, name, kind, partition_config_hash, published)
VALUES ($1, $2, $3, 'partitioned', $4, true)
ON CONFLICT (org_id, name) DO UPDATE SET updated_at = now()
RETURNING id, kind;

-- name: job_spec
SELECT spec::text AS spec FROM chain_sync_jobs WHERE org_id = $1 AND name = $2;

-- name: set_enabled
UPDATE chain_sync_jobs SET enabled = $3, updated_at = now() WHERE org_id = $1 AND name = $2 RETURNING id;

-- name: retry_failed_ranges
-- Resume gives ranges whose task failed for good one more attempt (the range and its
-- version stay the same, so nothing is duplicated); returns how many.
WITH stuck AS (
    SELECT t.id FROM tasks t
    WHERE t.status = 'failed' AND t.next_retry_at IS NULL
      AND t.id IN (SELECT r.task_id FROM chain_sync_ranges r JOIN chain_sync_jobs j ON j.id = r.job_id
                   WHERE j.org_id = $1 AND j.name = $2 AND r.status = 'scheduled')
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

-- name: plannable_streams
-- Streams with room in their window and something left to plan (an idle pass reads, never
-- writes), one per group of streams that plan together (see lock_group). A fixed_target
-- stream has something left only below both its target and the observed chain (beyond
-- the head it waits, see core/planner.py).
SELECT job_id, dataset_key FROM (
    SELECT DISTINCT ON (s.job_id, s.rpc_pool, s.chunk_size, s.max_inflight, s.next_block)
           s.job_id, s.dataset_key, s.updated_at
    FROM chain_sync_streams s
    JOIN chain_sync_jobs j ON j.id = s.job_id
    LEFT JOIN chain_head_observations h
        ON h.org_id = j.org_id AND h.chain_id = j.chain_id AND h.rpc_pool = s.rpc_pool
    WHERE j.enabled AND j.completed_at IS NULL
      AND (j.mode = 'follow_head' OR (h.head_block IS NOT NULL AND s.next_block < least(j.to_block, h.head_block + 1)))
      AND (SELECT count(*) FROM chain_sync_ranges r
           WHERE r.job_id = s.job_id AND r.dataset_key = s.dataset_key AND r.status = 'scheduled') < s.max_inflight
    ORDER BY s.job_id, s.rpc_pool, s.chunk_size, s.max_inflight, s.next_block, s.dataset_key
) plannable
ORDER BY updated_at
LIMIT $1;

-- name: lock_group
-- The stream and its siblings that plan together (same pool, chunk, window and cursor):
-- one Cryo call then extracts every dataset of a range. Another Dispatcher skips them.
SELECT s.dataset_key, s.next_block, s.dataset_uuid::text, j.org_id::text, j.name, j.chain_id,
       j.spec::text AS spec, j.enabled,
       (SELECT count(*) FROM chain_sync_ranges r
        WHERE r.job_id = s.job_id AND r.dataset_key = s.dataset_key AND r.status = 'scheduled') AS in_flight,
       h.head_block, extract(epoch FROM h.observed_at) AS observed_at
FROM chain_sync_streams s
JOIN chain_sync_streams lead ON lead.job_id = s.job_id AND lead.dataset_key = $2
JOIN chain_sync_jobs j ON j.id = s.job_id
LEFT JOIN chain_head_observations h ON h.org_id = j.org_id AND h.chain_id = j.chain_id AND h.rpc_pool = s.rpc_pool
WHERE s.job_id = $1 AND s.rpc_pool = lead.rpc_pool AND s.chunk_size = lead.chunk_size
  AND s.max_inflight = lead.max_inflight AND s.next_block = lead.next_block
ORDER BY s.dataset_key
FOR UPDATE OF s SKIP LOCKED;

-- name: schedule_ranges
-- The ranges, their tasks (one per range for the whole group), the ledger rows (one per
-- range and stream), the wake-ups and the cursors: one statement, one transaction.
-- Each task's declared outputs (migration 0008: the only versions it may publish) are
-- the outputs of the config the planner wrote, with the planned range.
WITH r AS (
    SELECT * FROM unnest($2::bigint[], $3::bigint[], $4::uuid[], $5::jsonb[])
        AS r (range_start, range_end, task_id, config)
), t AS (
    INSERT INTO tasks (id, org_id, operator, config, inputs, datasets, status, attempt, max_attempts,
                       declared_outputs)
    SELECT r.task_id, $6, 'cryo_ingest', r.config, '[]', '[]', 'queued', 1, $7,
           (SELECT jsonb_agg(jsonb_build_object(
                       'dataset_uuid', o ->> 'dataset_uuid', 'dataset_version', o ->> 'dataset_version',
                       'config_hash', o ->> 'config_hash', 'range_start', r.range_start, 'range_end', r.range_end))
            FROM jsonb_array_elements(r.config -> 'outputs') AS o)
    FROM r
    RETURNING id
), ledger AS (
    INSERT INTO chain_sync_ranges (job_id, dataset_key, range_start, range_end, task_id)
    SELECT $1, k.dataset_key, r.range_start, r.range_end, r.task_id
    FROM r CROSS JOIN unnest($8::text[]) AS k (dataset_key)
), wake AS (
    INSERT INTO outbox (kind, queue, payload)
    SELECT 'enqueue_task', 'tasks', jsonb_build_object('task_id', id) FROM t
)
UPDATE chain_sync_streams SET next_block = $9, updated_at = now()
WHERE job_id = $1 AND dataset_key = ANY ($8::text[]);

-- name: complete_finished_jobs
-- fixed_target jobs whose every stream reached to_block with nothing in flight.
UPDATE chain_sync_jobs j SET completed_at = now(), updated_at = now()
WHERE j.mode = 'fixed_target' AND j.completed_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM chain_sync_streams s WHERE s.job_id = j.id AND s.next_block < j.to_block)
  AND NOT EXISTS (SELECT 1 FROM chain_sync_ranges r WHERE r.job_id = j.id AND r.status = 'scheduled')
RETURNING j.name;

-- name: head_targets
-- (org, chain, pool) triples of enabled jobs, with when each was last observed.
SELECT DISTINCT j.org_id::text, j.chain_id, s.rpc_pool,
       coalesce(extract(epoch FROM h.observed_at), 0) AS observed_at,
       coalesce(j.head_poll_interval_seconds, 5) AS poll_seconds
FROM chain_sync_jobs j
JOIN chain_sync_streams s ON s.job_id = j.id
LEFT JOIN chain_head_observations h ON h.org_id = j.org_id AND h.chain_id = j.chain_id AND h.rpc_pool = s.rpc_pool
WHERE j.enabled;

-- name: record_head
INSERT INTO chain_head_observations (org_id, chain_id, rpc_pool, head_block, observed_at)
VALUES ($1, $2, $3, $4, now())
ON CONFLICT (org_id, chain_id, rpc_pool) DO UPDATE SET head_block = EXCLUDED.head_block, observed_at = now();

-- name: job_status
SELECT j.id::text AS job_id, j.name, j.chain_id, j.mode, j.from_block, j.to_block, NOT j.enabled AS paused,
       j.completed_at IS NOT NULL AS completed, j.yaml_hash
FROM chain_sync_jobs j
WHERE j.org_id = $1 AND ($2 = '' OR j.name = $2)
ORDER BY j.name;

-- name: stream_status
-- synced_to: the exclusive end of the published prefix. Ranges are contiguous from
-- from_block to the cursor, so it is where the first unpublished range starts (the cursor
-- when every range is published). last_error only while it holds: some range of the
-- stream that failed (its task failed, or runs a later attempt) is not published yet; once
-- it is, the error is history and not shown.
SELECT s.job_id::text AS job_id, s.dataset_key, s.rpc_pool, s.next_block,
       CASE WHEN EXISTS (SELECT 1 FROM chain_sync_ranges fr JOIN tasks t ON t.id = fr.task_id
                         WHERE fr.job_id = s.job_id AND fr.dataset_key = s.dataset_key
                           AND fr.status = 'scheduled' AND (t.status = 'failed' OR t.attempt > 1))
            THEN coalesce(s.last_error, '') ELSE '' END AS last_error,
       count(r.range_start) FILTER (WHERE r.status = 'scheduled') AS in_flight,
       count(r.range_start) FILTER (WHERE r.status = 'completed') AS completed_ranges,
       coalesce(sum(r.range_end - r.range_start) FILTER (WHERE r.status = 'completed'), 0)::bigint AS completed_blocks,
       coalesce(min(r.range_start) FILTER (WHERE r.status = 'scheduled'), s.next_block) AS synced_to,
       h.head_block, h.observed_at
FROM chain_sync_streams s
JOIN chain_sync_jobs j ON j.id = s.job_id
LEFT JOIN chain_sync_ranges r ON r.job_id = s.job_id AND r.dataset_key = s.dataset_key
LEFT JOIN chain_head_observations h ON h.org_id = j.org_id AND h.chain_id = j.chain_id AND h.rpc_pool = s.rpc_pool
WHERE j.org_id = $1 AND ($2 = '' OR j.name = $2)
GROUP BY s.job_id, s.dataset_key, s.rpc_pool, s.next_block, s.last_error, h.head_block, h.observed_at
ORDER BY s.dataset_key;

-- name: failed_ranges
-- Unpublished ranges whose task failed for good (no retry scheduled), lowest first, at
-- most $3 per stream; the reason is the error's `<category>/<REASON>` prefix only (the
-- rest may quote the node or Cryo).
SELECT job_id, dataset_key, range_start, range_end, reason, attempts FROM (
    SELECT r.job_id::text AS job_id, r.dataset_key, r.range_start, r.range_end,
           coalesce(substring(t.error_message FROM '^[a-z]+/[A-Z_]+'), 'task/TASK_FAILED') AS reason,
           t.attempt AS attempts,
           row_number() OVER (PARTITION BY r.job_id, r.dataset_key ORDER BY r.range_start) AS n
    FROM chain_sync_ranges r
    JOIN chain_sync_jobs j ON j.id = r.job_id
    JOIN tasks t ON t.id = r.task_id
    WHERE j.org_id = $1 AND ($2 = '' OR j.name = $2)
      AND r.status = 'scheduled' AND t.status = 'failed' AND t.next_retry_at IS NULL
) failed
WHERE n <= $3
ORDER BY dataset_key, range_start;

-- name: verify_due
-- Jobs whose `verify:` section asks for a scheduled integrity check and whose latest one
-- is older than its interval (or missing); paused jobs are not checked. At most $1.
SELECT j.id::text AS job_id, j.org_id::text AS org_id, j.name,
       (j.spec -> 'verify' ->> 'last_blocks')::bigint AS last_blocks
FROM chain_sync_jobs j
LEFT JOIN chain_sync_verifications v ON v.job_id = j.id
WHERE j.enabled AND j.spec ? 'verify'
  AND (v.checked_at IS NULL
       OR v.checked_at < now() - make_interval(secs => (j.spec -> 'verify' ->> 'every_seconds')::double precision))
ORDER BY v.checked_at NULLS FIRST
LIMIT $1;

-- name: record_verification
INSERT INTO chain_sync_verifications (job_id, checked_at, from_block, to_block, difference_count, differences, error)
VALUES ($1, now(), $2, $3, $4, $5::jsonb, $6)
ON CONFLICT (job_id) DO UPDATE
SET checked_at = now(), from_block = EXCLUDED.from_block, to_block = EXCLUDED.to_block,
    difference_count = EXCLUDED.difference_count, differences = EXCLUDED.differences, error = EXCLUDED.error;

-- name: latest_verifications
SELECT v.job_id::text AS job_id, v.checked_at, v.from_block, v.to_block, v.difference_count,
       v.differences::text AS differences, v.error
FROM chain_sync_verifications v
JOIN chain_sync_jobs j ON j.id = v.job_id
WHERE j.org_id = $1 AND ($2 = '' OR j.name = $2);
