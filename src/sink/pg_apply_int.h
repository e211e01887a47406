/*-------------------------------------------------------------------------
 * pg_apply_int.h
 *	  postgres destinations: what pg_apply.c (parsing a batch, applying it)
 *	  and pg_apply_early.c (loading it while it is written) share.  Not for
 *	  other files: sink/pg_apply.h is the sink's interface.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_PG_APPLY_INT_H
#define EGRESS_PG_APPLY_INT_H

#include "common/jsonapi.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"

#include "encode/singer.h"
#include "sink/pg_apply.h"
#include "sink/pg_typemap.h"

/* never escapes the sink: a failure that commit_attempt turns into false */
#define PGA_ERRCODE_RETRY	MAKE_SQLSTATE('P','E','0','9','9')

#define STAGE		"_pg_egress_stage"
#define STATE_TABLE	"_pg_egress_state"
/* a delete record: only they carry a _sdc_deleted_at */
#define DEL_PRED	"_sdc_deleted_at IS NOT NULL"

/* ---------------------------------------------------------------------
 * Data
 * ---------------------------------------------------------------------
 */

/* One SCHEMA of a stream, parsed (sink context: reused while unchanged). */
typedef struct ApplySchema
{
	char	   *identity;		/* schema and key_properties text */
	int			ncols;
	EgressPgColumn *cols;		/* properties, then added metadata columns */
	int			nkeys;
	int		   *keys;			/* column index of each key property */
	int			deleted_at;		/* index of _sdc_deleted_at, -1: none */
	int			extracted_at;	/* metadata columns filled by pg_egress, -1: none */
	int			batched_at;
	char	   *missing_key;	/* a key property that is not a property */
} ApplySchema;

typedef enum SegKind
{
	SEG_ROWS,
	SEG_ACTIVATE
} SegKind;

/* Rows of one schema and version, or one ACTIVATE_VERSION (batch context). */
typedef struct Segment
{
	SegKind		kind;
	ApplySchema *schema;
	int64		version;		/* the rows' or the ACTIVATE_VERSION's; 0: none */
	char	   *position;		/* the greatest one carried, NULL: none */
	bool		deletes;		/* rows: some are deletes */
	int64		nrows;
	StringInfoData copy;		/* rows: COPY text */
} Segment;

/* What a stream's row of _pg_egress_state says (read in each transaction). */
typedef struct StreamState
{
	bool		found;
	char	   *position;
	char	   *batch_id;
	int64		loading;		/* 0: none */
	int64		active;			/* 0: none */
	bool		shadow;			/* the loading version has a shadow table */
	bool		versions_changed;
} StreamState;

typedef struct ApplyStream ApplyStream;

/* A stream's part of the current batch (batch context). */
typedef struct BatchStream
{
	ApplyStream *st;
	List	   *segments;
	char	   *bookmark;		/* from the STATE message, NULL: none */
	char	   *error;			/* a rejection found while parsing */
	StreamState state;			/* per attempt */
	char	   *new_position;	/* per attempt */
} BatchStream;

/* A stream, for the sink's life. */
struct ApplyStream
{
	char	   *id;				/* Singer stream id */
	char	   *target_schema;
	char	   *table;
	char	   *qtable;			/* quoted, qualified */
	char	   *dest;			/* state.destination: "schema"."table" */
	int			conn;
	ApplySchema *schema;		/* the last SCHEMA */
	/* what the target table was last seen (committed) to match */
	ApplySchema *verified;
	char	  **coltypes;		/* target types of verified's columns */
	int			ncoltypes;
	bool		has_deleted_at; /* the target table has _sdc_deleted_at */
	/* during an attempt, before its commit */
	ApplySchema *pending;
	char	  **pending_types;
	BatchStream *bs;			/* in the current batch, or NULL */
	/*
	 * The last early load found no version loading (an INCREMENTAL run,
	 * CDC): tried again only in a batch where something precedes the rows
	 * (an ACTIVATE_VERSION).
	 */
	bool		early_hopeless;
	/*
	 * Batches of changes left before the next one streams its rows straight
	 * into the table: after one whose keys the table had (updates), a few
	 * go through chunks (see "Early load of changes").
	 */
	int			stream_skip;
	bool		ambiguous;		/* more than one '-' in id (stream_get) */
};

typedef struct ApplySink ApplySink;
typedef struct ApplyConn ApplyConn;

struct ApplyConn
{
	PGconn	   *conn;
	bool		state_ok;		/* _pg_egress_state exists (this session saw it) */
	bool		pending;		/* a query sent, its results not read yet */
	bool		pending_direct; /* ... a direct COPY (a unique violation: staging) */
	BatchStream *pending_bs;	/* ... of this stream, for messages */
};

/* the transaction of one attempt on one connection */
typedef struct ApplyTxn
{
	ApplySink  *a;
	ApplyConn  *c;
	const char *batch_id;
	BatchStream *bs;			/* the stream being applied, for messages */
} ApplyTxn;

typedef enum EarlyState
{
	EARLY_NONE,					/* not tried for this batch */
	EARLY_COPYING,
	EARLY_OFF					/* given up, or done */
} EarlyState;

/* where the connection of an early load of changes in chunks is */
typedef enum EarlyPhase
{
	EP_STREAM,					/* in the first chunk's direct COPY, open-ended */
	EP_READY,					/* nothing under way: a chunk may go */
	EP_COPY_WAIT,				/* a chunk's COPY sent, waiting to take data */
	EP_COPY_END,				/* its data sent, its result not read yet */
	EP_MERGING					/* its merge from the staging table under way */
} EarlyPhase;

struct ApplySink
{
	EgressSink *sink;
	EgressPgTarget *target;
	MemoryContext cxt;			/* sink's life */
	MemoryContext batch_cxt;	/* reset after each batch */
	MemoryContext attempt_cxt;	/* reset at each attempt */
	MemoryContext line_cxt;		/* reset after each line */
	JsonLexContext *lex;		/* the RECORD lexer (fast_record) */
	StringInfo	strval;			/* ... its de-escaped strings */
	char	   *source;			/* <system identifier>/<database> */
	char	   *state_schema;
	char	   *qstate;			/* quoted, qualified _pg_egress_state */
	int			nconns;
	ApplyConn  *conns;
	List	   *streams;		/* of ApplyStream * */
	ApplyStream *last_stream;	/* lookup cache */
	/* the batch */
	List	   *batch_streams;	/* of BatchStream *, first appearance order */
	StringInfoData carry;		/* an incomplete line */
	StringInfoData spare;		/* a COPY text buffer for the next segment */
	bool		no_direct;		/* this batch loads through staging only */
	/* early load (see there) */
	char	   *announced;		/* the batch's id, when the writer says it */
	int			early;			/* EARLY_* */
	ApplyTxn	early_txn;
	BatchStream *early_bs;
	Segment    *early_seg;
	int			early_index;	/* of early_seg among its stream's segments */
	int			early_sent;		/* bytes of its COPY text the target has */
	bool		early_staged;	/* changes: the COPY fills a staging table */
	/* changes, applied in chunks (see "Early load of changes") */
	bool		early_chunked;
	int			early_phase;	/* EP_* */
	int			polled_at;		/* seg->copy.len at the last look at the target */
	bool		insert_ok;		/* a unique index on the key: direct chunks */
	bool		insert_failed;	/* a direct chunk met a key: none in this batch */
	bool		stage_made;		/* the staging table exists in the transaction */
	bool		savepoint_open; /* the last direct chunk's */
	StringInfoData stream_buf;	/* EP_STREAM: rows for the COPY, not sent yet */
	/* the rows from chunk_start on: the next chunk */
	int			chunk_start;
	bool		chunk_deletes;
	char		chunk_min[EGRESS_POSITION_LEN + 1];
	/* the chunk under way */
	int			sent_from;
	int			sent_to;
	bool		sent_direct;
	bool		sent_refused;	/* its direct COPY met a key */
	bool		sent_deletes;
	char		sent_min[EGRESS_POSITION_LEN + 1];
	/*
	 * The last batch of changes had several streams (an early load of one
	 * would be given up, its session closed): not tried until a batch of
	 * one stream comes again.
	 */
	bool		early_multi;
	bool		direct_conflict;	/* a direct COPY met a key it had */
	bool		stale_catalog;	/* a table or column checked before is gone */
	bool		catalog_retried;	/* ... and the batch was tried again for it */
	char	   *batched_at;		/* _sdc_batched_at of the batch */
	bool		open;
	/*
	 * commit_batch_start: the commit may end with its COMMIT sent
	 * (want_async), and one is: its result not read yet (commit_collect)
	 */
	bool		want_async;
	bool		commit_inflight;
	ApplyConn  *commit_conn;
	ApplyStream *commit_st;
	char	   *commit_batch;	/* its batch id (sink context) */
	char	  **commit_types;	/* commit_st's pending_types, copied (sink context) */
	int			commit_ntypes;
	/* its results so far (commit_collect may read them over several calls) */
	bool		commit_ok;		/* COMMIT answered COMMIT */
	char	   *commit_error;	/* not acknowledged: why (sink context) */
	bool		commit_refused; /* ... the target refused it, for good */
	bool		commit_answered;	/* ... the target answered (rolled back) */
	uint32		commit_polls;
};

/* pg_apply.c: target statements (one connection's transaction) */
extern void pga_close_conn(ApplyConn *c);
extern PGresult *pga_conn_result(PGconn *conn);
extern bool pga_conn_flush(PGconn *conn);
extern PGresult *pga_txn_check(ApplyTxn *t, PGresult *res, char *error);
extern void pga_txn_broken(ApplyTxn *t);
extern void pga_txn_collect(ApplyTxn *t);
extern void pga_txn_send(ApplyTxn *t, const char *sql, const StringInfo copy, bool direct);
extern void pga_txn_run(ApplyTxn *t, const char *sql);
extern bool pga_query_bool(ApplyTxn *t, const char *sql);
extern void pga_txn_begin(ApplyTxn *t, List *streams);
extern void pga_txn_commit(ApplyTxn *t, List *streams);
extern void pga_stream_committed(ApplySink *a, ApplyStream *st);
extern void pga_forget_pending(ApplySink *a);

/* pg_apply.c: applying a stream's segments */
extern void pga_ensure_table(ApplyTxn *t, ApplyStream *st, const ApplySchema *s);
extern void pga_append_columns(StringInfo sql, const ApplySchema *s);
extern void pga_append_stage(StringInfo sql, BatchStream *bs, const Segment *seg);
extern void pga_append_stage_apply(StringInfo sql, ApplyTxn *t, BatchStream *bs,
								   const Segment *seg, const char *dest);
extern void pga_append_stage_merge(StringInfo sql, ApplyTxn *t, BatchStream *bs,
								   const Segment *seg, const char *dest);
extern bool pga_position_applied(const StreamState *ss, const char *position);
extern bool pga_stream_applied(ApplyTxn *t, BatchStream *bs);
extern void pga_apply_segments(ApplyTxn *t, BatchStream *bs, int from, int upto);
extern void pga_apply_stream(ApplyTxn *t, BatchStream *bs, int from);

/* pg_apply_early.c */
extern void pga_early_row(ApplySink *a, BatchStream *bs, Segment *seg, int row_start,
						  bool del, const char *position);
extern bool pga_early_finish(ApplySink *a, const char *batch_id);
extern void pga_commit_check(ApplySink *a);
extern void pga_commit_forget(ApplySink *a);

#endif							/* EGRESS_PG_APPLY_INT_H */
