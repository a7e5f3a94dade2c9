-- name: member_role
-- The caller's user id and role in the token's org; no row when either is unknown.
SELECT u.id::text AS user_id, m.role
FROM users u
JOIN memberships m ON m.user_id = u.id AND m.org_id = $2
WHERE u.subject = $1;

-- name: ensure_org
INSERT INTO orgs (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING;

-- name: ensure_user
WITH inserted AS (
    INSERT INTO users (subject) VALUES ($1) ON CONFLICT (subject) DO NOTHING RETURNING id
)
SELECT id::text FROM inserted
UNION ALL
SELECT id::text FROM users WHERE subject = $1
LIMIT 1;

-- name: set_membership
INSERT INTO memberships (org_id, user_id, role) VALUES ($1, $2, $3)
ON CONFLICT (org_id, user_id) DO UPDATE SET role = EXCLUDED.role;

-- name: remove_membership
DELETE FROM memberships WHERE org_id = $1 AND user_id = $2;
