-- Realistic chain-analytics queries over `dataset` (a chain_sync-like wide relation: blocks,
-- transactions and logs columns; see tests/unit/test_sql_corpus.py for the schema). Each
-- query is separated by a blank line; every one must pass the SQL gate and run on a
-- hardened DuckDB. Lambdas use DuckDB's `lambda x: ...` syntax (2.0 refuses `x -> ...`).
SELECT block_number, block_time, gas_used FROM dataset WHERE block_number = 17

SELECT * FROM dataset WHERE block_number BETWEEN 10 AND 20 ORDER BY block_number, log_index

SELECT count(*) AS n, count(DISTINCT transaction_hash) AS txs FROM dataset

SELECT max(block_number) AS head, min(block_number) AS tail FROM dataset

SELECT miner, count(*) AS blocks FROM dataset GROUP BY miner ORDER BY blocks DESC LIMIT 10

SELECT date_trunc('hour', block_time) AS hour, sum(gas_used) AS gas FROM dataset GROUP BY 1 ORDER BY 1

SELECT date_trunc('day', block_time) AS day, count(DISTINCT block_number) AS blocks FROM dataset GROUP BY ALL ORDER BY ALL

SELECT time_bucket(INTERVAL '15 minutes', block_time) AS bucket, avg(gas_price) AS avg_gas_price FROM dataset GROUP BY bucket ORDER BY bucket

SELECT time_bucket(INTERVAL '1 hour', block_time, TIMESTAMP '2024-01-01 00:30:00') AS b, count(*) FROM dataset GROUP BY b

SELECT date_part('hour', block_time) AS h, count(*) FROM dataset GROUP BY h ORDER BY h

SELECT extract(dow FROM block_time) AS weekday, avg(gas_used) FROM dataset GROUP BY 1

SELECT strftime(block_time, '%Y-%m-%d %H:00') AS hour, count(*) FROM dataset GROUP BY 1 ORDER BY 1

SELECT to_timestamp(block_timestamp) AS t, block_number FROM dataset ORDER BY block_number LIMIT 5

SELECT epoch(block_time) - block_timestamp AS drift FROM dataset LIMIT 3

SELECT block_number, block_time AT TIME ZONE 'UTC' AS utc_time FROM dataset LIMIT 3

SELECT block_time::TIMESTAMPTZ AT TIME ZONE 'America/New_York' AS local_time FROM dataset LIMIT 3

SELECT date_diff('second', min(block_time), max(block_time)) AS span_s FROM dataset

SELECT block_number, block_time - lag(block_time) OVER (ORDER BY block_number) AS block_interval FROM (SELECT DISTINCT block_number, block_time FROM dataset) b

SELECT block_number, block_timestamp - lag(block_timestamp) OVER (ORDER BY block_number) AS secs FROM (SELECT DISTINCT block_number, block_timestamp FROM dataset) QUALIFY secs IS NOT NULL

SELECT * FROM dataset QUALIFY row_number() OVER (PARTITION BY block_number ORDER BY transaction_index DESC) = 1

SELECT block_number, transaction_hash, gas_price, rank() OVER (PARTITION BY block_number ORDER BY gas_price DESC) AS r FROM dataset QUALIFY r <= 3

SELECT from_address, count(*) FILTER (WHERE success) AS ok, count(*) FILTER (WHERE NOT success) AS failed FROM dataset GROUP BY from_address

SELECT sum(value) FILTER (WHERE to_address IS NULL) AS creation_value, sum(value) FILTER (WHERE to_address IS NOT NULL) AS transfer_value FROM dataset

SELECT hex(transaction_hash) AS tx, hex(from_address) AS sender FROM dataset LIMIT 5

SELECT lower(hex(block_hash)) AS block_hash_hex FROM dataset LIMIT 5

SELECT upper(hex(block_hash)) AS block_hash_hex FROM dataset LIMIT 5

SELECT '0x' || lower(hex(address)) AS contract, count(*) AS logs FROM dataset GROUP BY contract ORDER BY logs DESC

SELECT * FROM dataset WHERE from_address = unhex('00000000000000000000000000000000000000a1')

SELECT * FROM dataset WHERE from_address = from_hex('00000000000000000000000000000000000000a1')

SELECT to_hex(gas_used) AS gas_hex, bin(transaction_index) AS idx_bits FROM dataset LIMIT 3

SELECT octet_length(input) AS calldata_bytes, length(hex(input)) / 2 AS also_bytes FROM dataset LIMIT 5

SELECT substring(hex(input), 1, 8) AS selector, count(*) FROM dataset GROUP BY selector ORDER BY 2 DESC

SELECT left(lower(hex(input)), 8) AS selector, count(*) AS calls FROM dataset WHERE octet_length(input) >= 4 GROUP BY ALL

SELECT to_base64(data) AS b64, from_base64(to_base64(data)) = data AS roundtrip FROM dataset LIMIT 3

SELECT md5(miner), sha256(miner), hash(miner) FROM dataset LIMIT 3

SELECT bit_count(gas_used) AS ones, gas_used & 255 AS low_byte, gas_used >> 8 AS shifted FROM dataset LIMIT 5

SELECT xor(transaction_index, 1), transaction_index | 1, ~transaction_index FROM dataset LIMIT 3

SELECT miner, regr_slope(gas_used, block_number) AS trend, regr_intercept(gas_used, block_number) AS base FROM dataset GROUP BY miner

SELECT regr_r2(gas_used, gas_limit), regr_count(gas_used, gas_limit), regr_avgx(gas_used, gas_limit), regr_avgy(gas_used, gas_limit) FROM dataset

SELECT regr_sxx(gas_used, gas_limit), regr_syy(gas_used, gas_limit), regr_sxy(gas_used, gas_limit) FROM dataset

SELECT corr(gas_used, gas_price), covar_pop(gas_used, gas_price), covar_samp(gas_used, gas_price) FROM dataset

SELECT reservoir_quantile(gas_price, 0.5) AS median_price, reservoir_quantile(gas_price, 0.99) AS p99 FROM dataset

SELECT quantile_cont(gas_price, [0.25, 0.5, 0.75]) AS quartiles FROM dataset

SELECT quantile_disc(gas_used, 0.9), approx_quantile(gas_used, 0.9), median(gas_used) FROM dataset

SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY gas_price) AS p50 FROM dataset

SELECT approx_count_distinct(from_address) AS senders, count(DISTINCT from_address) AS exact FROM dataset

SELECT stddev(gas_price), stddev_pop(gas_price), variance(gas_price), var_samp(gas_price) FROM dataset

SELECT kurtosis(gas_used), skewness(gas_used), entropy(miner), mad(gas_used) FROM dataset

SELECT arg_max(transaction_hash, value) AS biggest_tx, max(value) FROM dataset

SELECT miner, arg_min(block_number, block_time) AS first_block, max_by(block_number, gas_used) AS fullest FROM dataset GROUP BY miner

SELECT mode(miner) AS top_miner FROM dataset

SELECT histogram(transaction_index) FROM dataset

SELECT approx_top_k(miner, 3) FROM dataset

SELECT string_agg(DISTINCT miner, ',' ORDER BY miner) FROM dataset

SELECT block_number, list(transaction_index ORDER BY transaction_index) AS idx FROM dataset GROUP BY block_number ORDER BY block_number LIMIT 5

SELECT block_number, array_agg(DISTINCT hex(address)) AS contracts FROM dataset GROUP BY ALL LIMIT 5

SELECT bool_and(success), bool_or(to_address IS NULL) FROM dataset

SELECT bit_or(transaction_index), bit_and(gas_used), bit_xor(log_index) FROM dataset

SELECT product(1 + transaction_index / 100) FROM dataset WHERE block_number < 3

SELECT fsum(value), sum(value), avg(value), favg(value) FROM dataset

SELECT any_value(miner), first(miner), last(miner ORDER BY block_number) FROM dataset

SELECT json_extract(decoded, '$.event') AS event, count(*) FROM dataset GROUP BY event

SELECT decoded -> '$.args' AS args FROM dataset LIMIT 3

SELECT decoded ->> '$.event' AS event, decoded ->> '$.args.value' AS amount FROM dataset LIMIT 5

SELECT json_extract_string(decoded, '$.args.to') AS recipient, sum(CAST(json_extract_string(decoded, '$.args.value') AS HUGEINT)) AS received FROM dataset GROUP BY 1

SELECT json_array_length(decoded, '$.tags') AS n_tags FROM dataset LIMIT 5

SELECT json_keys(decoded) AS keys, json_type(decoded, '$.args') AS t FROM dataset LIMIT 3

SELECT json_valid(decoded), json_exists(decoded, '$.args.value') FROM dataset LIMIT 3

SELECT json_value(decoded, '$.event') AS event FROM dataset WHERE json_contains(decoded, '"Transfer"') LIMIT 3

SELECT json_extract_path(decoded, '$.args.from') AS sender, json_extract_path_text(decoded, 'event') AS event FROM dataset LIMIT 3

SELECT json_object('block', block_number, 'miner', miner) AS j FROM dataset LIMIT 3

SELECT to_json({'block': block_number, 'gas': gas_used}) FROM dataset LIMIT 2

SELECT json_array(block_number, gas_used) FROM dataset LIMIT 2

SELECT json_merge_patch('{"a": 1}', '{"b": 2}')

SELECT decoded::JSON -> 'args' ->> 'value' AS v FROM dataset LIMIT 3

SELECT json_group_array(block_number) FROM (SELECT DISTINCT block_number FROM dataset ORDER BY 1 LIMIT 5)

SELECT CAST(decoded ->> '$.args.value' AS DECIMAL(38, 0)) AS amount FROM dataset WHERE decoded ->> '$.event' = 'Transfer' LIMIT 5

SELECT range(3) AS r, range(1, 10, 3) AS r2

SELECT generate_series(1, 5) AS s, generate_series(DATE '2024-01-01', DATE '2024-01-03', INTERVAL 1 DAY) AS days

SELECT block_number, unnest(range(0, 3)) AS k FROM dataset WHERE block_number < 2

SELECT list_transform(topics, lambda t: upper(t)) AS upper_topics FROM dataset LIMIT 3

SELECT list_filter(topics, lambda t: t LIKE '0xddf2%') AS transfers FROM dataset LIMIT 3

SELECT list_reduce([gas_used, gas_limit, base_fee_per_gas], lambda a, b: a + b) AS total FROM dataset LIMIT 3

SELECT list_transform(range(3), lambda i: i * transaction_index) FROM dataset LIMIT 2

SELECT list_apply([1, 2, 3], lambda x: x + 1), array_filter([1, 2, 3], lambda x: x % 2 = 1)

SELECT list_aggregate(topics, 'count') AS n, list_aggregate([gas_used, gas_limit], 'max') AS m FROM dataset LIMIT 3

SELECT list_aggregate(topics, 'string_agg', '|') AS joined FROM dataset LIMIT 3

SELECT list_aggr([1, 2, 3], 'sum'), array_aggregate([1, 2, 3], 'avg'), aggregate([3, 1], 'min')

SELECT len(topics) AS n, topics[1] AS topic0, topics[2:3] AS rest FROM dataset LIMIT 3

SELECT list_contains(topics, '0xddf252ad'), list_has_any(topics, ['0xa', '0xddf252ad']) FROM dataset LIMIT 3

SELECT list_sort(list_distinct(topics)), list_reverse_sort(topics), array_length(topics) FROM dataset LIMIT 3

SELECT list_sum([gas_used, gas_limit]), list_avg([gas_used, gas_limit]), list_max(topics) FROM dataset LIMIT 3

SELECT list_value(block_number, gas_used), list_zip([1, 2], ['a', 'b']) FROM dataset LIMIT 2

SELECT flatten([[1, 2], [3]]), list_concat([1], [2, 3]), array_to_string(['a', 'b'], '-')

SELECT list_position(topics, '0xddf252ad') AS pos, list_slice(topics, 1, 2) FROM dataset LIMIT 3

SELECT unnest(topics) AS topic, count(*) FROM dataset GROUP BY topic ORDER BY 2 DESC

SELECT block_number, t.topic FROM dataset, LATERAL (SELECT unnest(topics) AS topic) t LIMIT 5

SELECT {'block': block_number, 'miner': miner} AS s FROM dataset LIMIT 2

SELECT struct_pack(b := block_number, g := gas_used).g FROM dataset LIMIT 2

SELECT struct_extract({'a': 1, 'b': 2}, 'b'), struct_insert({'a': 1}, c := 3)

SELECT CASE WHEN gas_used > 15000000 THEN 'full' WHEN gas_used > 5000000 THEN 'busy' ELSE 'quiet' END AS load, count(*) FROM dataset GROUP BY load

SELECT if(success, 'ok', 'reverted') AS status, count(*) FROM dataset GROUP BY 1

SELECT coalesce(hex(to_address), 'contract creation') AS dest FROM dataset LIMIT 5

SELECT nullif(transaction_index, 0), ifnull(topic1, ''::BLOB) FROM dataset LIMIT 3

SELECT greatest(gas_used, gas_limit), least(gas_price, base_fee_per_gas) FROM dataset LIMIT 3

SELECT round(value, 4), floor(gas_price / 1e9), ceil(gas_price / 1e9), trunc(value), abs(-value) FROM dataset LIMIT 3

SELECT log10(gas_price), ln(gas_price), log2(gas_price), sqrt(gas_used), pow(2, 10), exp(1) FROM dataset LIMIT 2

SELECT gas_used / gas_limit AS utilisation, gas_used // 1000 AS kgas, gas_used % 1000 FROM dataset LIMIT 3

SELECT gcd(gas_used, gas_limit), lcm(6, 4), sign(value - 1), pi() FROM dataset LIMIT 2

SELECT isnan(value), isinf(value), isfinite(value) FROM dataset LIMIT 2

SELECT format_bytes(sum(octet_length(input))::BIGINT) AS calldata FROM dataset

SELECT format('{} used {} gas', miner, gas_used) FROM dataset LIMIT 2

SELECT printf('%s:%d', miner, block_number) FROM dataset LIMIT 2

SELECT concat('0x', lower(hex(transaction_hash))), concat_ws(':', block_number, transaction_index) FROM dataset LIMIT 2

SELECT lpad(CAST(transaction_index AS VARCHAR), 4, '0'), rpad(miner, 50, '.'), repeat('-', 3) FROM dataset LIMIT 2

SELECT replace(miner, '0x', ''), reverse(miner), trim('  x  '), ltrim(miner, '0x') FROM dataset LIMIT 2

SELECT split_part(miner, 'x', 2), string_split('a,b,c', ','), regexp_split_to_array('a1b2c', '[0-9]') FROM dataset LIMIT 1

SELECT regexp_matches(miner, '^0x0+'), regexp_extract(miner, '0x(0+)', 1), regexp_replace(miner, '^0x0+', '0x') FROM dataset LIMIT 3

SELECT regexp_extract_all('0xab 0xcd', '0x[0-9a-f]+'), regexp_full_match(miner, '0x[0-9a-f]{40}') FROM dataset LIMIT 2

SELECT starts_with(miner, '0x00'), ends_with(miner, '61'), contains(miner, 'aa'), strpos(miner, 'a') FROM dataset LIMIT 3

SELECT * FROM dataset WHERE miner LIKE '0x000%' AND miner NOT ILIKE '%FF' LIMIT 5

SELECT * FROM dataset WHERE miner GLOB '0x0*' LIMIT 3

SELECT levenshtein(miner, '0x00'), jaro_winkler_similarity(miner, '0x00'), prefix(miner, '0x') FROM dataset LIMIT 2

SELECT ascii(miner), chr(65), ord('a'), typeof(block_number) FROM dataset LIMIT 2

SELECT encode(miner), decode(encode(miner)) FROM dataset LIMIT 2

SELECT make_date(2024, 1, 15), make_timestamp(2024, 1, 15, 12, 0, 0.0), last_day(DATE '2024-02-10')

SELECT year(block_time), month(block_time), day(block_time), hour(block_time), minute(block_time), quarter(block_time), dayofyear(block_time) FROM dataset LIMIT 2

SELECT dayname(block_time), monthname(block_time), week(block_time), isodow(block_time), yearweek(block_time) FROM dataset LIMIT 2

SELECT block_time + INTERVAL 1 HOUR, block_time - INTERVAL '30 minutes', date_add(block_time, INTERVAL 2 DAY) FROM dataset LIMIT 2

SELECT age(TIMESTAMP '2024-02-01', min(block_time)) FROM dataset

SELECT epoch_ms(block_time), epoch_us(block_time), to_seconds(60), to_hours(2) FROM dataset LIMIT 2

SELECT strptime('2024-01-01 00:00:00', '%Y-%m-%d %H:%M:%S'), try_strptime('bad', '%Y')

SELECT * FROM dataset WHERE block_time >= TIMESTAMP '2024-01-01 00:00:00' AND block_time < TIMESTAMP '2024-01-01 06:00:00' ORDER BY block_time LIMIT 5

SELECT * FROM dataset WHERE block_time > now() - INTERVAL 100000 DAY LIMIT 1

SELECT current_date - CAST(block_time AS DATE) AS days_ago FROM dataset LIMIT 1

WITH blocks AS (SELECT DISTINCT block_number, block_time, miner, gas_used, gas_limit FROM dataset) SELECT miner, avg(gas_used / gas_limit) AS fill FROM blocks GROUP BY miner ORDER BY fill DESC

WITH txs AS (SELECT DISTINCT transaction_hash, from_address, value FROM dataset), senders AS (SELECT from_address, sum(value) AS sent FROM txs GROUP BY 1) SELECT hex(from_address), sent FROM senders ORDER BY sent DESC LIMIT 5

WITH per_block AS (SELECT block_number, count(*) AS logs FROM dataset GROUP BY 1), ranked AS (SELECT *, percent_rank() OVER (ORDER BY logs) AS pr FROM per_block) SELECT * FROM ranked WHERE pr > 0.5

WITH a AS (SELECT block_number, sum(gas_used) AS gas FROM dataset GROUP BY 1), b AS (SELECT block_number, count(*) AS n FROM dataset GROUP BY 1) SELECT a.block_number, a.gas, b.n FROM a JOIN b USING (block_number) ORDER BY 1 LIMIT 5

WITH a AS (SELECT block_number, miner FROM dataset), b AS (SELECT block_number, max(log_index) AS last_log FROM dataset GROUP BY 1) SELECT * FROM a LEFT JOIN b ON a.block_number = b.block_number LIMIT 5

WITH transfers AS (SELECT block_number, json_extract_string(decoded, '$.args.from') AS src, json_extract_string(decoded, '$.args.to') AS dst FROM dataset WHERE decoded ->> '$.event' = 'Transfer') SELECT src, dst, count(*) FROM transfers GROUP BY ALL ORDER BY 3 DESC

WITH t(block, gas) AS (SELECT block_number, gas_used FROM dataset) SELECT block, gas FROM t WHERE gas > 0 LIMIT 5

WITH RECURSIVE heights(n) AS (SELECT 0 UNION ALL SELECT n + 10 FROM heights WHERE n < 50) SELECT h.n, count(d.block_number) FROM heights h LEFT JOIN dataset d ON d.block_number = h.n GROUP BY h.n ORDER BY h.n

WITH hourly AS (SELECT date_trunc('hour', block_time) AS hour, sum(gas_used) AS gas FROM dataset GROUP BY 1) SELECT hour, gas, avg(gas) OVER (ORDER BY hour ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS moving FROM hourly

SELECT block_number, sum(gas_used) OVER (ORDER BY block_number RANGE BETWEEN 5 PRECEDING AND CURRENT ROW) AS recent_gas FROM dataset

SELECT block_number, gas_used, sum(gas_used) OVER w AS running, avg(gas_used) OVER w AS running_avg FROM dataset WINDOW w AS (ORDER BY block_number, log_index ROWS UNBOUNDED PRECEDING) LIMIT 10

SELECT block_number, ntile(4) OVER (ORDER BY gas_used) AS quartile, cume_dist() OVER (ORDER BY gas_used) FROM dataset LIMIT 5

SELECT block_number, lead(block_time) OVER (ORDER BY block_number) - block_time AS until_next FROM dataset LIMIT 5

SELECT block_number, first_value(miner) OVER (PARTITION BY miner ORDER BY block_number), last_value(miner) OVER (PARTITION BY miner ORDER BY block_number), nth_value(block_number, 2) OVER (PARTITION BY miner ORDER BY block_number) FROM dataset LIMIT 5

SELECT block_number, dense_rank() OVER (ORDER BY miner) FROM dataset LIMIT 5

SELECT block_number, lag(gas_used, 1, 0) OVER (PARTITION BY miner ORDER BY block_number) FROM dataset LIMIT 5

SELECT a.block_number, a.transaction_hash, b.log_index FROM dataset a JOIN dataset b ON a.transaction_hash = b.transaction_hash AND a.log_index < b.log_index LIMIT 5

SELECT a.block_number, b.block_number FROM dataset a ASOF JOIN dataset b ON a.block_number > b.block_number LIMIT 5

SELECT * FROM dataset a SEMI JOIN (SELECT DISTINCT from_address FROM dataset WHERE value > 1) big ON a.from_address = big.from_address LIMIT 5

SELECT * FROM dataset a ANTI JOIN (SELECT transaction_hash FROM dataset WHERE NOT success) f ON a.transaction_hash = f.transaction_hash LIMIT 5

SELECT hex(from_address), count(*) FROM dataset WHERE from_address IN (SELECT to_address FROM dataset WHERE to_address IS NOT NULL) GROUP BY 1

SELECT * FROM dataset d WHERE EXISTS (SELECT 1 FROM dataset e WHERE e.block_number = d.block_number + 1) LIMIT 3

SELECT block_number, (SELECT max(gas_used) FROM dataset) - gas_used AS headroom FROM dataset LIMIT 3

SELECT * FROM (SELECT block_number, sum(gas_used) AS g FROM dataset GROUP BY 1) s WHERE s.g > (SELECT avg(gas_used) FROM dataset)

SELECT DISTINCT ON (block_number) block_number, transaction_hash, gas_price FROM dataset ORDER BY block_number, gas_price DESC

SELECT miner, block_number, sum(gas_used) FROM dataset GROUP BY ROLLUP (miner, block_number) ORDER BY ALL LIMIT 10

SELECT miner, success, count(*) FROM dataset GROUP BY GROUPING SETS ((miner), (success), ()) ORDER BY ALL

SELECT miner, success, count(*) FROM dataset GROUP BY CUBE (miner, success) ORDER BY ALL

SELECT miner, count(*) AS n FROM dataset GROUP BY miner HAVING count(*) > 2 ORDER BY n DESC

SELECT block_number FROM dataset WHERE success UNION SELECT block_number FROM dataset WHERE NOT success ORDER BY 1 LIMIT 5

SELECT block_number FROM dataset INTERSECT SELECT block_number + 1 FROM dataset

SELECT block_number FROM dataset EXCEPT SELECT block_number FROM dataset WHERE success

SELECT block_number, miner FROM dataset UNION ALL BY NAME SELECT miner, block_number FROM dataset LIMIT 4

SELECT * EXCLUDE (input, data, decoded) FROM dataset LIMIT 3

SELECT * REPLACE (hex(transaction_hash) AS transaction_hash) FROM dataset LIMIT 3

SELECT block_number, gas_used FROM dataset ORDER BY gas_used DESC NULLS LAST, block_number LIMIT 5 OFFSET 2

SELECT * FROM dataset LIMIT 10%

FROM dataset SELECT block_number, miner WHERE block_number < 3

FROM dataset WHERE block_number = 5

SELECT block_number, gas_used, gas_used::DOUBLE / sum(gas_used) OVER () AS share FROM dataset LIMIT 5

SELECT TRY_CAST(value_string AS HUGEINT) AS wei, value_string::DECIMAL(38, 0) AS wei_dec FROM dataset LIMIT 3

SELECT CAST(block_number AS VARCHAR) || ':' || CAST(transaction_index AS VARCHAR) AS id FROM dataset LIMIT 3

SELECT block_number, gas_price / 1e9 AS gwei, round(gas_price * gas_used / 1e18, 6) AS fee_eth FROM dataset ORDER BY fee_eth DESC LIMIT 5

SELECT base_fee_per_gas, gas_price - base_fee_per_gas AS tip FROM dataset WHERE gas_price >= base_fee_per_gas LIMIT 5

SELECT miner, sum(gas_used) * 100.0 / (SELECT sum(gas_used) FROM dataset) AS pct FROM dataset GROUP BY miner ORDER BY pct DESC

SELECT topic0 = unhex('ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef') AS is_transfer, count(*) FROM dataset GROUP BY 1

SELECT hex(topic1) AS indexed_from, count(*) FROM dataset WHERE topic1 IS NOT NULL GROUP BY 1 ORDER BY 2 DESC

SELECT block_number, transaction_index, log_index FROM dataset WHERE (block_number, transaction_index) IN (SELECT block_number, min(transaction_index) FROM dataset GROUP BY 1) LIMIT 5

SELECT chain_id, count(*) FROM dataset GROUP BY chain_id

SELECT nonce, from_address FROM dataset WHERE nonce = (SELECT max(nonce) FROM dataset) LIMIT 1

SELECT sum(CASE WHEN to_address IS NULL THEN 1 ELSE 0 END) AS creations, count(*) AS total FROM dataset

SELECT block_number, gas_used, gas_used > avg(gas_used) OVER (PARTITION BY miner) AS above_miner_avg FROM dataset LIMIT 5

SELECT miner, min(block_time), max(block_time), max(block_time) - min(block_time) AS active FROM dataset GROUP BY miner

SELECT date_trunc('minute', block_time) AS minute, count(DISTINCT transaction_hash) / 60.0 AS tps FROM dataset GROUP BY 1 ORDER BY 1 LIMIT 5

SELECT count(*) FILTER (WHERE decoded ->> '$.event' = 'Transfer') AS transfers, count(*) FILTER (WHERE decoded ->> '$.event' = 'Approval') AS approvals FROM dataset

SELECT block_number, list_transform(list_filter(topics, lambda t: t IS NOT NULL), lambda t: substring(t, 1, 6)) FROM dataset LIMIT 3

SELECT list_reduce(list_transform(range(1, 4), lambda i: i * i), lambda a, b: a + b) AS sum_squares

SELECT string_split_regex(miner, '[a-f]+'), split(miner, 'x'), str_split(miner, '0') FROM dataset LIMIT 1

SELECT array_distinct(topics), array_sort(topics), array_contains(topics, '0xa') FROM dataset LIMIT 2

SELECT length(miner), char_length(miner), strlen(miner), bit_length(miner) FROM dataset LIMIT 1

SELECT lcase(miner), ucase(miner), substr(miner, 3, 4), instr(miner, 'a') FROM dataset LIMIT 1

SELECT block_number, translate(miner, 'abc', 'ABC'), suffix(miner, '1') FROM dataset LIMIT 2

SELECT to_days(1), to_minutes(5), to_milliseconds(10), to_microseconds(10)

SELECT decade(block_time), century(block_time), isoyear(block_time), weekofyear(block_time), weekday(block_time) FROM dataset LIMIT 1

SELECT millisecond(block_time), microsecond(block_time), second(block_time) FROM dataset LIMIT 1

SELECT datediff('minute', block_time, block_time + INTERVAL 90 MINUTE), datepart('year', block_time), date_sub('day', block_time, block_time) FROM dataset LIMIT 1

SELECT timezone('UTC', block_time::TIMESTAMPTZ) FROM dataset LIMIT 1

SELECT count_if(success), countif(NOT success), sum(value) / nullif(count(*), 0) FROM dataset

SELECT min_by(miner, gas_used), argmin(miner, gas_used), argmax(miner, gas_used), arbitrary(miner) FROM dataset

SELECT listagg(miner, ';'), group_concat(DISTINCT miner) FROM dataset

SELECT block_number, bool_and(success) OVER (PARTITION BY block_number) FROM dataset LIMIT 3

SELECT sumkahan(value), kahan_sum(value), stddev_samp(value), var_pop(value) FROM dataset
