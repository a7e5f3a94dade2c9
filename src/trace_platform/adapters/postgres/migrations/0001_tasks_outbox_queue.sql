-- Orchestration state: tasks, attempts, outbox, and the Lite wake-up queue.

-- One formula for retry backoff, used by failed completions and the lease reaper.
-- NULL means no attempt is left (terminal failure).
CREATE FUNCTION trace_next_retry_at(attempt int, max_attempts int, base_s double precision, cap_s double precision)
RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN attempt < max_attempts
        THEN now() + make_interval(secs => LEAST(cap_s, base_s * power(2, attempt - 1)))
        ELSE NULL END
$$;

CREATE TABLE tasks (
    id               uuid PRIMARY KEY,
    org_id           uuid NOT NULL,
    operator         text NOT NULL,
    config           jsonb NOT NULL DEFAULT '{}',
    inputs           jsonb NOT NULL DEFAULT '[]',
    datasets         jsonb NOT NULL DEFAULT '[]',
    status           text NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'canceled')),
    attempt          int  NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    max_attempts     int  NOT NULL CHECK (max_attempts >= 1),
    lease_token      uuid,
    lease_expires_at timestamptz,
    worker_id        text,
    next_retry_at    timestamptz,
    started_at       timestamptz,
    finished_at      timestamptz,
    outputs          jsonb NOT NULL DEFAULT '[]',
    error_message    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- The reaper and retry scheduler scan only these small partial indexes.
CREATE INDEX tasks_running_lease_idx ON tasks (lease_expires_at) WHERE status = 'running';
CREATE INDEX tasks_retry_due_idx ON tasks (next_retry_at) WHERE status = 'failed' AND next_retry_at IS NOT NULL;

-- One row per attempt that was claimed: who ran it and how it ended.
CREATE TABLE task_attempts (
    task_id       uuid NOT NULL REFERENCES tasks (id),
    attempt       int  NOT NULL,
    worker_id     text NOT NULL,
    lease_token   uuid NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    -- NULL while running; then completed | failed | canceled | lease_expired
    outcome       text,
    error_message text,
    PRIMARY KEY (task_id, attempt)
);

CREATE TABLE task_events (
    id              bigserial PRIMARY KEY,
    task_id         uuid NOT NULL REFERENCES tasks (id),
    attempt         int  NOT NULL,
    dataset_uuid    uuid NOT NULL,
    dataset_version uuid NOT NULL,
    cursor          bigint,
    partition_key   text NOT NULL DEFAULT '',
    range_start     bigint,
    range_end       bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (task_id, dataset_uuid, dataset_version, cursor, partition_key)
);

-- Side effects decided inside a state transaction, delivered at least once afterwards.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('enqueue_task', 'enqueue_buffer', 'route_event')),
    queue        text,
    payload      jsonb NOT NULL,
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done')),
    attempts     int NOT NULL DEFAULT 0,
    available_at timestamptz NOT NULL DEFAULT now(),
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz
);
CREATE INDEX outbox_pending_idx ON outbox (id) WHERE status = 'pending';

-- Postgres-backed wake-up queue (Lite). SQS-like: receive hides a message for a
-- visibility timeout; ack deletes it; an unacked message becomes visible again.
CREATE TABLE queue_messages (
    id            bigserial PRIMARY KEY,
    queue         text NOT NULL,
    payload       jsonb NOT NULL,
    visible_at    timestamptz NOT NULL DEFAULT now(),
    receive_count int NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX queue_messages_queue_idx ON queue_messages (queue, id);

CREATE FUNCTION trace_queue_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('trace_queue', NEW.queue);
    RETURN NULL;
END
$$;
CREATE TRIGGER queue_messages_notify AFTER INSERT ON queue_messages
    FOR EACH ROW EXECUTE FUNCTION trace_queue_notify();
