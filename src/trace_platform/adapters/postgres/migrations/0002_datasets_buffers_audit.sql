-- Datasets, buffered publishes and query audit.

CREATE TABLE buffered_publishes (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    task_id          uuid NOT NULL REFERENCES tasks (id),
    attempt          int  NOT NULL,
    org_id           uuid NOT NULL,
    batch_uri        text NOT NULL,
    content_type     text NOT NULL,
    batch_size_bytes bigint NOT NULL CHECK (batch_size_bytes >= 0),
    dedupe_scope     text NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'applied', 'dead_lettered')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (task_id, attempt, batch_uri)
);

-- Dataset registry: name -> uuid per org, with the version users read.
CREATE TABLE datasets (
    id              uuid PRIMARY KEY,
    org_id          uuid NOT NULL,
    name            text NOT NULL,
    current_version uuid,
    published       boolean NOT NULL DEFAULT false,
    pii_columns     text[] NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, name)
);

-- Immutable generations; registering the same version twice is a no-op.
CREATE TABLE dataset_versions (
    dataset_uuid     uuid NOT NULL,
    dataset_version  uuid NOT NULL,
    storage_ref      jsonb NOT NULL,
    config_hash      text NOT NULL DEFAULT '',
    range_start      bigint,
    range_end        bigint,
    producer_task_id uuid,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset_uuid, dataset_version)
);

-- One row per successful query. Never the SQL text: only its SHA-256.
CREATE TABLE query_audit (
    id              bigserial PRIMARY KEY,
    org_id          uuid NOT NULL,
    task_id         uuid,
    user_id         text,
    dataset_uuid    uuid NOT NULL,
    dataset_version uuid NOT NULL,
    sql_sha256      text NOT NULL CHECK (length(sql_sha256) = 64),
    row_count       bigint NOT NULL,
    duration_ms     double precision NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
