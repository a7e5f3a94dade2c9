-- name: lease_due
-- Due work: new or retrying rows, and rows left 'sending' by a crashed instance whose
-- lease ran out. Each lease is a new attempt; (id, attempt, lease_owner) fences the outcome.
WITH due AS (
    SELECT id FROM alert_deliveries
    WHERE status IN ('pending', 'retrying', 'sending')
      AND next_attempt_at <= now()
      AND (leased_until IS NULL OR leased_until < now())
    ORDER BY next_attempt_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE alert_deliveries d
SET status = 'sending', attempt = d.attempt + 1, leased_until = now() + make_interval(secs => $2),
    lease_owner = $3, last_attempt_at = now(), updated_at = now()
FROM due WHERE d.id = due.id
RETURNING d.id, d.attempt;

-- name: delivery_details
-- The event to send and the destination its channel key names in the definition.
SELECT d.id, d.org_id, d.channel, d.attempt, e.id AS alert_event_id, e.alert_definition_id, e.severity,
       e.chain_id, e.block_number, e.block_hash, e.tx_hash, e.source_dataset_uuid, e.partition_key,
       e.cursor_value, e.payload::text AS payload, e.dedupe_key, e.event_time, e.created_at,
       (SELECT ch->>'url' FROM alert_definitions def, jsonb_array_elements(def.channels) ch
        WHERE def.id = e.alert_definition_id AND def.org_id = e.org_id AND ch->>'key' = d.channel
        LIMIT 1) AS url
FROM alert_deliveries d
JOIN alert_events e ON e.id = d.alert_event_id AND e.org_id = d.org_id
WHERE d.id = ANY($1::uuid[]);

-- name: mark_delivered
UPDATE alert_deliveries
SET status = 'delivered', delivered_at = now(), response_code = $4, error_message = NULL,
    leased_until = NULL, updated_at = now()
WHERE id = $1 AND attempt = $2 AND lease_owner = $3 AND status = 'sending';

-- name: mark_attempt_failed
-- Retry with exponential backoff, or give up after max attempts ($6).
UPDATE alert_deliveries
SET status = CASE WHEN attempt >= $6 OR $9 THEN 'failed' ELSE 'retrying' END,
    next_attempt_at = now() + make_interval(secs => least($7 * power(2, attempt - 1), $8)),
    response_code = $4, error_message = $5, leased_until = NULL, updated_at = now()
WHERE id = $1 AND attempt = $2 AND lease_owner = $3 AND status = 'sending'
RETURNING status;

-- name: delivery_counts
SELECT status, count(*) AS n FROM alert_deliveries GROUP BY status;
