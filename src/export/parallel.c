/*-------------------------------------------------------------------------
 * parallel.c
 *	  Part workers that read disjoint TID ranges of one relation under the
 *	  one snapshot their coordinator exported (see parallel.h).
 *
 * Exactly one snapshot: the coordinator runs at REPEATABLE READ (a FULL_TABLE
 * sync worker) or in the caller's transaction (an export), exports its
 * active snapshot with ExportSnapshot() -- pg_export_snapshot()'s machinery
 * -- and every part imports it with ImportSnapshot() at REPEATABLE READ
 * before it reads anything, as SET TRANSACTION SNAPSHOT does.  Import needs
 * the exporting transaction to be alive, and the coordinator keeps it open
 * until every part has ended, so a part can never fall back to a snapshot
 * of its own.  Rows committed after the coordinator's snapshot are in no
 * part.
 *
 * Outcome: each part writes its figures and, on failure, its error into
 * its EgressPartStatus in a dynamic shared memory segment; a part that ends
 * without EGRESS_PART_DONE (an error, a pg_terminate_backend(), a crash)
 * fails the whole run.  The coordinator stops the other parts then.
 *
 * Accounting: every running part holds an entry of egress_shared (flag
 * "part", see egress_claim_part) that is never a claim of its stream, and
 * the database worker counts these entries against pg_egress.max_workers.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "export/parallel.h"
#include "pg_egress.h"
#include "shmem.h"

struct EgressParallel
{
	dsm_segment *seg;
	EgressParallelShared *sh;
	int			nparts;
	BackgroundWorkerHandle **handles;	/* [nparts]; [0] unused */
	EgressPartStatus *final;	/* the parts' outcome, kept at the end */
	EgressWorkerSlot **entries; /* [nparts]; [0] unused */
	bool		ended;
	EgressWorkerSlot *progress_slot;	/* egress_parallel_report_progress */
	const int64 *progress_base;
};

/* runs under way in this process, for the exit callback */
static EgressParallel *running[8];
static int	nrunning_par = 0;
static bool exit_registered = false;

void
egress_part_range(BlockNumber nblocks, int nparts, int part,
				  BlockNumber *lo, BlockNumber *hi)
{
	*lo = (BlockNumber) (((uint64) nblocks * (part - 1)) / nparts);
	*hi = part == nparts ? InvalidBlockNumber :
		(BlockNumber) (((uint64) nblocks * part) / nparts);
}

static void
forget(EgressParallel *p)
{
	for (int i = 0; i < nrunning_par; i++)
		if (running[i] == p)
		{
			running[i] = running[--nrunning_par];
			break;
		}
}

/* stop the parts, wait (bounded) until they are gone; raises nothing */
static void
stop_parts(EgressParallel *p)
{
	TimestampTz deadline = GetCurrentTimestamp() + 60 * USECS_PER_SEC;

	for (int k = 2; k <= p->nparts; k++)
		if (p->handles[k])
			TerminateBackgroundWorker(p->handles[k]);
	for (int k = 2; k <= p->nparts; k++)
	{
		pid_t		pid;

		if (p->handles[k] == NULL)
			continue;
		while (GetBackgroundWorkerPid(p->handles[k], &pid) != BGWH_STOPPED &&
			   GetCurrentTimestamp() < deadline)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 100, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
	}
}

static void
release_entries(EgressParallel *p)
{
	for (int k = 2; k <= p->nparts; k++)
		if (p->entries[k])
		{
			egress_release_slot(p->entries[k]);
			p->entries[k] = NULL;
		}
}

static void
parallel_exit(int code, Datum arg)
{
	while (nrunning_par > 0)
	{
		EgressParallel *p = running[--nrunning_par];

		for (int k = 2; k <= p->nparts; k++)
			if (p->handles[k])
				TerminateBackgroundWorker(p->handles[k]);
		release_entries(p);
	}
}

/*
 * Export the snapshot, fill the segment, start parts 2..n.  ERRORs are
 * the caller's to clean up (egress_parallel_end).
 */
static void
start_parts(EgressParallel *p, int kind, BlockNumber nblocks, int32 stream_id,
			int64 version, const char **strings)
{
	EgressParallelShared *sh;
	int			nparts = p->nparts;
	Size		size;
	Size		gucsize = 0;
	Size		strsize = 0;
	char	   *snapid;

	/* pg_export_snapshot()'s machinery: parts import it by this id */
	snapid = ExportSnapshot(GetActiveSnapshot());

	size = offsetof(EgressParallelShared, status) + sizeof(EgressPartStatus) * nparts;
	size = MAXALIGN(size);
	if (kind == EGRESS_PARALLEL_EXPORT)
	{
		for (int i = 0; i < EGRESS_PSTR_COUNT; i++)
			if (strings[i])
				strsize += strlen(strings[i]) + 1;
		gucsize = EstimateGUCStateSpace();
	}
	size += MAXALIGN(strsize) + gucsize;

	p->seg = dsm_create(size, 0);
	sh = p->sh = dsm_segment_address(p->seg);
	memset(sh, 0, size);
	sh->kind = kind;
	sh->nparts = nparts;
	sh->coordinator = MyProcPid;
	sh->dboid = MyDatabaseId;
	strlcpy(sh->snapshot, snapid, sizeof(sh->snapshot));
	sh->nblocks = nblocks;
	sh->stream_id = stream_id;
	sh->version = version;
	if (kind == EGRESS_PARALLEL_EXPORT)
	{
		Size		off = MAXALIGN(offsetof(EgressParallelShared, status) +
								   sizeof(EgressPartStatus) * nparts);
		Oid			role = GetCurrentRoleId();

		sh->session_user = GetSessionUserId();
		sh->outer_user = role;
		sh->outer_is_superuser = OidIsValid(role) && superuser_arg(role);
		GetUserIdAndSecContext(&sh->current_user, &sh->sec_context);
		for (int i = 0; i < EGRESS_PSTR_COUNT; i++)
			if (strings[i])
			{
				sh->str_off[i] = off;
				strcpy((char *) sh + off, strings[i]);
				off += strlen(strings[i]) + 1;
			}
		off = MAXALIGN(off);
		sh->guc_off = off;
		sh->guc_len = gucsize;
		SerializeGUCState(gucsize, (char *) sh + off);
	}

	for (int k = 2; k <= nparts; k++)
	{
		BackgroundWorker worker;
		MemoryContext oldcxt;
		pid_t		pid;
		bool		ok;

		memset(&worker, 0, sizeof(worker));
		worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
		worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
		worker.bgw_restart_time = BGW_NEVER_RESTART;
		strlcpy(worker.bgw_library_name, "pg_egress", BGW_MAXLEN);
		/* the entry point of the kind (the arrows of the layout point down) */
		strlcpy(worker.bgw_function_name,
				kind == EGRESS_PARALLEL_STREAM ? "egress_sync_part_main" : "egress_export_part_main",
				BGW_MAXLEN);
		if (kind == EGRESS_PARALLEL_STREAM)
			snprintf(worker.bgw_name, BGW_MAXLEN, "pg_egress part %d of %d of stream %d",
					 k, nparts, stream_id);
		else
			snprintf(worker.bgw_name, BGW_MAXLEN, "pg_egress part %d of %d of export (pid %d)",
					 k, nparts, (int) MyProcPid);
		strlcpy(worker.bgw_type, "pg_egress part", BGW_MAXLEN);
		worker.bgw_main_arg = UInt32GetDatum(dsm_segment_handle(p->seg));
		memcpy(worker.bgw_extra, &k, sizeof(int));
		worker.bgw_notify_pid = MyProcPid;

		oldcxt = MemoryContextSwitchTo(TopMemoryContext);
		ok = RegisterDynamicBackgroundWorker(&worker, &p->handles[k]);
		MemoryContextSwitchTo(oldcxt);
		if (!ok)
		{
			p->handles[k] = NULL;
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("cannot start part %d of %d: no background worker slot is free", k, nparts),
					 errdetail("parallel => %d needs %d background workers besides this process.",
							   nparts, nparts - 1),
					 errhint("Raise max_worker_processes, or use parallel => 1.")));
		}
		if (WaitForBackgroundWorkerStartup(p->handles[k], &pid) != BGWH_STARTED)
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("cannot start part %d of %d: the background worker did not start", k, nparts),
					 errhint("Check the server log; or use parallel => 1.")));
	}
}

EgressParallel *
egress_parallel_begin(int kind, int nparts, BlockNumber nblocks,
					  int32 stream_id, int64 version, Oid owner,
					  const char **strings)
{
	EgressParallel *p;
	int			got;
	int			busy;

	Assert(nparts >= 2);
	if (IsSubTransaction())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("parallel => %d cannot run inside a subtransaction", nparts),
				 errdetail("Its parts share a snapshot exported by this transaction, and a subtransaction cannot export one."),
				 errhint("Use parallel => 1, or call it outside an exception block or savepoint.")));
	if (nrunning_par >= lengthof(running))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("too many parallel runs nested in one another")));

	p = palloc0(sizeof(EgressParallel));
	p->handles = palloc0(sizeof(BackgroundWorkerHandle *) * (nparts + 1));
	p->entries = palloc0(sizeof(EgressWorkerSlot *) * (nparts + 1));

	/*
	 * The parts' entries first, all at once: pg_egress.max_workers counts
	 * every live pg_egress worker.  An export that does not fit fails; a
	 * sync reads with fewer parts (down to one: its worker alone), as
	 * waiting could wait forever for syncs that wait alike.
	 */
	got = egress_claim_parts(stream_id, nparts - 1, owner, &p->entries[2], &busy);
	if (got < nparts - 1)
	{
		if (kind == EGRESS_PARALLEL_EXPORT)
		{
			for (int k = 0; k < got; k++)
				egress_release_slot(p->entries[2 + k]);
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("parallel => %d cannot be honoured now: %d of pg_egress.max_workers (%d) are busy",
							nparts, busy, egress_max_workers),
					 errdetail("The export needs %d part workers besides this session.", nparts - 1),
					 errhint("Retry later, use a smaller parallel, or raise pg_egress.max_workers.")));
		}
		ereport(LOG,
				(errmsg("pg_egress stream %d: parallel %d reduced to %d: %d of pg_egress.max_workers (%d) are busy",
						stream_id, nparts, got + 1, busy, egress_max_workers)));
	}
	p->nparts = got + 1;
	if (p->nparts == 1)
	{
		p->ended = true;
		return p;
	}

	if (!exit_registered)
	{
		before_shmem_exit(parallel_exit, (Datum) 0);
		exit_registered = true;
	}
	running[nrunning_par++] = p;

	PG_TRY();
	{
		start_parts(p, kind, nblocks, stream_id, version, strings);
	}
	PG_CATCH();
	{
		egress_parallel_end(p);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return p;
}

/* how many parts the run has (a sync's may have been reduced) */
int
egress_parallel_nparts(EgressParallel *p)
{
	return p->nparts;
}

/* ERROR for a part that ended without finishing, after stopping the others */
static void
check_part(EgressParallel *p, int k)
{
	EgressPartStatus *st = &p->sh->status[k - 1];
	EgressPartStatus copy;

	pg_read_barrier();
	if (st->state == EGRESS_PART_DONE)
		return;
	copy = *st;
	stop_parts(p);
	if (copy.state == EGRESS_PART_FAILED)
		ereport(ERROR,
				(errcode(copy.sqlerrcode ? copy.sqlerrcode : ERRCODE_INTERNAL_ERROR),
				 errmsg("part %d of %d failed: %s", k, p->nparts, copy.message),
				 errdetail("Nothing of the run was completed.")));
	ereport(ERROR,
			(errcode(ERRCODE_ADMIN_SHUTDOWN),
			 errmsg("part %d of %d ended without finishing", k, p->nparts),
			 errdetail("Its worker (process %d) was terminated or crashed; nothing of the run was completed.",
					   (int) copy.pid)));
}

/*
 * Between the coordinator's own batches: ERROR at once when a part has
 * already failed, rather than after the coordinator's part.
 */
void
egress_parallel_report_progress(EgressParallel *p, EgressWorkerSlot *slot,
								const int64 *base)
{
	p->progress_slot = slot;
	p->progress_base = base;
}

/* the rows acknowledged so far, into the stream's entry (once a batch) */
static void
report_progress(EgressParallel *p)
{
	int64		rows;

	if (p->progress_slot == NULL || p->ended)
		return;
	rows = *p->progress_base;
	for (int k = 2; k <= p->nparts; k++)
		rows += (int64) p->sh->status[k - 1].rows;
	egress_progress_rows(p->progress_slot, rows);
}

void
egress_parallel_check(EgressParallel *p)
{
	report_progress(p);
	for (int k = 2; k <= p->nparts && !p->ended; k++)
	{
		pid_t		pid;

		if (p->sh->status[k - 1].state == EGRESS_PART_FAILED ||
			GetBackgroundWorkerPid(p->handles[k], &pid) == BGWH_STOPPED)
			check_part(p, k);
	}
}

/*
 * Parts 2..n: ended?  ERROR for the first one that failed or ended without
 * finishing, after stopping the others.
 */
void
egress_parallel_wait(EgressParallel *p, uint64 *rows, uint64 *bytes, uint64 *batches)
{
	for (;;)
	{
		bool		all_stopped = true;

		CHECK_FOR_INTERRUPTS();
		report_progress(p);
		for (int k = 2; k <= p->nparts; k++)
		{
			pid_t		pid;

			if (GetBackgroundWorkerPid(p->handles[k], &pid) != BGWH_STOPPED)
			{
				all_stopped = false;
				continue;
			}
			check_part(p, k);
		}
		if (all_stopped)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	for (int k = 2; k <= p->nparts; k++)
	{
		*rows += p->sh->status[k - 1].rows;
		*bytes += p->sh->status[k - 1].bytes;
		*batches += p->sh->status[k - 1].batches;
	}
}

EgressPartStatus *
egress_parallel_status(EgressParallel *p, int part)
{
	if (p->final)
		return &p->final[part - 1];
	return &p->sh->status[part - 1];
}

void
egress_parallel_end(EgressParallel *p)
{
	if (p->ended)
		return;
	stop_parts(p);
	release_entries(p);
	forget(p);
	p->ended = true;

	/*
	 * Every part has ended: keep their outcome, detach now (left to the
	 * transaction's resource owner, a commit would warn of a leak).
	 */
	if (p->seg)
	{
		p->final = MemoryContextAlloc(GetMemoryChunkContext(p),
									  sizeof(EgressPartStatus) * p->nparts);
		memcpy(p->final, p->sh->status, sizeof(EgressPartStatus) * p->nparts);
		dsm_detach(p->seg);
		p->seg = NULL;
		p->sh = NULL;
	}
}

/*
 * egress_part_worker_run
 *		The life of a part worker (its entry point is its kind's: sync.c,
 *		export.c): attach to the coordinator's segment, connect, run body,
 *		report the outcome.
 */
void
egress_part_worker_run(Datum main_arg, EgressPartBody body)
{
	dsm_handle	handle = DatumGetUInt32(main_arg);
	int			part;
	dsm_segment *seg;
	EgressParallelShared *sh;
	EgressPartStatus *st;
	MemoryContext cxt;

	memcpy(&part, MyBgworkerEntry->bgw_extra, sizeof(int));
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* no resource owner: the mapping lasts until exit */
	seg = dsm_attach(handle);
	if (seg == NULL)
		proc_exit(0);			/* the coordinator is gone: nothing to do */
	sh = dsm_segment_address(seg);
	if (part < 2 || part > sh->nparts)
		proc_exit(0);
	st = &sh->status[part - 1];
	st->pid = MyProcPid;
	pg_write_barrier();
	st->state = EGRESS_PART_RUNNING;

	if (sh->kind == EGRESS_PARALLEL_STREAM)
		BackgroundWorkerInitializeConnectionByOid(sh->dboid, InvalidOid, 0);
	else
	{
		/*
		 * An export's part is the caller's session again: it logs in as
		 * the caller's session user (so it never has more rights than the
		 * caller, and rolcanlogin / connection limits apply), then takes
		 * the caller's settings, role and current user (export.c).
		 */
		BackgroundWorkerInitializeConnectionByOid(sh->dboid, sh->session_user, 0);
	}

	cxt = AllocSetContextCreate(TopMemoryContext, "pg_egress part",
								ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		body(sh, part, st);
		pg_write_barrier();
		st->state = EGRESS_PART_DONE;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		st->sqlerrcode = edata->sqlerrcode;
		strlcpy(st->message, edata->message ? edata->message : "unknown error",
				sizeof(st->message));
		pg_write_barrier();
		st->state = EGRESS_PART_FAILED;
	}
	PG_END_TRY();
	proc_exit(0);
}
