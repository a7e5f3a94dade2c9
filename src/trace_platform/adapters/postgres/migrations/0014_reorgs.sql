-- Reorg repair for chain_sync jobs (servers/chain_sync/reorg.py).
--
-- chain_sync_block_hashes: each synced block's hash and parent hash, read from the
-- published blocks version of its range (dataset_version says which, so a repaired range
-- is recorded again from its new version). The reorg detector compares them with the node.
--
-- chain_sync_reorgs: every divergence seen: the fork point (first replaced block), the
-- published tip it was seen at, its depth, and whether it was repaired or stopped the job
-- (REORG_TOO_DEEP: deeper than the job's max_reorg_depth; nothing is guessed).
--
-- chain_sync_repairs: one row per affected range and stream: the repair task that
-- re-extracts it (an ordinary cryo_ingest task with declared outputs, completed through the
-- normal completion path) and the version it replaces. When the last repair task of a
-- reorg completes, its completion transaction cuts every affected range over to the new
-- versions at once (the ledger row is what a query resolves, see datasets.sql
-- resolve_published): a query that already resolved keeps its pinned versions (objects
-- are never deleted), the next one reads the repaired data. The same transaction records
-- one data_invalidations row per replaced version naming the new one.

CREATE TABLE chain_sync_block_hashes (
    job_id          uuid NOT NULL REFERENCES chain_sync_jobs (id) ON DELETE CASCADE,
    block_number    bigint NOT NULL CHECK (block_number >= 0),
    block_hash      bytea NOT NULL,
    parent_hash     bytea,  -- the node's parentHash when the published data has no such column
    dataset_version uuid NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, block_number)
);

CREATE TABLE chain_sync_reorgs (
    id          bigserial PRIMARY KEY,
    job_id      uuid NOT NULL REFERENCES chain_sync_jobs (id) ON DELETE CASCADE,
    detected_at timestamptz NOT NULL DEFAULT now(),
    fork_block  bigint NOT NULL CHECK (fork_block >= 0),  -- the first block that differs
    tip_block   bigint NOT NULL CHECK (tip_block >= fork_block),  -- the highest published block then
    depth       bigint NOT NULL CHECK (depth > 0),
    status      text NOT NULL CHECK (status IN ('repairing', 'repaired', 'too_deep')),
    ranges      int NOT NULL DEFAULT 0 CHECK (ranges >= 0),  -- ledger ranges (range x stream) re-extracted
    repaired_at timestamptz
);

-- At most one repair in progress per job.
CREATE UNIQUE INDEX chain_sync_reorgs_one_open ON chain_sync_reorgs (job_id) WHERE status = 'repairing';
CREATE INDEX chain_sync_reorgs_job_idx ON chain_sync_reorgs (job_id, id);

CREATE TABLE chain_sync_repairs (
    reorg_id    bigint NOT NULL REFERENCES chain_sync_reorgs (id) ON DELETE CASCADE,
    job_id      uuid NOT NULL,
    dataset_key text NOT NULL,
    range_start bigint NOT NULL,
    range_end   bigint NOT NULL CHECK (range_end > range_start),
    task_id     uuid NOT NULL REFERENCES tasks (id),
    old_task_id uuid NOT NULL,
    old_version uuid NOT NULL,
    new_version uuid NOT NULL,  -- the declared output of task_id for this stream
    status      text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'extracted')),
    PRIMARY KEY (reorg_id, dataset_key, range_start),
    UNIQUE (task_id, dataset_key),
    FOREIGN KEY (job_id, dataset_key, range_start, range_end)
        REFERENCES chain_sync_ranges (job_id, dataset_key, range_start, range_end) ON DELETE CASCADE
);

CREATE TABLE data_invalidations (
    id               bigserial PRIMARY KEY,
    org_id           uuid NOT NULL,
    dataset_uuid     uuid NOT NULL,
    reason           text NOT NULL CHECK (reason IN ('reorg')),
    reorg_id         bigint REFERENCES chain_sync_reorgs (id) ON DELETE SET NULL,
    range_start      bigint NOT NULL,
    range_end        bigint NOT NULL CHECK (range_end > range_start),
    replaced_version uuid NOT NULL,
    new_version      uuid NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX data_invalidations_dataset_idx ON data_invalidations (dataset_uuid, id);

-- The cryo_ingest completion rule (0004, 0008) with repair tasks: a repair task publishes
-- exactly its declared versions, its repair rows become 'extracted', and the completion
-- that extracts the reorg's last one cuts every affected range over (one transaction).
CREATE OR REPLACE FUNCTION chain_sync_task_finished() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    expected int;
    published int;
    marked int;
    rid bigint;
BEGIN
    IF NEW.status = 'completed' AND EXISTS (SELECT 1 FROM chain_sync_repairs WHERE task_id = NEW.id) THEN
        SELECT count(*) INTO expected FROM chain_sync_repairs WHERE task_id = NEW.id;
        SELECT count(*) INTO published FROM dataset_versions WHERE producer_task_id = NEW.id;
        IF published <> expected THEN
            RAISE EXCEPTION 'cryo_ingest must publish one dataset version per stream (% expected, % given)',
                expected, published USING ERRCODE = 'TRPUB';
        END IF;
        UPDATE chain_sync_repairs p SET status = 'extracted'
        FROM chain_sync_streams s, dataset_versions v
        WHERE p.task_id = NEW.id AND s.job_id = p.job_id AND s.dataset_key = p.dataset_key
          AND v.dataset_uuid = s.dataset_uuid AND v.producer_task_id = NEW.id
          AND v.dataset_version = p.new_version;
        GET DIAGNOSTICS marked = ROW_COUNT;
        IF marked <> expected THEN
            RAISE EXCEPTION 'cryo_ingest published versions other than its declared outputs'
                USING ERRCODE = 'TRPUB';
        END IF;
        SELECT reorg_id INTO rid FROM chain_sync_repairs WHERE task_id = NEW.id LIMIT 1;
        -- Serialises the completions of one reorg: the last one to take the lock sees every
        -- other one's rows committed, so exactly one of them cuts over.
        PERFORM 1 FROM chain_sync_reorgs WHERE id = rid AND status = 'repairing' FOR UPDATE;
        IF FOUND AND NOT EXISTS (SELECT 1 FROM chain_sync_repairs WHERE reorg_id = rid AND status <> 'extracted') THEN
            INSERT INTO data_invalidations (org_id, dataset_uuid, reason, reorg_id, range_start, range_end,
                                            replaced_version, new_version)
            SELECT j.org_id, s.dataset_uuid, 'reorg', rid, p.range_start, p.range_end, p.old_version, p.new_version
            FROM chain_sync_repairs p
            JOIN chain_sync_streams s ON s.job_id = p.job_id AND s.dataset_key = p.dataset_key
            JOIN chain_sync_jobs j ON j.id = p.job_id
            WHERE p.reorg_id = rid;
            UPDATE chain_sync_ranges r
            SET task_id = p.task_id, dataset_version = p.new_version, status = 'completed', updated_at = now()
            FROM chain_sync_repairs p
            WHERE p.reorg_id = rid AND r.job_id = p.job_id AND r.dataset_key = p.dataset_key
              AND r.range_start = p.range_start AND r.range_end = p.range_end;
            UPDATE chain_sync_reorgs SET status = 'repaired', repaired_at = now() WHERE id = rid;
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.status = 'completed' THEN
        -- One version per stream the task extracts (one for a task outside the ledger).
        SELECT greatest(count(*), 1) INTO expected FROM chain_sync_ranges WHERE task_id = NEW.id;
        SELECT count(*) INTO published FROM dataset_versions WHERE producer_task_id = NEW.id;
        IF published <> expected THEN
            RAISE EXCEPTION 'cryo_ingest must publish one dataset version per stream (% expected, % given)',
                expected, published USING ERRCODE = 'TRPUB';
        END IF;
        UPDATE chain_sync_ranges r SET status = 'completed', dataset_version = v.dataset_version, updated_at = now()
        FROM chain_sync_streams s, dataset_versions v, jsonb_array_elements(NEW.declared_outputs) AS o
        WHERE r.task_id = NEW.id AND s.job_id = r.job_id AND s.dataset_key = r.dataset_key
          AND v.dataset_uuid = s.dataset_uuid AND v.producer_task_id = NEW.id
          AND o ->> 'dataset_uuid' = s.dataset_uuid::text AND o ->> 'dataset_version' = v.dataset_version::text;
        GET DIAGNOSTICS marked = ROW_COUNT;
        IF marked <> (SELECT count(*) FROM chain_sync_ranges WHERE task_id = NEW.id) THEN
            RAISE EXCEPTION 'cryo_ingest published versions other than its declared outputs'
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
