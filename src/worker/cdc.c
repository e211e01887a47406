/*-------------------------------------------------------------------------
 * cdc.c
 *	  The CDC worker of a destination: decodes the destination's logical
 *	  slot in-process (with pgoutput, or wal2json for a slot made for it:
 *	  the slot's plugin decides) and publishes the committed changes of its
 *	  LOG_BASED streams as Singer batches.
 *
 * One worker per destination, because a process holds one slot at a time.
 * Decoding is driven the way pg_logical_slot_get_changes() drives it, but
 * the decoding context stays open across rounds; each round reads WAL up
 * to the flush pointer taken at its start, then the worker sleeps on its
 * latch.  A batch is acknowledged by the sink before the positions it
 * carried are recorded (stream bookmarks in the catalog, the slot's
 * confirmed_flush), so after any crash delivery resumes from the last
 * acknowledged position; transactions at or before a stream's bookmark
 * are skipped when WAL is decoded again.
 *
 * The worker runs as the bootstrap superuser but reads for each stream's
 * owner: privileges are checked again, as of the change, after every
 * catalog change that can affect them (cdc_privilege_problem), and user code
 * reached while rendering runs as the owner (as_owner_begin).
 *
 * This file owns the worker's main loop (egress_cdc_main), sessions
 * (run_session), stopping streams between rounds and the error path.
 * The rest lives in cdc_config.c, cdc_batch.c, cdc_decode.c, cdc_relmap.c,
 * cdc_render.c and cdc_walguard.c; cdc_internal.h is their shared state.
 *
 * LOG_BASED_READY
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "worker/cdc_internal.h"

#include "catalog/pg_publication.h"
#include "net/backoff.h"
#include "storage/condition_variable.h"
#include "storage/lwlock.h"

CdcState   *cdc;
ResourceOwner cdc_owner;

/*
 * The destination's shared entry, for the worker's life: its lag (the
 * commit time of the oldest change not yet acknowledged), retries and last
 * acknowledged batch outlive the sessions, so they show across an outage.
 */
EgressWorkerSlot *cdc_dest_entry = NULL;

/* the stream an initial sync is for, for the error path; 0: none */
int32		cdc_syncing_stream = 0;

bool		cdc_own_invalidation = false;

/*
 * Decoding leaves time-travel entries in the caches: throw them away before
 * ordinary catalog work.  Only inside a transaction, since relcache entries
 * in use are rebuilt on the spot.  This flush is no catalog change: the
 * invalidation callbacks ignore it (cdc_own_invalidation), else every
 * batch (persisting the bookmarks) would mark every descriptor, the
 * relation map and the privileges stale and rebuild them.
 */
void
cdc_start_catalog_transaction(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	cdc_own_invalidation = true;
	PG_TRY();
	{
		InvalidateSystemCaches();
	}
	PG_FINALLY();
	{
		cdc_own_invalidation = false;
	}
	PG_END_TRY();
}

static void
release_slots_at_exit(int code, Datum arg)
{
	if (cdc)
		cdc_release_stream_slots();
}


/*
 * Record what stopped streams during the round (see cdc_stop_stream): an
 * owner who may no longer read the table puts the stream into state error
 * (egress_resume_stream() then synchronizes it again, since the slot moved
 * on for the other streams); a partition's TRUNCATE asks for a new sync.
 * Returns true if any stream stopped: the session starts over without it.
 */
static bool
apply_stream_stops(void)
{
	bool		any = false;

	for (int i = 0; i < cdc->nstreams; i++)
	{
		CdcStream  *s = &cdc->streams[i];
		EgressCatalogGuard guard;

		if (s->stop == CDC_STOP_ERROR)
		{
			ereport(WARNING,
					(errmsg("pg_egress stream \"%s\" stopped: %s",
							s->def->name, s->stop_message),
					 errdetail("No change committed after the privileges changed was sent."),
					 errhint("Grant the privileges again, then call egress_resume_stream(); the stream is synchronized again.")));
			egress_record_stream_error(s->def->id, s->stop_message);
			any = true;
		}
		else if (s->stop == CDC_STOP_UNFILTERED)
		{
			ereport(WARNING,
					(errmsg("pg_egress stream \"%s\" stopped: %s",
							s->def->name, s->stop_message),
					 errdetail("No change of the stream was sent: wal2json cannot filter rows, and the stream's rows outside its filter must not be sent."),
					 errhint("Remove the stream and add it again without \"filter\" (or with \"columns\" only), or move the stream to a destination that decodes with pgoutput.")));
			egress_record_stream_error(s->def->id, s->stop_message);
			any = true;
		}
		else if (s->stop == CDC_STOP_RESYNC)
		{
			Oid			argtypes[1] = {INT4OID};
			Datum		values[1] = {Int32GetDatum(s->def->id)};

			ereport(LOG,
					(errmsg("pg_egress stream \"%s\": %s; the stream is synchronized again",
							s->def->name, s->stop_message)));
			if (egress_worker_catalog_begin(&guard, true))
			{
				egress_catalog_exec("UPDATE egress.stream_state SET resync = true, updated_at = now() "
									"WHERE stream_id = $1",
									1, argtypes, values, NULL, false);
				egress_worker_catalog_end(&guard);
			}
			any = true;
		}
	}
	return any;
}

/*
 * What DDL did to the streams' tables; checked at the end of a round when
 * a relcache invalidation flagged a stream (recheck), so one catalog
 * transaction per round at most, and only after DDL:
 *
 * - a table that was dropped stops its stream with an error instead of
 *   waiting for changes that cannot come;
 * - with pgoutput, a table that lost its replica identity (primary key
 *   dropped, REPLICA IDENTITY NOTHING, for a partitioned table a leaf
 *   without one): PostgreSQL refuses the application's UPDATE and DELETE
 *   of a table without one in a publication that publishes them, and
 *   pgoutput could not decode them anyway.  The stream goes into state
 *   error and the publication is brought in step (which leaves such a
 *   table out), so the application works again within a round;
 * - with pgoutput, a table that left the destination's publication behind
 *   pg_egress's back (ALTER PUBLICATION ... DROP TABLE, or DROP COLUMN ...
 *   CASCADE of a column of the stream's column list): pgoutput has not
 *   sent its changes since, so the publication is brought in step and the
 *   stream synced again, saying why.  A publication that is gone as a
 *   whole is left to the error path (after_error), which replaces the
 *   slot.
 */
static bool
stop_dropped_streams(void)
{
	bool		any_stale = false;
	bool		any_gone = false;
	bool		any_repair = false;
	Oid			puboid = InvalidOid;

	for (int i = 0; i < cdc->nstreams; i++)
		any_stale |= cdc->streams[i].recheck;
	if (!any_stale)
		return false;

	cdc_start_catalog_transaction();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (cdc->pgoutput)
		puboid = get_publication_oid(egress_publication_name(cdc->dest_name), true);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	for (int i = 0; i < cdc->nstreams; i++)
	{
		CdcStream  *s = &cdc->streams[i];
		Oid			argtypes[1] = {OIDOID};
		Datum		values[1] = {ObjectIdGetDatum(s->def->relid)};

		s->lost_identity = s->left_publication = false;
		if (!s->recheck)
			continue;
		s->recheck = false;
		/* flags, not a list: SPI's and the transaction's memory go away */
		if (SPI_execute_with_args("SELECT 1 FROM pg_catalog.pg_class WHERE oid OPERATOR(pg_catalog.=) $1",
								  1, argtypes, values, NULL, true, 1) == SPI_OK_SELECT &&
			SPI_processed == 0)
		{
			s->dropped = any_gone = true;
			continue;
		}
		if (!cdc->pgoutput || s->stop != CDC_STOP_NONE)
			continue;
		if (!egress_table_has_replica_identity(s->def->relid))
			s->lost_identity = any_repair = true;
		else if (OidIsValid(puboid) &&
				 !SearchSysCacheExists2(PUBLICATIONRELMAP,
										ObjectIdGetDatum(s->def->relid),
										ObjectIdGetDatum(puboid)))
			s->left_publication = any_repair = true;
	}
	SPI_finish();

	/*
	 * The streams' new states and the publication in step, in one
	 * transaction: a stream is never synced again from a publication that
	 * still lacks its table.
	 */
	if (any_repair && egress_extension_present())
	{
		EgressCatalogGuard guard;
		char	   *pubname = egress_publication_name(cdc->dest_name);

		egress_catalog_enter(&guard);
		for (int i = 0; i < cdc->nstreams; i++)
		{
			CdcStream  *s = &cdc->streams[i];
			Oid			argtypes[2] = {INT4OID, TEXTOID};
			Datum		values[2];

			if (!s->lost_identity && !s->left_publication)
				continue;
			values[0] = Int32GetDatum(s->def->id);
			if (s->lost_identity)
			{
				char	   *msg = psprintf("table %s no longer has a replica identity: its UPDATE and DELETE cannot be decoded; it was left out of publication \"%s\" so that the application's UPDATE and DELETE work",
										   s->def->relation, pubname);

				ereport(WARNING,
						(errmsg("pg_egress stream \"%s\" stopped: %s", s->def->name, msg),
						 errhint("Give the table a primary key (or REPLICA IDENTITY FULL or USING INDEX), then call egress_resync_stream().")));
				values[1] = CStringGetTextDatum(msg);
				egress_catalog_exec("UPDATE egress.stream_state SET state = 'error', last_error = $2, "
									"last_error_at = pg_catalog.now(), updated_at = pg_catalog.now() "
									"WHERE stream_id OPERATOR(pg_catalog.=) $1",
									2, argtypes, values, NULL, false);
			}
			else
			{
				char	   *msg = psprintf("table %s had left publication \"%s\" of destination \"%s\" (ALTER PUBLICATION or DROP ... CASCADE): changes made meanwhile may be missing; it was put back and the stream is synchronized again",
										   s->def->relation, pubname, cdc->dest_name);

				ereport(WARNING,
						(errmsg("pg_egress stream \"%s\": %s", s->def->name, msg)));
				values[1] = CStringGetTextDatum(msg);
				egress_catalog_exec("UPDATE egress.stream_state SET resync = true, state = 'pending', "
									"last_error = $2, last_error_at = pg_catalog.now(), "
									"updated_at = pg_catalog.now() "
									"WHERE stream_id OPERATOR(pg_catalog.=) $1",
									2, argtypes, values, NULL, false);
			}
		}
		egress_publication_sync(cdc->dest_name);
		egress_catalog_exit(&guard);
	}
	PopActiveSnapshot();
	CommitTransactionCommand();

	for (int i = 0; i < cdc->nstreams; i++)
	{
		CdcStream  *s = &cdc->streams[i];
		char	   *msg;

		if (!s->dropped)
			continue;
		msg = psprintf("relation %s of stream \"%s\" no longer exists",
					   s->def->relation, s->def->name);

		ereport(WARNING, (errmsg("pg_egress stream stopped: %s", msg)));
		egress_record_stream_error(s->def->id, msg);
	}
	return any_gone || any_repair;
}

/* The destination as a sink is opened for: kind, location and options. */
static char *
sink_identity(void)
{
	return psprintf("%s|%s|%s", cdc->dest_kind, cdc->dest_location,
					cdc->dest_options ?
					JsonbToCString(NULL, &cdc->dest_options->root,
								   VARSIZE(cdc->dest_options)) : "");
}

/*
 * The destination's sink, for this session.  It stays open across
 * sessions while the destination stays the same; when its location or
 * options changed (the fingerprint covers them, so a new session
 * started), the old sink is closed and a new one opened.  The sink and
 * what it was opened with live in a context of their own (sinkcxt), reset
 * before a new one is opened.
 */
static void
open_sink(void)
{
	char	   *identity = sink_identity();
	MemoryContext oldcxt;

	if (cdc->sink != NULL && strcmp(identity, cdc->sink_identity) != 0)
	{
		EgressSink *old = cdc->sink;

		ereport(LOG,
				(errmsg("pg_egress destination \"%s\" changed: its sink is opened again",
						cdc->dest_name)));
		/* forgotten first: a close that fails must not leave it in use */
		cdc->sink = NULL;
		old->ops->close(old);
	}
	if (cdc->sink == NULL)
	{
		MemoryContextReset(cdc->sinkcxt);
		oldcxt = MemoryContextSwitchTo(cdc->sinkcxt);
		cdc->sink_identity = pstrdup(identity);
		cdc->sink = egress_sink_open(pstrdup(cdc->dest_kind),
									 pstrdup(cdc->dest_location),
									 cdc->dest_options ?
									 (Jsonb *) pg_detoast_datum_copy((struct varlena *) cdc->dest_options) :
									 NULL);
		cdc->sink->keep_retrying = cdc_keep_retrying;
		cdc->sink->delivered_after_retries = cdc_delivered_after_retries;
		MemoryContextSwitchTo(oldcxt);
	}
	pfree(identity);
}

/*
 * One session: configuration, slot, initial syncs, then decoding until the
 * configuration changes.  Returns false when there is nothing to serve.
 */
static bool
run_session(MemoryContext sessioncxt)
{
	bool		need_sync = false;

	cdc_retrying = false;
	if (cdc_load_config(sessioncxt) == 0)
		return false;
	/* the destination failed last time: "retrying" until a batch gets through */
	if (cdc_failing)
		cdc_show_failing();
	/* its figures are shown to members of the destination's owner */
	if (cdc_dest_entry->owner != cdc->dest_owner)
		egress_set_slot_owner(cdc_dest_entry, cdc->dest_owner);
	{
		(void) cdc_check_lag(cdc_current_lag(), false);
		cdc_enforce_wal_limit(cdc_current_unacked());
	}

	open_sink();
	/* every session: the owner's superuser status may have changed */
	cdc->sink->owner_superuser = cdc->dest_owner_superuser;
	cdc->sink->owner = cdc->dest_owner;

	if (!cdc_ensure_slot())
		return true;			/* its streams stopped: the next session sees */
	for (int i = 0; i < cdc->nstreams; i++)
		need_sync |= cdc->streams[i].needs_sync;
	if (need_sync)
	{
		/* chunked backfills start once decoding runs (cdc_backfill.c) */
		for (int i = 0; i < cdc->nstreams; i++)
			if (cdc->streams[i].needs_sync && !cdc_backfill_wanted(&cdc->streams[i]))
				cdc_initial_sync(&cdc->streams[i]);
	}

	{
		char		prefix[NAMEDATALEN + 2];

		snprintf(prefix, sizeof(prefix), "~%s", cdc->dest_name);
		cdc->sink->ops->cleanup(cdc->sink, prefix);
	}

	cdc_open_decoding();
	cdc->max_rows = PG_INT64_MAX;
	cdc->max_bytes = PG_INT64_MAX;
	for (int i = 0; i < cdc->nstreams; i++)
	{
		cdc->max_rows = Min(cdc->max_rows, egress_stream_batch_rows(cdc->streams[i].def));
		cdc->max_bytes = Min(cdc->max_bytes, egress_stream_batch_bytes(cdc->streams[i].def));
	}
	for (int i = 0; i < cdc->nstreams; i++)
		if (cdc->streams[i].needs_sync && cdc->streams[i].stop == CDC_STOP_NONE)
			cdc_backfill_begin(&cdc->streams[i]);
	pgstat_report_activity(STATE_RUNNING, "streaming changes");
	cdc_heartbeat_start();

	for (;;)
	{
		long		timeout;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/*
		 * A configuration committed before this round's WAL (an altered
		 * destination or stream) applies to all of it: a change committed
		 * after egress_alter_destination() never goes to the old URL.
		 */
		if (cdc_config_changed())
			break;
		cdc_decode_round();

		if (apply_stream_stops() || cdc_config_changed() || stop_dropped_streams())
			break;
		{
			(void) cdc_check_lag(cdc_current_lag(), false);
			cdc_enforce_wal_limit(cdc_current_unacked());
		}
		/* a chunked backfill: the next watermark or chunk */
		cdc_backfill_step();
		/* a batch its rows filled is acknowledged before the worker sleeps */
		cdc_finish_ack();
		if (cdc->catalog_moved)
			break;

		/* the slot holds WAL with nothing for us: a heartbeat moves it */
		(void) cdc_heartbeat();

		/* more WAL flushed meanwhile: decode it now */
		if (GetFlushRecPtr(NULL) > cdc->ctx->reader->EndRecPtr)
			continue;

		/* poll the flush position at the flush interval; sooner if a batch is due */
		timeout = cdc_flush_interval_ms();
		if (cdc->batch_open)
		{
			long		age = TimestampDifferenceMilliseconds(cdc->batch_started,
															  GetCurrentTimestamp());

			timeout = Max(1, cdc_flush_interval_ms() - age);
		}
		timeout = cdc_heartbeat_timeout(timeout);
		/* the backfill waits for other transactions: poll again soon */
		timeout = cdc_backfill_timeout(timeout);
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}

	/* configuration changed: deliver what is pending, then start over */
	cdc_commit_batch();
	if (cdc->acked_since_persist)
		cdc_persist_bookmarks();
	if (cdc->delivered > MyReplicationSlot->data.confirmed_flush)
	{
		LogicalConfirmReceivedLocation(cdc->delivered);
		ReplicationSlotMarkDirty();
	}
	cdc_close_decoding();
	cdc_backfill_reset();
	return true;
}

static void
release_dest_entry(int code, Datum arg)
{
	egress_count_retries_in(NULL);
	cdc_dest_entry = NULL;
	egress_release_slot((EgressWorkerSlot *) DatumGetPointer(arg));
}

/*
 * After an error of a session, outside its handler: what PostgreSQL's
 * top-level error recovery and WalSndErrorCleanup do for a walsender, for
 * a process that decodes outside a walsender.  Low-level state first (locks,
 * condition variables, the wait event), then the transaction, then the
 * decoding context (it closes the WAL segment and the reorder buffer's
 * spill files; pgoutput forgets its relation cache) and the slot.  Nothing
 * here writes to the catalog.
 */
static void
error_cleanup(void)
{
	HOLD_INTERRUPTS();
	LWLockReleaseAll();
	ConditionVariableCancelSleep();
	pgstat_report_wait_end();
	AbortOutOfAnyTransaction();
	if (cdc->ctx)
	{
		LogicalDecodingContext *ctx = cdc->ctx;

		cdc->ctx = NULL;		/* not again, whatever happens */
		PG_TRY();
		{
			FreeDecodingContext(ctx);
		}
		PG_CATCH();
		{
			/* its memory goes with the session context */
			EmitErrorReport();
			FlushErrorState();
		}
		PG_END_TRY();
	}
	if (MyReplicationSlot != NULL)
		ReplicationSlotRelease();
	ReplicationSlotCleanup();
	cdc_relmap_close(false);	/* in the session context */
	CurrentResourceOwner = cdc_owner;
	RESUME_INTERRUPTS();

	/* the batch being written is not acknowledged: the sink forgets it */
	if (cdc->sink)
		cdc->sink->ops->abort_batch(cdc->sink);
	cdc->batch_open = false;
	/* a batch not acknowledged is sent again by the next session */
	cdc->ack_pending = false;
	cdc->pending = NIL;
	cdc_backfill_reset();
	resetStringInfo(&cdc->buf);
	MemoryContextReset(cdc->batchcxt);
	MemoryContextReset(cdc->msgcxt);
	MemoryContextReset(cdc->pendcxt);
}

/*
 * After error_cleanup: show the failure where the owners see it, apply the
 * WAL retention guards, and say how long to wait before the next session
 * (milliseconds).
 */
static long
after_error(ErrorData *edata, int *failures)
{
	long		backoff;

	/* the caches may hold time-travel entries of the decoding */
	cdc_start_catalog_transaction();
	if (cdc->pgoutput && !cdc_slot_must_go && cdc->slot_name != NULL &&
		edata->message != NULL &&
		((edata->sqlerrcode == ERRCODE_UNDEFINED_OBJECT &&
		  strstr(edata->message,
				 psprintf("publication \"%s\"",
						  egress_publication_name(cdc->dest_name))) != NULL) ||
		 strncmp(edata->message, "cache lookup failed for publication ",
				 strlen("cache lookup failed for publication ")) == 0))
	{
		/*
		 * pgoutput could not find the destination's publication (the only
		 * one it is given) in the catalog as of a decoded change: it was
		 * dropped by hand, perhaps made again since (by hand or by
		 * egress_publication_sync).  That historic catalog never changes,
		 * so the slot cannot be decoded past that change, whatever exists
		 * now: give the slot up, as an invalidated one is.  The streams
		 * are synced again on a new slot, made after the publication is
		 * brought in step (record_new_slot).  The second message is what
		 * a later session gets once the publication exists again under
		 * another OID.
		 */
		snprintf(cdc_slot_problem, sizeof(cdc_slot_problem),
				 "publication \"%s\" of destination \"%s\" was dropped while its replication slot \"%s\" held changes (%s): the slot cannot be decoded past the drop",
				 egress_publication_name(cdc->dest_name), cdc->dest_name,
				 cdc->slot_name, edata->message);
		cdc_slot_must_go = true;
	}
	else if (cdc->pgoutput && !cdc_slot_must_go && cdc->slot_name != NULL &&
			 edata->sqlerrcode == ERRCODE_UNDEFINED_OBJECT)
	{
		char	   *pubname = egress_publication_name(cdc->dest_name);

		/*
		 * The destination's publication was dropped (by hand): pgoutput
		 * reads it with the catalog as of each change, so the slot cannot
		 * be decoded past the drop, even once the publication exists
		 * again.  The slot is given up as an invalidated one is: the
		 * streams are synced again on a new slot, made after the
		 * publication is created anew (record_new_slot).
		 */
		if (!SearchSysCacheExists1(PUBLICATIONNAME, CStringGetDatum(pubname)))
		{
			snprintf(cdc_slot_problem, sizeof(cdc_slot_problem),
					 "publication \"%s\" of destination \"%s\" was dropped: replication slot \"%s\" cannot be decoded past the drop",
					 pubname, cdc->dest_name, cdc->slot_name);
			cdc_slot_must_go = true;
		}
	}
	CommitTransactionCommand();

	/* a slot that held too much WAL, or was invalidated */
	if (!cdc_slot_must_go && cdc->slot_name != NULL && egress_slot_lost(cdc->slot_name))
	{
		snprintf(cdc_slot_problem, sizeof(cdc_slot_problem),
				 "replication slot \"%s\" was invalidated by the server (max_slot_wal_keep_size): the changes it held are gone",
				 cdc->slot_name);
		cdc_slot_must_go = true;
	}
	/* a sink that fails at once (file) never asks cdc_keep_retrying */
	if (!cdc_slot_must_go && cdc->slot_name != NULL && cdc->nstreams > 0)
		(void) cdc_over_wal_limit(cdc_current_unacked());
	if (cdc_slot_must_go)
	{
		cdc_give_up_slot();
		cdc_slot_must_go = false;
		cdc_syncing_stream = 0;
		/* the destination may still be dead: do not hurry */
		(*failures)++;
		backoff = egress_backoff_after(1000L, 60000L, *failures);
	}
	else if (cdc_syncing_stream != 0)
	{
		/* an initial sync that failed stops its stream, not the others */
		egress_record_stream_error(cdc_syncing_stream, edata->message);
		cdc_syncing_stream = 0;
		backoff = 0;
	}
	else if (edata->sqlerrcode == EGRESS_ERRCODE_REJECTED)
	{
		/* refused for good: its streams stop until resumed */
		ereport(WARNING,
				(errmsg("pg_egress streams of destination \"%s\" stopped: the destination rejected a batch",
						cdc->dest_name)));
		cdc_note_failure(edata->message, true);
		backoff = 0;
	}
	else
	{
		/* a failing destination: show it, retry with a growing pause */
		cdc_note_failure(edata->message, false);
		cdc_show_failing();
		(*failures)++;
		backoff = egress_backoff_after(1000L, 60000L, *failures);
	}

	/* while the destination fails, WAL piles up: show it, apply the policy */
	if (cdc->nstreams > 0 && cdc_check_lag(cdc_current_lag(), true))
		backoff = 0;
	return backoff;
}

void
egress_cdc_main(Datum main_arg)
{
	Oid			dboid;
	char		dest[NAMEDATALEN];
	MemoryContext sessioncxt;
	volatile int failures = 0;
	EgressWorkerSlot *dest_entry;
	pid_t		holder;

	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	strlcpy(dest, MyBgworkerEntry->bgw_extra + sizeof(Oid), sizeof(dest));

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	egress_pin_output_settings();

	/*
	 * Values decoded by the output plugin are printed by their output
	 * functions in this session: print names (regclass, regproc...) as
	 * FULL_TABLE does, qualified unless in pg_catalog.
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * One CDC worker per destination: a database worker that was restarted
	 * does not know the one its predecessor started.
	 */
	dest_entry = egress_claim_destination(dest, &holder);
	if (dest_entry == NULL)
	{
		/*
		 * Without the entry nothing keeps a second worker off this
		 * destination (two decoding sessions, two writers): never go on
		 * without it.  The database worker starts one again later.
		 */
		if (holder != 0)
			ereport(LOG,
					(errmsg("pg_egress destination \"%s\" is already served by process %d",
							dest, (int) holder)));
		else
		{
			ereport(LOG,
					(errmsg("pg_egress CDC worker for destination \"%s\" exits: no free shared worker entry",
							dest),
					 errhint("Raise pg_egress.max_active_streams (needs a restart).")));
			cdc_no_free_entry(dest);
		}
		proc_exit(0);
	}
	before_shmem_exit(release_dest_entry, PointerGetDatum(dest_entry));
	cdc_dest_entry = dest_entry;
	/* retries of batches, S3 requests and sessions alike */
	egress_count_retries_in(dest_entry);

	/*
	 * The reorder buffer keeps this much of large transactions in memory
	 * before spilling to disk; half the server default keeps the worker
	 * well under 100 MB with room for batches and caches.
	 */
	SetConfigOption("logical_decoding_work_mem", "32MB", PGC_USERSET, PGC_S_OVERRIDE);

	cdc = MemoryContextAllocZero(TopMemoryContext, sizeof(CdcState));
	cdc->dest_name = MemoryContextStrdup(TopMemoryContext, dest);
	cdc->batchcxt = AllocSetContextCreate(TopMemoryContext, "pg_egress cdc batch",
										  ALLOCSET_DEFAULT_SIZES);
	cdc->msgcxt = AllocSetContextCreate(TopMemoryContext, "pg_egress cdc message",
										ALLOCSET_DEFAULT_SIZES);
	cdc->pendcxt = AllocSetContextCreate(TopMemoryContext, "pg_egress cdc deferred",
										 ALLOCSET_DEFAULT_SIZES);
	cdc->sinkcxt = AllocSetContextCreate(TopMemoryContext, "pg_egress cdc sink",
										 ALLOCSET_SMALL_SIZES);
	sessioncxt = AllocSetContextCreate(TopMemoryContext, "pg_egress cdc session",
									   ALLOCSET_DEFAULT_SIZES);
	cdc->decodecxt = sessioncxt;
	{
		MemoryContext oldcxt;

		/* the type map looks up type information: inside a transaction */
		StartTransactionCommand();
		oldcxt = MemoryContextSwitchTo(TopMemoryContext);
		initStringInfo(&cdc->buf);
		initStringInfo(&cdc->time_extracted);
		egress_column_init(&cdc->deleted_at_col, "_sdc_deleted_at", TIMESTAMPTZOID, -1, false);
		MemoryContextSwitchTo(oldcxt);
		CommitTransactionCommand();
	}
	CacheRegisterRelcacheCallback(cdc_relcache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(NAMESPACEOID, cdc_syscache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHOID, cdc_syscache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHMEMMEMROLE, cdc_syscache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, cdc_syscache_callback, (Datum) 0);
	before_shmem_exit(release_slots_at_exit, (Datum) 0);

	ereport(LOG,
			(errmsg("pg_egress CDC worker started for destination \"%s\"", dest)));

	for (;;)
	{
		volatile bool more = true;
		ErrorData  *volatile edata = NULL;

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		cdc_owner = ResourceOwnerCreate(NULL, "pg_egress cdc");
		CurrentResourceOwner = cdc_owner;
		PG_TRY();
		{
			more = run_session(sessioncxt);
			failures = 0;
		}
		PG_CATCH();
		{
			/*
			 * As little as possible here, as in PostgreSQL's own top-level
			 * error recovery: keep the error, report it, and leave the
			 * error state; the cleanup follows outside the handler.
			 */
			MemoryContextSwitchTo(TopMemoryContext);
			edata = CopyErrorData();
			EmitErrorReport();
			FlushErrorState();
		}
		PG_END_TRY();

		if (edata != NULL)
		{
			long		backoff;
			int			nfailures = failures;

			error_cleanup();
			backoff = after_error(edata, &nfailures);
			failures = nfailures;
			FreeErrorData(edata);
			if (backoff > 0)
			{
				(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 backoff, PG_WAIT_EXTENSION);
				ResetLatch(MyLatch);
			}
		}

		cdc_release_stream_slots();
		CurrentResourceOwner = NULL;
		ResourceOwnerRelease(cdc_owner, RESOURCE_RELEASE_BEFORE_LOCKS, false, true);
		ResourceOwnerRelease(cdc_owner, RESOURCE_RELEASE_LOCKS, false, true);
		ResourceOwnerRelease(cdc_owner, RESOURCE_RELEASE_AFTER_LOCKS, false, true);
		ResourceOwnerDelete(cdc_owner);
		cdc->streams = NULL;
		cdc->nstreams = 0;
		cdc->slot_name = NULL;	/* in the session's memory */
		MemoryContextReset(sessioncxt);
		if (!more)
			break;
	}

	ereport(LOG,
			(errmsg("pg_egress CDC worker for destination \"%s\" has no streams left", dest)));
	proc_exit(0);
}
