-- Compaction of chain_sync ranges (migration 0015).

-- name: compactable_streams
-- Streams of enabled jobs whose spec asks for compaction and that have no repair in
-- progress (a repair's ranges must not move under it). At most $1.
SELECT j.id::text AS job_id, j.org_id::text AS org_id, j.name, j.spec::text AS spec,
       j.completed_at IS NOT NULL AS completed,
       s.dataset_key, s.dataset_uuid::text AS dataset_uuid,
       (SELECT max(r.range_end) FROM chain_sync_ranges r
        WHERE r.job_id = j.id AND r.dataset_key = s.dataset_key AND r.status = 'completed') AS published_end
FROM chain_sync_jobs j
JOIN chain_sync_streams s ON s.job_id = j.id
WHERE j.enabled AND j.spec ? 'compaction'
  AND NOT EXISTS (SELECT 1 FROM chain_sync_reorgs o WHERE o.job_id = j.id AND o.status = 'repairing')
ORDER BY j.id, s.dataset_key
LIMIT $1;

-- name: candidate_ranges
-- Completed ledger ranges of one stream ending at or below $3, not already the input of
-- a live compaction (pending, its task not failed for good), lowest first, at most $4.
SELECT r.range_start, r.range_end, r.task_id::text AS task_id, r.dataset_version::text AS dataset_version
FROM chain_sync_ranges r
WHERE r.job_id = $1 AND r.dataset_key = $2 AND r.status = 'completed' AND r.range_end <= $3
  AND NOT EXISTS (
      SELECT 1 FROM chain_sync_compaction_inputs i
      JOIN chain_sync_compactions c ON c.task_id = i.task_id AND c.status = 'pending'
      JOIN tasks t ON t.id = c.task_id
      WHERE c.job_id = r.job_id AND c.dataset_key = r.dataset_key AND i.range_start = r.range_start
        AND NOT (t.status IN ('failed', 'canceled') AND t.next_retry_at IS NULL))
ORDER BY r.range_start
LIMIT $4;

-- name: lock_stream
-- Two Dispatchers never plan the same stream's compactions at once.
SELECT 1 FROM chain_sync_streams WHERE job_id = $1 AND dataset_key = $2 FOR UPDATE SKIP LOCKED;

-- name: retire_dead
-- Compactions of the stream whose task failed for good: their inputs are planned again,
-- and whatever the failed attempts wrote at their version's prefix is collected.
WITH dead AS (
    UPDATE chain_sync_compactions c SET status = 'stale', finished_at = now()
    FROM tasks t
    WHERE c.job_id = $1 AND c.dataset_key = $2 AND c.status = 'pending' AND t.id = c.task_id
      AND t.status IN ('failed', 'canceled') AND t.next_retry_at IS NULL
    RETURNING c.dataset_uuid, c.new_version
)
INSERT INTO chain_sync_retired_versions (dataset_uuid, dataset_version, reason)
SELECT dataset_uuid, new_version, 'stale_compaction' FROM dead
ON CONFLICT DO NOTHING;

-- name: insert_compaction
-- The compact task (declared output: its one version), its wake-up, the compaction and
-- its inputs: one statement, so a crash leaves all of it or none.
WITH t AS (
    INSERT INTO tasks (id, org_id, operator, config, inputs, datasets, status, attempt, max_attempts,
                       declared_outputs)
    VALUES ($1, $2, 'compact', $3::jsonb, '[]', '[]', 'queued', 1, $4,
            jsonb_build_array(jsonb_build_object('dataset_uuid', $5::text, 'dataset_version', $6::text,
                                                 'config_hash', $7::text, 'range_start', $8::bigint,
                                                 'range_end', $9::bigint)))
    RETURNING id
), wake AS (
    INSERT INTO outbox (kind, queue, payload)
    SELECT 'enqueue_task', 'tasks', jsonb_build_object('task_id', id) FROM t
), c AS (
    INSERT INTO chain_sync_compactions (task_id, job_id, dataset_key, dataset_uuid, range_start, range_end,
                                        new_version)
    SELECT id, $10, $11, $5::uuid, $8, $9, $6::uuid FROM t
    RETURNING task_id
)
INSERT INTO chain_sync_compaction_inputs (task_id, range_start, range_end, old_task_id, old_version)
SELECT c.task_id, i.s, i.e, i.t, i.v
FROM c, unnest($12::bigint[], $13::bigint[], $14::uuid[], $15::uuid[]) AS i (s, e, t, v);

-- name: due_retired
-- Retired versions whose objects may go: retired more than $1 seconds ago (longer than
-- any query that resolved before could run), named by no ledger row, and not the old
-- version of an open reorg repair. At most $2.
SELECT v.dataset_uuid::text AS dataset_uuid, v.dataset_version::text AS dataset_version
FROM chain_sync_retired_versions v
WHERE v.collected_at IS NULL AND v.retired_at < now() - make_interval(secs => $1)
  AND NOT EXISTS (SELECT 1 FROM chain_sync_ranges r WHERE r.dataset_version = v.dataset_version)
  AND NOT EXISTS (SELECT 1 FROM chain_sync_repairs p JOIN chain_sync_reorgs o ON o.id = p.reorg_id
                  WHERE o.status = 'repairing' AND p.old_version = v.dataset_version)
ORDER BY v.retired_at
LIMIT $2;

-- name: mark_collected
-- Its objects are gone: the version row goes too (nothing resolves it any more, and a
-- partitioned dataset's resolve reads every version row it has); the retired row stays
-- as the record. A version some registry entry names as current is never a range version.
WITH gone AS (
    DELETE FROM dataset_versions v
    WHERE v.dataset_uuid = $1 AND v.dataset_version = $2
      AND NOT EXISTS (SELECT 1 FROM chain_sync_ranges r WHERE r.dataset_version = v.dataset_version)
      AND NOT EXISTS (SELECT 1 FROM datasets d WHERE d.id = v.dataset_uuid AND d.current_version = v.dataset_version)
)
UPDATE chain_sync_retired_versions SET collected_at = now()
WHERE dataset_uuid = $1 AND dataset_version = $2 AND collected_at IS NULL;
