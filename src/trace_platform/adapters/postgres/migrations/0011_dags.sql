-- DAGs: named per org, immutable versions (one per distinct YAML), their jobs, the
-- active pointer, and the routing ledger that turns each publication of an upstream
-- dataset version into exactly one task per downstream job.

CREATE TABLE dags (
    id                uuid PRIMARY KEY,
    org_id            uuid NOT NULL,
    name              text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,63}$'),
    active_version_id uuid,
    -- The version active before the current one: what Rollback activates.
    previous_version_id uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, name)
);

-- Immutable: nothing updates or deletes a version (the trigger below refuses it).
CREATE TABLE dag_versions (
    id          uuid PRIMARY KEY,
    dag_id      uuid NOT NULL REFERENCES dags (id),
    org_id      uuid NOT NULL,
    seq         int NOT NULL CHECK (seq >= 1),  -- 1, 2, ... per DAG, in deploy order
    yaml        text NOT NULL,
    yaml_sha256 text NOT NULL CHECK (yaml_sha256 ~ '^[0-9a-f]{64}$'),
    created_by  uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (dag_id, yaml_sha256),
    UNIQUE (dag_id, seq)
);
CREATE INDEX dag_versions_page_idx ON dag_versions (dag_id, created_at, id);

ALTER TABLE dags ADD FOREIGN KEY (active_version_id) REFERENCES dag_versions (id);
ALTER TABLE dags ADD FOREIGN KEY (previous_version_id) REFERENCES dag_versions (id);

CREATE FUNCTION dag_versions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'dag versions are immutable' USING ERRCODE = 'check_violation';
END
$$;
CREATE TRIGGER dag_versions_immutable BEFORE UPDATE OR DELETE ON dag_versions
    FOR EACH ROW EXECUTE FUNCTION dag_versions_immutable();

-- One row per job of a version, written with the version. ``spec`` is the job's canonical
-- form; ``resolved`` what deploy resolved in the org (bundle url and sha256, alert
-- definition id, the udf's output dataset uuid).
CREATE TABLE dag_jobs (
    dag_version_id uuid NOT NULL REFERENCES dag_versions (id),
    name           text NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('chain_sync', 'alert_evaluate', 'udf')),
    spec           jsonb NOT NULL,
    resolved       jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (dag_version_id, name)
);

-- Which dataset each job of a version reads, resolved at activation (a chain_sync stream's
-- dataset uuid is the one its stream row holds). Routing looks jobs up by dataset here.
CREATE TABLE dag_job_inputs (
    dag_version_id uuid NOT NULL,
    job_name       text NOT NULL,
    upstream       text NOT NULL,  -- the reference as written: <job>.<stream> or <job>
    dataset_uuid   uuid NOT NULL,
    PRIMARY KEY (dag_version_id, job_name, dataset_uuid),
    FOREIGN KEY (dag_version_id, job_name) REFERENCES dag_jobs (dag_version_id, name)
);
CREATE INDEX dag_job_inputs_dataset_idx ON dag_job_inputs (dataset_uuid);

-- The chain_sync jobs a DAG applied: activation pauses the ones its new version dropped,
-- and refuses one another DAG owns.
ALTER TABLE chain_sync_jobs ADD COLUMN owner_dag_id uuid REFERENCES dags (id);

-- The routing ledger: one row (and one task) per downstream job and upstream dataset
-- version, whatever the number of events that name it. Keyed by the DAG and job name,
-- not the version: a re-activated or rolled-back version does not route a version twice.
CREATE TABLE dag_routes (
    dag_id           uuid NOT NULL REFERENCES dags (id),
    job_name         text NOT NULL,
    dataset_uuid     uuid NOT NULL,
    dataset_version  uuid NOT NULL,
    org_id           uuid NOT NULL,
    dag_version_id   uuid NOT NULL REFERENCES dag_versions (id),  -- the version the task started with
    task_id          uuid NOT NULL UNIQUE REFERENCES tasks (id) DEFERRABLE INITIALLY DEFERRED,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dag_id, job_name, dataset_uuid, dataset_version)
);

-- A task routed from a DAG records the version it was created for.
ALTER TABLE tasks ADD COLUMN dag_version_id uuid REFERENCES dag_versions (id);

-- Every registered dataset version is a publication downstream jobs may route from:
-- its route_event goes to the outbox in the transaction that registers it (events a task
-- emits for the same version land on the same ledger row, so they add nothing).
CREATE FUNCTION dataset_version_route_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox (kind, payload)
    VALUES ('route_event', jsonb_build_object('dataset_uuid', NEW.dataset_uuid, 'dataset_version', NEW.dataset_version));
    RETURN NULL;
END
$$;
CREATE TRIGGER dataset_versions_route_event AFTER INSERT ON dataset_versions
    FOR EACH ROW EXECUTE FUNCTION dataset_version_route_event();
