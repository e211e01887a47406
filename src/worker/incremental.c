/*-------------------------------------------------------------------------
 * incremental.c
 *	  The INCREMENTAL run worker: sends the rows of a relation that come
 *	  after the stream's bookmark, in (replication key, primary key) order.
 *
 * The database worker starts one run per stream whenever its interval has
 * passed (or egress_sync_now() asked for one).  Three transactions, as for
 * FULL_TABLE syncs: claim the stream, read and write the rows (one query,
 * one snapshot, through the snapshot writer: the stream owner's privileges
 * under a restricted operation), record the new bookmark.
 *
 * Exactness: the bookmark holds the exact text of the last row's key and
 * primary key, and the next run reads WHERE (key, pk...) > (those), so rows
 * sharing the boundary key value are neither lost nor sent twice, whatever
 * the batch size or "limit".  The first run (no bookmark) reads every row,
 * those with a NULL key first (as the tap does); later runs see no NULL key
 * unless the first was cut among them.  Rows that commit behind the
 * bookmark are missed (docs/incremental.md says when).  A bookmark taken over from a tap holds only
 * replication_key_value; that run reads key >= value, as the tap would (the
 * rows with exactly that value are sent again once).  A crash in the middle
 * of a run sends that run's rows again (at least once).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/stratnum.h"
#include "access/xact.h"
#include "catalog/pg_operator.h"
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
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "catalog/catalog.h"
#include "catalog/sqlfuncs.h"
#include "encode/singer_types.h"
#include "pg_egress.h"
#include "shmem.h"
#include "sink/sink.h"
#include "worker/incremental.h"
#include "worker/snapshot.h"

/* Where a run starts. */
typedef struct RunStart
{
	int64		version;
	int64		run_id;			/* the run's start, epoch ms */
	int64		rows_before;	/* the stream's totals so far */
	int64		bytes_before;
	int64		batches_before;
	char	   *pos_key;		/* exact text of the last key sent, or NULL */
	List	   *pos_pk;			/* ... and of its primary key (char *) */
	char	   *key_value;		/* a tap's replication_key_value, or NULL */
} RunStart;

/* First transaction: take the stream and read where to start. */
static EgressStreamDef *
claim_run(int32 stream_id, RunStart *start)
{
	EgressCatalogGuard guard;
	EgressStreamDef *def;
	Oid			argtypes[3] = {INT4OID, INT8OID, BOOLOID};
	Datum		values[3];
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	bool		resync;
	Datum		d;
	MemoryContext workcxt = CurrentMemoryContext;

	if (!egress_worker_catalog_begin(&guard, false))
		return NULL;
	/* removed meanwhile: end quietly (see egress_lock_stream_state) */
	if (!egress_lock_stream_state(stream_id))
	{
		egress_worker_catalog_end(&guard);
		return NULL;
	}
	def = egress_load_stream(stream_id, TopMemoryContext);
	if (def == NULL || !def->enabled || strcmp(def->method, "INCREMENTAL") != 0)
	{
		egress_worker_catalog_end(&guard);
		return NULL;
	}

	values[0] = Int32GetDatum(stream_id);
	if (egress_catalog_exec("SELECT st.resync, st.version, st.rows_sent, "
							"st.bookmark OPERATOR(pg_catalog.->) 'pg_egress_position' "
							"OPERATOR(pg_catalog.->>) 'key', "
							"ARRAY(SELECT pg_catalog.jsonb_array_elements_text(st.bookmark "
							"OPERATOR(pg_catalog.->) 'pg_egress_position' OPERATOR(pg_catalog.->) 'pk')), "
							"CASE WHEN pg_catalog.jsonb_typeof(st.bookmark OPERATOR(pg_catalog.->) "
							"'replication_key_value') OPERATOR(pg_catalog.=) ANY ('{string,number}'::pg_catalog.text[]) "
							"THEN st.bookmark OPERATOR(pg_catalog.->>) 'replication_key_value' END, "
							"st.bytes_sent, st.batches_sent "
							"FROM egress.stream_state st WHERE st.stream_id OPERATOR(pg_catalog.=) $1 FOR UPDATE",
							1, argtypes, values, NULL, false) == 0)
	{
		/* the row is locked above; this is only a second guard */
		egress_worker_catalog_end(&guard);
		return NULL;
	}
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	resync = DatumGetBool(SPI_getbinval(tup, desc, 1, &isnull));
	d = SPI_getbinval(tup, desc, 2, &isnull);
	start->version = (resync || isnull) ? egress_next_version(def->prev_version) : DatumGetInt64(d);
	/* unique per run, so that no batch id names other rows later */
	start->run_id = egress_next_version(0);
	start->rows_before = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
	start->bytes_before = DatumGetInt64(SPI_getbinval(tup, desc, 7, &isnull));
	start->batches_before = DatumGetInt64(SPI_getbinval(tup, desc, 8, &isnull));
	start->pos_key = NULL;
	start->pos_pk = NIL;
	start->key_value = NULL;
	if (!resync)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(workcxt);
		char	   *s;

		s = SPI_getvalue(tup, desc, 4);
		start->pos_key = s ? pstrdup(s) : NULL;
		d = SPI_getbinval(tup, desc, 5, &isnull);
		if (!isnull)
		{
			Datum	   *elems;
			bool	   *nulls;
			int			nelems;

			deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
							  &elems, &nulls, &nelems);
			for (int i = 0; i < nelems; i++)
				start->pos_pk = lappend(start->pos_pk,
										nulls[i] ? NULL : TextDatumGetCString(elems[i]));
		}
		s = SPI_getvalue(tup, desc, 6);
		start->key_value = s ? pstrdup(s) : NULL;
		MemoryContextSwitchTo(oldcxt);
	}

	values[1] = Int64GetDatum(start->version);
	values[2] = BoolGetDatum(resync);
	egress_catalog_exec("UPDATE egress.stream_state SET state = 'syncing', resync = false, "
						"version = $2, bookmark = CASE WHEN $3 THEN NULL ELSE bookmark END, "
						"attempts = attempts OPERATOR(pg_catalog.+) 1, "
						"sync_started_at = pg_catalog.now(), updated_at = pg_catalog.now() "
						"WHERE stream_id OPERATOR(pg_catalog.=) $1",
						3, argtypes, values, NULL, false);
	egress_worker_catalog_end(&guard);
	return def;
}

/*
 * A column of the (key, primary key) position, as the run's WHERE compares
 * it: with the operators of its type's default btree ordering (the one
 * ORDER BY uses), each named with its own schema, and the type both sides
 * are cast to.  Nothing in the condition is looked up in a search path, so
 * no operator or type of the owner's schemas (or of anyone who may create
 * in them, e.g. in public) can stand in for the ordering.
 */
typedef struct PosColumn
{
	char	   *lhs;			/* the column, cast when needed */
	char	   *cast;			/* "::<qualified type>" for the parameter */
	char	   *op_gt;			/* "OPERATOR(schema.>)" */
	char	   *op_eq;
	char	   *op_ge;
} PosColumn;

static char *
btree_operator(Oid opfamily, Oid opintype, int16 strategy, const char *col)
{
	Oid			opr = get_opfamily_member(opfamily, opintype, opintype, strategy);
	HeapTuple	tup;
	Form_pg_operator form;
	char	   *result;

	if (!OidIsValid(opr))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("the ordering of column \"%s\" has no operator of btree strategy %d",
						col, strategy)));
	tup = SearchSysCache1(OPEROID, ObjectIdGetDatum(opr));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for operator %u", opr);
	form = (Form_pg_operator) GETSTRUCT(tup);
	result = psprintf("OPERATOR(%s.%s)",
					  quote_identifier(get_namespace_name(form->oprnamespace)),
					  NameStr(form->oprname));
	ReleaseSysCache(tup);
	return result;
}

static void
pos_column_init(PosColumn *pc, EgressStreamDef *def, const char *col)
{
	AttrNumber	att = get_attnum(def->relid, col);
	Oid			coltype;
	Oid			cmptype;
	TypeCacheEntry *tce;
	const char *qcol = quote_identifier(col);

	if (att == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of stream \"%s\" no longer exists", col, def->name)));
	coltype = get_atttype(def->relid, att);
	tce = lookup_type_cache(coltype, TYPECACHE_BTREE_OPFAMILY);
	if (!OidIsValid(tce->btree_opf))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("column \"%s\" of relation %s has type %s, which has no default ordering",
						col, def->relation, format_type_be(coltype))));

	/*
	 * Both sides are of the ordering's own input type (text for varchar, the
	 * base type for a domain); a polymorphic one (anyenum, anyarray, record)
	 * takes the column's type.  Typmod is left out: a bare "character" would
	 * mean character(1).
	 *
	 * The bookmark's value is parsed with that type, as the stream's owner:
	 * it must be one whose input function reaches no user code (a domain's
	 * CHECK is the table owner's code; see egress_check_free_input_type).
	 * An array of a domain compares as the array of the base type (same
	 * ordering: a domain's default btree ordering is its base type's); a
	 * composite with a domain field, or a range of a domain, has no such
	 * twin and egress_add_stream refuses it.
	 */
	cmptype = tce->btree_opintype;
	if (get_typtype(cmptype) == TYPTYPE_PSEUDO)
		cmptype = coltype;
	cmptype = egress_check_free_input_type(cmptype, NULL);
	if (!OidIsValid(cmptype))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("INCREMENTAL stream \"%s\" cannot resume by column \"%s\" of relation %s",
						def->name, col, def->relation),
				 errdetail("Values of type %s cannot be read back without running code of the type's owners (a domain's CHECK).",
						   format_type_be(coltype)),
				 errhint("Use a primary key without domains inside composite or range types, or use FULL_TABLE.")));
	pc->cast = psprintf("::%s",
						format_type_extended(cmptype, -1,
											 FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY));
	pc->lhs = cmptype == coltype ? pstrdup(qcol) : psprintf("%s%s", qcol, pc->cast);
	pc->op_gt = btree_operator(tce->btree_opf, tce->btree_opintype, BTGreaterStrategyNumber, col);
	pc->op_eq = btree_operator(tce->btree_opf, tce->btree_opintype, BTEqualStrategyNumber, col);
	pc->op_ge = btree_operator(tce->btree_opf, tce->btree_opintype, BTGreaterEqualStrategyNumber, col);
}

/*
 * (cols[0], ..., cols[n-1]) > ($first, ...), written out column by column
 * ("c0 > p0 OR (c0 = p0 AND (c1 > p1 OR ...))"): a row comparison takes
 * one operator name for all its columns, and they may have orderings of
 * different schemas.
 */
static void
append_after(StringInfo buf, PosColumn *cols, int n, int first)
{
	appendStringInfo(buf, "(%s %s $%d%s", cols[0].lhs, cols[0].op_gt, first, cols[0].cast);
	if (n > 1)
	{
		appendStringInfo(buf, " OR (%s %s $%d%s AND ",
						 cols[0].lhs, cols[0].op_eq, first, cols[0].cast);
		append_after(buf, cols + 1, n - 1, first + 1);
		appendStringInfoChar(buf, ')');
	}
	appendStringInfoChar(buf, ')');
}

/* Second transaction: the rows after the bookmark. */
static void
run_incremental(EgressStreamDef *def, EgressSink *sink, EgressWorkerSlot *slot,
				RunStart *start, EgressIncrementalSpec *inc,
				EgressSnapshotResult *result)
{
	StringInfoData where;
	AttrNumber	keyatt;
	const char *qkey;
	int64		limit = 0;
	PosColumn  *pos;
	int			npos;
	bool		have_pos;
	ListCell   *lc;
	int			nestlevel;
	MemoryContext callercxt = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "INCREMENTAL run");

	egress_check_relation_access(def);
	keyatt = get_attnum(def->relid, def->replication_key);
	if (keyatt == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("replication key \"%s\" of stream \"%s\" no longer exists",
						def->replication_key, def->name)));
	memset(inc, 0, sizeof(*inc));
	inc->key = def->replication_key;
	inc->pk = egress_primary_key_columns(def->relid);
	if (inc->pk == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("relation %s of INCREMENTAL stream \"%s\" has no primary key",
						def->relation, def->name),
				 errdetail("INCREMENTAL streams resume by replication key and primary key.")));
	if (egress_jsonb_get_int64(def->options, "limit", &limit) && limit > 0)
		inc->limit = limit;
	inc->run_id = start->run_id;
	inc->rows_before = start->rows_before;
	inc->bytes_before = start->bytes_before;
	inc->batches_before = start->batches_before;

	npos = 1 + list_length(inc->pk);
	pos = palloc(sizeof(PosColumn) * npos);
	pos_column_init(&pos[0], def, def->replication_key);
	foreach(lc, inc->pk)
		pos_column_init(&pos[1 + foreach_current_index(lc)], def, (char *) lfirst(lc));
	qkey = quote_identifier(def->replication_key);
	have_pos = start->pos_pk != NIL && list_length(start->pos_pk) == list_length(inc->pk);
	initStringInfo(&where);
	inc->nargs = 0;
	inc->args = palloc(sizeof(char *) * npos);
	if (have_pos)
	{
		foreach(lc, start->pos_pk)
			if (lfirst(lc) == NULL)
				elog(ERROR, "bookmark of stream \"%s\" has a null primary-key value", def->name);
	}
	if (have_pos && start->pos_key != NULL)
	{
		/*
		 * After the last (key, primary key) sent; "key >= $1" first, so that
		 * an index on the key bounds the scan.
		 */
		inc->args[inc->nargs++] = start->pos_key;
		foreach(lc, start->pos_pk)
			inc->args[inc->nargs++] = lfirst(lc);
		appendStringInfo(&where, "%s %s $1%s AND ", pos[0].lhs, pos[0].op_ge, pos[0].cast);
		append_after(&where, pos, npos, 1);
	}
	else if (have_pos)
	{
		/*
		 * The last row sent had a NULL key (the first run was cut by
		 * "limit" among them): the rest of those, then every other row.
		 */
		foreach(lc, start->pos_pk)
			inc->args[inc->nargs++] = lfirst(lc);
		appendStringInfo(&where, "(%s IS NULL AND ", qkey);
		append_after(&where, pos + 1, npos - 1, 1);
		appendStringInfo(&where, ") OR %s IS NOT NULL", qkey);
		inc->nulls_first = true;
	}
	else if (start->pos_key != NULL || start->key_value != NULL)
	{
		/*
		 * Only a key value (taken over from a tap, or the primary key
		 * changed): from that value on, that value included.
		 */
		inc->args[inc->nargs++] = start->pos_key ? start->pos_key : start->key_value;
		appendStringInfo(&where, "%s %s $1%s", pos[0].lhs, pos[0].op_ge, pos[0].cast);
	}
	else
	{
		/*
		 * No bookmark yet (a new stream, a resync): every row, those with a
		 * NULL key first, as the tap's first run sends them.
		 */
		inc->nulls_first = true;
	}
	inc->where = where.len > 0 ? where.data : NULL;

	/*
	 * The query runs as the stream's owner under a security-restricted
	 * operation (the snapshot writer's doing); its names resolve in
	 * pg_catalog only, never in the schemas of the owner's search path.
	 */
	nestlevel = NewGUCNestLevel();
	egress_pin_search_path();
	egress_snapshot_write_incremental(def, sink, slot, start->version, inc, result);
	AtEOXact_GUC(true, nestlevel);
	/* it is in the transaction's memory, gone at commit */
	if (inc->bookmark)
		inc->bookmark = MemoryContextStrdup(callercxt, inc->bookmark);

	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Third transaction: the run is done; record the bookmark.  A run asked
 * for meanwhile (egress_sync_now() set 'pending') stays asked for.
 */
static void
finish_run(EgressStreamDef *def, RunStart *start, EgressIncrementalSpec *inc,
		   EgressSnapshotResult *result)
{
	EgressCatalogGuard guard;
	Oid			argtypes[6] = {INT4OID, INT8OID, JSONBOID, INT8OID, INT8OID, INT8OID};
	Datum		values[6];
	char		nulls[6] = "      ";

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());

	egress_catalog_enter(&guard);
	egress_record_success_begin(&def->id, 1);
	values[0] = Int32GetDatum(def->id);
	values[1] = Int64GetDatum(start->version);
	if (inc->bookmark)
		values[2] = DirectFunctionCall1(jsonb_in, CStringGetDatum(inc->bookmark));
	else
		nulls[2] = 'n';
	values[3] = Int64GetDatum(result->rows);
	values[4] = Int64GetDatum(result->bytes);
	values[5] = Int64GetDatum(result->batches);
	egress_catalog_exec("UPDATE egress.stream_state SET "
						"state = CASE WHEN state OPERATOR(pg_catalog.=) 'pending' "
						"THEN 'pending' ELSE 'synced' END, "
						"bookmark = coalesce($3, bookmark), "
						"rows_sent = rows_sent OPERATOR(pg_catalog.+) $4, "
						"bytes_sent = bytes_sent OPERATOR(pg_catalog.+) $5, "
						"batches_sent = batches_sent OPERATOR(pg_catalog.+) $6, "
						"last_error = NULL, last_error_at = NULL, attempts = 0, "
						"sync_finished_at = pg_catalog.now(), updated_at = pg_catalog.now() "
						"WHERE stream_id OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2",
						6, argtypes, values, nulls, false);
	egress_record_success(&def->id, 1);
	egress_worker_catalog_end(&guard);
}

/* the sink of the running run, for the error path */
static EgressSink *current_sink = NULL;

static void
incremental_stream(int32 stream_id, EgressWorkerSlot *slot)
{
	EgressStreamDef *def;
	RunStart	start;
	EgressIncrementalSpec inc;
	EgressSnapshotResult result;

	def = claim_run(stream_id, &start);
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
	run_incremental(def, current_sink, slot, &start, &inc, &result);
	finish_run(def, &start, &inc, &result);
	ereport(DEBUG1,
			(errmsg_internal("pg_egress stream \"%s\": INCREMENTAL run sent " INT64_FORMAT " rows in " INT64_FORMAT " batches",
							 def->name, result.rows, result.batches)));
}

void
egress_incremental_main(Datum main_arg)
{
	egress_run_stream_worker(main_arg, incremental_stream, &current_sink);
}
