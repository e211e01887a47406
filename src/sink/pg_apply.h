/*-------------------------------------------------------------------------
 * pg_apply.h
 *	  postgres destinations: applying Singer batches to tables of another
 *	  PostgreSQL server (issue 15).
 *
 * postgres.c owns the kind (URL grammar, options, privileges, probe) and
 * opens the sink; pg_apply.c owns the batch operations: it parses the
 * Singer messages a batch is written as, creates and evolves the target
 * tables (pg_typemap.c maps Singer schemas to column types and values to
 * COPY text), loads each stream's rows through COPY (straight into the
 * table, or into a staging table and merged), and records what it applied
 * in _pg_egress_state in the same target transaction (exactly-once).
 * pg_apply_early.c loads a batch while it is written; pg_apply_int.h is
 * what the two share.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_PG_APPLY_H
#define EGRESS_PG_APPLY_H

#include "net/pgconn.h"
#include "sink/sink.h"

/* begin_batch, write, commit_batch (with retries), commit_attempt, abort_batch, cleanup, close, probe */
extern const EgressSinkOps egress_pg_apply_ops;

/* called by postgres.c's open: returns the sink's private_data */
extern void *egress_pg_apply_create(EgressSink *sink, EgressPgTarget *target);

/* the probe operation (egress_check), in postgres.c */
extern char *egress_postgres_probe(EgressSink *sink);

#endif							/* EGRESS_PG_APPLY_H */
