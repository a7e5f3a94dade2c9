-- name: publish
INSERT INTO queue_messages (queue, payload)
SELECT $1, p FROM unnest($2::jsonb[]) AS p;

-- name: receive
WITH picked AS (
    SELECT id FROM queue_messages
    WHERE queue = $1 AND visible_at <= now()
    ORDER BY id LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE queue_messages m
SET visible_at = now() + make_interval(secs => $3), receive_count = m.receive_count + 1
FROM picked WHERE m.id = picked.id
RETURNING m.id, m.payload::text AS payload, m.receive_count;

-- name: ack
DELETE FROM queue_messages WHERE id = ANY($1::bigint[]);

-- name: change_visibility
UPDATE queue_messages SET visible_at = now() + make_interval(secs => $2) WHERE id = ANY($1::bigint[]);

-- name: depth
SELECT count(*) FROM queue_messages WHERE queue = $1;
