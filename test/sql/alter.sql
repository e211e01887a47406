-- egress_alter_destination, egress_alter_stream, egress_destinations and
-- egress_user: the SQL surface and the attacks on it.  The workers
-- serve another database (test/regress.conf).
\set VERBOSITY default
CREATE EXTENSION IF NOT EXISTS pg_egress;

-- the role exists, is not a login role, and holds what a pipeline owner needs
SELECT rolname, rolcanlogin, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = 'egress_user';
SELECT p.proname, has_function_privilege('egress_user', p.oid, 'EXECUTE') AS granted,
	   has_function_privilege('public', p.oid, 'EXECUTE') AS public
  FROM pg_proc p WHERE p.proname LIKE 'egress\_%' ORDER BY 1, 2;
SELECT c.relname, has_table_privilege('egress_user', c.oid, 'SELECT') AS granted
  FROM pg_class c WHERE c.relname LIKE 'egress\_%' AND c.relkind = 'v' ORDER BY 1;
-- nothing of the catalog itself
SELECT has_schema_privilege('egress_user', 'egress', 'USAGE') AS egress_schema,
	   has_table_privilege('egress_user', 'egress.destination', 'SELECT') AS destination_table;

CREATE ROLE alter_owner IN ROLE egress_user, pg_write_server_files;
CREATE ROLE alter_member IN ROLE alter_owner;
CREATE ROLE alter_other IN ROLE egress_user, pg_write_server_files;
CREATE ROLE alter_reader IN ROLE pg_read_all_data;
CREATE TABLE public.alter_t (id bigint PRIMARY KEY, note text, changed timestamptz);
GRANT SELECT ON public.alter_t TO alter_owner, alter_other;

-- a non-superuser, through egress_user only
SET ROLE alter_owner;
SELECT egress_add_destination('alter_web', 'http://user:pw@93.184.216.34:9/in?token=s3cret',
	'{"headers": {"Authorization": "Bearer t0ken", "X-Team": "a"}, "timeout": "30s"}');
SELECT egress_add_destination('alter_dir', 'file:///tmp/pg_egress_regress/alter/');
SELECT egress_add_stream('alter_inc', 'public.alter_t', 'INCREMENTAL', 'alter_dir',
	replication_key => 'changed', options => '{"interval": "1 minute", "batch_max_rows": 10}');
SELECT egress_add_stream('alter_full', 'public.alter_t', 'FULL_TABLE', 'alter_web');
-- its own destinations, secrets masked
SELECT name, kind, location, options, owner FROM egress_destinations ORDER BY name;

-- alter a destination: options are a patch, null removes a key
SELECT egress_alter_destination('alter_web', options => '{"timeout": "1 minute", "X": null, "gzip": true}');
SELECT egress_alter_destination('alter_web', options => '{"timeout": null}');
SELECT name, location, options FROM egress_destinations WHERE name = 'alter_web';
SELECT egress_alter_destination('alter_web', url => 'http://93.184.216.34:10/other');
SELECT name, location, options FROM egress_destinations WHERE name = 'alter_web';
SELECT egress_alter_destination('alter_dir', url => 'file:///tmp/pg_egress_regress/alter2/');
SELECT name, location FROM egress_destinations WHERE name = 'alter_dir';
-- new headers replace the old ones
SELECT egress_alter_destination('alter_web', options => '{"headers": {"Authorization": "Bearer n3w"}}');
SELECT options FROM egress_destinations WHERE name = 'alter_web';
-- the same validation as egress_add_destination, and nothing changes
SELECT egress_alter_destination('alter_web', options => '{"timeout": "soon"}');
SELECT egress_alter_destination('alter_web', options => '{"no_such": 1}');
SELECT egress_alter_destination('alter_web', options => '{"headers": {"Host": "x"}}');
SELECT egress_alter_destination('alter_web', options => '{"verify": false}');
SELECT egress_alter_destination('alter_web', options => '{"ca_file": "/etc/passwd"}');
SELECT egress_alter_destination('alter_web', options => '{"slot_name": "someone_elses"}');
SELECT egress_alter_destination('alter_web', options => '{"decoder": "wal2json"}');
-- the defaults written out are no change
SELECT egress_alter_destination('alter_web', options => '{"decoder": "pgoutput"}');
-- naming the slot (even its default name) needs REPLICATION, as at add time
SELECT egress_alter_destination('alter_web', options => '{"slot_name": "pg_egress_alter_web"}');
SELECT egress_alter_destination('alter_web', options => '{"decoder": null, "slot_name": null}');
SELECT egress_alter_destination('alter_web', options => '[1]');
SELECT egress_alter_destination('alter_web', url => 'ftp://example.com/');
SELECT egress_alter_destination('alter_web', url => 'http://user:pw@/x');
-- changing the kind is refused with a hint
SELECT egress_alter_destination('alter_web', url => 'file:///tmp/pg_egress_regress/x/');
SELECT egress_alter_destination('alter_dir', url => 's3://bucket/prefix');
SELECT egress_alter_destination(NULL);
SELECT egress_alter_destination('no_such_destination', options => '{}');
-- transactional: an alter rolled back leaves the old settings
BEGIN;
SELECT egress_alter_destination('alter_web', url => 'http://93.184.216.34:11/rolled-back');
ROLLBACK;
SELECT name, location FROM egress_destinations WHERE name = 'alter_web';
RESET ROLE;

-- hosts pg_egress.allowed_destination_hosts does not allow (by default
-- loopback, private, link-local...): refused for a non-superuser's
-- destination, also when a superuser alters it (validated as the owner)
SHOW pg_egress.allowed_destination_hosts;
SET ROLE alter_owner;
SELECT egress_alter_destination('alter_web', url => 'http://10.1.2.3/in');
SELECT egress_alter_destination('alter_web', url => 'http://127.0.0.1:5432/');
SELECT egress_alter_destination('alter_web', url => 'http://[::1]/');
RESET ROLE;
SELECT egress_alter_destination('alter_web', url => 'http://10.1.2.3/in');
SELECT location FROM egress.destination WHERE name = 'alter_web';
-- nor a superuser-only option set by a superuser on another role's destination
SELECT egress_alter_destination('alter_web', options => '{"verify": false}');

-- another role: not its destination, not its stream; no detail leaks
SET ROLE alter_other;
SELECT egress_alter_destination('alter_web', url => 'http://93.184.216.34:12/stolen');
SELECT egress_alter_destination('alter_web', options => '{"headers": {"Authorization": "mine"}}');
SELECT egress_alter_stream('alter_inc', '{"batch_max_rows": 1}');
SELECT count(*) AS visible FROM egress_destinations;
SELECT count(*) AS visible FROM egress_streams;
RESET ROLE;
-- a member of the owner role may alter
SET ROLE alter_member;
SELECT egress_alter_stream('alter_inc', '{"batch_max_rows": 20}');
SELECT name FROM egress_destinations ORDER BY 1;
RESET ROLE;
-- a role without egress_user may not call the functions at all
CREATE ROLE alter_nobody;
SET ROLE alter_nobody;
SELECT egress_alter_destination('alter_web', options => '{}');
SELECT egress_alter_stream('alter_inc', '{}');
SELECT * FROM egress_destinations;
RESET ROLE;
DROP ROLE alter_nobody;

-- secrets: not through the view with a leaky function in WHERE
-- (security_barrier), not through pg_read_all_data
CREATE FUNCTION public.alter_leak(text, jsonb) RETURNS boolean
	LANGUAGE plpgsql COST 0.0000001 AS
$$BEGIN RAISE NOTICE 'saw % %', $1, $2; RETURN true; END$$;
SET ROLE alter_other;
SELECT name FROM egress_destinations WHERE public.alter_leak(location, options);
RESET ROLE;
SET ROLE alter_owner;
SELECT name FROM egress_destinations WHERE public.alter_leak(location, options) ORDER BY 1;
RESET ROLE;
SET ROLE alter_reader;
SELECT count(*) AS rows_seen FROM egress.destination;
SELECT * FROM egress_destinations;
RESET ROLE;
DROP FUNCTION public.alter_leak(text, jsonb);

-- alter a stream
SET ROLE alter_owner;
SELECT egress_alter_stream('alter_inc', '{"interval": "5 minutes", "batch_max_rows": null, "batch_max_bytes": 1000000}');
SELECT name, options FROM egress_streams WHERE name = 'alter_inc';
SELECT egress_alter_stream('alter_inc', '{"interval": 30}');
SELECT egress_alter_stream('alter_inc', '{"interval": "1 second"}');
SELECT options->'interval' AS interval FROM egress_streams WHERE name = 'alter_inc';
-- same validation as egress_add_stream; nothing changes
SELECT egress_alter_stream('alter_inc', '{"interval": "often"}');
SELECT egress_alter_stream('alter_inc', '{"interval": "1 ms"}');
SELECT egress_alter_stream('alter_inc', '{"batch_max_rows": 0}');
SELECT egress_alter_stream('alter_inc', '{"no_such": 1}');
SELECT egress_alter_stream('alter_inc', '{"chunk_rows": 100}');
SELECT egress_alter_stream('alter_full', '{"interval": "1 minute"}');
SELECT options->'interval' AS interval FROM egress_streams WHERE name = 'alter_full';
SELECT egress_alter_stream('alter_full', '{"interval": null}');
SELECT egress_alter_stream('alter_full', '{"limit": 5}');
SELECT egress_alter_stream('alter_full', '{"parallel": 1000}');
SELECT egress_alter_stream('alter_full', '{"fast_sync": true}');
-- what decides the records' shape cannot change
SELECT egress_alter_stream('alter_inc', '{"replication_key": "id"}');
SELECT egress_alter_stream('alter_inc', '{"columns": ["id"]}');
SELECT egress_alter_stream('alter_inc', '{"filter": "id > 1"}');
SELECT egress_alter_stream('alter_inc', '{"state": {}}');
SELECT egress_alter_stream('alter_inc', NULL);
SELECT egress_alter_stream(NULL, '{}');
SELECT egress_alter_stream('no_such_stream', '{}');
SELECT name, options FROM egress_streams WHERE name = 'alter_inc';
RESET ROLE;

-- one duration grammar: SQL intervals and bare numbers of seconds
SET ROLE alter_owner;
SELECT egress_alter_destination('alter_web', options => '{"flush_interval": "1 second", "error_retry_interval": "1 minute", "timeout": 30, "connect_timeout": "2.5", "retry_initial_interval": "250 ms", "retry_max_interval": "00:01:30"}');
SELECT options - 'headers' AS options FROM egress_destinations WHERE name = 'alter_web';
SELECT egress_alter_destination('alter_web', options => '{"flush_interval": "-1 second"}');
SELECT egress_alter_destination('alter_web', options => '{"flush_interval": 0}');
SELECT egress_alter_destination('alter_web', options => '{"error_retry_interval": "1 year"}');
SELECT egress_alter_destination('alter_web', options => '{"timeout": true}');
RESET ROLE;
-- what the database worker does with error_retry_interval: read it as an interval
SELECT (options->>'error_retry_interval')::interval AS error_retry_interval,
	   (options->>'timeout')::interval AS timeout
  FROM egress.destination WHERE name = 'alter_web';

-- errors name the argument; INCREMENTAL's hint fits egress_add_streams
SELECT egress_add_streams('public.alter_t', NULL, 'INCREMENTAL', 'alter_dir');
SELECT egress_add_streams('public.alter_t', NULL, NULL, 'alter_dir');
SELECT egress_add_streams(NULL, NULL, 'FULL_TABLE', 'alter_dir');
SELECT egress_add_streams('public.alter_t', NULL, 'FULL_TABLE', NULL);
SELECT egress_add_streams('public.alter_t', NULL, 'FULL_TABLE', 'alter_dir', NULL);
-- a name clash is hinted at, and name_prefix avoids it
SELECT egress_add_stream('public_alter_t', 'public.alter_t', 'FULL_TABLE', 'alter_dir');
SELECT egress_add_streams('public.alter_t', NULL, 'FULL_TABLE', 'alter_dir');
SELECT egress_add_streams('public.alter_t', NULL, 'FULL_TABLE', 'alter_dir', '{"name_prefix": "second_"}');
SELECT egress_add_streams('public.alter_t', NULL, 'FULL_TABLE', 'alter_dir', '{"name_prefix": "Bad-"}');
SELECT egress_add_streams('public.alter_t', NULL, 'FULL_TABLE', 'alter_dir', '{"name_prefix": 1}');
-- tables created later get the prefix too
SELECT egress_add_streams('public.alter_new*', NULL, 'FULL_TABLE', 'alter_dir',
	'{"name_prefix": "f_", "follow_new_tables": true}');
CREATE TABLE public.alter_new1 (id int PRIMARY KEY);
SELECT options FROM egress_stream_patterns;
SELECT name FROM egress_streams ORDER BY 1;
DROP TABLE public.alter_new1;

-- clean up; DROP EXTENSION leaves egress_user
SELECT egress_remove_destination('alter_web', cascade => true);
SELECT egress_remove_destination('alter_dir', cascade => true);
DROP TABLE public.alter_t;
DROP ROLE alter_member, alter_owner, alter_other, alter_reader;
DROP EXTENSION pg_egress;
SELECT count(*) AS egress_user_kept FROM pg_roles WHERE rolname = 'egress_user';
-- created again only if missing; one with attributes of its own is used,
-- with a warning
ALTER ROLE egress_user LOGIN;
CREATE EXTENSION pg_egress;
ALTER ROLE egress_user NOLOGIN;
SELECT count(*) FROM pg_roles WHERE rolname = 'egress_user';
SELECT has_function_privilege('egress_user', 'egress_alter_stream(text, jsonb)', 'EXECUTE') AS granted_again;
DROP EXTENSION pg_egress;
