-- Query audit by principal, PII access audit, and registry lookups by name.

-- Exactly one principal per audit row: a task attempt or a user.
ALTER TABLE query_audit ADD COLUMN attempt int;
ALTER TABLE query_audit ADD COLUMN rpc text NOT NULL DEFAULT 'task_query'
    CHECK (rpc IN ('task_query', 'query', 'query_arrow'));
ALTER TABLE query_audit ADD CONSTRAINT query_audit_one_principal
    CHECK ((task_id IS NULL) <> (user_id IS NULL));
CREATE INDEX query_audit_org_created ON query_audit (org_id, created_at);

-- One row per successful query over a dataset with PII-classified columns, naming the
-- classified columns the query referenced (all of them when it used *).
CREATE TABLE pii_access_audit (
    id             bigserial PRIMARY KEY,
    query_audit_id bigint NOT NULL REFERENCES query_audit (id),
    org_id         uuid NOT NULL,
    task_id        uuid,
    user_id        text,
    dataset_uuid   uuid NOT NULL,
    columns        text[] NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE datasets ADD CONSTRAINT datasets_current_version_fk
    FOREIGN KEY (id, current_version) REFERENCES dataset_versions (dataset_uuid, dataset_version);
