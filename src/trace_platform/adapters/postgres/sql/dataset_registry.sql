-- name: api_datasets
-- Registry entries of an org for the user API: one by a name it is known under ($2:
-- registry or published name), or a keyset page after ($3, $4) by (created_at, id).
-- A partitioned dataset's range and current version come from the trusted ledger (its
-- stream's completed ranges), a versioned one's from its current version, a DAG udf
-- output's (no current version) from its latest version a completed routed task
-- declared and produced (as datasets.sql resolve_published reads it).
SELECT d.id::text AS id, d.name, d.kind, d.published, d.pii_columns, d.created_at, d.updated_at,
       ARRAY(SELECT a.name FROM dataset_aliases a WHERE a.org_id = d.org_id AND a.dataset_uuid = d.id
             ORDER BY a.name) AS aliases,
       src.sync_name, src.dataset_key,
       CASE WHEN d.kind = 'partitioned' THEN rng.latest::text
            ELSE coalesce(d.current_version, udf.latest)::text END AS current_version,
       rng.range_start, rng.range_end,
       CASE WHEN d.kind = 'partitioned' THEN coalesce(rng.n, 0)
            ELSE (SELECT count(*) FROM dataset_versions v WHERE v.dataset_uuid = d.id) END AS version_count
FROM datasets d
LEFT JOIN LATERAL (
    SELECT j.name AS sync_name, s.dataset_key
    FROM chain_sync_streams s JOIN chain_sync_jobs j ON j.id = s.job_id
    WHERE s.dataset_uuid = d.id AND j.org_id = d.org_id
) src ON true
LEFT JOIN LATERAL (
    SELECT min(r.range_start) AS range_start, max(r.range_end) AS range_end, count(*) AS n,
           (array_agg(r.dataset_version ORDER BY r.range_end DESC))[1] AS latest
    FROM chain_sync_ranges r
    JOIN chain_sync_streams s ON s.job_id = r.job_id AND s.dataset_key = r.dataset_key
    WHERE s.dataset_uuid = d.id AND r.status = 'completed'
) rng ON d.kind = 'partitioned'
LEFT JOIN LATERAL (
    SELECT v.dataset_version AS latest
    FROM dataset_versions v
    JOIN tasks t ON t.id = v.producer_task_id
    JOIN dag_routes r ON r.task_id = t.id
    WHERE v.dataset_uuid = d.id AND t.status = 'completed' AND r.org_id = d.org_id
      AND t.declared_outputs @> jsonb_build_array(jsonb_build_object(
          'dataset_uuid', d.id::text, 'dataset_version', v.dataset_version::text))
    ORDER BY v.created_at DESC, v.dataset_version DESC
    LIMIT 1
) udf ON d.kind = 'versioned' AND d.current_version IS NULL
WHERE d.org_id = $1
  AND ($2::text IS NULL OR d.name = $2
       OR (d.id = (SELECT a.dataset_uuid FROM dataset_aliases a WHERE a.org_id = $1 AND a.name = $2)
           -- as resolve_published: a registry name wins over an alias made before it
           AND NOT EXISTS (SELECT 1 FROM datasets x WHERE x.org_id = $1 AND x.name = $2)))
  AND ($3::timestamptz IS NULL OR (d.created_at, d.id) > ($3, $4::uuid))
ORDER BY d.created_at, d.id
LIMIT $5;

-- name: api_stream_dataset
-- The registry dataset of a chain_sync stream of the org.
SELECT s.dataset_uuid::text
FROM chain_sync_streams s JOIN chain_sync_jobs j ON j.id = s.job_id
WHERE j.org_id = $1 AND j.name = $2 AND s.dataset_key = $3;

-- name: api_lock_name
-- Serialises publishes of one name in one org (the registry name and the alias live in
-- two tables, so no single unique index covers both).
SELECT pg_advisory_xact_lock(hashtextextended('dataset-name:' || $1::text || ':' || $2::text, 0));

-- name: api_name_holder
-- Which dataset a name of the org is bound to, as a registry name or a published name.
SELECT id::text AS dataset_uuid FROM datasets WHERE org_id = $1 AND name = $2
UNION ALL
SELECT dataset_uuid::text FROM dataset_aliases WHERE org_id = $1 AND name = $2;

-- name: api_insert_alias
INSERT INTO dataset_aliases (org_id, name, dataset_uuid, created_by) VALUES ($1, $2, $3, $4);

-- name: api_mark_published
UPDATE datasets SET published = true, updated_at = now() WHERE id = $1 AND org_id = $2;

-- name: api_dag_output_dataset
-- The registry dataset of a DAG's udf job output (its one output, index 0): the job of the
-- DAG's active version, else of its latest version; only a dataset the org's registry holds.
SELECT d.id::text
FROM dags g
JOIN dag_versions v ON v.dag_id = g.id
JOIN dag_jobs j ON j.dag_version_id = v.id
JOIN datasets d ON d.id::text = j.resolved ->> 'output_dataset_uuid' AND d.org_id = g.org_id
WHERE g.org_id = $1 AND g.name = $2 AND j.name = $3 AND j.kind = 'udf'
ORDER BY (v.id = g.active_version_id) DESC NULLS LAST, v.seq DESC
LIMIT 1;
