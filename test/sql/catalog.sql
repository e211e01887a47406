-- The SQL surface: every egress_* function, with each bad input.
-- The workers serve another database (test/regress.conf), so nothing here
-- races with them.
\set VERBOSITY default
CREATE EXTENSION pg_egress;

-- the catalog and the administration functions are not public
SELECT n.nspname, c.relname,
	   has_table_privilege('public', c.oid, 'SELECT') AS public_select,
	   has_table_privilege('public', c.oid, 'INSERT') AS public_insert
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'egress' AND c.relkind IN ('r', 'S') ORDER BY 2;
SELECT has_schema_privilege('public', 'egress', 'USAGE') AS public_usage;
SELECT proname, has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute
  FROM pg_proc p WHERE proname LIKE 'egress\_%' ORDER BY 1;
SELECT has_table_privilege('public', 'egress_streams', 'SELECT') AS public_select;

-- GUCs are defined with units; unknown pg_egress.* names are refused
SELECT name, setting, unit, context FROM pg_settings WHERE name LIKE 'pg\_egress.%' ORDER BY 1;
SET pg_egress.no_such_setting = 1;

CREATE TABLE public.orders (id bigint PRIMARY KEY, note text);
CREATE SEQUENCE public.orders_seq;
CREATE INDEX orders_note_idx ON public.orders (note);
CREATE TYPE public.pair AS (a int, b int);
CREATE VIEW public.orders_view AS SELECT * FROM public.orders;
CREATE TEMP TABLE scratch (id int);

-- destinations
SELECT egress_add_destination('local', 'file:///tmp/pg_egress_regress/out/');
SELECT name, kind, location, options FROM egress.destination;
SELECT egress_add_destination('local', 'file:///tmp/other');
SELECT egress_add_destination('Bad-Name', 'file:///tmp/x');
SELECT egress_add_destination('', 'file:///tmp/x');
SELECT egress_add_destination('a_name_that_is_much_too_long_for_a_destination_xx', 'file:///tmp/x');
SELECT egress_add_destination('rel', 'file://relative/dir');
-- HTTP(S): errors never echo the URL or header values (they may be secrets)
BEGIN;
SELECT egress_add_destination('web', 'https://user:secret@example.com/ingest',
	'{"headers": {"Authorization": "Bearer t0ken"}, "gzip": true, "timeout": "30s", "flush_interval": "50ms", "verify": false, "error_retry_interval": "5min"}');
SELECT name, kind, options->'gzip' AS gzip FROM egress.destination WHERE name = 'web';
ROLLBACK;
SELECT egress_add_destination('web', 'https://user:secret@/ingest');
SELECT egress_add_destination('web', 'http://example.com/a b');
SELECT egress_add_destination('web', 'https://example.com/', '{"headers": {"Authorization": ["Bearer t0ken"]}}');
SELECT egress_add_destination('web', 'https://example.com/', '{"headers": {"Auth orization": "Bearer t0ken"}}');
SELECT egress_add_destination('web', 'https://example.com/', '{"headers": {"Content-Type": "text/plain"}}');
SELECT egress_add_destination('web', 'https://example.com/', '{"timeout": "soon"}');
SELECT egress_add_destination('web', 'https://example.com/', '{"timeout": "1.s"}');
SELECT egress_add_destination('web', 'https://example.com/', '{"error_retry_interval": "1e3s"}');
SELECT egress_add_destination('web', 'https://example.com/', '{"gzip": 1}');
SELECT egress_add_destination('web', 'https://example.com/', '{"gzip_level": 0}');
SELECT egress_add_destination('web', 'https://example.com/', '{"ca_file": ""}');
SELECT egress_add_destination('web', 'https://example.com/', '{"fsync": false}');
SELECT egress_add_destination('lake', 's3://Bucket_Name/prefix');
SELECT egress_add_destination('ftp', 'ftp://user:secret@example.com/');
SELECT egress_add_destination('opts', 'file:///tmp/x', '{"fsync": false}');
SELECT egress_add_destination('opts', 'file:///tmp/x', '[1, 2]');
SELECT egress_add_destination(NULL, 'file:///tmp/x');
SELECT egress_add_destination('nullurl', NULL);
SELECT egress_add_destination('nullopts', 'file:///tmp/x', NULL);
SELECT count(*) AS destinations FROM egress.destination;

-- streams: good
SELECT egress_add_stream('orders', 'public.orders', method => 'FULL_TABLE', destination => 'local');
SELECT egress_add_stream('orders_view', 'orders_view', 'full_table', 'local',
						 options => '{"batch_max_rows": 500, "batch_max_bytes": 1048576}');
SELECT name, relation, method, destination, state, version, rows_sent, worker_pid, options
  FROM egress_streams ORDER BY name;

-- streams: bad input, each refused before anything is written
SELECT egress_add_stream('orders', 'public.orders', 'FULL_TABLE', 'local');
SELECT egress_add_stream('missing', 'public.no_such_table', 'FULL_TABLE', 'local');
SELECT egress_add_stream('dropped', 4000000000::oid::regclass, 'FULL_TABLE', 'local');
SELECT egress_add_stream('seq', 'public.orders_seq', 'FULL_TABLE', 'local');
SELECT egress_add_stream('idx', 'public.orders_note_idx', 'FULL_TABLE', 'local');
SELECT egress_add_stream('comp', 'public.pair', 'FULL_TABLE', 'local');
SELECT egress_add_stream('tmp', 'scratch', 'FULL_TABLE', 'local');
SELECT egress_add_stream('m1', 'public.orders', 'SNAPSHOT', 'local');
SELECT egress_add_stream('m3', 'public.orders', 'INCREMENTAL', 'local', replication_key => 'nosuch');
SELECT egress_add_stream('k1', 'public.orders', 'FULL_TABLE', 'local', replication_key => 'id');
SELECT egress_add_stream('d1', 'public.orders', 'FULL_TABLE', 'nowhere');
SELECT egress_add_stream('o1', 'public.orders', 'FULL_TABLE', 'local', options => '{"batch_rows": 5}');
SELECT egress_add_stream('o1', 'public.orders', 'INCREMENTAL', 'local', replication_key => 'id', options => '{"fast_sync": true}');
SELECT egress_add_stream('o1', 'public.orders', 'INCREMENTAL', 'local', replication_key => 'id', options => '{"interval": "1000000 years"}');
-- chunked initial sync of LOG_BASED streams: chunk_rows >= 0, chunk_bytes > 0
SELECT egress_add_stream('o1', 'public.orders', 'LOG_BASED', 'local', options => '{"chunk_rows": -1}');
SELECT egress_add_stream('o1', 'public.orders', 'LOG_BASED', 'local', options => '{"chunk_rows": "many"}');
SELECT egress_add_stream('o1', 'public.orders', 'LOG_BASED', 'local', options => '{"chunk_rows": 1.5}');
SELECT egress_add_stream('o1', 'public.orders', 'LOG_BASED', 'local', options => '{"chunk_bytes": 0}');
SELECT egress_add_stream('o1', 'public.orders', 'FULL_TABLE', 'local', options => '{"chunk_rows": 100}');
SELECT egress_add_stream('o2', 'public.orders', 'FULL_TABLE', 'local', options => '{"batch_max_rows": 0}');
SELECT egress_add_stream('o3', 'public.orders', 'FULL_TABLE', 'local', options => '{"batch_max_rows": "10"}');
SELECT egress_add_stream('o4', 'public.orders', 'FULL_TABLE', 'local', options => '{"batch_max_bytes": 1.5}');
SELECT egress_add_stream('o5', 'public.orders', 'FULL_TABLE', 'local', options => '"x"');
SELECT egress_add_stream('N1', 'public.orders', 'FULL_TABLE', 'local');
SELECT egress_add_stream('o6', 'public.orders', 'FULL_TABLE', 'local', options => '{"debug_lsn": "yes"}');
SELECT egress_add_stream('o7', 'public.orders', 'FULL_TABLE', 'local', options => '{"lag_policy": "drop"}');
SELECT egress_add_stream(NULL, 'public.orders', 'FULL_TABLE', 'local');
SELECT egress_add_stream('n2', NULL, 'FULL_TABLE', 'local');
SELECT egress_add_stream('n3', 'public.orders', NULL, 'local');
SELECT egress_add_stream('n4', 'public.orders', 'FULL_TABLE', NULL);
SELECT egress_add_stream('n5', 'public.orders', 'FULL_TABLE', 'local', options => NULL);
SELECT name FROM egress.stream ORDER BY name;
SELECT count(*) AS states FROM egress.stream_state;

-- LOG_BASED: tables with a key only; every requirement checked when added
CREATE TABLE public.nokey (a int, b text);
CREATE TABLE public.fullident (a int, b text);
ALTER TABLE public.fullident REPLICA IDENTITY FULL;
CREATE TABLE public.parted (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
CREATE TABLE public.parted_1 PARTITION OF public.parted FOR VALUES FROM (0) TO (100);
CREATE TABLE public.parted_nokey (id int, v text) PARTITION BY RANGE (id);
CREATE TABLE public.parted_nokey_1 PARTITION OF public.parted_nokey FOR VALUES FROM (0) TO (100);
ALTER TABLE public.parted_nokey REPLICA IDENTITY FULL;
SELECT egress_add_stream('l1', 'public.orders_view', 'LOG_BASED', 'local');
SELECT egress_add_stream('l2', 'public.nokey', 'LOG_BASED', 'local');
SELECT egress_add_stream('l3', 'public.parted_nokey', 'LOG_BASED', 'local');
SELECT egress_add_stream('l4', 'public.orders', 'log_based', 'local', options => '{"debug_lsn": true, "lag_policy": "pause"}');
SELECT egress_add_stream('l5', 'public.fullident', 'LOG_BASED', 'local');
SELECT egress_add_stream('l6', 'public.parted', 'LOG_BASED', 'local');
SELECT name, method, state, confirmed_lsn, lag_bytes, slot_name FROM egress_streams WHERE method = 'LOG_BASED' ORDER BY name;
SELECT egress_add_destination('slotted', 'file:///tmp/x', '{"slot_name": "Not A Slot"}');
SELECT egress_add_destination('slotted', 'file:///tmp/x', '{"slot_name": 5}');
SELECT egress_add_destination('slotted', 'file:///tmp/x', '{"drop_adopted_slot": "yes"}');
SELECT egress_add_destination('slotted', 'file:///tmp/x', '{"slot_name": "tap_slot", "drop_adopted_slot": true}');
SELECT egress_remove_stream('l4');
SELECT egress_remove_stream('l5');
SELECT egress_remove_stream('l6');

-- pause, resume, resync
SELECT egress_pause_stream('orders');
SELECT name, state FROM egress_streams WHERE name = 'orders';
SELECT egress_resume_stream('orders');
SELECT name, state FROM egress_streams WHERE name = 'orders';
UPDATE egress.stream_state SET state = 'error', resync = false, last_error = 'boom'
 WHERE stream_id = (SELECT id FROM egress.stream WHERE name = 'orders');
SELECT egress_resume_stream('orders');
SELECT s.name, st.state, st.resync, st.last_error FROM egress.stream s JOIN egress.stream_state st ON st.stream_id = s.id WHERE s.name = 'orders';
UPDATE egress.stream_state SET state = 'synced', resync = false
 WHERE stream_id = (SELECT id FROM egress.stream WHERE name = 'orders');
SELECT egress_resync_stream('orders');
SELECT s.name, st.state, st.resync FROM egress.stream s JOIN egress.stream_state st ON st.stream_id = s.id WHERE s.name = 'orders';
SELECT egress_pause_stream('nope');
SELECT egress_resume_stream('nope');
SELECT egress_resync_stream('nope');
SELECT egress_remove_stream('nope');
SELECT egress_pause_stream(NULL);

-- a failed call inside a transaction leaves nothing behind
BEGIN;
SELECT egress_add_stream('half', 'public.orders', 'FULL_TABLE', 'local');
SELECT egress_add_stream('half', 'public.orders', 'FULL_TABLE', 'local');
ROLLBACK;
SELECT count(*) AS half FROM egress.stream WHERE name = 'half';

-- privileges: a role needs EXECUTE, SELECT on the table, and file rights
CREATE ROLE egress_etl;
CREATE ROLE egress_other;
CREATE TABLE public.secret (id int PRIMARY KEY);
SET ROLE egress_etl;
SELECT egress_add_stream('x', 'public.orders', 'FULL_TABLE', 'local');
SELECT * FROM egress_streams;
SELECT * FROM egress.stream;
RESET ROLE;
GRANT EXECUTE ON FUNCTION egress_add_stream(text, regclass, text, text, text, jsonb),
	egress_add_destination(text, text, jsonb), egress_pause_stream(text),
	egress_remove_destination(text, boolean) TO egress_etl;
GRANT SELECT ON egress_streams TO egress_etl;
GRANT EXECUTE ON FUNCTION egress_stream_activity(), egress_stream_progress() TO egress_etl;
GRANT SELECT ON public.orders TO egress_etl;
SET ROLE egress_etl;
SELECT egress_add_destination('etl_files', 'file:///tmp/etl');
SELECT egress_add_stream('x', 'public.secret', 'FULL_TABLE', 'local');
SELECT egress_add_stream('x', 'public.orders', 'FULL_TABLE', 'local');
SELECT egress_pause_stream('orders');
SELECT egress_remove_destination('local');
-- S3 destinations use the server's credentials: the right of egress_export()
SELECT egress_add_destination('etl_lake', 's3://lake/etl');
RESET ROLE;
GRANT EXECUTE ON FUNCTION egress_export(text, text, text) TO egress_etl;
SET ROLE egress_etl;
SELECT egress_add_destination('etl_lake', 's3://lake/etl');
SELECT egress_remove_destination('etl_lake');
RESET ROLE;
GRANT pg_write_server_files TO egress_etl;
SET ROLE egress_etl;
SELECT egress_add_destination('etl_files', 'file:///tmp/etl');
SELECT egress_add_stream('etl_orders', 'public.orders', 'FULL_TABLE', 'etl_files');
SELECT name, owner FROM egress_streams;
RESET ROLE;
SELECT name, owner = current_user::regrole AS mine FROM egress_streams ORDER BY name;
SELECT name, owner = current_user::regrole AS mine FROM egress.destination ORDER BY name;
-- another role without the file right cannot use the destination
GRANT EXECUTE ON FUNCTION egress_add_stream(text, regclass, text, text, text, jsonb) TO egress_other;
GRANT SELECT ON public.orders TO egress_other;
GRANT egress_etl TO egress_other;
REVOKE pg_write_server_files FROM egress_etl;
SET ROLE egress_other;
SELECT egress_add_stream('other_orders', 'public.orders', 'FULL_TABLE', 'etl_files');
RESET ROLE;

-- removing
SELECT egress_remove_destination('local');
SELECT egress_remove_destination('nope');
SELECT egress_remove_stream('orders_view');
SELECT egress_remove_destination('local', cascade => true);
SELECT name FROM egress.destination ORDER BY name;
SELECT name FROM egress.stream ORDER BY name;
SELECT egress_remove_stream('etl_orders');
SELECT egress_remove_destination('slotted');
SELECT egress_remove_destination('etl_files');
SELECT count(*) FROM egress.stream_state;

-- previews use the one type map
SELECT egress_preview_schema('public.orders');
INSERT INTO public.orders VALUES (1, 'first "quoted"');
SELECT egress_preview_record(o) FROM public.orders o;

-- Who may do what (issue 10).  Roles with the administration functions and
-- the file right, one with REPLICATION, one with BYPASSRLS, one that reads
-- everything (pg_read_all_data).
CREATE ROLE egress_t1;
CREATE ROLE egress_rep REPLICATION;
CREATE ROLE egress_byp BYPASSRLS;
CREATE ROLE egress_reader;
GRANT pg_read_all_data TO egress_reader;
GRANT EXECUTE ON FUNCTION egress_add_destination(text, text, jsonb),
	egress_add_stream(text, regclass, text, text, text, jsonb), egress_sync_now(text),
	egress_remove_destination(text, boolean), egress_remove_stream(text),
	egress_stream_activity(), egress_stream_progress() TO egress_t1, egress_rep, egress_byp;
GRANT SELECT ON egress_streams TO egress_t1, egress_rep, egress_byp;
GRANT pg_write_server_files TO egress_t1, egress_rep, egress_byp;

-- naming a replication slot (adopting another tool's) and dropping an
-- adopted slot need REPLICATION; ca_file and verify => false a superuser
SET ROLE egress_t1;
SELECT egress_add_destination('t1_slot', 'file:///tmp/t1', '{"slot_name": "tap_slot"}');
SELECT egress_add_destination('t1_slot', 'file:///tmp/t1', '{"drop_adopted_slot": true}');
SELECT egress_add_destination('t1_web', 'https://example.com/', '{"ca_file": "/etc/ssl/private/server.key"}');
SELECT egress_add_destination('t1_web', 'https://example.com/', '{"verify": false}');
SELECT egress_add_destination('t1_files', 'file:///tmp/t1', '{"drop_adopted_slot": false}');
RESET ROLE;
SET ROLE egress_rep;
SELECT egress_add_destination('rep_files', 'file:///tmp/rep', '{"slot_name": "tap_slot", "drop_adopted_slot": true}');
SELECT egress_add_destination('rep_web', 'https://example.com/', '{"verify": false}');
RESET ROLE;
SELECT egress_add_destination('su_web', 'https://example.com/',
	'{"verify": false, "ca_file": "/etc/ssl/certs/ca-certificates.crt", "headers": {"Authorization": "Bearer t0ken-XYZ"}}');
SELECT name, owner, options->'slot_name' AS slot_name FROM egress.destination
 WHERE name IN ('t1_files', 'rep_files', 'su_web') ORDER BY name;

-- LOG_BASED streams of tables with row-level security: refused unless the
-- policies would not apply to the stream's owner (changes come from the WAL)
CREATE TABLE public.tenant_rows (id int PRIMARY KEY, tenant name NOT NULL);
ALTER TABLE public.tenant_rows ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON public.tenant_rows USING (tenant = current_user);
GRANT SELECT ON public.tenant_rows TO egress_t1, egress_byp;
GRANT SELECT ON public.orders TO egress_byp;
CREATE TABLE public.t1_owned (id int PRIMARY KEY, tenant name NOT NULL);
ALTER TABLE public.t1_owned OWNER TO egress_t1;
ALTER TABLE public.t1_owned ENABLE ROW LEVEL SECURITY;
CREATE TABLE public.tenant_parted (id int PRIMARY KEY, tenant name NOT NULL) PARTITION BY RANGE (id);
CREATE TABLE public.tenant_parted_1 PARTITION OF public.tenant_parted FOR VALUES FROM (0) TO (100);
ALTER TABLE public.tenant_parted ENABLE ROW LEVEL SECURITY;
GRANT SELECT ON public.tenant_parted, public.tenant_parted_1 TO egress_t1;
SET ROLE egress_t1;
SELECT egress_add_stream('t1_rls', 'public.tenant_rows', 'LOG_BASED', 't1_files');
SELECT egress_add_stream('t1_rls', 'public.tenant_rows', 'FULL_TABLE', 't1_files');
SELECT egress_add_stream('t1_owned', 'public.t1_owned', 'LOG_BASED', 't1_files');
-- through the parent its policies apply; a partition has its own (none)
SELECT egress_add_stream('t1_parted', 'public.tenant_parted', 'LOG_BASED', 't1_files');
SELECT egress_add_stream('t1_parted_1', 'public.tenant_parted_1', 'LOG_BASED', 't1_files');
RESET ROLE;
ALTER TABLE public.t1_owned FORCE ROW LEVEL SECURITY;
SET ROLE egress_t1;
SELECT egress_add_stream('t1_forced', 'public.t1_owned', 'LOG_BASED', 't1_files');
RESET ROLE;
SET ROLE egress_byp;
SELECT egress_add_destination('byp_files', 'file:///tmp/byp');
SELECT egress_add_stream('byp_rls', 'public.tenant_rows', 'LOG_BASED', 'byp_files');
RESET ROLE;
SELECT egress_add_stream('su_rls', 'public.tenant_rows', 'LOG_BASED', 'su_web');
SELECT name, method, owner FROM egress_streams WHERE name IN ('t1_rls', 't1_owned', 't1_parted_1', 'byp_rls', 'su_rls') ORDER BY name;

-- the owner's privileges: SELECT on the table and USAGE on its schema
CREATE SCHEMA hidden;
CREATE TABLE hidden.t (id int PRIMARY KEY);
GRANT SELECT ON hidden.t TO egress_t1;
SELECT 'hidden.t'::regclass::oid AS hidden_t \gset
SET ROLE egress_t1;
SELECT egress_add_stream('t1_hidden', :hidden_t::oid::regclass, 'FULL_TABLE', 't1_files');
RESET ROLE;

-- secrets: destinations are hidden even from pg_read_all_data; the live
-- figures of every stream are not PUBLIC's
SET ROLE egress_reader;
SELECT count(*) AS destinations_seen FROM egress.destination;
SELECT count(*) > 0 AS streams_seen FROM egress.stream;
SELECT egress_stream_activity();
SELECT egress_stream_progress();
SELECT count(*) FROM egress_streams;
RESET ROLE;
SELECT c.relname, c.relrowsecurity FROM pg_class c
 WHERE c.relnamespace = 'egress'::regnamespace AND c.relkind = 'r' ORDER BY 1;
SET ROLE egress_t1;
SELECT name FROM egress_streams ORDER BY name;
RESET ROLE;

-- other roles' streams and destinations: nothing said about them
GRANT egress_t1 TO egress_byp;
SET ROLE egress_byp;
SELECT egress_add_stream('byp_on_t1', 'public.orders', 'FULL_TABLE', 't1_files');
RESET ROLE;
SET ROLE egress_rep;
SELECT egress_sync_now('t1_owned');
SELECT egress_sync_now('no_such_stream');
SELECT egress_remove_destination('t1_files');
RESET ROLE;
SET ROLE egress_t1;
SELECT egress_sync_now('t1_owned');
SELECT egress_remove_destination('t1_files');
SELECT egress_remove_destination('t1_files', cascade => true);
RESET ROLE;

-- previews: only what the caller may read
CREATE TABLE public.cols (a int, b int, hush text);
GRANT SELECT (a, b) ON public.cols TO egress_t1;
SET ROLE egress_t1;
SELECT egress_preview_schema('public.cols');
SELECT egress_preview_schema('public.secret');
RESET ROLE;

SELECT egress_remove_destination('t1_files', cascade => true);
SELECT egress_remove_destination('rep_files');
SELECT egress_remove_destination('byp_files', cascade => true);
SELECT egress_remove_destination('su_web', cascade => true);
DROP TABLE public.tenant_rows, public.tenant_parted, public.cols, hidden.t;
DROP SCHEMA hidden;
DROP OWNED BY egress_t1, egress_rep, egress_byp, egress_reader;
DROP ROLE egress_t1, egress_rep, egress_byp, egress_reader;

DROP TABLE public.secret;
DROP OWNED BY egress_etl, egress_other;
DROP ROLE egress_etl;
DROP ROLE egress_other;
DROP EXTENSION pg_egress;
SELECT count(*) FROM pg_namespace WHERE nspname = 'egress';
