-- Gauges read on a Prometheus scrape (servers/common/metrics.LoopSnapshot: at most once
-- a second per process). Labels are bounded: states, operators, queue names, job and
-- stream names; never ids.

-- name: dispatcher_snapshot
-- One statement, three kinds of rows (kind, a, b, n, age_seconds):
--   tasks:  (state, operator) counts; age = the oldest queued task's time in the queue.
--           A failed task with a retry time is 'retry_wait', not 'failed'.
--           This groups the whole tasks table: a sequential scan, measured at 0.27 s per
--           million tasks on a 2-core machine (count(*) alone 0.07 s), once a second at most
--           however often Prometheus scrapes. The rest read only pending work.
--   queue:  wake-up messages per queue and the oldest one's age.
--   outbox: pending rows and the oldest one's age (the relay's lag).
SELECT 'tasks' AS kind, state AS a, operator AS b, count(*) AS n,
       coalesce(extract(epoch FROM now() - min(updated_at) FILTER (WHERE state = 'queued')), 0)::float8 AS age_seconds
FROM (SELECT CASE WHEN status = 'failed' AND next_retry_at IS NOT NULL THEN 'retry_wait' ELSE status END AS state,
             operator, updated_at
      FROM tasks) t
GROUP BY state, operator
UNION ALL
SELECT 'queue', queue, '', count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
FROM queue_messages GROUP BY queue
UNION ALL
SELECT 'outbox', '', '', count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
FROM outbox WHERE status = 'pending';

-- name: chain_sync_snapshot
-- Per stream: the cursor (what was planned), synced-to (every block below it is in a
-- completed range: the lowest range still scheduled, else the cursor), the target (to_block
-- of a fixed_target job; the observed head + 1 otherwise, capped for fixed_target by it),
-- the in-flight and failed-for-good ranges, and the age of the oldest range in flight.
-- Reads only scheduled ranges (their partial index), never the completed history.
SELECT j.org_id::text AS org, j.name AS job, s.dataset_key AS stream, s.next_block AS cursor,
       coalesce(min(r.range_start), s.next_block) AS synced_to,
       h.head_block,
       CASE WHEN j.mode = 'fixed_target' THEN least(j.to_block, coalesce(h.head_block + 1, j.to_block))
            ELSE h.head_block + 1 END AS target,
       count(r.range_start) AS in_flight,
       count(r.range_start) FILTER (WHERE t.status = 'failed' AND t.next_retry_at IS NULL) AS failed,
       coalesce(extract(epoch FROM now() - min(r.created_at)), 0)::float8 AS oldest_in_flight_seconds
FROM chain_sync_streams s
JOIN chain_sync_jobs j ON j.id = s.job_id
LEFT JOIN chain_sync_ranges r ON r.job_id = s.job_id AND r.dataset_key = s.dataset_key AND r.status = 'scheduled'
LEFT JOIN tasks t ON t.id = r.task_id
LEFT JOIN chain_head_observations h ON h.org_id = j.org_id AND h.chain_id = j.chain_id AND h.rpc_pool = s.rpc_pool
GROUP BY j.org_id, j.name, j.mode, j.to_block, s.job_id, s.dataset_key, s.next_block, h.head_block;
