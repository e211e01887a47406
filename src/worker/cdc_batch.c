/*-------------------------------------------------------------------------
 * cdc_batch.c
 *	  CDC worker: Singer batches.  Owns opening, filling and acknowledging
 *	  a batch (the STATE message with the bookmarks), the sink's retry
 *	  question (cdc_keep_retrying) and the streams' "retrying" phase.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "worker/cdc_internal.h"

/* ---- delivery: batch age, giving up a retry -------------------------------- */

/* How long a sink retries a batch before the worker takes over again. */
#define CDC_MAX_RETRY_MS 30000

int
cdc_flush_interval_ms(void)
{
	return egress_dest_flush_interval_ms(cdc->dest_options);
}

/* the sink is retrying a batch: the streams show state "retrying" */
bool		cdc_retrying = false;

static void
set_retrying(bool retrying)
{
	for (int i = 0; i < cdc->nstreams; i++)
		if (cdc->streams[i].slot && !cdc->streams[i].needs_sync)
			egress_set_phase(cdc->streams[i].slot, retrying ? "retrying" : "streaming");
	cdc_retrying = retrying;
}

/*
 * The last session ended with the destination failing (a file that could
 * not be written, a batch given up after CDC_MAX_RETRY_MS): the streams
 * show "retrying" through the pause and the next session until a batch
 * gets through.
 */
bool		cdc_failing = false;

void
cdc_show_failing(void)
{
	cdc_failing = true;
	set_retrying(true);
}

/* the syncing stream's entry, if an initial sync runs */
static EgressWorkerSlot *
syncing_slot(void)
{
	for (int i = 0; i < cdc->nstreams; i++)
		if (cdc->streams[i].slot && cdc->streams[i].def &&
			cdc->streams[i].def->id == cdc_syncing_stream)
			return cdc->streams[i].slot;
	return NULL;
}

/* the sink delivered a batch after failed attempts */
void
cdc_delivered_after_retries(void *arg)
{
	EgressWorkerSlot *slot;

	if (cdc_syncing_stream != 0 && (slot = syncing_slot()) != NULL &&
		strcmp(slot->phase, "retrying") == 0)
		egress_set_phase(slot, "syncing");
}

/*
 * Asked by the sink between retries of a batch.  It gives up (and the
 * error path shows the failure, applies the WAL retention guard and starts
 * a new session after a pause) when the configuration changed, when the
 * destination left more WAL unacknowledged than pg_egress.max_slot_wal,
 * when a stream's lag_policy "pause" applies, or after CDC_MAX_RETRY_MS.  Nothing was
 * acknowledged, so the new session sends the same changes again.  An
 * initial sync's batches are retried until they are delivered (giving up
 * would put the stream into state error).
 */
bool
cdc_keep_retrying(void *arg, TimestampTz since)
{
	int64		lag;

	/*
	 * The WAL guards first: a dead destination must not hold WAL past them,
	 * not even while an initial sync is retried.
	 */
	if (cdc_over_wal_limit(cdc_current_unacked()))
		return false;			/* the error path drops the slot */
	lag = cdc_current_lag();
	(void) cdc_check_lag(lag, false);
	for (int i = 0; i < cdc->nstreams; i++)
		if (cdc->streams[i].pause_on_lag && egress_max_slot_lag_mb > 0 &&
			lag > (int64) egress_max_slot_lag_mb * 1024 * 1024)
			return false;

	if (cdc_syncing_stream != 0)
	{
		/* the initial sync's batch is resent: its stream shows it */
		EgressWorkerSlot *slot = syncing_slot();

		if (slot != NULL && strcmp(slot->phase, "retrying") != 0)
			egress_set_phase(slot, "retrying");
		return true;
	}
	if (!cdc_retrying)
		set_retrying(true);
	if (pg_atomic_read_u32(&egress_shared->config_gen) != cdc->config_gen)
		return false;
	if (TimestampDifferenceExceeds(since, GetCurrentTimestamp(), CDC_MAX_RETRY_MS))
		return false;
	return true;
}

/* ---- batches ------------------------------------------------------------- */

static void
hand_to_sink(void)
{
	/* after a deferred record, keep the order: wait until it is resolved */
	if (cdc->buf.len > 0 && cdc->pending == NIL)
	{
		cdc->sink->ops->write(cdc->sink, cdc->buf.data, cdc->buf.len);
		cdc->batch_bytes += cdc->buf.len;
		resetStringInfo(&cdc->buf);
	}
}

static void
cdc_begin_batch(void)
{
	EgressBatchInfo info;
	char		prefix[NAMEDATALEN + 2];

	/* '~' cannot start a stream name: no clash with snapshot batches */
	snprintf(prefix, sizeof(prefix), "~%s", cdc->dest_name);
	info.prefix = prefix;
	cdc->sink->ops->begin_batch(cdc->sink, &info);
	cdc->batch_open = true;
	cdc->batch_rows = 0;
	cdc->batch_bytes = 0;
	cdc->batch_started = GetCurrentTimestamp();
	cdc->batch_first_commit = cdc->txn_commit;
	cdc->batch_first_ordinal = cdc->txn_records;
	cdc->batch_last_end = InvalidXLogRecPtr;

	/*
	 * Lag: the oldest change not acknowledged is this batch's first, unless
	 * an older one was decoded before and not acknowledged (a session that
	 * failed: its changes are decoded again, and count from the first time).
	 * A batch opened by a backfill's rows, outside any decoded transaction
	 * (the last one is delivered), counts from now.
	 */
	cdc->batch_oldest = (cdc->txn_time != 0 && cdc->txn_commit > cdc->delivered) ?
		cdc->txn_time : cdc->batch_started;
	if (cdc_dest_entry && cdc_dest_entry->unacked_since == 0)
		cdc_dest_entry->unacked_since = cdc->batch_oldest;
	resetStringInfo(&cdc->time_extracted);
	egress_append_time_extracted(&cdc->time_extracted, cdc->batch_started);
	for (int i = 0; i < cdc->nstreams; i++)
		cdc->streams[i].schema_in_batch = false;
}

/* Before a record (or ACTIVATE_VERSION) of stream s goes into the batch. */
void
cdc_prepare_record(CdcStream *s)
{
	if (!cdc->batch_open)
		cdc_begin_batch();
	cdc_refresh_descriptor(s);
	/* pg_kinesis format: records only, no SCHEMA */
	if (!s->schema_in_batch && !cdc_pg_kinesis_format())
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(cdc->decodecxt);

		egress_singer_schema(&cdc->buf, s->st);
		if (s->sent_schema)
			pfree(s->sent_schema);
		s->sent_schema = pstrdup(s->st->schema_json);
		if (s->sent_stream_id)
			pfree(s->sent_stream_id);
		s->sent_stream_id = pstrdup(s->st->stream_id);
		s->schema_in_batch = true;
		MemoryContextSwitchTo(oldcxt);
	}
}

static void commit_batch(bool async);

void
cdc_after_record(void)
{
	cdc->batch_rows++;
	cdc->txn_records++;
	cdc->batch_last_commit = cdc->txn_commit;
	if (cdc->buf.len >= 256 * 1024)
		hand_to_sink();
	/* a batch waiting for a re-read is closed when decoding pauses */
	if (cdc->pending == NIL &&
		(cdc->batch_rows >= cdc->max_rows ||
		 cdc->batch_bytes + cdc->buf.len >= cdc->max_bytes))
		commit_batch(true);
}

static XLogRecPtr
stream_lsn(CdcStream *s, XLogRecPtr upto)
{
	return Max(s->bookmark, upto);
}

/*
 * What the last batch committed completed is delivered: the positions
 * move (the post-commit bookkeeping of commit_batch), once the sink
 * acknowledged it.  A batch committed with commit_batch_start (sinks that
 * acknowledge one batch while the next is decoded: postgres destinations)
 * is waited for here: an ERROR if it was not acknowledged, and nothing of
 * it is recorded (the session starts again from the slot: the batch is
 * sent again, which the destination recognises).  Until then nothing moves
 * cdc->delivered (ack_pending counts as a batch open): see
 * cdc_confirm_read_position.
 */
void
cdc_finish_ack(void)
{
	if (!cdc->ack_pending)
		return;
	/* an ERROR below leaves the batch unacknowledged, for good */
	cdc->ack_pending = false;
	if (cdc->ack_async)
		cdc->sink->ops->commit_batch_finish(cdc->sink);
	cdc_failing = false;
	if (cdc_retrying)
		set_retrying(false);

	/* acknowledged: what it completed is delivered */
	cdc->delivered = Max(cdc->delivered, cdc->ack_upto);
	for (int i = 0; i < cdc->nstreams; i++)
	{
		CdcStream  *s = &cdc->streams[i];

		if (s->needs_sync || s->stop != CDC_STOP_NONE || !s->ack_valid)
			continue;
		s->bookmark = Max(s->bookmark, cdc->delivered);
		s->acked_version = s->ack_version;
		s->batches_sent++;
		if (s->slot)
		{
			s->slot->rows_sent = s->ack_rows;
			s->slot->batches_sent = s->batches_sent;
			s->slot->confirmed_lsn = s->bookmark;
		}
	}
	cdc->acked_since_persist = true;
	/*
	 * caught up to here: what is decoded next sets the lag again (the batch
	 * opened while this one was acknowledged: from its oldest change)
	 */
	if (cdc_dest_entry)
	{
		cdc_dest_entry->unacked_since = cdc->batch_open ? cdc->batch_oldest : 0;
		egress_progress_acked(cdc_dest_entry);
	}
	ereport(DEBUG1,
			(errmsg_internal("pg_egress destination \"%s\": batch %s acknowledged",
							 cdc->dest_name, cdc->ack_batch_id)));
}

/*
 * Commits the open batch.  async: the sink may acknowledge it while the
 * next batch is decoded (commit_batch_start), cdc_finish_ack then records
 * it later; else it is recorded before returning.
 */
static void
commit_batch(bool async)
{
	XLogRecPtr	upto;
	bool		first = true;
	StringInfoData bm;

	if (!cdc->batch_open)
		return;
	cdc_resolve_pending();
	/* the one before first: at most one batch is under way */
	cdc_finish_ack();

	/* the positions this batch completes: its last whole transaction */
	upto = XLogRecPtrIsInvalid(cdc->batch_last_end) ? cdc->delivered : cdc->batch_last_end;

	/*
	 * The STATE message, its own partition key; not in pg_kinesis format
	 * (records of changes only: the bookmarks are the catalog's).
	 */
	if (!cdc_pg_kinesis_format())
	{
		initStringInfo(&bm);
		egress_singer_state_open(&cdc->buf, NULL);
		for (int i = 0; i < cdc->nstreams; i++)
		{
			CdcStream  *s = &cdc->streams[i];

			if (s->needs_sync || s->st == NULL || s->stop != CDC_STOP_NONE)
				continue;
			resetStringInfo(&bm);
			egress_singer_bookmark_log_based(&bm, stream_lsn(s, upto), s->version);
			egress_singer_state_add(&cdc->buf, s->st->stream_id, bm.data, first);
			first = false;
		}
		egress_singer_state_close(&cdc->buf);
		pfree(bm.data);
	}
	hand_to_sink();

	snprintf(cdc->ack_batch_id, sizeof(cdc->ack_batch_id), "%s-%08X%08X-%08X%08X-%010d",
			 cdc->dest_name,
			 LSN_FORMAT_ARGS(cdc->batch_first_commit),
			 LSN_FORMAT_ARGS(cdc->batch_last_commit),
			 cdc->batch_first_ordinal);
	/*
	 * What a sink allocates while it commits and does not keep in its own
	 * context goes with the batch: after a catalog transaction the current
	 * context is TopMemoryContext, where it would pile up.
	 */
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(cdc->batchcxt);

		cdc->ack_async = async && cdc->sink->ops->commit_batch_start != NULL &&
			cdc->sink->ops->commit_batch_start(cdc->sink, cdc->ack_batch_id);
		if (!cdc->ack_async && (!async || cdc->sink->ops->commit_batch_start == NULL))
			cdc->sink->ops->commit_batch(cdc->sink, cdc->ack_batch_id);
		MemoryContextSwitchTo(oldcxt);
	}
	cdc->batch_open = false;
	MemoryContextReset(cdc->batchcxt);

	/* what cdc_finish_ack records, as of now */
	cdc->ack_pending = true;
	cdc->ack_upto = upto;
	for (int i = 0; i < cdc->nstreams; i++)
	{
		CdcStream  *s = &cdc->streams[i];

		s->ack_valid = !(s->needs_sync || s->stop != CDC_STOP_NONE);
		s->ack_version = s->version;
		s->ack_rows = s->rows_sent;
	}
	if (!cdc->ack_async)
		cdc_finish_ack();
}

/*
 * Commits the open batch, if any, and records it; an acknowledgement still
 * pending from the hot path is recorded too, batch open or not.
 */
void
cdc_commit_batch(void)
{
	commit_batch(false);
	cdc_finish_ack();
}

/* ---- rendering changes ---------------------------------------------------- */
