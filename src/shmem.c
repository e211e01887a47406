/*-------------------------------------------------------------------------
 * shmem.c
 *	  Shared state: how to wake the workers, and the live figures of the
 *	  running sync workers (egress_stream_activity()), their progress, lag
 *	  and retries (egress_stream_progress(), shmem.h).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "optimizer/plancat.h"
#include "storage/bufmgr.h"
#include "storage/latch.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "net/backoff.h"
#include "pg_egress.h"
#include "shmem.h"

EgressShared *egress_shared = NULL;

static bool wake_at_commit = false;
static bool xact_callback_registered = false;

PG_FUNCTION_INFO_V1(egress_stream_activity);
PG_FUNCTION_INFO_V1(egress_stream_progress);

/* progress of a run that has not finished, at most (1: finished) */
#define EGRESS_PROGRESS_MAX_RUNNING 0.99

/* Called from shmem_startup_hook, also after a crash restart. */
void
egress_shmem_init(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	egress_shared = ShmemInitStruct("pg_egress",
									offsetof(EgressShared, slots) +
									sizeof(EgressWorkerSlot) * egress_max_active_streams,
									&found);
	if (!found)
	{
		memset(egress_shared, 0, offsetof(EgressShared, slots) +
			   sizeof(EgressWorkerSlot) * egress_max_active_streams);
		egress_shared->lock = &(GetNamedLWLockTranche("pg_egress"))->lock;
		egress_shared->nslots = egress_max_active_streams;
		pg_atomic_init_u32(&egress_shared->config_gen, 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

void
egress_wake_dbworker(void)
{
	PGPROC	   *proc;

	if (egress_shared == NULL)
		return;
	LWLockAcquire(egress_shared->lock, LW_SHARED);
	proc = egress_shared->dbworker;
	if (proc != NULL)
		SetLatch(&proc->procLatch);
	LWLockRelease(egress_shared->lock);
}

static void
egress_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_at_commit && egress_shared != NULL)
			{
				/* CDC workers notice this between rounds */
				pg_atomic_fetch_add_u32(&egress_shared->config_gen, 1);
				egress_wake_dbworker();
			}
			wake_at_commit = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_at_commit = false;
			break;
		default:
			break;
	}
}

/*
 * Catalog changes take effect when they commit: the worker is woken then,
 * never before, so it cannot act on an uncommitted row.
 */
void
egress_wake_dbworker_at_commit(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(egress_xact_callback, NULL);
		xact_callback_registered = true;
	}
	wake_at_commit = true;
}

/*
 * Does the process that holds an entry still exist?  Entries are released
 * at exit (before_shmem_exit) and shared memory is made anew after a crash,
 * so this only guards against a process that died without its exit hooks.
 */
static bool
holder_alive(pid_t pid)
{
	if (pid == 0)
		return false;
	return kill(pid, 0) == 0 || errno != ESRCH;
}

/*
 * Take an entry for a stream (stream_id > 0) or for a destination's CDC
 * worker (dest), under the lock, so two workers can never both hold the
 * same one: a database worker that was restarted does not know the workers
 * its predecessor started, and may start a second one for the same stream.
 * Returns NULL with *holder set to the pid of the live process that holds
 * it, or NULL with *holder = 0 when all entries are taken.
 */
static EgressWorkerSlot *
claim_entry(int32 stream_id, const char *dest, const char *phase, bool cdc_stream,
			pid_t *holder)
{
	EgressWorkerSlot *result = NULL;
	EgressWorkerSlot *free_slot = NULL;

	*holder = 0;
	LWLockAcquire(egress_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < egress_shared->nslots; i++)
	{
		EgressWorkerSlot *slot = &egress_shared->slots[i];

		if (slot->in_use && slot->part == 0 && slot->stream_id == stream_id &&
			strcmp(slot->dest, dest) == 0 && slot->pid != MyProcPid)
		{
			if (holder_alive(slot->pid))
			{
				*holder = slot->pid;
				LWLockRelease(egress_shared->lock);
				return NULL;
			}
			slot->in_use = false;	/* left by a process that is gone */
		}
		if (!slot->in_use && free_slot == NULL)
			free_slot = slot;
	}
	if (free_slot != NULL)
	{
		result = free_slot;
		memset(result, 0, sizeof(*result));
		result->in_use = true;
		result->stream_id = stream_id;
		strlcpy(result->dest, dest, sizeof(result->dest));
		result->pid = MyProcPid;
		result->cdc_stream = cdc_stream;
		result->started_at = GetCurrentTimestamp();
		result->lag_bytes = -1;
		strlcpy(result->phase, phase, sizeof(result->phase));
	}
	LWLockRelease(egress_shared->lock);
	return result;
}

/* Take the entry of a stream; see claim_entry(). */
EgressWorkerSlot *
egress_claim_stream(int32 stream_id, const char *phase, pid_t *holder)
{
	Assert(stream_id > 0);
	return claim_entry(stream_id, "", phase, false, holder);
}

/* Take the entry of a LOG_BASED stream for its destination's CDC worker. */
EgressWorkerSlot *
egress_claim_cdc_stream(int32 stream_id, const char *phase)
{
	pid_t		holder;

	Assert(stream_id > 0);
	return claim_entry(stream_id, "", phase, true, &holder);
}

/* Take a free slot for a stream; NULL when all are taken or it is held. */
EgressWorkerSlot *
egress_claim_slot(int32 stream_id, const char *phase)
{
	pid_t		holder;

	return egress_claim_stream(stream_id, phase, &holder);
}

/* The entry of a destination's CDC worker: one per destination. */
EgressWorkerSlot *
egress_claim_destination(const char *dest, pid_t *holder)
{
	return claim_entry(0, dest, "cdc", false, holder);
}

/*
 * The live process that holds a stream's entry (stream_id > 0) or a
 * destination's (dest), or 0.
 */
pid_t
egress_stream_holder(int32 stream_id, const char *dest)
{
	pid_t		result = 0;

	LWLockAcquire(egress_shared->lock, LW_SHARED);
	for (int i = 0; i < egress_shared->nslots; i++)
	{
		EgressWorkerSlot *slot = &egress_shared->slots[i];

		if (slot->in_use && slot->part == 0 && slot->stream_id == stream_id &&
			strcmp(slot->dest, dest ? dest : "") == 0 && holder_alive(slot->pid))
		{
			result = slot->pid;
			break;
		}
	}
	LWLockRelease(egress_shared->lock);
	return result;
}

/* a live process of pg_egress that counts against pg_egress.max_workers */
static bool
counts_as_worker(EgressWorkerSlot *slot)
{
	if (!slot->in_use || !holder_alive(slot->pid))
		return false;
	if (slot->part > 0)
		return true;			/* a part worker */
	if (slot->stream_id == 0)
		return slot->dest[0] != '\0';	/* a CDC worker */
	return !slot->cdc_stream;	/* a sync or INCREMENTAL worker */
}

/*
 * Entries for the part workers of a parallel FULL_TABLE sync of stream_id
 * (0: of an export), held by the coordinator (MyProcPid) for as long as the
 * parts run: as many of want as pg_egress.max_workers still allows, counting
 * the live sync, INCREMENTAL, CDC and part workers (*busy), taken at once
 * under the lock.  They are never a claim of the stream: claim_entry() and
 * egress_stream_holder() skip them; the database worker counts them
 * (egress_count_parts) before it starts workers.  Returns how many were
 * taken, into out[0..].
 */
int
egress_claim_parts(int32 stream_id, int want, Oid owner, EgressWorkerSlot **out,
				   int *busy)
{
	int			nbusy = 0;
	int			got = 0;

	LWLockAcquire(egress_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < egress_shared->nslots; i++)
		if (counts_as_worker(&egress_shared->slots[i]))
			nbusy++;
	*busy = nbusy;
	for (int i = 0; i < egress_shared->nslots && got < want &&
		 nbusy + got < egress_max_workers; i++)
	{
		EgressWorkerSlot *slot = &egress_shared->slots[i];

		if (slot->in_use && !holder_alive(slot->pid))
			slot->in_use = false;	/* left by a process that is gone */
		if (slot->in_use)
			continue;
		memset(slot, 0, sizeof(*slot));
		slot->in_use = true;
		slot->stream_id = stream_id;
		slot->part = got + 2;
		slot->pid = MyProcPid;
		slot->owner = owner;
		slot->started_at = GetCurrentTimestamp();
		slot->lag_bytes = -1;
		strlcpy(slot->phase, "part", sizeof(slot->phase));
		out[got++] = slot;
	}
	LWLockRelease(egress_shared->lock);
	return got;
}

/* How many part workers run now (see egress_claim_parts). */
int
egress_count_parts(void)
{
	int			n = 0;

	LWLockAcquire(egress_shared->lock, LW_SHARED);
	for (int i = 0; i < egress_shared->nslots; i++)
		if (egress_shared->slots[i].in_use && egress_shared->slots[i].part > 0)
			n++;
	LWLockRelease(egress_shared->lock);
	return n;
}

void
egress_set_phase(EgressWorkerSlot *slot, const char *phase)
{
	if (slot == NULL)
		return;
	LWLockAcquire(egress_shared->lock, LW_EXCLUSIVE);
	strlcpy(slot->phase, phase, sizeof(slot->phase));
	LWLockRelease(egress_shared->lock);
}

/*
 * The owner of the stream an entry serves, once the worker has loaded the
 * stream: egress_stream_activity() shows the entry to that owner's members.
 */
void
egress_set_slot_owner(EgressWorkerSlot *slot, Oid owner)
{
	if (slot == NULL)
		return;
	LWLockAcquire(egress_shared->lock, LW_EXCLUSIVE);
	slot->owner = owner;
	LWLockRelease(egress_shared->lock);
}

void
egress_release_slot(EgressWorkerSlot *slot)
{
	LWLockAcquire(egress_shared->lock, LW_EXCLUSIVE);
	slot->in_use = false;
	slot->pid = 0;
	LWLockRelease(egress_shared->lock);
}

Datum
egress_stream_activity(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	EgressWorkerSlot *copy;
	int			n = 0;
	bool		caller_super = superuser();

	InitMaterializedSRF(fcinfo, 0);

	if (egress_shared == NULL)
		PG_RETURN_VOID();

	/*
	 * A copy first: whose rows the caller may see is decided outside the
	 * lock (role membership reads the catalog).
	 */
	copy = palloc(sizeof(EgressWorkerSlot) * Max(egress_shared->nslots, 1));
	LWLockAcquire(egress_shared->lock, LW_SHARED);
	for (int i = 0; i < egress_shared->nslots; i++)
		if (egress_shared->slots[i].in_use && egress_shared->slots[i].stream_id != 0 &&
			egress_shared->slots[i].part == 0)
			copy[n++] = egress_shared->slots[i];	/* destinations' entries and
													 * part workers are not
													 * streams */
	LWLockRelease(egress_shared->lock);

	for (int i = 0; i < n; i++)
	{
		EgressWorkerSlot *slot = &copy[i];
		Datum		values[9];
		bool		nulls[9] = {0};

		/*
		 * The live figures of the streams of the roles the caller is a
		 * member of, as egress_streams shows their rows; an entry whose
		 * owner is not known yet only to superusers.
		 */
		if (!caller_super &&
			(!OidIsValid(slot->owner) || !is_member_of_role(GetUserId(), slot->owner)))
			continue;
		values[0] = Int32GetDatum(slot->stream_id);
		values[1] = Int32GetDatum(slot->pid);
		values[2] = CStringGetTextDatum(slot->phase);
		values[3] = Int64GetDatum((int64) slot->rows_sent);
		values[4] = Int64GetDatum((int64) slot->bytes_sent);
		values[5] = Int64GetDatum((int64) slot->batches_sent);
		values[6] = TimestampTzGetDatum(slot->started_at);
		values[7] = Int64GetDatum(slot->lag_bytes);
		nulls[7] = slot->lag_bytes < 0;
		values[8] = LSNGetDatum((XLogRecPtr) slot->confirmed_lsn);
		nulls[8] = slot->confirmed_lsn == 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}

	PG_RETURN_VOID();
}

/* ---- progress, lag, retries ------------------------------------------------ */

void
egress_progress_resume(EgressWorkerSlot *slot, double estimate, int64 rows_before)
{
	if (slot == NULL)
		return;
	LWLockAcquire(egress_shared->lock, LW_EXCLUSIVE);
	slot->rows_total_estimate = estimate < 0 ? -1 :
		(int64) Min(estimate + 0.5, (double) PG_INT64_MAX);
	slot->run_rows = rows_before;
	slot->run_rows_base = rows_before;
	slot->run_done = false;
	slot->run_started_at = GetCurrentTimestamp();
	LWLockRelease(egress_shared->lock);
}

void
egress_progress_begin(EgressWorkerSlot *slot, double estimate)
{
	egress_progress_resume(slot, estimate, 0);
}

/*
 * Once per batch: a plain store, as for rows_sent; readers copy the entry
 * under the lock and see this batch's figure or the last one.
 */
void
egress_progress_rows(EgressWorkerSlot *slot, int64 rows)
{
	if (slot == NULL)
		return;
	slot->run_rows = rows;
}

void
egress_progress_end(EgressWorkerSlot *slot)
{
	if (slot == NULL || slot->run_started_at == 0)
		return;
	LWLockAcquire(egress_shared->lock, LW_EXCLUSIVE);
	slot->run_done = true;
	LWLockRelease(egress_shared->lock);
}

void
egress_progress_acked(EgressWorkerSlot *slot)
{
	if (slot == NULL)
		return;
	slot->last_success_at = GetCurrentTimestamp();
}

/*
 * The entry is the process's own until it exits (the entries are released
 * in before_shmem_exit, after which nothing retries).
 */
void
egress_count_retries_in(EgressWorkerSlot *slot)
{
	egress_backoff_retries = slot ? &slot->retries : NULL;
}

double
egress_relation_row_estimate(Oid relid)
{
	Relation	rel;
	BlockNumber pages;
	double		tuples;
	double		allvisfrac;
	char		relkind = get_rel_relkind(relid);

	/* a partitioned table: the sum over its leaves is not worth a scan here */
	if (relkind != RELKIND_RELATION && relkind != RELKIND_MATVIEW &&
		relkind != RELKIND_TOASTVALUE)
		return -1;
	/* dropped meanwhile: not known */
	rel = try_relation_open(relid, AccessShareLock);
	if (rel == NULL)
		return -1;
	/* the planner assumes 10 pages for a table never vacuumed: not here */
	if (RelationGetNumberOfBlocks(rel) == 0)
		tuples = 0;
	else
		estimate_rel_size(rel, NULL, &pages, &tuples, &allvisfrac);
	relation_close(rel, AccessShareLock);
	return tuples;
}

double
egress_relation_reltuples(Oid relid)
{
	HeapTuple	tup;
	double		result = -1;

	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (HeapTupleIsValid(tup))
	{
		result = ((Form_pg_class) GETSTRUCT(tup))->reltuples;
		ReleaseSysCache(tup);
	}
	return result < 0 ? -1 : result;
}

/*
 * egress_stream_progress()
 *		One row per stream entry (stream_id; destination NULL): the
 *		progress of its running sync, INCREMENTAL run or backfill, and its
 *		worker's retries; one row per CDC worker (destination; stream_id
 *		NULL): lag and retries, which all LOG_BASED streams of the
 *		destination share (one slot, one sequence of batches).  Shown to
 *		superusers and to members of the entry's owner (for a destination,
 *		its owner: every stream owner of it has the owner's privileges).
 */
Datum
egress_stream_progress(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	EgressWorkerSlot *copy;
	int			n = 0;
	bool		caller_super = superuser();
	TimestampTz now = GetCurrentTimestamp();

	InitMaterializedSRF(fcinfo, 0);

	if (egress_shared == NULL)
		PG_RETURN_VOID();

	copy = palloc(sizeof(EgressWorkerSlot) * Max(egress_shared->nslots, 1));
	LWLockAcquire(egress_shared->lock, LW_SHARED);
	for (int i = 0; i < egress_shared->nslots; i++)
	{
		EgressWorkerSlot *slot = &egress_shared->slots[i];

		if (slot->in_use && slot->part == 0 &&
			(slot->stream_id != 0 || slot->dest[0] != '\0'))
			copy[n++] = *slot;
	}
	LWLockRelease(egress_shared->lock);

	for (int i = 0; i < n; i++)
	{
		EgressWorkerSlot *slot = &copy[i];
		Datum		values[10];
		bool		nulls[10] = {0};

		if (!caller_super &&
			(!OidIsValid(slot->owner) || !is_member_of_role(GetUserId(), slot->owner)))
			continue;
		values[2] = Int32GetDatum(slot->pid);
		values[8] = Int64GetDatum((int64) slot->retries);
		values[9] = TimestampTzGetDatum(slot->last_success_at);
		nulls[9] = slot->last_success_at == 0;
		if (slot->stream_id == 0)
		{
			/* a CDC worker's destination entry */
			nulls[0] = true;
			values[1] = CStringGetTextDatum(slot->dest);
			nulls[3] = nulls[4] = nulls[5] = nulls[6] = true;
			/* caught up (nothing unacknowledged): 0 */
			values[7] = Float8GetDatum(slot->unacked_since == 0 ? 0.0 :
									   Max(0.0, (double) (now - slot->unacked_since) /
										   USECS_PER_SEC));
		}
		else
		{
			int64		est = slot->rows_total_estimate;
			int64		rows = slot->run_rows;

			values[0] = Int32GetDatum(slot->stream_id);
			nulls[1] = true;
			nulls[7] = true;
			if (slot->run_started_at == 0)
				nulls[3] = nulls[4] = nulls[5] = nulls[6] = true;
			else
			{
				double		progress;

				/*
				 * An estimate that fell short: at least what was sent.  Once
				 * it ended: what it sent.
				 */
				if (slot->run_done)
					est = rows;
				else if (est >= 0)
					est = Max(est, rows);
				values[3] = Int64GetDatum(est);
				nulls[3] = est < 0;
				values[4] = Int64GetDatum(rows);
				/*
				 * 1 means finished: a run that outgrew its estimate stays
				 * just below until it ends.
				 */
				if (slot->run_done)
					progress = 1.0;
				else if (est > 0)
					progress = Min((double) rows / (double) est, EGRESS_PROGRESS_MAX_RUNNING);
				else
					progress = est == 0 ? 0.0 : -1.0;
				values[5] = Float8GetDatum(progress);
				nulls[5] = progress < 0;

				/*
				 * Finished at the pace so far: now + rows left / rows per
				 * microsecond since it began.  Not before the first rows,
				 * nor once done, nor past the estimate (the rest is not
				 * known).
				 */
				if (!slot->run_done && progress > 0 && rows < est &&
					rows > slot->run_rows_base)
				{
					double		elapsed = (double) (now - slot->run_started_at);
					double		left = elapsed * (double) (est - rows) /
						(double) (rows - slot->run_rows_base);

					values[6] = TimestampTzGetDatum(now + (TimestampTz) Min(left, 1e15));
				}
				else
					nulls[6] = true;
			}
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}

	PG_RETURN_VOID();
}
