/*-------------------------------------------------------------------------
 * launcher.c
 *	  The static launcher: keeps one database worker running for
 *	  pg_egress.database, and moves it when that setting is reloaded.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
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
#include "utils/timestamp.h"

#include "pg_egress.h"

void
egress_register_launcher(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	strlcpy(worker.bgw_library_name, "pg_egress", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "egress_launcher_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "pg_egress launcher", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "pg_egress launcher", BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

static BackgroundWorkerHandle *
start_dbworker(const char *dbname)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;	/* the launcher restarts it */
	strlcpy(worker.bgw_library_name, "pg_egress", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "egress_dbworker_main", BGW_MAXLEN);
	snprintf(worker.bgw_name, BGW_MAXLEN, "pg_egress worker for database %s", dbname);
	strlcpy(worker.bgw_type, "pg_egress worker", BGW_MAXLEN);
	strlcpy(worker.bgw_extra, dbname, BGW_EXTRALEN);
	worker.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("pg_egress could not start its worker for database \"%s\"", dbname),
				 errhint("Raise max_worker_processes.")));
		return NULL;
	}
	return handle;
}

/* why the database of pg_egress.database cannot be served, if it cannot */
typedef enum
{
	DB_OK,
	DB_MISSING,
	DB_NO_CONNECTIONS
} DbProblem;

/*
 * Look the database up in pg_database (a shared catalog: readable without
 * a database connection).  Starting a worker for a database that is not
 * there would only have it die with a FATAL at every naptime.
 */
static DbProblem
database_problem(const char *dbname)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	DbProblem	result = DB_MISSING;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (strcmp(NameStr(db->datname), dbname) == 0)
		{
			result = db->datallowconn ? DB_OK : DB_NO_CONNECTIONS;
			break;
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return result;
}

/*
 * Say once (per database name and problem) why no worker runs; the
 * launcher then checks again every naptime without repeating itself, and
 * says when the worker can start after all.
 */
static bool
database_ready(const char *dbname)
{
	static char *reported_db = NULL;
	static DbProblem reported = DB_OK;
	DbProblem	problem = database_problem(dbname);

	if (problem == DB_OK)
	{
		if (reported != DB_OK)
			ereport(LOG,
					(errmsg("pg_egress.database \"%s\" can be served now: starting its worker",
							dbname)));
		reported = DB_OK;
		return true;
	}
	if (problem == reported && reported_db != NULL && strcmp(reported_db, dbname) == 0)
		return false;

	if (problem == DB_MISSING)
		ereport(WARNING,
				(errcode(ERRCODE_UNDEFINED_DATABASE),
				 errmsg("pg_egress.database \"%s\" does not exist: pg_egress serves no database", dbname),
				 errdetail("No stream runs until the database exists. pg_egress checks again every pg_egress.naptime and logs nothing more about it."),
				 errhint("Set pg_egress.database to the database where CREATE EXTENSION pg_egress was run and reload the configuration (SELECT pg_reload_conf()), or create database \"%s\".",
						 dbname)));
	else
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_egress.database \"%s\" does not accept connections: pg_egress serves no database", dbname),
				 errdetail("No stream runs until the database allows connections (pg_database.datallowconn). pg_egress checks again every pg_egress.naptime and logs nothing more about it."),
				 errhint("Set pg_egress.database to the database where CREATE EXTENSION pg_egress was run and reload the configuration (SELECT pg_reload_conf()).")));
	if (reported_db)
		pfree(reported_db);
	reported_db = MemoryContextStrdup(TopMemoryContext, dbname);
	reported = problem;
	return false;
}

void
egress_launcher_main(Datum main_arg)
{
	BackgroundWorkerHandle *handle = NULL;
	char	   *running_db = NULL;
	TimestampTz last_start = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* no database: this only makes the launcher visible in pg_stat_activity */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	LWLockAcquire(egress_shared->lock, LW_EXCLUSIVE);
	egress_shared->launcher = MyProc;
	LWLockRelease(egress_shared->lock);

	ereport(LOG, (errmsg("pg_egress launcher started")));

	for (;;)
	{
		pid_t		pid;
		long		wait_ms = egress_naptime_ms;

		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			/* a new pg_egress.database is looked at without waiting */
			if (handle == NULL)
				last_start = 0;
		}

		/* pg_egress.database changed: stop the old worker first */
		if (handle != NULL && strcmp(running_db, egress_database) != 0)
		{
			ereport(LOG,
					(errmsg("pg_egress moving from database \"%s\" to \"%s\"",
							running_db, egress_database)));
			TerminateBackgroundWorker(handle);
			(void) WaitForBackgroundWorkerShutdown(handle);
			pfree(handle);
			handle = NULL;
			last_start = 0;
		}

		if (handle != NULL &&
			GetBackgroundWorkerPid(handle, &pid) == BGWH_STOPPED)
		{
			pfree(handle);
			handle = NULL;
		}

		if (handle == NULL && egress_database[0] != '\0')
		{
			TimestampTz now = GetCurrentTimestamp();

			/* a worker that keeps failing is started once per naptime */
			if (last_start == 0 ||
				TimestampDifferenceExceeds(last_start, now, egress_naptime_ms))
			{
				/* a database that is not there: looked at again quietly */
				if (database_ready(egress_database))
					handle = start_dbworker(egress_database);
				last_start = now;
				if (running_db)
					pfree(running_db);
				running_db = MemoryContextStrdup(TopMemoryContext, egress_database);
			}
			else
				wait_ms = egress_naptime_ms -
					TimestampDifferenceMilliseconds(last_start, now);
		}

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(wait_ms, 1),
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
