/*-------------------------------------------------------------------------
 * cdc_heartbeat.c
 *	  CDC worker: keeping the slot of an idle destination moving while
 *	  other databases (or other tables) write WAL.  Owns confirming the
 *	  position the reader has passed when nothing of the destination is
 *	  open (cdc_confirm_read_position) and the heartbeats
 *	  (pg_egress.heartbeat_interval, cdc_heartbeat).
 *
 * A logical slot holds WAL from its restart_lsn on; that is what
 * egress_streams.lag_bytes shows (flush position - restart_lsn).  In
 * PostgreSQL 15 the two positions of a slot move like this:
 *
 * - confirmed_flush is what the worker says is done
 *   (LogicalConfirmReceivedLocation).  When decoding starts again, every
 *   transaction whose commit record lies before it is skipped.
 *
 * - restart_lsn is where decoding must start again to know the
 *   transactions still in progress at confirmed_flush.  It moves only at
 *   running-xacts records (xl_running_xacts): there the snapshot builder
 *   serializes its state and proposes as the new restart_lsn the last such
 *   point before the first record of the oldest transaction in progress
 *   (of any database: the reorder buffer follows every xid, it only drops
 *   the changes of other databases), valid once confirmed_flush reaches
 *   the running-xacts record (LogicalIncreaseRestartDecodingForSlot).  The
 *   bgwriter writes one every 15 seconds while WAL is written, checkpoints
 *   write one.  So even with confirmed_flush right behind the reader,
 *   restart_lsn trails by one to two of those intervals: under a few MB/s
 *   of WAL elsewhere that is tens of MB, several WAL segments.
 *
 * Transactions of other databases never reach the output plugin (decode.c
 * filters them before any callback, and PostgreSQL 15 reports no progress
 * for them), so the worker confirms the position its reader has passed
 * (cdc_confirm_read_position) rather than the end of the last transaction
 * it was told about; and a heartbeat (write_heartbeat) adds running-xacts
 * records when the bgwriter's are too far apart for the slot to follow
 * the WAL.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "worker/cdc_internal.h"

#include "replication/message.h"
#include "storage/standby.h"

/* the prefix of the heartbeat's logical message (DESIGN: watermarks) */
#define CDC_HEARTBEAT_PREFIX "pg_egress.heartbeat"

static XLogRecPtr hb_restart = InvalidXLogRecPtr;	/* restart_lsn last seen */
static TimestampTz hb_moved_at = 0; /* ... since then, or the last heartbeat */
static XLogRecPtr hb_end = InvalidXLogRecPtr;	/* end of the last heartbeat */
static TimestampTz hb_written_at = 0;	/* ... and when it was written */
static XLogRecPtr hb_restart_then = InvalidXLogRecPtr;	/* ... restart_lsn then */

/*
 * Under heavy load, no more than this many heartbeats a second: each
 * running-xacts record makes every logical slot's decoder serialize its
 * state (a small file and three fsyncs, removed at the next checkpoint).
 */
#define CDC_HEARTBEAT_MIN_GAP_MS 200

/*
 * WAL a slot may hold without an idle heartbeat: what other workers'
 * heartbeats and bookmark updates write, and more.  Without it, two CDC
 * workers on an idle cluster would write heartbeats for each other's.
 */
#define CDC_HEARTBEAT_IDLE_MIN (wal_segment_size / 16)

/*
 * The position the reader has passed is done, when nothing of the
 * destination is open: confirm it (cdc_decode_round confirms cdc->delivered
 * at the end of each round).  Why that is safe:
 *
 * 1. A transaction still in progress at the reader's position has its
 *    commit record beyond it.  When decoding starts again (another session,
 *    or after a crash), it starts at restart_lsn, which PostgreSQL keeps
 *    before the first record of the oldest transaction in progress, and
 *    every transaction committing at or after confirmed_flush is decoded
 *    in full (SnapBuildXactNeedsSkip).  Confirming the position drops no
 *    transaction that has not committed yet, whatever the database.
 *
 * 2. Every transaction whose commit record lies before the position went
 *    through the output plugin in full when its commit record was read:
 *    the reorder buffer replays a transaction within the one
 *    LogicalDecodingProcessRecord call that reads its commit, and the
 *    worker does not ask for in-progress transactions to be streamed.  So
 *    between rounds no transaction is half rendered.  Each of them had
 *    nothing for this destination (another database; tables outside the
 *    publication; changes at or before a stream's bookmark) or put its
 *    records into a batch.
 *
 * 3. Records in a batch are done only once the batch is acknowledged
 *    (cdc_commit_batch moves cdc->delivered to the batch's last whole
 *    transaction then).  So the position is confirmed only when no batch is
 *    open, and no rows wait to be read again (cdc->pending: they are part
 *    of the open batch; cdc_resolve_pending runs before this).  WAL passed
 *    after the last transaction of an open batch is confirmed at the first
 *    round that ends with no batch open.
 *
 * Streams stopped in this session start over with a new sync, and a
 * stream waiting for its initial sync skips everything up to its sync
 * point, so passing their changes loses nothing.  A backfill's chunk
 * buffer holds rows read in a snapshot, not WAL: its progress
 * (backfill_after) is stored only after the batch that carried the rows
 * was acknowledged, and a resumed chunk writes new watermarks, so WAL
 * past the watermarks may be confirmed too.
 */
void
cdc_confirm_read_position(void)
{
	if (cdc->batch_open || cdc->pending != NIL || cdc->ack_pending)
		return;
	cdc->delivered = Max(cdc->delivered, cdc->ctx->reader->EndRecPtr);
}

/* A new session: the slot's restart_lsn as it is now. */
void
cdc_heartbeat_start(void)
{
	hb_restart = MyReplicationSlot->data.restart_lsn;
	hb_moved_at = GetCurrentTimestamp();
}

/*
 * A heartbeat: a non-transactional logical message "pg_egress.heartbeat"
 * in this database (it names the destination; the reader decodes it like
 * any message and ignores it; pg_waldump shows who wrote the WAL and why),
 * then a running-xacts record, the one thing that lets restart_lsn move
 * (see the top of the file), as slot creation writes one.  It lists every
 * transaction in progress, as the bgwriter's does, so an extra one is as
 * safe as theirs.  The end is flushed: the reader reads flushed WAL only,
 * and neither function flushes.
 */
static void
write_heartbeat(const char *why)
{
	char		content[NAMEDATALEN + 64];
	XLogRecPtr	end;

	hb_restart_then = MyReplicationSlot->data.restart_lsn;
	snprintf(content, sizeof(content), "%s %s", cdc->dest_name,
			 timestamptz_to_str(GetCurrentTimestamp()));
	(void) LogLogicalMessage(CDC_HEARTBEAT_PREFIX, content, strlen(content), false);
	end = LogStandbySnapshot();
	XLogFlush(end);
	hb_end = end;
	hb_moved_at = hb_written_at = GetCurrentTimestamp();
	ereport(DEBUG1,
			(errmsg_internal("pg_egress destination \"%s\": heartbeat at %X/%X (%s), slot restart_lsn %X/%X",
							 cdc->dest_name, LSN_FORMAT_ARGS(end), why,
							 LSN_FORMAT_ARGS(MyReplicationSlot->data.restart_lsn))));
}

/*
 * After a round: write a heartbeat if the slot needs one.  Two cases:
 *
 * - Load elsewhere: the reader has passed more than half a WAL segment
 *   that the slot still holds, and a quarter segment was written since the
 *   last heartbeat (which the reader has passed).  restart_lsn then trails
 *   the reader by about two quarter segments instead of two bgwriter
 *   intervals, and lag_bytes stays below one segment (unless WAL is
 *   written faster than two quarter segments per CDC_HEARTBEAT_MIN_GAP_MS).
 *   When the last heartbeat, decoded and confirmed, did not move
 *   restart_lsn at all, a transaction in progress since before it holds
 *   the slot (PostgreSQL keeps restart_lsn before its first record), and
 *   no heartbeat can help until it ends: then once per interval only.
 *
 * - Idle: restart_lsn did not move for pg_egress.heartbeat_interval though
 *   the slot holds more than CDC_HEARTBEAT_IDLE_MIN, and some other process
 *   wrote WAL that matters (GetLastImportantRecPtr: running-xacts records
 *   do not count) since this worker last wrote its own (heartbeat,
 *   bookmarks).  On an idle cluster that is at most one heartbeat, then
 *   nothing: no WAL is written for nothing.
 *
 * Never while a batch is open or rows are pending: the confirmed position
 * waits for the batch then, and a heartbeat could not move it.  Returns
 * true if a heartbeat was written (the caller decodes it at once).
 */
bool
cdc_heartbeat(void)
{
	XLogRecPtr	restart;
	XLogRecPtr	read;
	XLogRecPtr	flush;
	XLogRecPtr	ours;
	TimestampTz now;

	if (egress_heartbeat_interval_ms <= 0 || MyReplicationSlot == NULL || cdc->ctx == NULL)
		return false;
	if (cdc->batch_open || cdc->pending != NIL)
		return false;
	restart = MyReplicationSlot->data.restart_lsn;
	now = GetCurrentTimestamp();
	if (restart != hb_restart)
	{
		hb_restart = restart;
		hb_moved_at = now;
	}
	read = cdc->ctx->reader->EndRecPtr;
	if (read < hb_end)
		return false;			/* the last heartbeat is not decoded yet */
	flush = GetFlushRecPtr(NULL);

	if (read > restart && read - restart > wal_segment_size / 2 &&
		flush - hb_end >= wal_segment_size / 4 &&
		TimestampDifferenceExceeds(hb_written_at, now, CDC_HEARTBEAT_MIN_GAP_MS) &&
		(restart != hb_restart_then ||
		 TimestampDifferenceExceeds(hb_written_at, now, egress_heartbeat_interval_ms)))
	{
		write_heartbeat("the slot holds WAL written elsewhere");
		return true;
	}

	ours = Max(hb_end, cdc->persisted_end);
	if (TimestampDifferenceExceeds(hb_moved_at, now, egress_heartbeat_interval_ms) &&
		flush > restart && flush - restart > CDC_HEARTBEAT_IDLE_MIN &&
		GetLastImportantRecPtr() >= ours)
	{
		write_heartbeat("the slot did not move for pg_egress.heartbeat_interval");
		return true;
	}
	return false;
}

/*
 * How long the worker may sleep (ms), given the timeout it wants: no
 * longer than until the next idle heartbeat is due, when one can be.
 */
long
cdc_heartbeat_timeout(long timeout)
{
	TimestampTz due;
	long		left;

	if (egress_heartbeat_interval_ms <= 0 || MyReplicationSlot == NULL ||
		cdc->batch_open)
		return timeout;
	/* as in cdc_heartbeat: nothing foreign since our own WAL, no heartbeat */
	if (GetLastImportantRecPtr() < Max(hb_end, cdc->persisted_end) ||
		GetFlushRecPtr(NULL) <= MyReplicationSlot->data.restart_lsn + CDC_HEARTBEAT_IDLE_MIN)
		return timeout;
	due = TimestampTzPlusMilliseconds(hb_moved_at, egress_heartbeat_interval_ms);
	left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), due);
	return Max(1, Min(timeout, left));
}
