/*-------------------------------------------------------------------------
 * pg_egress.c
 *	  Module entry point: refuses to load unless preloaded, defines the
 *	  GUCs, requests shared memory and registers the launcher.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"

#include "pg_egress.h"

PG_MODULE_MAGIC;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

void		_PG_init(void);

static Size
egress_shmem_size(void)
{
	return add_size(offsetof(EgressShared, slots),
					mul_size(egress_max_active_streams, sizeof(EgressWorkerSlot)));
}

static void
egress_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(egress_shmem_size());
	RequestNamedLWLockTranche("pg_egress", 1);
}

static void
egress_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	egress_shmem_init();
}

void
_PG_init(void)
{
	/*
	 * Workers and shared memory exist only when loaded by the postmaster; a
	 * late LOAD would give SQL functions with nothing behind them.
	 */
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_egress must be loaded via \"shared_preload_libraries\""),
				 errhint("Add pg_egress to shared_preload_libraries in postgresql.conf and restart the server.")));

	egress_define_gucs();

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = egress_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = egress_shmem_startup;

	egress_register_launcher();
}
