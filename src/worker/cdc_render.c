/*-------------------------------------------------------------------------
 * cdc_render.c
 *	  CDC worker: rendering decoded changes as Singer records.  Owns running
 *	  user code as the stream's owner (as_owner_*), RECORD/ACTIVATE_VERSION
 *	  rendering (cdc_emit_*), and unchanged TOAST values: rows deferred and
 *	  read again once decoding pauses (defer_row, cdc_resolve_pending).
 *	  Deferred rows are bounded: past 10,000 rows or 16 MB decoding stops at
 *	  the next transaction boundary to resolve them, and inside one
 *	  transaction what is held goes to a temporary file (spilling()).
 *
 *	  Positions: for a sink that wants them (EgressSink.wants_positions:
 *	  postgres destinations), every RECORD and ACTIVATE_VERSION rendered
 *	  for a decoded change ends with a top-level key
 *	  "position":"XXXXXXXXXXXXXXXX-NNNNNNNNNN": the commit LSN of the
 *	  change's transaction as 16 upper-case hex digits, a dash, and the
 *	  0-based ordinal of this line among the lines of this stream rendered
 *	  for that transaction, as 10 decimal digits.  A stream's positions
 *	  are strictly increasing and compare as strings; they depend only on
 *	  the WAL and the stream (not on other streams, batch cuts, sessions),
 *	  so a change decoded again after a crash gets the same position and a
 *	  target can skip what it already applied.  An UPDATE that changes the
 *	  key is two lines (the old key's deletion, then the row), two
 *	  positions; a deferred row (unchanged TOAST) gets the position of its
 *	  place, though its text is written later; a deferred row found gone
 *	  leaves its ordinal unused.  Snapshot and backfill rows, and the
 *	  ACTIVATE_VERSIONs around them, carry none: they are upserts by key.
 *	  Other sinks' output has no such key.
 *
 *	  Kinesis destinations with "format": "pg_kinesis" (cdc_pg_kinesis_format)
 *	  get no Singer messages: each INSERT/UPDATE/DELETE is rendered in
 *	  pg_kinesis' shape (encode/pg_kinesis.h) and handed to the sink as one
 *	  record with its partition key (write_record), computed here from the
 *	  change.  Unchanged TOASTed values are not re-read there: pg_kinesis
 *	  prints them as unchanged-toast-datum, and so does the renderer.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "storage/buffile.h"
#include "encode/pg_kinesis.h"
#include "worker/cdc_internal.h"

/* Output held back until deferred rows are re-read (see defer_row). */
typedef enum PieceKind
{
	PIECE_ROW,					/* held output, then a row to read again */
	PIECE_TEXT,					/* held output only (hold_output) */
	PIECE_SPILLED				/* the pieces in the spill file */
} PieceKind;

typedef struct PendingPiece
{
	PieceKind	kind;
	StringInfoData text;		/* batch output before the deferred record */
	StringInfoData keys;		/* its Kinesis records' keys (held_keys) */
	CdcStream  *s;
	EgressSingerStream *st;
	EgressChange ch;			/* action, columns and identity only */
	XLogRecPtr	commit;
	TimestampTz commit_time;
	int64		version;
	char	   *time_extracted;
	bool		has_position;
	char		position[EGRESS_POSITION_LEN + 1];	/* of its place */
} PendingPiece;

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
	EgressOwnerSave save;
} OwnerScope;

static void
as_owner_begin(CdcStream *s, OwnerScope *sc, bool always)
{
	sc->s = s;
	sc->active = always || s->user_code;
	if (!sc->active)
		return;
	egress_become_owner(s->def->owner, &sc->save);
	egress_pin_search_path();
}

static void
as_owner_end(OwnerScope *sc)
{
	if (!sc->active)
		return;
	/* settings the user code changed go too, as after an error */
	egress_restore_owner(&sc->save);
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

/*
 * The decoded value of a column, or NULL when the change does not carry it:
 * wal2json leaves an unchanged TOASTed value out, pgoutput marks it
 * unchanged ('u').  Both mean the same: not in the WAL.
 */
static EgressChangeColumn *
find_column(EgressChangeColumn *cols, int ncols, const char *name, int *hint)
{
	EgressChangeColumn *c = NULL;

	/* decoders give columns in attribute order: try the next one first */
	if (*hint < ncols && strcmp(cols[*hint].name, name) == 0)
		c = &cols[(*hint)++];
	else
		for (int i = 0; i < ncols; i++)
			if (strcmp(cols[i].name, name) == 0)
			{
				*hint = i + 1;
				c = &cols[i];
				break;
			}
	return (c != NULL && !c->unchanged) ? c : NULL;
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
 * The position of the next line of stream s in the transaction being
 * replayed (see the head of this file), written into out; NULL when the
 * sink wants none.  The ordinal counts either way.
 */
static const char *
next_position(CdcStream *s, char *out)
{
	int64		ordinal;

	if (s->pos_txn != cdc->txn_seq)
	{
		s->pos_txn = cdc->txn_seq;
		s->pos_next = 0;
	}
	ordinal = s->pos_next++;
	if (cdc->sink == NULL || !cdc->sink->wants_positions)
		return NULL;
	if (ordinal > INT64CONST(9999999999))
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("stream \"%s\": too many changes in one transaction",
						s->def->name)));
	/* "%08X%08X-%010d" of the commit LSN and the ordinal, once per line */
	{
		static const char hex[] = "0123456789ABCDEF";
		uint64		lsn = (uint64) cdc->txn_commit;

		for (int i = 15; i >= 0; i--, lsn >>= 4)
			out[i] = hex[lsn & 0xF];
		out[16] = '-';
		for (int i = EGRESS_POSITION_LEN - 1; i > 16; i--, ordinal /= 10)
			out[i] = '0' + (ordinal % 10);
		out[EGRESS_POSITION_LEN] = '\0';
	}
	return out;
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
		   TimestampTz commit_time, int64 version, const char *time_extracted,
		   const char *position)
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
	egress_singer_record_close_at(buf, version, time_extracted, position);
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
 * Deferred rows are bounded: past either limit, decoding stops at the end
 * of the record it is in (cdc_decode_round asks cdc_pending_over_limit),
 * the rows are read again and everything held goes to the sink.  A record
 * is a transaction boundary (decoding replays a whole transaction at its
 * commit record), so one transaction's deferred rows are held together.
 */
#define CDC_PENDING_MAX_ROWS	10000
#define CDC_PENDING_MAX_BYTES	(16 * 1024 * 1024)

static int64 pending_rows;		/* since cdc->pending was last empty */
static int64 pending_bytes;		/* their held output and decoded values */

bool
cdc_pending_over_limit(void)
{
	if (cdc->pending == NIL)
		return false;
	return pending_rows >= CDC_PENDING_MAX_ROWS ||
		pending_bytes + cdc->buf.len >= CDC_PENDING_MAX_BYTES;
}

static int64
columns_size(EgressChangeColumn *cols, int n)
{
	int64		size = sizeof(EgressChangeColumn) * Max(n, 1);

	for (int i = 0; i < n; i++)
		size += strlen(cols[i].name) + 1 + (cols[i].value ? strlen(cols[i].value) + 1 : 0);
	return size;
}

/*
 * Within one transaction decoding cannot stop, so past CDC_PENDING_MAX_BYTES
 * the deferred rows, and the output held behind them, go to a temporary
 * file instead of memory, in order, until they are resolved.  The list
 * then ends with a PIECE_SPILLED piece standing for the file's pieces.  The
 * file is closed (and removed) when the deferred rows' context is reset:
 * after they are resolved, and on the error path.
 */
static BufFile *spill_file = NULL;
static int64 spill_pieces = 0;
static MemoryContextCallback spill_cb;

static void
spill_close(void *arg)
{
	if (spill_file != NULL)
		BufFileClose(spill_file);
	spill_file = NULL;
	spill_pieces = 0;
}

static void
spill_write(const void *data, size_t len)
{
	BufFileWrite(spill_file, (void *) data, len);
}

static void
spill_write_str(const char *str, int len)
{
	int32		l = str ? len : -1;

	spill_write(&l, sizeof(l));
	if (l > 0)
		spill_write(str, l);
}

static void
spill_read(void *data, size_t len)
{
	if (len > 0 && BufFileRead(spill_file, data, len) != len)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read deferred changes from a temporary file")));
}

static char *
spill_read_str(int *lenp)
{
	int32		l;
	char	   *str;

	spill_read(&l, sizeof(l));
	if (lenp)
		*lenp = Max(l, 0);
	if (l < 0)
		return NULL;
	str = palloc(l + 1);
	spill_read(str, l);
	str[l] = '\0';
	return str;
}

static void
spill_write_columns(EgressChangeColumn *cols, int n)
{
	int32		nn = n;

	spill_write(&nn, sizeof(nn));
	for (int i = 0; i < n; i++)
	{
		bool		flags[5] = {cols[i].isnull, cols[i].unchanged, cols[i].raw_text,
		cols[i].quoted, cols[i].plain};

		spill_write_str(cols[i].name, strlen(cols[i].name));
		spill_write_str(cols[i].value, cols[i].value ? strlen(cols[i].value) : 0);
		spill_write(flags, sizeof(flags));
	}
}

static EgressChangeColumn *
spill_read_columns(int *np)
{
	int32		n;
	EgressChangeColumn *cols;

	spill_read(&n, sizeof(n));
	cols = palloc0(sizeof(EgressChangeColumn) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		bool		flags[5];

		cols[i].name = spill_read_str(NULL);
		cols[i].value = spill_read_str(NULL);
		spill_read(flags, sizeof(flags));
		cols[i].isnull = flags[0];
		cols[i].unchanged = flags[1];
		cols[i].raw_text = flags[2];
		cols[i].quoted = flags[3];
		cols[i].plain = flags[4];
	}
	*np = n;
	return cols;
}

/* Spill from now on?  Once spilling, until resolved. */
static bool
spilling(void)
{
	MemoryContext oldcxt;
	PendingPiece *marker;

	if (spill_file != NULL)
		return true;
	if (pending_bytes < CDC_PENDING_MAX_BYTES)
		return false;
	oldcxt = MemoryContextSwitchTo(cdc->pendcxt);
	spill_file = BufFileCreateTemp(true);	/* closed by spill_close */
	spill_pieces = 0;
	spill_cb.func = spill_close;
	spill_cb.arg = NULL;
	MemoryContextRegisterResetCallback(cdc->pendcxt, &spill_cb);
	marker = palloc0(sizeof(PendingPiece));
	marker->kind = PIECE_SPILLED;
	cdc->pending = lappend(cdc->pending, marker);
	MemoryContextSwitchTo(oldcxt);
	return true;
}

/*
 * Kinesis (write_record): the RECORDs rendered into cdc->buf while rows
 * are deferred stay in the buffer, in order, and their partition keys are
 * noted here (int32 offset in cdc->buf, int32 length without the line end,
 * the key with its NUL), so that the held output goes to the sink record
 * by record with its key (write_held) instead of being parsed again.  The
 * notes move with the buffer into a piece (take_buf, the spill file).
 */
static StringInfoData held_keys;

static char *pgk_partition_key_of(EgressSingerStream *st, EgressChange *ch);

static void
held_keys_reset(void)
{
	if (held_keys.data == NULL)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(TopMemoryContext);

		initStringInfo(&held_keys);
		MemoryContextSwitchTo(oldcxt);
	}
	resetStringInfo(&held_keys);
}

static void
held_key_add(int start, int len, const char *key)
{
	int32		v[2] = {start, len};

	if (held_keys.data == NULL)
		held_keys_reset();
	appendBinaryStringInfo(&held_keys, (char *) v, sizeof(v));
	appendBinaryStringInfo(&held_keys, key, strlen(key) + 1);
}

/*
 * Held output to the sink: each noted RECORD with its key, what lies
 * between them (SCHEMA, ACTIVATE_VERSION lines) as lines.
 */
static void
write_held(const char *text, int len, const char *keys, int klen)
{
	const char *k = keys;
	const char *kend = keys + klen;
	int			pos = 0;

	while (k != NULL && k + 2 * sizeof(int32) < kend)
	{
		int32		v[2];
		const char *key = k + sizeof(v);

		memcpy(v, k, sizeof(v));
		k = memchr(key, '\0', kend - key);
		if (k == NULL || v[0] < pos || v[1] < 0 || v[0] + v[1] > len)
			break;				/* not expected: the sink reads lines */
		k++;
		if (v[0] > pos)
			cdc->sink->ops->write(cdc->sink, text + pos, v[0] - pos);
		cdc->sink->ops->write_record(cdc->sink, text + v[0], v[1], key);
		pos = v[0] + v[1];
		if (pos < len && text[pos] == '\n')
			pos++;
	}
	if (pos < len)
		cdc->sink->ops->write(cdc->sink, text + pos, len - pos);
}

/* cdc->buf goes with the piece: exactly the size needed */
static void
take_buf(StringInfo text)
{
	text->maxlen = cdc->buf.len + 1;
	text->data = MemoryContextAlloc(cdc->pendcxt, text->maxlen);
	text->len = 0;
	text->cursor = 0;
	appendBinaryStringInfo(text, cdc->buf.data, cdc->buf.len);
	resetStringInfo(&cdc->buf);
}

/* the keys noted for the text just taken go with it */
static void
take_keys(StringInfo keys)
{
	keys->maxlen = held_keys.len + 1;
	keys->data = MemoryContextAlloc(cdc->pendcxt, keys->maxlen);
	keys->len = 0;
	keys->cursor = 0;
	if (held_keys.len > 0)
		appendBinaryStringInfo(keys, held_keys.data, held_keys.len);
	else
		keys->data[0] = '\0';
	if (held_keys.data != NULL)
		resetStringInfo(&held_keys);
}

/*
 * A record that must wait for a re-read: what the batch holds so far is
 * kept with it, and nothing more reaches the sink until decoding pauses.
 */
static void
defer_row(CdcStream *s, EgressChange *ch, const char *position)
{
	MemoryContext oldcxt;
	PendingPiece *piece;

	if (cdc->pending == NIL)
	{
		pending_rows = pending_bytes = 0;
		/* nothing was held before: notes of an aborted batch are stale */
		held_keys_reset();
	}
	pending_rows++;
	if (spilling())
	{
		int32		kind = PIECE_ROW;
		int32		si = s - cdc->streams;

		spill_write(&kind, sizeof(kind));
		spill_write_str(cdc->buf.data, cdc->buf.len);
		resetStringInfo(&cdc->buf);
		spill_write_str(held_keys.data, held_keys.len);
		resetStringInfo(&held_keys);
		spill_write(&si, sizeof(si));
		/* kept alive: cdc_refresh_descriptor keeps it while rows are deferred */
		spill_write(&s->st, sizeof(s->st));
		spill_write(&cdc->txn_commit, sizeof(cdc->txn_commit));
		spill_write(&cdc->txn_time, sizeof(cdc->txn_time));
		spill_write(&s->version, sizeof(s->version));
		spill_write_str(cdc->time_extracted.data, cdc->time_extracted.len);
		spill_write_str(position, position ? strlen(position) : 0);
		spill_write(&ch->action, sizeof(ch->action));
		spill_write_columns(ch->columns, ch->ncolumns);
		spill_write_columns(ch->identity, ch->nidentity);
		spill_pieces++;
		return;
	}

	pending_bytes += sizeof(PendingPiece) + cdc->buf.len +
		columns_size(ch->columns, ch->ncolumns) +
		columns_size(ch->identity, ch->nidentity);
	oldcxt = MemoryContextSwitchTo(cdc->pendcxt);
	piece = palloc0(sizeof(PendingPiece));
	piece->kind = PIECE_ROW;
	take_buf(&piece->text);
	take_keys(&piece->keys);
	piece->s = s;
	piece->st = s->st;
	piece->ch.action = ch->action;
	piece->ch.ncolumns = ch->ncolumns;
	piece->ch.nidentity = ch->nidentity;
	piece->ch.columns = copy_columns(ch->columns, ch->ncolumns);
	piece->ch.identity = copy_columns(ch->identity, ch->nidentity);
	piece->commit = cdc->txn_commit;
	piece->commit_time = cdc->txn_time;
	piece->version = s->version;
	piece->time_extracted = pstrdup(cdc->time_extracted.data);
	piece->has_position = position != NULL;
	if (position)
		strlcpy(piece->position, position, sizeof(piece->position));
	cdc->pending = lappend(cdc->pending, piece);
	MemoryContextSwitchTo(oldcxt);
}

/*
 * While rows are deferred, the batch's output behind them cannot reach the
 * sink: past CDC_HOLD_CHUNK it is held as a piece of its own (in memory,
 * counted, or spilled), so that cdc->buf stays small.
 */
#define CDC_HOLD_CHUNK	(256 * 1024)

static void
hold_output(void)
{
	PendingPiece *piece;

	if (cdc->pending == NIL || cdc->buf.len < CDC_HOLD_CHUNK)
		return;
	if (spilling())
	{
		int32		kind = PIECE_TEXT;

		spill_write(&kind, sizeof(kind));
		spill_write_str(cdc->buf.data, cdc->buf.len);
		resetStringInfo(&cdc->buf);
		spill_write_str(held_keys.data, held_keys.len);
		if (held_keys.data != NULL)
			resetStringInfo(&held_keys);
		spill_pieces++;
		return;
	}
	pending_bytes += sizeof(PendingPiece) + cdc->buf.len;
	piece = MemoryContextAllocZero(cdc->pendcxt, sizeof(PendingPiece));
	piece->kind = PIECE_TEXT;
	take_buf(&piece->text);
	take_keys(&piece->keys);
	cdc->pending = lappend(cdc->pending, piece);
}

/* The next spilled piece, in CurrentMemoryContext. */
static void
read_spilled_piece(PendingPiece *p)
{
	int32		kind;
	int32		si;

	memset(p, 0, sizeof(*p));
	spill_read(&kind, sizeof(kind));
	p->kind = kind;
	p->text.data = spill_read_str(&p->text.len);
	p->keys.data = spill_read_str(&p->keys.len);
	if (p->kind != PIECE_ROW)
		return;
	spill_read(&si, sizeof(si));
	if (si < 0 || si >= cdc->nstreams)
		elog(ERROR, "pg_egress: deferred change of an unknown stream");
	p->s = &cdc->streams[si];
	spill_read(&p->st, sizeof(p->st));
	spill_read(&p->commit, sizeof(p->commit));
	spill_read(&p->commit_time, sizeof(p->commit_time));
	spill_read(&p->version, sizeof(p->version));
	p->time_extracted = spill_read_str(NULL);
	{
		char	   *position = spill_read_str(NULL);

		p->has_position = position != NULL;
		if (position)
			strlcpy(p->position, position, sizeof(p->position));
	}
	spill_read(&p->ch.action, sizeof(p->ch.action));
	p->ch.columns = spill_read_columns(&p->ch.ncolumns);
	p->ch.identity = spill_read_columns(&p->ch.nidentity);
}

/*
 * A process that decodes is left out of the data horizon
 * (PROC_IN_LOGICAL_DECODING, set by CreateDecodingContext): its snapshots
 * do not stop other backends from pruning or vacuuming away row versions
 * they still see.  The re-read needs an ordinary snapshot: without this, a
 * row updated again meanwhile can vanish from under it (and be skipped as
 * "gone"), or its TOAST chunks can be vacuumed while it is read.  Cleared
 * before the re-read's snapshot is taken, set again once its transaction
 * has ended (decoding does not run meanwhile).
 */
static bool
leave_decoding_horizon(void)
{
	bool		was_set;

	LWLockAcquire(ProcArrayLock, LW_EXCLUSIVE);
	was_set = (MyProc->statusFlags & PROC_IN_LOGICAL_DECODING) != 0;
	MyProc->statusFlags &= ~PROC_IN_LOGICAL_DECODING;
	ProcGlobal->statusFlags[MyProc->pgxactoff] = MyProc->statusFlags;
	LWLockRelease(ProcArrayLock);
	return was_set;
}

static void
rejoin_decoding_horizon(void)
{
	LWLockAcquire(ProcArrayLock, LW_EXCLUSIVE);
	MyProc->statusFlags |= PROC_IN_LOGICAL_DECODING;
	ProcGlobal->statusFlags[MyProc->pgxactoff] = MyProc->statusFlags;
	LWLockRelease(ProcArrayLock);
}

/* One deferred piece: its held output, then its row read again. */
static void
resolve_piece(PendingPiece *p, StringInfo rec, MemoryContext rowcxt)
{
	TupleDesc	desc = NULL;
	HeapTuple	again = NULL;
	MemoryContext oldcxt;
	OwnerScope	sc;

	write_held(p->text.data, p->text.len, p->keys.data, p->keys.len);
	cdc->batch_bytes += p->text.len;
	if (p->kind != PIECE_ROW)
		return;

	resetStringInfo(rec);
	MemoryContextReset(rowcxt);
	oldcxt = MemoryContextSwitchTo(rowcxt);
	as_owner_begin(p->s, &sc, true);
	PG_TRY();
	{
		again = reselect_row(p->s, &p->ch, &desc);
		if (again != NULL)
			render_row(rec, p->s, p->st, &p->ch, again, desc, p->commit,
					   p->commit_time, p->version, p->time_extracted,
					   p->has_position ? p->position : NULL);
	}
	PG_CATCH();
	{
		as_owner_failed(&sc);
	}
	PG_END_TRY();
	as_owner_end(&sc);
	MemoryContextSwitchTo(oldcxt);
	if (again == NULL)
	{
		ereport(DEBUG1,
				(errmsg_internal("pg_egress stream \"%s\": the row of an UPDATE is gone; its later change carries it",
								 p->s->def->name)));
		p->s->rows_sent--;
		return;
	}
	if (cdc->sink->ops->write_record != NULL && strcmp(cdc->sink->kind, "kinesis") == 0)
	{
		/* Kinesis: the row read again as one record with its key */
		int			len = rec->len;
		char	   *key = pgk_partition_key_of(p->st, &p->ch);

		while (len > 0 && rec->data[len - 1] == '\n')
			len--;
		cdc->sink->ops->write_record(cdc->sink, rec->data, len, key);
		pfree(key);
	}
	else
		cdc->sink->ops->write(cdc->sink, rec->data, rec->len);
	cdc->batch_bytes += rec->len;
}

/* Outside decoding: re-read the deferred rows, hand everything to the sink. */
void
cdc_resolve_pending(void)
{
	ListCell   *lc;
	StringInfoData rec;
	MemoryContext rowcxt;
	MemoryContext piececxt;
	bool		in_decoding;
	List	   *pending = cdc->pending;

	if (pending == NIL)
		return;
	cdc->pending = NIL;			/* hand_to_sink may now write */

	/* an error on the way leaves it cleared: harmless outside transactions */
	in_decoding = leave_decoding_horizon();
	cdc_start_catalog_transaction();
	PushActiveSnapshot(GetTransactionSnapshot());
	initStringInfo(&rec);

	/*
	 * Each row's re-read (its key, the tuple with its TOASTed values, the
	 * descriptor copy) in memory of its own, freed before the next one: the
	 * transaction's memory would otherwise hold them all until its end.
	 */
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "pg_egress cdc re-read",
								   ALLOCSET_DEFAULT_SIZES);
	piececxt = AllocSetContextCreate(CurrentMemoryContext, "pg_egress cdc spilled change",
									 ALLOCSET_DEFAULT_SIZES);
	foreach(lc, pending)
	{
		PendingPiece *p = lfirst(lc);

		if (p->kind != PIECE_SPILLED)
		{
			resolve_piece(p, &rec, rowcxt);
			continue;
		}
		if (BufFileSeek(spill_file, 0, 0, SEEK_SET) != 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not seek in a temporary file of deferred changes")));
		for (int64 i = 0; i < spill_pieces; i++)
		{
			PendingPiece sp;
			MemoryContext oldcxt;

			MemoryContextReset(piececxt);
			oldcxt = MemoryContextSwitchTo(piececxt);
			read_spilled_piece(&sp);
			MemoryContextSwitchTo(oldcxt);
			resolve_piece(&sp, &rec, rowcxt);
		}
	}
	/* output held after the last deferred row, with its Kinesis records' keys */
	if (held_keys.len > 0)
	{
		write_held(cdc->buf.data, cdc->buf.len, held_keys.data, held_keys.len);
		cdc->batch_bytes += cdc->buf.len;
		resetStringInfo(&cdc->buf);
		resetStringInfo(&held_keys);
	}
	/* rec and rowcxt lived in the transaction's memory */
	PopActiveSnapshot();
	CommitTransactionCommand();
	if (in_decoding)
		rejoin_decoding_horizon();
	MemoryContextReset(cdc->pendcxt);
	pending_rows = pending_bytes = 0;
}

/* ---- pg_kinesis format ---------------------------------------------------- */

/*
 * Is the destination a Kinesis stream written in pg_kinesis' format?  Then
 * no Singer message (SCHEMA, STATE, ACTIVATE_VERSION) goes to the sink.
 */
bool
cdc_pg_kinesis_format(void)
{
	return cdc->sink != NULL && cdc->sink->ops->write_record != NULL &&
		strcmp(cdc->sink->kind, "kinesis") == 0 &&
		cdc->sink->opts.format != NULL &&
		strcmp(cdc->sink->opts.format, "pg_kinesis") == 0;
}

/*
 * What the renderer needs of a stream's descriptor, built once per
 * descriptor: in the descriptor's context, found by the descriptor's
 * address, and forgotten (reset callback) when that context goes, so that
 * a later descriptor at the same address is never taken for it.
 */
typedef struct PgkColumns
{
	EgressSingerStream *st;		/* hash key */
	EgressPgKinesisColumn *cols;
	int			ncols;
	char	   *schema;
	char	   *table;
} PgkColumns;

static HTAB *pgk_columns_map = NULL;

static void
pgk_columns_forget(void *arg)
{
	if (pgk_columns_map != NULL)
		(void) hash_search(pgk_columns_map, &arg, HASH_REMOVE, NULL);
}

static PgkColumns *
pgk_columns(CdcStream *s)
{
	PgkColumns *pc;
	bool		found;
	MemoryContext oldcxt;
	MemoryContextCallback *cb;
	char	   *nsp;
	char	   *rel;

	if (pgk_columns_map == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(EgressSingerStream *);
		ctl.entrysize = sizeof(PgkColumns);
		ctl.hcxt = TopMemoryContext;
		pgk_columns_map = hash_create("pg_egress pg_kinesis columns", 16, &ctl,
									  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	pc = hash_search(pgk_columns_map, &s->st, HASH_FIND, NULL);
	if (pc != NULL)
		return pc;

	/* fill it first (lookups may fail), then enter it */
	oldcxt = MemoryContextSwitchTo(s->stcxt ? s->stcxt : cdc->decodecxt);
	nsp = get_namespace_name(get_rel_namespace(s->def->relid));
	rel = get_rel_name(s->def->relid);
	if (nsp == NULL || rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation %s of stream \"%s\" no longer exists",
						s->def->relation, s->def->name)));
	{
		EgressPgKinesisColumn *cols = egress_pg_kinesis_columns_of(s->st->columns,
																   s->st->ncolumns);

		if (s->stcxt == NULL)
		{
			/* no context of its own to follow: not kept */
			static PgkColumns once;

			MemoryContextSwitchTo(oldcxt);
			once.st = s->st;
			once.cols = cols;
			once.ncols = s->st->ncolumns;
			once.schema = nsp;
			once.table = rel;
			return &once;
		}
		cb = palloc(sizeof(MemoryContextCallback));
		pc = hash_search(pgk_columns_map, &s->st, HASH_ENTER, &found);
		pc->cols = cols;
		pc->ncols = s->st->ncolumns;
		pc->schema = nsp;
		pc->table = rel;
		cb->func = pgk_columns_forget;
		cb->arg = s->st;
		MemoryContextRegisterResetCallback(s->stcxt, cb);
	}
	MemoryContextSwitchTo(oldcxt);
	return pc;
}

/* a decoded value as text, or NULL */
static const char *
pgk_value(EgressChangeColumn *cols, int n, const char *name, Oid basetypid,
		  bool *found)
{
	int			hint = 0;
	EgressChangeColumn *c = find_column(cols, n, name, &hint);

	*found = c != NULL;
	if (c == NULL || c->isnull)
		return NULL;
	return egress_change_value_text(c, basetypid);
}

static Oid
pgk_basetype(EgressSingerStream *st, const char *name)
{
	for (int i = 0; i < st->ncolumns; i++)
		if (strcmp(st->columns[i].name, name) == 0)
			return st->columns[i].basetypid;
	return InvalidOid;
}

/*
 * The partition key of a change, as the Kinesis sink derives it from a
 * Singer line (so both formats put one row on one shard): the stream,
 * then by the destination's "partition_key": the row's primary key values
 * (the new row's; the old key of a DELETE), nothing (table), or one
 * column's value; "|" before each value, "null" for a null.
 */
static char *
pgk_partition_key_of(EgressSingerStream *st, EgressChange *ch)
{
	StringInfoData key;
	const char *mode = cdc->sink->opts.partition_key;
	EgressChangeColumn *cols = ch->action == EGRESS_CHANGE_DELETE ? ch->identity : ch->columns;
	int			ncols = ch->action == EGRESS_CHANGE_DELETE ? ch->nidentity : ch->ncolumns;
	bool		found;
	const char *v;

	initStringInfo(&key);
	appendStringInfoString(&key, st->stream_id);
	if (mode == NULL || strcmp(mode, "primary_key") == 0)
	{
		ListCell   *lc;

		foreach(lc, st->key_properties)
		{
			const char *name = lfirst(lc);

			v = pgk_value(cols, ncols, name, pgk_basetype(st, name), &found);
			if (!found)
				v = pgk_value(ch->identity, ch->nidentity, name,
							  pgk_basetype(st, name), &found);
			/* once per record: no format string to interpret */
			appendStringInfoChar(&key, '|');
			appendStringInfoString(&key, v ? v : "null");
		}
	}
	else if (strcmp(mode, "table") != 0)
	{
		v = pgk_value(cols, ncols, mode, pgk_basetype(st, mode), &found);
		if (!found)
			v = pgk_value(ch->identity, ch->nidentity, mode,
						  pgk_basetype(st, mode), &found);
		appendStringInfo(&key, "|%s", found ? (v ? v : "null") : "");
	}
	return key.data;
}

/* the same for the stream's current descriptor */
static char *
pgk_partition_key(CdcStream *s, EgressChange *ch)
{
	return pgk_partition_key_of(s->st, ch);
}

/*
 * Singer format to Kinesis: the RECORD just rendered at the end of
 * cdc->buf (from offset start) goes to the sink as one record with the
 * partition key computed from the change, so that the sink need not parse
 * it again; what precedes it (a SCHEMA) goes through write() first.  While
 * rows are deferred, their output must keep its place: the RECORD stays
 * in the buffer and its key is noted (held_key_add) for write_held.
 */
static void
singer_record_to_sink(CdcStream *s, EgressChange *ch, int start)
{
	char	   *key;
	int			len;

	if (cdc->sink->ops->write_record == NULL ||
		strcmp(cdc->sink->kind, "kinesis") != 0)
		return;
	if (cdc->pending != NIL)
	{
		len = cdc->buf.len - start;
		while (len > 0 && cdc->buf.data[start + len - 1] == '\n')
			len--;
		key = pgk_partition_key(s, ch);
		held_key_add(start, len, key);
		pfree(key);
		return;
	}
	if (start > 0)
	{
		cdc->sink->ops->write(cdc->sink, cdc->buf.data, start);
		cdc->batch_bytes += start;
	}
	len = cdc->buf.len - start;
	/* the line end is not part of the record */
	while (len > 0 && cdc->buf.data[start + len - 1] == '\n')
		len--;
	key = pgk_partition_key(s, ch);
	cdc->sink->ops->write_record(cdc->sink, cdc->buf.data + start, len, key);
	cdc->batch_bytes += cdc->buf.len - start;
	pfree(key);
	resetStringInfo(&cdc->buf);
}

/*
 * One change in pg_kinesis' shape, straight to the sink: "lsn" the commit
 * LSN of its transaction, "time" its commit time.  User code: rendering
 * runs no type input function (values are the output functions' text).
 */
static void
pgk_emit(CdcStream *s, EgressChange *ch)
{
	PgkColumns *pc;
	StringInfoData rec;
	char	   *key;

	cdc_prepare_record(s);
	pc = pgk_columns(s);
	initStringInfo(&rec);
	if (egress_pg_kinesis_render(&rec, ch, pc->schema, pc->table, pc->cols,
								 pc->ncols, cdc->txn_commit, cdc->txn_time))
	{
		key = pgk_partition_key(s, ch);
		cdc->sink->ops->write_record(cdc->sink, rec.data, rec.len, key);
		cdc->batch_bytes += rec.len;
		pfree(key);
	}
	pfree(rec.data);
	s->rows_sent++;
	cdc_after_record();
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
	char		posbuf[EGRESS_POSITION_LEN + 1];
	const char *position;

	if (cdc_pg_kinesis_format())
	{
		pgk_emit(s, ch);
		return;
	}
	cdc_prepare_record(s);
	position = next_position(s, posbuf);
	for (int i = 0; i < s->st->ncolumns && !missing; i++)
	{
		const char *name = s->st->columns[i].name;

		if (find_column(ch->columns, ch->ncolumns, name, &hint) == NULL &&
			find_column(ch->identity, ch->nidentity, name, &ihint) == NULL)
			missing = true;
	}
	if (missing)
		defer_row(s, ch, position);
	else
	{
		OwnerScope	sc;
		int			start = cdc->buf.len;

		as_owner_begin(s, &sc, false);
		PG_TRY();
		{
			render_row(&cdc->buf, s, s->st, ch, NULL, NULL, cdc->txn_commit,
					   cdc->txn_time, s->version, cdc->time_extracted.data,
					   position);
		}
		PG_CATCH();
		{
			as_owner_failed(&sc);
		}
		PG_END_TRY();
		as_owner_end(&sc);
		singer_record_to_sink(s, ch, start);
	}
	s->rows_sent++;
	hold_output();
	cdc_after_record();
}

/* The old key of an UPDATE that changed it, as a deletion of that key. */
void
cdc_emit_delete_key(CdcStream *s, EgressChange *ch)
{
	EgressChangeColumn *key = palloc(sizeof(EgressChangeColumn) * Max(ch->nidentity, 1));
	int			nkey = 0;
	ListCell   *lc;

	/* pg_kinesis: the UPDATE itself carries the old key ("old" values) */
	if (cdc_pg_kinesis_format())
		return;
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
	int			start;
	char		posbuf[EGRESS_POSITION_LEN + 1];
	const char *position;

	if (cdc_pg_kinesis_format())
	{
		EgressChange ch = {0};

		ch.action = EGRESS_CHANGE_DELETE;
		ch.relid = s->def->relid;
		ch.identity = key;
		ch.nidentity = nkey;
		pgk_emit(s, &ch);
		return;
	}
	cdc_prepare_record(s);
	position = next_position(s, posbuf);
	start = cdc->buf.len;
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
	egress_singer_record_close_at(&cdc->buf, s->version, cdc->time_extracted.data,
								  position);
	{
		EgressChange dch = {0};

		dch.action = EGRESS_CHANGE_DELETE;
		dch.identity = key;
		dch.nidentity = nkey;
		singer_record_to_sink(s, &dch, start);
	}
	s->rows_sent++;
	hold_output();
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
	/* pg_kinesis passes no TRUNCATE on */
	if (!cdc_pg_kinesis_format())
	{
		char		posbuf[EGRESS_POSITION_LEN + 1];

		egress_singer_activate_version_at(&cdc->buf, s->st, s->version,
										  next_position(s, posbuf));
	}
	cdc->batch_last_commit = cdc->txn_commit;
	cdc->txn_records++;
}
