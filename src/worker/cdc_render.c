/*-------------------------------------------------------------------------
 * cdc_render.c
 *	  CDC worker: rendering decoded changes as Singer records.  Owns running
 *	  user code as the stream's owner (as_owner_*), RECORD/ACTIVATE_VERSION
 *	  rendering (cdc_emit_*), and unchanged TOAST values: rows deferred and
 *	  read again once decoding pauses (defer_row, cdc_resolve_pending).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "worker/cdc_internal.h"

/*
 * Rendering a change can call user code: input functions that reach a
 * domain's CHECK (an array of a composite type with a domain field, a
 * range of a domain), and the TOAST re-read.  It runs as the stream's
 * owner under SECURITY_RESTRICTED_OPERATION with search_path pinned, as
 * snapshot.c runs the initial sync's query; never as the bootstrap
 * superuser the worker is.  An error there stops that stream only (the
 * error path of egress_cdc_main records it on cdc_syncing_stream); the
 * transaction's abort restores the user and the settings.
 */
typedef struct OwnerScope
{
	CdcStream  *s;
	bool		active;
	Oid			save_userid;
	int			save_sec;
	int			nestlevel;
} OwnerScope;

static void
as_owner_begin(CdcStream *s, OwnerScope *sc, bool always)
{
	sc->s = s;
	sc->active = always || s->user_code;
	if (!sc->active)
		return;
	GetUserIdAndSecContext(&sc->save_userid, &sc->save_sec);
	SetUserIdAndSecContext(s->def->owner,
						   sc->save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	sc->nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

static void
as_owner_end(OwnerScope *sc)
{
	if (!sc->active)
		return;
	/* settings the user code changed go too, as after an error */
	AtEOXact_GUC(false, sc->nestlevel);
	SetUserIdAndSecContext(sc->save_userid, sc->save_sec);
}

/* In PG_CATCH of code run by as_owner_begin: blame the stream, rethrow. */
static void
as_owner_failed(OwnerScope *sc)
{
	ErrorData  *edata;
	char	   *role;
	MemoryContext oldcxt = MemoryContextSwitchTo(cdc->decodecxt);

	edata = CopyErrorData();
	MemoryContextSwitchTo(oldcxt);
	/* FATAL and worse, a cancel, lack of memory: not the stream's fault */
	if (edata->elevel != ERROR ||
		edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
		edata->sqlerrcode == ERRCODE_OUT_OF_MEMORY)
		PG_RE_THROW();
	FlushErrorState();
	role = GetUserNameFromId(sc->s->def->owner, true);

	/*
	 * Errors of input functions (data exceptions) quote the value: row
	 * data, which must not reach the server log or egress_streams.
	 */
	if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) == ERRCODE_DATA_EXCEPTION)
		edata->message = psprintf("a value could not be read back (SQLSTATE %s)",
								  unpack_sql_state(edata->sqlerrcode));
	cdc_syncing_stream = sc->s->def->id;
	ereport(ERROR,
			(errcode(edata->sqlerrcode),
			 errmsg("stream \"%s\" stopped: a change could not be rendered as role \"%s\": %s",
					sc->s->def->name, role ? role : "?",
					edata->message),
			 errhint("Fix the cause, then call egress_resume_stream(); the stream is synchronized again.")));
}

static EgressChangeColumn *
find_column(EgressChangeColumn *cols, int ncols, const char *name, int *hint)
{
	/* wal2json writes columns in attribute order: try the next one first */
	if (*hint < ncols && strcmp(cols[*hint].name, name) == 0)
		return &cols[(*hint)++];
	for (int i = 0; i < ncols; i++)
		if (strcmp(cols[i].name, name) == 0)
		{
			*hint = i + 1;
			return &cols[i];
		}
	return NULL;
}

/* Append the rendering of a decoded column value. */
static void
append_value(StringInfo buf, EgressColumn *col, EgressChangeColumn *mc)
{
	if (mc->isnull)
		egress_column_value_text(buf, col, NULL, true);
	else if (mc->plain)
		egress_column_value_plain_text(buf, col,
									   egress_change_value_text(mc, col->basetypid));
	else
		egress_column_value_text(buf, col,
								 egress_change_value_text(mc, col->basetypid), false);
}

static void
append_sdc(StringInfo buf, CdcStream *s, bool deleted, bool first,
		   XLogRecPtr commit, TimestampTz commit_time)
{
	appendStringInfoString(buf, first ? "\"_sdc_deleted_at\":" : ",\"_sdc_deleted_at\":");
	if (deleted)
		egress_column_value(buf, &cdc->deleted_at_col, TimestampTzGetDatum(commit_time), false);
	else
		appendStringInfoString(buf, "null");
	if (s->debug_lsn)
		appendStringInfo(buf, ",\"_sdc_lsn\":\"" UINT64_FORMAT "\"", (uint64) commit);
}

/*
 * Unchanged TOASTed values are not in an UPDATE's WAL unless the old row
 * was logged whole (REPLICA IDENTITY FULL).  Otherwise the row is read
 * again by primary key, after decoding (with the current catalog: the
 * table may have been rewritten since the change), in the transaction
 * snapshot of the caller: the value may be newer than the change, never a
 * made-up null.  Returns NULL if the row is gone (a later change in the
 * WAL then carries its fate).
 */
static HeapTuple
reselect_row(CdcStream *s, EgressChange *ch, TupleDesc *descp)
{
	Relation	rel;
	Relation	idx;
	Oid			pkoid;
	IndexScanDesc scan;
	ScanKeyData keys[INDEX_MAX_KEYS];
	Form_pg_index indexform;
	Snapshot	snap;
	TupleTableSlot *slot;
	HeapTuple	result = NULL;

	rel = table_open(s->def->relid, AccessShareLock);
	pkoid = RelationGetPrimaryKeyIndex(rel);
	if (!OidIsValid(pkoid))
	{
		table_close(rel, AccessShareLock);
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot fill unchanged TOAST values of %s without a primary key",
						s->def->relation),
				 errhint("Set REPLICA IDENTITY FULL on the table.")));
	}
	idx = index_open(pkoid, AccessShareLock);
	indexform = idx->rd_index;
	for (int k = 0; k < indexform->indnkeyatts; k++)
	{
		AttrNumber	attno = indexform->indkey.values[k];
		Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), attno - 1);
		int			hint = 0;
		EgressChangeColumn *mc = find_column(ch->columns, ch->ncolumns,
											 NameStr(att->attname), &hint);
		Oid			typinput;
		Oid			typioparam;
		Oid			opfamily = idx->rd_opfamily[k];
		Oid			opno;
		Oid			basetype;
		Oid			coltype;
		int32		basetypmod = att->atttypmod;
		Datum		value;

		if (mc == NULL || mc->isnull)
			elog(ERROR, "pg_egress: key column \"%s\" missing from a decoded change",
				 NameStr(att->attname));

		/*
		 * The key as a type whose input function reaches no user code: it
		 * passed a domain's CHECK when it was written, and the CHECK is user
		 * code, which a plain SELECT by the owner would not run.  A domain
		 * is read as its base type, an array of a domain as the array of
		 * the base type, relabelled below to the column's element type (the
		 * index's array_eq compares element types); egress_add_stream
		 * refuses keys that have no such type.
		 */
		basetype = egress_check_free_input_type(att->atttypid, &basetypmod);
		if (!OidIsValid(basetype))
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot read a row of %s again by its primary key column \"%s\"",
							s->def->relation, NameStr(att->attname)),
					 errdetail("Values of type %s cannot be read back without running code of the type's owners (a domain's CHECK).",
							   format_type_be(att->atttypid)),
					 errhint("Set REPLICA IDENTITY FULL on the table.")));
		getTypeInputInfo(basetype, &typinput, &typioparam);
		value = OidInputFunctionCall(typinput,
									 (char *) egress_change_value_text(mc, basetype),
									 typioparam, basetypmod);
		coltype = getBaseType(att->atttypid);
		if (basetype != coltype && type_is_array(coltype))
		{
			ArrayType  *arr = DatumGetArrayTypePCopy(value);

			ARR_ELEMTYPE(arr) = get_element_type(coltype);
			value = PointerGetDatum(arr);
		}
		opno = get_opfamily_member(opfamily, idx->rd_opcintype[k], idx->rd_opcintype[k],
								   BTEqualStrategyNumber);
		ScanKeyInit(&keys[k], k + 1, BTEqualStrategyNumber, get_opcode(opno), value);
		keys[k].sk_collation = idx->rd_indcollation[k];
	}

	snap = GetActiveSnapshot();
	slot = table_slot_create(rel, NULL);
	scan = index_beginscan(rel, idx, snap, indexform->indnkeyatts, 0);
	index_rescan(scan, keys, indexform->indnkeyatts, NULL, 0);
	if (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		shouldfree;
		HeapTuple	tup = ExecFetchSlotHeapTuple(slot, true, &shouldfree);

		/* detoast now: the snapshot goes away with this function */
		result = heap_copytuple(toast_flatten_tuple(tup, RelationGetDescr(rel)));
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(idx, AccessShareLock);
	*descp = CreateTupleDescCopy(RelationGetDescr(rel));
	table_close(rel, AccessShareLock);
	return result;
}

/* Render the new row of a change; again/againdesc supply what WAL lacked. */
static void
render_row(StringInfo buf, CdcStream *s, EgressSingerStream *st, EgressChange *ch,
		   HeapTuple again, TupleDesc againdesc, XLogRecPtr commit,
		   TimestampTz commit_time, int64 version, const char *time_extracted)
{
	int			hint = 0;
	int			ihint = 0;

	egress_singer_record_open(buf, st);
	for (int i = 0; i < st->ncolumns; i++)
	{
		EgressColumn *col = &st->columns[i];
		EgressChangeColumn *mc = find_column(ch->columns, ch->ncolumns, col->name, &hint);

		if (mc == NULL)
			mc = find_column(ch->identity, ch->nidentity, col->name, &ihint);
		if (i > 0)
			appendStringInfoChar(buf, ',');
		escape_json(buf, col->name);
		appendStringInfoChar(buf, ':');
		if (mc != NULL)
			append_value(buf, col, mc);
		else
		{
			int			attno = -1;
			bool		isnull = true;
			Datum		d = (Datum) 0;

			for (int a = 0; againdesc && a < againdesc->natts; a++)
				if (!TupleDescAttr(againdesc, a)->attisdropped &&
					strcmp(NameStr(TupleDescAttr(againdesc, a)->attname), col->name) == 0)
					attno = a + 1;
			if (attno > 0)
				d = heap_getattr(again, attno, againdesc, &isnull);
			egress_column_value(buf, col, d, isnull);
		}
	}
	append_sdc(buf, s, false, st->ncolumns == 0, commit, commit_time);
	egress_singer_record_close(buf, version, time_extracted);
}

static EgressChangeColumn *
copy_columns(EgressChangeColumn *cols, int n)
{
	EgressChangeColumn *c = palloc(sizeof(EgressChangeColumn) * Max(n, 1));

	for (int i = 0; i < n; i++)
	{
		c[i] = cols[i];
		c[i].name = pstrdup(cols[i].name);
		c[i].value = cols[i].value ? pstrdup(cols[i].value) : NULL;
	}
	return c;
}

/*
 * A record that must wait for a re-read: what the batch holds so far is
 * kept with it, and nothing more reaches the sink until decoding pauses.
 */
static void
defer_row(CdcStream *s, EgressChange *ch)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(cdc->pendcxt);
	PendingPiece *piece = palloc0(sizeof(PendingPiece));

	initStringInfo(&piece->text);
	appendBinaryStringInfo(&piece->text, cdc->buf.data, cdc->buf.len);
	resetStringInfo(&cdc->buf);
	piece->s = s;
	piece->st = s->st;
	piece->ch = *ch;
	piece->ch.columns = copy_columns(ch->columns, ch->ncolumns);
	piece->ch.identity = copy_columns(ch->identity, ch->nidentity);
	piece->commit = cdc->txn_commit;
	piece->commit_time = cdc->txn_time;
	piece->version = s->version;
	piece->time_extracted = pstrdup(cdc->time_extracted.data);
	cdc->pending = lappend(cdc->pending, piece);
	MemoryContextSwitchTo(oldcxt);
}

/* Outside decoding: re-read the deferred rows, hand everything to the sink. */
void
cdc_resolve_pending(void)
{
	ListCell   *lc;
	StringInfoData rec;
	List	   *pending = cdc->pending;

	if (pending == NIL)
		return;
	cdc->pending = NIL;			/* hand_to_sink may now write */

	cdc_start_catalog_transaction();
	PushActiveSnapshot(GetTransactionSnapshot());
	initStringInfo(&rec);
	foreach(lc, pending)
	{
		PendingPiece *p = lfirst(lc);
		TupleDesc	desc = NULL;
		HeapTuple	again;

		OwnerScope	sc;

		cdc->sink->ops->write(cdc->sink, p->text.data, p->text.len);
		cdc->batch_bytes += p->text.len;

		resetStringInfo(&rec);
		as_owner_begin(p->s, &sc, true);
		PG_TRY();
		{
			again = reselect_row(p->s, &p->ch, &desc);
			if (again != NULL)
				render_row(&rec, p->s, p->st, &p->ch, again, desc, p->commit,
						   p->commit_time, p->version, p->time_extracted);
		}
		PG_CATCH();
		{
			as_owner_failed(&sc);
		}
		PG_END_TRY();
		as_owner_end(&sc);
		if (again == NULL)
		{
			ereport(DEBUG1,
					(errmsg_internal("pg_egress stream \"%s\": the row of an UPDATE is gone; its later change carries it",
									 p->s->def->name)));
			p->s->rows_sent--;
			continue;
		}
		cdc->sink->ops->write(cdc->sink, rec.data, rec.len);
		cdc->batch_bytes += rec.len;
	}
	/* rec lived in the transaction's memory */
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextReset(cdc->pendcxt);
}

/*
 * The new row of an INSERT or UPDATE.  Columns wal2json left out are
 * unchanged TOASTed values: taken from the old row when it was logged
 * (REPLICA IDENTITY FULL), else read again once decoding pauses.
 */
void
cdc_emit_row(CdcStream *s, EgressChange *ch)
{
	int			hint = 0;
	int			ihint = 0;
	bool		missing = false;

	cdc_prepare_record(s);
	for (int i = 0; i < s->st->ncolumns && !missing; i++)
	{
		const char *name = s->st->columns[i].name;

		if (find_column(ch->columns, ch->ncolumns, name, &hint) == NULL &&
			find_column(ch->identity, ch->nidentity, name, &ihint) == NULL)
			missing = true;
	}
	if (missing)
		defer_row(s, ch);
	else
	{
		OwnerScope	sc;

		as_owner_begin(s, &sc, false);
		PG_TRY();
		{
			render_row(&cdc->buf, s, s->st, ch, NULL, NULL, cdc->txn_commit,
					   cdc->txn_time, s->version, cdc->time_extracted.data);
		}
		PG_CATCH();
		{
			as_owner_failed(&sc);
		}
		PG_END_TRY();
		as_owner_end(&sc);
	}
	s->rows_sent++;
	cdc_after_record();
}

/* The old key of an UPDATE that changed it, as a deletion of that key. */
void
cdc_emit_delete_key(CdcStream *s, EgressChange *ch)
{
	EgressChangeColumn *key = palloc(sizeof(EgressChangeColumn) * Max(ch->nidentity, 1));
	int			nkey = 0;
	ListCell   *lc;

	foreach(lc, s->st->key_properties)
	{
		int			hint = 0;
		EgressChangeColumn *c = find_column(ch->identity, ch->nidentity, lfirst(lc), &hint);

		if (c)
			key[nkey++] = *c;
	}
	cdc_emit_delete(s, key, nkey);
}

/* A deletion: the replica identity columns and the commit time. */
void
cdc_emit_delete(CdcStream *s, EgressChangeColumn *key, int nkey)
{
	volatile bool first = true;
	OwnerScope	sc;

	cdc_prepare_record(s);
	egress_singer_record_open(&cdc->buf, s->st);
	as_owner_begin(s, &sc, false);
	PG_TRY();
	{
		for (int i = 0; i < s->st->ncolumns; i++)
		{
			EgressColumn *col = &s->st->columns[i];
			int			hint = 0;
			EgressChangeColumn *mc = find_column(key, nkey, col->name, &hint);

			if (mc == NULL)
				continue;
			if (!first)
				appendStringInfoChar(&cdc->buf, ',');
			first = false;
			escape_json(&cdc->buf, col->name);
			appendStringInfoChar(&cdc->buf, ':');
			append_value(&cdc->buf, col, mc);
		}
	}
	PG_CATCH();
	{
		as_owner_failed(&sc);
	}
	PG_END_TRY();
	as_owner_end(&sc);
	append_sdc(&cdc->buf, s, true, first, cdc->txn_commit, cdc->txn_time);
	egress_singer_record_close(&cdc->buf, s->version, cdc->time_extracted.data);
	s->rows_sent++;
	cdc_after_record();
}

/*
 * Did an UPDATE change the primary key?  identity holds the old key (or,
 * with REPLICA IDENTITY FULL, the whole old row: only key columns count).
 */
bool
cdc_key_changed(CdcStream *s, EgressChange *ch)
{
	ListCell   *lc;

	foreach(lc, s->st->key_properties)
	{
		const char *name = lfirst(lc);
		int			hint = 0;
		int			ihint = 0;
		EgressChangeColumn *old = find_column(ch->identity, ch->nidentity, name, &ihint);
		EgressChangeColumn *new = find_column(ch->columns, ch->ncolumns, name, &hint);

		if (old == NULL || new == NULL)
			continue;			/* not logged: unchanged */
		if (old->isnull != new->isnull)
			return true;
		if (!old->isnull && strcmp(old->value, new->value) != 0)
			return true;
	}
	return false;
}

/*
 * A TRUNCATE of the stream's table: a new version, from which a target
 * drops the older rows.  The version is a function of the WAL (the commit
 * time in milliseconds, above the previous version), not of the clock, so
 * that a batch sent again after a crash carries the same version; the
 * version recorded with the bookmarks is the one of the acknowledged
 * batches (acked_version).
 */
void
cdc_emit_truncate(CdcStream *s)
{
	int64		commit_ms = cdc->txn_time / 1000 +
		(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;

	cdc_prepare_record(s);
	s->version = Max(commit_ms, s->version + 1);
	egress_singer_activate_version(&cdc->buf, s->st, s->version);
	cdc->batch_last_commit = cdc->txn_commit;
	cdc->txn_records++;
}
