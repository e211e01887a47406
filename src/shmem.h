/*-------------------------------------------------------------------------
 * shmem.h
 *	  Progress, lag and retries of the running workers, kept in their
 *	  shared entries (EgressWorkerSlot, pg_egress.h) and shown by
 *	  egress_stream_progress() and the egress_streams view.
 *
 * The workers update these figures once per batch (or per run), never per
 * row: a sync's rows count when their batch is acknowledged.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_SHMEM_H
#define EGRESS_SHMEM_H

#include "pg_egress.h"

/*
 * A sync, INCREMENTAL run or backfill of the entry's stream begins, of
 * about estimate rows (< 0: not known).
 */
extern void egress_progress_begin(EgressWorkerSlot *slot, double estimate);

/* the same, for a run resumed with rows already acknowledged */
extern void egress_progress_resume(EgressWorkerSlot *slot, double estimate,
								   int64 rows_before);

/* rows acknowledged so far by the run (after each batch) */
extern void egress_progress_rows(EgressWorkerSlot *slot, int64 rows);

/* the run is over: progress 1 */
extern void egress_progress_end(EgressWorkerSlot *slot);

/* a batch was acknowledged by the destination */
extern void egress_progress_acked(EgressWorkerSlot *slot);

/*
 * Count every retry of this process (net/backoff.c) in the entry: a sync
 * or INCREMENTAL worker's stream entry, a CDC worker's destination entry.
 */
extern void egress_count_retries_in(EgressWorkerSlot *slot);

/*
 * The planner's estimate of a relation's rows (as for a sequential scan:
 * reltuples scaled to the current size, or guessed from it), in a
 * transaction.
 */
extern double egress_relation_row_estimate(Oid relid);

/*
 * pg_class.reltuples of a relation (-1: never analyzed, or gone), without
 * taking a lock on it: for callers that must not wait for the table's
 * lockers (the CDC worker's catalog transactions).
 */
extern double egress_relation_reltuples(Oid relid);

/*
 * sync.c: record in stream_state.last_success_at (0.2 catalog) that the
 * streams' latest batches were acknowledged; in the worker's catalog
 * transaction (egress_catalog_enter), with the bookmark.  Nothing with a
 * 0.1 catalog (no such column before ALTER EXTENSION pg_egress UPDATE).
 */
extern void egress_record_success(const int32 *stream_ids, int n);

/*
 * sync.c: first in a transaction that calls egress_record_success(), before
 * it updates any stream_state row: locks the streams' egress.stream rows
 * (FOR KEY SHARE), the order of the user functions (stream, then state).
 */
extern void egress_record_success_begin(const int32 *stream_ids, int n);

#endif							/* EGRESS_SHMEM_H */
