-- The outputs a task was created for, recorded by its trusted creator (the chain_sync
-- planner, in the statement that plans the range) and never changed afterwards. A
-- completion may publish only these dataset versions, in the task's org, under the
-- storage prefix the platform derives for each; a task created without declared outputs
-- publishes nothing. Each element: {dataset_uuid, dataset_version, config_hash,
-- range_start, range_end}.
ALTER TABLE tasks ADD COLUMN declared_outputs jsonb NOT NULL DEFAULT '[]'
    CHECK (jsonb_typeof(declared_outputs) = 'array');


-- Ranges planned before this migration: their tasks' outputs are those of the config the
-- planner wrote (only ledger tasks: a task created through CreateTasks declares nothing).
UPDATE tasks t
SET declared_outputs = (
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'dataset_uuid', o ->> 'dataset_uuid', 'dataset_version', o ->> 'dataset_version',
               'config_hash', o ->> 'config_hash', 'range_start', (t.config ->> 'range_start')::bigint,
               'range_end', (t.config ->> 'range_end')::bigint)), '[]')
    FROM jsonb_array_elements(t.config -> 'outputs') AS o)
WHERE t.operator = 'cryo_ingest' AND t.status <> 'completed' AND jsonb_typeof(t.config -> 'outputs') = 'array'
  AND EXISTS (SELECT 1 FROM chain_sync_ranges r WHERE r.task_id = t.id);

-- The completion rule of cryo_ingest (migration 0004) marks a range completed only with
-- the version the task was created for: the ledger never takes a version from the task.
CREATE OR REPLACE FUNCTION chain_sync_task_finished() RETURNS trigger LANGUAGE plpgsql AS $$
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
