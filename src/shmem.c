/*-------------------------------------------------------------------------
 * shmem.c
 *	  Shared state: how to wake the workers, and the live figures of the
 *	  running sync workers (egress_stream_activity()).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "pg_egress.h"

EgressShared *egress_shared = NULL;

static bool wake_at_commit = false;
static bool xact_callback_registered = false;

PG_FUNCTION_INFO_V1(egress_stream_activity);

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
