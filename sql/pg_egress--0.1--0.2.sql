/* pg_egress 0.1 -> 0.2 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION pg_egress UPDATE TO '0.2'" to load this file. \quit

-- LOG_BASED chunked backfill progress (see pg_egress--0.2.sql)
ALTER TABLE egress.stream_state
	ADD COLUMN backfill_after text[],
	ADD COLUMN backfill_chunks bigint NOT NULL DEFAULT 0,
	ADD COLUMN backfill_rows bigint NOT NULL DEFAULT 0;

-- Destinations hold secrets: no role subject to row security reads them.
ALTER TABLE egress.destination ENABLE ROW LEVEL SECURITY;

-- egress_stream_activity() shows every role's streams.
REVOKE ALL ON FUNCTION egress_stream_activity() FROM PUBLIC;

-- The views: security_barrier (a caller's function in WHERE cannot see
-- other roles' rows) and a qualified membership test.  OR REPLACE keeps
-- their grants; new columns go last.
CREATE OR REPLACE VIEW egress_streams WITH (security_barrier) AS
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
	   st.backfill_rows
  FROM egress.stream s
  JOIN egress.stream_state st ON st.stream_id = s.id
  JOIN egress.destination d ON d.name = s.destination
  LEFT JOIN egress_stream_activity() a ON a.stream_id = s.id
 -- a role sees the streams of the roles it is a member of (superusers: all);
 -- qualified, since pg_catalog has no pg_has_role(regrole, text) and one in
 -- the installing search_path would otherwise match better
 WHERE pg_catalog.pg_has_role(s.owner, 'MEMBER');

CREATE OR REPLACE VIEW egress_stream_patterns WITH (security_barrier) AS
SELECT p.id, p.include, p.exclude, p.method, p.destination, p.options, p.owner, p.created_at
  FROM egress.stream_pattern p
 WHERE pg_catalog.pg_has_role(p.owner, 'MEMBER');

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

-- == alter, egress_destinations, pg_egress_user ==


-- == health checks (egress_check) ==


-- == progress and lag ==


-- == runtime and UX ==

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


-- == end ==
