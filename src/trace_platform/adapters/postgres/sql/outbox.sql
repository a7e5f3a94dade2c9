-- name: claim_pending
SELECT id, kind, queue, payload::text AS payload FROM outbox
WHERE status = 'pending' AND available_at <= now()
ORDER BY id LIMIT $1
FOR UPDATE SKIP LOCKED;

-- name: mark_done
UPDATE outbox SET status = 'done', processed_at = now(), attempts = attempts + 1 WHERE id = ANY($1::bigint[]);

-- name: mark_failed
UPDATE outbox
SET attempts = attempts + 1, last_error = $2,
    available_at = now() + make_interval(secs => LEAST(60, power(2, attempts)))
WHERE id = ANY($1::bigint[]);

-- name: count_pending
SELECT count(*) FROM outbox WHERE status = 'pending';
