/*-------------------------------------------------------------------------
 * cdc_decode.c
 *	  CDC worker: logical decoding in-process.  Owns opening and closing
 *	  the decoding context on the destination's slot, one decoding round
 *	  (cdc_decode_round) and the output plugin's write callback that turns
 *	  each decoded message into an EgressChange and dispatches it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "worker/cdc_internal.h"

#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"

static void
cdc_prepare_write(LogicalDecodingContext *ctx, XLogRecPtr lsn, TransactionId xid,
				  bool last_write)
{
	resetStringInfo(ctx->out);
}

/*
 * The new row of an INSERT or UPDATE without pgoutput's unchanged TOASTed
 * values ('u'): rendering treats them as wal2json's missing columns (taken
 * from the old row under REPLICA IDENTITY FULL, else read again).
 */
static void
drop_unchanged(EgressChange *ch)
{
	int			n = 0;

	for (int i = 0; i < ch->ncolumns; i++)
		if (!ch->columns[i].unchanged)
			ch->columns[n++] = ch->columns[i];
	ch->ncolumns = n;
}

/* "schema"."table" of a decoded relation, as of the change. */
static char *
decoded_relation_name(EgressChange *ch, Oid relid)
{
	char	   *nsp = NULL;
	char	   *rel = NULL;

	if (ch->schema != NULL && ch->table != NULL &&
		(ch->relid == relid || (!OidIsValid(ch->relid) && ch->nrelids == 0)))
		return quote_qualified_identifier(ch->schema, ch->table);
	rel = get_rel_name(relid);
	nsp = get_namespace_name(get_rel_namespace(relid));
	if (rel == NULL || nsp == NULL)
		return psprintf("with OID %u", relid);
	return quote_qualified_identifier(nsp, rel);
}

/*
 * One change of the decoded relation relid (for a TRUNCATE: of the stream
 * whose table or partition it is).
 */
static void
apply_change(EgressChange *ch, Oid relid)
{
	int			si;
	CdcStream  *s;
	char	   *problem;

	si = cdc_lookup_relid(relid);
	if (si < 0)
		return;
	s = &cdc->streams[si];
	/* in the initial snapshot, or acknowledged before a crash */
	if (cdc->txn_end <= s->bookmark)
		return;
	if (s->stop != CDC_STOP_NONE)
		return;
	/* wal2json cannot filter rows: never send a filtered stream's others */
	if (!cdc->pgoutput && s->def->filter != NULL)
	{
		cdc_refuse_unfiltered(s);
		return;
	}

	/*
	 * Grants, the schema, roles or policies changed in a transaction
	 * decoded before this one: may the owner still read the table, as of
	 * this change?
	 */
	if (s->privs_stale)
	{
		s->privs_stale = false;
		problem = cdc_privilege_problem(s->def);
		if (problem)
		{
			cdc_stop_stream(s, CDC_STOP_ERROR, problem);
			return;
		}
	}

	/* a chunked backfill's window and straggler check (cdc_backfill.c) */
	if (s->bf != NULL)
		cdc_backfill_change(s, ch);

	switch (ch->action)
	{
		case EGRESS_CHANGE_INSERT:
			drop_unchanged(ch);
			cdc_emit_row(s, ch);
			break;
		case EGRESS_CHANGE_UPDATE:
			drop_unchanged(ch);
			cdc_refresh_descriptor(s);
			/* pgoutput sends no old key when the key did not change */
			if (ch->nidentity > 0 && cdc_key_changed(s, ch))
				cdc_emit_delete_key(s, ch);
			cdc_emit_row(s, ch);
			break;
		case EGRESS_CHANGE_DELETE:
			cdc_emit_delete(s, ch->identity, ch->nidentity);
			break;
		case EGRESS_CHANGE_TRUNCATE:

			/*
			 * A partition's TRUNCATE: the other partitions keep their rows,
			 * so no ACTIVATE_VERSION; the stream is synchronized again.
			 */
			if (relid != s->def->relid)
				cdc_stop_stream(s, CDC_STOP_RESYNC,
								psprintf("partition %s of %s was truncated",
										 decoded_relation_name(ch, relid),
										 s->def->relation));
			else
				cdc_emit_truncate(s);
			break;
		default:
			break;
	}
}

/*
 * Does the list hold every leaf partition of the partitioned table relid,
 * as of the change?  Then the statement emptied the whole table: a
 * TRUNCATE of a partitioned table lists only its leaf partitions (they
 * alone have storage).
 */
static bool
all_partitions_listed(Oid relid, Oid *relids, int nrelids)
{
	List	   *all;
	ListCell   *lc;
	bool		covered = true;

	if (get_rel_relkind(relid) != RELKIND_PARTITIONED_TABLE)
		return false;
	all = find_all_inheritors(relid, NoLock, NULL);
	foreach(lc, all)
	{
		Oid			child = lfirst_oid(lc);
		bool		listed = false;

		if (get_rel_relkind(child) == RELKIND_PARTITIONED_TABLE)
			continue;			/* relid itself, or a partitioned partition */
		for (int i = 0; i < nrelids && !listed; i++)
			listed = relids[i] == child;
		if (!listed)
		{
			covered = false;
			break;
		}
	}
	list_free(all);
	return covered;
}

/*
 * pgoutput's TRUNCATE lists every truncated relation of one statement.
 * Each counts as wal2json's TRUNCATE of that relation, once per stream:
 * when the stream's own table is in the list, or every leaf partition of
 * it, the whole table was emptied and one ACTIVATE_VERSION covers it; only
 * some of its partitions: the stream is synchronized again.
 */
static void
apply_truncate(EgressChange *ch)
{
	int		   *si = palloc(sizeof(int) * Max(ch->nrelids, 1));

	for (int i = 0; i < ch->nrelids; i++)
		si[i] = cdc_lookup_relid(ch->relids[i]);
	for (int i = 0; i < ch->nrelids; i++)
	{
		bool		seen = false;
		Oid			relid = ch->relids[i];

		if (si[i] < 0)
			continue;
		for (int j = 0; j < i && !seen; j++)
			seen = si[j] == si[i];
		if (seen)
			continue;
		for (int j = i; j < ch->nrelids; j++)
			if (si[j] == si[i] && ch->relids[j] == cdc->streams[si[i]].def->relid)
				relid = ch->relids[j];
		if (relid != cdc->streams[si[i]].def->relid &&
			all_partitions_listed(cdc->streams[si[i]].def->relid, ch->relids, ch->nrelids))
			relid = cdc->streams[si[i]].def->relid;
		apply_change(ch, relid);
	}
	pfree(si);
}

static void
cdc_write(LogicalDecodingContext *ctx, XLogRecPtr lsn, TransactionId xid,
		  bool last_write)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(cdc->msgcxt);
	EgressChange ch;

	if (cdc->pgoutput)
		egress_pgoutput_parse(ctx->out->data, ctx->out->len, &ch);
	else
		egress_wal2json_parse(ctx->out->data, ctx->out->len, &ch);
	switch (ch.action)
	{
		case EGRESS_CHANGE_BEGIN:
			cdc->txn_xid = ch.xid;
			cdc->txn_commit = ch.lsn;
			cdc->txn_end = ch.nextlsn;
			cdc->txn_time = ch.timestamp;
			cdc->txn_records = 0;
			/* every stream's position ordinals start again (cdc_render.c) */
			cdc->txn_seq++;
			break;
		case EGRESS_CHANGE_COMMIT:
			/* the whole transaction is in the batch, or had nothing for us */
			if (cdc->batch_open)
				cdc->batch_last_end = cdc->txn_end;
			else if (!cdc->ack_pending)
				cdc->delivered = Max(cdc->delivered, cdc->txn_end);
			break;
		case EGRESS_CHANGE_TRUNCATE:
			if (ch.nrelids > 0)
			{
				apply_truncate(&ch);
				break;
			}
			/* FALLTHROUGH */
		case EGRESS_CHANGE_INSERT:
		case EGRESS_CHANGE_UPDATE:
		case EGRESS_CHANGE_DELETE:
			/* pgoutput gives the relation's OID, wal2json its names */
			apply_change(&ch, OidIsValid(ch.relid) ? ch.relid :
						 cdc_lookup_name(ch.schema, ch.table));
			break;
		case EGRESS_CHANGE_MESSAGE:
			/* a chunked backfill's watermark? */
			cdc_backfill_message(&ch);
			break;
		case EGRESS_CHANGE_RELATION:
		case EGRESS_CHANGE_OTHER:
			break;
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(cdc->msgcxt);
}

/*
 * pgoutput sends neither BEGIN nor COMMIT for a transaction with nothing
 * published; it reports the transaction's end here instead (wal2json sends
 * B and C for every transaction).  Such a transaction is done as a COMMIT
 * with nothing for us would be.
 */
static void
cdc_update_progress(LogicalDecodingContext *ctx, XLogRecPtr lsn,
					TransactionId xid, bool skipped_xact)
{
	if (!skipped_xact || !ctx->end_xact || XLogRecPtrIsInvalid(lsn))
		return;
	if (cdc->batch_open)
		cdc->batch_last_end = Max(cdc->batch_last_end, lsn);
	else if (!cdc->ack_pending)
		cdc->delivered = Max(cdc->delivered, lsn);
}

/* ---- decoding ---------------------------------------------------------------- */

static void set_decoding_flag(bool on);

void
cdc_open_decoding(void)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(cdc->decodecxt);
	List	   *options;

	ReplicationSlotAcquire(cdc->slot_name, true);
	if (XLogRecPtrIsInvalid(MyReplicationSlot->data.restart_lsn))
		cdc_slot_invalidated();		/* released by the error path */
	/* the slot's plugin decides how it is decoded (cdc_ensure_slot checked it) */
	cdc->pgoutput = strcmp(NameStr(MyReplicationSlot->data.plugin),
						   EGRESS_PLUGIN_PGOUTPUT) == 0;
	if (cdc->pgoutput)
	{
		/* pgoutput sends RELATION again in a new session */
		egress_pgoutput_reset();
		options = egress_pgoutput_options(egress_publication_name(cdc->dest_name));
	}
	else
		options = egress_wal2json_options(NULL);
	cdc->ctx = CreateDecodingContext(InvalidXLogRecPtr, options, false,
									 XL_ROUTINE(.page_read = read_local_xlog_page,
												.segment_open = wal_segment_open,
												.segment_close = wal_segment_close),
									 cdc_prepare_write, cdc_write, cdc_update_progress);
	/* set again while records are decoded: see set_decoding_flag() */
	set_decoding_flag(false);
	if (cdc->pgoutput)
		egress_pgoutput_attach(cdc->ctx);
	else
	{
		/* a wal2json slot taken over after the streams were added */
		for (int i = 0; i < cdc->nstreams; i++)
			if (cdc->streams[i].def->filter != NULL)
				cdc_refuse_unfiltered(&cdc->streams[i]);
	}
	cdc_relmap_open();
	XLogBeginRead(cdc->ctx->reader, MyReplicationSlot->data.restart_lsn);
	cdc->delivered = Max(cdc->delivered, MyReplicationSlot->data.confirmed_flush);

	/*
	 * The slot confirms only what was acknowledged for every streaming
	 * stream, but progress without records is recorded in the catalog now
	 * and then only: start the bookmarks from the slot, so that what
	 * egress_streams shows never goes back when a session restarts.
	 */
	for (int i = 0; i < cdc->nstreams; i++)
	{
		CdcStream  *s = &cdc->streams[i];

		if (s->needs_sync)
			continue;
		s->bookmark = Max(s->bookmark, MyReplicationSlot->data.confirmed_flush);
		if (s->slot)
			s->slot->confirmed_lsn = s->bookmark;
	}
	MemoryContextSwitchTo(oldcxt);
}

void
cdc_close_decoding(void)
{
	if (cdc->ctx)
	{
		FreeDecodingContext(cdc->ctx);
		cdc->ctx = NULL;
	}
	if (MyReplicationSlot)
		ReplicationSlotRelease();
	cdc_start_catalog_transaction();
	CommitTransactionCommand();
	cdc_relmap_close(true);
}

/*
 * PROC_IN_LOGICAL_DECODING (set by CreateDecodingContext, cleared by
 * ReplicationSlotRelease) leaves this process out of the data horizon, and
 * it also leaves its xid out of every other backend's snapshot
 * (GetSnapshotData skips such processes).  The worker writes the egress
 * catalog in transactions of its own while it holds the slot (bookmarks,
 * stream states): with the flag set, a concurrent snapshot would take
 * those writes, still in progress, for committed-or-aborted, see them
 * non-atomically, and could even set hint bits that lose them.  So the
 * flag is set only while records are decoded (no xid of ours is assigned
 * meanwhile; cdc_render.c clears it again for its re-read), and cleared
 * otherwise.
 */
static void
set_decoding_flag(bool on)
{
	LWLockAcquire(ProcArrayLock, LW_EXCLUSIVE);
	if (on)
		MyProc->statusFlags |= PROC_IN_LOGICAL_DECODING;
	else
		MyProc->statusFlags &= ~PROC_IN_LOGICAL_DECODING;
	ProcGlobal->statusFlags[MyProc->pgxactoff] = MyProc->statusFlags;
	LWLockRelease(ProcArrayLock);
}

/* One round: decode the WAL flushed so far, send what is due. */
void
cdc_decode_round(void)
{
	XLogRecPtr	end = GetFlushRecPtr(NULL);

	Assert(!TransactionIdIsValid(GetTopTransactionIdIfAny()));

	/*
	 * A configuration change (egress_alter_destination, ...) committed
	 * before WAL up to end was flushed bumped config_gen first: none of
	 * that WAL is decoded under the old configuration (the caller looks at
	 * the configuration and comes back).
	 */
	pg_memory_barrier();
	if (pg_atomic_read_u32(&egress_shared->config_gen) != cdc->config_gen)
		return;

	/*
	 * Throw away what ordinary catalog work left in the caches since the
	 * last round (stop_dropped_streams opens the streams' tables, the
	 * re-read and a backfill chunk read them, the configuration and the
	 * bookmarks touch the catalog), as logicalfuncs.c does before it
	 * decodes.  Those entries show the catalog as it is now, and nothing
	 * invalidates them when the DDL behind them was committed (and its
	 * invalidations consumed) before they were built: decoding a change
	 * written before that DDL would then find the relation as it is after
	 * it, in pgoutput (the tuple read with the new descriptor) and in
	 * cdc_refresh_descriptor (the record rendered and announced under the
	 * later schema).  Decoding rebuilds what it needs as of each change.
	 * The callbacks ignore this flush (cdc_start_catalog_transaction): it
	 * is no catalog change.
	 */
	if (cdc->ctx->reader->EndRecPtr < end)
	{
		cdc_start_catalog_transaction();
		CommitTransactionCommand();
	}
	set_decoding_flag(true);
	while (cdc->ctx->reader->EndRecPtr < end)
	{
		XLogRecord *record;
		char	   *errm = NULL;

		record = XLogReadRecord(cdc->ctx->reader, &errm);
		if (errm)
			ereport(ERROR,
					(errmsg("could not read WAL for logical decoding: %s", errm)));
		if (record != NULL)
			LogicalDecodingProcessRecord(cdc->ctx, cdc->ctx->reader);
		/* decoding's transaction handling resets it */
		CurrentResourceOwner = cdc_owner;
		CHECK_FOR_INTERRUPTS();
		/* too many deferred TOAST rows: resolve them now (a new round follows) */
		if (cdc_pending_over_limit())
			break;
		/* a backfill's watermark: act on it before anything after it */
		if (cdc_backfill_break_round())
			break;
	}
	/* on error, the slot's release clears it */
	set_decoding_flag(false);
	cdc_resolve_pending();
	/* a chunk whose H came goes into the batch at this position */
	cdc_backfill_after_round();

	/* ... and a batch that grew past its limits meanwhile is cut */
	if (cdc->batch_open &&
		(TimestampDifferenceExceeds(cdc->batch_started, GetCurrentTimestamp(),
									cdc_flush_interval_ms()) ||
		 cdc->batch_rows >= cdc->max_rows ||
		 cdc->batch_bytes + cdc->buf.len >= cdc->max_bytes))
		cdc_commit_batch();
	/* a batch committed while decoding is acknowledged by now */
	cdc_finish_ack();
	cdc_confirm_read_position();

	/*
	 * Acknowledged: record the bookmarks, then free the WAL.  Progress that
	 * carried no records is recorded now and then only, and never for WAL
	 * that is just our own previous bookmark update.
	 */
	for (int i = 0; i < cdc->nstreams; i++)
	{
		CdcStream  *s = &cdc->streams[i];

		if (s->needs_sync)
			continue;
		if (!cdc->batch_open)
			s->bookmark = Max(s->bookmark, cdc->delivered);
		if (s->slot)
			s->slot->confirmed_lsn = s->bookmark;
	}
	if (cdc->acked_since_persist ||
		(cdc->delivered > cdc->persisted_end &&
		 TimestampDifferenceExceeds(cdc->persisted_at, GetCurrentTimestamp(), 10000)))
		cdc_persist_bookmarks();
	if (cdc->delivered > MyReplicationSlot->data.confirmed_flush)
	{
		LogicalConfirmReceivedLocation(cdc->delivered);
		ReplicationSlotMarkDirty();
	}
}
