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

static void
cdc_prepare_write(LogicalDecodingContext *ctx, XLogRecPtr lsn, TransactionId xid,
				  bool last_write)
{
	resetStringInfo(ctx->out);
}

static void
cdc_write(LogicalDecodingContext *ctx, XLogRecPtr lsn, TransactionId xid,
		  bool last_write)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(cdc->msgcxt);
	EgressChange ch;
	int			si;
	CdcStream  *s;
	Oid			relid;
	char	   *problem;

	egress_wal2json_parse(ctx->out->data, ctx->out->len, &ch);
	switch (ch.action)
	{
		case EGRESS_CHANGE_BEGIN:
			cdc->txn_commit = ch.lsn;
			cdc->txn_end = ch.nextlsn;
			cdc->txn_time = ch.timestamp;
			cdc->txn_records = 0;
			break;
		case EGRESS_CHANGE_COMMIT:
			/* the whole transaction is in the batch, or had nothing for us */
			if (cdc->batch_open)
				cdc->batch_last_end = cdc->txn_end;
			else
				cdc->delivered = Max(cdc->delivered, cdc->txn_end);
			break;
		case EGRESS_CHANGE_INSERT:
		case EGRESS_CHANGE_UPDATE:
		case EGRESS_CHANGE_DELETE:
		case EGRESS_CHANGE_TRUNCATE:
			si = cdc_lookup_stream(ch.schema, ch.table, &relid);
			if (si < 0)
				break;
			s = &cdc->streams[si];
			/* in the initial snapshot, or acknowledged before a crash */
			if (cdc->txn_end <= s->bookmark)
				break;
			if (s->stop != CDC_STOP_NONE)
				break;

			/*
			 * Grants, the schema, roles or policies changed in a
			 * transaction decoded before this one: may the owner still
			 * read the table, as of this change?
			 */
			if (s->privs_stale)
			{
				s->privs_stale = false;
				problem = cdc_privilege_problem(s->def);
				if (problem)
				{
					cdc_stop_stream(s, CDC_STOP_ERROR, problem);
					break;
				}
			}

			/*
			 * A partition's TRUNCATE: the other partitions keep their rows,
			 * so no ACTIVATE_VERSION; the stream is synchronized again.
			 */
			if (ch.action == EGRESS_CHANGE_TRUNCATE && relid != s->def->relid)
			{
				cdc_stop_stream(s, CDC_STOP_RESYNC,
							psprintf("partition %s.%s of %s was truncated",
									 quote_identifier(ch.schema),
									 quote_identifier(ch.table),
									 s->def->relation));
				break;
			}
			if (ch.action == EGRESS_CHANGE_INSERT)
				cdc_emit_row(s, &ch);
			else if (ch.action == EGRESS_CHANGE_UPDATE)
			{
				cdc_refresh_descriptor(s);
				if (ch.nidentity > 0 && cdc_key_changed(s, &ch))
					cdc_emit_delete_key(s, &ch);
				cdc_emit_row(s, &ch);
			}
			else if (ch.action == EGRESS_CHANGE_DELETE)
				cdc_emit_delete(s, ch.identity, ch.nidentity);
			else
				cdc_emit_truncate(s);
			break;
		case EGRESS_CHANGE_MESSAGE:
		case EGRESS_CHANGE_RELATION:
		case EGRESS_CHANGE_OTHER:
			break;
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(cdc->msgcxt);
}

/* ---- decoding ---------------------------------------------------------------- */

void
cdc_open_decoding(void)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(cdc->decodecxt);

	ReplicationSlotAcquire(cdc->slot_name, true);
	if (XLogRecPtrIsInvalid(MyReplicationSlot->data.restart_lsn))
		cdc_slot_invalidated();		/* released by the error path */
	cdc->ctx = CreateDecodingContext(InvalidXLogRecPtr, egress_wal2json_options(NULL), false,
									 XL_ROUTINE(.page_read = read_local_xlog_page,
												.segment_open = wal_segment_open,
												.segment_close = wal_segment_close),
									 cdc_prepare_write, cdc_write, NULL);
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
	if (cdc->relmap)
	{
		hash_destroy(cdc->relmap);
		cdc->relmap = NULL;
	}
}

/* One round: decode the WAL flushed so far, send what is due. */
void
cdc_decode_round(void)
{
	XLogRecPtr	end = GetFlushRecPtr(NULL);

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
	}
	cdc_resolve_pending();

	/* ... and a batch that grew past its limits meanwhile is cut */
	if (cdc->batch_open &&
		(TimestampDifferenceExceeds(cdc->batch_started, GetCurrentTimestamp(),
									cdc_flush_interval_ms()) ||
		 cdc->batch_rows >= cdc->max_rows ||
		 cdc->batch_bytes + cdc->buf.len >= cdc->max_bytes))
		cdc_commit_batch();
	if (!cdc->batch_open)
		cdc->delivered = Max(cdc->delivered, cdc->ctx->reader->EndRecPtr);

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
