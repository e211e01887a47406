/*-------------------------------------------------------------------------
 * pg_egress.h
 *	  Declarations shared by the pg_egress modules: GUCs, shared state.
 *-------------------------------------------------------------------------
 */
#ifndef PG_EGRESS_H
#define PG_EGRESS_H

#include "datatype/timestamp.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "utils/jsonb.h"

#define EGRESS_VERSION_STR "0.2"

/* GUCs (guc.c) */
extern char *egress_database;
extern int	egress_max_workers;
extern int	egress_naptime_ms;
extern int	egress_batch_max_rows;
extern int	egress_batch_max_bytes_kb;
extern int	egress_flush_interval_ms;
extern int	egress_max_slot_lag_mb;
extern int	egress_max_active_streams;
extern int	egress_max_slot_wal_mb;
extern int	egress_heartbeat_interval_ms;

extern void egress_define_gucs(void);

/*
 * One entry per stream a worker is serving (a sync worker serves one, a CDC
 * worker all LOG_BASED streams of its destination): the live figures shown
 * by egress_streams.
 */
typedef struct EgressWorkerSlot
{
	bool		in_use;
	int32		stream_id;		/* 0: the entry of a CDC worker's destination */
	char		dest[NAMEDATALEN];	/* that destination ("" for streams) */
	pid_t		pid;
	bool		cdc_stream;		/* a stream of the CDC worker pid */
	bool		claimed;		/* the stream is taken: resync flag cleared */
	int16		part;			/* > 0: a part worker of a parallel sync or
								 * export (pid: its coordinator); counts
								 * against pg_egress.max_workers, never a
								 * claim of the stream */
	char		phase[16];
	uint64		rows_sent;
	uint64		bytes_sent;
	uint64		batches_sent;
	int64		lag_bytes;		/* CDC: WAL held by the slot, -1 unknown */
	uint64		confirmed_lsn;	/* CDC: acknowledged position, 0 unknown */
	TimestampTz started_at;
	Oid			owner;			/* the stream's owner; InvalidOid: not known
								 * yet (egress_stream_activity() shows the
								 * entry to superusers only) */

	/*
	 * Progress, lag and retries (egress_stream_progress(), shmem.h).  Written
	 * by the entry's process only: per batch, never per row.
	 */
	TimestampTz run_started_at; /* a sync, run or backfill began; 0: none */
	int64		rows_total_estimate;	/* its rows as planned; -1 unknown */
	int64		run_rows;		/* its rows acknowledged so far */
	int64		run_rows_base;	/* ... of them before it began (a resumed
								 * backfill): not counted in its pace */
	bool		run_done;		/* it finished */
	uint64		retries;		/* deliveries and sessions tried again */
	TimestampTz last_success_at;	/* a batch was last acknowledged */
	TimestampTz unacked_since;	/* CDC destination entry: commit time of the
								 * oldest change not acknowledged; 0: none */
} EgressWorkerSlot;

typedef struct EgressShared
{
	LWLock	   *lock;
	PGPROC	   *launcher;		/* to wake the launcher */
	PGPROC	   *dbworker;		/* to wake the database worker */
	pg_atomic_uint32 config_gen;	/* bumped by every committed egress_* change */
	int			nslots;
	EgressWorkerSlot slots[FLEXIBLE_ARRAY_MEMBER];
} EgressShared;

extern EgressShared *egress_shared;

/* shmem.c */
extern void egress_shmem_init(void);
extern void egress_wake_dbworker(void);
extern void egress_wake_dbworker_at_commit(void);
extern EgressWorkerSlot *egress_claim_slot(int32 stream_id, const char *phase);
extern EgressWorkerSlot *egress_claim_stream(int32 stream_id, const char *phase,
											 pid_t *holder);
extern EgressWorkerSlot *egress_claim_cdc_stream(int32 stream_id, const char *phase);
extern EgressWorkerSlot *egress_claim_destination(const char *dest, pid_t *holder);
extern pid_t egress_stream_holder(int32 stream_id, const char *dest);
extern void egress_release_slot(EgressWorkerSlot *slot);
extern int	egress_claim_parts(int32 stream_id, int want, Oid owner,
							   EgressWorkerSlot **out, int *busy);
extern int	egress_count_parts(void);
extern void egress_set_phase(EgressWorkerSlot *slot, const char *phase);
extern void egress_set_slot_owner(EgressWorkerSlot *slot, Oid owner);

/* launcher.c, dbworker.c, sync.c: entry points named in bgw_function_name */
extern void egress_register_launcher(void);
extern PGDLLEXPORT void egress_launcher_main(Datum main_arg);
extern PGDLLEXPORT void egress_dbworker_main(Datum main_arg);
extern PGDLLEXPORT void egress_sync_main(Datum main_arg);
extern PGDLLEXPORT void egress_cdc_main(Datum main_arg);
extern PGDLLEXPORT void egress_sync_part_main(Datum main_arg);
extern void egress_record_stream_error(int32 stream_id, const char *message);
extern bool egress_lock_stream_state(int32 stream_id);

/*
 * sink/sink.c: the destination kinds' validators, for egress_add_destination.
 * As owner (the calling role): ERROR unless url has the grammar of a known
 * kind and options are that kind's and allowed to owner (a message never
 * shows the whole URL: it may carry credentials).  Returns the kind and sets
 * *location to what egress.destination stores.  Declared here so that
 * catalog code includes no sink header.
 */
extern const char *egress_validate_destination(const char *url, Jsonb *options,
											   Oid owner, char **location);

/*
 * sink/sink_options.c: s as an SQL interval, false (no error) when it is
 * not one; the one duration grammar of every option.
 */
extern bool egress_parse_interval(const char *s, Interval *result);

/*
 * sink/sink.c: for egress_check() and the checks of egress_add_stream():
 * the sink kind's probe of a destination (see EgressSinkOps.probe), as the
 * calling role; owner_superuser: the destination's owner is a superuser
 * (else pg_egress.allowed_destination_hosts applies).  ERROR when the
 * destination cannot be reached or written; otherwise what was checked, or
 * NULL when the kind has no probe.
 */
extern char *egress_sink_probe(const char *kind, const char *location,
							   Jsonb *options, bool owner_superuser);

/* sync.c: the life of a worker that runs one stream once (sync.c, incremental.c) */
struct EgressSink;
extern void egress_run_stream_worker(Datum main_arg,
									 void (*body) (int32 stream_id, EgressWorkerSlot *slot),
									 struct EgressSink **sink);

#endif							/* PG_EGRESS_H */
