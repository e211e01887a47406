/*-------------------------------------------------------------------------
 * cdc_walguard.c
 *	  CDC worker: the WAL retention guards.  Owns pg_egress.max_slot_wal
 *	  (the hard limit: the slot is given up), pg_egress.max_slot_lag (warn,
 *	  lag_policy "pause"), an invalidated slot, and giving up the slot
 *	  (cdc_give_up_slot) from the error path.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "worker/cdc_internal.h"

/*
 * The destination's slot is of no more use, and the error path should give
 * it up (cdc_give_up_slot()): the destination left more WAL unacknowledged than
 * pg_egress.max_slot_wal, or PostgreSQL invalidated the slot.
 */
bool		cdc_slot_must_go = false;
char		cdc_slot_problem[CDC_SLOT_PROBLEM_LEN];

/* bytes as MB, rounded up: "held 3 MB, more than 2 MB", never "2 MB ... 2 MB" */
#define MB_ROUNDED_UP(b) (((b) + 1024 * 1024 - 1) / (1024 * 1024))

/*
 * The hard limit: unacked is the WAL the destination has not acknowledged
 * (cdc_current_unacked()), not the WAL the slot retains (cdc_current_lag()).  A
 * long transaction anywhere in the cluster keeps restart_lsn back while a
 * caught-up destination acknowledges everything: dropping its slot would
 * free none of that WAL, only resync every stream.
 */
bool
cdc_over_wal_limit(int64 unacked)
{
	if (egress_max_slot_wal_mb <= 0 || unacked <= (int64) egress_max_slot_wal_mb * 1024 * 1024)
		return false;
	if (!cdc_slot_must_go)
		snprintf(cdc_slot_problem, sizeof(cdc_slot_problem),
				 "replication slot \"%s\" held " INT64_FORMAT " MB of WAL its destination has not acknowledged, more than pg_egress.max_slot_wal (%d MB)",
				 cdc->slot_name, MB_ROUNDED_UP(unacked), egress_max_slot_wal_mb);
	cdc_slot_must_go = true;
	return true;
}

/* The hard WAL limit, outside a sink's retries: ends the session. */
void
cdc_enforce_wal_limit(int64 lag)
{
	if (cdc_over_wal_limit(lag))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("%s", cdc_slot_problem)));
}

/* The slot was invalidated (max_slot_wal_keep_size): ends the session. */
void
cdc_slot_invalidated(void)
{
	snprintf(cdc_slot_problem, sizeof(cdc_slot_problem),
			 "replication slot \"%s\" was invalidated by the server (max_slot_wal_keep_size): the changes it held are gone",
			 cdc->slot_name);
	cdc_slot_must_go = true;
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("%s", cdc_slot_problem)));
}

/*
 * Mark every LOG_BASED stream of the destination (not those in state
 * error, whose resume syncs them again anyway) for a new initial sync, with
 * the reason in last_error.
 */
static bool
resync_destination_streams(const char *why)
{
	EgressCatalogGuard guard;
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		values[2];

	if (!egress_worker_catalog_begin(&guard, true))
		return false;
	values[0] = CStringGetTextDatum(cdc->dest_name);
	values[1] = CStringGetTextDatum(why);
	egress_catalog_exec("UPDATE egress.stream_state st SET state = 'pending', resync = true, "
						"last_error = $2, last_error_at = pg_catalog.now(), "
						"updated_at = pg_catalog.now() "
						"FROM egress.stream s WHERE s.id OPERATOR(pg_catalog.=) st.stream_id "
						"AND s.destination OPERATOR(pg_catalog.=) $1 "
						"AND s.method OPERATOR(pg_catalog.=) 'LOG_BASED' "
						"AND st.state OPERATOR(pg_catalog.<>) 'error'",
						2, argtypes, values, NULL, false);
	egress_worker_catalog_end(&guard);
	return true;
}

/*
 * The slot to give up turned out not to be a slot of pg_egress (another
 * database's, or another plugin's: someone replaced ours): nothing is
 * dropped, and the streams stop (state error) rather than being synced
 * again as if a slot had been freed.
 */
static void
stop_for_foreign_slot(void)
{
	char	   *msg = psprintf("%s; it is not a slot of pg_egress (another database's, or another output plugin's) and was not dropped",
							   cdc_slot_problem);

	ereport(WARNING,
			(errmsg("pg_egress did not drop replication slot \"%s\" of destination \"%s\": it is not a slot of pg_egress",
					cdc->slot_name, cdc->dest_name),
			 errdetail("%s.", cdc_slot_problem),
			 errhint("The streams of the destination are stopped; drop or rename that slot, then resume them.")));
	cdc_note_failure(msg, true);
	pfree(msg);
}

/*
 * Give up the destination's slot (it is not held: called from the error
 * path): drop it and sync the streams again; the next session makes a new
 * slot.  A slot pg_egress did not create is dropped only with the
 * destination option drop_adopted_slot; otherwise its streams stop (state
 * error) and the slot is left to whoever made it.
 */
void
cdc_give_up_slot(void)
{
	bool		drop_adopted = false;

	(void) egress_jsonb_get_bool(cdc->dest_options, "drop_adopted_slot", &drop_adopted);
	if (!cdc->slot_owned && !drop_adopted)
	{
		ereport(WARNING,
				(errmsg("pg_egress streams of destination \"%s\" stopped: %s",
						cdc->dest_name, cdc_slot_problem),
				 errdetail("The slot was not created by pg_egress; it is dropped only with the destination option drop_adopted_slot."),
				 errhint("Drop the slot yourself, then resume the streams: they are synced again.")));
		cdc_note_failure(cdc_slot_problem, true);
		return;
	}

	if (!egress_slot_is_ours(cdc->slot_name))
	{
		stop_for_foreign_slot();
		return;
	}

	/*
	 * First the resync, committed; then the drop: a stream must never carry
	 * on from its bookmark on a new slot that lacks what happened meanwhile.
	 * If the drop does not happen (in use), the streams are synced again on
	 * the old slot: needless, but nothing is lost.
	 */
	if (!resync_destination_streams(cdc_slot_problem))
		return;
	switch (egress_slot_drop(cdc->slot_name))
	{
		case EGRESS_SLOT_IN_USE:
			/* another process holds it: the next session tries again */
			ereport(WARNING,
					(errmsg("pg_egress could not drop replication slot \"%s\" of destination \"%s\": it is in use",
							cdc->slot_name, cdc->dest_name),
					 errdetail("%s", cdc_slot_problem),
					 errhint("Its streams are synced again (a new version).")));
			break;
		case EGRESS_SLOT_ABSENT:
			ereport(WARNING,
					(errmsg("pg_egress replication slot \"%s\" of destination \"%s\" is gone: %s",
							cdc->slot_name, cdc->dest_name, cdc_slot_problem),
					 errdetail("Its streams are synced again (a new version) once the destination accepts batches.")));
			break;
		case EGRESS_SLOT_NOT_OURS:
			/* replaced since the check above */
			stop_for_foreign_slot();
			break;
		case EGRESS_SLOT_DROPPED:
			ereport(WARNING,
					(errmsg("pg_egress dropped replication slot \"%s\" of destination \"%s\": %s",
							cdc->slot_name, cdc->dest_name, cdc_slot_problem),
					 errdetail("Its streams are synced again (a new version) once the destination accepts batches.")));
			break;
	}
}

/* Streams with lag_policy "pause" stop when the slot holds too much WAL. */
static bool
pause_lagging_streams(int64 lag)
{
	bool		paused = false;

	if (egress_max_slot_lag_mb <= 0 || lag <= (int64) egress_max_slot_lag_mb * 1024 * 1024)
		return false;
	for (int i = 0; i < cdc->nstreams; i++)
	{
		CdcStream  *s = &cdc->streams[i];

		if (!s->pause_on_lag)
			continue;
		egress_record_stream_error(s->def->id,
								   psprintf("stopped: replication slot \"%s\" holds " INT64_FORMAT " MB of WAL, more than pg_egress.max_slot_lag (%d MB)",
											cdc->slot_name, MB_ROUNDED_UP(lag), egress_max_slot_lag_mb));
		paused = true;
	}
	return paused;
}

int64
cdc_current_lag(void)
{
	XLogRecPtr	restart = InvalidXLogRecPtr;
	ReplicationSlot *s;

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	s = SearchNamedReplicationSlot(cdc->slot_name, false);
	if (s)
	{
		SpinLockAcquire(&s->mutex);
		restart = s->data.restart_lsn;
		SpinLockRelease(&s->mutex);
	}
	LWLockRelease(ReplicationSlotControlLock);
	if (XLogRecPtrIsInvalid(restart))
		return 0;
	return (int64) (GetFlushRecPtr(NULL) - restart);
}

/* WAL the destination has not acknowledged: what pg_egress.max_slot_wal limits */
int64
cdc_current_unacked(void)
{
	return Max(egress_slot_unacked_wal(cdc->slot_name, false), 0);
}

/*
 * The WAL retention guard: show the WAL the slot holds, warn once per
 * crossing of pg_egress.max_slot_lag, and, when the destination is failing
 * (may_pause), stop streams with lag_policy "pause".  A healthy destination
 * that is catching up is never stopped.  Returns true if streams were
 * stopped.
 */
bool
cdc_check_lag(int64 lag, bool may_pause)
{
	bool		over = egress_max_slot_lag_mb > 0 &&
		lag > (int64) egress_max_slot_lag_mb * 1024 * 1024;

	for (int i = 0; i < cdc->nstreams; i++)
		if (cdc->streams[i].slot)
			cdc->streams[i].slot->lag_bytes = lag;
	if (!over)
	{
		cdc->lag_warned = false;
		return false;
	}
	if (!cdc->lag_warned)
		ereport(WARNING,
				(errmsg("pg_egress replication slot \"%s\" holds " INT64_FORMAT " MB of WAL, more than pg_egress.max_slot_lag (%d MB)",
						cdc->slot_name, MB_ROUNDED_UP(lag), egress_max_slot_lag_mb),
				 errhint("Check destination \"%s\"; its streams with lag_policy \"pause\" are stopped.",
						 cdc->dest_name)));
	cdc->lag_warned = true;
	return may_pause && pause_lagging_streams(lag);
}
