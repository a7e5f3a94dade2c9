-- The outputs a task was created for, recorded by its trusted creator (the chain_sync
-- planner, in the statement that plans the range) and never changed afterwards. A
-- completion may publish only these dataset versions, in the task's org, under the
-- storage prefix the platform derives for each; a task created without declared outputs
-- publishes nothing. Each element: {dataset_uuid, dataset_version, config_hash,
-- range_start, range_end}.
ALTER TABLE tasks ADD COLUMN declared_outputs jsonb NOT NULL DEFAULT '[]'
    CHECK (jsonb_typeof(declared_outputs) = 'array');

