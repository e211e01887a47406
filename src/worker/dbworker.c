/*-------------------------------------------------------------------------
 * dbworker.c
 *	  The database worker: reads the egress catalog of pg_egress.database
 *	  and keeps one sync worker running per stream that needs a sync.
 *
 * It sleeps on its latch; a committed egress_* call, a sync worker
 * starting or stopping (bgw_notify_pid) or the naptime wakes it.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "catalog/catalog.h"
#include "catalog/publication.h"
#include "catalog/version.h"
#include "decode/slot.h"
#include "pg_egress.h"

/* A worker this process started: a FULL_TABLE sync or a destination's CDC. */
typedef struct RunningSync
{
	int32		stream_id;		/* sync workers */
	char		dest[NAMEDATALEN];	/* CDC workers ("" for sync workers) */
	BackgroundWorkerHandle *handle;
} RunningSync;

static RunningSync *running;
static int	nrunning = 0;
static bool register_warned = false;

/* What the catalog says a stream wants. */
typedef struct StreamWant
{
	int32		id;
	bool		enabled;
	bool		wants_sync;
	bool		resync;
	bool		incremental;	/* runs egress_incremental_main */
} StreamWant;

/* ms until the next INCREMENTAL run is due (-1: none), from read_catalog */
static long next_run_ms = -1;

static void
dbworker_detach(int code, Datum arg)
{
	LWLockAcquire(egress_shared->lock, LW_EXCLUSIVE);
	if (egress_shared->dbworker == MyProc)
		egress_shared->dbworker = NULL;
	LWLockRelease(egress_shared->lock);
}

/* Destinations whose LOG_BASED streams need a CDC worker. */
static List *cdc_wanted = NIL;

/* Slots pg_egress should drop: (destination or NULL, slot name) */
static List *slots_to_drop = NIL;

/* Slots of destinations, for the WAL limit: (destination, slot, "t" if droppable) */
static List *guarded_slots = NIL;

/*
 * What DROP EXTENSION pg_egress leaves behind: the publications
 * pg_egress_<destination> (made by egress_add_destination, after CREATE
 * EXTENSION, so not members of the extension) and the slots pg_egress made.
 * Nothing drops them with the extension, and a slot left over holds WAL
 * forever; a publication left over keeps its tables published (their
 * UPDATE and DELETE fail once one loses its replica identity) and makes
 * egress_add_destination refuse the destination's name.  So the database
 * worker remembers, at every round while the extension exists, the slots
 * its destinations own and the publications of its pgoutput destinations
 * (known_*, and the extension's OID); once that extension is gone (dropped,
 * or dropped and created anew), those it remembered are dropped (leftover_*),
 * except names the catalog of a new extension uses again.  A slot still in
 * use (a CDC worker exiting) is tried again at the next round.  Remembered
 * in memory only: a server restart between DROP EXTENSION and the next round
 * forgets them.
 */
static Oid	known_extension = InvalidOid;
static List *known_slots = NIL;
static List *known_publications = NIL;
static List *leftover_slots = NIL;
static List *leftover_publications = NIL;

static void
read_cdc_catalog(void)
{
	int			n;
	MemoryContext oldcxt;

	list_free_deep(cdc_wanted);
	cdc_wanted = NIL;
	list_free_deep(slots_to_drop);
	slots_to_drop = NIL;
	list_free_deep(guarded_slots);
	guarded_slots = NIL;

	n = egress_catalog_exec("SELECT d.name, d.slot_name, "
							"d.slot_owned OR coalesce((d.options->>'drop_adopted_slot')::pg_catalog.bool, false) "
							"FROM egress.destination d WHERE d.slot_name IS NOT NULL",
							0, NULL, NULL, NULL, true);
	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	for (int i = 0; i < n; i++)
		guarded_slots = lappend(guarded_slots,
								list_make3(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1),
										   SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2),
										   SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3)));
	MemoryContextSwitchTo(oldcxt);

	n = egress_catalog_exec("SELECT DISTINCT s.destination FROM egress.stream s "
							"JOIN egress.stream_state st ON st.stream_id = s.id "
							"WHERE s.method = 'LOG_BASED' AND s.enabled AND st.state <> 'error' "
							"ORDER BY 1",
							0, NULL, NULL, NULL, true);
	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	for (int i = 0; i < n; i++)
		cdc_wanted = lappend(cdc_wanted,
							 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
	MemoryContextSwitchTo(oldcxt);

	/*
	 * Slots of destinations without LOG_BASED streams, if pg_egress made
	 * them (or is asked to drop adopted ones), and slots of removed
	 * destinations.
	 */
	n = egress_catalog_exec("SELECT d.name, d.slot_name FROM egress.destination d "
							"WHERE d.slot_name IS NOT NULL "
							"AND (d.slot_owned OR coalesce((d.options->>'drop_adopted_slot')::boolean, false)) "
							"AND NOT EXISTS (SELECT 1 FROM egress.stream s WHERE s.destination = d.name "
							"AND s.method = 'LOG_BASED') "
							"UNION ALL SELECT NULL, slot_name FROM egress.dropped_slot",
							0, NULL, NULL, NULL, true);
	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	for (int i = 0; i < n; i++)
		slots_to_drop = lappend(slots_to_drop,
								list_make2(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1),
										   SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2)));
	MemoryContextSwitchTo(oldcxt);
}

/* A list of names (char *) in TopMemoryContext from column 1 of the result. */
static List *
names_of_result(int n)
{
	List	   *result = NIL;
	MemoryContext oldcxt = MemoryContextSwitchTo(TopMemoryContext);

	for (int i = 0; i < n; i++)
		result = lappend(result, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
	MemoryContextSwitchTo(oldcxt);
	return result;
}

/* names minus those in used (freed), in place */
static List *
forget_names_in_use(List *names, List *used)
{
	ListCell   *lc;

	foreach(lc, names)
	{
		ListCell   *uc;

		foreach(uc, used)
			if (strcmp((char *) lfirst(lc), (char *) lfirst(uc)) == 0)
			{
				pfree(lfirst(lc));
				names = foreach_delete_current(names, lc);
				break;
			}
	}
	return names;
}

/*
 * Remember what the extension (extoid, InvalidOid when absent) owns, and
 * when the one remembered before is gone, what it left behind.  Inside the
 * catalog transaction (egress_catalog_enter() when extoid is valid).
 */
static void
track_extension_objects(Oid extoid)
{
	ListCell   *lc;

	if (OidIsValid(known_extension) && known_extension != extoid)
	{
		/* they outlive the transaction */
		MemoryContext oldcxt = MemoryContextSwitchTo(TopMemoryContext);

		leftover_slots = list_concat(leftover_slots, known_slots);
		leftover_publications = list_concat(leftover_publications, known_publications);
		MemoryContextSwitchTo(oldcxt);
		list_free(known_slots);
		list_free(known_publications);
		known_slots = NIL;
		known_publications = NIL;
		known_extension = InvalidOid;
	}
	if (!OidIsValid(extoid))
		return;

	list_free_deep(known_slots);
	list_free_deep(known_publications);
	known_slots = names_of_result(egress_catalog_exec("SELECT slot_name FROM egress.destination "
													  "WHERE slot_name IS NOT NULL AND slot_owned "
													  "UNION SELECT slot_name FROM egress.dropped_slot",
													  0, NULL, NULL, NULL, true));
	known_publications = names_of_result(egress_catalog_exec("SELECT name FROM egress.destination "
															 "WHERE coalesce(options->>'decoder', 'pgoutput') "
															 "OPERATOR(pg_catalog.=) 'pgoutput'",
															 0, NULL, NULL, NULL, true));
	foreach(lc, known_publications)
	{
		char	   *dest = lfirst(lc);

		lfirst(lc) = MemoryContextStrdup(TopMemoryContext, egress_publication_name(dest));
		pfree(dest);
	}
	known_extension = extoid;
	/* the new extension's destinations use them again: not leftovers */
	leftover_slots = forget_names_in_use(leftover_slots, known_slots);
	leftover_publications = forget_names_in_use(leftover_publications, known_publications);
}

/*
 * Drop what a dropped extension left behind (see known_extension).  A
 * publication only if it is still the bootstrap superuser's (pg_egress made
 * it so); a slot only if it is still a pgoutput or wal2json slot of this
 * database and nobody holds it.
 */
static void
drop_extension_leftovers(void)
{
	ListCell   *lc;

	foreach(lc, leftover_publications)
	{
		char	   *pubname = lfirst(lc);
		Oid			argtypes[2] = {TEXTOID, OIDOID};
		Datum		values[2];
		int			nestlevel;
		bool		dropped = false;

		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		nestlevel = NewGUCNestLevel();
		egress_pin_search_path();
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		values[0] = CStringGetTextDatum(pubname);
		values[1] = ObjectIdGetDatum(BOOTSTRAP_SUPERUSERID);
		if (SPI_execute_with_args("SELECT 1 FROM pg_catalog.pg_publication "
								  "WHERE pubname OPERATOR(pg_catalog.=) $1::pg_catalog.name "
								  "AND pubowner OPERATOR(pg_catalog.=) $2",
								  2, argtypes, values, NULL, false, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
		{
			if (SPI_execute(psprintf("DROP PUBLICATION %s", quote_identifier(pubname)),
							false, 0) != SPI_OK_UTILITY)
				elog(ERROR, "could not drop publication \"%s\"", pubname);
			dropped = true;
		}
		SPI_finish();
		AtEOXact_GUC(true, nestlevel);
		PopActiveSnapshot();
		CommitTransactionCommand();
		if (dropped)
			ereport(LOG,
					(errmsg("pg_egress dropped publication \"%s\": extension pg_egress was dropped",
							pubname)));
		pfree(pubname);
		leftover_publications = foreach_delete_current(leftover_publications, lc);
	}

	foreach(lc, leftover_slots)
	{
		char	   *slot = lfirst(lc);
		EgressSlotDropResult res = egress_slot_drop(slot);

		if (res == EGRESS_SLOT_IN_USE)
			continue;			/* its CDC worker is exiting: next round */
		if (res == EGRESS_SLOT_DROPPED)
			ereport(LOG,
					(errmsg("pg_egress dropped replication slot \"%s\": extension pg_egress was dropped",
							slot)));
		pfree(slot);
		leftover_slots = foreach_delete_current(leftover_slots, lc);
	}
}

/*
 * Streams of destinations with the error_retry_interval option that have
 * been in state error for that long are resumed as egress_resume_stream()
 * would.  Checked at every round, so at least every pg_egress.naptime.
 */
static bool
retry_failed_streams(void)
{
	if (egress_catalog_exec("UPDATE egress.stream_state st SET state = 'pending', updated_at = now() "
							"FROM egress.stream s JOIN egress.destination d ON d.name = s.destination "
							"WHERE st.stream_id = s.id AND st.state = 'error' AND s.enabled "
							"AND d.options ? 'error_retry_interval' "
							"AND st.last_error_at + (d.options->>'error_retry_interval')::interval <= now()",
							0, NULL, NULL, NULL, false) > 0)
	{
		ereport(LOG,
				(errmsg("pg_egress resumed " UINT64_FORMAT " streams in state error after their destination's error_retry_interval",
						(uint64) SPI_processed)));
		return true;
	}
	return false;
}

/*
 * FULL_TABLE streams with an "interval" option run again that long after
 * their last sync finished: the stream is set pending, so that its sync
 * worker claims it as egress_sync_now() would have it, with a new version.
 * The interval was validated when the stream was added (as INCREMENTAL's).
 */
static void
schedule_full_table_runs(void)
{
	if (egress_catalog_exec("UPDATE egress.stream_state st SET state = 'pending', "
							"updated_at = pg_catalog.now() "
							"FROM egress.stream s "
							"WHERE st.stream_id OPERATOR(pg_catalog.=) s.id "
							"AND s.method OPERATOR(pg_catalog.=) 'FULL_TABLE' AND s.enabled "
							"AND st.state OPERATOR(pg_catalog.=) 'synced' AND NOT st.resync "
							"AND s.options OPERATOR(pg_catalog.?) 'interval' "
							"AND st.sync_finished_at OPERATOR(pg_catalog.+) "
							"CASE pg_catalog.jsonb_typeof(s.options OPERATOR(pg_catalog.->) 'interval') "
							"WHEN 'number' THEN pg_catalog.make_interval(secs => (s.options OPERATOR(pg_catalog.->>) 'interval')::pg_catalog.float8) "
							"ELSE (s.options OPERATOR(pg_catalog.->>) 'interval')::pg_catalog.interval END "
							"OPERATOR(pg_catalog.<=) pg_catalog.now()",
							0, NULL, NULL, NULL, false) > 0)
		ereport(DEBUG1,
				(errmsg_internal("pg_egress: " UINT64_FORMAT " scheduled FULL_TABLE streams due",
								 (uint64) SPI_processed)));
}

/* Read the streams of the catalog; returns how many, in *wants. */
static int
read_catalog(StreamWant **wants)
{
	int			n = 0;
	EgressCatalogGuard guard;
	bool		retried = false;
	static int	catalog_version = 0;
	bool		version_moved = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "reading egress catalog");

	if (egress_extension_present())
	{
		char	   *sql;

		egress_catalog_enter(&guard);

		/*
		 * A catalog older than the library is served as its version did;
		 * said once.  After ALTER EXTENSION UPDATE the CDC workers start a
		 * new session, which reads the new catalog (cdc_config.c).
		 */
		{
			int			v = egress_catalog_version_check();

			version_moved = catalog_version != 0 && v != catalog_version;
			catalog_version = v;
		}
		track_extension_objects(get_extension_oid("pg_egress", true));
		retried = retry_failed_streams();
		schedule_full_table_runs();
		/*
		 * INCREMENTAL streams run when asked for (pending, resync) and
		 * every "interval" option (a number of seconds or an interval
		 * string; default pg_egress.naptime) after their last run;
		 * FULL_TABLE streams with an "interval" too (set pending above).
		 */
		sql = psprintf("WITH x AS (SELECT s.id, s.enabled, s.method, st.resync, st.state, "
					   "st.sync_finished_at + CASE jsonb_typeof(s.options->'interval') "
					   "WHEN 'number' THEN make_interval(secs => (s.options->>'interval')::float8) "
					   "WHEN 'string' THEN (s.options->>'interval')::interval "
					   "ELSE make_interval(secs => %d / 1000.0) END AS due, "
					   "s.options OPERATOR(pg_catalog.?) 'interval' AS has_interval "
					   "FROM egress.stream s JOIN egress.stream_state st "
					   "ON st.stream_id = s.id) "
					   "SELECT id, enabled, "
					   "CASE method WHEN 'FULL_TABLE' THEN "
					   "resync OR state IN ('pending', 'syncing') "
					   "WHEN 'INCREMENTAL' THEN resync OR state IN ('pending', 'syncing') OR "
					   "(state = 'synced' AND (due IS NULL OR due <= now())) "
					   "ELSE false END, "
					   "resync, method = 'INCREMENTAL', "
					   "CASE WHEN (method = 'INCREMENTAL' OR (method = 'FULL_TABLE' AND has_interval)) "
					   "AND enabled AND state = 'synced' AND NOT resync AND due > now() "
					   "THEN ceil(extract(epoch FROM due - now()) * 1000)::pg_catalog.int8 END "
					   "FROM x ORDER BY id",
					   egress_naptime_ms);
		n = egress_catalog_exec(sql, 0, NULL, NULL, NULL, true);
		next_run_ms = -1;
		*wants = MemoryContextAllocZero(TopMemoryContext, sizeof(StreamWant) * Max(n, 1));
		for (int i = 0; i < n; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;

			(*wants)[i].id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
			(*wants)[i].enabled = DatumGetBool(SPI_getbinval(tup, desc, 2, &isnull));
			(*wants)[i].wants_sync = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
			(*wants)[i].resync = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull));
			(*wants)[i].incremental = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
			{
				int64		due = DatumGetInt64(SPI_getbinval(tup, desc, 6, &isnull));

				if (!isnull && (next_run_ms < 0 || due < next_run_ms))
					next_run_ms = (long) Min(due, (int64) INT_MAX);
			}
		}
		read_cdc_catalog();
		egress_catalog_exit(&guard);
	}
	else
	{
		track_extension_objects(InvalidOid);
		*wants = MemoryContextAllocZero(TopMemoryContext, sizeof(StreamWant));
		list_free_deep(cdc_wanted);
		cdc_wanted = NIL;
		list_free_deep(slots_to_drop);
		slots_to_drop = NIL;
		list_free_deep(guarded_slots);
		guarded_slots = NIL;
	}

	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	/* after commit: running CDC workers re-read their configuration */
	if (retried || version_moved)
		pg_atomic_fetch_add_u32(&egress_shared->config_gen, 1);
	return n;
}

static StreamWant *
find_want(StreamWant *wants, int n, int32 id)
{
	for (int i = 0; i < n; i++)
		if (wants[i].id == id)
			return &wants[i];
	return NULL;
}

/*
 * Is a sync of this stream past its claim (its first transaction, which
 * clears the resync flag, has committed)?  Read before the catalog, so a
 * resync flag seen afterwards was set after the claim.
 */
static bool
claimed_before(int32 stream_id)
{
	bool		result = false;

	LWLockAcquire(egress_shared->lock, LW_SHARED);
	for (int i = 0; i < egress_shared->nslots; i++)
	{
		EgressWorkerSlot *slot = &egress_shared->slots[i];

		if (slot->in_use && slot->part == 0 && slot->stream_id == stream_id && slot->claimed)
			result = true;
	}
	LWLockRelease(egress_shared->lock);
	return result;
}

/*
 * The streams whose shared-memory entry a live sync or INCREMENTAL worker
 * holds (any database worker's).
 */
static List *
held_streams(void)
{
	List	   *result = NIL;
	List	   *ids = NIL;
	ListCell   *lc;

	LWLockAcquire(egress_shared->lock, LW_SHARED);
	for (int i = 0; i < egress_shared->nslots; i++)
	{
		EgressWorkerSlot *slot = &egress_shared->slots[i];

		if (slot->in_use && slot->part == 0 && slot->stream_id != 0 && slot->dest[0] == '\0')
			ids = lappend_int(ids, slot->stream_id);
	}
	LWLockRelease(egress_shared->lock);
	/* egress_stream_holder checks that the holder is alive */
	foreach(lc, ids)
		if (egress_stream_holder(lfirst_int(lc), NULL) != 0)
			result = lappend_int(result, lfirst_int(lc));
	list_free(ids);
	return result;
}

/*
 * Start a worker of ours in this database (a sync worker for stream_id, or
 * the CDC worker of dest) and remember it.  This worker restarts them as the
 * catalog says, so the postmaster never does.
 */
static bool
start_worker(const char *function, const char *type, int32 stream_id, const char *dest)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	MemoryContext oldcxt;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker.bgw_library_name, "pg_egress", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, function, BGW_MAXLEN);
	if (dest)
		snprintf(worker.bgw_name, BGW_MAXLEN, "%s for destination %s", type, dest);
	else
		snprintf(worker.bgw_name, BGW_MAXLEN, "%s of stream %d", type, stream_id);
	strlcpy(worker.bgw_type, type, BGW_MAXLEN);
	worker.bgw_main_arg = Int32GetDatum(stream_id);
	memcpy(worker.bgw_extra, &MyDatabaseId, sizeof(Oid));
	if (dest)
		strlcpy(worker.bgw_extra + sizeof(Oid), dest, BGW_EXTRALEN - sizeof(Oid));
	worker.bgw_notify_pid = MyProcPid;

	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		MemoryContextSwitchTo(oldcxt);
		if (!register_warned)
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("pg_egress could not start a background worker (%s)", type),
					 errhint("Raise max_worker_processes.")));
		register_warned = true;
		return false;
	}
	MemoryContextSwitchTo(oldcxt);
	register_warned = false;
	running[nrunning].stream_id = stream_id;
	strlcpy(running[nrunning].dest, dest ? dest : "", NAMEDATALEN);
	running[nrunning].handle = handle;
	nrunning++;
	return true;
}

static bool
start_sync(int32 stream_id)
{
	return start_worker("egress_sync_main", "pg_egress sync", stream_id, NULL);
}

static bool
start_incremental(int32 stream_id)
{
	return start_worker("egress_incremental_main", "pg_egress incremental", stream_id, NULL);
}

static bool
start_cdc(const char *dest)
{
	return start_worker("egress_cdc_main", "pg_egress cdc", 0, dest);
}

static bool
cdc_is_wanted(const char *dest)
{
	ListCell   *lc;

	foreach(lc, cdc_wanted)
		if (strcmp((char *) lfirst(lc), dest) == 0)
			return true;
	return false;
}

static bool
cdc_is_running(const char *dest)
{
	for (int j = 0; j < nrunning; j++)
		if (running[j].dest[0] != '\0' && strcmp(running[j].dest, dest) == 0)
			return true;
	/* one that an earlier database worker started */
	return egress_stream_holder(0, dest) != 0;
}

/* Drop the slots nobody needs any more (never one a CDC worker holds). */
static void
drop_unused_slots(void)
{
	ListCell   *lc;

	foreach(lc, slots_to_drop)
	{
		List	   *pair = lfirst(lc);
		char	   *dest = linitial(pair);
		char	   *slot = lsecond(pair);
		EgressCatalogGuard guard;
		Oid			argtypes[2] = {TEXTOID, TEXTOID};
		Datum		values[2];
		char		nulls[2] = "  ";
		EgressSlotDropResult res;

		if (dest && cdc_is_running(dest))
			continue;
		res = egress_slot_drop(slot);
		if (res == EGRESS_SLOT_IN_USE)
			continue;			/* in use: next time */
		if (res == EGRESS_SLOT_DROPPED)
			ereport(LOG,
					(errmsg("pg_egress dropped replication slot \"%s\"", slot)));
		else if (res == EGRESS_SLOT_NOT_OURS)
			ereport(WARNING,
					(errmsg("pg_egress did not drop replication slot \"%s\": it is not a slot of pg_egress",
							slot),
					 errdetail("It belongs to another database or uses another output plugin than pgoutput or wal2json; it is left alone.")));

		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		egress_catalog_enter(&guard);
		values[0] = dest ? CStringGetTextDatum(dest) : (Datum) 0;
		nulls[0] = dest ? ' ' : 'n';
		values[1] = CStringGetTextDatum(slot);
		egress_catalog_exec("UPDATE egress.destination SET slot_name = NULL, slot_owned = false "
							"WHERE name = $1 AND slot_name = $2",
							2, argtypes, values, nulls, false);
		egress_catalog_exec("DELETE FROM egress.dropped_slot WHERE slot_name = $2 AND $1 IS NULL",
							2, argtypes, values, nulls, false);
		egress_worker_catalog_end(&guard);
	}
}

/*
 * Stream workers that an earlier database worker started (this one has no
 * handle for them) whose stream was removed or paused meanwhile: stop them
 * as reconcile() stops its own.  Their shared-memory entries name them;
 * an entry is released when its process exits, so the pid is that worker.
 */
static void
stop_orphans(StreamWant *wants, int nwants)
{
	List	   *pids = NIL;
	ListCell   *lc;

	LWLockAcquire(egress_shared->lock, LW_SHARED);
	for (int i = 0; i < egress_shared->nslots; i++)
	{
		EgressWorkerSlot *slot = &egress_shared->slots[i];
		StreamWant *w;
		bool		ours = false;

		if (!slot->in_use || slot->part > 0 || slot->stream_id == 0 || slot->dest[0] != '\0')
			continue;
		for (int j = 0; j < nrunning; j++)
			if (running[j].dest[0] == '\0' && running[j].stream_id == slot->stream_id)
				ours = true;
		if (ours)
			continue;
		/* a CDC worker stops serving a removed stream by itself */
		if (slot->cdc_stream)
			continue;
		w = find_want(wants, nwants, slot->stream_id);
		if (w == NULL || !w->enabled)
			pids = lappend_int(pids, (int) slot->pid);
	}
	LWLockRelease(egress_shared->lock);

	foreach(lc, pids)
	{
		ereport(LOG,
				(errmsg("pg_egress stopping worker %d: its stream was removed or paused",
						lfirst_int(lc))));
		(void) kill((pid_t) lfirst_int(lc), SIGTERM);
	}
	list_free(pids);
}

/*
 * Mark the LOG_BASED streams of a destination for a new initial sync (those
 * in state error keep it, and are synced again when resumed), or, with
 * to_error, stop them (state error).  why goes to last_error.  Committed on
 * return; returns the number of streams changed.
 */
static int
mark_dest_streams(const char *dest, const char *why, bool to_error)
{
	EgressCatalogGuard guard;
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		values[2];
	int			n;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	egress_catalog_enter(&guard);
	values[0] = CStringGetTextDatum(dest);
	values[1] = CStringGetTextDatum(why);
	n = egress_catalog_exec(to_error ?
							"UPDATE egress.stream_state st SET state = 'error', "
							"last_error = $2, last_error_at = pg_catalog.now(), "
							"attempts = st.attempts OPERATOR(pg_catalog.+) 1, "
							"updated_at = pg_catalog.now() "
							"FROM egress.stream s WHERE s.id OPERATOR(pg_catalog.=) st.stream_id "
							"AND s.destination OPERATOR(pg_catalog.=) $1 "
							"AND s.method OPERATOR(pg_catalog.=) 'LOG_BASED' "
							"AND st.state OPERATOR(pg_catalog.<>) 'error'" :
							"UPDATE egress.stream_state st SET "
							"state = CASE WHEN st.state OPERATOR(pg_catalog.=) 'error' THEN 'error' ELSE 'pending' END, "
							"resync = true, last_error = $2, last_error_at = pg_catalog.now(), "
							"updated_at = pg_catalog.now() "
							"FROM egress.stream s WHERE s.id OPERATOR(pg_catalog.=) st.stream_id "
							"AND s.destination OPERATOR(pg_catalog.=) $1 "
							"AND s.method OPERATOR(pg_catalog.=) 'LOG_BASED'",
							2, argtypes, values, NULL, false);
	egress_worker_catalog_end(&guard);
	return n;
}

/*
 * The hard WAL limit (pg_egress.max_slot_wal) for slots no CDC worker
 * serves, e.g. when every stream of the destination stopped with an error:
 * the CDC worker applies it to the slot it holds, this to the others.  What
 * counts is the WAL the destination has not acknowledged (flush position
 * minus the slot's confirmed_flush_lsn), as in the CDC worker.  A slot
 * pg_egress made (or may drop: drop_adopted_slot) is dropped and the
 * destination's LOG_BASED streams are marked for a new initial sync; a
 * stream in state error keeps it and is synced again when resumed.
 *
 * The streams are marked (committed) BEFORE the slot is dropped: a crash
 * or error in between must never leave a stream that carries on from its
 * bookmark on a new slot that lacks the changes made meanwhile.
 */
static void
guard_idle_slots(void)
{
	ListCell   *lc;

	if (egress_max_slot_wal_mb <= 0)
		return;
	foreach(lc, guarded_slots)
	{
		List	   *t = lfirst(lc);
		char	   *dest = linitial(t);
		char	   *slot = lsecond(t);
		bool		droppable = strcmp((char *) lthird(t), "t") == 0;
		int64		lag;
		char	   *why;
		EgressSlotDropResult res;

		if (!droppable || cdc_is_running(dest))
			continue;
		lag = egress_slot_unacked_wal(slot, true);
		if (lag <= (int64) egress_max_slot_wal_mb * 1024 * 1024)
			continue;
		/* rounded up: never "2 MB, more than 2 MB" */
		why = psprintf("replication slot \"%s\" held " INT64_FORMAT " MB of WAL its destination has not acknowledged, more than pg_egress.max_slot_wal (%d MB)",
					   slot, (lag + 1024 * 1024 - 1) / (1024 * 1024), egress_max_slot_wal_mb);
		if (!egress_slot_is_ours(slot))
		{
			char	   *msg = psprintf("%s; it is not a slot of pg_egress (another database's, or another output plugin's) and was not dropped",
									   why);

			/* said once: when it stops streams */
			if (mark_dest_streams(dest, msg, true) > 0)
				ereport(WARNING,
						(errmsg("pg_egress did not drop replication slot \"%s\" of destination \"%s\": it is not a slot of pg_egress",
								slot, dest),
						 errdetail("%s.", why),
						 errhint("Its streams are stopped; drop or rename that slot, then resume them.")));
			pfree(msg);
			pfree(why);
			continue;
		}
		/* first the resync, then the drop (see above) */
		mark_dest_streams(dest, why, false);
		res = egress_slot_drop(slot);
		if (res == EGRESS_SLOT_IN_USE || res == EGRESS_SLOT_ABSENT)
		{
			/* taken or dropped meanwhile: the streams are synced again anyway */
			pfree(why);
			continue;
		}
		if (res == EGRESS_SLOT_NOT_OURS)
		{
			ereport(WARNING,
					(errmsg("pg_egress did not drop replication slot \"%s\" of destination \"%s\": it is not a slot of pg_egress",
							slot, dest),
					 errdetail("%s.", why)));
			mark_dest_streams(dest, psprintf("%s; it is not a slot of pg_egress and was not dropped", why), true);
			pfree(why);
			continue;
		}
		ereport(WARNING,
				(errmsg("pg_egress dropped replication slot \"%s\" of destination \"%s\": %s",
						slot, dest, why),
				 errdetail("Its streams are synced again (a new version); streams in state error when they are resumed.")));
		pfree(why);
	}
}

/* Make the running workers match what the catalog wants. */
static void
reconcile(void)
{
	StreamWant *wants = NULL;
	int			nwants;
	bool	   *claimed;
	List	   *held;
	int			nparts;

	/*
	 * Forget the workers that have exited, and note the streams that
	 * workers of an earlier database worker hold, BEFORE reading the
	 * catalog.  A sync worker commits its last transaction (state synced)
	 * before it exits: a snapshot taken after its exit was seen shows that
	 * commit.  Seen the other way round (catalog read first, exit seen
	 * after), a worker that finished in between looks like a stream still
	 * pending or syncing with no worker, and a second sync of it was
	 * started: FULL_TABLE streams synced twice.  A worker that exits after
	 * this point still counts as running in this round; its exit sets our
	 * latch (bgw_notify_pid), so the next round comes at once.
	 */
	for (int i = 0; i < nrunning;)
	{
		pid_t		pid;

		if (GetBackgroundWorkerPid(running[i].handle, &pid) == BGWH_STOPPED)
		{
			pfree(running[i].handle);
			running[i] = running[--nrunning];
			continue;
		}
		i++;
	}
	held = held_streams();
	claimed = palloc0(sizeof(bool) * Max(nrunning, 1));
	for (int i = 0; i < nrunning; i++)
		claimed[i] = running[i].dest[0] == '\0' && claimed_before(running[i].stream_id);
	nwants = read_catalog(&wants);

	/* stop the workers whose stream no longer wants them */
	for (int i = 0; i < nrunning;)
	{
		StreamWant *w = find_want(wants, nwants, running[i].stream_id);

		if (running[i].dest[0] != '\0')
		{
			/* a CDC worker exits by itself when its streams are gone */
			if (!cdc_is_wanted(running[i].dest))
				TerminateBackgroundWorker(running[i].handle);
			i++;
			continue;
		}

		/*
		 * Removed, paused, or resync asked for after this worker took its
		 * stream: stop it; a resync then starts anew.
		 */
		if (w == NULL || !w->enabled || (w->resync && claimed[i]))
			TerminateBackgroundWorker(running[i].handle);
		i++;
	}
	pfree(claimed);

	/* part workers of parallel syncs and exports count too */
	nparts = egress_count_parts();
	for (int i = 0; i < nwants && nrunning + nparts < egress_max_workers; i++)
	{
		bool		is_running = false;

		if (!wants[i].enabled || !wants[i].wants_sync)
			continue;
		for (int j = 0; j < nrunning; j++)
			if (running[j].dest[0] == '\0' && running[j].stream_id == wants[i].id)
				is_running = true;

		/*
		 * A worker an earlier database worker started still runs the
		 * stream: leave it be (its claim in shared memory would refuse a
		 * second one anyway).
		 */
		if (!is_running &&
			(list_member_int(held, wants[i].id) ||
			 egress_stream_holder(wants[i].id, NULL) != 0))
			is_running = true;
		if (!is_running &&
			!(wants[i].incremental ? start_incremental(wants[i].id) : start_sync(wants[i].id)))
			break;
	}
	stop_orphans(wants, nwants);
	pfree(wants);
	list_free(held);

	{
		ListCell   *lc;

		foreach(lc, cdc_wanted)
		{
			char	   *dest = lfirst(lc);

			if (nrunning + nparts >= egress_max_workers)
				break;
			if (!cdc_is_running(dest) && !start_cdc(dest))
				break;
		}
	}
	drop_unused_slots();
	guard_idle_slots();
	drop_extension_leftovers();
}

void
egress_dbworker_main(Datum main_arg)
{
	char		dbname[BGW_EXTRALEN];

	strlcpy(dbname, MyBgworkerEntry->bgw_extra, sizeof(dbname));

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(dbname, NULL, 0);

	running = MemoryContextAllocZero(TopMemoryContext,
									 sizeof(RunningSync) * egress_max_workers);

	LWLockAcquire(egress_shared->lock, LW_EXCLUSIVE);
	egress_shared->dbworker = MyProc;
	LWLockRelease(egress_shared->lock);
	before_shmem_exit(dbworker_detach, (Datum) 0);

	ereport(LOG,
			(errmsg("pg_egress worker started for database \"%s\"", dbname)));

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/* the launcher moves us when the setting changes */
		if (strcmp(egress_database, dbname) != 0)
			proc_exit(0);

		reconcile();

		/* wake for the next INCREMENTAL run that is due before the naptime */
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 next_run_ms > 0 ? Min(next_run_ms, (long) egress_naptime_ms) :
						 egress_naptime_ms,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
