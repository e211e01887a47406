--
-- The Singer type map: one column of every type in singer-format.md,
-- previewed with egress_preview_schema and egress_preview_record.
--
CREATE EXTENSION pg_egress;
CREATE EXTENSION citext;
CREATE EXTENSION hstore;

CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN price AS numeric(5,1);

CREATE TABLE types_t (
	id integer PRIMARY KEY,
	c_int2 smallint,
	c_int4 integer,
	c_int8 bigint,
	c_num12_2 numeric(12,2),
	c_num5 numeric(5),
	c_num numeric,
	c_real real,
	c_double double precision,
	c_bool boolean,
	c_bit1 bit(1),
	c_bit4 bit(4),
	c_varbit varbit,
	c_text text,
	c_dropped text,
	c_varchar varchar(10),
	c_char char(5),
	c_name name,
	c_citext citext,
	c_uuid uuid,
	c_money money,
	c_inet inet,
	c_cidr cidr,
	c_macaddr macaddr,
	c_enum mood,
	c_date date,
	c_ts timestamp,
	c_tstz timestamptz,
	c_time time,
	c_timetz timetz,
	c_json json,
	c_jsonb jsonb,
	c_hstore hstore,
	c_int_arr integer[],
	c_text_arr text[],
	c_num_arr numeric[],
	c_tstz_arr timestamptz[],
	c_interval interval,
	c_bytea bytea,
	c_tsvector tsvector,
	c_point point,
	c_xml xml,
	c_int4range int4range,
	c_price price NOT NULL
);
-- dropped columns are neither in the schema nor in records
ALTER TABLE types_t DROP COLUMN c_dropped;

-- 1: ordinary values
INSERT INTO types_t VALUES (1,
	1, 2, 3, 1234.5, 12345, 3.14159265358979323846264338327950288, 1.5, 0.1,
	true, B'1', B'1010', B'101',
	'hello', 'ünïcödé', 'ab', 'a name', 'MiXeD',
	'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 1234.56, '192.168.0.1/24',
	'10.0.0.0/8', '08:00:2b:01:02:03', 'happy',
	'2024-01-15', '2024-01-15 13:45:30.123456', '2024-01-15 08:45:30.123456-05',
	'13:45:30.123456', '08:45:30.5-05',
	'{"a": [1, 2.50, "x"], "b": {"c": null}}',
	'{"b": {"c": null}, "a": [1, 2.50, "x"]}',
	'a=>1, b=>NULL',
	'{1,2,3}', '{"a b","c,d"}', '{1.50,NaN,-3}',
	'{"2024-01-15 08:00:00-05",infinity}',
	'1 year 2 months 3 days 4 hours 5 minutes 6.5 seconds',
	'\x0102ff', 'a fat cat', '(1.5,-2)', '<a x="1">t</a>', '[1,10)',
	1234.5);

-- 2: NULL everywhere it is allowed
INSERT INTO types_t (id, c_price) VALUES (2, 0);

-- 3: special characters, NaN, infinities, empty and scalar values
INSERT INTO types_t VALUES (3,
	-32768, -2147483648, -9223372036854775808, 'NaN', -99999, 'Infinity',
	'NaN', 'NaN',
	false, B'0', B'0000', B'',
	E'quote " back \\ nl \n tab \t cr \r bell \x07 unit \x1f é 日本 😀',
	'', 'a"b\c', E'ta\tb', '',
	'00000000-0000-0000-0000-000000000000', -0.01, '::1', '::/0',
	'ff:ff:ff:ff:ff:ff', 'sad',
	'infinity', '-infinity', 'infinity',
	'24:00:00', '24:00:00+00',
	'"just a string"', '42',
	hstore(ARRAY['k"q', 'back\slash', 'nl'], ARRAY['v"1', 'a\b', E'line1\nline2']),
	'{}', '{{"a","b"},{NULL,"d\"q"}}', '{}', '{NULL}',
	'0', '', '', '(0,0)', '', 'empty',
	-9999.9);

-- 4: more edges: maximum integers, BC and year > 9999, wrapping timetz
INSERT INTO types_t VALUES (4,
	32767, 2147483647, 9223372036854775807, -9999999999.99, 0, '-Infinity',
	'Infinity', '-Infinity',
	NULL, NULL, NULL, NULL,
	E'line1\nline2\r\n', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
	NULL,
	'0044-03-15 BC', '10000-01-01 00:00:00', '0001-01-01 00:00:00+00',
	'00:00:00', '23:30:00-01',
	E'{\n\t"k" : "a b\\n c" ,\r\n "u": "\\u00e9", "e": []\n}',
	E'{\n\t"k" : "a b\\n c" ,\r\n "u": "\\u00e9", "e": []\n}',
	'',
	'{{1,2},{3,4},{5,6}}', '{""}', '{0.000000000000000000001,1e30}', NULL,
	'-1 year -2 months', 'a\\b', NULL, NULL, NULL, '(,5]',
	9999.9);

-- 5: the other side of the ranges
INSERT INTO types_t VALUES (5,
	0, 0, 0, 0, 0, '0.00',
	'-Infinity', 1e30,
	NULL, NULL, NULL, NULL,
	'', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
	NULL,
	'-infinity', '0001-12-31 23:59:59.999999 BC', '0001-01-01 00:30:00+01',
	'23:59:59.5', '00:30:00+02',
	'null', '[]',
	NULL,
	'{1,NULL,3}', '{NULL,NULL}', '{NaN,Infinity,-Infinity}', '{}',
	'1 day -1 hour', '\x00', NULL, NULL, NULL, NULL,
	0.1);

-- 6
INSERT INTO types_t VALUES (6,
	NULL, NULL, NULL, NULL, NULL, NULL,
	3.4028235e38, '-0',
	NULL, NULL, NULL, NULL,
	NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
	NULL,
	'5874897-12-31', '9999-12-31 23:59:59.999999', '294276-12-31 23:59:59.999999+00',
	'00:00:00.000001', '23:00:00-01',
	'[1, {"a": "}"}, "\"", true]', '{"a": "x", "a": "y"}',
	NULL,
	'{{{1},{2}},{{3},{4}}}', NULL, NULL, NULL,
	'-0.5 seconds', NULL, NULL, NULL, NULL, NULL,
	-0.0);

-- the output must not depend on session settings
SET TimeZone = 'America/New_York';
SET DateStyle = 'SQL, DMY';
SET IntervalStyle = 'sql_standard';
SET extra_float_digits = 0;
SET bytea_output = 'escape';
-- money is the one type here whose text output follows a setting
SET lc_monetary = 'C';
-- one JSON document per line, as a sink would send it
\pset format unaligned
\pset tuples_only on

SELECT egress_preview_schema('types_t');
SELECT egress_preview_record(t) FROM types_t t ORDER BY id;

-- every result is valid JSON
SELECT egress_preview_schema('types_t')::jsonb IS NOT NULL AS valid_schema;
SELECT count(*) AS valid_records
FROM types_t t WHERE egress_preview_record(t)::jsonb IS NOT NULL;

-- schema edges: NOT NULL columns, odd numeric scales, element typmods,
-- domains over integers and arrays, arrays of domains
CREATE DOMAIN small_pos AS smallint CHECK (VALUE > 0);
CREATE DOMAIN tags AS varchar(3)[];
CREATE TABLE schema_t (
	n_int8 bigint NOT NULL,
	n_text text NOT NULL,
	n_date date NOT NULL,
	n_json json NOT NULL,
	n_hstore hstore NOT NULL,
	n_arr integer[] NOT NULL,
	n_bit1 bit NOT NULL,
	c_num3_5 numeric(3,5),
	c_num2_m3 numeric(2,-3),
	c_vc_arr varchar(3)[],
	c_char_arr char(2)[],
	c_bit1_arr bit(1)[],
	c_small_pos small_pos,
	c_tags tags,
	c_price_arr price[],
	c_bpchar bpchar,
	c_char "char",
	c_oid oid
);
INSERT INTO schema_t VALUES (1, 'x', '2000-02-29', '{}', '', '{}', B'1',
	0.00123, 1234, '{abc,NULL}', '{a,bc}', '{1,0,NULL}', 7, '{x,yz}',
	'{1.5,-2}', 'pad  ', 'c', 4294967295);
SELECT egress_preview_schema('schema_t');
SELECT egress_preview_record(s) FROM schema_t s;

-- values beyond the table: floats, intervals, times, dates, json
SELECT egress_preview_record(v) FROM (VALUES
	(1, '5e-324'::float8, '1.4e-45'::float4),
	(2, 1.7976931348623157e308, 1e-7),
	(3, 123456789012345678, 16777216),
	(4, 0.30000000000000004, 0.3),
	(5, -1e-5, 100),
	(6, '-0'::float8, '-0'::float4)) v(n, d, r);
SELECT egress_preview_record(v) FROM (VALUES
	(1, interval '14 months'),
	(2, interval '-1.000001 seconds'),
	(3, interval '100000 hours 0.000001 seconds'),
	(4, make_interval(days => -3, mins => 4)),
	(5, make_interval(years => 1, days => -1, secs => 1)),
	(6, interval '-178956970 years -7 months -2147483648 days -2562047788 hours -54.775808 seconds'),
	(7, interval '178956970 years 7 months 2147483647 days 2562047788 hours 54.775807 seconds')) v(n, i);
SELECT egress_preview_record(v) FROM (VALUES
	(1, date '0001-01-01', timestamp '0001-01-01 00:00:00', time '00:00:00'),
	(2, date '9999-12-31', timestamp '9999-12-31 23:59:59.999999', time '23:59:59.999999'),
	(3, date '0001-01-01 BC', timestamp '2000-02-29 12:00:00.1', time '12:00:00.1'),
	(4, date '1999-12-31', timestamp '1999-12-31 23:59:59.000001', time '24:00:00')) v(n, d, ts, t);
SELECT egress_preview_record(v) FROM (VALUES
	(1, timetz '12:00:00+15:59:59', timestamptz '2024-07-01 12:00:00+05:30'),
	(2, timetz '12:00:00-15:59:59', timestamptz '2024-07-01 12:00:00 America/Los_Angeles'),
	(3, timetz '00:00:00+00', timestamptz '1969-12-31 23:59:59.999999+00')) v(n, tz, tstz);
-- midnight as hour 24 is "00:00:00" (RFC 3339 has no hour 24), for time and
-- timetz, in arrays too, from a Datum and from output text alike
SELECT egress_preview_record(v) FROM (VALUES
	(1, time '24:00:00', timetz '24:00:00+00', timetz '24:00:00+05', timetz '19:00:00-05'),
	(2, time '23:59:59.999999', timetz '24:00:00-15:59', timetz '00:00:00+00', timetz '01:00:00+01')) v(n, t, tz, tz5, tzm5);
SELECT egress_preview_record(ROW(ARRAY[time '24:00:00', NULL], ARRAY[timetz '24:00:00+00']));
SELECT n FROM (VALUES
	(1, time '24:00:00', timetz '24:00:00+00', ARRAY[time '24:00:00'], ARRAY[timetz '24:00:00+00']),
	(2, time '00:00:00', timetz '19:00:00-05', ARRAY[time '00:00:00.5'], ARRAY[timetz '24:00:00-01'])) v(n, t, tz, ta, tza)
WHERE egress_preview_record(v)::text IS DISTINCT FROM egress_preview_record_via_text(v)::text
   OR egress_preview_record(v)::text LIKE '%24:00%';
SELECT egress_preview_record(v) FROM (VALUES
	(1, json ' { "sp ace" : "t\tab" } ', jsonb '"str"'),
	(2, json '-1.5e+10', jsonb '1.50'),
	(3, json 'true', jsonb 'null'),
	(4, json '"\u0000 \\ \/"', jsonb '{"z": 1, "aa": [null, false]}')) v(n, j, jb);
-- an anonymous row: keys are the row's field names
SELECT egress_preview_record(ROW(1, 'x', NULL::int[]));

-- the CDC path renders values from their output text (printed, as wal2json
-- prints them in the worker, under DateStyle ISO, IntervalStyle postgres,
-- TimeZone UTC, extra_float_digits 1, bytea_output hex): it must give the
-- same records as the Datum path, whatever this session's settings are.
-- Each query lists the rows that differ: none.
SELECT id FROM types_t t
WHERE egress_preview_record(t)::text IS DISTINCT FROM egress_preview_record_via_text(t)::text;
SELECT egress_preview_record_via_text(t) FROM types_t t WHERE id IN (1, 3) ORDER BY id;
SELECT n_int8 FROM schema_t s
WHERE egress_preview_record(s)::text IS DISTINCT FROM egress_preview_record_via_text(s)::text;
-- floats over their whole range, subnormals included
SELECT n FROM (SELECT n, sin(n) * 10.0::float8 ^ (n % 616 - 308) AS d,
		(cos(n) * 10.0::float8 ^ (n % 76 - 37))::float4 AS r
	FROM generate_series(1, 20000) n) v
WHERE egress_preview_record(v)::text IS DISTINCT FROM egress_preview_record_via_text(v)::text;
SELECT n FROM (VALUES
	(1, '5e-324'::float8, '1.4e-45'::float4),
	(2, 1.7976931348623157e308, 1e-7),
	(3, 123456789012345678, 16777216),
	(4, 0.30000000000000004, 0.3),
	(5, -1e-5, 100),
	(6, '-0'::float8, '-0'::float4),
	(7, 2.2250738585072014e-308, '1e-40'::float4),
	(8, 1/3::float8, (1/3::float8)::float4),
	(9, 'NaN', '-Infinity')) v(n, d, r)
WHERE egress_preview_record(v)::text IS DISTINCT FROM egress_preview_record_via_text(v)::text;
-- dates, times and timestamps with every length of fraction, and intervals
SELECT n FROM (SELECT n, ts, ts::timestamptz AS tstz, ts::date AS d, ts::time AS t,
		ts::time::timetz AS ttz, ts - timestamp '2000-01-01' AS i,
		ARRAY[ts::timestamptz, NULL] AS tstz_arr, ARRAY[ts - timestamp '1999-12-31 23:59:59.999'] AS i_arr
	FROM (SELECT n, timestamp '0001-01-01' + (n * 104729 % 73) * interval '137 years' +
			(n * 7919) * interval '1 second 17 milliseconds' +
			(n % 7) * interval '1 microsecond' * 10 ^ (n % 6) AS ts
		FROM generate_series(1, 3000) n) g) v
WHERE egress_preview_record(v)::text IS DISTINCT FROM egress_preview_record_via_text(v)::text;
SELECT egress_preview_record_via_text(v) FROM (VALUES
	(1, timestamptz '2024-01-15 13:45:30.1+00', timestamp '2024-01-15 13:45:30.000001', time '13:45:30.12'),
	(2, timestamptz '0001-01-01 00:00:00+00', timestamp '0044-03-15 12:00:00 BC', time '24:00:00'),
	(3, timestamptz '10000-01-01 00:00:00+00', timestamp 'infinity', time '00:00:00.000001')) v(n, tstz, ts, t);
-- domains and arrays over the types rendered from a Datum
CREATE DOMAIN d_bool AS boolean;
CREATE DOMAIN d_bytea AS bytea;
CREATE DOMAIN d_tstz AS timestamptz;
CREATE DOMAIN d_float AS float8;
CREATE DOMAIN d_interval AS interval;
CREATE DOMAIN d_json AS json;
CREATE DOMAIN d_dates AS date[];
CREATE TABLE domain_t (
	id integer,
	c_bool d_bool,
	c_bytea d_bytea,
	c_tstz d_tstz,
	c_float d_float,
	c_interval d_interval,
	c_json d_json,
	c_dates d_dates,
	c_bool_arr boolean[],
	c_bytea_arr bytea[],
	c_float_arr float8[],
	c_interval_arr interval[],
	c_timetz_arr timetz[],
	c_jsonb_arr jsonb[],
	c_hstore_arr hstore[],
	c_bit1_arr bit(1)[]
);
INSERT INTO domain_t VALUES
	(1, true, '\xdeadBEEF', '2024-01-15 08:45:30.5-05', 0.1, '1 day -00:00:01.5',
	 '{"a" : 1}', '{2024-01-15,infinity,NULL}', '{t,f,NULL}', '{"\\x00ff",""}',
	 '{0.1,NaN,-Infinity,1e300}', '{"-1 years 2 mons","00:00:00.000001"}',
	 '{"12:00:00+15:59:59","00:00:00-01"}', ARRAY['{"b": [1, 2]}'::jsonb, 'null'],
	 ARRAY['a=>1'::hstore, NULL], '{1,0}'),
	(2, false, '', 'infinity', 'NaN', '0', 'null', '{}', '{}', '{}', '{}', '{}',
	 '{}', '{}', '{}', '{}'),
	(3, NULL, NULL, NULL, '-Infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL,
	 NULL, NULL, NULL, NULL);
SELECT id FROM domain_t t
WHERE egress_preview_record(t)::text IS DISTINCT FROM egress_preview_record_via_text(t)::text;
SELECT egress_preview_record_via_text(t) FROM domain_t t WHERE id = 1;

-- errors
SELECT egress_preview_schema(0);
CREATE SEQUENCE types_seq;
SELECT egress_preview_schema('types_seq');
SELECT egress_preview_record(42);
SELECT egress_preview_record('text'::text);
SELECT egress_preview_record_via_text(42);
-- STRICT: NULL in, NULL out
SELECT egress_preview_schema(NULL) IS NULL AS null_schema,
	egress_preview_record(NULL::types_t) IS NULL AS null_record,
	egress_preview_record_via_text(NULL::types_t) IS NULL AS null_record_via_text;
