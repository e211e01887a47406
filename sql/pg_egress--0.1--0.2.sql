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

-- When a batch of the stream was last acknowledged by its destination
-- (egress_streams.last_success_at), written with the bookmark.
ALTER TABLE egress.stream_state ADD COLUMN last_success_at timestamptz;

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
-- Like egress_stream_activity(): roles that read egress_streams are
-- granted both.
REVOKE ALL ON FUNCTION egress_stream_progress() FROM PUBLIC;
-- The view below calls it as the role that reads the view: a role that may
-- read egress_streams (or egress_stream_activity()) keeps reading the view.
DO $$
DECLARE
	r record;
BEGIN
	FOR r IN
		SELECT DISTINCT a.grantee::pg_catalog.regrole AS role
		  FROM pg_catalog.pg_class c, LATERAL pg_catalog.aclexplode(c.relacl) a
		 WHERE c.oid OPERATOR(pg_catalog.=) 'egress_streams'::pg_catalog.regclass
		   AND a.privilege_type OPERATOR(pg_catalog.=) 'SELECT'
		   AND a.grantee OPERATOR(pg_catalog.<>) c.relowner
		   AND a.grantee OPERATOR(pg_catalog.<>) 0
		UNION
		SELECT a.grantee::pg_catalog.regrole
		  FROM pg_catalog.pg_proc p, LATERAL pg_catalog.aclexplode(p.proacl) a
		 WHERE p.oid OPERATOR(pg_catalog.=) 'egress_stream_activity()'::pg_catalog.regprocedure
		   AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'
		   AND a.grantee OPERATOR(pg_catalog.<>) p.proowner
		   AND a.grantee OPERATOR(pg_catalog.<>) 0
	LOOP
		EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION egress_stream_progress() TO %s', r.role);
	END LOOP;
END
$$;

-- egress_streams with progress, lag and retries; new columns last, OR
-- REPLACE keeps the view's grants (docs/operations.md describes them).
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


-- == runtime and UX ==


-- == end ==
