-- A follow_head job may poll its head more often than once a second (fast chains):
-- head_poll_interval_seconds becomes fractional. Integer values convert exactly; the
-- table's CHECK (> 0, below max_head_age_seconds) holds as before.
ALTER TABLE chain_sync_jobs ALTER COLUMN head_poll_interval_seconds TYPE double precision;
