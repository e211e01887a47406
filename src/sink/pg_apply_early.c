/*-------------------------------------------------------------------------
 * pg_apply_early.c
 *	  postgres destinations: loading a batch while it is written (early
 *	  load), and the COMMIT of a batch of changes acknowledged while the
 *	  next one is decoded (commit_batch_start).  See pg_apply.c for the
 *	  usual path, which anything unusual here falls back to.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "sink/pg_apply_int.h"

/* ---------------------------------------------------------------------
 * Early load: a batch goes to the target while it is written
 *
 * A sync's batch (one stream, its id announced) whose rows take the direct
 * path starts its target transaction at its first row and sends the COPY
 * text as it grows, so that the target loads while the source reads and
 * renders (the two ran one after the other: the load was half the time).
 * commit ends the COPY and finishes the transaction.
 *
 * A batch of changes (one stream, positioned rows; its id is known only at
 * commit) starts its transaction the same way and reads the state row
 * first, so that rows at or before the stored position are never applied
 * again, and the batch id is checked at commit (already applied: given
 * up, the usual path then skips the batch).  Its rows go in chunks (see
 * "Early load of changes in chunks"), and its COMMIT may be acknowledged
 * while the next batch is decoded (pga_commit_batch_start).  A batch of
 * changes of a stream without a key stages all its rows and merges them
 * at commit.
 *
 * Anything unusual (not the direct path, a failure) gives up quietly: the
 * rows stay in the segment, and commit applies the batch the usual way.
 * ---------------------------------------------------------------------
 */

#define EARLY_CHUNK		(256 * 1024)

static void
early_give_up(ApplySink *a)
{
	pga_close_conn(a->early_txn.c);
	pga_forget_pending(a);
	a->early = EARLY_OFF;
}

/* "COPY <the stream's table> (<columns>) FROM STDIN" */
static void
append_table_copy(StringInfo sql, BatchStream *bs, const Segment *seg)
{
	appendStringInfo(sql, "COPY %s (", bs->st->qtable);
	pga_append_columns(sql, seg->schema);
	appendStringInfoString(sql, ") FROM STDIN");
}

/*
 * Sends sql, which ends in a COPY FROM STDIN, and waits until the target
 * takes the COPY's data (the results before it must be COMMAND_OK).
 */
static void
begin_copy(ApplyTxn *t, const char *sql)
{
	PGresult   *res;

	if (t->c->pending)
		pga_txn_collect(t);
	if (!PQsendQuery(t->c->conn, sql) || !pga_conn_flush(t->c->conn))
		ereport(ERROR, (errcode(PGA_ERRCODE_RETRY), errmsg("could not send COPY")));
	while ((res = pga_conn_result(t->c->conn)) != NULL &&
		   PQresultStatus(res) == PGRES_COMMAND_OK)
		PQclear(res);
	if (res && PQresultStatus(res) == PGRES_COPY_IN)
	{
		PQclear(res);
		return;
	}
	PQclear(pga_txn_check(t, res, pstrdup("no COPY")));
	ereport(ERROR, (errcode(PGA_ERRCODE_RETRY), errmsg("no COPY")));
}

/*
 * COPY data, all of it handed to libpq (flushing when its buffer is full),
 * then, with end, the COPY's end.  libpq's result: 1 done, -1 failed.
 */
static int
put_copy(PGconn *conn, const char *data, int len, bool end)
{
	int			r = 1;

	while (len > 0 && (r = PQputCopyData(conn, data, len)) == 0)
		if (!pga_conn_flush(conn))
			return -1;
	while (end && r == 1 && (r = PQputCopyEnd(conn, NULL)) == 0)
		if (!pga_conn_flush(conn))
			return -1;
	return r;
}

/*
 * Early load of changes in chunks.  The rows of a batch of changes (one
 * stream, keys) go to the target in chunks: the first one streams (see
 * stream_begin); after it, whenever the target is done with a chunk, what
 * was written since becomes the next (looked at every EARLY_CHUNK bytes),
 * so that the target applies a chunk while the source decodes the next,
 * and at commit only the last one is left.  A chunk is applied like a
 * segment (the staging table, rows at or before the stored position
 * dropped, MERGE) unless it can go straight into the table (direct): no
 * deletes, all its positions after the stored one, and a unique index on
 * the key (key_unique).  A direct chunk is COPYed into the table under a
 * savepoint, as native replication inserts, without staging, sort nor
 * join; when the index refuses a row (a key the table has, or a key twice
 * in the chunk) the savepoint is rolled back, the chunk is merged from the
 * staging table, and so are the batch's later chunks.  Chunks are applied
 * in order in the one transaction: the result is the batch's merge.
 * Nothing here waits for the target but the COPY of a chunk; early_poll
 * reads what it answered as it comes.  Any failure gives up
 * (early_give_up): commit then applies the batch the usual way and
 * reports the error if it comes again.
 */
#define SAVEPOINT		"pg_egress_chunk"
/* batches that go in chunks after a streamed one met a key (stream_begin) */
#define STREAM_SKIP		8

/* the next chunk starts at from: no rows of it seen yet */
static void
chunk_restart(ApplySink *a, int from)
{
	a->chunk_start = from;
	a->chunk_deletes = false;
	a->chunk_min[0] = '\0';
}

static void
chunk_query(ApplySink *a, const char *sql, EarlyPhase next)
{
	if (!PQsendQuery(a->early_txn.c->conn, sql))
		early_give_up(a);
	a->early_phase = next;
}

/* the query that begins the chunk's COPY (fallback: after its direct try) */
static void
chunk_copy(ApplySink *a, bool fallback)
{
	BatchStream *bs = a->early_bs;
	StringInfoData sql;

	initStringInfo(&sql);
	if (fallback)
		appendStringInfoString(&sql, "ROLLBACK TO SAVEPOINT " SAVEPOINT ";\n");
	if (a->savepoint_open)
		appendStringInfoString(&sql, "RELEASE SAVEPOINT " SAVEPOINT ";\n");
	a->savepoint_open = false;
	if (a->sent_direct)
	{
		appendStringInfoString(&sql, "SAVEPOINT " SAVEPOINT ";\n");
		append_table_copy(&sql, bs, a->early_seg);
		a->savepoint_open = true;
	}
	else if (!a->stage_made)
	{
		pga_append_stage(&sql, bs, a->early_seg);
		a->stage_made = true;
	}
	else
		appendStringInfoString(&sql, "TRUNCATE " STAGE ";\nCOPY " STAGE " FROM STDIN;");
	chunk_query(a, sql.data, EP_COPY_WAIT);
	pfree(sql.data);
}

/*
 * The rows from chunk_start on become the chunk under way (the target is
 * ready).  The rows of one transaction's changes stay in order across
 * chunks: positions grow.
 */
static void
chunk_take(ApplySink *a)
{
	BatchStream *bs = a->early_bs;
	const char *stored = bs->state.position;

	a->sent_from = a->chunk_start;
	a->sent_to = a->early_seg->copy.len;
	a->sent_deletes = a->chunk_deletes;
	strcpy(a->sent_min, a->chunk_min);
	chunk_restart(a, a->sent_to);
	a->sent_refused = false;
	a->sent_direct = a->insert_ok && !a->insert_failed && !a->sent_deletes &&
		a->sent_min[0] != '\0' && (stored == NULL || strcmp(a->sent_min, stored) > 0);
	chunk_copy(a, false);
}

/*
 * COPY lines [p, end) of a segment with positions, without their position
 * (the last field, "\t<position>\n" ends each line: on_record), appended to
 * buf.  false when a line is not so.
 */
static bool
strip_positions(StringInfo buf, const char *p, const char *end)
{
	while (p < end)
	{
		const char *nl = memchr(p, '\n', end - p);

		if (nl == NULL || nl - p < EGRESS_POSITION_LEN + 1 ||
			nl[-(EGRESS_POSITION_LEN + 1)] != '\t')
			return false;
		appendBinaryStringInfo(buf, p, nl - p - (EGRESS_POSITION_LEN + 1));
		appendStringInfoChar(buf, '\n');
		p = nl + 1;
	}
	return true;
}

/*
 * The target takes the chunk's COPY data: all of it (a direct chunk's rows
 * without their position, the last field of each line), and the end.
 */
static void
chunk_put(ApplySink *a)
{
	PGconn	   *conn = a->early_txn.c->conn;
	const char *p = a->early_seg->copy.data + a->sent_from;
	const char *end = a->early_seg->copy.data + a->sent_to;
	StringInfoData buf;
	const char *data = p;
	int			len = end - p;
	int			r;

	if (a->sent_direct)
	{
		initStringInfo(&buf);
		enlargeStringInfo(&buf, len);
		if (!strip_positions(&buf, p, end))
		{
			pfree(buf.data);
			early_give_up(a);
			return;
		}
		data = buf.data;
		len = buf.len;
	}
	r = put_copy(conn, data, len, true);
	if (a->sent_direct)
		pfree(buf.data);
	if (r != 1)
	{
		early_give_up(a);
		return;
	}
	a->early_phase = EP_COPY_END;
}

/* the chunk in the staging table: applied as a segment of its rows is */
static void
chunk_merge(ApplySink *a)
{
	ApplyTxn   *t = &a->early_txn;
	BatchStream *bs = a->early_bs;
	Segment		chunk = *a->early_seg;
	StringInfoData sql;

	chunk.deletes = a->sent_deletes;
	initStringInfo(&sql);
	t->bs = bs;
	pga_append_stage_apply(&sql, t, bs, &chunk, bs->st->qtable);
	t->bs = NULL;
	chunk_query(a, sql.data, EP_MERGING);
	pfree(sql.data);
}

/*
 * Reads what the target answered about the chunk under way and sends what
 * comes next, until it is done (true: EP_READY).  Without wait, only what
 * has arrived: false while it is not done.  false also when it gave up.
 */
static bool
early_poll(ApplySink *a, bool wait)
{
	PGconn	   *conn = a->early_txn.c->conn;

	if (a->early_phase == EP_STREAM)
		return false;
	while (a->early == EARLY_COPYING && a->early_phase != EP_READY)
	{
		PGresult   *res;
		ExecStatusType status;
		const char *state;

		if (wait ? !pga_conn_flush(conn) : PQflush(conn) < 0)
			break;
		if (wait)
			res = pga_conn_result(conn);
		else if (!PQconsumeInput(conn))
			break;
		else if (PQisBusy(conn))
			return false;
		else
			res = PQgetResult(conn);
		if (res == NULL)
		{
			/* a query ended */
			if (PQstatus(conn) != CONNECTION_OK || a->early_phase == EP_COPY_WAIT)
				break;
			if (a->early_phase == EP_MERGING)
				a->early_phase = EP_READY;
			else if (a->sent_refused)
			{
				/* the direct try met a key: this chunk and the next ones merge */
				a->insert_failed = true;
				a->early_bs->st->stream_skip = STREAM_SKIP;
				a->sent_direct = false;
				a->sent_refused = false;
				chunk_copy(a, true);
			}
			else if (a->sent_direct)
				a->early_phase = EP_READY;
			else
				chunk_merge(a);
			continue;
		}
		status = PQresultStatus(res);
		state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		if (status == PGRES_COPY_IN && a->early_phase == EP_COPY_WAIT)
		{
			PQclear(res);
			chunk_put(a);
			continue;
		}
		if (status == PGRES_COMMAND_OK)
		{
			PQclear(res);
			continue;
		}
		if (a->early_phase == EP_COPY_END && a->sent_direct &&
			state && strcmp(state, "23505") == 0)
		{
			PQclear(res);
			a->sent_refused = true;
			continue;
		}
		PQclear(res);
		break;
	}
	if (a->early == EARLY_COPYING && a->early_phase == EP_READY)
		return true;
	if (a->early == EARLY_COPYING)
		early_give_up(a);
	return false;
}

/*
 * The first chunk of a batch streams (EP_STREAM): it is COPYed into the
 * table as its rows come, as a sync's rows are, until a row that cannot go
 * that way (a delete, a position at or before the stored one), or the
 * batch's end.  The target then keeps up with the source, and at commit
 * little is left for it to do.  Should the table have a key of the chunk
 * (the COPY fails), the chunk is merged as any refused direct chunk, and
 * the stream's next STREAM_SKIP batches go in chunks (a table with
 * updates).
 */
static void
stream_begin(ApplySink *a, int upto)
{
	StringInfoData sql;

	initStringInfo(&sql);
	appendStringInfoString(&sql, "SAVEPOINT " SAVEPOINT ";\n");
	append_table_copy(&sql, a->early_bs, a->early_seg);
	begin_copy(&a->early_txn, sql.data);
	pfree(sql.data);
	a->savepoint_open = true;
	a->sent_direct = true;
	a->sent_refused = false;
	a->sent_deletes = false;
	a->sent_min[0] = '\0';
	a->sent_from = 0;
	initStringInfo(&a->stream_buf);
	a->early_phase = EP_STREAM;
	/* the rows before upto are the stream's first */
	if (upto > 0)
	{
		strcpy(a->sent_min, a->chunk_min);
		chunk_restart(a, 0);
		if (!strip_positions(&a->stream_buf, a->early_seg->copy.data,
							 a->early_seg->copy.data + upto))
			ereport(ERROR, (errcode(PGA_ERRCODE_RETRY), errmsg("unexpected COPY text")));
	}
}

/*
 * The streamed chunk ends with the rows before upto (copy_end: the COPY is
 * to be ended; else it is over already: the target refused it).
 */
static void
stream_end(ApplySink *a, int upto, bool copy_end)
{
	PGconn	   *conn = a->early_txn.c->conn;
	int			r = 1;

	if (copy_end)
		r = put_copy(conn, a->stream_buf.data, a->stream_buf.len, true);
	pfree(a->stream_buf.data);
	a->stream_buf.data = NULL;
	a->sent_to = upto;
	chunk_restart(a, upto);
	a->early_phase = EP_COPY_END;
	/* a failed put: the COPY's result says why */
	if (r < 0 && PQstatus(conn) != CONNECTION_OK)
	{
		early_give_up(a);
		return;
	}
	(void) early_poll(a, false);
}

/* a row for the streamed chunk (row: its COPY line, with its position) */
static void
stream_row(ApplySink *a, const char *row, int len, const char *position)
{
	PGconn	   *conn = a->early_txn.c->conn;
	int			r;

	if (!strip_positions(&a->stream_buf, row, row + len))
	{
		early_give_up(a);
		return;
	}
	if (a->sent_min[0] == '\0')
		strlcpy(a->sent_min, position, sizeof(a->sent_min));
	if (a->stream_buf.len < EARLY_CHUNK)
		return;
	r = put_copy(conn, a->stream_buf.data, a->stream_buf.len, false);
	if (r == 1 && PQflush(conn) >= 0)
	{
		resetStringInfo(&a->stream_buf);
		return;
	}
	/* the target ended the COPY (an error): this row is of the chunk */
	stream_end(a, a->early_seg->copy.len, false);
}

/*
 * Can a chunk go straight into the table: has it a unique index (valid,
 * immediate, without predicate nor expressions) whose columns are key
 * columns?  Then a row whose key the table has is refused (a unique
 * violation) rather than added twice.
 */
static bool
key_unique(ApplyTxn *t, ApplyStream *st, const ApplySchema *s)
{
	StringInfoData sql;

	/* pg_index.indnkeyatts: PostgreSQL 11 (older targets merge every chunk) */
	if (PQserverVersion(t->c->conn) < 110000)
		return false;
	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index i "
					 "WHERE i.indrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(%s) "
					 "AND i.indisunique AND i.indimmediate AND i.indisvalid "
					 "AND i.indpred IS NULL AND i.indexprs IS NULL "
					 "AND i.indnkeyatts OPERATOR(pg_catalog.=) (SELECT pg_catalog.count(*) "
					 "FROM pg_catalog.pg_attribute a WHERE a.attrelid OPERATOR(pg_catalog.=) i.indrelid "
					 "AND a.attnum OPERATOR(pg_catalog.=) ANY "
					 "((i.indkey::pg_catalog.int2[])[0:i.indnkeyatts - 1]) "
					 "AND a.attname OPERATOR(pg_catalog.=) ANY (ARRAY[",
					 quote_literal_cstr(st->qtable));
	for (int k = 0; k < s->nkeys; k++)
		appendStringInfo(&sql, "%s%s", k ? ", " : "",
						 quote_literal_cstr(s->cols[s->keys[k]].name));
	appendStringInfoString(&sql, "]::pg_catalog.name[])))");
	return pga_query_bool(t, sql.data);
}

/*
 * At commit: the last chunk, the staging table dropped, the rest of the
 * stream, COMMIT.  false when given up: commit goes the usual way.
 */
static bool
chunks_finish(ApplySink *a, const char *batch_id)
{
	ApplyTxn   *t = &a->early_txn;
	BatchStream *bs = a->early_bs;
	Segment    *seg = a->early_seg;
	StringInfoData sql;

	if (a->early_phase == EP_STREAM)
		stream_end(a, seg->copy.len, true);
	if (!early_poll(a, true))
		return false;
	if (bs->error || list_length(a->batch_streams) != 1)
	{
		early_give_up(a);
		return false;
	}
	t->batch_id = batch_id;
	/* applied already (a batch sent again): the usual path skips it */
	if (pga_stream_applied(t, bs))
	{
		early_give_up(a);
		return false;
	}
	if (seg->copy.len > a->chunk_start)
	{
		chunk_take(a);
		if (!early_poll(a, true))
			return false;
	}
	a->early = EARLY_OFF;
	t->bs = bs;
	initStringInfo(&sql);
	if (a->savepoint_open)
		appendStringInfoString(&sql, "RELEASE SAVEPOINT " SAVEPOINT ";");
	/* the later segments of the stream may stage their rows */
	if (a->stage_made)
		appendStringInfoString(&sql, "DROP TABLE " STAGE ";");
	if (sql.len > 0)
		pga_txn_run(t, sql.data);
	if (!pga_position_applied(&bs->state, seg->position))
		bs->new_position = seg->position;
	pga_apply_stream(t, bs, a->early_index + 1);
	if (a->want_async)
	{
		/* acknowledged later: commit_collect */
		if (t->c->pending)
			pga_txn_collect(t);
		if (!PQsendQuery(t->c->conn, "COMMIT") || !pga_conn_flush(t->c->conn))
			pga_txn_broken(t);
		a->commit_inflight = true;
		a->commit_conn = t->c;
		a->commit_st = bs->st;
		if (a->commit_batch)
			pfree(a->commit_batch);
		a->commit_batch = MemoryContextStrdup(a->cxt, batch_id);
		a->commit_ok = a->commit_refused = a->commit_answered = false;
		a->commit_error = NULL;
		/* the batch's memory goes before the COMMIT's answer comes */
		if (bs->st->pending)
		{
			int			n = bs->st->pending->ncols;

			a->commit_ntypes = n;
			a->commit_types = MemoryContextAlloc(a->cxt, sizeof(char *) * n);
			for (int c = 0; c < n; c++)
				a->commit_types[c] = MemoryContextStrdup(a->cxt, bs->st->pending_types[c]);
			bs->st->pending_types = a->commit_types;
		}
		return true;
	}
	pga_txn_commit(t, list_make1(bs));
	return true;
}

/* the copy of the pending column types of a COMMIT left under way */
static void
free_commit_types(ApplySink *a)
{
	if (a->commit_types == NULL)
		return;
	for (int c = 0; c < a->commit_ntypes; c++)
		pfree(a->commit_types[c]);
	pfree(a->commit_types);
	a->commit_types = NULL;
}

/*
 * The result of the COMMIT that commit_batch_start left under way (done:
 * true; without wait, false while it has not come: what came so far is
 * kept in the sink).  Not acknowledged (an error, the connection lost: its
 * outcome unknown) sets commit_error, for commit_check to raise.  Raises
 * nothing but interrupts.
 */
static bool
commit_collect(ApplySink *a, bool wait)
{
	PGconn	   *conn = a->commit_conn ? a->commit_conn->conn : NULL;

	if (!a->commit_inflight)
		return true;
	while (conn != NULL)
	{
		PGresult   *res;

		if (wait)
			res = pga_conn_result(conn);
		else if (!PQconsumeInput(conn))
			res = NULL;
		else if (PQisBusy(conn))
			return false;
		else
			res = PQgetResult(conn);
		if (res == NULL)
			break;
		/* a failed transaction's COMMIT answers ROLLBACK */
		if (PQresultStatus(res) == PGRES_COMMAND_OK &&
			strcmp(PQcmdStatus(res), "COMMIT") == 0)
			a->commit_ok = true;
		else if (a->commit_error == NULL)
		{
			a->commit_answered = true;
			a->commit_refused = PQresultStatus(res) == PGRES_FATAL_ERROR &&
				!egress_pgconn_retryable(res);
			a->commit_error = MemoryContextStrdup(a->cxt,
												  egress_pg_sanitize(egress_pgconn_error(conn, res)));
		}
		PQclear(res);
	}
	if ((conn == NULL || PQstatus(conn) != CONNECTION_OK) && a->commit_error == NULL)
		a->commit_error = MemoryContextStrdup(a->cxt,
											  egress_pg_sanitize(conn ? pstrdup(PQerrorMessage(conn)) :
																 pstrdup("connection closed")));
	if (a->commit_error == NULL && !a->commit_ok)
		a->commit_error = MemoryContextStrdup(a->cxt, "no answer to COMMIT");
	a->commit_inflight = false;
	if (a->commit_error == NULL)
	{
		a->commit_conn->state_ok = true;
		pga_stream_committed(a, a->commit_st);
	}
	else
	{
		pga_close_conn(a->commit_conn);
		pga_forget_pending(a);
	}
	free_commit_types(a);
	return true;
}

/*
 * A COMMIT left under way is given up (its connection closed by the
 * caller): its outcome unknown, the tables are checked again (the stream's
 * pending schema points to commit_types, freed here).
 */
void
pga_commit_forget(ApplySink *a)
{
	if (a->commit_inflight || a->commit_types)
		pga_forget_pending(a);
	if (a->commit_error)
		pfree(a->commit_error);
	free_commit_types(a);
	a->commit_inflight = false;
	a->commit_error = NULL;
}

/*
 * A COMMIT left under way that was not acknowledged: the ERROR.  Refused
 * by the target for good (a deferred constraint...): EGRESS_ERRCODE_REJECTED,
 * as a COMMIT waited for is; else ERRCODE_CONNECTION_FAILURE: the caller
 * sends the batch again (the state row says whether it was applied).
 */
void
pga_commit_check(ApplySink *a)
{
	char	   *error;

	(void) commit_collect(a, true);
	if (a->commit_error == NULL)
		return;
	error = pstrdup(a->commit_error);
	pfree(a->commit_error);
	a->commit_error = NULL;
	if (a->commit_refused)
		ereport(ERROR,
				(errcode(EGRESS_ERRCODE_REJECTED),
				 errmsg("PostgreSQL destination %s refused batch %s: %s",
						a->sink->location, a->commit_batch, error),
				 errdetail("The target server's error: %s", error),
				 errhint("Retrying cannot help: change the target or the stream, then resume the stream.")));
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("PostgreSQL destination %s did not acknowledge batch %s: %s",
					a->sink->location, a->commit_batch, error),
			 a->commit_answered ?
			 errdetail("The target rolled the batch back: it is sent again.") :
			 errdetail("The outcome of its COMMIT is unknown: the batch is sent again, and applied unless it was.")));
}

/*
 * Sends what the segment has that the target does not; false: gave up.
 * While the batch is written (wait false) it hands libpq what the socket
 * takes now and goes on, so that the source never waits for the target
 * there (libpq keeps the rest); at commit (wait true), all of it.
 */
static bool
early_send(ApplySink *a, bool wait)
{
	PGconn	   *conn = a->early_txn.c->conn;
	Segment    *seg = a->early_seg;
	int			r;

	if (conn == NULL)
		return false;
	while (seg->copy.len > a->early_sent)
	{
		r = PQputCopyData(conn, seg->copy.data + a->early_sent, seg->copy.len - a->early_sent);
		if (r == 1)
			a->early_sent = seg->copy.len;
		else if (r < 0 || !pga_conn_flush(conn))
		{
			early_give_up(a);
			return false;
		}
	}
	if (wait ? !pga_conn_flush(conn) : PQflush(conn) < 0)
	{
		early_give_up(a);
		return false;
	}
	return true;
}

static bool
direct_eligible(ApplySink *a, BatchStream *bs, const Segment *seg)
{
	StreamState *ss = &bs->state;

	return !a->no_direct && seg->position == NULL && !seg->deletes &&
		ss->loading != 0 && seg->version == ss->loading && !ss->shadow;
}

/*
 * A change segment can load early: positioned rows not of a version
 * loading (those go the ways apply_rows picks at commit).
 */
static bool
staged_eligible(BatchStream *bs, const Segment *seg)
{
	StreamState *ss = &bs->state;

	return seg->position != NULL &&
		!(ss->loading != 0 && seg->version == ss->loading);
}

/*
 * COPY into the table (staged: CREATE the staging table and COPY into
 * it), up to the point where the target takes data
 */
static void
early_copy_begin(ApplyTxn *t, BatchStream *bs, Segment *seg, bool staged)
{
	StringInfoData sql;

	initStringInfo(&sql);
	if (staged)
		pga_append_stage(&sql, bs, seg);
	else
		append_table_copy(&sql, bs, seg);
	begin_copy(t, sql.data);
	pfree(sql.data);
}

/* the position of the first row of a segment with positions (on_record) */
static bool
first_position(const Segment *seg, char *out)
{
	const char *nl = memchr(seg->copy.data, '\n', seg->copy.len);

	if (nl == NULL || nl - seg->copy.data < EGRESS_POSITION_LEN + 1 ||
		nl[-(EGRESS_POSITION_LEN + 1)] != '\t')
		return false;
	memcpy(out, nl - EGRESS_POSITION_LEN, EGRESS_POSITION_LEN);
	out[EGRESS_POSITION_LEN] = '\0';
	return true;
}

/*
 * The early load begins at a row of seg (row_start: where it starts in its
 * COPY text); the rows before it are seg's first ones, when it waited for
 * the last batch's COMMIT.
 */
static void
early_start(ApplySink *a, BatchStream *bs, Segment *seg, int row_start)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(a->batch_cxt);
	ApplyTxn   *t = &a->early_txn;
	int			idx = list_length(bs->segments) - 1;

	a->early = EARLY_OFF;		/* unless it gets going */
	t->a = a;
	t->c = &a->conns[bs->st->conn];
	/* a batch of changes: its id is known at commit (checked there) */
	t->batch_id = a->announced ? a->announced : "";
	t->bs = NULL;
	PG_TRY();
	{
		pga_txn_begin(t, list_make1(bs));
		if (!a->announced || !pga_stream_applied(t, bs))
		{
			bool		staged = false;

			pga_apply_segments(t, bs, 0, idx);
			pga_ensure_table(t, bs->st, seg->schema);
			if (a->announced ? direct_eligible(a, bs, seg) :
				(staged = staged_eligible(bs, seg)))
			{
				a->early_chunked = staged && seg->schema->nkeys > 0;
				a->insert_ok = a->early_chunked && key_unique(t, bs->st, seg->schema);
				if (!a->early_chunked)
					early_copy_begin(t, bs, seg, staged);
				a->early = EARLY_COPYING;
				a->early_staged = staged;
				a->early_bs = bs;
				a->early_seg = seg;
				a->early_index = idx;
				a->early_sent = 0;
				a->early_phase = EP_READY;
				a->polled_at = 0;
				a->insert_failed = false;
				a->stage_made = false;
				a->savepoint_open = false;
				chunk_restart(a, 0);
				/* rows that came before: of the first chunk */
				if (a->early_chunked && row_start > 0)
				{
					a->chunk_deletes = seg->deletes;
					if (!first_position(seg, a->chunk_min))
						ereport(ERROR, (errcode(PGA_ERRCODE_RETRY), errmsg("unexpected COPY text")));
				}
				if (a->insert_ok && bs->st->stream_skip > 0)
					bs->st->stream_skip--;
				else if (a->insert_ok && !a->chunk_deletes &&
						 (bs->state.position == NULL || a->chunk_min[0] == '\0' ||
						  strcmp(a->chunk_min, bs->state.position) > 0))
					stream_begin(a, row_start);
			}
		}
		if (a->early != EARLY_COPYING)
		{
			/* not the direct path: commit does it all, the session stays */
			bs->st->early_hopeless = bs->state.loading == 0;
			pga_txn_run(t, "ROLLBACK");
			bs->st->pending = NULL;
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(a->batch_cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != PGA_ERRCODE_RETRY &&
			edata->sqlerrcode != EGRESS_ERRCODE_REJECTED)
			PG_RE_THROW();
		/* commit will meet it again, and report it */
		FlushErrorState();
		early_give_up(a);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
}

/*
 * after a row went into seg: start, or send when a chunk is ready (del,
 * position: the row's)
 */
void
pga_early_row(ApplySink *a, BatchStream *bs, Segment *seg, int row_start, bool del,
		  const char *position)
{
	if (a->early == EARLY_NONE)
	{
		/* the last batch's COMMIT under way: the load waits for it */
		if (a->commit_inflight &&
			((++a->commit_polls % 64) != 0 || !commit_collect(a, false)))
			return;
		if (a->commit_error)
			a->early = EARLY_OFF;
		else if (list_length(a->batch_streams) == 1 && bs->error == NULL &&
			(seg->schema->nkeys > 0 || !a->sink->opts.primary_key_required) &&
			(a->announced ?
			 ((!bs->st->early_hopeless || list_length(bs->segments) > 1) &&
			  seg->position == NULL && !seg->deletes) :
			 (seg->position != NULL && !a->early_multi)))
			early_start(a, bs, seg, row_start);
	}
	if (a->early != EARLY_COPYING || seg != a->early_seg)
		return;
	if (!a->early_chunked)
	{
		if (seg->copy.len - a->early_sent >= EARLY_CHUNK)
			(void) early_send(a, false);
		return;
	}
	/* chunks cut positions off COPY lines by their length (strip_positions) */
	if (position == NULL || strlen(position) != EGRESS_POSITION_LEN)
	{
		early_give_up(a);
		return;
	}
	if (a->early_phase == EP_STREAM)
	{
		const char *stored = bs->state.position;

		if (!del && position && (stored == NULL || strcmp(position, stored) > 0))
		{
			stream_row(a, seg->copy.data + row_start, seg->copy.len - row_start, position);
			return;
		}
		/* this row starts the next chunk */
		stream_end(a, row_start, true);
		if (a->early != EARLY_COPYING)
			return;
	}
	a->chunk_deletes |= del;
	if (position && (a->chunk_min[0] == '\0' || strcmp(position, a->chunk_min) < 0))
		strlcpy(a->chunk_min, position, sizeof(a->chunk_min));
	/* a look at the target now and then, a chunk when it is ready */
	if (seg->copy.len - a->polled_at < EARLY_CHUNK)
		return;
	a->polled_at = seg->copy.len;
	if (early_poll(a, false))
		chunk_take(a);
}

/*
 * At commit: the COPY ended, the rest of the stream applied, COMMIT.
 * false when the early load was given up: commit goes the usual way.
 */
bool
pga_early_finish(ApplySink *a, const char *batch_id)
{
	ApplyTxn   *t = &a->early_txn;
	BatchStream *bs = a->early_bs;
	PGresult   *res;
	const char *state;

	if (a->early_chunked)
		return chunks_finish(a, batch_id);
	a->early = EARLY_OFF;		/* a second attempt goes the usual way */
	if ((a->announced && strcmp(batch_id, a->announced) != 0) || bs->error ||
		(!a->early_staged && a->early_seg->deletes) ||
		list_length(a->batch_streams) != 1 || !early_send(a, true))
	{
		if (t->c->conn)
			early_give_up(a);
		return false;
	}
	t->batch_id = batch_id;
	t->bs = bs;
	if (PQputCopyEnd(t->c->conn, NULL) != 1 || !pga_conn_flush(t->c->conn))
		pga_txn_check(t, NULL, pstrdup(PQerrorMessage(t->c->conn)));
	res = pga_conn_result(t->c->conn);
	if (a->early_staged)
	{
		Segment    *seg = a->early_seg;
		StringInfoData sql;

		PQclear(pga_txn_check(t, res, res ? NULL : pstrdup(PQerrorMessage(t->c->conn))));
		while ((res = pga_conn_result(t->c->conn)) != NULL)
			PQclear(res);
		/* applied already (a batch sent again): the usual path skips it */
		if (pga_stream_applied(t, bs))
		{
			early_give_up(a);
			return false;
		}
		initStringInfo(&sql);
		pga_append_stage_merge(&sql, t, bs, seg, bs->st->qtable);
		pga_txn_send(t, sql.data, NULL, false);
		if (!pga_position_applied(&bs->state, seg->position))
			bs->new_position = seg->position;
		pga_apply_stream(t, bs, a->early_index + 1);
		pga_txn_commit(t, list_make1(bs));
		return true;
	}
	state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	if (state && strcmp(state, "23505") == 0)
	{
		PQclear(res);
		pga_close_conn(t->c);
		a->direct_conflict = true;
		ereport(ERROR, (errcode(PGA_ERRCODE_RETRY), errmsg("rows already loaded: loading through staging")));
	}
	PQclear(pga_txn_check(t, res, res ? NULL : pstrdup(PQerrorMessage(t->c->conn))));
	while ((res = pga_conn_result(t->c->conn)) != NULL)
		PQclear(res);
	pga_apply_stream(t, bs, a->early_index + 1);
	pga_txn_commit(t, list_make1(bs));
	return true;
}
