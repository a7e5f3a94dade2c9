-- Alerting: definitions (with their webhook channels), the alert_events buffered
-- dataset the sink upserts into, the alert_deliveries work queue of the Delivery
-- Service, and the sink's dead-letter records.

CREATE TABLE alert_definitions (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id     uuid NOT NULL,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    -- [{"type": "webhook", "key": "webhook:<sha256(url)[:16]>", "url": "https://..."}]
    -- URLs may embed secrets: they live here only (deliveries store the key).
    channels   jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(channels) = 'array'),
    enabled    boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, name),
    -- Target of the tenant-scoped foreign key below.
    UNIQUE (id, org_id)
);

CREATE TABLE alert_events (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id              uuid NOT NULL,
    alert_definition_id uuid,
    producer_task_id    uuid,
    severity            text CHECK (severity IN ('info', 'warning', 'critical')),
    chain_id            bigint CHECK (chain_id >= 0),
    block_number        bigint CHECK (block_number >= 0),
    block_hash          text,
    tx_hash             text,
    source_dataset_uuid uuid,
    partition_key       text,
    cursor_value        text,
    payload             jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(payload) = 'object'),
    dedupe_key          text NOT NULL CHECK (length(dedupe_key) BETWEEN 1 AND 512),
    event_time          timestamptz NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, dedupe_key),
    -- An event can only name a definition of its own org.
    FOREIGN KEY (alert_definition_id, org_id) REFERENCES alert_definitions (id, org_id)
);

CREATE TABLE alert_deliveries (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id          uuid NOT NULL,
    alert_event_id  uuid NOT NULL REFERENCES alert_events (id),
    -- Channel identity within the event's definition, e.g. 'webhook:<sha256(url)[:16]>'.
    channel         text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sending', 'delivered', 'retrying', 'failed')),
    attempt         int NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    leased_until    timestamptz,
    lease_owner     text,
    last_attempt_at timestamptz,
    response_code   int,
    error_message   text,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, alert_event_id, channel)
);

CREATE INDEX alert_deliveries_event ON alert_deliveries (alert_event_id);
-- Only rows that still need work are indexed: the lease scan stays small.
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at)
    WHERE status IN ('pending', 'retrying', 'sending');

-- One record per dead-lettered buffered publish; a replay that still fails updates it.
CREATE TABLE sink_dead_letters (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seq         bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    publish_id  uuid NOT NULL UNIQUE REFERENCES buffered_publishes (id),
    org_id      uuid NOT NULL,
    task_id     uuid NOT NULL,
    batch_uri   text NOT NULL,
    reason      text NOT NULL,
    row_number  bigint NOT NULL DEFAULT 0 CHECK (row_number >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz
);
