/*-------------------------------------------------------------------------
 * pg_apply.c
 *	  postgres destinations: applying Singer batches to tables of another
 *	  PostgreSQL server (issue 15; the behaviour is docs/postgres_target.md).
 *
 * write() splits the batch into lines and parses each as it comes:
 * RECORDs (the hot path) by PostgreSQL's JSON lexer and a small walk of
 * our own straight into COPY text (the JSON parser's semantic actions when
 * it gives up), SCHEMA and STATE into a small tree.  A stream's messages make segments (rows of one SCHEMA
 * and version, or one ACTIVATE_VERSION), kept in order until commit.
 * Parsing is done once: commit_attempt, which may run several times for
 * one batch, only reads them.
 *
 * commit_attempt applies the batch on each connection (streams are spread
 * over "parallelism" connections, whose transactions run concurrently):
 * read the streams' rows of _pg_egress_state, skip what they say is
 * applied, create or evolve the tables, load each segment (COPY straight
 * into a table a version starts empty, else COPY into a temporary staging
 * table and MERGE), write the state rows, COMMIT.  A batch of one stream
 * may start its transaction and its COPY while it is still written, and a
 * batch of changes may leave its COMMIT to be acknowledged while the next
 * one is decoded: pg_apply_early.c.  Failures worth retrying (connection,
 * serialization, ...) return false; others raise EGRESS_ERRCODE_REJECTED
 * with the target's message.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "commands/dbcommands.h"
#include "common/hashfn.h"
#include "common/jsonapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "sink/pg_apply_int.h"


static void check_target_name(ApplySink *a, ApplyStream *st);
static bool is_key(const ApplySchema *s, int col);

/* ---------------------------------------------------------------------
 * Target statements
 * ---------------------------------------------------------------------
 */

void
pga_close_conn(ApplyConn *c)
{
	if (c->conn)
		egress_pgconn_close(c->conn);
	c->conn = NULL;
	c->state_ok = false;
	c->pending = false;
}

/* waits for the socket (event) or the latch; serves interrupts */
static void
conn_wait(PGconn *conn, int event)
{
	int			rc = WaitLatchOrSocket(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH | event,
									   PQsocket(conn), -1L, PG_WAIT_EXTENSION);

	if (rc & WL_LATCH_SET)
	{
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* the next result of conn, NULL when there is none or the connection broke */
PGresult *
pga_conn_result(PGconn *conn)
{
	for (;;)
	{
		if (!PQconsumeInput(conn))
			return NULL;
		if (!PQisBusy(conn))
			return PQgetResult(conn);
		conn_wait(conn, WL_SOCKET_READABLE);
	}
}

bool
pga_conn_flush(PGconn *conn)
{
	for (;;)
	{
		int			r = PQflush(conn);

		if (r == 0)
			return true;
		if (r < 0)
			return false;
		conn_wait(conn, WL_SOCKET_WRITEABLE);
	}
}

/*
 * A table or column pg_egress saw is gone (dropped or renamed on the
 * target since it was checked): worth one attempt more, with the tables
 * checked again (commit_attempt).  Once per batch: a second time it is the
 * target's error.
 */
static bool
stale_catalog(ApplyTxn *t, const PGresult *res)
{
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

	if (t->a->catalog_retried || state == NULL ||
		(strcmp(state, "42P01") != 0 && strcmp(state, "42703") != 0))
		return false;
	t->a->stale_catalog = true;
	return true;
}

/*
 * Runs sql (several statements, maybe a COPY fed with copy) on the
 * transaction's connection.  A failure worth retrying closes the
 * connection (its transaction goes with it) and raises PGA_ERRCODE_RETRY,
 * which commit_attempt turns into false; any other error closes it too and
 * raises EGRESS_ERRCODE_REJECTED with the target's message.
 */
PGresult *
pga_txn_check(ApplyTxn *t, PGresult *res, char *error)
{
	ExecStatusType status;

	if (res == NULL)
	{
		pga_close_conn(t->c);
		ereport(ERROR, (errcode(PGA_ERRCODE_RETRY), errmsg("%s", error)));
	}
	status = PQresultStatus(res);
	if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK ||
		status == PGRES_EMPTY_QUERY)
		return res;
	error = egress_pgconn_error(t->c->conn, res);
	if (stale_catalog(t, res))
	{
		/* the table changed by hand since it was checked: check it again */
		PQclear(res);
		pga_close_conn(t->c);
		ereport(ERROR, (errcode(PGA_ERRCODE_RETRY), errmsg("%s", error)));
	}
	if (egress_pgconn_retryable(res))
	{
		PQclear(res);
		pga_close_conn(t->c);
		ereport(ERROR, (errcode(PGA_ERRCODE_RETRY), errmsg("%s", error)));
	}
	PQclear(res);
	pga_close_conn(t->c);
	ereport(ERROR,
			(errcode(EGRESS_ERRCODE_REJECTED),
			 errmsg("PostgreSQL destination %s refused batch %s%s%s: %s",
					t->a->sink->location, t->batch_id,
					t->bs ? " of stream " : "",
					t->bs ? quote_identifier(t->bs->st->id) : "", error),
			 errdetail("The target server's error: %s", error),
			 errhint("Retrying cannot help: change the target or the stream, then resume the stream.")));
	return NULL;				/* keep compiler quiet */
}

/* a failed connection: its message */
void
pga_txn_broken(ApplyTxn *t)
{
	pga_txn_check(t, NULL, pstrdup(t->c->conn ? PQerrorMessage(t->c->conn) : "no connection"));
}

/*
 * The results of the query txn_send sent: the first error is raised as
 * txn_check does (a direct COPY's unique violation sends the attempt
 * through staging).
 */
void
pga_txn_collect(ApplyTxn *t)
{
	PGresult   *res;
	PGresult   *err = NULL;
	BatchStream *bs = t->bs;

	t->c->pending = false;
	while ((res = pga_conn_result(t->c->conn)) != NULL)
	{
		ExecStatusType status = PQresultStatus(res);

		if (err == NULL && status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK &&
			status != PGRES_EMPTY_QUERY)
			err = res;
		else
			PQclear(res);
	}
	if (PQstatus(t->c->conn) != CONNECTION_OK)
		pga_txn_broken(t);
	if (err == NULL)
		return;
	if (t->c->pending_direct && PQresultErrorField(err, PG_DIAG_SQLSTATE) &&
		strcmp(PQresultErrorField(err, PG_DIAG_SQLSTATE), "23505") == 0)
	{
		PQclear(err);
		pga_close_conn(t->c);
		t->a->direct_conflict = true;
		ereport(ERROR, (errcode(PGA_ERRCODE_RETRY), errmsg("rows already loaded: loading through staging")));
	}
	t->bs = t->c->pending_bs;
	(void) pga_txn_check(t, err, NULL);
	t->bs = bs;
}

/*
 * Sends sql, and the COPY data of its COPY FROM STDIN (copy), and returns
 * without waiting for its end: the next statement on the connection
 * collects the results.  Meanwhile the other connections get their work
 * (parallelism): the targets apply concurrently.
 */
void
pga_txn_send(ApplyTxn *t, const char *sql, const StringInfo copy, bool direct)
{
	PGconn	   *conn;

	if (t->c->pending)
		pga_txn_collect(t);
	conn = t->c->conn;
	if (!PQsendQuery(conn, sql) || !pga_conn_flush(conn))
		pga_txn_broken(t);
	while (copy)
	{
		PGresult   *res = pga_conn_result(conn);

		if (res == NULL)
			pga_txn_broken(t);
		if (PQresultStatus(res) == PGRES_COPY_IN)
		{
			PQclear(res);
			break;
		}
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
		{
			t->c->pending_direct = direct;
			(void) pga_txn_check(t, res, NULL);
		}
		PQclear(res);
	}
	if (copy && (PQputCopyData(conn, copy->data, copy->len) != 1 ||
				 PQputCopyEnd(conn, NULL) != 1 || !pga_conn_flush(conn)))
		pga_txn_broken(t);
	t->c->pending = true;
	t->c->pending_direct = direct;
	t->c->pending_bs = t->bs;
}

static PGresult *
txn_exec(ApplyTxn *t, const char *sql, const StringInfo copy)
{
	char	   *error = NULL;
	PGresult   *res;

	if (t->c->pending)
		pga_txn_collect(t);
	res = egress_pgconn_exec(t->c->conn, sql, copy ? copy->data : NULL,
							 copy ? copy->len : 0, &error);
	return pga_txn_check(t, res, error);
}

void
pga_txn_run(ApplyTxn *t, const char *sql)
{
	PQclear(txn_exec(t, sql, NULL));
}

/* DDL: run and written to the log (never silent) */
static void
txn_ddl(ApplyTxn *t, const char *sql)
{
	ereport(LOG,
			(errmsg("pg_egress PostgreSQL destination %s: %s",
					t->a->sink->location, sql)));
	pga_txn_run(t, sql);
}

/* serializes DDL on one name among concurrent loaders (parallel sync parts) */
static void
txn_lock(ApplyTxn *t, const char *name)
{
	pga_txn_run(t, psprintf("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext(%s))",
						quote_literal_cstr(psprintf("pg_egress:%s", name))));
}

static char *
qualify(const char *schema, const char *name)
{
	return psprintf("%s.%s", quote_identifier(schema), quote_identifier(name));
}

/* ---------------------------------------------------------------------
 * Lines: the hot path (RECORD) and the rest
 * ---------------------------------------------------------------------
 */

typedef struct RecField
{
	const char *name;			/* not NUL-terminated: namelen bytes */
	int			namelen;
	JsonTokenType tok;			/* OBJECT_START/ARRAY_START for nested values */
	const char *text;			/* a scalar's (strings de-escaped), textlen bytes */
	int			textlen;
	const char *raw;			/* the value's JSON text */
	int			rawlen;
} RecField;

typedef struct LineParse
{
	JsonLexContext *lex;
	int			depth;			/* open objects and arrays */
	char	   *field;			/* the top-level field */
	const char *top_start;		/* its value's JSON text */
	char	   *rfield;			/* the record field */
	const char *rstart;
	bool		in_record;
	char	   *type;
	char	   *stream;
	char	   *version;
	char	   *time_extracted;
	char	   *position;
	const char *schema_raw;
	int			schema_len;
	const char *keys_raw;
	int			keys_len;
	const char *value_raw;
	int			value_len;
	RecField   *fields;
	int			nfields;
	int			maxfields;
} LineParse;

static void
lp_add_field(LineParse *lp, JsonTokenType tok, char *text)
{
	RecField   *f;

	if (lp->nfields == lp->maxfields)
	{
		lp->maxfields = lp->maxfields ? lp->maxfields * 2 : 32;
		lp->fields = lp->fields ? repalloc(lp->fields, sizeof(RecField) * lp->maxfields) :
			palloc(sizeof(RecField) * lp->maxfields);
	}
	f = &lp->fields[lp->nfields++];
	f->name = lp->rfield;
	f->namelen = strlen(lp->rfield);
	f->tok = tok;
	f->text = text;
	f->textlen = text ? strlen(text) : 0;
	f->raw = lp->rstart;
	f->rawlen = lp->lex->prev_token_terminator - lp->rstart;
}

static void
lp_open(void *st)
{
	LineParse  *lp = st;

	if (lp->depth == 1 && lp->field && strcmp(lp->field, "record") == 0)
		lp->in_record = true;
	lp->depth++;
}

/* a top-level object or array value ends: keep the text of those we use */
static void
lp_top_value_end(LineParse *lp)
{
	int			len = lp->lex->prev_token_terminator - lp->top_start;

	if (lp->field == NULL)
		return;
	if (strcmp(lp->field, "schema") == 0)
	{
		lp->schema_raw = lp->top_start;
		lp->schema_len = len;
	}
	else if (strcmp(lp->field, "key_properties") == 0)
	{
		lp->keys_raw = lp->top_start;
		lp->keys_len = len;
	}
	else if (strcmp(lp->field, "value") == 0)
	{
		lp->value_raw = lp->top_start;
		lp->value_len = len;
	}
}

static void
lp_close(void *st, JsonTokenType tok)
{
	LineParse  *lp = st;

	lp->depth--;
	if (lp->depth == 2 && lp->in_record)
		lp_add_field(lp, tok, NULL);
	else if (lp->depth == 1)
	{
		if (lp->in_record)
			lp->in_record = false;
		else
			lp_top_value_end(lp);
	}
}

static void
lp_object_end(void *st)
{
	lp_close(st, JSON_TOKEN_OBJECT_START);
}

static void
lp_array_end(void *st)
{
	lp_close(st, JSON_TOKEN_ARRAY_START);
}

/* called with the lexer at the field's value */
static void
lp_field(void *st, char *fname, bool isnull)
{
	LineParse  *lp = st;

	if (lp->depth == 1)
	{
		lp->field = fname;
		lp->top_start = lp->lex->token_start;
	}
	else if (lp->depth == 2 && lp->in_record)
	{
		lp->rfield = fname;
		lp->rstart = lp->lex->token_start;
	}
}

static void
lp_scalar(void *st, char *token, JsonTokenType type)
{
	LineParse  *lp = st;

	if (lp->depth == 2 && lp->in_record)
		lp_add_field(lp, type, token);
	else if (lp->depth == 1 && lp->field && type != JSON_TOKEN_NULL)
	{
		if (strcmp(lp->field, "type") == 0)
			lp->type = token;
		else if (strcmp(lp->field, "stream") == 0)
			lp->stream = token;
		else if (strcmp(lp->field, "version") == 0)
			lp->version = token;
		else if (strcmp(lp->field, "time_extracted") == 0)
			lp->time_extracted = token;
		else if (strcmp(lp->field, "position") == 0)
			lp->position = token;
	}
}

/* ---------------------------------------------------------------------
 * Streams and schemas
 * ---------------------------------------------------------------------
 */

static const char *
target_schema_of(ApplySink *a, const char *source_schema)
{
	ListCell   *lc;

	foreach(lc, a->sink->opts.schema_mapping)
	{
		EgressSchemaMapping *m = lfirst(lc);

		if (strcmp(m->source_schema, source_schema) == 0)
			return m->target_schema;
	}
	if (a->sink->opts.default_target_schema)
		return a->sink->opts.default_target_schema;
	return source_schema;
}

/*
 * Stream <schema>-<table>, split at the first '-' (pg_egress's stream ids;
 * a name without one is a table of the default schema).  An id with more
 * than one '-' does not tell where the schema ends ("a-b"."c" and
 * "a"."b-c" are both a-b-c): such a stream is refused (check_target_name).
 */
static ApplyStream *
stream_get(ApplySink *a, const char *id)
{
	ListCell   *lc;
	ApplyStream *st;
	const char *dash;
	char	   *src_schema;
	MemoryContext oldcxt;

	if (a->last_stream && strcmp(a->last_stream->id, id) == 0)
		return a->last_stream;
	foreach(lc, a->streams)
	{
		st = lfirst(lc);
		if (strcmp(st->id, id) == 0)
			return a->last_stream = st;
	}
	oldcxt = MemoryContextSwitchTo(a->cxt);
	st = palloc0(sizeof(ApplyStream));
	st->id = pstrdup(id);
	dash = strchr(id, '-');
	src_schema = dash ? pnstrdup(id, dash - id) : pstrdup("public");
	st->table = pstrdup(dash ? dash + 1 : id);
	st->ambiguous = dash && strchr(dash + 1, '-') != NULL;
	st->target_schema = pstrdup(target_schema_of(a, src_schema));
	st->qtable = qualify(st->target_schema, st->table);
	st->dest = st->qtable;
	/* round robin in order of appearance: balanced, unlike a hash of few ids */
	st->conn = list_length(a->streams) % a->nconns;
	a->streams = lappend(a->streams, st);
	MemoryContextSwitchTo(oldcxt);
	return a->last_stream = st;
}

static BatchStream *
batch_stream(ApplySink *a, ApplyStream *st)
{
	if (st->bs == NULL)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(a->batch_cxt);

		st->bs = palloc0(sizeof(BatchStream));
		st->bs->st = st;
		a->batch_streams = lappend(a->batch_streams, st->bs);
		MemoryContextSwitchTo(oldcxt);
	}
	return st->bs;
}

static int
schema_column(const ApplySchema *s, const char *name, int hint)
{
	if (hint >= 0 && hint < s->ncols && strcmp(s->cols[hint].name, name) == 0)
		return hint;
	for (int i = 0; i < s->ncols; i++)
		if (strcmp(s->cols[i].name, name) == 0)
			return i;
	return -1;
}

/* the same for a name of len bytes, not NUL-terminated */
static int
schema_column_n(const ApplySchema *s, const char *name, int len, int hint)
{
	if (hint >= 0 && hint < s->ncols && strncmp(s->cols[hint].name, name, len) == 0 &&
		s->cols[hint].name[len] == '\0')
		return hint;
	for (int i = 0; i < s->ncols; i++)
		if (strncmp(s->cols[i].name, name, len) == 0 && s->cols[i].name[len] == '\0')
			return i;
	return -1;
}

/* a metadata column add_metadata_columns adds, unless the SCHEMA has it */
static int
add_meta_column(ApplySchema *s, const char *name)
{
	int			i = schema_column(s, name, -1);

	if (i >= 0)
		return i;
	egress_pg_column_map(&s->cols[s->ncols], name, NULL);
	s->cols[s->ncols].type = "timestamp without time zone";
	s->cols[s->ncols].jtypes = EGRESS_JT_NULL | EGRESS_JT_STRING;
	s->cols[s->ncols].date_time = true;
	return s->ncols++;
}

static ApplySchema *
schema_build(ApplySink *a, EgressJNode *schema, EgressJNode *keys, char *identity)
{
	EgressJNode *props = egress_jnode_get(schema, "properties");
	ApplySchema *s = palloc0(sizeof(ApplySchema));
	int			nprops = props ? list_length(props->values) : 0;
	ListCell   *k,
			   *v;
	int			i = 0;

	s->identity = identity;
	s->cols = palloc0(sizeof(EgressPgColumn) * (nprops + 3));
	if (props)
		forboth(k, props->keys, v, props->values)
			egress_pg_column_map(&s->cols[i++], lfirst(k), lfirst(v));
	s->ncols = nprops;
	s->extracted_at = s->batched_at = -1;
	if (a->sink->opts.add_metadata_columns)
	{
		bool		had_e = schema_column(s, "_sdc_extracted_at", -1) >= 0;
		bool		had_b = schema_column(s, "_sdc_batched_at", -1) >= 0;

		s->extracted_at = add_meta_column(s, "_sdc_extracted_at");
		s->batched_at = add_meta_column(s, "_sdc_batched_at");
		(void) add_meta_column(s, "_sdc_deleted_at");
		/* a SCHEMA's own column of that name keeps the record's values */
		if (had_e)
			s->extracted_at = -1;
		if (had_b)
			s->batched_at = -1;
	}
	s->deleted_at = schema_column(s, "_sdc_deleted_at", -1);
	s->nkeys = keys ? list_length(keys->values) : 0;
	s->keys = palloc(sizeof(int) * Max(s->nkeys, 1));
	i = 0;
	if (keys)
		foreach(v, keys->values)
		{
			EgressJNode *kn = lfirst(v);
			int			c = kn->type == JSON_TOKEN_STRING ? schema_column(s, kn->str, -1) : -1;

			if (c < 0 && s->missing_key == NULL)
				s->missing_key = kn->type == JSON_TOKEN_STRING ? kn->str : "?";
			s->keys[i++] = c;
		}
	return s;
}

static EgressJNode *
parse_tree(ApplySink *a, const char *raw, int len, const char *what)
{
	char	   *error = NULL;
	EgressJNode *n = egress_jnode_parse(raw, len, &error);

	if (n == NULL)
		ereport(ERROR,
				(errcode(EGRESS_ERRCODE_REJECTED),
				 errmsg("PostgreSQL destination %s cannot read a %s message: %s",
						a->sink->location, what, error)));
	return n;
}

static void
on_schema(ApplySink *a, LineParse *lp)
{
	ApplyStream *st = stream_get(a, lp->stream);
	char	   *identity;
	MemoryContext oldcxt;

	if (lp->schema_raw == NULL)
		ereport(ERROR,
				(errcode(EGRESS_ERRCODE_REJECTED),
				 errmsg("PostgreSQL destination %s got a SCHEMA message without a schema (stream %s)",
						a->sink->location, st->id)));
	identity = psprintf("%.*s|%.*s", lp->schema_len, lp->schema_raw,
						lp->keys_len, lp->keys_raw ? lp->keys_raw : "");
	(void) batch_stream(a, st);
	if (st->schema && strcmp(st->schema->identity, identity) == 0)
		return;
	oldcxt = MemoryContextSwitchTo(a->cxt);
	st->schema = schema_build(a,
							  parse_tree(a, lp->schema_raw, lp->schema_len, "SCHEMA"),
							  lp->keys_raw ? parse_tree(a, lp->keys_raw, lp->keys_len, "SCHEMA") : NULL,
							  pstrdup(identity));
	MemoryContextSwitchTo(oldcxt);
}

static Segment *
new_segment(ApplySink *a, BatchStream *bs, SegKind kind, int64 version)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(a->batch_cxt);
	Segment    *seg = palloc0(sizeof(Segment));

	seg->kind = kind;
	seg->schema = bs->st->schema;
	seg->version = version;
	if (kind == SEG_ROWS && a->spare.data != NULL)
	{
		/* the buffer of an earlier batch: no growing, no fresh pages */
		seg->copy = a->spare;
		resetStringInfo(&seg->copy);
		a->spare.data = NULL;
	}
	else if (kind == SEG_ROWS)
	{
		MemoryContextSwitchTo(a->cxt);
		initStringInfo(&seg->copy);
	}
	bs->segments = lappend(bs->segments, seg);
	MemoryContextSwitchTo(oldcxt);
	return seg;
}

/*
 * The COPY text buffers of a batch's segments (the sink's memory) are
 * freed, but the largest, kept for the next batch's first segment: a batch
 * of changes fills one buffer of tens of megabytes, and growing it again
 * for every batch (copies, and pages the kernel clears) cost the CDC worker
 * about a tenth of its time.
 */
#define SPARE_MAX	(64 * 1024 * 1024)

static void
recycle_buffers(ApplySink *a)
{
	ListCell   *lc;

	foreach(lc, a->batch_streams)
	{
		ListCell   *sc;

		foreach(sc, ((BatchStream *) lfirst(lc))->segments)
		{
			Segment    *seg = lfirst(sc);

			if (seg->kind != SEG_ROWS || seg->copy.data == NULL)
				continue;
			if (seg->copy.maxlen <= SPARE_MAX &&
				(a->spare.data == NULL || seg->copy.maxlen > a->spare.maxlen))
			{
				if (a->spare.data)
					pfree(a->spare.data);
				a->spare = seg->copy;
			}
			else
				pfree(seg->copy.data);
			seg->copy.data = NULL;
		}
	}
}

static int64
version_of(ApplySink *a, const char *text)
{
	return text ? strtoi64(text, NULL, 10) : 0;
}

static char *
batch_copy(ApplySink *a, const char *s)
{
	return s ? MemoryContextStrdup(a->batch_cxt, s) : NULL;
}

static void
on_activate(ApplySink *a, LineParse *lp)
{
	ApplyStream *st = stream_get(a, lp->stream);
	BatchStream *bs = batch_stream(a, st);
	Segment    *seg;

	if (st->schema == NULL)
	{
		bs->error = batch_copy(a, "an ACTIVATE_VERSION before any SCHEMA");
		return;
	}
	seg = new_segment(a, bs, SEG_ACTIVATE, version_of(a, lp->version));
	seg->position = batch_copy(a, lp->position);
}

static void
on_state(ApplySink *a, LineParse *lp)
{
	EgressJNode *value;
	EgressJNode *bookmarks;
	ListCell   *k,
			   *v;

	if (lp->value_raw == NULL)
		return;
	value = parse_tree(a, lp->value_raw, lp->value_len, "STATE");
	bookmarks = egress_jnode_get(value, "bookmarks");
	if (bookmarks == NULL || bookmarks->type != JSON_TOKEN_OBJECT_START)
		return;
	forboth(k, bookmarks->keys, v, bookmarks->values)
	{
		ListCell   *lc;

		/* only the streams of this batch get their row written */
		foreach(lc, a->batch_streams)
		{
			BatchStream *bs = lfirst(lc);
			EgressJNode *bm = lfirst(v);

			if (strcmp(bs->st->id, lfirst(k)) == 0)
				bs->bookmark = MemoryContextStrdup(a->batch_cxt,
												   pnstrdup(bm->raw, bm->rawlen));
		}
	}
}

/* ---------------------------------------------------------------------
 * RECORD -> COPY text
 * ---------------------------------------------------------------------
 */

static void
copy_value(StringInfo buf, const EgressPgColumn *col, const RecField *f)
{
	if (f == NULL || f->tok == JSON_TOKEN_NULL)
	{
		appendStringInfoString(buf, "\\N");
		return;
	}
	/* jsonb columns take JSON text, scalars too (a json column's "abc") */
	if (col->jsonb || f->text == NULL)
		egress_pg_copy_escape(buf, f->raw, f->rawlen);
	else
		egress_pg_copy_escape(buf, f->text, f->textlen);
}

/*
 * The segment a record of this version goes to: the last one, or a new one.
 * A keyless stream with hard_delete cuts a segment where it switches
 * between inserts and deletes: a segment's rows are appended before its
 * deletes run, so an insert, delete, insert of one row in one segment
 * would end with no row.
 */
static Segment *
rows_segment(ApplySink *a, BatchStream *bs, int64 version, bool positioned, bool del)
{
	Segment    *seg = bs->segments ? llast(bs->segments) : NULL;

	if (seg && seg->kind == SEG_ROWS && seg->schema == bs->st->schema &&
		seg->version == version && (seg->position != NULL) == positioned &&
		(seg->schema->nkeys > 0 || !a->sink->opts.hard_delete ||
		 seg->nrows == 0 || seg->deletes == del))
		return seg;
	return new_segment(a, bs, SEG_ROWS, version);
}

static void
check_record(ApplySink *a, BatchStream *bs, const ApplySchema *s, RecField **vals)
{
	for (int i = 0; i < s->ncols && bs->error == NULL; i++)
	{
		const RecField *f = vals[i];
		const char *why;

		if (i == s->extracted_at || i == s->batched_at)
			continue;
		why = egress_pg_check_value(&s->cols[i], f ? f->tok : JSON_TOKEN_NULL,
									f ? (f->text ? f->text : "") : NULL);
		if (why)
			bs->error = batch_copy(a, psprintf("column %s: %s",
											   quote_identifier(s->cols[i].name), why));
	}
}

static void
on_record(ApplySink *a, LineParse *lp)
{
	ApplyStream *st = stream_get(a, lp->stream);
	BatchStream *bs = batch_stream(a, st);
	ApplySchema *s = st->schema;
	RecField  **vals;
	Segment    *seg;
	StringInfo	buf;
	bool		del = false;
	int			hint = 0;
	int			row_start;

	if (s == NULL)
	{
		if (bs->error == NULL)
			bs->error = batch_copy(a, "a RECORD before any SCHEMA");
		return;
	}
	vals = palloc0(sizeof(RecField *) * s->ncols);
	for (int i = 0; i < lp->nfields; i++)
	{
		int			c = schema_column_n(s, lp->fields[i].name, lp->fields[i].namelen, hint);

		/* properties the SCHEMA does not have are left out, as pipelinewise */
		if (c >= 0)
		{
			vals[c] = &lp->fields[i];
			hint = c + 1;
		}
	}
	if (s->deleted_at >= 0 && vals[s->deleted_at] &&
		vals[s->deleted_at]->tok != JSON_TOKEN_NULL)
		del = true;
	if (a->sink->opts.validate_records && !del)
		check_record(a, bs, s, vals);

	seg = rows_segment(a, bs, version_of(a, lp->version), lp->position != NULL, del);
	buf = &seg->copy;
	row_start = buf->len;
	for (int i = 0; i < s->ncols; i++)
	{
		if (i == s->extracted_at && lp->time_extracted)
			egress_pg_copy_escape(buf, lp->time_extracted, strlen(lp->time_extracted));
		else if (i == s->batched_at)
			appendStringInfoString(buf, a->batched_at);
		else
			copy_value(buf, &s->cols[i], vals[i]);
		if (i < s->ncols - 1 || lp->position)
			appendStringInfoChar(buf, '\t');
	}
	/* the row ends with its position (a positioned segment's rows only) */
	if (lp->position)
	{
		egress_pg_copy_escape(buf, lp->position, strlen(lp->position));
		/* the greatest: a row re-read for its TOAST values may come late */
		if (seg->position == NULL || strcmp(seg->position, lp->position) < 0)
		{
			if (seg->position == NULL || strlen(lp->position) > strlen(seg->position))
				seg->position = MemoryContextStrdup(a->batch_cxt, lp->position);
			else
				strcpy(seg->position, lp->position);
		}
	}
	appendStringInfoChar(buf, '\n');
	seg->nrows++;
	seg->deletes |= del;
	pga_early_row(a, bs, seg, row_start, del, lp->position);
}

/* ---------------------------------------------------------------------
 * RECORD lines, fast path
 *
 * RECORDs are read with PostgreSQL's JSON lexer (json_lex), which checks
 * each token, and a small walk of our own over the tokens for the one
 * shape pg_egress writes: no semantic-action callbacks, no copy of a value
 * that has no escape (it points into the line), one lexer for the sink's
 * life.  Strings are lexed without de-escaping (the lexer would copy every
 * string into strval, byte by byte); only a string that holds a backslash
 * is lexed again with strval to decode it.  Whatever the walk does not
 * expect (another key, another message, a token error) makes it give up:
 * the line then goes through pg_parse_json, which also reports real errors.
 * Nested values (json, arrays) are only tokenized here: the target's jsonb
 * input checks them.
 * ---------------------------------------------------------------------
 */

/* the lexer at the start of a line */
static void
lx_reset(JsonLexContext *lex, const char *line, int len)
{
	lex->input = lex->token_terminator = lex->line_start = (char *) line;
	lex->input_length = len;
	lex->token_start = NULL;
	lex->prev_token_terminator = NULL;
	lex->line_number = 1;
	lex->strval = NULL;
}

static inline bool
lx_next(JsonLexContext *lex)
{
	return json_lex(lex) == JSON_SUCCESS;
}

static inline bool
lx_expect(JsonLexContext *lex, JsonTokenType type)
{
	return json_lex(lex) == JSON_SUCCESS && lex->token_type == type;
}

/*
 * The string token just lexed: its value, pointing into the line when it
 * has no escape, else decoded by lexing it again with strval (a copy).
 */
static bool
lx_string(JsonLexContext *lex, StringInfo strval, const char **text, int *len)
{
	const char *b = lex->token_start + 1;
	int			n = lex->token_terminator - b - 1;
	JsonParseErrorType rc;

	if (memchr(b, '\\', n) == NULL)
	{
		*text = b;
		*len = n;
		return true;
	}
	lex->token_terminator = lex->token_start;
	lex->strval = strval;
	rc = json_lex(lex);
	lex->strval = NULL;
	if (rc != JSON_SUCCESS)
		return false;
	*text = pnstrdup(strval->data, strval->len);
	*len = strval->len;
	return true;
}

/* a top-level string value, copied */
static char *
lx_top_string(JsonLexContext *lex, StringInfo strval)
{
	const char *b;
	int			len;

	if (!lx_next(lex) || lex->token_type != JSON_TOKEN_STRING ||
		!lx_string(lex, strval, &b, &len))
		return NULL;
	return pnstrdup(b, len);
}

/* the value whose first token was just lexed */
static bool
lx_value(JsonLexContext *lex, StringInfo strval, RecField *f)
{
	const char *b = lex->token_start;

	f->tok = lex->token_type;
	f->text = NULL;
	f->textlen = 0;
	switch (lex->token_type)
	{
		case JSON_TOKEN_STRING:
			if (!lx_string(lex, strval, &f->text, &f->textlen))
				return false;
			break;
		case JSON_TOKEN_NUMBER:
		case JSON_TOKEN_TRUE:
		case JSON_TOKEN_FALSE:
			f->text = b;
			f->textlen = lex->token_terminator - b;
			break;
		case JSON_TOKEN_NULL:
			break;
		case JSON_TOKEN_OBJECT_START:
		case JSON_TOKEN_ARRAY_START:
			{
				int			depth = 1;

				while (depth > 0)
				{
					if (!lx_next(lex))
						return false;
					if (lex->token_type == JSON_TOKEN_OBJECT_START ||
						lex->token_type == JSON_TOKEN_ARRAY_START)
						depth++;
					else if (lex->token_type == JSON_TOKEN_OBJECT_END ||
							 lex->token_type == JSON_TOKEN_ARRAY_END)
						depth--;
					else if (lex->token_type == JSON_TOKEN_END)
						return false;
				}
			}
			break;
		default:
			return false;
	}
	f->raw = b;
	f->rawlen = lex->token_terminator - b;
	return true;
}

/* the record object, its { just lexed */
static bool
lx_record(JsonLexContext *lex, StringInfo strval, LineParse *lp)
{
	if (!lx_next(lex))
		return false;
	if (lex->token_type == JSON_TOKEN_OBJECT_END)
		return true;
	for (;;)
	{
		RecField   *f;

		if (lp->nfields == lp->maxfields)
		{
			lp->maxfields = lp->maxfields ? lp->maxfields * 2 : 32;
			lp->fields = lp->fields ? repalloc(lp->fields, sizeof(RecField) * lp->maxfields) :
				palloc(sizeof(RecField) * lp->maxfields);
		}
		f = &lp->fields[lp->nfields++];
		if (lex->token_type != JSON_TOKEN_STRING ||
			!lx_string(lex, strval, &f->name, &f->namelen) ||
			!lx_expect(lex, JSON_TOKEN_COLON) || !lx_next(lex) ||
			!lx_value(lex, strval, f) || !lx_next(lex))
			return false;
		if (lex->token_type == JSON_TOKEN_OBJECT_END)
			return true;
		if (lex->token_type != JSON_TOKEN_COMMA || !lx_next(lex))
			return false;
	}
}

static bool
lx_is(const char *b, int len, const char *word)
{
	return len == strlen(word) && memcmp(b, word, len) == 0;
}

/*
 * A RECORD line into lp (line context); false: not one this walk reads
 * (parse it the slow way).
 */
static bool
lx_line(JsonLexContext *lex, StringInfo strval, const char *line, int len, LineParse *lp)
{
	lx_reset(lex, line, len);
	if (!lx_expect(lex, JSON_TOKEN_OBJECT_START) || !lx_next(lex))
		return false;
	for (;;)
	{
		const char *k;
		int			klen;

		if (lex->token_type != JSON_TOKEN_STRING || !lx_string(lex, strval, &k, &klen) ||
			!lx_expect(lex, JSON_TOKEN_COLON))
			return false;
		if (lx_is(k, klen, "type"))
		{
			if ((lp->type = lx_top_string(lex, strval)) == NULL ||
				strcmp(lp->type, "RECORD") != 0)
				return false;
		}
		else if (lx_is(k, klen, "stream"))
		{
			if ((lp->stream = lx_top_string(lex, strval)) == NULL)
				return false;
		}
		else if (lx_is(k, klen, "time_extracted"))
		{
			if ((lp->time_extracted = lx_top_string(lex, strval)) == NULL)
				return false;
		}
		else if (lx_is(k, klen, "position"))
		{
			if ((lp->position = lx_top_string(lex, strval)) == NULL)
				return false;
		}
		else if (lx_is(k, klen, "version"))
		{
			if (!lx_expect(lex, JSON_TOKEN_NUMBER))
				return false;
			lp->version = pnstrdup(lex->token_start, lex->token_terminator - lex->token_start);
		}
		else if (lx_is(k, klen, "record"))
		{
			if (!lx_expect(lex, JSON_TOKEN_OBJECT_START) || !lx_record(lex, strval, lp))
				return false;
		}
		else
			return false;
		if (!lx_next(lex))
			return false;
		if (lex->token_type == JSON_TOKEN_OBJECT_END)
			break;
		if (lex->token_type != JSON_TOKEN_COMMA || !lx_next(lex))
			return false;
	}
	return lx_expect(lex, JSON_TOKEN_END) && lp->type != NULL && lp->stream != NULL;
}

/* true: the line was a RECORD and is taken; false: parse it the slow way */
static bool
fast_record(ApplySink *a, const char *line, int len)
{
	LineParse	lp = {0};

	if (!lx_line(a->lex, a->strval, line, len, &lp))
		return false;
	on_record(a, &lp);
	return true;
}

static void
process_line(ApplySink *a, const char *line, int len)
{
	LineParse	lp = {0};
	JsonSemAction sem = {0};
	JsonParseErrorType rc;
	MemoryContext oldcxt;

	if (len == 0)
		return;
	oldcxt = MemoryContextSwitchTo(a->line_cxt);
	/* validate_records wants the parser's checked, de-escaped values */
	if (!a->sink->opts.validate_records && fast_record(a, line, len))
	{
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(a->line_cxt);
		return;
	}
	/* the fast path gave up without side effects: it only reads */
	lp.lex = makeJsonLexContextCstringLen((char *) line, len, GetDatabaseEncoding(), true);
	sem.semstate = &lp;
	sem.object_start = lp_open;
	sem.array_start = lp_open;
	sem.object_end = lp_object_end;
	sem.array_end = lp_array_end;
	sem.object_field_start = lp_field;
	sem.scalar = lp_scalar;
	rc = pg_parse_json(lp.lex, &sem);
	if (rc != JSON_SUCCESS)
		ereport(ERROR,
				(errcode(EGRESS_ERRCODE_REJECTED),
				 errmsg("PostgreSQL destination %s cannot read a Singer message: %s",
						a->sink->location, json_errdetail(rc, lp.lex))));
	if (lp.type && (strcmp(lp.type, "STATE") == 0))
		on_state(a, &lp);
	else if (lp.type == NULL || lp.stream == NULL)
		ereport(ERROR,
				(errcode(EGRESS_ERRCODE_REJECTED),
				 errmsg("PostgreSQL destination %s got a Singer message without type or stream",
						a->sink->location)));
	else if (strcmp(lp.type, "RECORD") == 0)
		on_record(a, &lp);
	else if (strcmp(lp.type, "SCHEMA") == 0)
		on_schema(a, &lp);
	else if (strcmp(lp.type, "ACTIVATE_VERSION") == 0)
		on_activate(a, &lp);
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(a->line_cxt);
}

/* ---------------------------------------------------------------------
 * Sink operations: batches
 * ---------------------------------------------------------------------
 */

/* "YYYY-MM-DD HH:MM:SS.ffffff" in UTC, for timestamp columns */
static char *
utc_text(TimestampTz ts)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0)
		return pstrdup("\\N");
	return psprintf("%04d-%02d-%02d %02d:%02d:%02d.%06d+00",
					tm.tm_year, tm.tm_mon, tm.tm_mday,
					tm.tm_hour, tm.tm_min, tm.tm_sec, (int) fsec);
}

static void
forget_batch(ApplySink *a)
{
	ListCell   *lc;

	recycle_buffers(a);
	foreach(lc, a->streams)
	{
		ApplyStream *st = lfirst(lc);

		st->bs = NULL;
		/*
		 * A schema checked in a transaction that did not commit (its types
		 * are in the batch's memory) is checked again; the one of a COMMIT
		 * under way waits for its answer (its types are the sink's).
		 */
		if (!(a->commit_inflight && st == a->commit_st))
			st->pending = NULL;
	}
	a->batch_streams = NIL;
	a->open = false;
	a->announced = NULL;
	a->early = EARLY_NONE;
	MemoryContextReset(a->batch_cxt);
	MemoryContextReset(a->attempt_cxt);
	/* the carry buffer lives in the batch context */
	a->carry.data = NULL;
}

static void
pga_begin_batch(EgressSink *sink, const EgressBatchInfo *info)
{
	ApplySink  *a = sink->private_data;
	MemoryContext oldcxt;

	forget_batch(a);
	oldcxt = MemoryContextSwitchTo(a->batch_cxt);
	initStringInfo(&a->carry);
	a->batched_at = utc_text(GetCurrentTimestamp());
	MemoryContextSwitchTo(oldcxt);
	a->no_direct = false;
	a->catalog_retried = false;
	a->open = true;
}

static void
pga_announce_batch_id(EgressSink *sink, const char *batch_id)
{
	ApplySink  *a = sink->private_data;

	a->announced = MemoryContextStrdup(a->batch_cxt, batch_id);
}

static void
pga_write(EgressSink *sink, const char *data, size_t len)
{
	ApplySink  *a = sink->private_data;
	const char *end = data + len;
	const char *p = data;

	while (p < end)
	{
		const char *nl = memchr(p, '\n', end - p);

		if (nl == NULL)
		{
			appendBinaryStringInfo(&a->carry, p, end - p);
			return;
		}
		if (a->carry.len > 0)
		{
			appendBinaryStringInfo(&a->carry, p, nl - p);
			process_line(a, a->carry.data, a->carry.len);
			resetStringInfo(&a->carry);
		}
		else
			process_line(a, p, nl - p);
		p = nl + 1;
	}
}

static void
pga_abort_batch(EgressSink *sink)
{
	ApplySink  *a = sink->private_data;

	/*
	 * A COMMIT under way is given up with the batch after it (its
	 * connection is closed below): the caller does not wait for it, and
	 * sends its batch again.
	 */
	pga_commit_forget(a);
	/* a connection left in the middle of a query or a transaction: closed */
	for (int i = 0; i < a->nconns; i++)
		if (a->conns[i].conn &&
			PQtransactionStatus(a->conns[i].conn) != PQTRANS_IDLE)
			pga_close_conn(&a->conns[i]);
	forget_batch(a);
}

static void
pga_cleanup(EgressSink *sink, const char *prefix)
{
	/* nothing outlives a transaction but shadow tables, which the state tracks */
}

static void
pga_close(EgressSink *sink)
{
	ApplySink  *a = sink->private_data;

	if (a == NULL)
		return;
	pga_commit_forget(a);
	for (int i = 0; i < a->nconns; i++)
		pga_close_conn(&a->conns[i]);
	MemoryContextDelete(a->cxt);
	sink->private_data = NULL;
}

/* ---------------------------------------------------------------------
 * Applying: tables
 * ---------------------------------------------------------------------
 */

typedef struct TargetColumn
{
	char	   *name;
	char	   *base;			/* format_type without typmod */
	char	   *full;			/* with it */
} TargetColumn;

/* the columns of table (quoted, qualified); NIL when it does not exist */
static List *
target_columns(ApplyTxn *t, const char *qtable)
{
	PGresult   *res;
	List	   *cols = NIL;

	res = txn_exec(t, psprintf("SELECT a.attname, pg_catalog.format_type(a.atttypid, NULL), "
							   "pg_catalog.format_type(a.atttypid, a.atttypmod) "
							   "FROM pg_catalog.pg_attribute a "
							   "WHERE a.attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(%s) "
							   "AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped "
							   "ORDER BY a.attnum",
							   quote_literal_cstr(qtable)), NULL);
	for (int i = 0; i < PQntuples(res); i++)
	{
		TargetColumn *c = palloc(sizeof(TargetColumn));

		c->name = pstrdup(PQgetvalue(res, i, 0));
		c->base = pstrdup(PQgetvalue(res, i, 1));
		c->full = pstrdup(PQgetvalue(res, i, 2));
		cols = lappend(cols, c);
	}
	PQclear(res);
	return cols;
}

static TargetColumn *
find_target_column(List *cols, const char *name)
{
	ListCell   *lc;

	foreach(lc, cols)
	{
		TargetColumn *c = lfirst(lc);

		if (strcmp(c->name, name) == 0)
			return c;
	}
	return NULL;
}

static bool
schema_exists(ApplyTxn *t, const char *schema)
{
	PGresult   *res = txn_exec(t, psprintf("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname OPERATOR(pg_catalog.=) %s",
										   quote_literal_cstr(schema)), NULL);
	bool		found = PQntuples(res) > 0;

	PQclear(res);
	return found;
}

static void
grant_to(ApplyTxn *t, const char *what)
{
	ListCell   *lc;

	foreach(lc, t->a->sink->opts.target_schema_privileges)
		txn_ddl(t, psprintf("GRANT %s TO %s", what, quote_identifier(lfirst(lc))));
}

static void
create_schema(ApplyTxn *t, const char *schema)
{
	if (schema_exists(t, schema))
		return;
	txn_ddl(t, psprintf("CREATE SCHEMA IF NOT EXISTS %s", quote_identifier(schema)));
	grant_to(t, psprintf("USAGE ON SCHEMA %s", quote_identifier(schema)));
}

static void
create_table(ApplyTxn *t, ApplyStream *st, const ApplySchema *s)
{
	StringInfoData sql;

	create_schema(t, st->target_schema);
	initStringInfo(&sql);
	appendStringInfo(&sql, "CREATE TABLE IF NOT EXISTS %s (", st->qtable);
	for (int i = 0; i < s->ncols; i++)
		appendStringInfo(&sql, "%s%s %s", i ? ", " : "",
						 quote_identifier(s->cols[i].name), s->cols[i].type);
	if (s->nkeys > 0)
	{
		appendStringInfoString(&sql, ", PRIMARY KEY (");
		for (int k = 0; k < s->nkeys; k++)
			appendStringInfo(&sql, "%s%s", k ? ", " : "",
							 quote_identifier(s->cols[s->keys[k]].name));
		appendStringInfoChar(&sql, ')');
	}
	appendStringInfoChar(&sql, ')');
	txn_ddl(t, sql.data);
	grant_to(t, psprintf("SELECT ON %s", st->qtable));
}

/*
 * "<column>_<yyyymmdd_hhmm>" (UTC), as pipelinewise's version_column; when
 * that name is taken (a second change within the minute, or two long names
 * clipped alike), "_2", "_3", ... is added.  The column part is clipped so
 * that the whole fits NAMEDATALEN - 1.
 */
static char *
aside_name(const char *column, List *cols)
{
	struct pg_tm tm;
	fsec_t		fsec;
	char		stamp[32];

	timestamp2tm(GetCurrentTimestamp(), NULL, &tm, &fsec, NULL, NULL);
	snprintf(stamp, sizeof(stamp), "_%04d%02d%02d_%02d%02d",
			 tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min);
	for (int n = 1;; n++)
	{
		char		suffix[64];
		int			keep;
		char	   *name;

		if (n == 1)
			snprintf(suffix, sizeof(suffix), "%s", stamp);
		else
			snprintf(suffix, sizeof(suffix), "%s_%d", stamp, n);
		keep = pg_mbcliplen(column, strlen(column), NAMEDATALEN - 1 - strlen(suffix));
		name = psprintf("%.*s%s", keep, column, suffix);
		if (find_target_column(cols, name) == NULL)
			return name;
	}
}

/* integer types and numeric, narrowest first; 0: another type */
static int
number_rank(const char *type)
{
	static const char *const ranks[] = {"smallint", "integer", "bigint", "numeric"};

	for (int i = 0; i < lengthof(ranks); i++)
		if (strcmp(type, ranks[i]) == 0)
			return i + 1;
	return 0;
}

/*
 * Is a column of type have (format_type, no typmod) altered in place to
 * type want?  A wider number keeps every value as it is.  (Any type to a
 * string converts without loss too, but is renamed aside as pipelinewise
 * does: the old values keep their type in the renamed column.)
 */
static bool
type_widens(const char *have, const char *want)
{
	int			h = number_rank(have);
	int			w = number_rank(want);

	return h && w && h < w;
}

/*
 * ALTER ... TYPE of a key column (sql): a key column is never renamed aside
 * (its primary key would go with it, and the stream could not load again);
 * when the target cannot convert it, the stream is refused with a hint.
 */
static void
alter_key_type(ApplyTxn *t, const char *sql, const char *qtable,
			   const TargetColumn *tc, const EgressPgColumn *col)
{
	PGresult   *res;
	char	   *error = NULL;
	char	   *msg;

	ereport(LOG,
			(errmsg("pg_egress PostgreSQL destination %s: %s",
					t->a->sink->location, sql)));
	if (t->c->pending)
		pga_txn_collect(t);
	res = egress_pgconn_exec(t->c->conn, sql, NULL, 0, &error);
	if (res == NULL || PQresultStatus(res) == PGRES_COMMAND_OK ||
		egress_pgconn_retryable(res))
	{
		PQclear(pga_txn_check(t, res, error));
		return;
	}
	msg = egress_pgconn_error(t->c->conn, res);
	PQclear(res);
	pga_close_conn(t->c);
	ereport(ERROR,
			(errcode(EGRESS_ERRCODE_REJECTED),
			 errmsg("PostgreSQL destination %s cannot change key column %s of %s from %s to %s",
					t->a->sink->location, quote_identifier(col->name), qtable,
					tc->full, col->type),
			 errdetail("The target server's error: %s", msg),
			 errhint("Change the column's type in the target table by hand (or drop the table to load it again), then resume the stream.")));
}

/*
 * ADD COLUMN for new properties.  A column whose type changed: altered in
 * place when it is a wider number (type_widens), or when it is a key; else
 * renamed aside (made nullable: no more values come) and added again with
 * the new type.
 */
static bool
evolve_table(ApplyTxn *t, const char *qtable, const ApplySchema *s, List *cols, bool run)
{
	bool		changed = false;

	for (int i = 0; i < s->ncols; i++)
	{
		const EgressPgColumn *col = &s->cols[i];
		TargetColumn *tc = find_target_column(cols, col->name);
		const char *q = quote_identifier(col->name);
		char	   *aside;

		if (tc && egress_pg_type_compatible(tc->base, col->type, col->name))
			continue;
		changed = true;
		if (!run)
			continue;
		if (tc && (is_key(s, i) || type_widens(tc->base, col->type)))
		{
			char	   *sql = psprintf("ALTER TABLE %s ALTER COLUMN %s TYPE %s USING CAST(%s AS %s)",
									   qtable, q, col->type, q, col->type);

			if (is_key(s, i))
				alter_key_type(t, sql, qtable, tc, col);
			else
				txn_ddl(t, sql);
			continue;
		}
		if (tc)
		{
			TargetColumn *moved = palloc(sizeof(TargetColumn));

			aside = aside_name(col->name, cols);
			txn_ddl(t, psprintf("ALTER TABLE %s RENAME COLUMN %s TO %s", qtable, q,
								quote_identifier(aside)));
			txn_ddl(t, psprintf("ALTER TABLE %s ALTER COLUMN %s DROP NOT NULL", qtable,
								quote_identifier(aside)));
			/* later columns' aside names must not take it */
			*moved = *tc;
			moved->name = aside;
			cols = lappend(cols, moved);
			tc->name = "";
		}
		txn_ddl(t, psprintf("ALTER TABLE %s ADD COLUMN %s %s", qtable, q, col->type));
	}
	return changed;
}

/* the target types of s's columns, from the table's columns */
static char **
column_types(const ApplySchema *s, List *cols)
{
	char	  **types = palloc(sizeof(char *) * s->ncols);

	for (int i = 0; i < s->ncols; i++)
	{
		TargetColumn *tc = find_target_column(cols, s->cols[i].name);

		types[i] = tc ? tc->full : (char *) s->cols[i].type;
	}
	return types;
}

/*
 * Makes table (the stream's or its shadow) have a column for each of s's
 * properties, creating it if needed.  DDL runs under the table's advisory
 * lock and after a second look: another loader may have done it meanwhile.
 */
void
pga_ensure_table(ApplyTxn *t, ApplyStream *st, const ApplySchema *s)
{
	List	   *cols;

	if (st->pending == s || (st->pending == NULL && st->verified == s))
		return;
	check_target_name(t->a, st);
	cols = target_columns(t, st->qtable);
	if (cols == NIL || evolve_table(t, st->qtable, s, cols, false))
	{
		txn_lock(t, st->qtable);
		cols = target_columns(t, st->qtable);
		if (cols == NIL)
			create_table(t, st, s);
		else
			evolve_table(t, st->qtable, s, cols, true);
		cols = target_columns(t, st->qtable);
	}
	st->pending = (ApplySchema *) s;
	st->pending_types = column_types(s, cols);
	st->has_deleted_at = find_target_column(cols, "_sdc_deleted_at") != NULL;
}

/* ---------------------------------------------------------------------
 * Applying: rows
 * ---------------------------------------------------------------------
 */

static void
append_keys(StringInfo sql, const ApplySchema *s, const char *prefix)
{
	for (int k = 0; k < s->nkeys; k++)
		appendStringInfo(sql, "%s%s%s", k ? ", " : "", prefix,
						 quote_identifier(s->cols[s->keys[k]].name));
}

static bool
is_key(const ApplySchema *s, int col)
{
	for (int k = 0; k < s->nkeys; k++)
		if (s->keys[k] == col)
			return true;
	return false;
}

void
pga_append_columns(StringInfo sql, const ApplySchema *s)
{
	for (int i = 0; i < s->ncols; i++)
		appendStringInfo(sql, "%s%s", i ? ", " : "", quote_identifier(s->cols[i].name));
}

static void
append_key_match(StringInfo sql, const ApplySchema *s, const char *l, const char *r)
{
	for (int k = 0; k < s->nkeys; k++)
	{
		const char *q = quote_identifier(s->cols[s->keys[k]].name);

		appendStringInfo(sql, "%s%s.%s OPERATOR(pg_catalog.=) %s.%s",
						 k ? " AND " : "", l, q, r, q);
	}
}

/*
 * The last record of each key (DISTINCT ON) of the staging table, among
 * those matching inner (NULL: all), then those matching outer.
 */
static void
append_last_per_key(StringInfo sql, const ApplySchema *s, const Segment *seg,
					const char *inner, const char *outer)
{
	appendStringInfoString(sql, "(SELECT DISTINCT ON (");
	append_keys(sql, s, "");
	appendStringInfo(sql, ") * FROM " STAGE "%s%s ORDER BY ",
					 inner ? " WHERE " : "", inner ? inner : "");
	append_keys(sql, s, "");
	/* positions order changes; rows without one have unique keys */
	appendStringInfo(sql, "%s) s%s%s",
					 seg->position ? ", _pg_egress_pos COLLATE \"C\" DESC" : "",
					 outer ? " WHERE " : "", outer ? outer : "");
}

/* ON CONFLICT (key) DO UPDATE SET <every other column>, or DO NOTHING */
static void
append_on_conflict(StringInfo sql, const ApplySchema *s)
{
	bool		any = false;

	appendStringInfoString(sql, " ON CONFLICT (");
	append_keys(sql, s, "");
	appendStringInfoChar(sql, ')');
	for (int i = 0; i < s->ncols; i++)
	{
		const char *q;

		if (is_key(s, i))
			continue;
		q = quote_identifier(s->cols[i].name);
		appendStringInfo(sql, "%s%s = EXCLUDED.%s", any ? ", " : " DO UPDATE SET ", q, q);
		any = true;
	}
	if (!any)
		appendStringInfoString(sql, " DO NOTHING");
}

/*
 * Rows of source (a parenthesized query or a table, unique keys) into
 * dest, by key: MERGE on PostgreSQL 15 and later (measured faster than
 * INSERT ... ON CONFLICT: docs/postgres_target.md), else ON CONFLICT.
 */
static void
append_merge(StringInfo sql, PGconn *conn, const ApplySchema *s, const char *dest,
			 const char *source)
{
	bool		any = false;

	if (PQserverVersion(conn) < 150000)
	{
		appendStringInfo(sql, "INSERT INTO %s AS t (", dest);
		pga_append_columns(sql, s);
		appendStringInfoString(sql, ") SELECT ");
		pga_append_columns(sql, s);
		appendStringInfo(sql, " FROM %s", source);
		append_on_conflict(sql, s);
		appendStringInfoString(sql, ";\n");
		return;
	}
	appendStringInfo(sql, "MERGE INTO %s AS t USING %s ON ", dest, source);
	append_key_match(sql, s, "t", "s");
	for (int i = 0; i < s->ncols; i++)
	{
		const char *q;

		if (is_key(s, i))
			continue;
		q = quote_identifier(s->cols[i].name);
		appendStringInfo(sql, "%s%s = s.%s", any ? ", " : " WHEN MATCHED THEN UPDATE SET ", q, q);
		any = true;
	}
	appendStringInfoString(sql, " WHEN NOT MATCHED THEN INSERT (");
	pga_append_columns(sql, s);
	appendStringInfoString(sql, ") VALUES (");
	for (int i = 0; i < s->ncols; i++)
		appendStringInfo(sql, "%ss.%s", i ? ", " : "", quote_identifier(s->cols[i].name));
	appendStringInfoString(sql, ");\n");
}

/* upserts: the last non-delete record of each key */
static void
append_upsert(StringInfo sql, PGconn *conn, const ApplySchema *s, const char *dest,
			  const Segment *seg)
{
	StringInfoData source;

	initStringInfo(&source);
	append_last_per_key(&source, s, seg, seg->deletes ? DEL_PRED " IS NOT TRUE" : NULL, NULL);
	append_merge(sql, conn, s, dest, source.data);
}

/* delete records: the row goes (hard) or gets _sdc_deleted_at (soft) */
static void
append_deletes(StringInfo sql, ApplySink *a, const ApplySchema *s, const Segment *seg,
			   const char *dest, bool soft)
{
	if (!soft)
	{
		appendStringInfo(sql, "DELETE FROM %s AS t USING ", dest);
		append_last_per_key(sql, s, seg, NULL, "s." DEL_PRED);
		appendStringInfoString(sql, " AND ");
		append_key_match(sql, s, "t", "s");
		appendStringInfoString(sql, ";\n");
		return;
	}
	appendStringInfo(sql, "INSERT INTO %s AS t (", dest);
	append_keys(sql, s, "");
	appendStringInfoString(sql, ", _sdc_deleted_at");
	if (s->extracted_at >= 0)
		appendStringInfoString(sql, ", _sdc_extracted_at");
	if (s->batched_at >= 0)
		appendStringInfoString(sql, ", _sdc_batched_at");
	appendStringInfoString(sql, ") SELECT ");
	append_keys(sql, s, "s.");
	appendStringInfoString(sql, ", s._sdc_deleted_at");
	if (s->extracted_at >= 0)
		appendStringInfoString(sql, ", s._sdc_extracted_at");
	if (s->batched_at >= 0)
		appendStringInfoString(sql, ", s._sdc_batched_at");
	appendStringInfoString(sql, " FROM ");
	append_last_per_key(sql, s, seg, NULL, "s." DEL_PRED);
	appendStringInfoString(sql, " ON CONFLICT (");
	append_keys(sql, s, "");
	appendStringInfoString(sql, ") DO UPDATE SET _sdc_deleted_at = EXCLUDED._sdc_deleted_at");
	if (s->extracted_at >= 0)
		appendStringInfoString(sql, ", _sdc_extracted_at = EXCLUDED._sdc_extracted_at");
	if (s->batched_at >= 0)
		appendStringInfoString(sql, ", _sdc_batched_at = EXCLUDED._sdc_batched_at");
	appendStringInfoString(sql, ";\n");
}

/*
 * keyless: append (soft), or with hard_delete delete equal rows, as many as
 * there are delete records for them (a table may hold duplicates).  A
 * segment is either appends or deletes (rows_segment), so order is kept.
 */
static void
append_keyless(StringInfo sql, ApplySink *a, const ApplySchema *s, const char *dest,
			   const Segment *seg)
{
	bool		hard = a->sink->opts.hard_delete && seg->deletes;
	StringInfoData cols;
	StringInfoData match;

	appendStringInfo(sql, "INSERT INTO %s (", dest);
	pga_append_columns(sql, s);
	appendStringInfoString(sql, ") SELECT ");
	pga_append_columns(sql, s);
	appendStringInfo(sql, " FROM " STAGE "%s%s;\n",
					 hard ? " WHERE " DEL_PRED " IS NOT TRUE" : "",
					 seg->position ? " ORDER BY _pg_egress_pos COLLATE \"C\"" : "");
	if (!hard)
		return;
	initStringInfo(&cols);
	initStringInfo(&match);
	for (int i = 0; i < s->ncols; i++)
	{
		const char *q = quote_identifier(s->cols[i].name);

		if (strncmp(s->cols[i].name, "_sdc_", 5) == 0)
			continue;
		appendStringInfo(&cols, "%s%s", cols.len ? ", " : "", q);
		appendStringInfo(&match, "%st.%s IS NOT DISTINCT FROM d.%s",
						 match.len ? " AND " : "", q, q);
	}
	/* only metadata columns: nothing tells which row a delete meant */
	if (cols.len == 0)
		return;
	appendStringInfo(sql,
					 "DELETE FROM %s AS x USING (SELECT t.ctid, d.n, "
					 "pg_catalog.row_number() OVER (PARTITION BY d.g) AS rn "
					 "FROM %s AS t JOIN (SELECT pg_catalog.row_number() OVER () AS g, "
					 "pg_catalog.count(*) AS n, %s FROM " STAGE " WHERE " DEL_PRED
					 " GROUP BY %s) AS d ON %s) AS m "
					 "WHERE x.ctid OPERATOR(pg_catalog.=) m.ctid "
					 "AND m.rn OPERATOR(pg_catalog.<=) m.n;\n",
					 dest, dest, cols.data, cols.data, match.data);
}

/*
 * The fast path of a version's first load (rows without positions nor
 * deletes, into the table that was empty when the version started): COPY
 * straight into it, as native logical replication's initial copy does.
 * Rows already there (a batch sent again after a crash, under another
 * batch id: a parallel sync's part) make the COPY fail with a unique
 * violation; the attempt is then made again through staging (upserts).
 */
static bool
load_direct(ApplyTxn *t, BatchStream *bs, const Segment *seg, const char *dest)
{
	StreamState *ss = &bs->state;
	StringInfoData sql;

	if (t->a->no_direct || seg->position || seg->deletes ||
		ss->loading == 0 || seg->version != ss->loading || ss->shadow)
		return false;
	initStringInfo(&sql);
	appendStringInfo(&sql, "COPY %s (", dest);
	pga_append_columns(&sql, seg->schema);
	appendStringInfoString(&sql, ") FROM STDIN");
	pga_txn_send(t, sql.data, (StringInfo) &seg->copy, true);
	return true;
}

/*
 * One segment's rows into dest (the table or its shadow): staging table,
 * COPY, drop what the state says is applied, merge, in one round trip.
 * Changes (positioned rows) of a version loading into a shadow table: the
 * shadow gets the upserts and loses the deleted keys (it holds the rows of
 * the version, no delete markers), and the deletes also go to the table
 * at once (soft: with their own time, kept by the activation).
 */
/* the staging table of seg's rows, and the COPY that fills it */
void
pga_append_stage(StringInfo sql, BatchStream *bs, const Segment *seg)
{
	ApplyStream *st = bs->st;
	const ApplySchema *s = seg->schema;
	char	  **types = st->pending == s ? st->pending_types : st->coltypes;

	appendStringInfoString(sql, "CREATE TEMP TABLE " STAGE " (");
	for (int i = 0; i < s->ncols; i++)
		appendStringInfo(sql, "%s%s %s", i ? ", " : "", quote_identifier(s->cols[i].name), types[i]);
	appendStringInfo(sql, "%s) ON COMMIT DROP;\n",
					 seg->position ? ", _pg_egress_pos text" : "");
	appendStringInfoString(sql, "COPY " STAGE " FROM STDIN;\n");
}

/*
 * after the staging table got seg's rows: drop what is applied, merge (the
 * staging table stays)
 */
void
pga_append_stage_apply(StringInfo sql, ApplyTxn *t, BatchStream *bs, const Segment *seg,
				   const char *dest)
{
	bool		into_shadow = strcmp(dest, bs->st->qtable) != 0;
	ApplyStream *st = bs->st;
	const ApplySchema *s = seg->schema;

	if (seg->position && bs->state.position)
		appendStringInfo(sql, "DELETE FROM " STAGE " WHERE _pg_egress_pos COLLATE \"C\" OPERATOR(pg_catalog.<=) %s;\n",
						 quote_literal_cstr(bs->state.position));
	if (s->nkeys == 0)
		append_keyless(sql, t->a, s, dest, seg);
	else
	{
		append_upsert(sql, t->c->conn, s, dest, seg);
		if (seg->deletes && into_shadow)
			append_deletes(sql, t->a, s, seg, dest, false);
		if (seg->deletes)
			append_deletes(sql, t->a, s, seg, st->qtable,
						   !t->a->sink->opts.hard_delete && s->deleted_at >= 0);
	}
}

/* ... and the staging table dropped */
void
pga_append_stage_merge(StringInfo sql, ApplyTxn *t, BatchStream *bs, const Segment *seg,
				   const char *dest)
{
	pga_append_stage_apply(sql, t, bs, seg, dest);
	appendStringInfoString(sql, "DROP TABLE " STAGE ";");
}

/*
 * One segment's rows into dest (the table or its shadow): staging table,
 * COPY, drop what the state says is applied, merge, in one round trip.
 * Changes (positioned rows) of a version loading into a shadow table: the
 * shadow gets the upserts and loses the deleted keys (it holds the rows of
 * the version, no delete markers), and the deletes also go to the table
 * at once (soft: with their own time, kept by the activation).
 */
static void
load_rows(ApplyTxn *t, BatchStream *bs, const Segment *seg, const char *dest)
{
	StringInfoData sql;

	if (load_direct(t, bs, seg, dest))
		return;
	initStringInfo(&sql);
	pga_append_stage(&sql, bs, seg);
	pga_append_stage_merge(&sql, t, bs, seg, dest);
	pga_txn_send(t, sql.data, (StringInfo) &seg->copy, false);
}

/* ---------------------------------------------------------------------
 * Applying: versions
 * ---------------------------------------------------------------------
 */

/*
 * the shadow table of version v: "<table>__v<v>"; a name too long for
 * NAMEDATALEN - 1 is clipped and gets a hash of the table's name
 */
static char *
shadow_name(ApplyStream *st, int64 v)
{
	char		suffix[32];
	int			keep;

	snprintf(suffix, sizeof(suffix), "__v" INT64_FORMAT, v);
	if (strlen(st->table) + strlen(suffix) > NAMEDATALEN - 1)
	{
		/* clipped: a hash of the whole name keeps long names that share a start apart */
		snprintf(suffix, sizeof(suffix), "_%08x__v" INT64_FORMAT,
				 (unsigned int) hash_bytes((const unsigned char *) st->table,
										   strlen(st->table)), v);
	}
	keep = pg_mbcliplen(st->table, strlen(st->table), NAMEDATALEN - 1 - strlen(suffix));
	return qualify(st->target_schema, psprintf("%.*s%s", keep, st->table, suffix));
}

bool
pga_query_bool(ApplyTxn *t, const char *sql)
{
	PGresult   *res = txn_exec(t, sql, NULL);
	bool		v = PQntuples(res) > 0 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;

	PQclear(res);
	return v;
}

static bool
relation_exists(ApplyTxn *t, const char *qname)
{
	return pga_query_bool(t, psprintf("SELECT pg_catalog.to_regclass(%s) IS NOT NULL",
								  quote_literal_cstr(qname)));
}

/* a version's time (epoch milliseconds) as a timestamp literal, UTC */
static char *
version_time(int64 v)
{
	TimestampTz ts = (TimestampTz) v * 1000 -
		(TimestampTz) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * USECS_PER_SEC;

	return quote_literal_cstr(utc_text(ts));
}

/*
 * Rows of the table that version v does not have (all of them when from is
 * NULL: a TRUNCATE) are deleted, or soft-deleted when the table has
 * _sdc_deleted_at and hard_delete is off.
 */
static void
retire_rows(ApplyTxn *t, ApplyStream *st, const ApplySchema *s, const char *from, int64 v)
{
	StringInfoData sql;
	bool		soft = !t->a->sink->opts.hard_delete && st->has_deleted_at;

	initStringInfo(&sql);
	if (soft)
		appendStringInfo(&sql, "UPDATE %s AS t SET _sdc_deleted_at = %s WHERE t._sdc_deleted_at IS NULL",
						 st->qtable, version_time(v));
	else
		appendStringInfo(&sql, "DELETE FROM %s AS t WHERE true", st->qtable);
	if (from && s->nkeys > 0)
	{
		appendStringInfo(&sql, " AND NOT EXISTS (SELECT 1 FROM %s s WHERE ", from);
		append_key_match(&sql, s, "s", "t");
		appendStringInfoChar(&sql, ')');
	}
	pga_txn_run(t, sql.data);
}

static void
start_version(ApplyTxn *t, BatchStream *bs, const ApplySchema *s, int64 v)
{
	ApplyStream *st = bs->st;
	StreamState *ss = &bs->state;

	if (ss->loading && ss->shadow)
		txn_ddl(t, psprintf("DROP TABLE IF EXISTS %s", shadow_name(st, ss->loading)));
	ss->shadow = pga_query_bool(t, psprintf("SELECT EXISTS (SELECT 1 FROM %s)", st->qtable));
	if (ss->shadow)
	{
		char	   *shadow = shadow_name(st, v);

		txn_ddl(t, psprintf("DROP TABLE IF EXISTS %s", shadow));
		txn_ddl(t, psprintf("CREATE TABLE %s (LIKE %s INCLUDING DEFAULTS INCLUDING INDEXES)",
							shadow, st->qtable));
	}
	ss->loading = v;
	ss->versions_changed = true;
}

/* the loading version becomes the table's contents */
static void
activate_version(ApplyTxn *t, BatchStream *bs, const ApplySchema *s)
{
	ApplyStream *st = bs->st;
	StreamState *ss = &bs->state;

	if (ss->shadow)
	{
		char	   *shadow = shadow_name(st, ss->loading);
		StringInfoData sql;

		retire_rows(t, st, s, shadow, ss->loading);
		initStringInfo(&sql);
		if (s->nkeys > 0)
			append_merge(&sql, t->c->conn, s, st->qtable, psprintf("%s AS s", shadow));
		else
		{
			appendStringInfo(&sql, "INSERT INTO %s (", st->qtable);
			pga_append_columns(&sql, s);
			appendStringInfoString(&sql, ") SELECT ");
			pga_append_columns(&sql, s);
			appendStringInfo(&sql, " FROM %s", shadow);
		}
		pga_txn_run(t, sql.data);
		txn_ddl(t, psprintf("DROP TABLE %s", shadow));
	}
	ss->active = ss->loading;
	ss->loading = 0;
	ss->shadow = false;
	ss->versions_changed = true;
}

/* a LOG_BASED TRUNCATE: a new version without rows, active at once */
static void
truncate_version(ApplyTxn *t, BatchStream *bs, const ApplySchema *s, int64 v)
{
	StreamState *ss = &bs->state;

	if (ss->loading && ss->shadow)
		txn_ddl(t, psprintf("DROP TABLE IF EXISTS %s", shadow_name(bs->st, ss->loading)));
	retire_rows(t, bs->st, s, NULL, v);
	ss->active = v;
	ss->loading = 0;
	ss->shadow = false;
	ss->versions_changed = true;
}

bool
pga_position_applied(const StreamState *ss, const char *position)
{
	return position && ss->position && strcmp(position, ss->position) <= 0;
}

static void
apply_activate(ApplyTxn *t, BatchStream *bs, const Segment *seg)
{
	StreamState *ss = &bs->state;
	int64		v = seg->version;

	if (pga_position_applied(ss, seg->position))
		return;
	pga_ensure_table(t, bs->st, seg->schema);
	if (seg->position)
	{
		if (v > ss->active)
			truncate_version(t, bs, seg->schema, v);
		bs->new_position = seg->position;
	}
	else if (ss->loading == v)
		activate_version(t, bs, seg->schema);
	else if (v > ss->active)
		start_version(t, bs, seg->schema, v);
}

static void
apply_rows(ApplyTxn *t, BatchStream *bs, const Segment *seg)
{
	StreamState *ss = &bs->state;
	const char *dest = bs->st->qtable;

	if (seg->nrows == 0 || pga_position_applied(ss, seg->position))
		return;
	pga_ensure_table(t, bs->st, seg->schema);

	/*
	 * A change of the loading version.  Only the closing ACTIVATE_VERSION
	 * says the version is complete: a chunked backfill sends changes of the
	 * version between its chunks, and rows not read yet must not be
	 * retired.  They go where the version's rows go: the shadow table.
	 * Without one (the version loads straight into a table that was empty)
	 * nothing is there to retire: the version counts as active from here,
	 * which also ends the direct path (its later rows may meet keys the
	 * changes inserted).
	 */
	if (seg->position && ss->loading && seg->version == ss->loading && !ss->shadow)
		activate_version(t, bs, seg->schema);
	if (ss->loading && seg->version == ss->loading && ss->shadow)
	{
		dest = shadow_name(bs->st, ss->loading);
		/* the shadow follows the table's evolution */
		evolve_table(t, dest, seg->schema, target_columns(t, dest), true);
	}
	load_rows(t, bs, seg, dest);
	if (seg->position)
		bs->new_position = seg->position;
}

/* ---------------------------------------------------------------------
 * Applying: state
 * ---------------------------------------------------------------------
 */

static void
ensure_state_table(ApplyTxn *t)
{
	ApplySink  *a = t->a;

	if (t->c->state_ok)
		return;
	if (!relation_exists(t, a->qstate))
	{
		txn_lock(t, a->qstate);
		create_schema(t, a->state_schema);
		txn_ddl(t, psprintf("CREATE TABLE IF NOT EXISTS %s (source text, destination text, "
							"stream text, position text, batch_id text, loading_version bigint, "
							"active_version bigint, bookmark jsonb, updated_at timestamptz, "
							"PRIMARY KEY (source, destination, stream))", a->qstate));
		grant_to(t, psprintf("SELECT ON %s", a->qstate));
	}
	/* set only after the commit: a rolled back CREATE must be made again */
}

static void
read_states(ApplyTxn *t, List *streams)
{
	StringInfoData sql;
	PGresult   *res;
	ListCell   *lc;
	bool		first = true;

	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT destination, stream, position, batch_id, loading_version, "
					 "active_version FROM %s WHERE source OPERATOR(pg_catalog.=) %s "
					 "AND (destination, stream) IN (", t->a->qstate,
					 quote_literal_cstr(t->a->source));
	foreach(lc, streams)
	{
		BatchStream *bs = lfirst(lc);

		memset(&bs->state, 0, sizeof(StreamState));
		bs->new_position = NULL;
		appendStringInfo(&sql, "%s(%s, %s)", first ? "" : ", ",
						 quote_literal_cstr(bs->st->dest), quote_literal_cstr(bs->st->id));
		first = false;
	}
	appendStringInfoChar(&sql, ')');
	res = txn_exec(t, sql.data, NULL);
	for (int i = 0; i < PQntuples(res); i++)
		foreach(lc, streams)
		{
			BatchStream *bs = lfirst(lc);
			StreamState *ss = &bs->state;

			if (strcmp(bs->st->dest, PQgetvalue(res, i, 0)) != 0 ||
				strcmp(bs->st->id, PQgetvalue(res, i, 1)) != 0)
				continue;
			ss->found = true;
			ss->position = PQgetisnull(res, i, 2) ? NULL : pstrdup(PQgetvalue(res, i, 2));
			ss->batch_id = PQgetisnull(res, i, 3) ? NULL : pstrdup(PQgetvalue(res, i, 3));
			ss->loading = PQgetisnull(res, i, 4) ? 0 : strtoi64(PQgetvalue(res, i, 4), NULL, 10);
			ss->active = PQgetisnull(res, i, 5) ? 0 : strtoi64(PQgetvalue(res, i, 5), NULL, 10);
		}
	PQclear(res);
	/* does the loading version have a shadow table? */
	foreach(lc, streams)
	{
		BatchStream *bs = lfirst(lc);

		if (bs->state.loading)
			bs->state.shadow = relation_exists(t, shadow_name(bs->st, bs->state.loading));
	}
}

static const char *
lit_or_null(const char *s)
{
	return s ? quote_literal_cstr(s) : "NULL";
}

static const char *
version_or_null(int64 v)
{
	return v ? psprintf(INT64_FORMAT, v) : "NULL";
}

static void
write_state(ApplyTxn *t, BatchStream *bs)
{
	StreamState *ss = &bs->state;
	StringInfoData sql;

	initStringInfo(&sql);
	appendStringInfo(&sql, "INSERT INTO %s AS s (source, destination, stream, position, batch_id, "
					 "loading_version, active_version, bookmark, updated_at) "
					 "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, pg_catalog.now()) "
					 "ON CONFLICT (source, destination, stream) DO UPDATE SET "
					 "position = COALESCE(EXCLUDED.position, s.position), "
					 "batch_id = EXCLUDED.batch_id, "
					 "bookmark = COALESCE(EXCLUDED.bookmark, s.bookmark), "
					 "updated_at = EXCLUDED.updated_at",
					 t->a->qstate, quote_literal_cstr(t->a->source),
					 quote_literal_cstr(bs->st->dest), quote_literal_cstr(bs->st->id),
					 lit_or_null(bs->new_position), quote_literal_cstr(t->batch_id),
					 version_or_null(ss->loading), version_or_null(ss->active),
					 lit_or_null(bs->bookmark));
	/* versions only when this batch changed them: parallel parts do not */
	if (ss->versions_changed)
		appendStringInfoString(&sql, ", loading_version = EXCLUDED.loading_version, "
							   "active_version = EXCLUDED.active_version");
	pga_txn_send(t, sql.data, NULL, false);
}

/* ---------------------------------------------------------------------
 * Applying: a connection's transaction
 * ---------------------------------------------------------------------
 */

static void
connect_if_needed(ApplySink *a, ApplyConn *c)
{
	char	   *error = NULL;
	bool		refused = false;

	if (c->conn && PQstatus(c->conn) == CONNECTION_OK &&
		PQtransactionStatus(c->conn) == PQTRANS_IDLE)
		return;
	pga_close_conn(c);
	c->conn = egress_pgconn_connect_ex(a->target, &error, &refused);
	if (c->conn == NULL && refused)
		ereport(ERROR,
				(errcode(EGRESS_ERRCODE_REJECTED),
				 errmsg("could not connect to PostgreSQL destination %s: %s",
						a->sink->location, error)));
	if (c->conn == NULL)
		ereport(ERROR, (errcode(PGA_ERRCODE_RETRY), errmsg("%s", error)));
}

bool
pga_stream_applied(ApplyTxn *t, BatchStream *bs)
{
	/* a batch sent again: the state row says it is applied */
	return bs->state.batch_id && strcmp(bs->state.batch_id, t->batch_id) == 0;
}

/* segments [from, upto) of a stream */
void
pga_apply_segments(ApplyTxn *t, BatchStream *bs, int from, int upto)
{
	t->bs = bs;
	for (int i = from; i < upto; i++)
	{
		Segment    *seg = list_nth(bs->segments, i);

		CHECK_FOR_INTERRUPTS();
		if (seg->kind == SEG_ACTIVATE)
			apply_activate(t, bs, seg);
		else
			apply_rows(t, bs, seg);
	}
	t->bs = NULL;
}

/* a stream's segments from the from'th, then its state row */
void
pga_apply_stream(ApplyTxn *t, BatchStream *bs, int from)
{
	if (pga_stream_applied(t, bs))
		return;
	pga_apply_segments(t, bs, from, list_length(bs->segments));
	t->bs = bs;
	write_state(t, bs);
	t->bs = NULL;
}

void
pga_txn_begin(ApplyTxn *t, List *streams)
{
	connect_if_needed(t->a, t->c);
	pga_txn_run(t, "BEGIN; SET LOCAL client_min_messages = warning");
	ensure_state_table(t);
	read_states(t, streams);
}

void
pga_stream_committed(ApplySink *a, ApplyStream *st)
{
	if (st->pending)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(a->cxt);

		if (st->coltypes)
		{
			for (int c = 0; c < st->ncoltypes; c++)
				pfree(st->coltypes[c]);
			pfree(st->coltypes);
		}
		st->verified = st->pending;
		st->ncoltypes = st->verified->ncols;
		st->coltypes = palloc(sizeof(char *) * st->verified->ncols);
		for (int c = 0; c < st->verified->ncols; c++)
			st->coltypes[c] = pstrdup(st->pending_types[c]);
		MemoryContextSwitchTo(oldcxt);
	}
	st->pending = NULL;
}

/* after COMMIT: what the tables were made to match holds */
static void
txn_committed(ApplyTxn *t, List *streams)
{
	ListCell   *lc;

	t->c->state_ok = true;
	/* committed: what the tables were made to match holds */
	foreach(lc, streams)
		pga_stream_committed(t->a, ((BatchStream *) lfirst(lc))->st);
}

void
pga_txn_commit(ApplyTxn *t, List *streams)
{
	pga_txn_run(t, "COMMIT");
	txn_committed(t, streams);
}


/* does name end in "__v<digits>", as a shadow table's name (shadow_name)? */
static bool
looks_like_shadow(const char *name)
{
	int			n = strlen(name);
	int			d = n;

	while (d > 0 && name[d - 1] >= '0' && name[d - 1] <= '9')
		d--;
	return d < n && d >= 3 && strncmp(name + d - 3, "__v", 3) == 0;
}

/*
 * A stream whose target table would be the state table (a source table
 * named _pg_egress_state, mapped to the state table's schema) would merge
 * its rows into other streams' state; one whose name looks like a shadow
 * table ("<table>__v<digits>") could be taken for, or dropped as, another
 * stream's shadow table.  Both are refused before anything is written.
 */
static void
check_target_name(ApplySink *a, ApplyStream *st)
{
	if (st->ambiguous)
		ereport(ERROR,
				(errcode(EGRESS_ERRCODE_REJECTED),
				 errmsg("PostgreSQL destination %s refused stream \"%s\": its schema and table names are ambiguous",
						a->sink->location, st->id),
				 errdetail("Stream id \"%s\" has more than one \"-\": it could be the id of more than one source table (schema and table names joined by \"-\"), which would load into one target table.",
						   st->id),
				 errhint("Rename the source table or schema so that neither name contains \"-\".")));
	if (strcmp(st->target_schema, a->state_schema) == 0 &&
		strcmp(st->table, STATE_TABLE) == 0)
		ereport(ERROR,
				(errcode(EGRESS_ERRCODE_REJECTED),
				 errmsg("PostgreSQL destination %s refused stream \"%s\": its target table %s is the destination's state table",
						a->sink->location, st->id, st->qtable),
				 errdetail("Table %s holds the position of each stream loaded into this destination; rows of another table cannot go there.",
						   a->qstate),
				 errhint("Rename the source table, or map its schema to another target schema with \"schema_mapping\".")));
	if (looks_like_shadow(st->table))
		ereport(ERROR,
				(errcode(EGRESS_ERRCODE_REJECTED),
				 errmsg("PostgreSQL destination %s refused stream \"%s\": its target table name %s looks like a shadow table",
						a->sink->location, st->id, quote_identifier(st->table)),
				 errdetail("Names ending in \"__v\" and digits are those of the tables a new version of a stream is loaded into; such a table is dropped when its version is activated."),
				 errhint("Rename the source table, or map its schema to another target schema with \"schema_mapping\".")));
}

/* rejections found while parsing, and keyless streams when keys are required */
static void
check_batch(ApplySink *a)
{
	ListCell   *lc;

	foreach(lc, a->batch_streams)
	{
		BatchStream *bs = lfirst(lc);
		ApplySchema *s = bs->st->schema;

		check_target_name(a, bs->st);
		if (bs->error)
			ereport(ERROR,
					(errcode(EGRESS_ERRCODE_REJECTED),
					 errmsg("PostgreSQL destination %s refused stream \"%s\": %s",
							a->sink->location, bs->st->id, bs->error)));
		if (s && s->missing_key)
			ereport(ERROR,
					(errcode(EGRESS_ERRCODE_REJECTED),
					 errmsg("PostgreSQL destination %s refused stream \"%s\": key property %s is not in its schema",
							a->sink->location, bs->st->id, quote_identifier(s->missing_key))));
		if (s && s->nkeys == 0 && a->sink->opts.primary_key_required)
			ereport(ERROR,
					(errcode(EGRESS_ERRCODE_REJECTED),
					 errmsg("table %s of PostgreSQL destination %s has no primary key",
							bs->st->qtable, a->sink->location),
					 errdetail("Stream \"%s\" has no key properties, and the destination's option \"primary_key_required\" is true.",
							   bs->st->id),
					 errhint("Add a primary key to the source table, or set \"primary_key_required\": false on the destination to append rows.")));
	}
}

void
pga_forget_pending(ApplySink *a)
{
	ListCell   *lc;

	/* a failed transaction may have rolled back DDL: check tables again */
	foreach(lc, a->streams)
	{
		ApplyStream *st = lfirst(lc);

		st->pending = NULL;
		st->verified = NULL;
	}
}

/*
 * Each connection's streams, in a transaction of its own, the connections
 * concurrently: the heavy statements (loads, state rows, COMMIT) are sent
 * without waiting (txn_send), and a connection's results are read only
 * when its next statement needs them, after the others got theirs.
 */
static void
apply_all(ApplySink *a, const char *batch_id)
{
	ApplyTxn   *txns = palloc0(sizeof(ApplyTxn) * a->nconns);
	List	  **lists = palloc0(sizeof(List *) * a->nconns);
	int			rounds = 0;
	ListCell   *lc;

	foreach(lc, a->batch_streams)
	{
		BatchStream *bs = lfirst(lc);

		lists[bs->st->conn] = lappend(lists[bs->st->conn], bs);
		rounds = Max(rounds, list_length(lists[bs->st->conn]));
	}
	for (int i = 0; i < a->nconns; i++)
	{
		ApplyTxn	t = {a, &a->conns[i], batch_id, NULL};

		txns[i] = t;
		if (lists[i] != NIL)
			pga_txn_begin(&txns[i], lists[i]);
	}
	for (int k = 0; k < rounds; k++)
		for (int i = 0; i < a->nconns; i++)
			if (k < list_length(lists[i]))
				pga_apply_stream(&txns[i], list_nth(lists[i], k), 0);
	for (int i = 0; i < a->nconns; i++)
		if (lists[i] != NIL)
			pga_txn_send(&txns[i], "COMMIT", NULL, false);
	for (int i = 0; i < a->nconns; i++)
		if (lists[i] != NIL)
		{
			pga_txn_collect(&txns[i]);
			txn_committed(&txns[i], lists[i]);
		}
}

static bool
attempt_once(ApplySink *a, const char *batch_id, EgressSinkFailure *failure)
{
	MemoryContext oldcxt;
	MemoryContext errcxt;
	volatile bool ok = true;

	a->direct_conflict = false;
	MemoryContextReset(a->attempt_cxt);
	oldcxt = MemoryContextSwitchTo(a->attempt_cxt);
	errcxt = CurrentMemoryContext;
	PG_TRY();
	{
		if (a->early != EARLY_COPYING || !pga_early_finish(a, batch_id))
			apply_all(a, batch_id);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(errcxt);
		edata = CopyErrorData();
		pga_forget_pending(a);
		if (edata->sqlerrcode != PGA_ERRCODE_RETRY)
		{
			MemoryContextSwitchTo(oldcxt);
			PG_RE_THROW();
		}
		FlushErrorState();
		failure->what = MemoryContextStrdup(oldcxt, edata->message);
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	return ok;
}

static bool
pga_commit_attempt(EgressSink *sink, const char *batch_id, EgressSinkFailure *failure)
{
	ApplySink  *a = sink->private_data;

	check_batch(a);
	a->stale_catalog = false;
	if (attempt_once(a, batch_id, failure))
		return true;
	/* the tables changed by hand: at once again, checking them (once) */
	if (a->stale_catalog && !a->catalog_retried)
	{
		a->catalog_retried = true;
		pfree(failure->what);
		failure->what = NULL;
		if (attempt_once(a, batch_id, failure))
			return true;
	}
	/* a direct COPY found rows of the batch: at once again, through staging */
	if (a->direct_conflict && !a->no_direct)
	{
		a->no_direct = true;
		pfree(failure->what);
		failure->what = NULL;
		return attempt_once(a, batch_id, failure);
	}
	return false;
}

static void
pga_commit_batch(EgressSink *sink, const char *batch_id)
{
	ApplySink  *a = sink->private_data;

	/* the last incomplete line, if the writer did not end it */
	if (a->carry.data && a->carry.len > 0)
	{
		process_line(a, a->carry.data, a->carry.len);
		resetStringInfo(&a->carry);
	}
	if (a->announced == NULL)
		a->early_multi = list_length(a->batch_streams) > 1;
	/* the last batch's COMMIT first (its outcome unknown: an ERROR) */
	pga_commit_check(a);
	egress_sink_commit_with_retries(sink, batch_id);
	forget_batch(a);
}

/*
 * commit_batch, but a batch of changes loaded early (chunks) may return
 * with its COMMIT under way: true then, and commit_batch_finish says
 * whether it was acknowledged.  Meanwhile the next batch is written: its
 * early load starts once the COMMIT is done.
 */
static bool
pga_commit_batch_start(EgressSink *sink, const char *batch_id)
{
	ApplySink  *a = sink->private_data;

	a->want_async = true;
	PG_TRY();
	{
		pga_commit_batch(sink, batch_id);
	}
	PG_FINALLY();
	{
		a->want_async = false;
	}
	PG_END_TRY();
	return a->commit_inflight;
}

static void
pga_commit_batch_finish(EgressSink *sink)
{
	pga_commit_check(sink->private_data);
}

const EgressSinkOps egress_pg_apply_ops = {
	.begin_batch = pga_begin_batch,
	.announce_batch_id = pga_announce_batch_id,
	.write = pga_write,
	.commit_batch = pga_commit_batch,
	.commit_attempt = pga_commit_attempt,
	.commit_batch_start = pga_commit_batch_start,
	.commit_batch_finish = pga_commit_batch_finish,
	.abort_batch = pga_abort_batch,
	.cleanup = pga_cleanup,
	.close = pga_close,
	.probe = egress_postgres_probe,
};

/* <system identifier>/<database name>: which source the state rows are of */
static char *
source_id(void)
{
	char	   *db;

	if (IsTransactionState())
		db = get_database_name(MyDatabaseId);
	else
	{
		MemoryContext cxt = CurrentMemoryContext;

		StartTransactionCommand();
		db = MemoryContextStrdup(cxt, get_database_name(MyDatabaseId));
		CommitTransactionCommand();
		MemoryContextSwitchTo(cxt);
	}
	return psprintf(UINT64_FORMAT "/%s", GetSystemIdentifier(), db ? db : "?");
}

void *
egress_pg_apply_create(EgressSink *sink, EgressPgTarget *target)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_egress postgres sink",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext oldcxt = MemoryContextSwitchTo(cxt);
	ApplySink  *a = palloc0(sizeof(ApplySink));

	a->sink = sink;
	a->target = target;
	a->cxt = cxt;
	a->batch_cxt = AllocSetContextCreate(cxt, "pg_egress postgres batch", ALLOCSET_DEFAULT_SIZES);
	a->attempt_cxt = AllocSetContextCreate(cxt, "pg_egress postgres attempt", ALLOCSET_DEFAULT_SIZES);
	a->line_cxt = AllocSetContextCreate(cxt, "pg_egress postgres line", ALLOCSET_DEFAULT_SIZES);
	a->lex = makeJsonLexContextCstringLen("", 0, GetDatabaseEncoding(), false);
	a->strval = makeStringInfo();
	a->source = source_id();
	a->state_schema = pstrdup(sink->opts.default_target_schema ?
							  sink->opts.default_target_schema : "public");
	a->qstate = qualify(a->state_schema, STATE_TABLE);
	a->nconns = Max(sink->opts.parallelism, 1);
	a->conns = palloc0(sizeof(ApplyConn) * a->nconns);
	MemoryContextSwitchTo(oldcxt);
	return a;
}
