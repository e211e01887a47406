/*-------------------------------------------------------------------------
 * snapshot.h
 *	  Writing the rows of a relation, read in the current snapshot, as
 *	  Singer batches: FULL_TABLE syncs and the initial sync of LOG_BASED
 *	  streams.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_SNAPSHOT_H
#define EGRESS_SNAPSHOT_H

#include "access/xlogdefs.h"
#include "lib/stringinfo.h"
#include "storage/block.h"

#include "catalog/catalog.h"
#include "pg_egress.h"
#include "sink/sink.h"

typedef struct EgressSnapshotResult
{
	int64		rows;
	int64		bytes;
	int64		batches;
} EgressSnapshotResult;

/*
 * Inside a transaction whose snapshot is the one to read: read def's
 * relation as its owner and write it to the sink.  For LOG_BASED initial
 * syncs (log_based) the STATE bookmark carries lsn.
 */
extern void egress_snapshot_write(EgressStreamDef *def, EgressSink *sink,
								  EgressWorkerSlot *slot, int64 version,
								  bool log_based, XLogRecPtr lsn,
								  EgressSnapshotResult *result);

/*
 * A parallel FULL_TABLE sync (sync.c, export/parallel.c) writes in three
 * steps: EGRESS_SNAP_OPEN (one batch: SCHEMA, ACTIVATE_VERSION, STATE),
 * EGRESS_SNAP_PART for each part (the rows of blocks [lo, hi), hi
 * InvalidBlockNumber: to the end; no ACTIVATE_VERSION, no empty batch),
 * EGRESS_SNAP_CLOSE (the final ACTIVATE_VERSION and STATE) once every part
 * was acknowledged.
 */
#define EGRESS_SNAP_OPEN	1
#define EGRESS_SNAP_PART	2
#define EGRESS_SNAP_CLOSE	3

typedef struct EgressSnapshotPart
{
	int			mode;
	int			part;			/* EGRESS_SNAP_PART: 1..n */
	BlockNumber lo;
	BlockNumber hi;
	/* called after every acknowledged batch (or NULL): may raise an ERROR */
	void		(*between_batches) (void *arg);
	void	   *arg;
} EgressSnapshotPart;

extern void egress_snapshot_write_part(EgressStreamDef *def, EgressSink *sink,
									   EgressWorkerSlot *slot, int64 version,
									   const EgressSnapshotPart *part,
									   EgressSnapshotResult *result);

/*
 * An INCREMENTAL run: the rows satisfying "where" (over the stream's
 * columns, with text parameters $1..$nargs; NULL for all rows), in
 * (replication key, primary key) order, at most "limit" (0: no limit).
 * Every STATE carries the position of the batch's last row; afterwards
 * "bookmark" holds the last one sent (NULL when no row was sent), in the
 * caller's memory context.  No ACTIVATE_VERSION: the version stays.
 */
typedef struct EgressIncrementalSpec
{
	const char *key;			/* replication key column */
	List	   *pk;				/* primary-key column names (char *) */
	const char *where;
	bool		nulls_first;	/* rows with a NULL key first */
	int			nargs;
	const char **args;
	int64		limit;
	int64		run_id;			/* the run's start, epoch ms: batch ids are
								 * <stream>-<version>-<run_id>-<NNNNNN>, so
								 * an id never names other rows in a later
								 * run */
	int64		rows_before;	/* the stream's totals before the run */
	int64		bytes_before;
	int64		batches_before;
	char	   *bookmark;		/* out */
} EgressIncrementalSpec;

extern void egress_snapshot_write_incremental(EgressStreamDef *def, EgressSink *sink,
											  EgressWorkerSlot *slot, int64 version,
											  EgressIncrementalSpec *inc,
											  EgressSnapshotResult *result);

/* ERROR unless the relation exists and the stream's owner may read it. */
extern void egress_check_relation_access(EgressStreamDef *def);

/*
 * May the stream's owner read every column the stream reads (all of them,
 * or those of option "columns")?  For owners without SELECT on the table.
 */
extern bool egress_columns_readable(EgressStreamDef *def);

/* Session settings the type map and wal2json output rely on. */
extern void egress_pin_output_settings(void);

/* Batch sizes of a stream: its options, its destination's, else the GUCs. */
extern int64 egress_stream_batch_rows(EgressStreamDef *def);
extern int64 egress_stream_batch_bytes(EgressStreamDef *def);
/* Batch age limit: the destination's flush_interval, else the GUC. */
extern int	egress_dest_flush_interval_ms(Jsonb *dest_options);

/*
 * One chunk of a LOG_BASED stream's chunked backfill (cdc_backfill.c):
 * inside a transaction whose snapshot is the one to read, read as the
 * stream's owner (columns, filter, privileges and row level security as
 * for egress_snapshot_write) either the rows whose key (keycols, in key
 * order) follows "after" (NULL: from the start), in key order, at most
 * max_rows and stopping once max_bytes were rendered; or, with nkey 0, the
 * rows in blocks [blk_from, blk_to) (a table without a key).  Each row is
 * rendered as the initial sync renders it (a Singer RECORD line, or a
 * pg_kinesis record) and handed to "row" with the text of its key (see
 * egress_chunk_key_text) and, for Kinesis, its partition key (else NULL).
 */
typedef void (*EgressChunkRowCallback) (void *arg, const char *key, int keylen,
										const char *data, int len,
										const char *partition_key);

typedef struct EgressChunkSpec
{
	int			nkey;
	char	  **keycols;
	char	  **after;			/* nkey texts, or NULL */
	BlockNumber blk_from;
	BlockNumber blk_to;
	int64		max_rows;
	int64		max_bytes;
	int64		version;
	XLogRecPtr	lsn;			/* pg_kinesis records' lsn */
	EgressChunkRowCallback row;
	void	   *arg;

	/*
	 * Optional: the buffer the next row is rendered into (appended), or
	 * NULL for the reader's own; "row" then gets a pointer into it, so a
	 * caller that keeps rows in that buffer keeps them without a copy.  A
	 * row the renderer leaves out is truncated away again.
	 */
	StringInfo	(*row_target) (void *arg);

	/*
	 * The caller takes keys as Datums: for keys of integer types (or oid),
	 * "row" then gets the key's nkey Datums (by value) as its key bytes, and
	 * keyout says how to make their text (egress_chunk_key_from_datums).
	 */
	bool		key_datums;
	/* out */
	Oid		   *keyout;			/* set when keys come as Datums (caller's cxt) */
	int64		rows;
	int64		bytes;
	bool		end;			/* no row follows the last one read */
	char	  **last;			/* key texts of the last row (caller's cxt) */
} EgressChunkSpec;

extern void egress_snapshot_read_chunk(EgressStreamDef *def, EgressSink *sink,
									   EgressChunkSpec *spec);

/* A key's text: each value as <length>:<text>, in key order. */
extern void egress_chunk_key_append(StringInfo buf, const char *value);
extern void egress_chunk_key_from_datums(StringInfo buf, const Oid *keyout, int nkey,
										 const Datum *values);

/* egress_next_version: catalog/catalog.h */

#endif							/* EGRESS_SNAPSHOT_H */
