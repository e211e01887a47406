/*-------------------------------------------------------------------------
 * sync.c
 *	  A FULL_TABLE sync: one worker reads one relation in one snapshot and
 *	  writes Singer batches to the stream's destination.
 *
 * Rows flow from the executor straight into the encoder through a
 * DestReceiver, so nothing is held in memory beyond the current batch's
 * scratch memory, which is reset after every batch.  The stream's state
 * is recorded as synced only after the last batch was acknowledged.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "tcop/dest.h"
#include "tcop/pquery.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "catalog/catalog.h"
#include "encode/singer.h"
#include "pg_egress.h"
#include "sink/sink.h"

/* Everything one sync needs while rows stream through. */
typedef struct SyncState
{
	DestReceiver pub;			/* must be first */
	EgressStreamDef *def;
	EgressSingerStream *st;
	EgressSink *sink;
	EgressWorkerSlot *slot;
	int64		version;
	int64		max_rows;
	int64		max_bytes;
	MemoryContext batchcxt;		/* reset after every batch */
	StringInfoData buf;			/* encoded messages not yet handed to the sink */
	StringInfoData time_extracted;	/* of the current batch */
	bool		batch_open;
	int64		seq;
	int64		batch_rows;
	int64		batch_bytes;
	int64		rows_sent;		/* acknowledged */
	int64		bytes_sent;
	int64		batches_sent;
} SyncState;

#define SINK_CHUNK (256 * 1024)

static void
hand_to_sink(SyncState *ss)
{
	if (ss->buf.len > 0)
	{
		ss->sink->ops->write(ss->sink, ss->buf.data, ss->buf.len);
		ss->batch_bytes += ss->buf.len;
		resetStringInfo(&ss->buf);
	}
}

static void
begin_batch(SyncState *ss)
{
	EgressBatchInfo info;

	ss->seq++;
	info.stream_name = ss->def->name;
	info.version = ss->version;
	info.seq = ss->seq;
	ss->sink->ops->begin_batch(ss->sink, &info);
	ss->batch_open = true;
	ss->batch_rows = 0;
	ss->batch_bytes = 0;
	resetStringInfo(&ss->time_extracted);
	egress_append_time_extracted(&ss->time_extracted, GetCurrentTimestamp());

	egress_singer_schema(&ss->buf, ss->st, NULL);
	if (ss->seq == 1)
		egress_singer_activate_version(&ss->buf, ss->st, ss->version);
}

static void
commit_batch(SyncState *ss, bool last)
{
	if (last)
		egress_singer_activate_version(&ss->buf, ss->st, ss->version);
	egress_singer_state_full_table(&ss->buf, ss->st, !last, ss->version);
	hand_to_sink(ss);
	ss->sink->ops->commit_batch(ss->sink);
	ss->batch_open = false;

	ss->rows_sent += ss->batch_rows;
	ss->bytes_sent += ss->batch_bytes;
	ss->batches_sent++;
	ss->slot->rows_sent = ss->rows_sent;
	ss->slot->bytes_sent = ss->bytes_sent;
	ss->slot->batches_sent = ss->batches_sent;

	MemoryContextReset(ss->batchcxt);
	ereport(DEBUG1,
			(errmsg_internal("pg_egress stream \"%s\" batch " INT64_FORMAT " done",
							 ss->def->name, ss->seq)));
}

static bool
sync_receive(TupleTableSlot *slot, DestReceiver *self)
{
	SyncState  *ss = (SyncState *) self;
	MemoryContext oldcxt;

	CHECK_FOR_INTERRUPTS();

	/* cut lazily, so the last batch is never an empty one */
	if (ss->batch_open &&
		(ss->batch_rows >= ss->max_rows ||
		 ss->batch_bytes + ss->buf.len >= ss->max_bytes))
		commit_batch(ss, false);
	if (!ss->batch_open)
		begin_batch(ss);

	oldcxt = MemoryContextSwitchTo(ss->batchcxt);
	slot_getallattrs(slot);
	egress_singer_record(&ss->buf, ss->st, slot->tts_values, slot->tts_isnull,
						 ss->version, ss->time_extracted.data);
	MemoryContextSwitchTo(oldcxt);
	ss->batch_rows++;

	if (ss->buf.len >= SINK_CHUNK)
		hand_to_sink(ss);
	return true;
}

static void
sync_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
}

static void
sync_shutdown(DestReceiver *self)
{
}

static void
sync_destroy(DestReceiver *self)
{
}

/* The relation still exists and the stream's owner may read it. */
static void
check_relation_access(EgressStreamDef *def)
{
	char	   *rolname = GetUserNameFromId(def->owner, true);

	if (rolname == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role with OID %u that owns stream \"%s\" no longer exists",
						def->owner, def->name)));
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(def->relid)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation %s of stream \"%s\" no longer exists",
						def->relation, def->name),
				 errhint("Remove the stream with egress_remove_stream().")));
	if (pg_class_aclcheck(def->relid, def->owner, ACL_SELECT) != ACLCHECK_OK &&
		pg_attribute_aclcheck_all(def->relid, def->owner, ACL_SELECT, ACLMASK_ALL) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", def->relation),
				 errdetail("Stream \"%s\" reads with the privileges of role \"%s\".",
						   def->name, rolname)));
}

static int64
batch_limit(Jsonb *options, const char *key, int64 dflt)
{
	int64		v;

	if (egress_jsonb_get_int64(options, key, &v) && v > 0)
		return v;
	return dflt;
}

/* First transaction: take the stream, announce a new version. */
static EgressStreamDef *
claim_stream(int32 stream_id, int64 *version)
{
	EgressCatalogGuard guard;
	EgressStreamDef *def;
	Oid			argtypes[2] = {INT4OID, INT8OID};
	Datum		values[2];
	int64		now_ms;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());

	if (!egress_extension_present())
	{
		PopActiveSnapshot();
		CommitTransactionCommand();
		return NULL;
	}
	egress_catalog_enter(&guard);
	def = egress_load_stream(stream_id, TopMemoryContext);
	if (def == NULL || !def->enabled)
	{
		egress_catalog_exit(&guard);
		PopActiveSnapshot();
		CommitTransactionCommand();
		return NULL;
	}

	/* versions only grow, even if two syncs start within a millisecond */
	now_ms = (GetCurrentTimestamp() / 1000) +
		(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;
	*version = Max(now_ms, def->prev_version + 1);

	values[0] = Int32GetDatum(stream_id);
	values[1] = Int64GetDatum(*version);
	egress_catalog_exec("UPDATE egress.stream_state SET state = 'syncing', resync = false, "
						"version = $2, attempts = attempts + 1, sync_started_at = now(), "
						"updated_at = now() WHERE stream_id = $1",
						2, argtypes, values, NULL, false);
	egress_catalog_exit(&guard);
	PopActiveSnapshot();
	CommitTransactionCommand();
	return def;
}

/* Second transaction: read the relation as its owner, write batches. */
static void
run_sync(SyncState *ss)
{
	EgressStreamDef *def = ss->def;
	Oid			save_userid;
	int			save_sec;
	StringInfoData sql;
	Portal		portal;
	SPIPlanPtr	plan;
	MemoryContext oldcxt;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "FULL_TABLE sync");

	check_relation_access(def);

	oldcxt = MemoryContextSwitchTo(TopTransactionContext);
	ss->st = egress_singer_stream_for_relation(def->relid);
	ss->batchcxt = AllocSetContextCreate(TopTransactionContext, "pg_egress batch",
										 ALLOCSET_DEFAULT_SIZES);
	initStringInfo(&ss->buf);
	initStringInfo(&ss->time_extracted);
	MemoryContextSwitchTo(oldcxt);

	ss->sink->ops->cleanup_stream(ss->sink, def->name);

	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT ");
	for (int i = 0; i < ss->st->ncolumns; i++)
		appendStringInfo(&sql, "%s%s", i > 0 ? ", " : "",
						 quote_identifier(ss->st->columns[i].name));
	if (ss->st->ncolumns == 0)
		appendStringInfoString(&sql, "1");
	appendStringInfo(&sql, " FROM %s",
					 quote_qualified_identifier(get_namespace_name(get_rel_namespace(def->relid)),
												get_rel_name(def->relid)));

	/*
	 * The query runs as the stream's owner: its privileges and row level
	 * security apply, and it cannot do anything a restricted operation may
	 * not.
	 */
	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(def->owner,
						   save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	plan = SPI_prepare(sql.data, 0, NULL);
	if (plan == NULL)
		elog(ERROR, "could not prepare \"%s\": %s", sql.data,
			 SPI_result_code_string(SPI_result));
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);

	/* the columns queried are the stream's columns, in order: 1..n */
	for (int i = 0; i < ss->st->ncolumns; i++)
		ss->st->attnums[i] = i + 1;

	(void) PortalRunFetch(portal, FETCH_FORWARD, FETCH_ALL, &ss->pub);

	/* the last batch closes the version, even for an empty relation */
	if (!ss->batch_open)
		begin_batch(ss);
	commit_batch(ss, true);

	SPI_cursor_close(portal);
	SPI_finish();
	SetUserIdAndSecContext(save_userid, save_sec);

	PopActiveSnapshot();
	CommitTransactionCommand();
}

/* Third transaction: the sync is done; record the bookmark. */
static void
finish_stream(SyncState *ss)
{
	EgressCatalogGuard guard;
	Oid			argtypes[6] = {INT4OID, INT8OID, JSONBOID, INT8OID, INT8OID, INT8OID};
	Datum		values[6];
	StringInfoData bookmark;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());

	initStringInfo(&bookmark);
	egress_singer_bookmark_full_table(&bookmark, ss->version);

	egress_catalog_enter(&guard);
	values[0] = Int32GetDatum(ss->def->id);
	values[1] = Int64GetDatum(ss->version);
	values[2] = DirectFunctionCall1(jsonb_in, CStringGetDatum(bookmark.data));
	values[3] = Int64GetDatum(ss->rows_sent);
	values[4] = Int64GetDatum(ss->bytes_sent);
	values[5] = Int64GetDatum(ss->batches_sent);
	egress_catalog_exec("UPDATE egress.stream_state SET state = 'synced', bookmark = $3, "
						"rows_sent = $4, bytes_sent = $5, batches_sent = $6, "
						"last_error = NULL, last_error_at = NULL, attempts = 0, "
						"sync_finished_at = now(), updated_at = now() "
						"WHERE stream_id = $1 AND version = $2",
						6, argtypes, values, NULL, false);
	egress_catalog_exit(&guard);
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/* After a failure: show it in egress_streams; the stream waits for resume. */
static void
record_error(int32 stream_id, const char *message)
{
	EgressCatalogGuard guard;
	Oid			argtypes[2] = {INT4OID, TEXTOID};
	Datum		values[2];

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (egress_extension_present())
	{
		egress_catalog_enter(&guard);
		values[0] = Int32GetDatum(stream_id);
		values[1] = CStringGetTextDatum(message);
		egress_catalog_exec("UPDATE egress.stream_state SET state = 'error', last_error = $2, "
							"last_error_at = now(), updated_at = now() WHERE stream_id = $1",
							2, argtypes, values, NULL, false);
		egress_catalog_exit(&guard);
	}
	PopActiveSnapshot();
	CommitTransactionCommand();
}

static void
release_slot_at_exit(int code, Datum arg)
{
	egress_release_slot((EgressWorkerSlot *) DatumGetPointer(arg));
}

void
egress_sync_main(Datum main_arg)
{
	int32		stream_id = DatumGetInt32(main_arg);
	Oid			dboid;
	SyncState  *ss;
	EgressWorkerSlot *slot;
	MemoryContext workcxt;

	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);

	/*
	 * The type map formats dates, times and numbers itself; these pin the
	 * few text outputs it takes from the server (ranges, geometric types)
	 * so that a sync never depends on the server's defaults.
	 */
	SetConfigOption("TimeZone", "UTC", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("DateStyle", "ISO, MDY", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("IntervalStyle", "iso_8601", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("extra_float_digits", "1", PGC_SUSET, PGC_S_OVERRIDE);

	slot = egress_claim_slot(stream_id);
	if (slot == NULL)
		proc_exit(0);			/* all slots busy: the database worker retries */
	before_shmem_exit(release_slot_at_exit, PointerGetDatum(slot));

	workcxt = AllocSetContextCreate(TopMemoryContext, "pg_egress sync",
									ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(workcxt);
	ss = palloc0(sizeof(SyncState));
	ss->pub.receiveSlot = sync_receive;
	ss->pub.rStartup = sync_startup;
	ss->pub.rShutdown = sync_shutdown;
	ss->pub.rDestroy = sync_destroy;
	ss->pub.mydest = DestNone;
	ss->slot = slot;

	PG_TRY();
	{
		ss->def = claim_stream(stream_id, &ss->version);
		if (ss->def == NULL)
			proc_exit(0);		/* removed or paused meanwhile */
		LWLockAcquire(egress_shared->lock, LW_EXCLUSIVE);
		slot->claimed = true;
		strlcpy(slot->phase, "reading", sizeof(slot->phase));
		LWLockRelease(egress_shared->lock);

		ss->max_rows = batch_limit(ss->def->options, "batch_max_rows",
								   egress_batch_max_rows);
		ss->max_bytes = batch_limit(ss->def->options, "batch_max_bytes",
									(int64) egress_batch_max_bytes_kb * 1024);
		ss->sink = egress_sink_open(ss->def->dest_kind, ss->def->dest_location,
									ss->def->dest_options);

		ereport(LOG,
				(errmsg("pg_egress stream \"%s\": FULL_TABLE sync of %s started, version " INT64_FORMAT,
						ss->def->name, ss->def->relation, ss->version)));
		run_sync(ss);
		finish_stream(ss);
		ereport(LOG,
				(errmsg("pg_egress stream \"%s\": FULL_TABLE sync finished, " INT64_FORMAT " rows in " INT64_FORMAT " batches",
						ss->def->name, ss->rows_sent, ss->batches_sent)));
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(workcxt);
		edata = CopyErrorData();
		/* log it like any error, then keep it for egress_streams */
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		if (ss->sink)
			ss->sink->ops->abort_batch(ss->sink);
		record_error(stream_id, edata->message);
	}
	PG_END_TRY();

	proc_exit(0);
}
