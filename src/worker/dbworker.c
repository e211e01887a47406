/*-------------------------------------------------------------------------
 * dbworker.c
 *	  The database worker: reads the egress catalog of pg_egress.database
 *	  and keeps one sync worker running per stream that needs a sync.
 *
 * It sleeps on its latch; a committed egress_* call, a sync worker
 * starting or stopping (bgw_notify_pid) or the naptime wakes it.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "catalog/catalog.h"
#include "pg_egress.h"

/* A sync worker this process started. */
typedef struct RunningSync
{
	int32		stream_id;
	BackgroundWorkerHandle *handle;
} RunningSync;

static RunningSync *running;
static int	nrunning = 0;
static bool register_warned = false;

/* What the catalog says a stream wants. */
typedef struct StreamWant
{
	int32		id;
	bool		enabled;
	bool		wants_sync;
	bool		resync;
} StreamWant;

static void
dbworker_detach(int code, Datum arg)
{
	LWLockAcquire(egress_shared->lock, LW_EXCLUSIVE);
	if (egress_shared->dbworker == MyProc)
		egress_shared->dbworker = NULL;
	LWLockRelease(egress_shared->lock);
}

/* Read the streams of the catalog; returns how many, in *wants. */
static int
read_catalog(StreamWant **wants)
{
	int			n = 0;
	EgressCatalogGuard guard;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "reading egress catalog");

	if (egress_extension_present())
	{
		egress_catalog_enter(&guard);
		n = egress_catalog_exec("SELECT s.id, s.enabled, "
								"s.method = 'FULL_TABLE' AND "
								"(st.resync OR st.state IN ('pending', 'syncing')), "
								"st.resync "
								"FROM egress.stream s JOIN egress.stream_state st "
								"ON st.stream_id = s.id ORDER BY s.id",
								0, NULL, NULL, NULL, true);
		*wants = MemoryContextAllocZero(TopMemoryContext, sizeof(StreamWant) * Max(n, 1));
		for (int i = 0; i < n; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;

			(*wants)[i].id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
			(*wants)[i].enabled = DatumGetBool(SPI_getbinval(tup, desc, 2, &isnull));
			(*wants)[i].wants_sync = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
			(*wants)[i].resync = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull));
		}
		egress_catalog_exit(&guard);
	}
	else
		*wants = MemoryContextAllocZero(TopMemoryContext, sizeof(StreamWant));

	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	return n;
}

static StreamWant *
find_want(StreamWant *wants, int n, int32 id)
{
	for (int i = 0; i < n; i++)
		if (wants[i].id == id)
			return &wants[i];
	return NULL;
}

/*
 * Is a sync of this stream past its claim (its first transaction, which
 * clears the resync flag, has committed)?  Read before the catalog, so a
 * resync flag seen afterwards was set after the claim.
 */
static bool
claimed_before(int32 stream_id)
{
	bool		result = false;

	LWLockAcquire(egress_shared->lock, LW_SHARED);
	for (int i = 0; i < egress_shared->nslots; i++)
	{
		EgressWorkerSlot *slot = &egress_shared->slots[i];

		if (slot->in_use && slot->stream_id == stream_id && slot->claimed)
			result = true;
	}
	LWLockRelease(egress_shared->lock);
	return result;
}

static bool
start_sync(int32 stream_id)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	MemoryContext oldcxt;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;	/* the catalog says what to rerun */
	strlcpy(worker.bgw_library_name, "pg_egress", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "egress_sync_main", BGW_MAXLEN);
	snprintf(worker.bgw_name, BGW_MAXLEN, "pg_egress sync of stream %d", stream_id);
	strlcpy(worker.bgw_type, "pg_egress sync", BGW_MAXLEN);
	worker.bgw_main_arg = Int32GetDatum(stream_id);
	memcpy(worker.bgw_extra, &MyDatabaseId, sizeof(Oid));
	worker.bgw_notify_pid = MyProcPid;

	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		MemoryContextSwitchTo(oldcxt);
		if (!register_warned)
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("pg_egress could not start a sync worker"),
					 errhint("Raise max_worker_processes.")));
		register_warned = true;
		return false;
	}
	MemoryContextSwitchTo(oldcxt);
	register_warned = false;
	running[nrunning].stream_id = stream_id;
	running[nrunning].handle = handle;
	nrunning++;
	return true;
}

/* Make the running sync workers match what the catalog wants. */
static void
reconcile(void)
{
	StreamWant *wants = NULL;
	int			nwants;
	bool	   *claimed = palloc0(sizeof(bool) * Max(nrunning, 1));

	for (int i = 0; i < nrunning; i++)
		claimed[i] = claimed_before(running[i].stream_id);
	nwants = read_catalog(&wants);

	/* forget finished workers, stop those whose stream no longer wants them */
	for (int i = 0; i < nrunning;)
	{
		pid_t		pid;
		StreamWant *w = find_want(wants, nwants, running[i].stream_id);

		if (GetBackgroundWorkerPid(running[i].handle, &pid) == BGWH_STOPPED)
		{
			pfree(running[i].handle);
			claimed[i] = claimed[nrunning - 1];
			running[i] = running[--nrunning];
			continue;
		}

		/*
		 * Removed, paused, or resync asked for after this worker took its
		 * stream: stop it; a resync then starts anew.
		 */
		if (w == NULL || !w->enabled || (w->resync && claimed[i]))
			TerminateBackgroundWorker(running[i].handle);
		i++;
	}
	pfree(claimed);

	for (int i = 0; i < nwants && nrunning < egress_max_workers; i++)
	{
		bool		is_running = false;

		if (!wants[i].enabled || !wants[i].wants_sync)
			continue;
		for (int j = 0; j < nrunning; j++)
			if (running[j].stream_id == wants[i].id)
				is_running = true;
		if (!is_running && !start_sync(wants[i].id))
			break;
	}
	pfree(wants);
}

void
egress_dbworker_main(Datum main_arg)
{
	char		dbname[BGW_EXTRALEN];

	strlcpy(dbname, MyBgworkerEntry->bgw_extra, sizeof(dbname));

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(dbname, NULL, 0);

	running = MemoryContextAllocZero(TopMemoryContext,
									 sizeof(RunningSync) * egress_max_workers);

	LWLockAcquire(egress_shared->lock, LW_EXCLUSIVE);
	egress_shared->dbworker = MyProc;
	LWLockRelease(egress_shared->lock);
	before_shmem_exit(dbworker_detach, (Datum) 0);

	ereport(LOG,
			(errmsg("pg_egress worker started for database \"%s\"", dbname)));

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/* the launcher moves us when the setting changes */
		if (strcmp(egress_database, dbname) != 0)
			proc_exit(0);

		reconcile();

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 egress_naptime_ms,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
