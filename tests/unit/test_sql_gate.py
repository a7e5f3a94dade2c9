"""Example-based tests of the fail-closed SQL gate (trace_platform.core.sql_gate)."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from collections.abc import Iterator
from typing import Any

import duckdb
import pytest

from trace_platform.core import sql_gate_rules as rules
from trace_platform.core.sql_gate import (
    MAX_SQL_BYTES,
    REASONS,
    SqlRejected,
    check_sql,
    sql_sha256,
)

DEEP = 40  # deeper than MAX_BRACKET_DEPTH


def _nested_subqueries(depth: int) -> str:
    return "SELECT * FROM " + "(SELECT * FROM " * depth + "dataset" + ")" * depth


HOSTILE: list[tuple[str, str]] = [
    # --- empty, oversized, invalid text -------------------------------------------------------
    ("", "EMPTY_QUERY"),
    ("   \n\t ", "EMPTY_QUERY"),
    ("-- only a comment", "EMPTY_QUERY"),
    ("/* only a block comment */", "EMPTY_QUERY"),
    (";", "EMPTY_QUERY"),
    (" ; ; ", "EMPTY_QUERY"),
    ("/* a */ -- b\n;", "EMPTY_QUERY"),
    ("SELECT 1" + " " * MAX_SQL_BYTES, "SQL_TOO_LARGE"),
    ("SELECT '" + "é" * 60_000 + "'", "SQL_TOO_LARGE"),
    ("SELECT 1\x00", "INVALID_CHARACTERS"),
    ("SELECT '\ud800'", "INVALID_CHARACTERS"),
    ("SELECT hash FROM dataset\x85", "INVALID_CHARACTERS"),  # NEL: space to sqlglot only
    ("SELECT hash FROM dataset\u2028", "INVALID_CHARACTERS"),
    ("SELECT hash FROM dataset\u00a0, read_csv('x')", "INVALID_CHARACTERS"),
    ("SELECT 1\x1f", "INVALID_CHARACTERS"),
    ("\ufeffSELECT 1", "INVALID_CHARACTERS"),
    ("SELECT hash\u200bFROM dataset", "INVALID_CHARACTERS"),
    ("SELECT '\u202e' AS x", "INVALID_CHARACTERS"),
    ("SELECT 1 -- c\x0b, getenv('HOME')", "INVALID_CHARACTERS"),
    # --- unparseable ----------------------------------------------------------------------------
    ("SELECT", "PARSE_ERROR"),
    ("SELEC 1", "PARSE_ERROR"),
    ("SELECT 'unterminated", "PARSE_ERROR"),
    ("SELECT 1 /* unterminated", "PARSE_ERROR"),
    ("SELECT * FROM", "PARSE_ERROR"),
    ("SELECT (1", "PARSE_ERROR"),
    (")(", "PARSE_ERROR"),
    ("EXPORT DATABASE 'out'", "PARSE_ERROR"),
    ("IMPORT DATABASE 'in'", "PARSE_ERROR"),
    ("SELECT `getenv`('HOME')", "PARSE_ERROR"),
    # --- nesting --------------------------------------------------------------------------------
    ("SELECT " + "(" * DEEP + "1" + ")" * DEEP, "NESTING_TOO_DEEP"),
    (_nested_subqueries(DEEP), "NESTING_TOO_DEEP"),
    ("SELECT " + "abs(" * DEEP + "1" + ")" * DEEP, "NESTING_TOO_DEEP"),
    ("SELECT " + "+".join(["1"] * 2_000), "NESTING_TOO_DEEP"),
    ("SELECT 1 FROM dataset WHERE " + " OR ".join(["value = 1"] * 1_000), "NESTING_TOO_DEEP"),
    ("SELECT " + "NOT " * 3_000 + "true", "NESTING_TOO_DEEP"),
    ("SELECT " + "- " * 3_000 + "1", "NESTING_TOO_DEEP"),
    ("SELECT " + "CASE WHEN true THEN " * 200 + "1" + " END" * 200, "NESTING_TOO_DEEP"),
    ("SELECT " + "[" * DEEP + "1" + "]" * DEEP, "NESTING_TOO_DEEP"),
    # --- more than one statement ------------------------------------------------------------------
    ("SELECT 1; DROP TABLE x", "MULTIPLE_STATEMENTS"),
    ("SELECT 1; SELECT 2", "MULTIPLE_STATEMENTS"),
    ("SELECT 1;SELECT 2;", "MULTIPLE_STATEMENTS"),
    ("select 1 -- c\n; drop table dataset", "MULTIPLE_STATEMENTS"),
    ("SELECT 1 /* ; */ ; PRAGMA version", "MULTIPLE_STATEMENTS"),
    ("SELECT 1;\nINSTALL httpfs", "MULTIPLE_STATEMENTS"),
    ("SELECT 1; ATTACH 'x.db'", "MULTIPLE_STATEMENTS"),
    ("SELECT * FROM dataset; COPY dataset TO 'out.csv'", "MULTIPLE_STATEMENTS"),
    ("SELECT 'a\\'; SELECT 2; --'", "MULTIPLE_STATEMENTS"),
    ("sElEcT 1; dRoP tAbLe dataset", "MULTIPLE_STATEMENTS"),
    ("SELECT 1; SET enable_external_access = true", "MULTIPLE_STATEMENTS"),
    # --- statements that are not queries -----------------------------------------------------------
    ("INSERT INTO dataset VALUES (1, 'x', NULL, 1.0)", "NOT_A_SELECT"),
    ("INSERT INTO dataset SELECT * FROM dataset", "NOT_A_SELECT"),
    ("UPDATE dataset SET value = 0", "NOT_A_SELECT"),
    ("DELETE FROM dataset WHERE true", "NOT_A_SELECT"),
    ("MERGE INTO dataset USING dataset s ON true WHEN MATCHED THEN DELETE", "NOT_A_SELECT"),
    ("CREATE TABLE x AS SELECT 1", "NOT_A_SELECT"),
    ("CREATE OR REPLACE TABLE dataset AS SELECT 1", "NOT_A_SELECT"),
    ("CREATE VIEW v AS SELECT * FROM read_csv('x')", "NOT_A_SELECT"),
    ("CREATE MACRO m(x) AS x", "NOT_A_SELECT"),
    ("CREATE SECRET (TYPE s3, KEY_ID 'k', SECRET 's')", "PARSE_ERROR"),
    ("CREATE TEMP TABLE t (a INT)", "NOT_A_SELECT"),
    ("DROP TABLE dataset", "NOT_A_SELECT"),
    ("ALTER TABLE dataset ADD COLUMN y INT", "NOT_A_SELECT"),
    ("TRUNCATE dataset", "NOT_A_SELECT"),
    ("PRAGMA version", "NOT_A_SELECT"),
    ("pRaGmA table_info('dataset')", "NOT_A_SELECT"),
    ("PRAGMA enable_profiling", "NOT_A_SELECT"),
    ("SET enable_external_access=true", "NOT_A_SELECT"),
    ("SET GLOBAL allowed_directories = ['/']", "NOT_A_SELECT"),
    ("  /* c */ set memory_limit = '100GB'", "NOT_A_SELECT"),
    ("SET VARIABLE x = 1", "NOT_A_SELECT"),
    ("RESET threads", "NOT_A_SELECT"),
    ("COPY (SELECT 1) TO 'x'", "NOT_A_SELECT"),
    ("COPY dataset FROM 'x.csv'", "NOT_A_SELECT"),
    ("COPY dataset TO 's3://bucket/x.parquet' (FORMAT parquet)", "NOT_A_SELECT"),
    ("ATTACH 'x.db'", "NOT_A_SELECT"),
    ("ATTACH 'x.db' AS other (READ_ONLY)", "NOT_A_SELECT"),
    ("DETACH other", "NOT_A_SELECT"),
    ("INSTALL httpfs", "NOT_A_SELECT"),
    ("FORCE INSTALL httpfs", "NOT_A_SELECT"),
    ("LOAD httpfs", "NOT_A_SELECT"),
    ("CALL pragma_version()", "NOT_A_SELECT"),
    ("USE other", "NOT_A_SELECT"),
    ("DESCRIBE dataset", "NOT_A_SELECT"),
    ("DESCRIBE SELECT 1", "NOT_A_SELECT"),
    ("SHOW tables", "NOT_A_SELECT"),
    ("SHOW ALL TABLES", "NOT_A_SELECT"),
    ("SUMMARIZE dataset", "NOT_A_SELECT"),
    ("EXPLAIN SELECT 1", "NOT_A_SELECT"),
    ("EXPLAIN ANALYZE SELECT * FROM dataset", "NOT_A_SELECT"),
    ("CHECKPOINT", "NOT_A_SELECT"),
    ("FORCE CHECKPOINT", "NOT_A_SELECT"),
    ("VACUUM", "NOT_A_SELECT"),
    ("BEGIN", "NOT_A_SELECT"),
    ("BEGIN TRANSACTION", "NOT_A_SELECT"),
    ("COMMIT", "NOT_A_SELECT"),
    ("ROLLBACK", "NOT_A_SELECT"),
    ("PREPARE p AS SELECT 1", "NOT_A_SELECT"),
    ("EXECUTE p", "NOT_A_SELECT"),
    ("DEALLOCATE p", "NOT_A_SELECT"),
    ("VALUES (1), (2)", "NOT_A_SELECT"),
    ("PIVOT dataset ON hash USING sum(value)", "NOT_A_SELECT"),
    ("UNPIVOT dataset ON value INTO NAME k VALUE v", "NOT_A_SELECT"),
    ("getenv('HOME')", "NOT_A_SELECT"),
    # --- SELECT ... INTO ----------------------------------------------------------------------------
    ("SELECT 1 INTO x", "SELECT_INTO"),
    ("SELECT * INTO new_table FROM dataset", "SELECT_INTO"),
    # --- functions that read the host, the catalog or the session ----------------------------------
    ("SELECT getenv('HOME')", "DISALLOWED_FUNCTION"),
    ("select GETENV('HOME')", "DISALLOWED_FUNCTION"),
    ("SELECT \"getenv\"('HOME')", "DISALLOWED_FUNCTION"),
    ("SELECT getenv/**/('HOME')", "DISALLOWED_FUNCTION"),
    ("SELECT getenv\n('HOME')", "DISALLOWED_FUNCTION"),
    ("SELECT current_setting('allowed_directories')", "DISALLOWED_FUNCTION"),
    ("SELECT version()", "DISALLOWED_FUNCTION"),
    ("SELECT current_database()", "DISALLOWED_FUNCTION"),
    ("SELECT current_schema()", "DISALLOWED_FUNCTION"),
    ("SELECT current_schemas(true)", "DISALLOWED_FUNCTION"),
    ("SELECT current_schema", "DISALLOWED_FUNCTION"),
    ("SELECT user", "DISALLOWED_FUNCTION"),
    ("SELECT current_role", "DISALLOWED_FUNCTION"),
    ("SELECT current_user", "DISALLOWED_FUNCTION"),
    ("SELECT session_user", "DISALLOWED_FUNCTION"),
    ("SELECT current_catalog", "DISALLOWED_FUNCTION"),
    ("SELECT load_extension('x')", "DISALLOWED_FUNCTION"),
    ("SELECT http_get('https://example.com')", "DISALLOWED_FUNCTION"),
    ("SELECT http_post('https://example.com', {}, {})", "DISALLOWED_FUNCTION"),
    ("SELECT read_text('/etc/passwd')", "DISALLOWED_FUNCTION"),
    ("SELECT read_csv('x.csv')", "DISALLOWED_FUNCTION"),
    ("SELECT * FROM dataset WHERE hash = getenv('HOME')", "DISALLOWED_FUNCTION"),
    ("SELECT 'HOME'.getenv()", "DISALLOWED_FUNCTION"),
    ("SELECT hash.upper() FROM dataset", "DISALLOWED_FUNCTION"),
    ("SELECT main.abs(1)", "DISALLOWED_FUNCTION"),
    ("SELECT system.main.getenv('HOME')", "DISALLOWED_FUNCTION"),
    ("SELECT nextval('seq')", "DISALLOWED_FUNCTION"),
    ("SELECT setseed(0.5)", "DISALLOWED_FUNCTION"),
    ("SELECT getvariable('x')", "DISALLOWED_FUNCTION"),
    ("SELECT json_serialize_sql('SELECT 1')", "DISALLOWED_FUNCTION"),
    ("SELECT to_json(duckdb_settings())", "DISALLOWED_FUNCTION"),
    ("SELECT pg_typeof(1)", "DISALLOWED_FUNCTION"),
    ("SELECT has_table_privilege('dataset', 'select')", "DISALLOWED_FUNCTION"),
    ("SELECT txid_current()", "DISALLOWED_FUNCTION"),
    ("SELECT COLUMNS('.*') FROM dataset", "DISALLOWED_FUNCTION"),
    ("SELECT 'a' COLLATE nocase", "DISALLOWED_FUNCTION"),
    ("SELECT MAP {'a': 1}", "DISALLOWED_FUNCTION"),
    ("SELECT \uff47\uff45\uff54\uff45\uff4e\uff56('HOME')", "DISALLOWED_FUNCTION"),  # fullwidth
    ("SELECT g\u0435tenv('HOME')", "DISALLOWED_FUNCTION"),  # Cyrillic e
    ("SELECT hash FROM dataset ORDER BY getenv('HOME')", "DISALLOWED_FUNCTION"),
    ("SELECT hash FROM dataset GROUP BY hash HAVING max(getenv('x')) > ''", "DISALLOWED_FUNCTION"),
    ("SELECT sum(value) OVER (PARTITION BY getenv('x')) FROM dataset", "DISALLOWED_FUNCTION"),
    ("SELECT count(*) FILTER (WHERE hash = getenv('x')) FROM dataset", "DISALLOWED_FUNCTION"),
    ("SELECT CASE WHEN true THEN current_setting('x') END", "DISALLOWED_FUNCTION"),
    ("SELECT CAST(getenv('HOME') AS VARCHAR)", "DISALLOWED_FUNCTION"),
    ("SELECT * FROM dataset LIMIT length(getenv('HOME'))", "DISALLOWED_FUNCTION"),
    ("SELECT * FROM dataset QUALIFY getenv('x') = ''", "DISALLOWED_FUNCTION"),
    ("SELECT * FROM dataset a JOIN dataset b ON a.hash = getenv('x')", "DISALLOWED_FUNCTION"),
    ("SELECT (SELECT getenv('HOME'))", "DISALLOWED_FUNCTION"),
    ("WITH c AS (SELECT version() AS v) SELECT * FROM c", "DISALLOWED_FUNCTION"),
    ("SELECT 1 UNION ALL SELECT current_setting('threads')", "DISALLOWED_FUNCTION"),
    # --- table functions ------------------------------------------------------------------------
    ("SELECT * FROM read_parquet('s3://bucket/key.parquet')", "TABLE_FUNCTION"),
    ("SELECT * FROM read_parquet(['a.parquet', 'b.parquet'])", "TABLE_FUNCTION"),
    ("FROM read_csv('x')", "TABLE_FUNCTION"),
    ("FROM read_csv_auto('x')", "TABLE_FUNCTION"),
    ("FROM read_json('x')", "TABLE_FUNCTION"),
    ("FROM read_json_auto('x')", "TABLE_FUNCTION"),
    ("FROM read_json_objects('x')", "TABLE_FUNCTION"),
    ("FROM read_ndjson('x')", "TABLE_FUNCTION"),
    ("FROM read_ndjson_auto('x')", "TABLE_FUNCTION"),
    ("FROM read_ndjson_objects('x')", "TABLE_FUNCTION"),
    ("FROM read_text('/etc/passwd')", "TABLE_FUNCTION"),
    ("FROM read_blob('/etc/passwd')", "TABLE_FUNCTION"),
    ("FROM parquet_scan('x')", "TABLE_FUNCTION"),
    ("FROM parquet_metadata('x')", "TABLE_FUNCTION"),
    ("FROM parquet_schema('x')", "TABLE_FUNCTION"),
    ("FROM parquet_file_metadata('x')", "TABLE_FUNCTION"),
    ("FROM parquet_kv_metadata('x')", "TABLE_FUNCTION"),
    ("FROM sniff_csv('x')", "TABLE_FUNCTION"),
    ("FROM glob('*')", "TABLE_FUNCTION"),
    ("FROM query('select 1')", "TABLE_FUNCTION"),
    ("FROM query_table('dataset')", "TABLE_FUNCTION"),
    ("FROM iceberg_scan('s3://b/t')", "TABLE_FUNCTION"),
    ("FROM delta_scan('s3://b/t')", "TABLE_FUNCTION"),
    ("FROM duckdb_settings()", "TABLE_FUNCTION"),
    ("FROM duckdb_extensions()", "TABLE_FUNCTION"),
    ("FROM duckdb_functions()", "TABLE_FUNCTION"),
    ("FROM duckdb_tables()", "TABLE_FUNCTION"),
    ("FROM duckdb_columns()", "TABLE_FUNCTION"),
    ("FROM duckdb_databases()", "TABLE_FUNCTION"),
    ("FROM duckdb_secrets()", "TABLE_FUNCTION"),
    ("FROM duckdb_temporary_files()", "TABLE_FUNCTION"),
    ("FROM duckdb_memory()", "TABLE_FUNCTION"),
    ("FROM pragma_version()", "TABLE_FUNCTION"),
    ("FROM pragma_table_info('dataset')", "TABLE_FUNCTION"),
    ("FROM which_secret('s3://b/x', 's3')", "TABLE_FUNCTION"),
    ("FROM sqlite_scan('x.db', 't')", "TABLE_FUNCTION"),
    ("FROM st_read('x.shp')", "TABLE_FUNCTION"),
    ("FROM range(10)", "TABLE_FUNCTION"),
    ("FROM generate_series(1, 10)", "TABLE_FUNCTION"),
    ("FROM unnest([1, 2])", "TABLE_FUNCTION"),
    ("FROM dataset()", "TABLE_FUNCTION"),
    ("SELECT * FROM READ_PARQUET('x')", "TABLE_FUNCTION"),
    ("SELECT * FROM Read_Csv_Auto('x')", "TABLE_FUNCTION"),
    ("SELECT * FROM \"read_csv\"('x')", "TABLE_FUNCTION"),
    ("SELECT * FROM dataset, read_csv('x')", "TABLE_FUNCTION"),
    ("SELECT * FROM dataset JOIN read_csv('x') r ON true", "TABLE_FUNCTION"),
    ("SELECT * FROM dataset, LATERAL read_csv('x')", "TABLE_FUNCTION"),
    ("SELECT * FROM dataset CROSS JOIN LATERAL glob('*')", "TABLE_FUNCTION"),
    ("SELECT * FROM dataset d, LATERAL (SELECT * FROM read_csv(d.hash))", "TABLE_FUNCTION"),
    ("SELECT (SELECT count(*) FROM read_csv('x'))", "TABLE_FUNCTION"),
    ("SELECT * FROM dataset WHERE hash IN (SELECT * FROM glob('*'))", "TABLE_FUNCTION"),
    ("SELECT * FROM dataset WHERE EXISTS (FROM read_text('/etc/passwd'))", "TABLE_FUNCTION"),
    ("SELECT * FROM dataset WHERE hash IN (FROM read_csv('x'))", "TABLE_FUNCTION"),
    ("WITH x AS (SELECT * FROM read_parquet('f')) SELECT * FROM x", "TABLE_FUNCTION"),
    ("WITH read_parquet AS (SELECT 1) SELECT * FROM read_parquet('x.parquet')", "TABLE_FUNCTION"),
    ("SELECT * FROM dataset UNION ALL SELECT * FROM read_csv('x')", "TABLE_FUNCTION"),
    ("SELECT * FROM (SELECT * FROM (SELECT * FROM read_csv('x')))", "TABLE_FUNCTION"),
    # --- string / path relations ----------------------------------------------------------------
    ("FROM 'file.csv'", "STRING_RELATION"),
    ("SELECT * FROM 'x.parquet'", "STRING_RELATION"),
    ('SELECT * FROM "x.parquet"', "STRING_RELATION"),
    ("SELECT * FROM 's3://bucket/key'", "STRING_RELATION"),
    ("SELECT * FROM 'https://example.com/x.csv'", "STRING_RELATION"),
    ("SELECT * FROM '/etc/passwd'", "STRING_RELATION"),
    ("SELECT * FROM '../secret'", "STRING_RELATION"),
    ("SELECT * FROM 'C:\\data\\x'", "STRING_RELATION"),
    ("SELECT * FROM 'data/*.parquet'", "STRING_RELATION"),
    ("SELECT * FROM '~/x'", "STRING_RELATION"),
    ("SELECT * FROM 'gs://b/x'", "STRING_RELATION"),
    ('SELECT * FROM "md:db"', "STRING_RELATION"),
    ("SELECT * FROM dataset JOIN 'other.csv' USING (hash)", "STRING_RELATION"),
    ("SELECT * FROM dataset, 'a.parquet'", "STRING_RELATION"),
    ("WITH c AS (FROM 'x.csv') SELECT * FROM c", "STRING_RELATION"),
    ("SELECT (FROM 'x.csv')", "STRING_RELATION"),
    ("SELECT * FROM dataset WHERE hash IN (FROM 'x.json')", "STRING_RELATION"),
    ('WITH "x.csv" AS (SELECT 1) SELECT * FROM "x.csv"', "STRING_RELATION"),
    ("SELECT * FROM main.'x.csv'", "STRING_RELATION"),
    # --- relations outside the allowlist -------------------------------------------------------
    ("SELECT * FROM main.dataset", "DISALLOWED_RELATION"),
    ("SELECT * FROM memory.main.dataset", "DISALLOWED_RELATION"),
    ("SELECT * FROM db.schema.tbl", "DISALLOWED_RELATION"),
    ("SELECT * FROM information_schema.tables", "DISALLOWED_RELATION"),
    ("SELECT * FROM INFORMATION_SCHEMA.SCHEMATA", "DISALLOWED_RELATION"),
    ('SELECT * FROM "information_schema"."columns"', "DISALLOWED_RELATION"),
    ("SELECT * FROM sqlite_master", "DISALLOWED_RELATION"),
    ("SELECT * FROM sqlite_schema", "DISALLOWED_RELATION"),
    ("SELECT * FROM pg_catalog.pg_class", "DISALLOWED_RELATION"),
    ("SELECT * FROM pg_class", "DISALLOWED_RELATION"),
    ("SELECT * FROM pg_tables", "DISALLOWED_RELATION"),
    ("SELECT * FROM duckdb_settings", "DISALLOWED_RELATION"),
    ("SELECT * FROM duckdb_tables", "DISALLOWED_RELATION"),
    ("SELECT * FROM system.main.duckdb_settings", "DISALLOWED_RELATION"),
    ("SELECT * FROM other_table", "DISALLOWED_RELATION"),
    ("SELECT * FROM df", "DISALLOWED_RELATION"),
    ('SELECT * FROM "dataset2"', "DISALLOWED_RELATION"),
    ("SELECT * FROM datasét", "DISALLOWED_RELATION"),
    ("SELECT * FROM \uff24\uff21\uff34\uff21\uff33\uff25\uff34", "DISALLOWED_RELATION"),
    ("SELECT * FROM d\u0430taset", "DISALLOWED_RELATION"),  # Cyrillic a
    ('SELECT * FROM "data set"', "DISALLOWED_RELATION"),
    ("SELECT * FROM (WITH t AS (SELECT 1) SELECT * FROM t) s, t", "DISALLOWED_RELATION"),
    ("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a", "DISALLOWED_RELATION"),
    ("WITH t AS (SELECT * FROM t) SELECT * FROM t", "DISALLOWED_RELATION"),
    ("WITH duckdb_settings AS (SELECT 1) SELECT * FROM duckdb_settings", "DISALLOWED_RELATION"),
    ("WITH pg_class AS (SELECT 1) SELECT 1", "DISALLOWED_RELATION"),
    ("SELECT * FROM dataset AS t, t", "DISALLOWED_RELATION"),
    (
        "SELECT hash FROM dataset WHERE hash IN (WITH c AS (SELECT '1') SELECT * FROM c) UNION SELECT * FROM c",
        "DISALLOWED_RELATION",
    ),
    ("SELECT * FROM (SHOW TABLES)", "DISALLOWED_RELATION"),
    # --- syntax outside the allowlist -------------------------------------------------------------
    ("SELECT * FROM (VALUES (1), (2))", "DISALLOWED_SYNTAX"),
    ("SELECT * FROM dataset WHERE block_number IN (VALUES (1))", "DISALLOWED_SYNTAX"),
    ("SELECT $1", "DISALLOWED_SYNTAX"),
    ("SELECT ?", "DISALLOWED_SYNTAX"),
    ("SELECT * FROM dataset TABLESAMPLE 10%", "DISALLOWED_SYNTAX"),
    ("SELECT * FROM dataset USING SAMPLE 10", "DISALLOWED_SYNTAX"),
    ("SELECT * FROM dataset PIVOT (sum(value) FOR hash IN ('a'))", "DISALLOWED_SYNTAX"),
    ("SELECT * FROM (PIVOT dataset ON hash USING sum(value))", "DISALLOWED_SYNTAX"),
    ("SELECT * FROM (SUMMARIZE dataset)", "DISALLOWED_SYNTAX"),
    ("SELECT * FROM (DESCRIBE dataset)", "DISALLOWED_SYNTAX"),
    ("SELECT * FROM dataset AT (VERSION => 1)", "DISALLOWED_SYNTAX"),
    ("SELECT #1 FROM dataset", "DISALLOWED_SYNTAX"),
    ("SELECT [x + 1 FOR x IN [1, 2]]", "DISALLOWED_SYNTAX"),
]

HOSTILE_IDS = [f"{i:03d}-{reason}" for i, (_, reason) in enumerate(HOSTILE)]


BENIGN: list[str] = [
    "SELECT 1",
    "SELECT * FROM dataset",
    "select block_number, hash from dataset where value > 1.0 order by block_number desc limit 10 offset 1",
    "FROM dataset",
    "FROM dataset SELECT hash",
    "TABLE dataset",
    "(SELECT 1)",
    "SELECT count(*), sum(value), avg(value), min(ts), max(ts) FROM dataset",
    "SELECT hash, count(*) AS n FROM dataset GROUP BY hash HAVING count(*) >= 1 ORDER BY n DESC",
    "SELECT approx_count_distinct(hash), stddev(value), quantile_cont(value, 0.5), "
    "median(value), arg_min(hash, value), arg_max(hash, value), string_agg(hash, ','), "
    "list(hash), array_agg(block_number), bool_and(value > 0), bool_or(value > 2) FROM dataset",
    "SELECT hash, row_number() OVER (PARTITION BY hash ORDER BY ts), rank() OVER w, "
    "dense_rank() OVER w, lag(value) OVER w, lead(value, 1, 0) OVER w, first_value(value) "
    "OVER w, last_value(value) OVER w, ntile(2) OVER w FROM dataset WINDOW w AS (ORDER BY ts)",
    "SELECT sum(value) OVER (ORDER BY ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM dataset",
    "SELECT * FROM dataset QUALIFY row_number() OVER (PARTITION BY hash ORDER BY ts DESC) = 1",
    "WITH recent AS (SELECT * FROM dataset WHERE ts > TIMESTAMP '2024-01-01') SELECT count(*) FROM recent",
    "WITH a AS (SELECT block_number FROM dataset), b AS (SELECT block_number * 2 AS x FROM a) SELECT * FROM b",
    "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 5) SELECT sum(n) FROM t",
    "WITH c AS (SELECT hash FROM dataset) SELECT * FROM c UNION SELECT * FROM c",
    "SELECT hash FROM dataset UNION SELECT hash FROM dataset",
    "SELECT block_number FROM dataset INTERSECT SELECT block_number FROM dataset",
    "SELECT block_number FROM dataset EXCEPT ALL SELECT block_number FROM dataset",
    "SELECT hash FROM dataset UNION ALL BY NAME SELECT hash FROM dataset",
    "SELECT * FROM (SELECT hash, value FROM dataset) AS s WHERE s.value > 0",
    "SELECT * FROM dataset WHERE block_number IN (SELECT max(block_number) FROM dataset) "
    "AND EXISTS (SELECT 1 FROM dataset)",
    "SELECT hash, (SELECT max(value) FROM dataset) AS mx FROM dataset",
    "SELECT * FROM dataset WHERE value > ALL (SELECT value - 100 FROM dataset)",
    "SELECT a.hash, b.value FROM dataset a JOIN dataset b ON a.block_number = b.block_number "
    "LEFT JOIN dataset c ON c.hash = a.hash",
    "SELECT * FROM dataset a CROSS JOIN dataset b",
    "SELECT a.hash, b.value FROM dataset a ASOF JOIN dataset b ON a.hash = b.hash AND a.ts >= b.ts",
    "SELECT * FROM dataset a SEMI JOIN dataset b USING (hash)",
    "SELECT * FROM dataset a ANTI JOIN dataset b USING (hash)",
    "SELECT * FROM dataset a POSITIONAL JOIN dataset b",
    "SELECT * FROM dataset d, LATERAL (SELECT d.value * 2 AS v2) l",
    "SELECT CASE WHEN value > 1 THEN 'hi' ELSE 'lo' END, CAST(block_number AS VARCHAR), "
    "TRY_CAST(hash AS INTEGER), value::BIGINT, if(value > 1, 1, 0) FROM dataset",
    "SELECT date_trunc('day', ts), extract(year FROM ts), strftime(ts, '%Y-%m-%d'), "
    "epoch_ms(ts), ts + INTERVAL 1 DAY, ts - INTERVAL '1 hour', date_diff('hour', ts, ts), "
    "time_bucket(INTERVAL '1 hour', ts), now() > ts, year(ts), dayofweek(ts) FROM dataset",
    "SELECT lower(hash), upper(hash), length(hash), concat(hash, 'x'), substring(hash, 1, 2), "
    "replace(hash, 'a', 'b'), regexp_matches(hash, '^0x'), regexp_extract(hash, '0x(..)', 1), "
    "regexp_replace(hash, '0x', ''), starts_with(hash, '0x'), split_part(hash, 'x', 2), "
    "lpad(hash, 8, '0'), trim(hash), hash || '!' FROM dataset",
    "SELECT * FROM dataset WHERE hash LIKE '0x%' OR hash ILIKE '0X%' OR hash GLOB '0x*' "
    "OR hash SIMILAR TO '0x.*' OR hash ~ '^0x'",
    "SELECT md5(hash), sha256(hash), sha1(hash), hash(hash), hex(block_number), unhex('41'), "
    "to_base64(encode(hash)) FROM dataset",
    "SELECT coalesce(hash, 'none'), nullif(hash, ''), ifnull(value, 0), greatest(value, 1), "
    "least(value, 1) FROM dataset WHERE hash IS NOT NULL AND ts IS NOT NULL "
    "AND hash IS DISTINCT FROM 'x' AND value BETWEEN 0 AND 10",
    "SELECT * FROM dataset WHERE hash = 'https://example.com/x.csv' "
    "OR hash = 's3://bucket/x.parquet' OR hash LIKE '/etc/%' OR hash = 'read_csv(''x'')'",
    "/* leading comment */ SELECT 1 -- trailing comment",
    "SELECT 1;",
    "SELECT 1; ; -- trailing comment after the statement",
    'SELECT "hash" AS "weird name", "value" FROM "dataset"',
    'FROM "DATASET"',
    "FROM DataSet",
    "FROM 'dataset'",
    'SELECT "user", "current_schema" FROM (SELECT 1 AS "user", 2 AS "current_schema")',
    "SELECT t.user FROM (SELECT 1 AS user) t",
    "WITH dataset AS (SELECT 42 AS x) SELECT x FROM dataset",
    "WITH read_parquet AS (SELECT 1 AS x) SELECT * FROM read_parquet",
    "WITH T AS (SELECT 1 AS x) SELECT * FROM t",
    "SELECT [1, 2, 3][2], [1, 2, 3][1:2], tags[1], len(tags), list_contains(tags, 'a'), unnest(tags) FROM dataset",
    "SELECT {'a': 1, 'b': 'x'}.a, struct_pack(k := block_number) FROM dataset",
    "SELECT '{\"a\": 1}'::JSON ->> '$.a', json_extract('{\"a\": 1}', '$.a')",
    "SELECT hash, count(*) FROM dataset GROUP BY ALL ORDER BY ALL",
    "SELECT hash, block_number, sum(value) FROM dataset GROUP BY ROLLUP (hash, block_number)",
    "SELECT hash, sum(value) FROM dataset GROUP BY GROUPING SETS ((hash), ())",
    "SELECT hash, sum(value) FROM dataset GROUP BY CUBE (hash)",
    "SELECT DISTINCT hash FROM dataset",
    "SELECT DISTINCT ON (hash) hash, value FROM dataset ORDER BY hash, value DESC",
    "SELECT count(DISTINCT hash) FROM dataset",
    "SELECT sum(value) FILTER (WHERE value > 1), percentile_cont(0.5) WITHIN GROUP (ORDER BY value) FROM dataset",
    _nested_subqueries(8),
    "SELECT * EXCLUDE (tags) FROM dataset",
    "SELECT * REPLACE (value * 2 AS value) FROM dataset",
    "SELECT * FROM dataset LIMIT 50%",
    "SELECT current_date, current_timestamp",
    "SELECT abs(value), round(value, 1), floor(value), ceil(value), sqrt(value), pow(value, 2), "
    "ln(value), log10(value), exp(1), block_number % 2, block_number // 2, 2 ** 3, "
    "block_number & 1, block_number | 1, block_number << 1, ~block_number, -value, pi() "
    "FROM dataset",
    "SELECT value FROM dataset ORDER BY value DESC NULLS LAST LIMIT 1",
    "SELECT 'héllo ☃' AS \"ünïcode\"",
    "SELECT hash FROM dataset WHERE hash IN ('0xab', '0xcd') AND NOT (value < 0)",
    "SELECT * FROM dataset WHERE (hash, block_number) IN (SELECT hash, block_number FROM dataset)",
    "SELECT * FROM dataset WHERE ts BETWEEN TIMESTAMP '2024-01-01' AND DATE '2024-02-01'",
    "SELECT value::DECIMAL(10, 2), '2024-01-01'::DATE, tags::VARCHAR[] IS NULL FROM dataset",
    "SELECT " + "(" * 20 + "1" + ")" * 20,
    "SELECT " + "abs(" * 20 + "-1" + ")" * 20,
    "SELECT 1 FROM dataset WHERE " + " OR ".join(["value = 1"] * 100),
    "SELECT list_transform([1], lambda x: x + 1), list_filter(tags, lambda t: t <> 'a') FROM dataset",
]


@pytest.fixture(scope="module")
def duck() -> Iterator[Any]:
    """An in-memory DuckDB with a small ``dataset`` table and external access disabled."""
    con = duckdb.connect(":memory:")
    con.execute("CREATE TABLE dataset (block_number BIGINT, hash VARCHAR, ts TIMESTAMP, value DOUBLE, tags VARCHAR[])")
    con.execute(
        "INSERT INTO dataset VALUES "
        "(1, '0xab', TIMESTAMP '2024-01-01 00:00:00', 1.5, ['a', 'b']), "
        "(2, '0xcd', TIMESTAMP '2024-01-02 12:00:00', 2.5, ['c']), "
        "(3, NULL, NULL, NULL, NULL)"
    )
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    yield con
    con.close()


def test_case_counts() -> None:
    assert len(HOSTILE) >= 150
    assert len(BENIGN) >= 30
    assert len({sql for sql, _ in HOSTILE}) == len(HOSTILE)
    assert len(set(BENIGN)) == len(BENIGN)


@pytest.mark.parametrize(("sql", "reason"), HOSTILE, ids=HOSTILE_IDS)
def test_hostile_query_is_rejected(sql: str, reason: str) -> None:
    with pytest.raises(SqlRejected) as info:
        check_sql(sql)
    assert info.value.reason == reason
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


# Names DuckDB's own parser produces for operators and rewrites of allowlisted syntax.
DUCKDB_INTERNAL_FUNCTIONS = frozenset({"count_star", "row"})


def duckdb_disagreements(duck: Any, sql: str) -> list[str] | None:
    """What DuckDB's *own* parser sees in ``sql`` that the gate should never let through.

    Returns None when DuckDB cannot parse the text at all (so it cannot run it either), else
    a list of findings: anything but one SELECT, table functions, qualified or unknown base
    tables, qualified function calls, or calls to functions outside the allowlist.
    """
    try:
        statements = duck.extract_statements(sql)
    except duckdb.Error:
        return None
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        return [f"statements: {[str(s.type) for s in statements]}"]
    tree = json.loads(duck.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    if tree.get("error") or len(tree.get("statements", [])) != 1:
        return ["json_serialize_sql failed"]
    findings: list[str] = []
    ctes: set[str] = set()
    tables: list[str] = []
    stack: list[Any] = [tree["statements"]]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        stack.extend(node.values())
        if isinstance(node.get("cte_map"), dict):
            ctes.update(entry["key"].lower() for entry in node["cte_map"].get("map", []))
        if node.get("type") in {"TABLE_FUNCTION", "EXPRESSION_LIST", "SHOW_REF", "PIVOT"}:
            findings.append(f"ref type {node.get('type')}")
        if node.get("type") == "BASE_TABLE":
            if node.get("catalog_name") or node.get("schema_name"):
                findings.append("qualified table")
            tables.append(str(node.get("table_name", "")).lower())
        if "function_name" in node:
            name = str(node["function_name"]).lower()
            if node.get("schema") or node.get("catalog"):
                findings.append(f"qualified function {name}")
            if name.isidentifier() and name not in (rules.FUNCTION_NAMES | DUCKDB_INTERNAL_FUNCTIONS):
                findings.append(f"function {name}")
    findings.extend(f"table {t}" for t in tables if t != "dataset" and t not in ctes)
    return findings


@pytest.mark.parametrize("sql", BENIGN)
def test_benign_query_is_accepted_and_runs_in_duckdb(sql: str, duck: Any) -> None:
    check_sql(sql)
    assert duckdb_disagreements(duck, sql) == []
    duck.execute(sql).fetchall()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT getenv('HOME')",
        "SELECT * FROM read_csv('x')",
        "SELECT * FROM main.dataset",
        "SELECT * FROM other",
        "SELECT system.main.abs(1)",
        "SELECT 1; SELECT 2",
        "SELECT * FROM (VALUES (1))",
    ],
)
def test_duckdb_oracle_flags_what_the_gate_rejects(sql: str, duck: Any) -> None:
    """The oracle used on accepted queries really sees these constructs."""
    assert duckdb_disagreements(duck, sql)


def test_allowed_relations_are_configurable() -> None:
    allowed = frozenset({"blocks", "Txs"})
    check_sql("SELECT * FROM blocks JOIN TXS USING (block_number)", allowed_relations=allowed)
    for sql in ("SELECT * FROM dataset", "SELECT * FROM main.blocks"):
        with pytest.raises(SqlRejected) as info:
            check_sql(sql, allowed_relations=allowed)
        assert info.value.reason == "DISALLOWED_RELATION"
    with pytest.raises(SqlRejected):
        check_sql("SELECT * FROM dataset", allowed_relations=frozenset())


MARKER = "zz_marker_7f3a91"

MARKED_TEMPLATES = [
    "SELECT 1; DROP TABLE {m}",
    "SELECT getenv('{m}')",
    "SELECT * FROM read_csv('{m}.csv')",
    "SELECT * FROM '{m}.parquet'",
    "SELECT * FROM {m}",
    "SELECT {m}(1)",
    "LOAD {m}",
    "EXPLAIN SELECT '{m}'",
    "PREPARE {m} AS SELECT 1",
    "SELECT '{m}",
    "SELECT {m} FROM",
    "SELECT * FROM dataset WHERE hash = '{m}' AND " + "(" * 40 + "1" + ")" * 40,
    "SELECT '{m}' INTO x",
    "SELECT hash ->> '$[{m}' FROM dataset; SELECT 1",
    "SELECT '{m}' || '" + "x" * MAX_SQL_BYTES + "'",
]


@pytest.mark.parametrize("template", MARKED_TEMPLATES)
def test_rejection_never_echoes_or_logs_the_sql(template: str, caplog: pytest.LogCaptureFixture) -> None:
    sql = template.format(m=MARKER)
    with caplog.at_level(logging.DEBUG), pytest.raises(SqlRejected) as info:
        check_sql(sql)
    exc = info.value
    for text in (str(exc), repr(exc), exc.reason, *map(str, exc.args)):
        assert MARKER not in text
    assert str(exc) == f"{exc.reason}: {REASONS[exc.reason]}"
    assert exc.__cause__ is None and exc.__context__ is None
    assert MARKER not in str(vars(exc))
    for record in caplog.records:
        assert MARKER not in record.getMessage()


def test_sqlglot_logging_still_works_outside_the_gate(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sqlglot"):
        logging.getLogger("sqlglot").warning("outside the gate")
    assert any(r.getMessage() == "outside the gate" for r in caplog.records)


def test_sql_rejected_is_picklable_and_validates_reason() -> None:
    exc = pickle.loads(pickle.dumps(SqlRejected("TABLE_FUNCTION")))
    assert isinstance(exc, SqlRejected) and exc.reason == "TABLE_FUNCTION"
    assert SqlRejected("SELECT * FROM secret").reason == "INTERNAL_ERROR"
    assert all(code.isupper() and " " not in code for code in REASONS)


def test_non_string_input_is_rejected() -> None:
    with pytest.raises(SqlRejected) as info:
        check_sql(b"SELECT 1")  # type: ignore[arg-type]
    assert info.value.reason == "INVALID_CHARACTERS"


def test_sql_sha256() -> None:
    assert sql_sha256("SELECT 1") == hashlib.sha256(b"SELECT 1").hexdigest()
    assert len(sql_sha256("\ud800")) == 64
    assert sql_sha256("SELECT 1") != sql_sha256("SELECT 1 ")


def test_every_allowlisted_class_name_resolves() -> None:
    from sqlglot import exp

    missing = [
        name
        for name in (
            *rules.SYNTAX_NODE_NAMES,
            *rules.SYNTAX_FUNCTION_NAMES,
            *rules.QUERY_ROOT_NAMES,
        )
        if not isinstance(getattr(exp, name, None), type)
    ]
    assert missing == []
    assert all(issubclass(cls, exp.Func) for cls in rules.SYNTAX_FUNCTIONS)
    assert not rules.SYNTAX_FUNCTIONS & rules.SYNTAX_NODES


def _duckdb_functions(duck: Any) -> dict[str, set[str]]:
    rows = duck.execute(
        "SELECT lower(function_name), list(DISTINCT function_type) FROM duckdb_functions() GROUP BY 1"
    ).fetchall()
    return {name: set(kinds) for name, kinds in rows}


def test_every_allowlisted_function_name_is_a_duckdb_builtin(duck: Any) -> None:
    functions = _duckdb_functions(duck)
    special_forms = {"coalesce", "ifnull", "current_timestamp", "date", "unnest", "percentile_cont", "percentile_disc"}
    assert sorted(rules.FUNCTION_NAMES - functions.keys() - special_forms) == []
    callable_kinds = {"scalar", "aggregate", "window", "macro"}
    assert [n for n in sorted(rules.FUNCTION_NAMES - special_forms) if not functions[n] & callable_kinds] == []


def test_gate_only_calls_reviewed_duckdb_functions(duck: Any) -> None:
    """Sweep DuckDB's own catalog: a call is accepted only under an allowlisted name, so a
    sqlglot alias that maps some other name onto an allowlisted class cannot sneak through,
    and no table function is accepted as a relation."""
    surprises: list[str] = []
    for name, kinds in sorted(_duckdb_functions(duck).items()):
        if not name.isidentifier():
            continue  # operators such as '+' or '~~'
        for args in ("", "hash", "hash, 'x'", "hash, 1, 2"):
            try:
                check_sql(f"SELECT {name}({args}) FROM dataset")
            except SqlRejected:
                continue
            if name not in rules.FUNCTION_NAMES:
                surprises.append(f"{name}({args})")
        if kinds & {"table", "table_macro", "pragma"}:
            with pytest.raises(SqlRejected):
                check_sql(f"SELECT * FROM {name}('x')")
            with pytest.raises(SqlRejected):
                check_sql(f"SELECT * FROM dataset, LATERAL {name}(dataset.hash)")
    assert surprises == []


def test_the_refused_function_is_found_only_on_request_and_only_as_an_identifier() -> None:
    from trace_platform.core.sql_gate import refused_function

    with pytest.raises(SqlRejected) as info:
        check_sql("SELECT getenv('HOME') FROM dataset")
    assert info.value.reason == "DISALLOWED_FUNCTION" and "getenv" not in str(vars(info.value))
    assert refused_function("SELECT getenv('HOME') FROM dataset") == "getenv"
    assert refused_function("SELECT upper(x), nope_fn(1) FROM dataset") == "nope_fn"
    assert refused_function("SELECT x FROM dataset") == ""
    assert refused_function("SELECT * FROM secret") == ""  # another reason: nothing named
    assert refused_function(f"SELECT {'f' * 65}(1) FROM dataset") == ""
