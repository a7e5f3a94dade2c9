-- chain_sync state: job definitions, per-stream config and cursor, the scheduled-range
-- ledger, head observations; partitioned datasets in the registry; and the completion
-- rule for cryo_ingest tasks, enforced where every completion path passes (a trigger).
-- Ranges are end-exclusive [range_start, range_end).

CREATE TABLE chain_sync_jobs (
    id                         uuid PRIMARY KEY,
    org_id                     uuid NOT NULL,
    name                       text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,63}$'),
    chain_id                   bigint NOT NULL CHECK (chain_id > 0),
    enabled                    boolean NOT NULL DEFAULT true,
    mode                       text NOT NULL CHECK (mode IN ('fixed_target', 'follow_head')),
    from_block                 bigint NOT NULL CHECK (from_block >= 0),
    to_block                   bigint,
    tail_lag                   bigint,
    head_poll_interval_seconds int,
    max_head_age_seconds       int,
    spec                       jsonb NOT NULL,  -- ChainSyncSpec.canonical(); never secrets (the parser refuses them)
    yaml_hash                  text NOT NULL CHECK (yaml_hash ~ '^[0-9a-f]{64}$'),  -- change detector, not identity
    completed_at               timestamptz,
    last_error_category        text,
    last_error_at              timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, name),
    CHECK (
        (mode = 'fixed_target' AND to_block > from_block
            AND tail_lag IS NULL AND head_poll_interval_seconds IS NULL AND max_head_age_seconds IS NULL)
        OR (mode = 'follow_head' AND to_block IS NULL AND tail_lag >= 0
            AND head_poll_interval_seconds > 0 AND max_head_age_seconds > head_poll_interval_seconds)
    )
);

-- One row per stream; next_block is the stream's cursor (exclusive high-water mark of what was scheduled).
CREATE TABLE chain_sync_streams (
    job_id            uuid NOT NULL REFERENCES chain_sync_jobs (id) ON DELETE CASCADE,
    dataset_key       text NOT NULL CHECK (dataset_key ~ '^[a-z][a-z0-9_]{0,63}$'),
    cryo_dataset_name text NOT NULL CHECK (cryo_dataset_name ~ '^[a-z][a-z0-9_]{0,63}$'),
    rpc_pool          text NOT NULL CHECK (rpc_pool ~ '^[a-z][a-z0-9_]{0,63}$'),
    dataset_uuid      uuid NOT NULL UNIQUE,
    config_hash       text NOT NULL,
    chunk_size        int NOT NULL CHECK (chunk_size > 0),
    max_inflight      int NOT NULL CHECK (max_inflight > 0),
    next_block        bigint NOT NULL CHECK (next_block >= 0),
    last_error        text,  -- "<category>/<REASON>" of the latest failed attempt; never secrets
    last_error_at     timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, dataset_key)
);

-- The cursor never moves backwards, whoever writes it.
CREATE FUNCTION chain_sync_cursor_monotonic() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.next_block < OLD.next_block THEN
        RAISE EXCEPTION 'chain_sync cursor may not move backwards (% -> %)', OLD.next_block, NEW.next_block
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER chain_sync_streams_cursor_monotonic
    BEFORE UPDATE OF next_block ON chain_sync_streams
    FOR EACH ROW EXECUTE FUNCTION chain_sync_cursor_monotonic();

-- The scheduled-range ledger: one row per planned range, unique per stream and range,
-- written in the same transaction as its task, its outbox row and the cursor advance.
CREATE TABLE chain_sync_ranges (
    job_id          uuid NOT NULL,
    dataset_key     text NOT NULL,
    range_start     bigint NOT NULL CHECK (range_start >= 0),
    range_end       bigint NOT NULL CHECK (range_end > range_start),
    task_id         uuid NOT NULL REFERENCES tasks (id),  -- one task may extract several streams' range
    status          text NOT NULL DEFAULT 'scheduled' CHECK (status IN ('scheduled', 'completed')),
    dataset_version uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, dataset_key, range_start, range_end),
    UNIQUE (task_id, dataset_key),
    FOREIGN KEY (job_id, dataset_key) REFERENCES chain_sync_streams (job_id, dataset_key) ON DELETE CASCADE,
    CHECK ((status = 'completed') = (dataset_version IS NOT NULL))
);

-- In-flight counts per stream read only the scheduled rows.
CREATE INDEX chain_sync_ranges_inflight_idx ON chain_sync_ranges (job_id, dataset_key) WHERE status = 'scheduled';

-- Latest head per RPC pool, written by the head observer; planning treats a stale row as no head.
CREATE TABLE chain_head_observations (
    org_id      uuid NOT NULL,
    chain_id    bigint NOT NULL CHECK (chain_id > 0),
    rpc_pool    text NOT NULL CHECK (rpc_pool ~ '^[a-z][a-z0-9_]{0,63}$'),
    head_block  bigint NOT NULL CHECK (head_block >= 0),
    observed_at timestamptz NOT NULL,
    PRIMARY KEY (org_id, chain_id, rpc_pool)
);


-- A partitioned dataset reads the union of its registered range versions whose config
-- hash is the stream's current one (chain_sync streams); a versioned dataset reads its
-- current version.
ALTER TABLE datasets ADD COLUMN kind text NOT NULL DEFAULT 'versioned'
    CHECK (kind IN ('versioned', 'partitioned'));
ALTER TABLE datasets ADD COLUMN partition_config_hash text;
CREATE INDEX dataset_versions_producer_idx ON dataset_versions (producer_task_id);

-- A cryo_ingest task completes only with one dataset publication per stream it extracts, and its
-- completion marks its range completed, in the same transaction. Failures record the
-- stream's last error category.
CREATE FUNCTION chain_sync_task_finished() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    expected int;
    published int;
    marked int;
BEGIN
    IF NEW.status = 'completed' THEN
        -- One version per stream the task extracts (one for a task outside the ledger).
        SELECT greatest(count(*), 1) INTO expected FROM chain_sync_ranges WHERE task_id = NEW.id;
        SELECT count(*) INTO published FROM dataset_versions WHERE producer_task_id = NEW.id;
        IF published <> expected THEN
            RAISE EXCEPTION 'cryo_ingest must publish one dataset version per stream (% expected, % given)',
                expected, published USING ERRCODE = 'TRPUB';
        END IF;
        UPDATE chain_sync_ranges r SET status = 'completed', dataset_version = v.dataset_version, updated_at = now()
        FROM chain_sync_streams s, dataset_versions v
        WHERE r.task_id = NEW.id AND s.job_id = r.job_id AND s.dataset_key = r.dataset_key
          AND v.dataset_uuid = s.dataset_uuid AND v.producer_task_id = NEW.id;
        GET DIAGNOSTICS marked = ROW_COUNT;
        IF marked <> (SELECT count(*) FROM chain_sync_ranges WHERE task_id = NEW.id) THEN
            RAISE EXCEPTION 'cryo_ingest published versions of other datasets than its streams'
                USING ERRCODE = 'TRPUB';
        END IF;
    ELSIF NEW.status = 'failed' AND NEW.error_message ~ '^[a-z]+/[A-Z_]+' THEN
        UPDATE chain_sync_streams s
        SET last_error = substring(NEW.error_message FROM '^[a-z]+/[A-Z_]+'), last_error_at = now()
        FROM chain_sync_ranges r
        WHERE r.task_id = NEW.id AND s.job_id = r.job_id AND s.dataset_key = r.dataset_key;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER chain_sync_task_finished
    AFTER UPDATE OF status ON tasks
    FOR EACH ROW
    WHEN (NEW.operator = 'cryo_ingest' AND OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status IN ('completed', 'failed'))
    EXECUTE FUNCTION chain_sync_task_finished();
