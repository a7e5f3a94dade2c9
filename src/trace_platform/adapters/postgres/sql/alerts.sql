-- name: insert_definition
INSERT INTO alert_definitions (org_id, name, channels, enabled)
VALUES ($1, $2, $3::jsonb, $4)
RETURNING id;

-- name: get_publish
SELECT id, task_id, attempt, org_id, batch_uri, status FROM buffered_publishes WHERE id = $1;

-- name: lock_publish
SELECT status FROM buffered_publishes WHERE id = $1 FOR UPDATE;

-- name: existing_definitions
-- Definitions of this org among the ids a batch names (a row naming another org's
-- definition is refused like an unknown one).
SELECT id FROM alert_definitions WHERE org_id = $1 AND id = ANY($2::uuid[]);

-- name: upsert_events
-- Every row of one batch in one statement; rows whose (org_id, dedupe_key) exists are
-- skipped. RETURNING names only the events this statement created. Rows go in key
-- order so that concurrent batches sharing keys wait on each other instead of deadlocking.
INSERT INTO alert_events (
    org_id, producer_task_id, dedupe_key, event_time, payload, alert_definition_id, severity,
    chain_id, block_number, block_hash, tx_hash, source_dataset_uuid, partition_key, cursor_value
)
SELECT $1, $2, r.dedupe_key, r.event_time, r.payload::jsonb, r.alert_definition_id, r.severity,
       r.chain_id, r.block_number, r.block_hash, r.tx_hash, r.source_dataset_uuid, r.partition_key, r.cursor_value
FROM unnest($3::text[], $4::timestamptz[], $5::text[], $6::uuid[], $7::text[], $8::bigint[], $9::bigint[],
            $10::text[], $11::text[], $12::uuid[], $13::text[], $14::text[])
     AS r(dedupe_key, event_time, payload, alert_definition_id, severity, chain_id, block_number,
          block_hash, tx_hash, source_dataset_uuid, partition_key, cursor_value)
ORDER BY r.dedupe_key
ON CONFLICT (org_id, dedupe_key) DO NOTHING
RETURNING id;

-- name: route_events
-- Routing: one delivery per new event and channel of its enabled definition.
INSERT INTO alert_deliveries (org_id, alert_event_id, channel)
SELECT e.org_id, e.id, ch->>'key'
FROM alert_events e
JOIN alert_definitions d ON d.id = e.alert_definition_id AND d.org_id = e.org_id AND d.enabled
CROSS JOIN LATERAL jsonb_array_elements(d.channels) AS ch
WHERE e.id = ANY($1::uuid[]) AND ch->>'key' IS NOT NULL
ON CONFLICT (org_id, alert_event_id, channel) DO NOTHING;

-- name: mark_publish
UPDATE buffered_publishes SET status = $2 WHERE id = $1;

-- name: upsert_dead_letter
INSERT INTO sink_dead_letters (publish_id, org_id, task_id, batch_uri, reason, row_number)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (publish_id) DO UPDATE SET reason = EXCLUDED.reason, row_number = EXCLUDED.row_number
RETURNING id;

-- name: list_dead_letters
SELECT id, seq, publish_id, org_id, task_id, batch_uri, reason, row_number, created_at, replayed_at
FROM sink_dead_letters
WHERE seq > $1
ORDER BY seq
LIMIT $2;

-- name: get_dead_letter
SELECT id, publish_id, replayed_at FROM sink_dead_letters WHERE id = $1;

-- name: mark_replayed
UPDATE sink_dead_letters SET replayed_at = now() WHERE publish_id = $1 AND replayed_at IS NULL;

-- name: api_insert_definition
INSERT INTO alert_definitions (org_id, name, channels, enabled, description, severity)
VALUES ($1, $2, $3::jsonb, $4, $5, $6)
RETURNING id::text AS id, name, channels::text AS channels, enabled, description, severity, created_at, updated_at;

-- name: api_definitions
-- One definition of the org ($2), or a keyset page after ($3, $4) by (created_at, id).
SELECT id::text AS id, name, channels::text AS channels, enabled, description, severity, created_at, updated_at
FROM alert_definitions
WHERE org_id = $1 AND ($2::uuid IS NULL OR id = $2)
  AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4::uuid))
ORDER BY created_at, id
LIMIT $5;

-- name: api_update_definition
-- Only the fields given (not NULL) change; org scoped.
UPDATE alert_definitions
SET channels = coalesce($3::jsonb, channels), enabled = coalesce($4, enabled),
    description = coalesce($5, description), severity = coalesce($6, severity), updated_at = now()
WHERE org_id = $1 AND id = $2
RETURNING id::text AS id, name, channels::text AS channels, enabled, description, severity, created_at, updated_at;

-- name: api_events
-- Events of one definition of the org, a keyset page after ($3, $4).
SELECT id::text AS id, alert_definition_id::text AS alert_id, severity, chain_id, block_number, block_hash,
       tx_hash, dedupe_key, payload::text AS payload, event_time, created_at
FROM alert_events
WHERE org_id = $1 AND alert_definition_id = $2
  AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4::uuid))
ORDER BY created_at, id
LIMIT $5;

-- name: api_event_exists
SELECT 1 FROM alert_events WHERE org_id = $1 AND id = $2;

-- name: api_deliveries
-- Deliveries of the org, of one definition's events ($2) or of one event ($3), a keyset
-- page after ($4, $5). The channel's URL is looked up only to be shown as scheme+host.
SELECT d.id::text AS id, e.id::text AS event_id, e.alert_definition_id::text AS alert_id, d.channel,
       d.status, d.attempt, d.response_code, d.error_message, d.last_attempt_at, d.next_attempt_at,
       d.delivered_at, d.created_at,
       (SELECT ch->>'url' FROM alert_definitions def, jsonb_array_elements(def.channels) ch
        WHERE def.id = e.alert_definition_id AND def.org_id = e.org_id AND ch->>'key' = d.channel
        LIMIT 1) AS url
FROM alert_deliveries d
JOIN alert_events e ON e.id = d.alert_event_id AND e.org_id = d.org_id
WHERE d.org_id = $1
  AND ($2::uuid IS NULL OR e.alert_definition_id = $2)
  AND ($3::uuid IS NULL OR e.id = $3)
  AND ($4::timestamptz IS NULL OR (d.created_at, d.id) > ($4, $5::uuid))
ORDER BY d.created_at, d.id
LIMIT $6;
