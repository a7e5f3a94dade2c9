-- One notification per queue per INSERT statement instead of one trigger call per row:
-- the outbox relay publishes hundreds of wake-ups in one statement, and listeners only
-- need to know that a queue has new messages.
DROP TRIGGER queue_messages_notify ON queue_messages;

CREATE OR REPLACE FUNCTION trace_queue_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('trace_queue', q) FROM (SELECT DISTINCT queue AS q FROM new_messages) AS queues;
    RETURN NULL;
END
$$;

CREATE TRIGGER queue_messages_notify AFTER INSERT ON queue_messages
    REFERENCING NEW TABLE AS new_messages
    FOR EACH STATEMENT EXECUTE FUNCTION trace_queue_notify();

-- Heartbeats change only lease_expires_at. With the lease column out of every index,
-- they are HOT updates (no index insertions); the reaper reads the running tasks
-- (at most the workers' slots) through the partial index and sorts them itself.
DROP INDEX tasks_running_lease_idx;
CREATE INDEX tasks_running_idx ON tasks (id) WHERE status = 'running';
ALTER TABLE tasks SET (fillfactor = 80);
