/*-------------------------------------------------------------------------
 * sync.c
 *	  The FULL_TABLE sync worker: one worker reads one relation in one
 *	  snapshot and writes it as Singer batches to the stream's destination.
 *
 * Three transactions: claim the stream (announce the new version), read
 * and write the rows, record the bookmark.  The stream is recorded as
 * synced only after its last batch was acknowledged.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "storage/bufmgr.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "catalog/catalog.h"
#include "catalog/sqlfuncs.h"
#include "encode/singer.h"
#include "export/parallel.h"
#include "pg_egress.h"
#include "shmem.h"
#include "sink/sink.h"
#include "export/fast_sync.h"
#include "worker/snapshot.h"

/*
 * Lock the egress.stream_state row of a stream for the rest of the
 * transaction; false when the stream is gone (removed meanwhile).  Caller
 * is inside egress_catalog_enter().
 */
bool
egress_lock_stream_state(int32 stream_id)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(stream_id)};

	return egress_catalog_exec("SELECT 1 FROM egress.stream_state "
							   "WHERE stream_id OPERATOR(pg_catalog.=) $1 FOR UPDATE",
							   1, argtypes, values, NULL, false) > 0;
}

/*
 * Does the stream (its state row locked by the caller) still want a sync?
 * The database worker starts a sync worker from what its snapshot of the
 * catalog said; by the time the worker claims the stream, another sync of
 * it may have finished (state synced).  Syncing it again would send every
 * row twice: only a pending stream, one whose sync was interrupted
 * (syncing), or one asked to resync is synced.  The row is locked, so
 * this statement's snapshot sees the last committed state.
 */
static bool
sync_wanted(int32 stream_id)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(stream_id)};

	return egress_catalog_exec("SELECT 1 FROM egress.stream_state "
							   "WHERE stream_id OPERATOR(pg_catalog.=) $1 "
							   "AND (resync OR state OPERATOR(pg_catalog.=) ANY ('{pending,syncing}'::pg_catalog.text[]))",
							   1, argtypes, values, NULL, false) > 0;
}

/* First transaction: take the stream, announce a new version. */
static EgressStreamDef *
claim_stream(int32 stream_id, int64 *version)
{
	EgressCatalogGuard guard;
	EgressStreamDef *def;

	if (!egress_worker_catalog_begin(&guard, false))
		return NULL;

	/*
	 * Lock the stream's state first: a concurrent egress_remove_stream()
	 * then either committed before (no row: the worker ends quietly) or
	 * waits until this claim committed.
	 */
	if (!egress_lock_stream_state(stream_id))
	{
		egress_worker_catalog_end(&guard);
		return NULL;
	}
	def = egress_load_stream(stream_id, TopMemoryContext);
	if (def == NULL || !def->enabled || strcmp(def->method, "FULL_TABLE") != 0 ||
		!sync_wanted(stream_id))
	{
		egress_worker_catalog_end(&guard);
		return NULL;
	}

	*version = egress_next_version(def->prev_version);
	egress_mark_syncing(stream_id, *version);
	egress_worker_catalog_end(&guard);
	return def;
}

/* Second transaction: read the relation, write batches. */
static void
run_sync(EgressStreamDef *def, EgressSink *sink, EgressWorkerSlot *slot,
		 int64 version, EgressSnapshotResult *result)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "FULL_TABLE sync");

	egress_snapshot_write(def, sink, slot, version, false, InvalidXLogRecPtr, result);

	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Stream option "parallel": how many processes read the relation (the
 * sync worker itself and parallel - 1 part workers).  Checked when the
 * stream is added; checked again here, as pg_egress.max_workers may have
 * been lowered since.
 */
static int
stream_parallel(EgressStreamDef *def)
{
	int64		n;

	if (!egress_jsonb_get_int64(def->options, "parallel", &n) || n <= 1)
		return 1;
	/*
	 * Checked when the option was set; pg_egress.max_workers may have been
	 * lowered since.  The option is capped by it, as documented: the sync
	 * goes on with fewer parts rather than stopping the stream.
	 */
	if (n > egress_max_workers)
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("stream \"%s\" asks for parallel => " INT64_FORMAT ", more than pg_egress.max_workers (%d)",
						def->name, n, egress_max_workers),
				 errdetail("The sync is read in %d parts.", egress_max_workers),
				 errhint("Lower the stream's option \"parallel\", or raise pg_egress.max_workers.")));
		n = egress_max_workers;
	}
	return (int) n;
}

static void
check_parts(void *arg)
{
	egress_parallel_check((EgressParallel *) arg);
}

/* a part's rows so far, for the coordinator's progress (see sync_part) */
typedef struct PartProgress
{
	EgressPartStatus *status;
	EgressSnapshotResult *result;
} PartProgress;

static void
part_batch_done(void *arg)
{
	PartProgress *pp = (PartProgress *) arg;

	pp->status->rows = pp->result->rows;
}

/*
 * Second transaction of a parallel sync: the relation in nparts TID ranges,
 * all read in this transaction's snapshot (REPEATABLE READ, exported to
 * the part workers, kept open until they have all ended).  Batch 1 (SCHEMA,
 * ACTIVATE_VERSION) is acknowledged before any part starts; the final
 * ACTIVATE_VERSION and STATE follow only after every part's batches were
 * acknowledged.  A part that fails fails the sync: nothing is recorded.
 */
static void
run_sync_parallel(EgressStreamDef *def, EgressSink *sink, EgressWorkerSlot *slot,
				  int64 version, int nparts, EgressSnapshotResult *result)
{
	EgressSnapshotPart part;
	EgressSnapshotResult r;
	EgressParallel *volatile par = NULL;
	Relation	rel;
	BlockNumber nblocks;
	char		relkind;
	uint64		rows = 0,
				bytes = 0,
				batches = 0;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	XactIsoLevel = XACT_REPEATABLE_READ;
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "FULL_TABLE sync (parallel)");

	egress_check_relation_access(def);
	relkind = get_rel_relkind(def->relid);
	if (relkind != RELKIND_RELATION && relkind != RELKIND_MATVIEW)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("stream \"%s\" cannot be read in parallel: %s is not a table",
						def->name, def->relation),
				 errhint("Set the stream's option \"parallel\" to 1.")));

	/*
	 * The relation's size in this snapshot's time: every row visible in the
	 * snapshot lies below it (rows are written before their transaction
	 * commits).  The last part is open ended all the same.
	 */
	rel = table_open(def->relid, AccessShareLock);
	nblocks = RelationGetNumberOfBlocks(rel);
	table_close(rel, NoLock);
	/* the parts' rows count once they end; the coordinator's per batch */
	egress_progress_begin(slot, egress_relation_row_estimate(def->relid));

	memset(result, 0, sizeof(*result));
	memset(&part, 0, sizeof(part));
	part.mode = EGRESS_SNAP_OPEN;
	egress_snapshot_write_part(def, sink, slot, version, &part, &r);
	result->rows += r.rows;
	result->bytes += r.bytes;
	result->batches += r.batches;

	PG_TRY();
	{
		par = egress_parallel_begin(EGRESS_PARALLEL_STREAM, nparts, nblocks,
									def->id, version, def->owner, NULL);
		/* progress: this process's part (r, per batch) and the others' */
		memset(&r, 0, sizeof(r));
		egress_parallel_report_progress(par, slot, &r.rows);
		part.mode = EGRESS_SNAP_PART;
		part.part = 1;
		egress_part_range(nblocks, egress_parallel_nparts(par), 1, &part.lo, &part.hi);
		/* a part that fails fails the sync at once, not after this one */
		part.between_batches = check_parts;
		part.arg = par;
		egress_snapshot_write_part(def, sink, slot, version, &part, &r);
		part.between_batches = NULL;
		result->rows += r.rows;
		result->bytes += r.bytes;
		result->batches += r.batches;
		egress_set_phase(slot, "waiting parts");
		egress_parallel_wait(par, &rows, &bytes, &batches);
		egress_parallel_end(par);
	}
	PG_CATCH();
	{
		if (par)
			egress_parallel_end(par);
		PG_RE_THROW();
	}
	PG_END_TRY();
	result->rows += rows;
	result->bytes += bytes;
	result->batches += batches;
	if (slot)
	{
		slot->rows_sent = result->rows;
		slot->bytes_sent = result->bytes;
		slot->batches_sent = result->batches;
	}
	egress_progress_rows(slot, result->rows);

	part.mode = EGRESS_SNAP_CLOSE;
	egress_snapshot_write_part(def, sink, NULL, version, &part, &r);
	result->bytes += r.bytes;
	result->batches += r.batches;
	if (slot)
	{
		slot->bytes_sent = result->bytes;
		slot->batches_sent = result->batches;
	}
	egress_progress_acked(slot);
	egress_progress_end(slot);

	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* the sink of a part worker, for its error path */
static EgressSink *part_sink = NULL;

/*
 * sync_part
 *		The body of part worker "part" of a parallel FULL_TABLE sync: import
 *		the coordinator's snapshot, read the part's blocks, write them to
 *		the stream's destination as the part's batches.
 */
static void
sync_part(EgressParallelShared *sh, int part, EgressPartStatus *status)
{
	EgressCatalogGuard guard;
	EgressStreamDef *def;
	EgressSnapshotPart sp;
	EgressSnapshotResult r;
	PartProgress pp;
	MemoryContext partcxt = CurrentMemoryContext;

	egress_pin_output_settings();

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	XactIsoLevel = XACT_REPEATABLE_READ;
	/* before anything takes a snapshot: SET TRANSACTION SNAPSHOT */
	ImportSnapshot(sh->snapshot);
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "FULL_TABLE sync (part)");

	/* the stream as the coordinator saw it: the same snapshot */
	egress_catalog_enter(&guard);
	def = egress_load_stream(sh->stream_id, partcxt);
	egress_catalog_exit(&guard);
	if (def == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("stream %d no longer exists", sh->stream_id)));
	egress_check_destination_use(def);

	PG_TRY();
	{
		part_sink = egress_sink_open(def->dest_kind, def->dest_location, def->dest_options);
		part_sink->owner_superuser = def->dest_owner_superuser;
		part_sink->owner = def->dest_owner;
		memset(&sp, 0, sizeof(sp));
		sp.mode = EGRESS_SNAP_PART;
		sp.part = part;
		egress_part_range(sh->nblocks, sh->nparts, part, &sp.lo, &sp.hi);
		/* the coordinator shows the rows acknowledged so far */
		pp.status = status;
		pp.result = &r;
		sp.between_batches = part_batch_done;
		sp.arg = &pp;
		egress_snapshot_write_part(def, part_sink, NULL, sh->version, &sp, &r);
	}
	PG_CATCH();
	{
		if (part_sink)
			part_sink->ops->abort_batch(part_sink);
		PG_RE_THROW();
	}
	PG_END_TRY();
	status->rows = r.rows;
	status->bytes = r.bytes;
	status->batches = r.batches;

	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* Third transaction: the sync is done; record the bookmark. */
static void
finish_stream(EgressStreamDef *def, int64 version, EgressSnapshotResult *result)
{
	EgressCatalogGuard guard;
	Oid			argtypes[6] = {INT4OID, INT8OID, JSONBOID, INT8OID, INT8OID, INT8OID};
	Datum		values[6];
	StringInfoData bookmark;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());

	initStringInfo(&bookmark);
	egress_singer_bookmark_full_table(&bookmark, version);

	egress_catalog_enter(&guard);
	egress_record_success_begin(&def->id, 1);
	values[0] = Int32GetDatum(def->id);
	values[1] = Int64GetDatum(version);
	values[2] = DirectFunctionCall1(jsonb_in, CStringGetDatum(bookmark.data));
	values[3] = Int64GetDatum(result->rows);
	values[4] = Int64GetDatum(result->bytes);
	values[5] = Int64GetDatum(result->batches);
	egress_catalog_exec("UPDATE egress.stream_state SET state = 'synced', bookmark = $3, "
						"rows_sent = $4, bytes_sent = $5, batches_sent = $6, "
						"last_error = NULL, last_error_at = NULL, attempts = 0, "
						"sync_finished_at = now(), updated_at = now() "
						"WHERE stream_id = $1 AND version = $2",
						6, argtypes, values, NULL, false);
	egress_record_success(&def->id, 1);
	egress_worker_catalog_end(&guard);
}

/*
 * Is this the 0.2 catalog (stream_state.last_success_at)?  A database may
 * keep 0.1's until ALTER EXTENSION pg_egress UPDATE; asked in each
 * transaction that records a success (two syscache lookups).
 */
static bool
catalog_has_last_success(void)
{
	Oid			nsp = get_namespace_oid("egress", true);
	Oid			relid;

	if (!OidIsValid(nsp))
		return false;
	relid = get_relname_relid("stream_state", nsp);
	return OidIsValid(relid) &&
		get_attnum(relid, "last_success_at") != InvalidAttrNumber;
}

/* sql with $1 the int4[] of the stream ids (0.2 catalog only) */
static void
exec_on_streams(const char *sql, const int32 *stream_ids, int n)
{
	ArrayType  *ids;
	Datum	   *elems;
	Oid			argtypes[1] = {INT4ARRAYOID};
	Datum		values[1];

	if (n <= 0 || !catalog_has_last_success())
		return;
	elems = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
		elems[i] = Int32GetDatum(stream_ids[i]);
	ids = construct_array(elems, n, INT4OID, sizeof(int32), true, TYPALIGN_INT);
	values[0] = PointerGetDatum(ids);
	egress_catalog_exec(sql, 1, argtypes, values, NULL, false);
	pfree(ids);
	pfree(elems);
}

/*
 * Lock order with the user functions.  egress_record_success() updates
 * stream_state rows the transaction has already updated; such an UPDATE
 * runs the foreign key check of stream_state.stream_id (the old row is the
 * transaction's own), which takes FOR KEY SHARE on the egress.stream row.
 * The user functions (egress_pause_stream(), egress_resume_stream(), ...)
 * lock the egress.stream row FOR UPDATE, then update stream_state: had the
 * worker updated the state row first, each would wait for the other.  So
 * the worker takes the egress.stream rows first, as they do; in id order,
 * before any stream_state row.  Nothing with a 0.1 catalog (no second
 * UPDATE).  Caller is inside egress_catalog_enter().
 */
void
egress_record_success_begin(const int32 *stream_ids, int n)
{
	exec_on_streams("SELECT 1 FROM egress.stream "
					"WHERE id OPERATOR(pg_catalog.=) ANY ($1) "
					"ORDER BY id FOR KEY SHARE", stream_ids, n);
}

void
egress_record_success(const int32 *stream_ids, int n)
{
	exec_on_streams("UPDATE egress.stream_state SET last_success_at = pg_catalog.now() "
					"WHERE stream_id OPERATOR(pg_catalog.=) ANY ($1)", stream_ids, n);
}

/* After a failure: show it in egress_streams; the stream waits for resume. */
void
egress_record_stream_error(int32 stream_id, const char *message)
{
	EgressCatalogGuard guard;
	Oid			argtypes[2] = {INT4OID, TEXTOID};
	Datum		values[2];

	/* a CDC worker may come here from decoding: no time-travel cache entries */
	if (egress_worker_catalog_begin(&guard, true))
	{
		values[0] = Int32GetDatum(stream_id);
		values[1] = CStringGetTextDatum(message);
		egress_catalog_exec("UPDATE egress.stream_state SET state = 'error', last_error = $2, "
							"last_error_at = pg_catalog.now(), updated_at = pg_catalog.now() "
							"WHERE stream_id OPERATOR(pg_catalog.=) $1",
							2, argtypes, values, NULL, false);
		egress_worker_catalog_end(&guard);
	}
}

static void
release_slot_at_exit(int code, Datum arg)
{
	egress_count_retries_in(NULL);
	egress_release_slot((EgressWorkerSlot *) DatumGetPointer(arg));
}

/* the sink of the running sync, for the error path */
static EgressSink *current_sink = NULL;

static void
sync_stream(int32 stream_id, EgressWorkerSlot *slot)
{
	EgressStreamDef *def;
	int64		version;
	EgressSnapshotResult result;
	int			nparts;

	def = claim_stream(stream_id, &version);
	if (def == NULL)
		return;					/* removed or paused meanwhile */
	egress_set_slot_owner(slot, def->owner);
	LWLockAcquire(egress_shared->lock, LW_EXCLUSIVE);
	slot->claimed = true;
	LWLockRelease(egress_shared->lock);
	egress_set_phase(slot, "reading");

	/*
	 * The owner may still send the stream there: a right revoked since the
	 * stream was added stops it (the error becomes the stream's).
	 */
	egress_check_destination_use(def);
	current_sink = egress_sink_open(def->dest_kind, def->dest_location, def->dest_options);
	current_sink->owner_superuser = def->dest_owner_superuser;
	current_sink->owner = def->dest_owner;
	/* retried until delivered; the stream shows "retrying" meanwhile */
	current_sink->keep_retrying = egress_sink_show_retrying;
	current_sink->keep_retrying_arg = slot;
	current_sink->delivered_after_retries = egress_sink_show_reading;
	/* a destination changed meanwhile (a password fixed): the run starts again */
	egress_sink_watch_destination(current_sink, def->id);
	ereport(LOG,
			(errmsg("pg_egress stream \"%s\": FULL_TABLE sync of %s started, version " INT64_FORMAT,
					def->name, def->relation, version)));
	nparts = stream_parallel(def);
	if (nparts > 1 && !egress_fast_sync_enabled(def))
		run_sync_parallel(def, current_sink, slot, version, nparts, &result);
	else
		run_sync(def, current_sink, slot, version, &result);
	finish_stream(def, version, &result);
	ereport(LOG,
			(errmsg("pg_egress stream \"%s\": FULL_TABLE sync finished, " INT64_FORMAT " rows in " INT64_FORMAT " batches",
					def->name, result.rows, result.batches)));
}

/*
 * egress_run_stream_worker
 *		The life of a worker that runs one stream once (a FULL_TABLE sync, an
 *		INCREMENTAL run): connect, claim the stream's shared slot, run body,
 *		and record an error on the stream instead of exiting with it, so a
 *		failing stream never crash-loops.  *sink is the body's open sink, if
 *		any, whose batch is dropped on error.
 */
void
egress_run_stream_worker(Datum main_arg,
						 void (*body) (int32 stream_id, EgressWorkerSlot *slot),
						 EgressSink **sink)
{
	int32		stream_id = DatumGetInt32(main_arg);
	Oid			dboid;
	EgressWorkerSlot *slot;
	MemoryContext workcxt;
	pid_t		holder;

	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	egress_pin_output_settings();

	slot = egress_claim_stream(stream_id, "starting", &holder);
	if (slot == NULL)
	{
		/*
		 * Another live worker serves the stream (one a database worker
		 * started before it was restarted): leave it to that one.  Or all
		 * entries are busy: the database worker retries.
		 */
		if (holder != 0)
			ereport(LOG,
					(errmsg("pg_egress stream %d is already served by process %d",
							stream_id, (int) holder)));
		proc_exit(0);
	}
	before_shmem_exit(release_slot_at_exit, PointerGetDatum(slot));
	egress_count_retries_in(slot);

	workcxt = AllocSetContextCreate(TopMemoryContext, "pg_egress stream worker",
									ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(workcxt);

	PG_TRY();
	{
		body(stream_id, slot);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(workcxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode == EGRESS_ERRCODE_RESTART_RUN)
		{
			/*
			 * The destination changed while a batch was retried: no failure
			 * of the stream, which stays pending/syncing; the database
			 * worker starts the next worker, which opens the destination
			 * as it is now.
			 */
			FlushErrorState();
			AbortCurrentTransaction();
			if (*sink)
				(*sink)->ops->abort_batch(*sink);
			ereport(LOG,
					(errmsg("%s", edata->message),
					 edata->detail ? errdetail("%s", edata->detail) : 0));
			egress_wake_dbworker();
			proc_exit(0);
		}
		/* log it like any error, then keep it for egress_streams */
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		if (*sink)
			(*sink)->ops->abort_batch(*sink);
		egress_record_stream_error(stream_id, edata->message);
	}
	PG_END_TRY();

	proc_exit(0);
}

void
egress_sync_main(Datum main_arg)
{
	egress_run_stream_worker(main_arg, sync_stream, &current_sink);
}

/* a part worker of a parallel FULL_TABLE sync (export/parallel.c) */
void
egress_sync_part_main(Datum main_arg)
{
	egress_part_worker_run(main_arg, sync_part);
}
