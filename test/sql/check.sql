-- egress_check(): each check once failing for its reason, once passing.
-- The checks of servers (wal_level, slots, workers, output plugins, slot
-- WAL, HTTP and S3 probes) are in test/t/111_check.pl.  Operating system
-- user names differ between machines: they are masked.
\set VERBOSITY terse
CREATE EXTENSION IF NOT EXISTS pg_egress;

CREATE FUNCTION pg_temp.chk(dest text DEFAULT NULL, stream text DEFAULT NULL)
RETURNS TABLE ("check" text, ok boolean, detail text, hint text)
LANGUAGE sql AS $$
	SELECT c."check", c.ok,
		   regexp_replace(c.detail, 'operating system user "[^"]*"', 'operating system user "?"', 'g'),
		   regexp_replace(c.hint, 'operating system user "[^"]*"', 'operating system user "?"', 'g')
	  FROM egress_check(dest, stream) c
$$;

CREATE ROLE chk_owner;
CREATE ROLE chk_other;
GRANT pg_write_server_files TO chk_owner, chk_other;
GRANT EXECUTE ON FUNCTION egress_check(text, text),
	egress_add_destination(text, text, jsonb),
	egress_add_stream(text, regclass, text, text, text, jsonb),
	egress_remove_stream(text) TO chk_owner, chk_other;
CREATE TABLE public.chk_t (id int PRIMARY KEY, note text);
GRANT SELECT ON public.chk_t TO chk_owner;

-- the server: what this regression server is configured with passes
SELECT "check", ok FROM egress_check()
 WHERE "check" IN ('wal_level', 'max_replication_slots', 'max_wal_senders', 'max_worker_processes',
				   'pg_egress.max_workers', 'shared_preload_libraries', 'output_plugin_libraries')
 ORDER BY 1;
-- and changes nothing
SELECT count(*) FROM egress.destination;

-- a file destination the server cannot write to is refused when added,
-- naming the operating system user (errdetail, not shown in terse mode)
SET ROLE chk_owner;
SELECT egress_add_destination('chk_bad', 'file:///proc/pg_egress_check/out');
SELECT egress_add_destination('chk_bad', 'file:///proc');
SELECT egress_add_destination('chk_bad', 'file:///etc/hostname/out');
-- one it can write to is accepted (created later by the first batch)
SELECT egress_add_destination('chk_file', 'file:///tmp/pg_egress_regress/check/out');
SELECT "check", ok, CASE WHEN "check" LIKE 'disk%' THEN '(sizes)' ELSE detail END, hint
  FROM pg_temp.chk('chk_file') WHERE "check" LIKE '%(chk_file)' ORDER BY 1;
SELECT egress_add_stream('chk_s', 'public.chk_t', 'LOG_BASED', 'chk_file');
RESET ROLE;

-- a directory that became unwritable: egress_check says so, and
-- egress_add_stream refuses with the same message
UPDATE egress.destination SET location = '/proc/pg_egress_check' WHERE name = 'chk_file';
SET ROLE chk_owner;
SELECT "check", ok, detail, hint FROM pg_temp.chk('chk_file') WHERE "check" = 'reachable (chk_file)';
SELECT egress_add_stream('chk_s2', 'public.chk_t', 'FULL_TABLE', 'chk_file');
RESET ROLE;
UPDATE egress.destination SET location = '/tmp/pg_egress_regress/check/out' WHERE name = 'chk_file';

-- stream checks pass
SET ROLE chk_owner;
SELECT "check", ok, detail, hint FROM pg_temp.chk(NULL, 'chk_s') WHERE "check" LIKE '%(stream chk_s)' ORDER BY 1;
RESET ROLE;

-- privileges: revoked since the stream was added
REVOKE SELECT ON public.chk_t FROM chk_owner;
SET ROLE chk_owner;
SELECT "check", ok, detail, hint FROM pg_temp.chk(NULL, 'chk_s') WHERE "check" LIKE '%(stream chk_s)' ORDER BY 1;
RESET ROLE;
-- SELECT on some columns is not enough for a stream of all of them
GRANT SELECT (id) ON public.chk_t TO chk_owner;
SET ROLE chk_owner;
SELECT "check", ok FROM pg_temp.chk(NULL, 'chk_s') WHERE "check" LIKE 'privileges%';
-- ... and enough for a stream of those columns (option "columns")
SELECT egress_add_stream('chk_c', 'public.chk_t', 'FULL_TABLE', 'chk_file', NULL, '{"columns": ["id"]}');
SELECT "check", ok, detail FROM pg_temp.chk(NULL, 'chk_c') WHERE "check" LIKE 'privileges%';
RESET ROLE;
REVOKE SELECT (id) ON public.chk_t FROM chk_owner;
SET ROLE chk_owner;
SELECT "check", ok, detail FROM pg_temp.chk(NULL, 'chk_c') WHERE "check" LIKE 'privileges%';
SELECT egress_remove_stream('chk_c');
RESET ROLE;
GRANT SELECT ON public.chk_t TO chk_owner;

-- row-level security that applies to the owner of a LOG_BASED stream
ALTER TABLE public.chk_t ENABLE ROW LEVEL SECURITY;
SET ROLE chk_owner;
SELECT "check", ok, detail, hint FROM pg_temp.chk(NULL, 'chk_s') WHERE "check" LIKE 'row_security%';
RESET ROLE;
ALTER TABLE public.chk_t DISABLE ROW LEVEL SECURITY;
SET ROLE chk_owner;
SELECT "check", ok FROM pg_temp.chk(NULL, 'chk_s') WHERE "check" LIKE 'row_security%';
RESET ROLE;

-- replica identity: NOTHING cannot key changes; USING INDEX / FULL say what they carry
ALTER TABLE public.chk_t REPLICA IDENTITY NOTHING;
SET ROLE chk_owner;
SELECT "check", ok, detail, hint FROM pg_temp.chk(NULL, 'chk_s') WHERE "check" LIKE 'replica_identity%';
RESET ROLE;
ALTER TABLE public.chk_t REPLICA IDENTITY FULL;
SET ROLE chk_owner;
SELECT "check", ok, detail FROM pg_temp.chk(NULL, 'chk_s') WHERE "check" LIKE 'replica_identity%';
RESET ROLE;
ALTER TABLE public.chk_t REPLICA IDENTITY DEFAULT;

-- TOAST: values stored out of line, without REPLICA IDENTITY FULL
INSERT INTO public.chk_t
SELECT 1, string_agg(md5(i::text), '') FROM generate_series(1, 4000) i;
SET ROLE chk_owner;
SELECT "check", ok, regexp_replace(detail, '\(its TOAST table has .*\)', '(...)') AS detail, hint
  FROM pg_temp.chk(NULL, 'chk_s') WHERE "check" LIKE 'toast%';
RESET ROLE;
ALTER TABLE public.chk_t REPLICA IDENTITY FULL;
SET ROLE chk_owner;
SELECT "check", ok, detail FROM pg_temp.chk(NULL, 'chk_s') WHERE "check" LIKE 'toast%';
RESET ROLE;
ALTER TABLE public.chk_t REPLICA IDENTITY DEFAULT;

-- free disk: the tables streamed to a file destination are larger than
-- what its file system has free (a size estimate as VACUUM would record)
UPDATE pg_class SET relpages = 2000000000 WHERE oid = 'public.chk_t'::regclass;
SET ROLE chk_owner;
SELECT "check", ok, hint FROM pg_temp.chk('chk_file') WHERE "check" LIKE 'disk%';
RESET ROLE;
UPDATE pg_class SET relpages = 1 WHERE oid = 'public.chk_t'::regclass;
SET ROLE chk_owner;
SELECT "check", ok FROM pg_temp.chk('chk_file') WHERE "check" LIKE 'disk%';
RESET ROLE;

-- another role sees neither the destination nor the stream
SET ROLE chk_other;
SELECT "check", ok, detail FROM pg_temp.chk('chk_file') WHERE "check" NOT IN
	('wal_level', 'max_replication_slots', 'max_wal_senders', 'max_worker_processes',
	 'pg_egress.max_workers', 'shared_preload_libraries', 'output_plugin_libraries');
SELECT "check", ok, detail FROM pg_temp.chk(NULL, 'chk_s') WHERE "check" LIKE '%chk%';
SELECT count(*) FROM egress_check() WHERE "check" LIKE '%chk_%';
RESET ROLE;

-- a role without pg_write_server_files is told so, and nothing is probed
REVOKE pg_write_server_files FROM chk_owner;
SET ROLE chk_owner;
SELECT "check", ok, detail, hint FROM pg_temp.chk('chk_file') WHERE "check" LIKE '%(chk_file)' ORDER BY 1;
RESET ROLE;
GRANT pg_write_server_files TO chk_owner;

-- secrets never appear: an unreachable HTTP destination with a token
SELECT egress_add_destination('chk_http', 'http://user:pw0rd@127.0.0.1:9/in?key=k3y',
	'{"headers": {"Authorization": "Bearer s3cret"}, "connect_timeout": "2s"}');
SELECT "check", ok, detail ~ '(s3cret|pw0rd|k3y)' AS shows_secret,
	   regexp_replace(detail, ': .*', ': ...') AS detail, hint
  FROM egress_check('chk_http') WHERE "check" = 'reachable (chk_http)';

-- clean up
SELECT egress_remove_stream('chk_s');
SELECT egress_remove_destination('chk_file');
SELECT egress_remove_destination('chk_http');
DROP TABLE public.chk_t;
REVOKE ALL ON FUNCTION egress_check(text, text),
	egress_add_destination(text, text, jsonb),
	egress_add_stream(text, regclass, text, text, text, jsonb),
	egress_remove_stream(text) FROM chk_owner, chk_other;
DROP ROLE chk_owner;
DROP ROLE chk_other;
