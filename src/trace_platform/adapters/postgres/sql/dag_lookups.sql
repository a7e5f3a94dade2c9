-- name: ready_bundle
SELECT url, sha256 FROM bundles WHERE org_id = $1 AND id = $2 AND state = 'ready';

-- name: alert_by_name
SELECT id FROM alert_definitions WHERE org_id = $1 AND name = $2;
