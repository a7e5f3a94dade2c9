-- Task state transitions. Every mutation of a running attempt is fenced by
-- (task_id, attempt, lease_token) in its WHERE clause or under FOR UPDATE.

-- name: insert_tasks
-- Creating an existing id is a no-op (idempotent create); wake-ups are written in the
-- same statement, so a task never exists without its enqueue intent. $8: the wake-up
-- queue is the PostgreSQL one in this database, so the message itself goes into
-- queue_messages (no relay hop; its NOTIFY, migration 0006's statement trigger, fires
-- only for rows written and is delivered on commit); otherwise an outbox row for the
-- relay (SQS). The wake-up shape is the relay's.
WITH ins AS (
    INSERT INTO tasks (id, org_id, operator, config, inputs, datasets, status, attempt, max_attempts)
    SELECT t.id, t.org_id, t.operator, t.config, t.inputs, t.datasets, 'queued', 1, t.max_attempts
    FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::jsonb[], $5::jsonb[], $6::jsonb[], $7::int[])
        AS t (id, org_id, operator, config, inputs, datasets, max_attempts)
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), queued AS (
    INSERT INTO queue_messages (queue, payload)
    SELECT 'tasks', jsonb_build_object('task_id', id) FROM ins WHERE $8::boolean
)
INSERT INTO outbox (kind, queue, payload)
SELECT 'enqueue_task', 'tasks', jsonb_build_object('task_id', id) FROM ins WHERE NOT $8::boolean;

-- name: get_task
SELECT id, org_id, operator, config::text AS config, inputs::text AS inputs,
       datasets::text AS datasets, status, attempt, max_attempts, lease_token,
       lease_expires_at, worker_id, next_retry_at, error_message, declared_outputs::text AS declared_outputs
FROM tasks WHERE id = $1;

-- name: get_attempts
SELECT attempt, worker_id, coalesce(outcome, 'running') AS outcome, coalesce(error_message, '') AS error_message
FROM task_attempts WHERE task_id = $1 ORDER BY attempt;

-- name: claim_task
WITH claimed AS (
    UPDATE tasks
    SET status = 'running', lease_token = $2, lease_expires_at = now() + make_interval(secs => $3),
        worker_id = $4, started_at = now(), updated_at = now()
    WHERE id = $1 AND status = 'queued'
    RETURNING id, org_id, operator, config, inputs, datasets, attempt, lease_expires_at, declared_outputs
), attempt_row AS (
    INSERT INTO task_attempts (task_id, attempt, worker_id, lease_token)
    SELECT id, attempt, $4, $2 FROM claimed
)
SELECT id, org_id, operator, config::text AS config, inputs::text AS inputs,
       datasets::text AS datasets, attempt, lease_expires_at, declared_outputs::text AS declared_outputs
FROM claimed;

-- name: claim_tasks
-- Batch form of claim_task: the queued tasks among $1 are claimed, each with its own
-- lease token and worker ($2, $4, same position). Rows are locked in id order so that
-- overlapping batches cannot deadlock; `t.id = ANY($1)` keeps the plan on the primary
-- key whatever the table's statistics say (a cached generic plan made while the table
-- was small would otherwise scan it). Ids not returned were not claimable; with a
-- duplicate id the returned lease_token names the request that won.
WITH req AS (
    SELECT DISTINCT ON (r.id) r.id, r.lease_token, r.worker_id
    FROM unnest($1::uuid[], $2::uuid[], $4::text[]) AS r (id, lease_token, worker_id)
    ORDER BY r.id
), locked AS (
    SELECT t.id, req.lease_token, req.worker_id FROM tasks t JOIN req ON req.id = t.id
    WHERE t.id = ANY($1::uuid[]) AND t.status = 'queued'
    ORDER BY t.id
    FOR UPDATE OF t
), claimed AS (
    UPDATE tasks t
    SET status = 'running', lease_token = locked.lease_token, lease_expires_at = now() + make_interval(secs => $3),
        worker_id = locked.worker_id, started_at = now(), updated_at = now()
    FROM locked
    WHERE t.id = ANY($1::uuid[]) AND t.id = locked.id AND t.status = 'queued'
    RETURNING t.id, t.org_id, t.operator, t.config, t.inputs, t.datasets, t.attempt, t.lease_expires_at,
              t.lease_token, t.worker_id, t.declared_outputs
), attempt_row AS (
    INSERT INTO task_attempts (task_id, attempt, worker_id, lease_token)
    SELECT id, attempt, worker_id, lease_token FROM claimed
)
SELECT id, org_id, operator, config::text AS config, inputs::text AS inputs,
       datasets::text AS datasets, attempt, lease_expires_at, lease_token,
       declared_outputs::text AS declared_outputs
FROM claimed;

-- name: task_fence_state
SELECT status, attempt, lease_token FROM tasks WHERE id = $1;

-- name: task_fence_state_for_update
SELECT t.status, t.attempt, t.lease_token, t.max_attempts, t.org_id, a.outcome AS attempt_outcome
FROM tasks t LEFT JOIN task_attempts a ON a.task_id = t.id AND a.attempt = t.attempt
WHERE t.id = $1
FOR UPDATE OF t;

-- name: heartbeat
-- A lease extension skips the WAL flush wait (set_config(..., true): this transaction
-- only). Lost in a PostgreSQL crash, the lease merely ends at its previous expiry: the
-- reaper may then retry the task early, and the old attempt stays fenced out by
-- (attempt, lease_token) as after any lost lease. Nothing else is written here.
WITH async_commit AS (
    SELECT set_config('synchronous_commit', 'off', true) AS setting
)
UPDATE tasks SET lease_expires_at = now() + make_interval(secs => $4), updated_at = now()
FROM async_commit
WHERE id = $1 AND attempt = $2 AND lease_token = $3 AND status = 'running'
RETURNING lease_expires_at;

-- name: heartbeat_many
-- Batch form of heartbeat (rows locked in id order, as in claim_tasks): returns the
-- ids whose live lease was extended; the others take the single-call path. No WAL flush
-- wait, as for heartbeat.
WITH async_commit AS (
    SELECT set_config('synchronous_commit', 'off', true) AS setting
), locked AS (
    SELECT t.id FROM tasks t
    JOIN unnest($1::uuid[], $2::int[], $3::uuid[]) AS r (id, attempt, lease_token)
        ON t.id = r.id AND t.attempt = r.attempt AND t.lease_token = r.lease_token
    WHERE t.id = ANY($1::uuid[]) AND t.status = 'running'
    ORDER BY t.id
    FOR UPDATE OF t
)
UPDATE tasks t SET lease_expires_at = now() + make_interval(secs => $4), updated_at = now()
FROM locked, async_commit WHERE t.id = ANY($1::uuid[]) AND t.id = locked.id AND t.status = 'running'
RETURNING t.id, t.attempt, t.lease_token, t.lease_expires_at;

-- name: complete_live
-- Fast path for the common case: the live lease holder completes with nothing else
-- to record. Zero rows means "take the slow path" (fencing diagnosis, idempotency).
WITH done AS (
    UPDATE tasks
    SET status = 'completed', finished_at = now(), outputs = $4::jsonb, error_message = NULL,
        next_retry_at = NULL, lease_expires_at = NULL, updated_at = now()
    WHERE id = $1 AND attempt = $2 AND lease_token = $3 AND status = 'running'
    RETURNING id, attempt
)
UPDATE task_attempts a SET outcome = 'completed', finished_at = now()
FROM done WHERE a.task_id = done.id AND a.attempt = done.attempt
RETURNING a.task_id;

-- name: complete_live_many
-- Batch form of complete_live (rows locked in id order, as in claim_tasks): returns
-- the ids completed; the others take the single-call path. An operator's completion
-- rule (migration 0004's trigger) that refuses one item aborts the whole statement;
-- the repository then sends every item down the single-call path, which refuses only it.
WITH req AS (
    SELECT DISTINCT ON (r.id) r.id, r.attempt, r.lease_token, r.outputs
    FROM unnest($1::uuid[], $2::int[], $3::uuid[], $4::jsonb[]) AS r (id, attempt, lease_token, outputs)
    ORDER BY r.id
), locked AS (
    SELECT t.id, req.outputs FROM tasks t
    JOIN req ON t.id = req.id AND t.attempt = req.attempt AND t.lease_token = req.lease_token
    WHERE t.id = ANY($1::uuid[]) AND t.status = 'running'
    ORDER BY t.id
    FOR UPDATE OF t
), done AS (
    UPDATE tasks t
    SET status = 'completed', finished_at = now(), outputs = locked.outputs, error_message = NULL,
        next_retry_at = NULL, lease_expires_at = NULL, updated_at = now()
    FROM locked
    WHERE t.id = ANY($1::uuid[]) AND t.id = locked.id AND t.status = 'running'
    RETURNING t.id, t.attempt
)
UPDATE task_attempts a SET outcome = 'completed', finished_at = now()
FROM done WHERE a.task_id = done.id AND a.attempt = done.attempt
RETURNING a.task_id, a.attempt, a.lease_token;

-- name: finish_completed
UPDATE tasks
SET status = $2, finished_at = now(), outputs = $3::jsonb, error_message = NULL,
    next_retry_at = NULL, lease_expires_at = NULL, updated_at = now()
WHERE id = $1;

-- name: finish_failed
-- $5: the worker reported the failure as permanent (core/failures): no retry.
UPDATE tasks
SET status = 'failed', finished_at = now(), error_message = $2, lease_expires_at = NULL,
    next_retry_at = CASE WHEN $5::boolean THEN NULL ELSE trace_next_retry_at(attempt, max_attempts, $3, $4) END,
    updated_at = now()
WHERE id = $1
RETURNING next_retry_at;

-- name: finish_attempt
UPDATE task_attempts SET outcome = $3, finished_at = now(), error_message = $4
WHERE task_id = $1 AND attempt = $2;

-- name: foreign_event_datasets
-- Whether any of the datasets events name belongs to another org than the task's.
SELECT EXISTS (
    SELECT 1 FROM datasets d JOIN tasks t ON t.id = $1
    WHERE d.id = ANY($2::uuid[]) AND d.org_id <> t.org_id
);

-- name: insert_events
-- Duplicate events (same task, dataset version, cursor and partition) are dropped,
-- and only new ones get a route_event outbox row.
WITH ins AS (
    INSERT INTO task_events (task_id, attempt, dataset_uuid, dataset_version, cursor, partition_key, range_start, range_end)
    SELECT $1, $2, e.dataset_uuid, e.dataset_version, e.cursor, e.partition_key, e.range_start, e.range_end
    FROM unnest($3::uuid[], $4::uuid[], $5::bigint[], $6::text[], $7::bigint[], $8::bigint[])
        AS e (dataset_uuid, dataset_version, cursor, partition_key, range_start, range_end)
    ON CONFLICT DO NOTHING
    RETURNING id, dataset_uuid, dataset_version
)
INSERT INTO outbox (kind, payload)
SELECT 'route_event', jsonb_build_object('event_id', id, 'dataset_uuid', dataset_uuid, 'dataset_version', dataset_version)
FROM ins
RETURNING id;

-- name: insert_buffered_publish
INSERT INTO buffered_publishes (task_id, attempt, org_id, batch_uri, content_type, batch_size_bytes, dedupe_scope)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (task_id, attempt, batch_uri) DO NOTHING
RETURNING id;

-- name: get_buffered_publish
SELECT id FROM buffered_publishes WHERE task_id = $1 AND attempt = $2 AND batch_uri = $3;

-- name: enqueue_buffer
INSERT INTO outbox (kind, queue, payload) VALUES ('enqueue_buffer', 'buffers', $1::jsonb);

-- name: reap_expired_leases
-- A running task whose lease ran out is failed with a retry time (or terminally).
WITH expired AS (
    SELECT id FROM tasks
    WHERE status = 'running' AND lease_expires_at < now()
    ORDER BY lease_expires_at LIMIT $1
    FOR UPDATE SKIP LOCKED
), failed AS (
    UPDATE tasks t
    SET status = 'failed', error_message = 'lease expired', lease_expires_at = NULL, finished_at = now(),
        next_retry_at = trace_next_retry_at(t.attempt, t.max_attempts, $2, $3), updated_at = now()
    FROM expired WHERE t.id = expired.id
    RETURNING t.id, t.attempt, t.operator, t.config, t.next_retry_at
)
UPDATE task_attempts a SET outcome = 'lease_expired', finished_at = now(), error_message = 'lease expired'
FROM failed WHERE a.task_id = failed.id AND a.attempt = failed.attempt
RETURNING a.task_id, a.attempt, failed.operator, failed.config, failed.next_retry_at;

-- name: requeue_due_retries
WITH due AS (
    SELECT id FROM tasks
    WHERE status = 'failed' AND next_retry_at IS NOT NULL AND next_retry_at <= now()
    ORDER BY next_retry_at LIMIT $1
    FOR UPDATE SKIP LOCKED
), requeued AS (
    UPDATE tasks t
    SET status = 'queued', attempt = t.attempt + 1, next_retry_at = NULL, lease_token = NULL,
        lease_expires_at = NULL, worker_id = NULL, error_message = NULL, updated_at = now()
    FROM due WHERE t.id = due.id
    RETURNING t.id
)
INSERT INTO outbox (kind, queue, payload)
SELECT 'enqueue_task', 'tasks', jsonb_build_object('task_id', id) FROM requeued
RETURNING id;
