-- Every statement here skips the WAL flush wait (set_config(..., true): this transaction
-- only), since none of them needs to outlive a PostgreSQL crash: wake-ups are published
-- here only by the outbox relay, whose outbox rows stay pending until a later, durable
-- commit marks them done (WAL is flushed in order, so that commit makes this one durable
-- too; before it, a crash leaves the row pending and it is published again), or written
-- by CreateTasks in the tasks' own durable transaction (tasks.sql insert_tasks, its $8,
-- not through this file); a lost receive or
-- visibility change makes a message visible early, a lost ack redelivers it: the
-- at-least-once delivery every consumer already handles (a claim refuses a duplicate).
-- Other sessions see the rows at once either way; only durability waits.

-- name: publish
WITH async_commit AS (
    SELECT set_config('synchronous_commit', 'off', true) AS setting
)
INSERT INTO queue_messages (queue, payload)
SELECT $1, p FROM async_commit, unnest($2::jsonb[]) AS p;

-- name: receive
WITH picked AS (
    SELECT id FROM queue_messages
    WHERE queue = $1 AND visible_at <= now()
    ORDER BY id LIMIT $2
    FOR UPDATE SKIP LOCKED
), async_commit AS (
    SELECT set_config('synchronous_commit', 'off', true) AS setting
)
UPDATE queue_messages m
SET visible_at = now() + make_interval(secs => $3), receive_count = m.receive_count + 1
FROM picked, async_commit WHERE m.id = picked.id
RETURNING m.id, m.payload::text AS payload, m.receive_count;

-- name: ack
WITH async_commit AS (
    SELECT set_config('synchronous_commit', 'off', true) AS setting
)
DELETE FROM queue_messages USING async_commit WHERE id = ANY($1::bigint[]);

-- name: change_visibility
WITH async_commit AS (
    SELECT set_config('synchronous_commit', 'off', true) AS setting
)
UPDATE queue_messages SET visible_at = now() + make_interval(secs => $2)
FROM async_commit WHERE id = ANY($1::bigint[]);

-- name: depth
SELECT count(*) FROM queue_messages WHERE queue = $1;
