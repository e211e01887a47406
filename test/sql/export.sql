-- egress_export() and the aws_s3 extension: the SQL surface and every bad
-- input that fails before anything is written (the TAP suites 030-032 test
-- the data, S3 and the failures that happen while exporting).
\set VERBOSITY default

-- not public: it writes with the server's credentials
SELECT has_function_privilege('public', 'egress_export(text, text, text)', 'EXECUTE') AS public_execute;

-- the secret settings are hidden from SHOW ALL / pg_settings, and
-- superuser-only
SELECT name FROM pg_settings WHERE name LIKE 'pg\_egress.s3\_%' ORDER BY 1;
CREATE ROLE export_nobody;
GRANT EXECUTE ON FUNCTION egress_export(text, text, text) TO export_nobody;
SET ROLE export_nobody;
SHOW pg_egress.s3_secret_access_key;
SET pg_egress.s3_access_key_id = 'x';
SET pg_egress.s3_endpoint = 'http://127.0.0.1:1';
-- files need pg_write_server_files, as COPY TO 'file' does
SELECT * FROM egress_export('SELECT 1', 'file:///tmp/pg_egress_never_written', '');
RESET ROLE;

-- URIs
SELECT * FROM egress_export('SELECT 1', 'ftp://host/x', '');
SELECT * FROM egress_export('SELECT 1', 'just-a-name', '');
SELECT * FROM egress_export('SELECT 1', 'file://relative/path', '');
SELECT * FROM egress_export('SELECT 1', 'file:///tmp/', '');
SELECT * FROM egress_export('SELECT 1', 's3://bucket-only', '');
SELECT * FROM egress_export('SELECT 1', 's3://bucket/', '');
SELECT * FROM egress_export('SELECT 1', 's3:///key', '');
SELECT * FROM egress_export('SELECT 1', 's3://Bad_Bucket/key', '');
SELECT * FROM egress_export('SELECT 1', NULL, '');
SELECT * FROM egress_export(NULL, 'file:///tmp/x', '');

-- queries: one SELECT, VALUES or TABLE statement
CREATE TABLE export_src (a int, b text);
SELECT * FROM egress_export('DELETE FROM export_src', 'file:///tmp/pg_egress_x', '');
SELECT * FROM egress_export('INSERT INTO export_src VALUES (1) RETURNING *', 'file:///tmp/pg_egress_x', '');
SELECT * FROM egress_export('SELECT 1; SELECT 2', 'file:///tmp/pg_egress_x', '');
SELECT * FROM egress_export('', 'file:///tmp/pg_egress_x', '');
SELECT * FROM egress_export('SELECT 1 INTO export_copy', 'file:///tmp/pg_egress_x', '');
SELECT * FROM egress_export('WITH d AS (DELETE FROM export_src RETURNING *) SELECT * FROM d', 'file:///tmp/pg_egress_x', '');
SELECT * FROM egress_export('SELEC 1', 'file:///tmp/pg_egress_x', '');
SELECT * FROM egress_export('SELECT * FROM no_such_table', 'file:///nonexistent_dir/x', '');

-- options: COPY's, plus max_file_size and compression
SELECT * FROM egress_export('SELECT 1', 'file:///tmp/pg_egress_x', 'format xml');
SELECT * FROM egress_export('SELECT 1', 'file:///tmp/pg_egress_x', 'no_such_option 1');
SELECT * FROM egress_export('SELECT 1', 'file:///tmp/pg_egress_x', 'format csv, format text');
SELECT * FROM egress_export('SELECT 1', 'file:///tmp/pg_egress_x', 'format binary, header true');
SELECT * FROM egress_export('SELECT 1', 'file:///tmp/pg_egress_x', 'format csv, force_not_null (a)');
SELECT * FROM egress_export('SELECT 1', 'file:///tmp/pg_egress_x', 'freeze');
SELECT * FROM egress_export('SELECT 1', 'file:///tmp/pg_egress_x', '(format csv)');
SELECT * FROM egress_export('SELECT 1', 'file:///tmp/pg_egress_x', 'format csv) TO STDOUT; SELECT (1');
SELECT * FROM egress_export('SELECT 1', 'file:///tmp/pg_egress_x', 'max_file_size 0');
SELECT * FROM egress_export('SELECT 1', 'file:///tmp/pg_egress_x', 'max_file_size ''big''');
SELECT * FROM egress_export('SELECT 1', 'file:///tmp/pg_egress_x', 'max_file_size 10, max_file_size 20');
SELECT * FROM egress_export('SELECT 1', 'file:///tmp/pg_egress_x', 'compression ''zip''');
SELECT * FROM egress_export('SELECT 1', 'file:///tmp/pg_egress_x', 'compression gzip, compression none');

-- an unwritable path: a clean error
SELECT * FROM egress_export('SELECT 1', 'file:///nonexistent_dir/x', 'format csv');

-- the RDS surface
CREATE EXTENSION aws_s3 CASCADE;
SELECT aws_commons.create_s3_uri('lake', 'orders/all.csv', 'us-east-1');
SELECT (aws_commons.create_s3_uri('lake', 'orders/all.csv', 'us-east-1')).file_path;
SELECT aws_commons.create_aws_credentials('AKIA', 'secret', NULL);
SELECT p.oid::regprocedure AS function, pg_get_function_result(p.oid) AS result,
	   pg_get_function_arguments(p.oid) AS arguments,
	   has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname IN ('aws_s3', 'aws_commons') ORDER BY 1::text;
-- bad input through the RDS functions
SELECT * FROM aws_s3.query_export_to_s3('SELECT 1', aws_commons.create_s3_uri(NULL, 'k', 'us-east-1'));
SELECT * FROM aws_s3.query_export_to_s3('SELECT 1', 'lake', '', 'us-east-1');
SELECT * FROM aws_s3.query_export_to_s3('SELECT 1', 'lake', 'k', 'us east 1');
SELECT * FROM aws_s3.query_export_to_s3('UPDATE export_src SET a = 1', 'lake', 'k', 'us-east-1');
SELECT * FROM aws_s3.query_export_to_s3('SELECT 1', 'lake', 'k', 'us-east-1', options := 'format yaml');
DROP EXTENSION aws_s3;
DROP TABLE export_src;
REVOKE EXECUTE ON FUNCTION egress_export(text, text, text) FROM export_nobody;
DROP ROLE export_nobody;
