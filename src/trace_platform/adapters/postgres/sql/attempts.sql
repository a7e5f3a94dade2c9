-- Liveness of a task attempt, for credentials bound to one (capability tokens).

-- name: attempt_is_current
-- True only while (task_id, attempt) is the task's current attempt and it is running:
-- a cancelled, completed, failed or superseded (reaped and retried) attempt is not.
-- One primary-key lookup (tasks_pkey); no lock taken.
SELECT EXISTS (SELECT 1 FROM tasks WHERE id = $1 AND attempt = $2 AND status = 'running');
