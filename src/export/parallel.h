/*-------------------------------------------------------------------------
 * parallel.h
 *	  Part workers under one exported snapshot: parallel FULL_TABLE syncs
 *	  and parallel exports.
 *
 * A coordinator (the sync worker, or the backend calling egress_export)
 * exports its transaction's snapshot, starts parts 2..N as dynamic
 * background workers and reads part 1 itself.  Part k reads the blocks
 * [lo_k, hi_k) of the relation (TID range scan); the last part is open
 * ended.  Every part imports the coordinator's snapshot (REPEATABLE READ),
 * so all parts together read exactly one snapshot.  The coordinator keeps
 * its transaction open until every part has ended, and each part reports
 * its outcome in the shared segment.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_PARALLEL_H
#define EGRESS_PARALLEL_H

#include "storage/block.h"
#include "storage/dsm.h"

#include "pg_egress.h"

#define EGRESS_PARALLEL_STREAM	1
#define EGRESS_PARALLEL_EXPORT	2

#define EGRESS_PART_STARTING	0
#define EGRESS_PART_RUNNING		1
#define EGRESS_PART_DONE		2
#define EGRESS_PART_FAILED		3

typedef struct EgressPartStatus
{
	pid_t		pid;
	int			state;			/* EGRESS_PART_* */
	uint64		rows;
	uint64		bytes;
	uint64		batches;		/* streams: batches; exports: files */
	bool		publishing;		/* exports: its files may be visible */
	int			sqlerrcode;
	char		message[512];	/* the error of a failed part */
} EgressPartStatus;

/* the strings an export's parts need, offsets into the segment */
#define EGRESS_PSTR_QUERY		0
#define EGRESS_PSTR_URI			1
#define EGRESS_PSTR_OPTIONS		2
#define EGRESS_PSTR_REGION		3
#define EGRESS_PSTR_ACCESS_KEY	4
#define EGRESS_PSTR_SECRET_KEY	5
#define EGRESS_PSTR_TOKEN		6
#define EGRESS_PSTR_KMS_KEY		7
#define EGRESS_PSTR_COUNT		8

typedef struct EgressParallelShared
{
	int			kind;			/* EGRESS_PARALLEL_* */
	int			nparts;
	pid_t		coordinator;
	Oid			dboid;
	char		snapshot[64];	/* the exported snapshot's id */
	BlockNumber nblocks;		/* the relation's size when the run began */

	/* streams */
	int32		stream_id;
	int64		version;

	/* exports: the caller's identity and settings */
	Oid			session_user;
	Oid			outer_user;		/* SET ROLE, else InvalidOid */
	bool		outer_is_superuser;
	Oid			current_user;
	int			sec_context;
	Size		str_off[EGRESS_PSTR_COUNT];	/* 0: NULL */
	Size		guc_off;
	Size		guc_len;

	EgressPartStatus status[FLEXIBLE_ARRAY_MEMBER];	/* [nparts] */
} EgressParallelShared;

typedef struct EgressParallel EgressParallel;

/* the blocks of part (1-based) of n: [*lo, *hi), *hi InvalidBlockNumber: open */
extern void egress_part_range(BlockNumber nblocks, int nparts, int part,
							  BlockNumber *lo, BlockNumber *hi);

/*
 * Inside the coordinator's transaction, whose active snapshot is the one
 * to share: exports it, and starts parts 2..nparts.  strings (exports
 * only) are EGRESS_PSTR_COUNT strings or NULLs.  ERROR (with the workers
 * already started stopped again) when the workers cannot be started.
 */
extern EgressParallel *egress_parallel_begin(int kind, int nparts, BlockNumber nblocks,
											 int32 stream_id, int64 version, Oid owner,
											 const char **strings);

/*
 * How many parts the run has: a sync's nparts is reduced when
 * pg_egress.max_workers does not leave room for all (LOG); an export's
 * never is (ERROR).  With one part, nothing was started or exported.
 */
extern int	egress_parallel_nparts(EgressParallel *p);

/*
 * Waits until every part has ended; ERROR when one failed or ended
 * without finishing.  Adds their figures to rows, bytes and batches.
 */
extern void egress_parallel_wait(EgressParallel *p, uint64 *rows, uint64 *bytes,
								 uint64 *batches);

/* ERROR at once when a part has already failed or ended (see above) */
extern void egress_parallel_check(EgressParallel *p);

/*
 * A parallel sync's progress: while egress_parallel_wait waits (and at each
 * egress_parallel_check), the stream's entry gets *base (the coordinator's
 * own rows so far) plus the rows the parts reported after their batches.
 */
extern void egress_parallel_report_progress(EgressParallel *p,
											EgressWorkerSlot *slot,
											const int64 *base);

/* the figures of part k (2..n) after egress_parallel_wait */
extern EgressPartStatus *egress_parallel_status(EgressParallel *p, int part);

/*
 * Error path: stops the parts still running and waits for them; raises
 * nothing.  Also after egress_parallel_wait, to release everything.
 */
extern void egress_parallel_end(EgressParallel *p);

/*
 * A part worker's life: its kind's entry point (egress_sync_part_main in
 * sync.c, egress_export_part_main in export.c) calls this with its body,
 * which reads part "part" and sets the figures of status; an error or an
 * exit without return marks the part failed.
 */
typedef void (*EgressPartBody) (EgressParallelShared *sh, int part,
								EgressPartStatus *status);
extern void egress_part_worker_run(Datum main_arg, EgressPartBody body);

#endif							/* EGRESS_PARALLEL_H */
