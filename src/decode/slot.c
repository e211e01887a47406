/*-------------------------------------------------------------------------
 * slot.c
 *	  Creating, finding and dropping the logical slots of LOG_BASED
 *	  streams, and taking a slot's initial snapshot for an initial sync.
 *
 * Modelled on what slotfuncs.c and the walsender's CREATE_REPLICATION_SLOT
 * ... USE_SNAPSHOT (used by logical replication's table sync) do.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/stat.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogutils.h"
#include "miscadmin.h"
#include "replication/logical.h"
#include "replication/slot.h"
#include "replication/snapbuild.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/spin.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/varlena.h"

#include "decode/slot.h"

bool
egress_plugin_is_ours(const char *plugin)
{
	return strcmp(plugin, EGRESS_PLUGIN_PGOUTPUT) == 0 ||
		strcmp(plugin, EGRESS_PLUGIN_WAL2JSON) == 0;
}

/*
 * The plugin must be installed (pgoutput is built in), and some builds only
 * let listed libraries be output plugins (output_plugin_libraries): say
 * what to change rather than fail later inside the worker.
 */
void
egress_check_decoding_possible(const char *plugin)
{
	char		path[MAXPGPATH];
	struct stat st;
	const char *allowed;

	if (wal_level < WAL_LEVEL_LOGICAL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("LOG_BASED streams need wal_level \"logical\""),
				 errhint("Set wal_level = logical in postgresql.conf and restart the server.")));

	snprintf(path, sizeof(path), "%s/%s%s", pkglib_path, plugin, DLSUFFIX);
	if (strcmp(plugin, EGRESS_PLUGIN_WAL2JSON) == 0 && stat(path, &st) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("LOG_BASED streams need the wal2json output plugin"),
				 errdetail("File \"%s\" does not exist.", path),
				 errhint("Install wal2json (on Debian: the postgresql-15-wal2json package).")));

	allowed = GetConfigOption("output_plugin_libraries", true, false);
	if (allowed != NULL)
	{
		char	   *copy = pstrdup(allowed);
		List	   *names;
		ListCell   *lc;
		bool		found = false;

		if (SplitIdentifierString(copy, ',', &names))
		{
			foreach(lc, names)
				if (strcmp((char *) lfirst(lc), plugin) == 0)
					found = true;
		}
		if (!found)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("decoding with %s needs it to be allowed as an output plugin", plugin),
					 errdetail("output_plugin_libraries is \"%s\".", allowed),
					 errhint("Add %s to output_plugin_libraries in postgresql.conf, e.g. output_plugin_libraries = '%s, %s', and reload.",
							 plugin, allowed, plugin)));
	}
}

bool
egress_slot_lookup(const char *name, char **plugin, Oid *dboid)
{
	bool		found = false;

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	for (int i = 0; i < max_replication_slots; i++)
	{
		ReplicationSlot *s = &ReplicationSlotCtl->replication_slots[i];

		if (s->in_use && strcmp(NameStr(s->data.name), name) == 0)
		{
			found = true;
			if (plugin)
				*plugin = pstrdup(NameStr(s->data.plugin));
			if (dboid)
				*dboid = s->data.database;
			break;
		}
	}
	LWLockRelease(ReplicationSlotControlLock);
	return found;
}

int
egress_free_slots(void)
{
	int			nfree = 0;

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	for (int i = 0; i < max_replication_slots; i++)
		if (!ReplicationSlotCtl->replication_slots[i].in_use)
			nfree++;
	LWLockRelease(ReplicationSlotControlLock);
	return nfree;
}

void
egress_slot_create(const char *name, const char *plugin)
{
	LogicalDecodingContext *ctx;

	Assert(!MyReplicationSlot);
	CheckSlotRequirements();
	CheckLogicalDecodingRequirements();

	/* ephemeral until it is ready: an error on the way drops it */
	ReplicationSlotCreate(name, true, RS_EPHEMERAL, false);
	ctx = CreateInitDecodingContext(plugin, NIL, false, InvalidXLogRecPtr,
									XL_ROUTINE(.page_read = read_local_xlog_page,
											   .segment_open = wal_segment_open,
											   .segment_close = wal_segment_close),
									NULL, NULL, NULL);
	DecodingContextFindStartpoint(ctx);
	FreeDecodingContext(ctx);
	ReplicationSlotPersist();
	ReplicationSlotRelease();
}

/*
 * Drop a slot of pg_egress: a logical slot of this database using
 * pg_egress's output plugin.  Returns EGRESS_SLOT_DROPPED or
 * EGRESS_SLOT_ABSENT when there is nothing left for pg_egress to drop,
 * EGRESS_SLOT_IN_USE when another process holds it (try again later), and
 * EGRESS_SLOT_NOT_OURS when the slot of that name is not a pg_egress slot
 * (someone dropped ours and made another of that name, or the name is
 * another database's): it is left alone, and the caller must not act as if
 * it had been dropped.
 *
 * Looking a slot up and then dropping it by name is a race: between the two
 * another process may drop it, or drop it and make a new one.  So the slot
 * is acquired first (which fails cleanly if it is gone or in use), checked
 * while it is held, and dropped while still held: marked ephemeral, the
 * release drops it, as for a slot whose creation failed.  Nothing is
 * written to disk before the drop, so a crash in between keeps the slot.
 */
EgressSlotDropResult
egress_slot_drop(const char *name)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	volatile EgressSlotDropResult outcome = EGRESS_SLOT_DROPPED;
	ReplicationSlot *slot;
	bool		ours;

	Assert(!MyReplicationSlot);
	if (!egress_slot_lookup(name, NULL, NULL))
		return EGRESS_SLOT_ABSENT;

	/*
	 * ReplicationSlotAcquire() raises its "does not exist" and "is active"
	 * errors before it takes anything (its lock is released first), so
	 * catching just those two is safe here.
	 */
	PG_TRY();
	{
		ReplicationSlotAcquire(name, true);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode == ERRCODE_UNDEFINED_OBJECT)
			outcome = EGRESS_SLOT_ABSENT;
		else if (edata->sqlerrcode == ERRCODE_OBJECT_IN_USE)
			outcome = EGRESS_SLOT_IN_USE;
		else
			PG_RE_THROW();
		FlushErrorState();
		FreeErrorData(edata);
	}
	PG_END_TRY();
	if (outcome != EGRESS_SLOT_DROPPED)
		return outcome;

	slot = MyReplicationSlot;
	ours = SlotIsLogical(slot) && slot->data.database == MyDatabaseId &&
		egress_plugin_is_ours(NameStr(slot->data.plugin));
	if (!ours)
	{
		ReplicationSlotRelease();
		return EGRESS_SLOT_NOT_OURS;
	}

	SpinLockAcquire(&slot->mutex);
	slot->data.persistency = RS_EPHEMERAL;
	SpinLockRelease(&slot->mutex);
	ReplicationSlotRelease();	/* drops an ephemeral slot */
	return EGRESS_SLOT_DROPPED;
}

bool
egress_slot_is_ours(const char *name)
{
	char	   *plugin = NULL;
	Oid			dboid = InvalidOid;

	if (!egress_slot_lookup(name, &plugin, &dboid))
		return true;
	return dboid == MyDatabaseId && egress_plugin_is_ours(plugin);
}

/*
 * WAL the slot's consumer has not acknowledged: flush position minus its
 * confirmed_flush_lsn.  Unlike the WAL the slot retains (from restart_lsn),
 * this does not grow because of a long transaction elsewhere, whose start
 * restart_lsn cannot pass: dropping the slot would not free that WAL.
 */
int64
egress_slot_unacked_wal(const char *name, bool idle_only)
{
	int64		lag = -1;
	ReplicationSlot *s;

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	s = SearchNamedReplicationSlot(name, false);
	if (s != NULL)
	{
		XLogRecPtr	flush = GetFlushRecPtr(NULL);

		SpinLockAcquire(&s->mutex);
		if ((!idle_only || s->active_pid == 0) &&
			!XLogRecPtrIsInvalid(s->data.restart_lsn) &&
			!XLogRecPtrIsInvalid(s->data.confirmed_flush))
			lag = flush > s->data.confirmed_flush ?
				(int64) (flush - s->data.confirmed_flush) : 0;
		SpinLockRelease(&s->mutex);
	}
	LWLockRelease(ReplicationSlotControlLock);
	return lag;
}

/*
 * Was the slot invalidated (max_slot_wal_keep_size): it exists but keeps no
 * WAL, so nothing can be decoded from it any more.
 */
bool
egress_slot_lost(const char *name)
{
	bool		lost = false;
	ReplicationSlot *s;

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	s = SearchNamedReplicationSlot(name, false);
	if (s != NULL)
	{
		SpinLockAcquire(&s->mutex);
		lost = s->data.persistency == RS_PERSISTENT &&
			(!XLogRecPtrIsInvalid(s->data.invalidated_at) ||
			 XLogRecPtrIsInvalid(s->data.restart_lsn));
		SpinLockRelease(&s->mutex);
	}
	LWLockRelease(ReplicationSlotControlLock);
	return lost;
}

XLogRecPtr
egress_slot_snapshot(const char *tmpname)
{
	LogicalDecodingContext *ctx;
	Snapshot	snap;
	XLogRecPtr	consistent;

	Assert(!MyReplicationSlot);
	Assert(IsTransactionState() && XactIsoLevel == XACT_REPEATABLE_READ);
	if (FirstSnapshotSet)
		elog(ERROR, "pg_egress: the initial snapshot must be the transaction's first");

	CheckSlotRequirements();
	CheckLogicalDecodingRequirements();

	/* ephemeral: gone on error and when released below */
	ReplicationSlotCreate(tmpname, true, RS_EPHEMERAL, false);
	/* core's plugin: its initial snapshot is all that is used */
	ctx = CreateInitDecodingContext(EGRESS_PLUGIN_PGOUTPUT, NIL, true, InvalidXLogRecPtr,
									XL_ROUTINE(.page_read = read_local_xlog_page,
											   .segment_open = wal_segment_open,
											   .segment_close = wal_segment_close),
									NULL, NULL, NULL);
	DecodingContextFindStartpoint(ctx);
	consistent = MyReplicationSlot->data.confirmed_flush;

	/* SnapBuildInitialSnapshot refuses if anything set MyProc->xmin */
	InvalidateCatalogSnapshot();
	snap = SnapBuildInitialSnapshot(ctx->snapshot_builder);
	RestoreTransactionSnapshot(snap, MyProc);

	FreeDecodingContext(ctx);

	/*
	 * The transaction's snapshot (MyProc->xmin) now protects the rows it
	 * sees; the slot is no longer needed.
	 */
	ReplicationSlotRelease();
	return consistent;
}
