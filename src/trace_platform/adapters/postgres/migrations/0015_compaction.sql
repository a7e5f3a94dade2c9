-- Compaction of chain_sync ranges (servers/chain_sync/compaction.py, workers/compact.py).
--
-- chain_sync_compactions: one row per planned merge of a run of adjacent completed ledger
-- ranges of one stream into one object: the compact task (declared output: the new
-- version), the covering range, and its inputs (the ledger rows it replaces, with the
-- task and version each had when planned).
--
-- Cutover, as the reorg repair's (0014): the completion trigger of the compact task, in the
-- completion's own transaction, deletes the input ledger rows and inserts one covering row
-- naming the compact task and its version. resolve_published reads the ledger, so a query
-- that resolved before keeps its pinned versions and the next one reads the merged one;
-- there is no moment with both or neither. If any input row changed since planning (a
-- reorg repair cut it over) nothing is cut over: the compaction is 'stale' and its output
-- is retired unread.
--
-- chain_sync_retired_versions: versions no ledger row names any more, with when; the
-- collector deletes their objects once no query that resolved before can still run.

CREATE TABLE chain_sync_compactions (
    task_id     uuid PRIMARY KEY REFERENCES tasks (id),
    job_id      uuid NOT NULL REFERENCES chain_sync_jobs (id) ON DELETE CASCADE,
    dataset_key text NOT NULL,
    dataset_uuid uuid NOT NULL,
    range_start bigint NOT NULL,
    range_end   bigint NOT NULL CHECK (range_end > range_start),
    new_version uuid NOT NULL,
    status      text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'cut_over', 'stale')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX chain_sync_compactions_stream_idx ON chain_sync_compactions (job_id, dataset_key, status);

CREATE TABLE chain_sync_compaction_inputs (
    task_id     uuid NOT NULL REFERENCES chain_sync_compactions (task_id) ON DELETE CASCADE,
    range_start bigint NOT NULL,
    range_end   bigint NOT NULL,
    old_task_id uuid NOT NULL,
    old_version uuid NOT NULL,
    PRIMARY KEY (task_id, range_start)
);

CREATE TABLE chain_sync_retired_versions (
    dataset_uuid    uuid NOT NULL,
    dataset_version uuid NOT NULL,
    reason          text NOT NULL CHECK (reason IN ('compacted', 'stale_compaction')),
    retired_at      timestamptz NOT NULL DEFAULT now(),
    collected_at    timestamptz,
    PRIMARY KEY (dataset_uuid, dataset_version)
);
CREATE INDEX chain_sync_retired_versions_due_idx ON chain_sync_retired_versions (retired_at)
    WHERE collected_at IS NULL;

-- The collector asks whether any ledger row still names a version.
CREATE INDEX chain_sync_ranges_version_idx ON chain_sync_ranges (dataset_version);

CREATE FUNCTION chain_sync_compaction_finished() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    c chain_sync_compactions%ROWTYPE;
    n_inputs int;
    n_current int;
BEGIN
    SELECT * INTO c FROM chain_sync_compactions WHERE task_id = NEW.id FOR UPDATE;
    IF NOT FOUND OR c.status <> 'pending' THEN
        RETURN NEW;
    END IF;
    -- Exactly its declared version, nothing else (the Dispatcher checked the prefix).
    IF (SELECT count(*) FROM dataset_versions WHERE producer_task_id = NEW.id) <> 1
       OR NOT EXISTS (SELECT 1 FROM dataset_versions
                      WHERE producer_task_id = NEW.id AND dataset_uuid = c.dataset_uuid
                        AND dataset_version = c.new_version) THEN
        RAISE EXCEPTION 'compact must publish exactly its declared version' USING ERRCODE = 'TRPUB';
    END IF;
    -- The inputs, locked: a concurrent repair cutover of one of them waits or has happened.
    PERFORM 1 FROM chain_sync_ranges r
    JOIN chain_sync_compaction_inputs i ON i.task_id = NEW.id AND i.range_start = r.range_start
    WHERE r.job_id = c.job_id AND r.dataset_key = c.dataset_key
    FOR UPDATE OF r;
    SELECT count(*) INTO n_inputs FROM chain_sync_compaction_inputs WHERE task_id = NEW.id;
    SELECT count(*) INTO n_current
    FROM chain_sync_compaction_inputs i
    JOIN chain_sync_ranges r ON r.job_id = c.job_id AND r.dataset_key = c.dataset_key
        AND r.range_start = i.range_start AND r.range_end = i.range_end
        AND r.task_id = i.old_task_id AND r.dataset_version = i.old_version AND r.status = 'completed'
    WHERE i.task_id = NEW.id;
    IF n_current <> n_inputs OR (SELECT count(*) FROM chain_sync_ranges r
                                 WHERE r.job_id = c.job_id AND r.dataset_key = c.dataset_key
                                   AND r.range_start < c.range_end AND r.range_end > c.range_start) <> n_inputs THEN
        -- Something cut an input over since planning: keep the ledger, drop the merge.
        UPDATE chain_sync_compactions SET status = 'stale', finished_at = now() WHERE task_id = NEW.id;
        INSERT INTO chain_sync_retired_versions (dataset_uuid, dataset_version, reason)
        VALUES (c.dataset_uuid, c.new_version, 'stale_compaction') ON CONFLICT DO NOTHING;
        RETURN NEW;
    END IF;
    INSERT INTO chain_sync_retired_versions (dataset_uuid, dataset_version, reason)
    SELECT c.dataset_uuid, i.old_version, 'compacted' FROM chain_sync_compaction_inputs i WHERE i.task_id = NEW.id
    ON CONFLICT DO NOTHING;
    DELETE FROM chain_sync_ranges r
    USING chain_sync_compaction_inputs i
    WHERE i.task_id = NEW.id AND r.job_id = c.job_id AND r.dataset_key = c.dataset_key
      AND r.range_start = i.range_start AND r.range_end = i.range_end;
    INSERT INTO chain_sync_ranges (job_id, dataset_key, range_start, range_end, task_id, status, dataset_version)
    VALUES (c.job_id, c.dataset_key, c.range_start, c.range_end, NEW.id, 'completed', c.new_version);
    UPDATE chain_sync_compactions SET status = 'cut_over', finished_at = now() WHERE task_id = NEW.id;
    RETURN NEW;
END
$$;

CREATE TRIGGER chain_sync_compaction_finished
    AFTER UPDATE OF status ON tasks
    FOR EACH ROW
    WHEN (NEW.operator = 'compact' AND OLD.status IS DISTINCT FROM NEW.status AND NEW.status = 'completed')
    EXECUTE FUNCTION chain_sync_compaction_finished();

-- A merged version holds exactly the rows its inputs held, and each input was routed to
-- downstream DAG jobs when it was published: routing the merged one would run them again
-- over the same blocks (an alert would fire twice). The 0011 rule, minus compact outputs.
CREATE OR REPLACE FUNCTION dataset_version_route_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.producer_task_id IS NOT NULL
       AND EXISTS (SELECT 1 FROM chain_sync_compactions c WHERE c.task_id = NEW.producer_task_id) THEN
        RETURN NULL;
    END IF;
    INSERT INTO outbox (kind, payload)
    VALUES ('route_event', jsonb_build_object('dataset_uuid', NEW.dataset_uuid, 'dataset_version', NEW.dataset_version));
    RETURN NULL;
END
$$;
