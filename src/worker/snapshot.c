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
#include "utils/datum.h"
#include "utils/json.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "catalog/publication.h"
#include "encode/pg_kinesis.h"
#include "encode/singer.h"
#include "export/fast_sync.h"
#include "shmem.h"
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
	const EgressSnapshotPart *part; /* a parallel sync's piece, or NULL */

	/* INCREMENTAL runs: the position of the last row written */
	EgressIncrementalSpec *inc;
	int			npos;			/* key, then primary-key columns */
	int		   *poscol;			/* their indexes in st->columns */
	Datum	   *posval;			/* copies, in poscxt */
	bool	   *posnull;
	int16	   *poslen;
	bool	   *posbyval;
	Oid		   *posout;
	MemoryContext poscxt;		/* reset for every row */
	bool		have_pos;

	/*
	 * A LOG_BASED initial sync to a Kinesis destination in pg_kinesis
	 * format: each row one INSERT record in that shape (lsn: the sync's
	 * consistent point), no Singer message.
	 */
	bool		pgk;
	EgressPgKinesisColumn *pgkcols;
	Oid		   *pgkout;			/* output functions of the base types */
	char	   *pgk_schema;
	char	   *pgk_table;
	TimestampTz pgk_time;

	/*
	 * Kinesis (either format): each row goes to the sink as one record
	 * (write_record) with its partition key computed here, as the CDC worker
	 * computes it for changes (cdc_render.c): the stream, then "|" and each
	 * key value's text ("null" for null).
	 */
	bool		krec;
	int		   *keycols;		/* st->columns indexes of the key values, -1
								 * end, -2 a column not in the stream */
	Oid		   *keyout;			/* their output functions */
} SnapshotWriter;

#define SINK_CHUNK (256 * 1024)

static int	column_index(EgressSingerStream *st, const char *name);

void
egress_pin_output_settings(void)
{
	egress_pin_value_settings(false);
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
	/* postgres destinations: the name the Singer targets use */
	if (egress_jsonb_get_int64(def->dest_options, "batch_size_rows", &v) && v > 0)
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
	long		v = egress_duration_option_ms(dest_options, "flush_interval");

	return v > 0 ? (int) v : egress_flush_interval_ms;
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

/*
 * The batch's id: <stream>-<version>-<NNNNNN> for a sync, and
 * <stream>-<version>-<run>-<NNNNNN> for an INCREMENTAL run.  A parallel
 * sync sends batch 000001 (SCHEMA, ACTIVATE_VERSION), then the batches of
 * its parts as <stream>-<version>-000002-p<KKK>-<NNNNNN>, then batch
 * 000003 (the final ACTIVATE_VERSION): ids are unique per part and sort in
 * the order the version's messages must be applied.
 */
static void
batch_id_of(SnapshotWriter *w, char *batch_id, size_t size)
{
	if (w->inc)
		snprintf(batch_id, size, "%s-" INT64_FORMAT "-" INT64_FORMAT "-%06" INT64_MODIFIER "d",
				 w->def->name, w->version, w->inc->run_id, w->seq);
	else if (w->part && w->part->mode == EGRESS_SNAP_PART)
		snprintf(batch_id, size, "%s-" INT64_FORMAT "-000002-p%03d-%06" INT64_MODIFIER "d",
				 w->def->name, w->version, w->part->part, w->seq);
	else
		snprintf(batch_id, size, "%s-" INT64_FORMAT "-%06" INT64_MODIFIER "d",
				 w->def->name, w->version, w->seq);
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
		batch_id_of(w, batch_id, sizeof(batch_id));
		w->sink->ops->announce_batch_id(w->sink, batch_id);
	}
	w->batch_open = true;
	w->batch_rows = 0;
	w->batch_bytes = 0;
	resetStringInfo(&w->time_extracted);
	egress_append_time_extracted(&w->time_extracted, GetCurrentTimestamp());

	if (w->pgk)
		return;
	egress_singer_schema(&w->buf, w->st);
	if (w->seq == 1 && w->inc == NULL &&
		(w->part == NULL || w->part->mode == EGRESS_SNAP_OPEN))
		egress_singer_activate_version(&w->buf, w->st, w->version);
}

/*
 * The bookmark of an INCREMENTAL batch: the position of its last row, as
 * the replication key's rendering (the tap's replication_key_value) and as
 * exact text of the key and primary key, which resumes the next run.
 */
static void
incremental_bookmark(SnapshotWriter *w)
{
	StringInfoData keyjson;
	StringInfoData pos;
	MemoryContext oldcxt = MemoryContextSwitchTo(w->batchcxt);

	Assert(w->have_pos);
	initStringInfo(&keyjson);
	egress_column_value(&keyjson, &w->st->columns[w->poscol[0]],
						w->posval[0], w->posnull[0]);
	initStringInfo(&pos);
	for (int i = 0; i < w->npos; i++)
	{
		if (i == 0)
			appendStringInfoString(&pos, "{\"key\":");
		else
			appendStringInfoString(&pos, i == 1 ? ",\"pk\":[" : ",");
		if (w->posnull[i])
			appendStringInfoString(&pos, "null");
		else
			escape_json(&pos, OidOutputFunctionCall(w->posout[i], w->posval[i]));
	}
	appendStringInfoString(&pos, w->npos > 1 ? "]}" : ",\"pk\":[]}");
	resetStringInfo(&w->bookmark);
	egress_singer_bookmark_incremental(&w->bookmark, w->inc->key, keyjson.data,
									   w->version, pos.data);
	MemoryContextSwitchTo(oldcxt);
}

static void
commit_batch(SnapshotWriter *w, bool last)
{
	char		batch_id[NAMEDATALEN * 2];

	if (w->inc)
		incremental_bookmark(w);
	else if (last && !w->pgk)
		egress_singer_activate_version(&w->buf, w->st, w->version);
	if (!w->pgk)
	{
		egress_singer_state_open(&w->buf, last ? NULL : w->st->stream_id);
		egress_singer_state_add(&w->buf, w->st->stream_id, w->bookmark.data, true);
		egress_singer_state_close(&w->buf);
	}
	hand_to_sink(w);

	batch_id_of(w, batch_id, sizeof(batch_id));
	w->sink->ops->commit_batch(w->sink, batch_id);
	w->batch_open = false;

	w->result->rows += w->batch_rows;
	w->result->bytes += w->batch_bytes;
	w->result->batches++;
	if (w->slot)
	{
		/* egress_streams shows a stream's totals, and a run adds to them */
		w->slot->rows_sent = w->result->rows + (w->inc ? w->inc->rows_before : 0);
		w->slot->bytes_sent = w->result->bytes + (w->inc ? w->inc->bytes_before : 0);
		w->slot->batches_sent = w->result->batches + (w->inc ? w->inc->batches_before : 0);
		egress_progress_acked(w->slot);
		/* a parallel sync's coordinator counts its parts' rows itself */
		if (w->part == NULL)
			egress_progress_rows(w->slot, w->result->rows);
	}

	MemoryContextReset(w->batchcxt);
	ereport(DEBUG1,
			(errmsg_internal("pg_egress stream \"%s\": batch %s acknowledged",
							 w->def->name, batch_id)));
	if (w->part && w->part->between_batches)
		w->part->between_batches(w->part->arg);
}

/* see SnapshotWriter.krec */
static char *
row_partition_key(SnapshotWriter *w, TupleTableSlot *slot)
{
	StringInfoData key;

	initStringInfo(&key);
	appendStringInfoString(&key, w->st->stream_id);
	for (int i = 0; w->keycols[i] != -1; i++)
	{
		int			c = w->keycols[i];

		if (c == -2)
			appendStringInfoChar(&key, '|');
		else if (slot->tts_isnull[c])
			appendStringInfoString(&key, "|null");
		else
			appendStringInfo(&key, "|%s",
							 OidOutputFunctionCall(w->keyout[i], slot->tts_values[c]));
	}
	return key.data;
}

static void
keys_setup(SnapshotWriter *w)
{
	const char *mode = w->sink->opts.partition_key;
	int			nkey = 0;
	ListCell   *lc;

	if (w->sink->ops->write_record == NULL || strcmp(w->sink->kind, "kinesis") != 0)
		return;
	w->krec = true;
	w->keycols = palloc(sizeof(int) * (list_length(w->st->key_properties) + 2));
	w->keyout = palloc0(sizeof(Oid) * (list_length(w->st->key_properties) + 2));
	if (mode == NULL || strcmp(mode, "primary_key") == 0)
	{
		foreach(lc, w->st->key_properties)
			w->keycols[nkey++] = column_index(w->st, lfirst(lc));
	}
	else if (strcmp(mode, "table") != 0)
	{
		w->keycols[nkey] = -2;
		for (int i = 0; i < w->st->ncolumns; i++)
			if (strcmp(w->st->columns[i].name, mode) == 0)
				w->keycols[nkey] = i;
		nkey++;
	}
	w->keycols[nkey] = -1;
	for (int i = 0; i < nkey; i++)
	{
		bool		isvarlena;

		if (w->keycols[i] >= 0)
			getTypeOutputInfo(w->st->columns[w->keycols[i]].basetypid,
							  &w->keyout[i], &isvarlena);
	}
}

/*
 * The row as one pg_kinesis INSERT record (lsn: the sync's consistent
 * point); false when the renderer leaves it out.  Shared by the one-snapshot
 * sync and the chunks of a chunked backfill.
 */
static bool
pgk_render_row(SnapshotWriter *w, TupleTableSlot *slot, StringInfo out)
{
	EgressChange ch = {0};

	ch.action = EGRESS_CHANGE_INSERT;
	ch.relid = w->def->relid;
	ch.ncolumns = w->st->ncolumns;
	ch.columns = palloc0(sizeof(EgressChangeColumn) * Max(ch.ncolumns, 1));
	for (int i = 0; i < ch.ncolumns; i++)
	{
		ch.columns[i].name = w->st->columns[i].name;
		ch.columns[i].isnull = slot->tts_isnull[i];
		ch.columns[i].raw_text = true;
		if (!slot->tts_isnull[i])
			ch.columns[i].value = OidOutputFunctionCall(w->pgkout[i],
														slot->tts_values[i]);
	}
	return egress_pg_kinesis_render(out, &ch, w->pgk_schema, w->pgk_table,
									w->pgkcols, w->st->ncolumns, w->lsn, w->pgk_time);
}

/*
 * pg_kinesis format: the row as an INSERT, handed to the sink as one
 * record whose partition key is the one the CDC worker gives the row's
 * changes (cdc_render.c): stream, then "|" and each key value.
 */
static void
pgk_write_row(SnapshotWriter *w, TupleTableSlot *slot)
{
	StringInfoData rec;

	initStringInfo(&rec);
	if (!pgk_render_row(w, slot, &rec))
		return;
	w->sink->ops->write_record(w->sink, rec.data, rec.len,
							   row_partition_key(w, slot));
	w->batch_bytes += rec.len;
}

/* set up pg_kinesis rendering when the sink asks for it (see SnapshotWriter) */
static void
pgk_setup(SnapshotWriter *w, bool log_based)
{
	if (!log_based || w->sink->ops->write_record == NULL ||
		strcmp(w->sink->kind, "kinesis") != 0 ||
		w->sink->opts.format == NULL ||
		strcmp(w->sink->opts.format, "pg_kinesis") != 0)
		return;
	w->pgk = true;
	w->pgkcols = egress_pg_kinesis_columns_of(w->st->columns, w->st->ncolumns);
	w->pgkout = palloc0(sizeof(Oid) * Max(w->st->ncolumns, 1));
	for (int i = 0; i < w->st->ncolumns; i++)
	{
		bool		isvarlena;

		getTypeOutputInfo(w->pgkcols[i].basetypid, &w->pgkout[i], &isvarlena);
	}
	w->pgk_schema = get_namespace_name(get_rel_namespace(w->def->relid));
	w->pgk_table = get_rel_name(w->def->relid);
	if (w->pgk_schema == NULL || w->pgk_table == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation %s of stream \"%s\" no longer exists",
						w->def->relation, w->def->name)));
	w->pgk_time = GetCurrentTimestamp();
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
	if (w->pgk)
		pgk_write_row(w, slot);
	else
	{
		int			start = w->buf.len;

		egress_singer_record(&w->buf, w->st, slot->tts_values, slot->tts_isnull,
							 w->version, w->time_extracted.data, w->extra);
		if (w->krec)
		{
			/* the lines before (SCHEMA...) as lines, the RECORD with its key */
			int			len = w->buf.len - start;

			if (start > 0)
			{
				w->sink->ops->write(w->sink, w->buf.data, start);
				w->batch_bytes += start;
			}
			while (len > 0 && w->buf.data[start + len - 1] == '\n')
				len--;
			w->sink->ops->write_record(w->sink, w->buf.data + start, len,
									   row_partition_key(w, slot));
			w->batch_bytes += w->buf.len - start;
			resetStringInfo(&w->buf);
		}
	}
	MemoryContextSwitchTo(oldcxt);
	w->batch_rows++;

	if (w->inc)
	{
		/* keep the position: the slot is gone when the batch is cut */
		MemoryContextReset(w->poscxt);
		oldcxt = MemoryContextSwitchTo(w->poscxt);
		for (int i = 0; i < w->npos; i++)
		{
			int			c = w->poscol[i];

			w->posnull[i] = slot->tts_isnull[c];
			w->posval[i] = w->posnull[i] ? (Datum) 0 :
				datumCopy(slot->tts_values[c], w->posbyval[i], w->poslen[i]);
		}
		MemoryContextSwitchTo(oldcxt);
		w->have_pos = true;
	}

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

/*
 * Without SELECT on the table: SELECT on every column the stream reads
 * (all of them, or those of option "columns" that still exist).
 */
bool
egress_columns_readable(EgressStreamDef *def)
{
	ListCell   *lc;

	if (def->columns == NIL)
		return pg_attribute_aclcheck_all(def->relid, def->owner, ACL_SELECT,
										 ACLMASK_ALL) == ACLCHECK_OK;
	foreach(lc, def->columns)
	{
		AttrNumber	attnum = get_attnum(def->relid, lfirst(lc));

		if (attnum > 0 &&
			pg_attribute_aclcheck(def->relid, attnum, def->owner, ACL_SELECT) != ACLCHECK_OK)
			return false;
	}
	return true;
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
		!egress_columns_readable(def))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", def->relation),
				 errdetail("Stream \"%s\" reads with the privileges of role \"%s\".",
						   def->name, rolname)));
}

static int
column_index(EgressSingerStream *st, const char *name)
{
	for (int i = 0; i < st->ncolumns; i++)
		if (strcmp(st->columns[i].name, name) == 0)
			return i;
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_COLUMN),
			 errmsg("column \"%s\" of the stream's relation no longer exists", name)));
	return -1;					/* keep compiler quiet */
}

/* the rows the plan of an open cursor expects, -1 if it has no plan */
static double
portal_row_estimate(Portal portal)
{
	PlannedStmt *ps;

	if (portal->stmts == NIL)
		return -1;
	ps = (PlannedStmt *) linitial(portal->stmts);
	if (!IsA(ps, PlannedStmt) || ps->planTree == NULL)
		return -1;
	return ps->planTree->plan_rows;
}

static void
snapshot_write(EgressStreamDef *def, EgressSink *sink,
			   EgressWorkerSlot *slot, int64 version,
			   bool log_based, XLogRecPtr lsn,
			   EgressIncrementalSpec *inc,
			   const EgressSnapshotPart *part,
			   EgressSnapshotResult *result)
{
	SnapshotWriter *w;
	MemoryContext oldcxt;
	MemoryContext writercxt;
	EgressOwnerSave owner_save;
	StringInfoData sql;
	Portal		portal;
	SPIPlanPtr	plan;
	bool		debug_lsn = false;
	Oid		   *argtypes = NULL;
	Datum	   *argvalues = NULL;

	/* FULL_TABLE fast sync: one CSV export and a message pointing at it */
	if (!log_based && inc == NULL && part == NULL && egress_fast_sync_enabled(def))
	{
		egress_progress_begin(slot, egress_relation_reltuples(def->relid));
		egress_fast_sync_write(def, sink, slot, version, result);
		egress_progress_acked(slot);
		egress_progress_rows(slot, result->rows);
		egress_progress_end(slot);
		return;
	}

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
	w->part = part;
	w->max_rows = egress_stream_batch_rows(def);
	w->max_bytes = egress_stream_batch_bytes(def);
	if (log_based)
		(void) egress_jsonb_get_bool(def->options, "debug_lsn", &debug_lsn);
	/* only the stream's columns (option "columns") */
	w->st = egress_singer_stream_for_def(def, true, debug_lsn);
	keys_setup(w);
	pgk_setup(w, log_based);
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
	else if (inc == NULL)
		egress_singer_bookmark_full_table(&w->bookmark, version);
	memset(result, 0, sizeof(*result));

	if (inc)
	{
		ListCell   *lc;
		int			i = 1;

		w->inc = inc;
		w->st->replication_key = pstrdup(inc->key);
		w->npos = 1 + list_length(inc->pk);
		w->poscol = palloc(sizeof(int) * w->npos);
		w->posval = palloc0(sizeof(Datum) * w->npos);
		w->posnull = palloc0(sizeof(bool) * w->npos);
		w->poslen = palloc(sizeof(int16) * w->npos);
		w->posbyval = palloc(sizeof(bool) * w->npos);
		w->posout = palloc(sizeof(Oid) * w->npos);
		w->poscol[0] = column_index(w->st, inc->key);
		foreach(lc, inc->pk)
			w->poscol[i++] = column_index(w->st, (char *) lfirst(lc));
		for (i = 0; i < w->npos; i++)
		{
			bool		isvarlena;
			Oid			typid = w->st->columns[w->poscol[i]].typid;

			get_typlenbyval(typid, &w->poslen[i], &w->posbyval[i]);
			getTypeOutputInfo(typid, &w->posout[i], &isvarlena);
		}
		w->poscxt = AllocSetContextCreate(writercxt, "pg_egress position",
										  ALLOCSET_SMALL_SIZES);
	}

	/* a parallel sync's parts must not remove each other's batches */
	if (part == NULL || part->mode == EGRESS_SNAP_OPEN)
		sink->ops->cleanup(sink, def->name);

	/*
	 * A parallel sync's first and last batches carry no rows: SCHEMA and
	 * ACTIVATE_VERSION before all parts, the final ACTIVATE_VERSION and
	 * STATE after all of them were acknowledged.
	 */
	if (part != NULL && part->mode != EGRESS_SNAP_PART)
	{
		if (part->mode == EGRESS_SNAP_CLOSE)
			w->seq = 2;
		begin_batch(w);
		commit_batch(w, part->mode == EGRESS_SNAP_CLOSE);
		MemoryContextSwitchTo(oldcxt);
		MemoryContextDelete(writercxt);
		return;
	}

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

	/*
	 * Only the rows of the stream's filter: the expression as checked and
	 * deparsed by egress_filter_sql() (as the owner), never the text given.
	 */
	if (def->filter != NULL)
		appendStringInfo(&sql, " WHERE (%s)",
						 egress_filter_sql(def->relid, def->filter, def->owner, NULL));

	/*
	 * A part of a parallel sync: its blocks only (a TID range scan); the
	 * last part is open ended.
	 */
	if (part != NULL)
	{
		appendStringInfo(&sql, " %s ctid OPERATOR(pg_catalog.>=) '(%u,0)'::pg_catalog.tid",
						 def->filter != NULL ? "AND" : "WHERE", part->lo);
		if (part->hi != InvalidBlockNumber)
			appendStringInfo(&sql, " AND ctid OPERATOR(pg_catalog.<) '(%u,0)'::pg_catalog.tid",
							 part->hi);
	}
	if (inc)
	{
		ListCell   *lc;

		if (inc->where)
			appendStringInfo(&sql, " %s (%s)", def->filter != NULL ? "AND" : "WHERE",
							 inc->where);
		appendStringInfo(&sql, " ORDER BY %s%s", quote_identifier(inc->key),
						 inc->nulls_first ? " NULLS FIRST" : "");
		foreach(lc, inc->pk)
			appendStringInfo(&sql, ", %s", quote_identifier((char *) lfirst(lc)));
		if (inc->limit > 0)
			appendStringInfo(&sql, " LIMIT " INT64_FORMAT, inc->limit);
		argtypes = palloc(sizeof(Oid) * Max(inc->nargs, 1));
		argvalues = palloc(sizeof(Datum) * Max(inc->nargs, 1));
		for (int i = 0; i < inc->nargs; i++)
		{
			argtypes[i] = TEXTOID;
			argvalues[i] = CStringGetTextDatum(inc->args[i]);
		}
	}

	/* the columns queried are the stream's columns, in order: 1..n */
	for (int i = 0; i < w->st->ncolumns; i++)
		w->st->attnums[i] = i + 1;

	/*
	 * The query runs as the stream's owner: its privileges and row level
	 * security apply, and it can do nothing a restricted operation may not.
	 */
	egress_become_owner(def->owner, &owner_save);

	/*
	 * A sync's query names nothing unqualified, but user code it runs (row
	 * level security policies, functions they call) must not find names
	 * through the worker's search_path.  (An INCREMENTAL run's condition
	 * resolves its key's comparison operators; incremental.c decides.)
	 */
	if (inc == NULL)
		egress_pin_search_path();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	plan = SPI_prepare(sql.data, inc ? inc->nargs : 0, argtypes);
	if (plan == NULL)
		elog(ERROR, "could not prepare \"%s\": %s", sql.data,
			 SPI_result_code_string(SPI_result));
	portal = SPI_cursor_open(NULL, plan, argvalues, NULL, true);
	/* how many rows the planner expects: egress_streams' progress and eta */
	if (part == NULL)
		egress_progress_begin(slot, portal_row_estimate(portal));
	(void) PortalRunFetch(portal, FETCH_FORWARD, FETCH_ALL, &w->pub);

	/*
	 * The last batch closes the version, even for an empty relation; an
	 * INCREMENTAL run that found nothing new sends nothing.
	 */
	if (inc == NULL && part == NULL && !w->batch_open)
		begin_batch(w);
	if (w->batch_open)
		commit_batch(w, part == NULL);
	if (part == NULL)
		egress_progress_end(slot);
	if (inc && w->have_pos)
		inc->bookmark = MemoryContextStrdup(oldcxt, w->bookmark.data);

	SPI_cursor_close(portal);
	SPI_finish();
	egress_restore_owner(&owner_save);

	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(writercxt);
}

void
egress_snapshot_write(EgressStreamDef *def, EgressSink *sink,
					  EgressWorkerSlot *slot, int64 version,
					  bool log_based, XLogRecPtr lsn,
					  EgressSnapshotResult *result)
{
	snapshot_write(def, sink, slot, version, log_based, lsn, NULL, NULL, result);
}

void
egress_snapshot_write_part(EgressStreamDef *def, EgressSink *sink,
						   EgressWorkerSlot *slot, int64 version,
						   const EgressSnapshotPart *part,
						   EgressSnapshotResult *result)
{
	snapshot_write(def, sink, slot, version, false, InvalidXLogRecPtr, NULL, part, result);
}

void
egress_snapshot_write_incremental(EgressStreamDef *def, EgressSink *sink,
								  EgressWorkerSlot *slot, int64 version,
								  EgressIncrementalSpec *inc,
								  EgressSnapshotResult *result)
{
	inc->bookmark = NULL;
	snapshot_write(def, sink, slot, version, false, InvalidXLogRecPtr, inc, NULL, result);
}

/* ---- chunks of a LOG_BASED chunked backfill (cdc_backfill.c) ---------------- */

#include "access/htup_details.h"
#include "catalog/pg_am.h"
#include "catalog/pg_operator.h"
#include "commands/defrem.h"
#include "utils/typcache.h"

typedef struct ChunkReader
{
	SnapshotWriter w;			/* must be first: its DestReceiver */
	EgressChunkSpec *spec;
	int			nkey;
	Oid		   *keyout;			/* output functions of the key columns */
	int		   *keycol;			/* where in the query's row each key column is */
	StringInfoData row;
	StringInfoData key;
	StringInfoData lastkey;		/* key text of the last row kept */

	/*
	 * Keys as Datums (EgressChunkSpec.key_datums): the values of the last
	 * row kept, its text made once at the end.
	 */
	bool		rawkeys;
	Datum	   *keyvals;
	Datum	   *lastvals;
	bool		havelast;
	bool		full;			/* max_bytes reached */
	int64		fetched;		/* rows the query returned, kept or not */
	MemoryContext rowcxt;
	MemoryContext lastcxt;		/* spec->last */
} ChunkReader;

void
egress_chunk_key_append(StringInfo buf, const char *value)
{
	int			len = strlen(value);
	char		num[12];
	int			n;

	/* "<length>:<text>", without the cost of a format string per row */
	n = pg_ltoa(len, num);
	enlargeStringInfo(buf, n + 1 + len);
	memcpy(buf->data + buf->len, num, n);
	buf->data[buf->len + n] = ':';
	memcpy(buf->data + buf->len + n + 1, value, len + 1);
	buf->len += n + 1 + len;
}

/* A key given as Datums (EgressChunkSpec.keyout) as egress_chunk_key_append writes it. */
void
egress_chunk_key_from_datums(StringInfo buf, const Oid *keyout, int nkey,
							 const Datum *values)
{
	for (int i = 0; i < nkey; i++)
		egress_chunk_key_append(buf, OidOutputFunctionCall(keyout[i], values[i]));
}

static bool
chunk_receive(TupleTableSlot *slot, DestReceiver *self)
{
	ChunkReader *r = (ChunkReader *) self;
	SnapshotWriter *w = &r->w;
	MemoryContext oldcxt;
	char	   *partkey = NULL;
	StringInfo	out;
	int			start;
	int			len;
	int			rowlen;

	CHECK_FOR_INTERRUPTS();
	r->fetched++;
	if (r->full)
		return true;			/* the next chunk reads it */

	/*
	 * What rendering allocates goes every few rows: a handful of rows fit in
	 * the context's first blocks, which a reset keeps or hands back cheaply.
	 */
	if ((r->fetched & 15) == 0)
		MemoryContextReset(r->rowcxt);
	oldcxt = MemoryContextSwitchTo(r->rowcxt);
	slot_getallattrs(slot);
	out = r->spec->row_target ? r->spec->row_target(r->spec->arg) : NULL;
	if (out == NULL)
	{
		out = &r->row;
		resetStringInfo(out);
	}
	start = out->len;
	resetStringInfo(&r->key);
	for (int i = 0; i < r->nkey; i++)
	{
		int			c = r->keycol[i];

		if (slot->tts_isnull[c])
			ereport(ERROR,
					(errcode(ERRCODE_NOT_NULL_VIOLATION),
					 errmsg("key column \"%s\" of %s holds a null",
							r->spec->keycols[i], w->def->relation)));
		if (r->rawkeys)
			r->keyvals[i] = slot->tts_values[c];
		else
			egress_chunk_key_append(&r->key,
									OidOutputFunctionCall(r->keyout[i], slot->tts_values[c]));
	}
	if (r->rawkeys)
		appendBinaryStringInfo(&r->key, (char *) r->keyvals, sizeof(Datum) * r->nkey);
	if (w->pgk)
	{
		if (!pgk_render_row(w, slot, out))
		{
			out->len = start;
			out->data[start] = '\0';
			MemoryContextSwitchTo(oldcxt);
			return true;
		}
	}
	else
		egress_singer_record(out, w->st, slot->tts_values, slot->tts_isnull,
							 w->version, w->time_extracted.data, w->extra);
	len = out->len - start;
	rowlen = len;
	if (w->krec || w->pgk)
	{
		partkey = row_partition_key(w, slot);
		/* a record: the line end is not part of it */
		while (len > 0 && out->data[start + len - 1] == '\n')
			len--;
	}
	r->spec->row(r->spec->arg, r->key.data, r->key.len, out->data + start, len, partkey);
	r->spec->rows++;
	r->spec->bytes += rowlen;

	/* the position of the last row kept: its key text (see chunk_last) */
	if (r->rawkeys)
	{
		memcpy(r->lastvals, r->keyvals, sizeof(Datum) * r->nkey);
		r->havelast = true;
	}
	else
	{
		resetStringInfo(&r->lastkey);
		appendBinaryStringInfo(&r->lastkey, r->key.data, r->key.len);
	}
	MemoryContextSwitchTo(oldcxt);
	if (r->spec->max_bytes > 0 && r->spec->bytes >= r->spec->max_bytes)
		r->full = true;
	return true;
}

/*
 * "OPERATOR(schema.name)" of the btree operator of strategy "strategy" of
 * the default btree operator class of type typid, or NULL.
 */
static char *
chunk_operator(Oid typid, int16 strategy, Oid *nspp)
{
	Oid			base = getBaseType(typid);
	Oid			opclass = GetDefaultOpClass(base, BTREE_AM_OID);
	Oid			opfamily;
	Oid			opcintype;
	Oid			opno;
	HeapTuple	tup;
	Form_pg_operator op;
	char	   *result;

	if (!OidIsValid(opclass))
		return NULL;
	opfamily = get_opclass_family(opclass);
	opcintype = get_opclass_input_type(opclass);
	opno = get_opfamily_member(opfamily, opcintype, opcintype, strategy);
	if (!OidIsValid(opno))
		return NULL;
	tup = SearchSysCache1(OPEROID, ObjectIdGetDatum(opno));
	if (!HeapTupleIsValid(tup))
		return NULL;
	op = (Form_pg_operator) GETSTRUCT(tup);
	*nspp = op->oprnamespace;
	result = psprintf("OPERATOR(%s.%s)",
					  quote_identifier(get_namespace_name(op->oprnamespace)),
					  NameStr(op->oprname));
	ReleaseSysCache(tup);
	return result;
}

void
egress_snapshot_read_chunk(EgressStreamDef *def, EgressSink *sink,
						   EgressChunkSpec *spec)
{
	ChunkReader *r;
	SnapshotWriter *w;
	MemoryContext oldcxt;
	MemoryContext readercxt;
	EgressOwnerSave owner_save;
	StringInfoData sql;
	Portal		portal;
	SPIPlanPtr	plan;
	bool		debug_lsn = false;
	Oid		   *argtypes;
	Datum	   *argvalues;
	char	   *filter = NULL;
	bool		where = false;
	char	  **keytypes;

	egress_check_relation_access(def);

	spec->rows = spec->bytes = 0;
	spec->end = false;
	spec->last = NULL;
	spec->keyout = NULL;
	readercxt = AllocSetContextCreate(CurrentMemoryContext, "pg_egress chunk",
									  ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(readercxt);
	r = palloc0(sizeof(ChunkReader));
	w = &r->w;
	r->spec = spec;
	r->nkey = spec->nkey;
	r->lastcxt = oldcxt;
	r->rowcxt = AllocSetContextCreate(readercxt, "pg_egress chunk row",
									  ALLOCSET_DEFAULT_SIZES);
	w->pub.receiveSlot = chunk_receive;
	w->pub.rStartup = writer_startup;
	w->pub.rShutdown = writer_noop;
	w->pub.rDestroy = writer_noop;
	w->pub.mydest = DestNone;
	w->def = def;
	w->sink = sink;
	w->version = spec->version;
	w->lsn = spec->lsn;
	(void) egress_jsonb_get_bool(def->options, "debug_lsn", &debug_lsn);
	w->st = egress_singer_stream_for_def(def, true, debug_lsn);
	keys_setup(w);
	pgk_setup(w, true);
	initStringInfo(&w->buf);
	initStringInfo(&w->time_extracted);
	egress_append_time_extracted(&w->time_extracted, GetCurrentTimestamp());
	w->extra = debug_lsn ? ",\"_sdc_deleted_at\":null,\"_sdc_lsn\":null" :
		",\"_sdc_deleted_at\":null";
	initStringInfo(&r->row);
	initStringInfo(&r->key);
	initStringInfo(&r->lastkey);

	/* the key columns' types: output functions, casts of the position */
	r->keyout = palloc0(sizeof(Oid) * Max(r->nkey, 1));
	keytypes = palloc0(sizeof(char *) * Max(r->nkey, 1));
	argtypes = palloc(sizeof(Oid) * Max(r->nkey, 1));
	argvalues = palloc(sizeof(Datum) * Max(r->nkey, 1));
	for (int i = 0; i < r->nkey; i++)
	{
		AttrNumber	attnum = get_attnum(def->relid, spec->keycols[i]);
		Oid			typid;
		int32		typmod;
		Oid			collid;
		bool		isvarlena;

		if (attnum == InvalidAttrNumber)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("key column \"%s\" of %s no longer exists",
							spec->keycols[i], def->relation)));
		get_atttypetypmodcoll(def->relid, attnum, &typid, &typmod, &collid);
		getTypeOutputInfo(typid, &r->keyout[i], &isvarlena);
		keytypes[i] = format_type_extended(typid, typmod,
										   FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY);
		argtypes[i] = TEXTOID;
		argvalues[i] = spec->after ? CStringGetTextDatum(spec->after[i]) : (Datum) 0;
	}

	/*
	 * Keys whose text does not depend on any setting (integers, oid) may go
	 * to the caller as Datums, when it takes them so: the text is made only
	 * for the rows it must compare (egress_chunk_key_from_datums).
	 */
	r->rawkeys = spec->key_datums && r->nkey > 0;
	for (int i = 0; i < r->nkey && r->rawkeys; i++)
	{
		Oid			typid = get_atttype(def->relid, get_attnum(def->relid, spec->keycols[i]));

		if (typid != INT2OID && typid != INT4OID && typid != INT8OID && typid != OIDOID)
			r->rawkeys = false;
	}
	if (r->rawkeys)
	{
		r->keyvals = palloc0(sizeof(Datum) * r->nkey);
		r->lastvals = palloc0(sizeof(Datum) * r->nkey);
		spec->keyout = MemoryContextAlloc(r->lastcxt, sizeof(Oid) * r->nkey);
		memcpy(spec->keyout, r->keyout, sizeof(Oid) * r->nkey);
	}

	if (def->filter != NULL)
		filter = egress_filter_sql(def->relid, def->filter, def->owner, NULL);

	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT ");
	for (int i = 0; i < w->st->ncolumns; i++)
		appendStringInfo(&sql, "%s%s", i > 0 ? ", " : "",
						 quote_identifier(w->st->columns[i].name));
	if (w->st->ncolumns == 0)
		appendStringInfoString(&sql, "1");

	/*
	 * The key columns: those the stream reads are taken from its columns
	 * (a query of the table's columns as they are needs no projection), the
	 * others are read after them.
	 */
	r->keycol = palloc(sizeof(int) * Max(r->nkey, 1));
	for (int i = 0, extra = 0; i < r->nkey; i++)
	{
		r->keycol[i] = -1;
		for (int j = 0; j < w->st->ncolumns && r->keycol[i] < 0; j++)
			if (strcmp(w->st->columns[j].name, spec->keycols[i]) == 0)
				r->keycol[i] = j;
		if (r->keycol[i] < 0)
		{
			/* after the stream's columns, or the "1" that stands for none */
			r->keycol[i] = Max(w->st->ncolumns, 1) + extra++;
			appendStringInfo(&sql, ", %s", quote_identifier(spec->keycols[i]));
		}
	}
	appendStringInfo(&sql, " FROM %s",
					 quote_qualified_identifier(get_namespace_name(get_rel_namespace(def->relid)),
												get_rel_name(def->relid)));
	if (filter != NULL)
	{
		appendStringInfo(&sql, " WHERE (%s)", filter);
		where = true;
	}
	if (r->nkey == 0)
		appendStringInfo(&sql, " %s ctid OPERATOR(pg_catalog.>=) '(%u,0)'::pg_catalog.tid "
						 "AND ctid OPERATOR(pg_catalog.<) '(%u,0)'::pg_catalog.tid",
						 where ? "AND" : "WHERE", spec->blk_from, spec->blk_to);
	else
	{
		if (spec->after != NULL)
		{
			char	  **ops = palloc(sizeof(char *) * r->nkey);
			Oid			nsp0 = InvalidOid;
			bool		same = true;

			for (int i = 0; i < r->nkey; i++)
			{
				Oid			nsp = InvalidOid;
				AttrNumber	attnum = get_attnum(def->relid, spec->keycols[i]);

				ops[i] = chunk_operator(get_atttype(def->relid, attnum),
										BTGreaterStrategyNumber, &nsp);
				if (ops[i] == NULL)
					ereport(ERROR,
							(errcode(ERRCODE_UNDEFINED_FUNCTION),
							 errmsg("key column \"%s\" of %s has no default btree ordering",
									spec->keycols[i], def->relation),
							 errhint("Set the stream's option \"chunk_rows\" to 0.")));
				if (i == 0)
					nsp0 = nsp;
				else if (nsp != nsp0 || strcmp(ops[i], ops[0]) != 0)
					same = false;
			}
			appendStringInfo(&sql, " %s ", where ? "AND" : "WHERE");
			if (r->nkey == 1)
				appendStringInfo(&sql, "%s %s $1::%s",
								 quote_identifier(spec->keycols[0]), ops[0], keytypes[0]);
			else if (same)
			{
				/* a row comparison: one index range */
				appendStringInfoString(&sql, "(");
				for (int i = 0; i < r->nkey; i++)
					appendStringInfo(&sql, "%s%s", i > 0 ? ", " : "",
									 quote_identifier(spec->keycols[i]));
				appendStringInfo(&sql, ") %s (", ops[0]);
				for (int i = 0; i < r->nkey; i++)
					appendStringInfo(&sql, "%s$%d::%s", i > 0 ? ", " : "",
									 i + 1, keytypes[i]);
				appendStringInfoString(&sql, ")");
			}
			else
			{
				/* (a > $1) OR (a = $1 AND b > $2) ... */
				appendStringInfoString(&sql, "(");
				for (int i = 0; i < r->nkey; i++)
				{
					appendStringInfoString(&sql, i > 0 ? " OR (" : "(");
					for (int j = 0; j < i; j++)
					{
						Oid			nsp;
						char	   *eq = chunk_operator(get_atttype(def->relid,
																	 get_attnum(def->relid, spec->keycols[j])),
														BTEqualStrategyNumber, &nsp);

						appendStringInfo(&sql, "%s %s $%d::%s AND ",
										 quote_identifier(spec->keycols[j]), eq,
										 j + 1, keytypes[j]);
					}
					appendStringInfo(&sql, "%s %s $%d::%s)",
									 quote_identifier(spec->keycols[i]), ops[i],
									 i + 1, keytypes[i]);
				}
				appendStringInfoString(&sql, ")");
			}
		}
		appendStringInfoString(&sql, " ORDER BY ");
		for (int i = 0; i < r->nkey; i++)
			appendStringInfo(&sql, "%s%s", i > 0 ? ", " : "",
							 quote_identifier(spec->keycols[i]));
		if (spec->max_rows > 0)
			appendStringInfo(&sql, " LIMIT " INT64_FORMAT, spec->max_rows);
	}

	/* the columns queried are the stream's columns, in order: 1..n */
	for (int i = 0; i < w->st->ncolumns; i++)
		w->st->attnums[i] = i + 1;

	/* as the stream's owner, as snapshot_write runs the initial sync */
	egress_become_owner(def->owner, &owner_save);
	egress_pin_search_path();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	plan = SPI_prepare(sql.data, spec->after ? r->nkey : 0, argtypes);
	if (plan == NULL)
		elog(ERROR, "could not prepare \"%s\": %s", sql.data,
			 SPI_result_code_string(SPI_result));
	portal = SPI_cursor_open(NULL, plan, spec->after ? argvalues : NULL, NULL, true);
	(void) PortalRunFetch(portal, FETCH_FORWARD, FETCH_ALL, &w->pub);
	SPI_cursor_close(portal);
	SPI_finish();
	egress_restore_owner(&owner_save);

	/*
	 * The end of the table: a key range that came back short of its limit
	 * (and was not cut by max_bytes).  A block range decides by itself.
	 */
	if (r->nkey > 0)
	{
		spec->end = !r->full && (spec->max_rows <= 0 || r->fetched < spec->max_rows);
		if (r->havelast)
		{
			resetStringInfo(&r->lastkey);
			egress_chunk_key_from_datums(&r->lastkey, r->keyout, r->nkey, r->lastvals);
		}
		if (r->lastkey.len > 0)
		{
			/* <length>:<text> per key column (egress_chunk_key_append) */
			const char *p = r->lastkey.data;

			spec->last = MemoryContextAllocZero(r->lastcxt, sizeof(char *) * r->nkey);
			for (int i = 0; i < r->nkey; i++)
			{
				char	   *colon;
				long		len = strtol(p, &colon, 10);

				if (*colon != ':' || len < 0 || colon + 1 + len > r->lastkey.data + r->lastkey.len)
					elog(ERROR, "pg_egress: malformed chunk key");
				spec->last[i] = MemoryContextStrdup(r->lastcxt, pnstrdup(colon + 1, len));
				p = colon + 1 + len;
			}
		}
	}

	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(readercxt);
}
