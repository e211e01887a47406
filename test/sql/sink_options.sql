-- Destination options: one parser for every kind, one duration grammar.
-- Each duration option of each kind accepts exactly the same strings, and
-- every accepted string is an SQL interval of the same length (the
-- database worker reads error_retry_interval in SQL).
\set VERBOSITY terse
CREATE EXTENSION IF NOT EXISTS pg_egress;

CREATE FUNCTION pg_temp.accepts(url text, opt text, val jsonb) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM egress_add_destination('dur_probe', url, jsonb_build_object(opt, val));
	PERFORM egress_remove_destination('dur_probe');
	RETURN true;
EXCEPTION WHEN invalid_parameter_value THEN
	RETURN false;
END $$;

CREATE FUNCTION pg_temp.as_interval(val jsonb) RETURNS interval
LANGUAGE plpgsql AS $$
BEGIN
	RETURN (val #>> '{}')::interval;
EXCEPTION WHEN OTHERS THEN
	RETURN NULL;
END $$;

WITH opts(url, opt) AS (VALUES
	('file:///tmp/egress_dur', 'flush_interval'),
	('file:///tmp/egress_dur', 'error_retry_interval'),
	('s3://bucket-x', 'flush_interval'),
	('s3://bucket-x', 'error_retry_interval'),
	('http://127.0.0.1:9/', 'flush_interval'),
	('http://127.0.0.1:9/', 'error_retry_interval'),
	('http://127.0.0.1:9/', 'timeout'),
	('http://127.0.0.1:9/', 'connect_timeout'),
	('http://127.0.0.1:9/', 'retry_initial_interval'),
	('http://127.0.0.1:9/', 'retry_max_interval')),
vals(v) AS (VALUES
	('"30s"'::jsonb), ('"500ms"'), ('"2min"'), ('"1h"'), ('"1.5s"'), ('"10"'),
	('"3 seconds"'), ('"2 minutes"'), ('"1 hours"'), ('"5sec"'), ('"250 ms"'),
	('"0"'), ('"0s"'), ('"-1s"'), ('"1e3"'), ('"1..5s"'), ('"5."'), ('".5s"'),
	('"abc"'), ('"10 days"'), ('"1 day"'), ('"00:00:30"'), ('"inf"'), ('""'),
	('"600000h"'), ('30'), ('true'))
SELECT v AS value,
	   array_agg(DISTINCT pg_temp.accepts(url, opt, v)) AS accepted_by_every_option,
	   pg_temp.as_interval(v) AS as_sql_interval
  FROM vals, opts
 GROUP BY v ORDER BY v::text;

-- the error names the option and says how to write it
SELECT egress_add_destination('d1', 'http://127.0.0.1:9/', '{"timeout": "soon"}');
SELECT egress_add_destination('d1', 'file:///tmp/egress_dur', '{"timeout": "30s"}');
SELECT egress_add_destination('d1', 's3://bucket-x', '{"gzip": true}');
SELECT egress_add_destination('d1', 'http://127.0.0.1:9/', '{"decoder": "test_decoding"}');
SELECT egress_add_destination('d1', 'http://127.0.0.1:9/', '{"batch_max_rows": 1.5}');
