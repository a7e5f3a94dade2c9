-- UDF bundles uploaded through the user API (BundleService). A row is created when an
-- upload starts (state 'pending', its object under the staging prefix) and becomes
-- usable only when Finalize has checked the object's SHA-256, size and signed manifest
-- ('ready', `url` set to the immutable object named by org and sha256). A refused
-- Finalize marks the row 'failed' (url stays NULL) and deletes the staged object.

CREATE TABLE bundles (
    id           uuid PRIMARY KEY,
    org_id       uuid NOT NULL REFERENCES orgs (id),
    name         text NOT NULL DEFAULT '' CHECK (length(name) <= 128),
    -- Declared by the uploader; Finalize checks the object against both.
    sha256       text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes   bigint NOT NULL CHECK (size_bytes > 0),
    -- Declared runtime (may be empty); once ready, the signed manifest's runtime.
    runtime      text NOT NULL DEFAULT '',
    entrypoint   text NOT NULL DEFAULT '',
    state        text NOT NULL CHECK (state IN ('pending', 'finalizing', 'ready', 'failed')),
    staging_uri  text NOT NULL,
    url          text,
    failure      text,  -- the reason code of a refused Finalize
    created_by   uuid NOT NULL REFERENCES users (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    claimed_at   timestamptz,
    finalized_at timestamptz,
    CHECK ((state = 'ready') = (url IS NOT NULL))
);

-- One usable bundle per content in an org: a re-upload of the same bytes answers it.
CREATE UNIQUE INDEX bundles_org_sha256_ready ON bundles (org_id, sha256) WHERE state = 'ready';
-- Keyset paging of List (ORDER BY created_at, id within an org).
CREATE INDEX bundles_org_created ON bundles (org_id, created_at, id);
