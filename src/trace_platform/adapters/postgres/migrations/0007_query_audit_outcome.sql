-- The audit row is opened while the query runs (committed before any row of the answer
-- leaves) and closed afterwards with the outcome, row count and duration. Rows written
-- before this migration were written after success: they are 'ok'.
ALTER TABLE query_audit
    ALTER COLUMN row_count DROP NOT NULL,
    ALTER COLUMN duration_ms DROP NOT NULL,
    ADD COLUMN outcome text NOT NULL DEFAULT 'ok' CHECK (outcome IN ('running', 'ok', 'failed')),
    ADD COLUMN failure_reason text;
ALTER TABLE query_audit ALTER COLUMN outcome DROP DEFAULT;
ALTER TABLE query_audit ADD CONSTRAINT query_audit_closed_ok_has_counts
    CHECK (outcome <> 'ok' OR (row_count IS NOT NULL AND duration_ms IS NOT NULL));
ALTER TABLE query_audit ADD CONSTRAINT query_audit_failed_has_reason
    CHECK ((outcome = 'failed') = (failure_reason IS NOT NULL));
