/* pg_egress 0.2 */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION pg_egress" to load this file. \quit

CREATE SCHEMA egress;
REVOKE ALL ON SCHEMA egress FROM PUBLIC;

-- Where batches go.  Written only through egress_add_destination().
CREATE TABLE egress.destination (
	name		text PRIMARY KEY,
	kind		text NOT NULL CHECK (kind IN ('file', 'http', 's3', 'kinesis', 'postgres')),
	location	text NOT NULL,
	options		jsonb NOT NULL DEFAULT '{}',
	owner		regrole NOT NULL,
	-- the logical slot of its LOG_BASED streams, once one exists
	slot_name	name,
	slot_owned	boolean NOT NULL DEFAULT false,	-- created by pg_egress (dropped with the last stream)
	created_at	timestamptz NOT NULL DEFAULT now()
);

-- What is read and how.  relid is an oid, not a dependency: dropping the
-- table puts the stream into an error state instead of being refused.
CREATE TABLE egress.stream (
	id			serial PRIMARY KEY,
	name		text NOT NULL UNIQUE,
	relid		oid NOT NULL,
	relation	text NOT NULL,		-- qualified name when added, for messages
	method		text NOT NULL CHECK (method IN ('FULL_TABLE', 'INCREMENTAL', 'LOG_BASED')),
	replication_key text,
	destination	text NOT NULL REFERENCES egress.destination (name),
	format		text NOT NULL DEFAULT 'singer',
	options		jsonb NOT NULL DEFAULT '{}',
	owner		regrole NOT NULL,
	enabled		boolean NOT NULL DEFAULT true,
	created_at	timestamptz NOT NULL DEFAULT now()
);

-- Progress, written by the workers (the bookmark together with the figures).
CREATE TABLE egress.stream_state (
	stream_id	integer PRIMARY KEY REFERENCES egress.stream (id) ON DELETE CASCADE,
	state		text NOT NULL DEFAULT 'pending'
				CHECK (state IN ('pending', 'syncing', 'synced', 'streaming', 'error')),
	resync		boolean NOT NULL DEFAULT true,
	version		bigint,
	bookmark	jsonb,
	confirmed_lsn pg_lsn,		-- LOG_BASED: changes up to here are acknowledged
	rows_sent	bigint NOT NULL DEFAULT 0,
	bytes_sent	bigint NOT NULL DEFAULT 0,
	batches_sent bigint NOT NULL DEFAULT 0,
	attempts	integer NOT NULL DEFAULT 0,
	last_error	text,
	last_error_at timestamptz,
	sync_started_at timestamptz,
	sync_finished_at timestamptz,
	updated_at	timestamptz NOT NULL DEFAULT now(),
	-- LOG_BASED chunked backfill (chunk_rows > 0): the key of the last chunk
	-- the destination acknowledged (text of the key columns in key order;
	-- for a table without a key: next block and relfilenode), NULL = from
	-- the start, '{}' = given up for the one-transaction sync
	backfill_after text[],
	backfill_chunks bigint NOT NULL DEFAULT 0,
	backfill_rows bigint NOT NULL DEFAULT 0,
	-- when a batch of the stream was last acknowledged by its destination
	-- (egress_streams.last_success_at), written with the bookmark
	last_success_at timestamptz
);

-- Rules of egress_add_streams(..., options => '{"follow_new_tables": true}'):
-- tables created later that match get a stream (event trigger below).
CREATE TABLE egress.stream_pattern (
	id			serial PRIMARY KEY,
	include		text NOT NULL,
	exclude		text,
	method		text NOT NULL CHECK (method IN ('FULL_TABLE', 'LOG_BASED')),
	destination	text NOT NULL REFERENCES egress.destination (name) ON DELETE CASCADE,
	options		jsonb NOT NULL DEFAULT '{}',	-- of each stream added
	owner		regrole NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT now()
);

-- Slots of removed destinations, for the database worker to drop after
-- commit (dropping a slot cannot be rolled back).
CREATE TABLE egress.dropped_slot (
	slot_name	name PRIMARY KEY
);

REVOKE ALL ON ALL TABLES IN SCHEMA egress FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA egress FROM PUBLIC;

-- Destinations hold secrets (header tokens, credentials in URLs).  Row
-- security with no policy hides every row from every role that is subject
-- to it, pg_read_all_data included (it bypasses GRANTs, not policies); the
-- functions and the workers read the table as a superuser, the
-- egress_streams view as its owner (the superuser who created the
-- extension).
ALTER TABLE egress.destination ENABLE ROW LEVEL SECURITY;

-- Live figures of running workers, from shared memory.
CREATE FUNCTION egress_stream_activity(
	OUT stream_id integer,
	OUT pid integer,
	OUT phase text,
	OUT rows_sent bigint,
	OUT bytes_sent bigint,
	OUT batches_sent bigint,
	OUT started_at timestamptz,
	OUT lag_bytes bigint,
	OUT confirmed_lsn pg_lsn)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'egress_stream_activity'
LANGUAGE C STRICT VOLATILE;
-- It shows every role's streams.  A view checks EXECUTE on the functions it
-- calls as the role that reads the view: roles that read egress_streams are
-- granted both.
REVOKE ALL ON FUNCTION egress_stream_activity() FROM PUBLIC;

-- Live progress, lag and retries from shared memory: one row per stream a
-- worker serves (stream_id), one per destination a CDC worker serves
-- (destination: what its LOG_BASED streams share).
CREATE FUNCTION egress_stream_progress(
	OUT stream_id integer,
	OUT destination text,
	OUT pid integer,
	OUT rows_total_estimate bigint,
	OUT rows_done bigint,
	OUT progress double precision,
	OUT eta timestamptz,
	OUT lag_seconds double precision,
	OUT retries bigint,
	OUT last_success_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'egress_stream_progress'
LANGUAGE C STRICT VOLATILE;
-- It shows a role only the entries of roles it is a member of (superusers:
-- all), so it stays executable by PUBLIC: reading egress_streams needs no
-- grant of it.

CREATE FUNCTION egress_add_destination(
	name text,
	url text,
	options jsonb DEFAULT '{}')
RETURNS void
AS 'MODULE_PATHNAME', 'egress_add_destination'
LANGUAGE C VOLATILE;

CREATE FUNCTION egress_remove_destination(
	name text,
	cascade boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'egress_remove_destination'
LANGUAGE C VOLATILE;

CREATE FUNCTION egress_add_stream(
	name text,
	relation regclass,
	method text,
	destination text,
	replication_key text DEFAULT NULL,
	options jsonb DEFAULT '{}')
RETURNS void
AS 'MODULE_PATHNAME', 'egress_add_stream'
LANGUAGE C VOLATILE;

-- One stream per table matching psql-style patterns; returns their names.
CREATE FUNCTION egress_add_streams(
	include text,
	exclude text DEFAULT NULL,
	method text DEFAULT NULL,
	destination text DEFAULT NULL,
	options jsonb DEFAULT '{}')
RETURNS text[]
AS 'MODULE_PATHNAME', 'egress_add_streams'
LANGUAGE C VOLATILE;

CREATE FUNCTION egress_remove_stream_pattern(id integer)
RETURNS void
AS 'MODULE_PATHNAME', 'egress_remove_stream_pattern'
LANGUAGE C VOLATILE;

CREATE FUNCTION egress_remove_stream(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'egress_remove_stream'
LANGUAGE C VOLATILE;

CREATE FUNCTION egress_pause_stream(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'egress_pause_stream'
LANGUAGE C VOLATILE;

CREATE FUNCTION egress_resume_stream(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'egress_resume_stream'
LANGUAGE C VOLATILE;

CREATE FUNCTION egress_resync_stream(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'egress_resync_stream'
LANGUAGE C VOLATILE;

-- INCREMENTAL streams: a run now; FULL_TABLE streams: a resync.
CREATE FUNCTION egress_sync_now(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'egress_sync_now'
LANGUAGE C VOLATILE;

-- The Singer catalog (as "tap-postgres --discover" prints it) of what the
-- caller may read.
CREATE FUNCTION egress_discover(schemas text[] DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'egress_discover'
LANGUAGE C STABLE;

CREATE FUNCTION egress_preview_schema(relation regclass)
RETURNS json
AS 'MODULE_PATHNAME', 'egress_preview_schema'
LANGUAGE C STABLE STRICT PARALLEL SAFE;

CREATE FUNCTION egress_preview_record(value anyelement)
RETURNS json
AS 'MODULE_PATHNAME', 'egress_preview_record'
LANGUAGE C STABLE STRICT PARALLEL SAFE;

CREATE FUNCTION egress_preview_record_via_text(value anyelement) RETURNS json AS 'MODULE_PATHNAME', 'egress_preview_record_via_text' LANGUAGE C STABLE STRICT;

-- security_barrier: the membership qual is evaluated before any function
-- of the caller's WHERE clause, which could otherwise see (and leak) the
-- rows of other roles' streams: names, bookmarks (key values), options,
-- last_error.  Columns are only ever added last (upgrades use CREATE OR
-- REPLACE VIEW, which keeps the view's grants).
CREATE VIEW egress_streams WITH (security_barrier) AS
SELECT s.name,
	   s.relation,
	   s.method,
	   s.destination,
	   CASE WHEN NOT s.enabled THEN 'paused'
			WHEN a.phase IN ('reading', 'syncing') THEN 'syncing'
			-- the destination fails; the batch is being sent again
			WHEN a.phase = 'retrying' THEN 'retrying'
			WHEN st.state = 'syncing' AND a.pid IS NULL THEN 'pending'
			ELSE st.state END AS state,
	   st.version,
	   coalesce(a.rows_sent, st.rows_sent) AS rows_sent,
	   coalesce(a.bytes_sent, st.bytes_sent) AS bytes_sent,
	   coalesce(a.batches_sent, st.batches_sent) AS batches_sent,
	   st.bookmark,
	   coalesce(a.confirmed_lsn, st.confirmed_lsn) AS confirmed_lsn,
	   -- WAL the slot holds, also while no worker serves it
	   coalesce(a.lag_bytes,
				(SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_flush_lsn(), r.restart_lsn)::bigint
				   FROM pg_catalog.pg_replication_slots r
				  WHERE s.method = 'LOG_BASED' AND r.slot_name = d.slot_name)) AS lag_bytes,
	   d.slot_name,
	   st.last_error,
	   st.last_error_at,
	   coalesce(a.started_at, st.sync_started_at) AS sync_started_at,
	   st.sync_finished_at,
	   a.pid AS worker_pid,
	   s.owner,
	   s.options,
	   st.backfill_chunks,
	   st.backfill_rows,
	   -- the running sync, INCREMENTAL run or backfill
	   p.rows_total_estimate,
	   CASE WHEN p.progress IS NOT NULL THEN p.progress
			WHEN NOT s.enabled OR st.state = 'error' THEN NULL
			WHEN st.state IN ('synced', 'streaming') THEN 1
			ELSE 0 END::double precision AS progress,
	   p.eta,
	   -- LOG_BASED: now minus the commit time of the oldest change not yet
	   -- acknowledged (0: caught up; NULL: no CDC worker serves it)
	   CASE WHEN s.method = 'LOG_BASED' AND s.enabled THEN dp.lag_seconds END AS lag_seconds,
	   CASE WHEN s.method = 'LOG_BASED' THEN dp.retries ELSE p.retries END AS retries,
	   greatest(st.last_success_at, p.last_success_at,
				CASE WHEN s.method = 'LOG_BASED' AND s.enabled AND st.state = 'streaming'
					 THEN dp.last_success_at END) AS last_success_at
  FROM egress.stream s
  JOIN egress.stream_state st ON st.stream_id = s.id
  JOIN egress.destination d ON d.name = s.destination
  LEFT JOIN egress_stream_activity() a ON a.stream_id = s.id
  LEFT JOIN egress_stream_progress() p ON p.stream_id = s.id
  LEFT JOIN egress_stream_progress() dp
	ON dp.stream_id IS NULL AND dp.destination = s.destination
 -- a role sees the streams of the roles it is a member of (superusers: all);
 -- qualified, since pg_catalog has no pg_has_role(regrole, text) and one in
 -- the installing search_path would otherwise match better
 WHERE pg_catalog.pg_has_role(s.owner, 'MEMBER');

CREATE VIEW egress_stream_patterns WITH (security_barrier) AS
SELECT p.id, p.include, p.exclude, p.method, p.destination, p.options, p.owner, p.created_at
  FROM egress.stream_pattern p
 WHERE pg_catalog.pg_has_role(p.owner, 'MEMBER');

-- Administration is granted explicitly, by role.
REVOKE ALL ON FUNCTION
	egress_add_destination(text, text, jsonb),
	egress_remove_destination(text, boolean),
	egress_add_stream(text, regclass, text, text, text, jsonb),
	egress_remove_stream(text),
	egress_pause_stream(text),
	egress_resume_stream(text),
	egress_resync_stream(text),
	egress_sync_now(text),
	egress_add_streams(text, text, text, text, jsonb),
	egress_remove_stream_pattern(integer)
FROM PUBLIC;
REVOKE ALL ON egress_streams FROM PUBLIC;
REVOKE ALL ON egress_stream_patterns FROM PUBLIC;

-- Tables created later that match a stream pattern.  The function reads
-- the catalog as the bootstrap superuser: any role may create tables.
CREATE FUNCTION egress_follow_new_tables()
RETURNS event_trigger
AS 'MODULE_PATHNAME', 'egress_follow_new_tables'
LANGUAGE C;
REVOKE ALL ON FUNCTION egress_follow_new_tables() FROM PUBLIC;

CREATE EVENT TRIGGER egress_follow_new_tables ON ddl_command_end
	WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO')
	EXECUTE FUNCTION egress_follow_new_tables();

-- Exports: a query's result as COPY writes it, to a file or an S3 object,
-- run in the caller's backend with the caller's privileges.  Uses the
-- server's S3 credentials: granted explicitly, by role.
CREATE FUNCTION egress_export(
	query text,
	uri text,
	options text DEFAULT '',
	OUT rows_uploaded bigint,
	OUT files_uploaded bigint,
	OUT bytes_uploaded bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'egress_export'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION egress_export(text, text, text) FROM PUBLIC;

-- The same, read by "parallel" processes under one snapshot (docs/export.md);
-- a right of its own: it takes background workers.
CREATE FUNCTION egress_export(
	query text,
	uri text,
	options text,
	parallel integer,
	OUT rows_uploaded bigint,
	OUT files_uploaded bigint,
	OUT bytes_uploaded bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'egress_export_parallel'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION egress_export(text, text, text, integer) FROM PUBLIC;

-- Will the caller's streams work here?  One row per check; changes nothing.
-- A role checks its own destinations and streams (those of the roles whose
-- privileges it has); see docs/check.md.
CREATE FUNCTION egress_check(
	destination text DEFAULT NULL,
	stream text DEFAULT NULL,
	OUT "check" text,
	OUT ok boolean,
	OUT detail text,
	OUT hint text)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'egress_check'
LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION egress_check(text, text) FROM PUBLIC;

-- Change a destination in place: url NULL keeps the location; options is a
-- patch (keys given replace theirs, a JSON null removes one).
CREATE FUNCTION egress_alter_destination(
	name text,
	url text DEFAULT NULL,
	options jsonb DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'egress_alter_destination'
LANGUAGE C VOLATILE;

-- Change a stream's options (a patch, as above).
CREATE FUNCTION egress_alter_stream(
	name text,
	options jsonb)
RETURNS void
AS 'MODULE_PATHNAME', 'egress_alter_stream'
LANGUAGE C VOLATILE;

REVOKE ALL ON FUNCTION
	egress_alter_destination(text, text, jsonb),
	egress_alter_stream(text, jsonb)
FROM PUBLIC;

-- Destinations a role may use, without their secrets: header values, a
-- postgres destination's password and an HTTP URL's user info, path and
-- query are masked.  security_barrier:
-- the membership qual runs before any function of the caller's WHERE
-- clause, which could otherwise see (and leak) other roles' rows; the view
-- reads egress.destination (row security, no policy) as its owner.
CREATE VIEW egress_destinations WITH (security_barrier) AS
SELECT d.name,
	   d.kind,
	   -- an HTTP URL as error messages show it: no user info, path or query
	   -- (webhook tokens are often paths)
	   CASE WHEN d.kind OPERATOR(pg_catalog.<>) 'http' THEN d.location
			ELSE pg_catalog.regexp_replace(d.location, '^([A-Za-z]+://)([^/?#@]*@)?([^/?#]*).*$', '\1\3')
				 OPERATOR(pg_catalog.||)
				 CASE WHEN d.location OPERATOR(pg_catalog.~) '^[A-Za-z]+://[^/?#]*/?$' THEN '/' ELSE '/***' END
	   END AS location,
	   CASE WHEN d.options OPERATOR(pg_catalog.?) 'headers'
			THEN d.options OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('headers',
				 (SELECT coalesce(pg_catalog.jsonb_object_agg(h.key, '***'), '{}')
					FROM pg_catalog.jsonb_each(d.options OPERATOR(pg_catalog.->) 'headers') h))
			ELSE d.options END
	   -- a postgres destination's password
	   OPERATOR(pg_catalog.||)
	   CASE WHEN d.options OPERATOR(pg_catalog.?) 'password'
			THEN pg_catalog.jsonb_build_object('password', '***')
			ELSE '{}' END AS options,
	   d.owner,
	   d.slot_name,
	   d.slot_owned,
	   d.created_at
  FROM egress.destination d
 WHERE pg_catalog.pg_has_role(d.owner, 'MEMBER');
REVOKE ALL ON egress_destinations FROM PUBLIC;

-- Running egress_export() calls: one row per export, a parallel export's
-- parts summed under their leader (the backend that called it).  Built on
-- the COPY command each export runs (pg_stat_progress_copy): param1 bytes
-- and param3 rows COPY wrote, param11 the planner's row estimate of the
-- whole query, param12 the start (microseconds since 1970), param13 a part
-- worker's leader (0: the leader itself), param14 pg_egress's mark, so that
-- plain COPY commands are not shown.
CREATE VIEW egress_exports AS
WITH c AS (
	SELECT p.pid, p.param1 AS bytes_done, p.param3 AS rows_done,
		   p.param11 AS rows_total_estimate, p.param12 AS started_us,
		   p.param13 AS leader_pid
	  FROM pg_catalog.pg_stat_get_progress_info('COPY') p
	 WHERE p.param14 OPERATOR(pg_catalog.=) 1162301011
), e AS (
	SELECT l.pid,
		   pg_catalog.to_timestamp(l.started_us::pg_catalog.float8 OPERATOR(pg_catalog./) 1000000) AS started_at,
		   l.rows_total_estimate,
		   l.rows_done OPERATOR(pg_catalog.+)
		   coalesce((SELECT pg_catalog.sum(w.rows_done) FROM c w
					  WHERE w.leader_pid OPERATOR(pg_catalog.=) l.pid), 0) AS rows_done,
		   l.bytes_done OPERATOR(pg_catalog.+)
		   coalesce((SELECT pg_catalog.sum(w.bytes_done) FROM c w
					  WHERE w.leader_pid OPERATOR(pg_catalog.=) l.pid), 0) AS bytes_done
	  FROM c l
	 WHERE l.leader_pid OPERATOR(pg_catalog.=) 0
)
SELECT e.pid::pg_catalog.int4 AS pid,
	   e.started_at,
	   e.rows_total_estimate,
	   e.rows_done::pg_catalog.int8 AS rows_done,
	   e.bytes_done::pg_catalog.int8 AS bytes_done,
	   -- capped: the estimate is an estimate, and 1 means done
	   CASE WHEN e.rows_total_estimate OPERATOR(pg_catalog.>) 0
			THEN LEAST(e.rows_done::pg_catalog.float8 OPERATOR(pg_catalog./)
								  e.rows_total_estimate::pg_catalog.float8, 0.99::pg_catalog.float8)
	   END AS progress,
	   -- the rate so far for the rows left; unknown before the first rows
	   -- and once past the estimate
	   CASE WHEN e.rows_done OPERATOR(pg_catalog.>) 0
				 AND e.rows_done OPERATOR(pg_catalog.<) e.rows_total_estimate
			THEN pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+)
				 ((pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) e.started_at)
				  OPERATOR(pg_catalog.*)
				  ((e.rows_total_estimate OPERATOR(pg_catalog.-) e.rows_done)::pg_catalog.float8
				   OPERATOR(pg_catalog./) e.rows_done::pg_catalog.float8))
	   END AS eta
  FROM e;
-- To PUBLIC: it shows only what pg_stat_progress_copy shows the caller (its
-- own roles' backends; pg_read_all_stats: all), and nothing of the query.
GRANT SELECT ON egress_exports TO PUBLIC;

-- egress_user: what a pipeline owner needs, granted in one role.  It is a
-- cluster-wide role: made by the first CREATE EXTENSION (or update) in any
-- database, kept when the extension is dropped (docs/reference.md).  Not
-- "pg_egress_user": PostgreSQL reserves role names starting with "pg_".
DO $$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'egress_user') THEN
		CREATE ROLE egress_user NOLOGIN;
		COMMENT ON ROLE egress_user IS 'pg_egress: add, change and remove own destinations and streams; read egress_streams, egress_destinations';
	ELSIF EXISTS (SELECT FROM pg_catalog.pg_roles
				   WHERE rolname OPERATOR(pg_catalog.=) 'egress_user'
					 AND (rolsuper OR rolcanlogin OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls)) THEN
		-- not the role an earlier CREATE EXTENSION made: say so
		RAISE WARNING 'role "egress_user" exists and has attributes pg_egress does not give it'
			USING DETAIL = 'pg_egress grants its administration functions and views to this role, and so to every role that is a member of it.',
				  HINT = 'Check the role before using it; pg_egress creates it NOLOGIN.';
	ELSIF (SELECT pg_catalog.shobj_description(r.oid, 'pg_authid') FROM pg_catalog.pg_roles r
			WHERE r.rolname OPERATOR(pg_catalog.=) 'egress_user')
		  IS DISTINCT FROM 'pg_egress: add, change and remove own destinations and streams; read egress_streams, egress_destinations' THEN
		-- another application's role of the same name: its members would
		-- get pg_egress's administration functions without anyone asking
		RAISE WARNING 'role "egress_user" exists and was not created by pg_egress'
			USING DETAIL = 'pg_egress grants its administration functions and views to this role, and so to every role that is a member of it.',
				  HINT = 'Check the role and its members; pg_egress marks the role it creates with a comment.';
	END IF;
	-- nor one made a member of other roles (by whoever created it first):
	-- every role granted egress_user would inherit their privileges
	IF EXISTS (SELECT FROM pg_catalog.pg_auth_members m
				 JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) m.member
				WHERE r.rolname OPERATOR(pg_catalog.=) 'egress_user') THEN
		RAISE WARNING 'role "egress_user" exists and is a member of roles pg_egress does not grant it'
			USING DETAIL = 'Every role that is a member of egress_user has the privileges of those roles too.',
				  HINT = 'Check the role before using it: REVOKE those roles FROM egress_user.';
	END IF;
END
$$;
GRANT EXECUTE ON FUNCTION
	egress_add_destination(text, text, jsonb),
	egress_remove_destination(text, boolean),
	egress_alter_destination(text, text, jsonb),
	egress_add_stream(text, regclass, text, text, text, jsonb),
	egress_add_streams(text, text, text, text, jsonb),
	egress_alter_stream(text, jsonb),
	egress_remove_stream(text),
	egress_remove_stream_pattern(integer),
	egress_pause_stream(text),
	egress_resume_stream(text),
	egress_resync_stream(text),
	egress_sync_now(text),
	egress_check(text, text),
	egress_stream_activity()
TO egress_user;
GRANT SELECT ON egress_streams, egress_stream_patterns, egress_destinations TO egress_user;

-- The workers serve only the database named by pg_egress.database: in any
-- other database the streams would stay pending without a word.  Say so.
DO $egress_db$
DECLARE
	served text := pg_catalog.current_setting('pg_egress.database', true);
BEGIN
	IF served IS DISTINCT FROM pg_catalog.current_database() THEN
		RAISE WARNING 'pg_egress serves database "%", not "%": streams added here will not run', served, pg_catalog.current_database()
			USING DETAIL = 'The pg_egress workers serve the one database named by pg_egress.database; streams of other databases stay pending.',
				  HINT = pg_catalog.format('Set pg_egress.database = %L in postgresql.conf and reload the configuration, or use the extension in database "%s".',
										   pg_catalog.current_database(), served);
	END IF;
END
$egress_db$;

