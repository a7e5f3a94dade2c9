-- The latest scheduled integrity check of each chain_sync job that asks for one (the
-- `verify:` section): when it ran, the range it checked, how many differences it found and
-- the first few (block, stream, field, published and node values: hashes and counts, never
-- a URL or the node's text), or the reason code it could not run with. One row per job,
-- replaced by each check; `trace status` shows it.
CREATE TABLE chain_sync_verifications (
    job_id uuid PRIMARY KEY REFERENCES chain_sync_jobs (id) ON DELETE CASCADE,
    checked_at timestamptz NOT NULL DEFAULT now(),
    from_block bigint NOT NULL CHECK (from_block >= 0),
    to_block bigint NOT NULL CHECK (to_block >= from_block),
    difference_count bigint NOT NULL DEFAULT 0 CHECK (difference_count >= 0),
    differences jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(differences) = 'array'),
    error text
);
