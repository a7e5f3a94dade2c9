-- name: insert_pending
INSERT INTO bundles (id, org_id, name, sha256, size_bytes, runtime, state, staging_uri, created_by)
VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8)
RETURNING *;

-- name: get
SELECT * FROM bundles WHERE org_id = $1 AND id = $2;

-- name: ready_by_sha256
SELECT * FROM bundles WHERE org_id = $1 AND sha256 = $2 AND state = 'ready';

-- name: claim
-- Take a pending bundle for Finalize. A claim older than $3 seconds is taken again:
-- its finalizer died mid-check (its object is still staged, nothing was published).
UPDATE bundles SET state = 'finalizing', claimed_at = now()
WHERE org_id = $1 AND id = $2
  AND (state = 'pending' OR (state = 'finalizing' AND claimed_at < now() - make_interval(secs => $3)))
RETURNING *;

-- name: mark_ready
UPDATE bundles
SET state = 'ready', url = $3, runtime = $4, entrypoint = $5, finalized_at = now()
WHERE org_id = $1 AND id = $2 AND state = 'finalizing'
RETURNING *;

-- name: mark_failed
UPDATE bundles SET state = 'failed', failure = $3, finalized_at = now()
WHERE org_id = $1 AND id = $2 AND state IN ('pending', 'finalizing');

-- name: delete_unfinished
-- A second upload of content that became ready meanwhile: the existing bundle answers.
DELETE FROM bundles WHERE org_id = $1 AND id = $2 AND state <> 'ready';

-- name: list_page
SELECT * FROM bundles
WHERE org_id = $1
  AND ($2::timestamptz IS NULL OR (created_at, id) > ($2::timestamptz, $3::uuid))
ORDER BY created_at, id
LIMIT $4;

-- name: insert_ready
-- A streamed upload, checked before this insert: READY at once. The same content
-- already READY in the org: no row (the caller answers the existing one).
INSERT INTO bundles (id, org_id, name, sha256, size_bytes, runtime, entrypoint, state, staging_uri, url,
                     created_by, finalized_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, 'ready', '', $8, $9, now())
ON CONFLICT (org_id, sha256) WHERE state = 'ready' DO NOTHING
RETURNING *;

-- name: release
-- Give a claimed bundle back (its object was not there yet, or the store was down).
UPDATE bundles SET state = 'pending', claimed_at = NULL
WHERE org_id = $1 AND id = $2 AND state = 'finalizing';

-- name: expire_pending
-- Uploads nobody finalized long after their PUT URL expired: never usable. Their
-- staged objects are returned for deletion.
UPDATE bundles SET state = 'failed', failure = 'BUNDLE_UPLOAD_EXPIRED', finalized_at = now()
WHERE id IN (
    SELECT id FROM bundles
    WHERE org_id = $1 AND state = 'pending' AND created_at < now() - make_interval(secs => $2)
    ORDER BY created_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
RETURNING staging_uri;
