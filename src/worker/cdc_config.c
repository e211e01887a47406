/*-------------------------------------------------------------------------
 * cdc_config.c
 *	  CDC worker: the catalog side.  Owns loading the destination and its
 *	  LOG_BASED streams (cdc_load_config), the configuration fingerprint,
 *	  the slot (ensure, adopt, record), persisting bookmarks, failures shown
 *	  on the streams (cdc_note_failure) and the initial sync.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "worker/cdc_internal.h"

#include "catalog/version.h"

static char *config_fingerprint(MemoryContext cxt);

/* ---- configuration ----------------------------------------------------- */

void
cdc_release_stream_slots(void)
{
	for (int i = 0; i < cdc->nstreams; i++)
		if (cdc->streams[i].slot)
		{
			egress_release_slot(cdc->streams[i].slot);
			cdc->streams[i].slot = NULL;
		}
}

/*
 * Read the destination and its LOG_BASED streams.  Streams whose relation
 * is gone or no longer readable by their owner are put into the error
 * state here, so they cannot stop the others.  Returns the number of
 * streams to serve.
 */
int
cdc_load_config(MemoryContext cxt)
{
	EgressCatalogGuard guard;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	int			n;
	int32	   *ids;
	List	   *errors = NIL;	/* pairs: stream id, message */
	ListCell   *lc;
	MemoryContext oldcxt;
	bool		has_backfill;

	cdc_release_stream_slots();
	cdc->nstreams = 0;
	cdc->catalog_moved = false;
	cdc->config_gen = pg_atomic_read_u32(&egress_shared->config_gen);

	if (!egress_worker_catalog_begin(&guard, false))
		return 0;
	has_backfill = egress_catalog_has_backfill();

	/*
	 * First: everything read below is at least as new as this, so a change
	 * the fingerprint shows has been acted on (see cdc_config_changed()).
	 */
	if (cdc->fingerprint)
		pfree(cdc->fingerprint);
	cdc->fingerprint = config_fingerprint(TopMemoryContext);

	values[0] = CStringGetTextDatum(cdc->dest_name);
	if (egress_catalog_exec("SELECT kind, location, options, slot_name, slot_owned, "
							"owner::pg_catalog.oid "
							"FROM egress.destination WHERE name = $1",
							1, argtypes, values, NULL, true) == 0)
	{
		egress_worker_catalog_end(&guard);
		return 0;
	}
	oldcxt = MemoryContextSwitchTo(cxt);
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		d;
		char	   *opt_slot;

		cdc->dest_kind = SPI_getvalue(tup, desc, 1);
		cdc->dest_location = SPI_getvalue(tup, desc, 2);
		d = SPI_getbinval(tup, desc, 3, &isnull);
		cdc->dest_options = isnull ? NULL : DatumGetJsonbPCopy(d);
		cdc->slot_name = SPI_getvalue(tup, desc, 4);
		cdc->slot_owned = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
		cdc->dest_owner = DatumGetObjectId(SPI_getbinval(tup, desc, 6, &isnull));
		cdc->dest_owner_superuser = superuser_arg(cdc->dest_owner);
		opt_slot = egress_jsonb_get_string(cdc->dest_options, "slot_name");
		if (cdc->slot_name == NULL)
			cdc->slot_name = opt_slot ? opt_slot : psprintf("pg_egress_%s", cdc->dest_name);
	}
	MemoryContextSwitchTo(oldcxt);

	n = egress_catalog_exec("SELECT s.id FROM egress.stream s "
							"JOIN egress.stream_state st ON st.stream_id = s.id "
							"WHERE s.destination = $1 AND s.method = 'LOG_BASED' "
							"AND s.enabled AND st.state <> 'error' ORDER BY s.id",
							1, argtypes, values, NULL, true);
	ids = palloc(sizeof(int32) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
											 1, &isnull));
	}

	cdc->streams = MemoryContextAllocZero(cxt, sizeof(CdcStream) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		EgressStreamDef *def = egress_load_stream(ids[i], cxt);
		CdcStream  *s;
		Oid			argtypes2[1] = {INT4OID};
		Datum		values2[1] = {Int32GetDatum(ids[i])};
		bool		isnull;
		char	   *state;
		Datum		d;
		const char *problem = NULL;
		char	   *policy;

		if (def == NULL)
			continue;
		if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(def->relid)))
			problem = psprintf("relation %s of stream \"%s\" no longer exists",
							   def->relation, def->name);
		else
			problem = cdc_privilege_problem(def);
		if (problem)
		{
			/* in cxt: SPI's memory is gone when these are reported */
			MemoryContext oldcxt2 = MemoryContextSwitchTo(cxt);

			errors = lappend(errors, list_make2(makeInteger(def->id),
												makeString(pstrdup(problem))));
			MemoryContextSwitchTo(oldcxt2);
			continue;
		}

		/*
		 * A 0.1 catalog has no backfill columns: '{}' stands for "no
		 * chunked backfill", so its initial syncs run in one transaction
		 * (as 0.1's did) and nothing writes the columns.
		 */
		if (egress_catalog_exec(has_backfill ?
								"SELECT state, resync, version, confirmed_lsn, rows_sent, batches_sent, "
								"backfill_after, backfill_chunks, backfill_rows "
								"FROM egress.stream_state WHERE stream_id OPERATOR(pg_catalog.=) $1" :
								"SELECT state, resync, version, confirmed_lsn, rows_sent, batches_sent, "
								"'{}'::pg_catalog.text[], 0::pg_catalog.int8, 0::pg_catalog.int8 "
								"FROM egress.stream_state WHERE stream_id OPERATOR(pg_catalog.=) $1",
								1, argtypes2, values2, NULL, true) == 0)
			continue;			/* removed meanwhile */
		s = &cdc->streams[cdc->nstreams++];
		s->def = def;
		s->partitioned = get_rel_relkind(def->relid) == RELKIND_PARTITIONED_TABLE;
		state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		s->needs_sync = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)) ||
			strcmp(state, "streaming") != 0;
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
		s->version = isnull ? 0 : DatumGetInt64(d);
		s->acked_version = s->version;
		s->privs_stale = true;	/* checked again as of the first change */
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull);
		s->bookmark = isnull ? InvalidXLogRecPtr : DatumGetLSN(d);
		s->rows_sent = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull));
		s->batches_sent = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 6, &isnull));
		/* a chunked backfill's progress (cdc_backfill.c) */
		s->resync = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		s->syncing = strcmp(state, "syncing") == 0;
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 7, &isnull);
		s->bf_nafter = -1;
		s->bf_after = NULL;
		if (!isnull)
		{
			Datum	   *elems;
			bool	   *enulls;
			int			nelems;
			MemoryContext oldcxt2 = MemoryContextSwitchTo(cxt);

			deconstruct_array(DatumGetArrayTypePCopy(d), TEXTOID, -1, false, TYPALIGN_INT,
							  &elems, &enulls, &nelems);
			s->bf_nafter = nelems;
			s->bf_after = palloc0(sizeof(char *) * Max(nelems, 1));
			for (int e = 0; e < nelems; e++)
				s->bf_after[e] = enulls[e] ? pstrdup("") : TextDatumGetCString(elems[e]);
			MemoryContextSwitchTo(oldcxt2);
		}
		s->bf_chunks = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 8, &isnull));
		s->bf_rows = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 9, &isnull));
		(void) egress_jsonb_get_bool(def->options, "debug_lsn", &s->debug_lsn);
		policy = egress_jsonb_get_string(def->options, "lag_policy");
		s->pause_on_lag = policy != NULL && strcmp(policy, "pause") == 0;
		s->st_stale = true;
		s->slot = egress_claim_cdc_stream(def->id, s->needs_sync ? "pending" : "streaming");
		if (s->slot == NULL)
		{
			/*
			 * Every shared entry is taken.  Without one the stream has no
			 * live figures and no claim: stop it where the owner sees why,
			 * rather than serve it unguarded.
			 */
			MemoryContext oldcxt2 = MemoryContextSwitchTo(cxt);

			errors = lappend(errors,
							 list_make2(makeInteger(def->id),
										makeString(psprintf("stream \"%s\" has no shared worker entry: all %d are taken (raise pg_egress.max_active_streams)",
															def->name, egress_max_active_streams))));
			MemoryContextSwitchTo(oldcxt2);
			memset(s, 0, sizeof(*s));
			cdc->nstreams--;
			continue;
		}
		/* egress_stream_activity() shows the entry to the owner's members */
		egress_set_slot_owner(s->slot, def->owner);
		s->slot->rows_sent = s->rows_sent;
		s->slot->batches_sent = s->batches_sent;
	}
	egress_worker_catalog_end(&guard);

	foreach(lc, errors)
	{
		List	   *pair = lfirst(lc);

		ereport(WARNING,
				(errmsg("pg_egress stream stopped: %s", strVal(lsecond(pair)))));
		egress_record_stream_error(intVal(linitial(pair)), strVal(lsecond(pair)));
	}
	return cdc->nstreams;
}

/*
 * What this destination's configuration looks like; a committed egress_*
 * call elsewhere (another destination, a FULL_TABLE stream) leaves it
 * unchanged, and then the decoding session goes on.  Every stream's state
 * and resync flag are in it, so that any request for a resync is seen,
 * whatever came before it in the same transaction (egress_pause_stream()
 * then egress_resume_stream() leave enabled as it was but the stream
 * pending a resync).  The worker's own state changes (an initial sync
 * finished, a stream stopped with an error) change it too: then the next
 * committed egress_* call costs one needless new session, nothing more.
 * The version is in it because of those: a stream added and synced in
 * this session, then paused and resumed (pending, resync) looked as it
 * did at the session's start, and the resync went unnoticed
 * (test/specs/stream_race.spec); its initial sync gave it a new version.
 * Caller is inside egress_catalog_enter().  Result in CurrentMemoryContext
 * of the caller's choosing (cxt).
 */
static char *
config_fingerprint(MemoryContext cxt)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	char	   *fp;

	values[0] = CStringGetTextDatum(cdc->dest_name);
	/* and the catalog version: after ALTER EXTENSION UPDATE, a new session */
	egress_catalog_exec("SELECT coalesce((SELECT d.location || d.options::pg_catalog.text FROM egress.destination d "
						"WHERE d.name = $1), '') || '|' || coalesce(string_agg("
						"s.id || ':' || s.enabled || ':' || st.state || ':' || st.resync || ':' || "
						"coalesce(st.version::pg_catalog.text, '') || ':' || "
						"s.options::pg_catalog.text, ',' ORDER BY s.id), '') || '|' || "
						"coalesce((SELECT e.extversion FROM pg_catalog.pg_extension e "
						"WHERE e.extname OPERATOR(pg_catalog.=) 'pg_egress'), '') "
						"FROM egress.stream s JOIN egress.stream_state st ON st.stream_id = s.id "
						"WHERE s.destination = $1 AND s.method = 'LOG_BASED'",
						1, argtypes, values, NULL, true);
	fp = SPI_processed > 0 ? SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1) : NULL;
	return MemoryContextStrdup(cxt, fp ? fp : "");
}

/* Did our configuration change since cdc_load_config()? */
bool
cdc_config_changed(void)
{
	EgressCatalogGuard guard;
	uint32		gen = pg_atomic_read_u32(&egress_shared->config_gen);
	char	   *fp;
	bool		changed;

	if (cdc->catalog_moved)
		return true;
	if (gen == cdc->config_gen)
		return false;
	if (!egress_worker_catalog_begin(&guard, true))
		return true;
	fp = config_fingerprint(TopMemoryContext);
	egress_worker_catalog_end(&guard);

	changed = cdc->fingerprint == NULL || strcmp(fp, cdc->fingerprint) != 0;
	pfree(fp);
	if (!changed)
		cdc->config_gen = gen;	/* someone else's change */
	return changed;
}

/* Record the catalog side of the slot before creating it (see below). */
static void
record_slot(const char *slot_name, bool owned)
{
	EgressCatalogGuard guard;
	Oid			argtypes[3] = {TEXTOID, TEXTOID, BOOLOID};
	Datum		values[3];

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	egress_catalog_enter(&guard);
	values[0] = CStringGetTextDatum(cdc->dest_name);
	values[1] = CStringGetTextDatum(slot_name);
	values[2] = BoolGetDatum(owned);
	egress_catalog_exec("UPDATE egress.destination SET slot_name = $2, slot_owned = $3 "
						"WHERE name = $1",
						3, argtypes, values, NULL, false);
	egress_worker_catalog_end(&guard);
}

/*
 * Before a new slot is created: record it as the destination's (ours), and
 * in the same transaction mark every stream that carries on from a bookmark
 * of an earlier slot (state streaming) for a new initial sync.  The new
 * slot lacks the changes made while no slot existed, so no stream may ever
 * go on from its bookmark on it; marking only in memory would lose them if
 * the session ended before every such stream was synced again.  Streams in
 * state error are synced again when resumed; they are flagged too, their
 * error left as it is.  Pending and syncing streams are synced anyway.
 *
 * A slot of that name still listed in egress.dropped_slot (one replaced by
 * cdc_ensure_slot, or one a crash left listed) is taken off the list: the
 * database worker must not drop the new one.  For a pgoutput slot, the
 * destination's publication is brought in step first: pgoutput reads it
 * with the catalog as of each change, so it must exist before the slot's
 * start.
 */
static bool
record_new_slot(const char *slot_name, bool pgoutput)
{
	EgressCatalogGuard guard;
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		values[2];
	bool		found;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	egress_catalog_enter(&guard);
	if (pgoutput)
		egress_publication_sync(cdc->dest_name);
	values[0] = CStringGetTextDatum(cdc->dest_name);
	values[1] = CStringGetTextDatum(slot_name);
	found = egress_catalog_exec("UPDATE egress.destination SET slot_name = $2, slot_owned = true "
								"WHERE name OPERATOR(pg_catalog.=) $1",
								2, argtypes, values, NULL, false) > 0;
	if (!found)
	{
		/*
		 * Removed since this session read it (egress_remove_destination
		 * committed while this waited for its row): a slot made now would
		 * be nobody's, never dropped (test/specs/destination_race.spec).
		 */
		egress_worker_catalog_end(&guard);
		ereport(LOG,
				(errmsg("pg_egress destination \"%s\" was removed: replication slot \"%s\" is not created",
						cdc->dest_name, slot_name)));
		return false;
	}
	egress_catalog_exec("DELETE FROM egress.dropped_slot "
						"WHERE slot_name OPERATOR(pg_catalog.=) $2::pg_catalog.name",
						2, argtypes, values, NULL, false);
	values[1] = CStringGetTextDatum(psprintf("replication slot \"%s\" was created anew: the changes made while it did not exist are not in it",
											 slot_name));
	egress_catalog_exec("UPDATE egress.stream_state st SET resync = true, "
						"state = CASE WHEN st.state OPERATOR(pg_catalog.=) 'error' THEN 'error' ELSE 'pending' END, "
						"last_error = CASE WHEN st.state OPERATOR(pg_catalog.=) 'error' THEN st.last_error ELSE $2 END, "
						"last_error_at = CASE WHEN st.state OPERATOR(pg_catalog.=) 'error' THEN st.last_error_at ELSE pg_catalog.now() END, "
						"updated_at = pg_catalog.now() "
						"FROM egress.stream s WHERE s.id OPERATOR(pg_catalog.=) st.stream_id "
						"AND s.destination OPERATOR(pg_catalog.=) $1 "
						"AND s.method OPERATOR(pg_catalog.=) 'LOG_BASED' "
						"AND (st.state OPERATOR(pg_catalog.=) 'streaming' "
						"OR (st.state OPERATOR(pg_catalog.=) 'error' AND NOT st.resync))",
						2, argtypes, values, NULL, false);
	egress_worker_catalog_end(&guard);
	return true;
}

static const char *chosen_decoder(void);

/* What cdc_ensure_slot may do with an existing slot it did not create. */
typedef enum CdcAdoption
{
	CDC_ADOPT_DENIED,			/* nothing: the streams stop */
	CDC_ADOPT_OK,				/* use it */
	CDC_ADOPT_REPLACE			/* drop it and create a new one */
} CdcAdoption;

/*
 * May this destination use the existing slot it did not create?
 *
 * A slot in egress.dropped_slot is one pg_egress made (or was told to drop)
 * for a destination removed since, waiting for the database worker: a
 * destination added again under that name takes a wal2json slot over as its
 * own, in the transaction that takes it off the list (the database worker
 * drops only listed slots, and never one in use).  A pgoutput slot is not
 * taken over: it decodes with the publication of the removed
 * destination as the catalog had it then, and the re-added destination's
 * streams are new anyway; it is replaced.  So is a listed slot whose
 * plugin is not the destination's decoder (option "decoder", pgoutput by
 * default): a destination removed and added again with another decoder
 * decodes with the one it asked for.
 *
 * Any other slot belongs to another tool (or destination): consuming it
 * advances it for that tool, which is what the REPLICATION attribute is
 * for.  Checked at every session, whether the slot was named by option
 * "slot_name" or has the default name pg_egress_<destination>.
 */
static CdcAdoption
adoption_allowed(const char *plugin)
{
	bool		replace = strcmp(plugin, EGRESS_PLUGIN_PGOUTPUT) == 0 ||
		strcmp(plugin, chosen_decoder()) != 0;
	EgressCatalogGuard guard;
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		values[2];
	bool		ours;
	CdcAdoption allowed;

	if (!egress_worker_catalog_begin(&guard, true))
		return CDC_ADOPT_DENIED;
	values[0] = CStringGetTextDatum(cdc->dest_name);
	values[1] = CStringGetTextDatum(cdc->slot_name);
	if (replace &&
		egress_catalog_exec("SELECT 1 FROM egress.dropped_slot "
							"WHERE slot_name OPERATOR(pg_catalog.=) $1::pg_catalog.name",
							1, argtypes + 1, values + 1, NULL, true) > 0)
	{
		egress_worker_catalog_end(&guard);
		return CDC_ADOPT_REPLACE;
	}
	ours = egress_catalog_exec("DELETE FROM egress.dropped_slot "
							   "WHERE slot_name OPERATOR(pg_catalog.=) $2::pg_catalog.name",
							   2, argtypes, values, NULL, false) > 0;
	if (ours)
	{
		egress_catalog_exec("UPDATE egress.destination SET slot_name = $2, slot_owned = true "
							"WHERE name OPERATOR(pg_catalog.=) $1",
							2, argtypes, values, NULL, false);
		cdc->slot_owned = true;
		allowed = CDC_ADOPT_OK;
	}
	else
		allowed = has_rolreplication(cdc->dest_owner) ? CDC_ADOPT_OK : CDC_ADOPT_DENIED;
	egress_worker_catalog_end(&guard);
	if (ours)
		ereport(LOG,
				(errmsg("pg_egress destination \"%s\": took over replication slot \"%s\" of a removed destination",
						cdc->dest_name, cdc->slot_name)));
	return allowed;
}

/*
 * The decoder a new slot of the destination uses: option "decoder"
 * (fixed when the destination was added), pgoutput by default.
 */
static const char *
chosen_decoder(void)
{
	const char *decoder = egress_destination_decoder(cdc->dest_options);

	if (!egress_plugin_is_ours(decoder))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("destination \"%s\" has an unknown decoder \"%s\"",
						cdc->dest_name, decoder),
				 errhint("The decoder is \"pgoutput\" or \"wal2json\".")));
	return decoder;
}

/*
 * Drop a pgoutput slot of a removed destination (see adoption_allowed)
 * before a new one of that name is created.
 */
static void
replace_dropped_slot(void)
{
	switch (egress_slot_drop(cdc->slot_name))
	{
		case EGRESS_SLOT_DROPPED:
		case EGRESS_SLOT_ABSENT:
			ereport(LOG,
					(errmsg("pg_egress destination \"%s\": dropped replication slot \"%s\" of a removed destination to create it anew",
							cdc->dest_name, cdc->slot_name)));
			break;
		case EGRESS_SLOT_IN_USE:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("replication slot \"%s\" of a removed destination is in use",
							cdc->slot_name),
					 errdetail("Destination \"%s\" creates a new slot of that name once it is free.",
							   cdc->dest_name)));
			break;
		case EGRESS_SLOT_NOT_OURS:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("replication slot \"%s\" cannot be used by destination \"%s\"",
							cdc->slot_name, cdc->dest_name),
					 errdetail("It is not a slot of pg_egress.")));
			break;
	}
}

/*
 * The destination's slot: adopt one that exists (see adoption_allowed),
 * else create it with the destination's decoder (a pgoutput slot of a
 * removed destination is replaced).  The catalog says "ours" before the slot exists, so a
 * crash in between never leaves a slot pg_egress made but would not drop.
 * Returns false when the destination may not adopt the slot: its streams
 * are then in state error, and the slot is left alone; or when the
 * destination was removed meanwhile: no slot is made.
 */
bool
cdc_ensure_slot(void)
{
	char	   *plugin = NULL;
	Oid			dboid = InvalidOid;
	const char *decoder;

	if (egress_slot_lookup(cdc->slot_name, &plugin, &dboid))
	{
		CdcAdoption adoption = CDC_ADOPT_OK;

		if (!egress_plugin_is_ours(plugin) || dboid != MyDatabaseId)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("replication slot \"%s\" cannot be used by destination \"%s\"",
							cdc->slot_name, cdc->dest_name),
					 errdetail("It uses plugin \"%s\" or belongs to another database; pg_egress needs a pgoutput or wal2json slot of this database.",
							   plugin)));
		if (!cdc->slot_owned)
			adoption = adoption_allowed(plugin);
		if (adoption == CDC_ADOPT_DENIED)
		{
			char	   *message = psprintf("permission denied to use replication slot \"%s\": destination \"%s\" did not create it and its owner has no REPLICATION attribute",
										   cdc->slot_name, cdc->dest_name);

			ereport(WARNING,
					(errmsg("pg_egress streams of destination \"%s\" stopped: %s",
							cdc->dest_name, message)));
			cdc_note_failure(message, true);
			return false;
		}
		if (adoption == CDC_ADOPT_OK)
		{
			if (egress_slot_lost(cdc->slot_name))
				cdc_slot_invalidated();
			if (!cdc->slot_owned)
				record_slot(cdc->slot_name, false);
			return true;
		}
		replace_dropped_slot();
	}

	/* the existing slot's plugin decides; a new slot uses the option */
	decoder = chosen_decoder();
	egress_check_decoding_possible(decoder);
	if (!record_new_slot(cdc->slot_name, strcmp(decoder, EGRESS_PLUGIN_PGOUTPUT) == 0))
		return false;			/* the next session finds no streams and exits */
	cdc->slot_owned = true;
	egress_slot_create(cdc->slot_name, decoder);
	ereport(LOG,
			(errmsg("pg_egress destination \"%s\": created replication slot \"%s\" (%s)",
					cdc->dest_name, cdc->slot_name, decoder)));

	/*
	 * Streams with a bookmark from an earlier slot have lost what happened
	 * meanwhile: they start over (the catalog says so: record_new_slot()).
	 */
	for (int i = 0; i < cdc->nstreams; i++)
		cdc->streams[i].needs_sync = true;
	return true;
}

/*
 * A stream with option "filter" decoded from a wal2json slot: wal2json
 * cannot filter rows (egress_add_stream refuses the pair, but a wal2json
 * slot may be taken over after the stream was added).  The stream stops
 * in state error before any change of it is sent.
 */
void
cdc_refuse_unfiltered(CdcStream *s)
{
	cdc_stop_stream(s, CDC_STOP_UNFILTERED,
					psprintf("stream \"%s\" has option \"filter\", which replication slot \"%s\" (wal2json) of destination \"%s\" cannot apply",
							 s->def->name, cdc->slot_name, cdc->dest_name));
}

/* Record acknowledged positions: the bookmarks and figures of every stream. */
void
cdc_persist_bookmarks(void)
{
	EgressCatalogGuard guard;
	StringInfoData bm;
	int32	   *acked = palloc(sizeof(int32) * Max(cdc->nstreams, 1));
	int			nacked = 0;

	cdc_start_catalog_transaction();
	PushActiveSnapshot(GetTransactionSnapshot());
	egress_catalog_enter(&guard);
	/* a stopped stream keeps the bookmark it had: it is synced again */
	for (int i = 0; i < cdc->nstreams; i++)
		if (!cdc->streams[i].needs_sync && cdc->streams[i].stop == CDC_STOP_NONE)
			acked[nacked++] = cdc->streams[i].def->id;
	/* the egress.stream rows before the stream_state rows */
	if (cdc->acked_since_persist)
		egress_record_success_begin(acked, nacked);
	initStringInfo(&bm);
	for (int i = 0; i < cdc->nstreams; i++)
	{
		CdcStream  *s = &cdc->streams[i];
		Oid			argtypes[6] = {INT4OID, LSNOID, JSONBOID, INT8OID, INT8OID, INT8OID};
		Datum		values[6];

		if (s->needs_sync || s->stop != CDC_STOP_NONE)
			continue;
		/* a chunked backfill records its progress with its bookmark */
		if (cdc_backfill_persist(s))
			continue;
		resetStringInfo(&bm);
		egress_singer_bookmark_log_based(&bm, s->bookmark, s->acked_version);
		values[0] = Int32GetDatum(s->def->id);
		values[1] = LSNGetDatum(s->bookmark);
		values[2] = DirectFunctionCall1(jsonb_in, CStringGetDatum(bm.data));
		values[3] = Int64GetDatum(s->acked_version);
		values[4] = Int64GetDatum(s->rows_sent);
		values[5] = Int64GetDatum(s->batches_sent);
		/*
		 * Not streaming any more (a resync or a pause asked for meanwhile):
		 * its bookmark no longer counts; make sure the session starts over
		 * and sees why, rather than go on without recording its progress.
		 */
		if (egress_catalog_exec("UPDATE egress.stream_state SET confirmed_lsn = $2, bookmark = $3, "
								"version = $4, rows_sent = $5, batches_sent = $6, "
								"last_error = NULL, last_error_at = NULL, attempts = 0, "
								"updated_at = now() WHERE stream_id = $1 AND state = 'streaming'",
								6, argtypes, values, NULL, false) == 0)
			cdc->catalog_moved = true;
	}
	/* egress_streams.last_success_at */
	if (cdc->acked_since_persist)
		egress_record_success(acked, nacked);
	egress_worker_catalog_end(&guard);
	pfree(acked);
	cdc->acked_since_persist = false;
	cdc->persisted_end = XactLastCommitEnd;
	cdc->persisted_at = GetCurrentTimestamp();
}

/*
 * Show a failure on every stream of the destination, without stopping them;
 * or, when the destination rejected a batch for good (stop), put them into
 * state error until egress_resume_stream() or the destination's
 * error_retry_interval.
 */
void
cdc_note_failure(const char *message, bool stop)
{
	EgressCatalogGuard guard;
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		values[2];

	if (egress_worker_catalog_begin(&guard, false))
	{
		values[0] = CStringGetTextDatum(cdc->dest_name);
		values[1] = CStringGetTextDatum(message);
		egress_catalog_exec(stop ?
							"UPDATE egress.stream_state st SET state = 'error', last_error = $2, "
							"last_error_at = now(), attempts = attempts + 1, updated_at = now() "
							"FROM egress.stream s WHERE s.id = st.stream_id "
							"AND s.destination = $1 AND s.method = 'LOG_BASED' "
							"AND s.enabled AND st.state <> 'error'" :
							"UPDATE egress.stream_state st SET last_error = $2, "
							"last_error_at = now(), attempts = attempts + 1, updated_at = now() "
							"FROM egress.stream s WHERE s.id = st.stream_id "
							"AND s.destination = $1 AND s.method = 'LOG_BASED' "
							"AND st.state <> 'error'",
							2, argtypes, values, NULL, false);
		egress_worker_catalog_end(&guard);
	}
}

/*
 * No shared entry is free for this destination's worker: say so on its
 * streams (their state stays: nothing was lost, they go on once an entry is
 * free), and wait one naptime before exiting, so that the database worker,
 * which starts a wanted destination's worker again at once, does not start
 * one after another.
 */
void
cdc_no_free_entry(const char *dest)
{
	EgressCatalogGuard guard;
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		values[2];

	if (egress_worker_catalog_begin(&guard, false))
	{
		values[0] = CStringGetTextDatum(dest);
		values[1] = CStringGetTextDatum(psprintf("the CDC worker of destination \"%s\" has no shared worker entry: all %d are taken (raise pg_egress.max_active_streams)",
												 dest, egress_max_active_streams));
		egress_catalog_exec("UPDATE egress.stream_state st SET last_error = $2, "
							"last_error_at = pg_catalog.now() FROM egress.stream s "
							"WHERE s.id OPERATOR(pg_catalog.=) st.stream_id "
							"AND s.destination OPERATOR(pg_catalog.=) $1 "
							"AND s.method OPERATOR(pg_catalog.=) 'LOG_BASED'",
							2, argtypes, values, NULL, false);
		egress_worker_catalog_end(&guard);
	}
	/* the whole naptime: a wake-up of the latch is no reason to go sooner */
	{
		TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														Max(egress_naptime_ms, 1000));

		for (;;)
		{
			long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);

			if (left <= 0)
				break;
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 left, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
	}
}

/* ---- initial sync ---------------------------------------------------------- */

void
cdc_initial_sync(CdcStream *s)
{
	EgressCatalogGuard guard;
	Oid			argtypes[5] = {INT4OID, INT8OID, LSNOID, JSONBOID, INT8OID};
	Datum		values[5];
	int64		version;
	XLogRecPtr	consistent;
	EgressSnapshotResult result;
	char		tmpname[NAMEDATALEN];
	StringInfoData bm;

	cdc_syncing_stream = s->def->id;
	version = egress_next_version(s->version);
	egress_set_phase(s->slot, "syncing");

	/* announce it */
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	egress_catalog_enter(&guard);
	egress_mark_syncing(s->def->id, version);
	egress_worker_catalog_end(&guard);

	/* read the table in the initial snapshot of a short-lived slot */
	ereport(LOG,
			(errmsg("pg_egress stream \"%s\": initial sync of %s started, version " INT64_FORMAT,
					s->def->name, s->def->relation, version)));
	snprintf(tmpname, sizeof(tmpname), "pg_egress_sync_%d", MyProcPid);
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	XactIsoLevel = XACT_REPEATABLE_READ;
	consistent = egress_slot_snapshot(tmpname);
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "LOG_BASED initial sync");
	egress_snapshot_write(s->def, cdc->sink, s->slot, version, true, consistent, &result);
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);

	/* from here on, changes committed after the snapshot */
	initStringInfo(&bm);
	egress_singer_bookmark_log_based(&bm, consistent, version);
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	egress_catalog_enter(&guard);
	egress_record_success_begin(&s->def->id, 1);
	values[0] = Int32GetDatum(s->def->id);
	values[1] = Int64GetDatum(version);
	values[2] = LSNGetDatum(consistent);
	values[3] = DirectFunctionCall1(jsonb_in, CStringGetDatum(bm.data));
	values[4] = Int64GetDatum(result.rows);
	/* a 0.1 catalog (not updated yet) has no backfill columns */
	egress_catalog_exec(egress_catalog_has_backfill() ?
						"UPDATE egress.stream_state SET state = 'streaming', confirmed_lsn = $3, "
						"bookmark = $4, rows_sent = $5, bytes_sent = 0, batches_sent = 0, "
						"backfill_after = NULL, backfill_chunks = 0, backfill_rows = 0, "
						"last_error = NULL, last_error_at = NULL, attempts = 0, "
						"sync_finished_at = now(), updated_at = now() "
						"WHERE stream_id = $1 AND version = $2" :
						"UPDATE egress.stream_state SET state = 'streaming', confirmed_lsn = $3, "
						"bookmark = $4, rows_sent = $5, bytes_sent = 0, batches_sent = 0, "
						"last_error = NULL, last_error_at = NULL, attempts = 0, "
						"sync_finished_at = now(), updated_at = now() "
						"WHERE stream_id = $1 AND version = $2",
						5, argtypes, values, NULL, false);
	egress_record_success(&s->def->id, 1);
	egress_worker_catalog_end(&guard);

	s->version = version;
	s->acked_version = version;
	s->bookmark = consistent;
	s->needs_sync = false;
	s->rows_sent = result.rows;
	s->batches_sent = 0;
	s->st_stale = true;
	egress_set_phase(s->slot, "streaming");
	cdc_syncing_stream = 0;
	ereport(LOG,
			(errmsg("pg_egress stream \"%s\": initial sync finished, " INT64_FORMAT " rows; changes follow from %X/%X",
					s->def->name, result.rows, LSN_FORMAT_ARGS(consistent))));
}
