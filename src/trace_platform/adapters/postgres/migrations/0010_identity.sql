-- Identity for the user API: organisations, users (one per identity-provider subject)
-- and memberships with a role. A user JWT's `sub` names a user; its `org_id` claim names
-- the organisation it acts in, which must be one of that user's memberships.

CREATE TABLE orgs (
    id         uuid PRIMARY KEY,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- The identity provider's `sub`: the only thing a token says about who it is.
    subject    text NOT NULL UNIQUE CHECK (length(subject) BETWEEN 1 AND 256),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE memberships (
    org_id     uuid NOT NULL REFERENCES orgs (id),
    user_id    uuid NOT NULL REFERENCES users (id),
    role       text NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, user_id)
);
