/*-------------------------------------------------------------------------
 * snapshot.c
 *	  Writes the rows of a relation as Singer batches.
 *
 * Rows flow from the executor straight into the encoder through a
 * DestReceiver, so nothing is held in memory beyond the current batch's
 * scratch memory, which is reset after every batch.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "tcop/dest.h"
#include "tcop/pquery.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "encode/singer.h"
#include "sink/sink.h"
#include "worker/snapshot.h"

typedef struct SnapshotWriter
{
	DestReceiver pub;			/* must be first */
	EgressStreamDef *def;
	EgressSingerStream *st;
	EgressSink *sink;
	EgressWorkerSlot *slot;
	int64		version;
	XLogRecPtr	lsn;
	int64		max_rows;
	int64		max_bytes;
	MemoryContext batchcxt;		/* reset after every batch */
	StringInfoData buf;			/* encoded messages not yet handed to the sink */
	StringInfoData time_extracted;	/* of the current batch */
	StringInfoData bookmark;
	const char *extra;			/* _sdc_* fields of LOG_BASED initial syncs */
	bool		batch_open;
	int64		seq;
	int64		batch_rows;
	int64		batch_bytes;
	EgressSnapshotResult *result;	/* acknowledged figures */
} SnapshotWriter;

#define SINK_CHUNK (256 * 1024)

void
egress_pin_output_settings(void)
{
	SetConfigOption("TimeZone", "UTC", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("DateStyle", "ISO, MDY", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("IntervalStyle", "postgres", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("extra_float_digits", "1", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("bytea_output", "hex", PGC_SUSET, PGC_S_OVERRIDE);
}

int64
egress_stream_batch_rows(EgressStreamDef *def)
{
	int64		v;

	if (egress_jsonb_get_int64(def->options, "batch_max_rows", &v) && v > 0)
		return v;
	if (egress_jsonb_get_int64(def->dest_options, "batch_max_rows", &v) && v > 0)
		return v;
	return egress_batch_max_rows;
}

int64
egress_stream_batch_bytes(EgressStreamDef *def)
{
	int64		v;

	if (egress_jsonb_get_int64(def->options, "batch_max_bytes", &v) && v > 0)
		return v;
	if (egress_jsonb_get_int64(def->dest_options, "batch_max_bytes", &v) && v > 0)
		return v;
	return (int64) egress_batch_max_bytes_kb * 1024;
}

int
egress_dest_flush_interval_ms(Jsonb *dest_options)
{
	char	   *s = egress_jsonb_get_string(dest_options, "flush_interval");
	long		v = s ? egress_parse_interval_ms(s) : -1;

	return v > 0 ? (int) v : egress_flush_interval_ms;
}

int64
egress_next_version(int64 prev_version)
{
	int64		now_ms = (GetCurrentTimestamp() / 1000) +
		(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;

	return Max(now_ms, prev_version + 1);
}

static void
hand_to_sink(SnapshotWriter *w)
{
	if (w->buf.len > 0)
	{
		w->sink->ops->write(w->sink, w->buf.data, w->buf.len);
		w->batch_bytes += w->buf.len;
		resetStringInfo(&w->buf);
	}
}

static void
begin_batch(SnapshotWriter *w)
{
	EgressBatchInfo info;

	w->seq++;
	info.prefix = w->def->name;
	w->sink->ops->begin_batch(w->sink, &info);
	if (w->sink->ops->announce_batch_id)
	{
		char		batch_id[NAMEDATALEN * 2];

		/* the id commit_batch() gives it */
		snprintf(batch_id, sizeof(batch_id), "%s-" INT64_FORMAT "-%06" INT64_MODIFIER "d",
				 w->def->name, w->version, w->seq);
		w->sink->ops->announce_batch_id(w->sink, batch_id);
	}
	w->batch_open = true;
	w->batch_rows = 0;
	w->batch_bytes = 0;
	resetStringInfo(&w->time_extracted);
	egress_append_time_extracted(&w->time_extracted, GetCurrentTimestamp());

	egress_singer_schema(&w->buf, w->st);
	if (w->seq == 1)
		egress_singer_activate_version(&w->buf, w->st, w->version);
}

static void
commit_batch(SnapshotWriter *w, bool last)
{
	char		batch_id[NAMEDATALEN * 2];

	if (last)
		egress_singer_activate_version(&w->buf, w->st, w->version);
	egress_singer_state_open(&w->buf, last ? NULL : w->st->stream_id);
	egress_singer_state_add(&w->buf, w->st->stream_id, w->bookmark.data, true);
	egress_singer_state_close(&w->buf);
	hand_to_sink(w);

	snprintf(batch_id, sizeof(batch_id), "%s-" INT64_FORMAT "-%06" INT64_MODIFIER "d",
			 w->def->name, w->version, w->seq);
	w->sink->ops->commit_batch(w->sink, batch_id);
	w->batch_open = false;

	w->result->rows += w->batch_rows;
	w->result->bytes += w->batch_bytes;
	w->result->batches++;
	if (w->slot)
	{
		w->slot->rows_sent = w->result->rows;
		w->slot->bytes_sent = w->result->bytes;
		w->slot->batches_sent = w->result->batches;
	}

	MemoryContextReset(w->batchcxt);
	ereport(DEBUG1,
			(errmsg_internal("pg_egress stream \"%s\": batch %s acknowledged",
							 w->def->name, batch_id)));
}

static bool
writer_receive(TupleTableSlot *slot, DestReceiver *self)
{
	SnapshotWriter *w = (SnapshotWriter *) self;
	MemoryContext oldcxt;

	CHECK_FOR_INTERRUPTS();

	/* cut lazily, so the last batch is never an empty one */
	if (w->batch_open &&
		(w->batch_rows >= w->max_rows ||
		 w->batch_bytes + w->buf.len >= w->max_bytes))
		commit_batch(w, false);
	if (!w->batch_open)
		begin_batch(w);

	oldcxt = MemoryContextSwitchTo(w->batchcxt);
	slot_getallattrs(slot);
	egress_singer_record(&w->buf, w->st, slot->tts_values, slot->tts_isnull,
						 w->version, w->time_extracted.data, w->extra);
	MemoryContextSwitchTo(oldcxt);
	w->batch_rows++;

	if (w->buf.len >= SINK_CHUNK)
		hand_to_sink(w);
	return true;
}

static void
writer_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
}

static void
writer_noop(DestReceiver *self)
{
}

void
egress_check_relation_access(EgressStreamDef *def)
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

void
egress_snapshot_write(EgressStreamDef *def, EgressSink *sink,
					  EgressWorkerSlot *slot, int64 version,
					  bool log_based, XLogRecPtr lsn,
					  EgressSnapshotResult *result)
{
	SnapshotWriter *w;
	MemoryContext oldcxt;
	MemoryContext writercxt;
	Oid			save_userid;
	int			save_sec;
	StringInfoData sql;
	Portal		portal;
	SPIPlanPtr	plan;
	bool		debug_lsn = false;

	egress_check_relation_access(def);

	writercxt = AllocSetContextCreate(CurrentMemoryContext, "pg_egress snapshot",
									  ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(writercxt);
	w = palloc0(sizeof(SnapshotWriter));
	w->pub.receiveSlot = writer_receive;
	w->pub.rStartup = writer_startup;
	w->pub.rShutdown = writer_noop;
	w->pub.rDestroy = writer_noop;
	w->pub.mydest = DestNone;
	w->def = def;
	w->sink = sink;
	w->slot = slot;
	w->version = version;
	w->lsn = lsn;
	w->result = result;
	w->max_rows = egress_stream_batch_rows(def);
	w->max_bytes = egress_stream_batch_bytes(def);
	if (log_based)
		(void) egress_jsonb_get_bool(def->options, "debug_lsn", &debug_lsn);
	w->st = egress_singer_stream_for_relation(def->relid, log_based, debug_lsn);
	w->batchcxt = AllocSetContextCreate(writercxt, "pg_egress batch",
										ALLOCSET_DEFAULT_SIZES);
	initStringInfo(&w->buf);
	initStringInfo(&w->time_extracted);
	initStringInfo(&w->bookmark);
	if (log_based)
	{
		egress_singer_bookmark_log_based(&w->bookmark, lsn, version);
		w->extra = debug_lsn ? ",\"_sdc_deleted_at\":null,\"_sdc_lsn\":null" :
			",\"_sdc_deleted_at\":null";
	}
	else
		egress_singer_bookmark_full_table(&w->bookmark, version);
	memset(result, 0, sizeof(*result));

	sink->ops->cleanup(sink, def->name);

	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT ");
	for (int i = 0; i < w->st->ncolumns; i++)
		appendStringInfo(&sql, "%s%s", i > 0 ? ", " : "",
						 quote_identifier(w->st->columns[i].name));
	if (w->st->ncolumns == 0)
		appendStringInfoString(&sql, "1");
	appendStringInfo(&sql, " FROM %s",
					 quote_qualified_identifier(get_namespace_name(get_rel_namespace(def->relid)),
												get_rel_name(def->relid)));

	/* the columns queried are the stream's columns, in order: 1..n */
	for (int i = 0; i < w->st->ncolumns; i++)
		w->st->attnums[i] = i + 1;

	/*
	 * The query runs as the stream's owner: its privileges and row level
	 * security apply, and it can do nothing a restricted operation may not.
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
	(void) PortalRunFetch(portal, FETCH_FORWARD, FETCH_ALL, &w->pub);

	/* the last batch closes the version, even for an empty relation */
	if (!w->batch_open)
		begin_batch(w);
	commit_batch(w, true);

	SPI_cursor_close(portal);
	SPI_finish();
	SetUserIdAndSecContext(save_userid, save_sec);

	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(writercxt);
}
