-- User API v1 (datasets and alerts): names published in an org's registry, and the
-- fields of an alert definition a user edits.

-- A published name: a user-facing alias of a registry dataset (a chain_sync stream's or
-- a DAG output's). Metadata only: the dataset's storage identity is its uuid, so a name
-- never moves data. Names are unique per org among aliases; the Publish RPC also refuses
-- a name that is another dataset's registry name (checked under an advisory lock).
CREATE TABLE dataset_aliases (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id       uuid NOT NULL,
    name         text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,127}$'),
    dataset_uuid uuid NOT NULL REFERENCES datasets (id),
    created_by   uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, name)
);
CREATE INDEX dataset_aliases_dataset ON dataset_aliases (dataset_uuid);

ALTER TABLE alert_definitions
    ADD COLUMN description text NOT NULL DEFAULT '' CHECK (length(description) <= 1024),
    ADD COLUMN severity text CHECK (severity IN ('info', 'warning', 'critical'));

-- Keyset paging of the user API: (created_at, id) per org.
CREATE INDEX datasets_org_page ON datasets (org_id, created_at, id);
CREATE INDEX alert_definitions_org_page ON alert_definitions (org_id, created_at, id);
CREATE INDEX alert_events_definition_page ON alert_events (org_id, alert_definition_id, created_at, id);
CREATE INDEX alert_deliveries_org_page ON alert_deliveries (org_id, created_at, id);
