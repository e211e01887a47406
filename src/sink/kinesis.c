/*-------------------------------------------------------------------------
 * kinesis.c
 *	  Kinesis destinations (kinesis://<stream>): every message of a batch is
 *	  one Kinesis record, sent with PutRecords at commit (net/kinesis.c).
 *
 * Options: "region" (else as for S3), "format" ("singer", the default, or
 * "pg_kinesis"), "partition_key" ("primary_key", the default, "table", or
 * a column name), "max_inflight" (PutRecords calls at once, default 4).
 *
 * singer format: the batch arrives through write() as Singer lines, in
 * pieces that need not end at a line's end; each complete line becomes one
 * record (without its newline).  Its partition key, unless the caller gives
 * one with write_record(): RECORD lines by the partition_key option, from
 * the stream name and the key_properties of the stream's last SCHEMA line
 * (primary_key), the stream name (table), or one column's value; SCHEMA
 * and ACTIVATE_VERSION lines the stream name; STATE lines a key of their
 * own, "pg_egress.state".  A row's key values make its partition key, so
 * one row's changes stay in order on one shard.  Every line that is not a
 * RECORD is a barrier (net/kinesis.h): a SCHEMA is accepted before any
 * RECORD after it is sent, a STATE only after every RECORD before it.
 *
 * Singer RECORD lines come through write_record() with their key from
 * every caller today (the CDC worker computes it from the change, also for
 * rows read again for unchanged TOAST values; the snapshot writer from the
 * row): not parsed again.  Lines given to write() are parsed: SCHEMA,
 * STATE and ACTIVATE_VERSION (barriers), and any RECORD a caller hands
 * over as plain text.
 *
 * pg_kinesis format: the records come through write_record() from the CDC
 * worker (encode/pg_kinesis.h renders them), one change each, with their
 * partition key.
 *
 * commit_batch returns once Kinesis has accepted every record of the batch.
 * A record over Kinesis' 1 MiB limit fails the batch with
 * EGRESS_ERRCODE_REJECTED and a message that names the row's key and the
 * size: sending it again cannot succeed, so the stream stops (state error)
 * rather than skipping it.
 *
 * Credentials and region: the server's, as for S3 destinations;
 * pg_egress.kinesis_endpoint points at a Kinesis-compatible server.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/jsonapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "nodes/pg_list.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "net/kinesis.h"
#include "sink/sink.h"

#define STATE_PARTITION_KEY "pg_egress.state"

typedef enum KinesisFormat
{
	KFORMAT_SINGER,
	KFORMAT_PG_KINESIS
} KinesisFormat;

typedef enum KinesisKeyMode
{
	KKEY_PRIMARY_KEY,
	KKEY_TABLE,
	KKEY_COLUMN
} KinesisKeyMode;

typedef struct StreamKeys
{
	char		stream[NAMEDATALEN * 2 + 8];
	List	   *key_properties; /* of char *, in the sink's context */
} StreamKeys;

typedef struct KinesisSink
{
	MemoryContext cxt;
	MemoryContext line_cxt;		/* reset per line */
	char	   *stream;			/* the Kinesis stream */
	char	   *region;
	KinesisFormat format;
	KinesisKeyMode key_mode;
	char	   *key_column;
	int			max_inflight;
	EgressKinesisClient *kc;	/* opened at the first batch */
	StringInfoData carry;		/* a line not complete yet */
	HTAB	   *schemas;		/* Singer stream -> key_properties */
	bool		open;
} KinesisSink;

/* ---------------------------------------------------------------------
 * Singer lines
 * ---------------------------------------------------------------------
 */

typedef struct LineField
{
	char	   *name;
	char	   *value;			/* text of a scalar, raw JSON otherwise; NULL:
								 * JSON null */
} LineField;

typedef struct LineParse
{
	JsonLexContext *lex;
	int			depth;
	char	   *field;			/* current field name at depth 1 */
	char	   *rfield;			/* current field name at depth 2 of record */
	bool		in_record;
	bool		in_keyprops;
	char	   *type;
	char	   *stream;
	List	   *key_properties;
	bool		has_key_properties;
	List	   *fields;			/* of LineField, the record's */
	char	   *nested_start;	/* a record field's object/array */
} LineParse;

static void
lp_object_start(void *st)
{
	LineParse  *lp = st;

	if (lp->depth == 1 && lp->field && strcmp(lp->field, "record") == 0)
		lp->in_record = true;
	else if (lp->depth == 2 && lp->in_record && lp->rfield)
		lp->nested_start = lp->lex->token_start;
	lp->depth++;
}

static void
lp_nested_end(LineParse *lp)
{
	lp->depth--;
	if (lp->depth == 2 && lp->in_record && lp->rfield && lp->nested_start)
	{
		LineField  *f = palloc(sizeof(LineField));

		f->name = lp->rfield;
		f->value = pnstrdup(lp->nested_start,
							lp->lex->token_terminator - lp->nested_start);
		lp->fields = lappend(lp->fields, f);
		lp->nested_start = NULL;
	}
	if (lp->depth == 1)
	{
		lp->in_record = false;
		lp->in_keyprops = false;
	}
}

static void
lp_object_end(void *st)
{
	lp_nested_end(st);
}

static void
lp_array_start(void *st)
{
	LineParse  *lp = st;

	if (lp->depth == 1 && lp->field && strcmp(lp->field, "key_properties") == 0)
	{
		lp->in_keyprops = true;
		lp->has_key_properties = true;
	}
	else if (lp->depth == 2 && lp->in_record && lp->rfield)
		lp->nested_start = lp->lex->token_start;
	lp->depth++;
}

static void
lp_array_end(void *st)
{
	lp_nested_end(st);
}

static void
lp_field_start(void *st, char *fname, bool isnull)
{
	LineParse  *lp = st;

	if (lp->depth == 1)
		lp->field = fname;
	else if (lp->depth == 2 && lp->in_record)
		lp->rfield = fname;
}

static void
lp_scalar(void *st, char *token, JsonTokenType type)
{
	LineParse  *lp = st;

	if (lp->depth == 1 && lp->field)
	{
		if (strcmp(lp->field, "type") == 0 && type == JSON_TOKEN_STRING)
			lp->type = token;
		else if (strcmp(lp->field, "stream") == 0 && type == JSON_TOKEN_STRING)
			lp->stream = token;
	}
	else if (lp->depth == 2 && lp->in_keyprops && type == JSON_TOKEN_STRING)
		lp->key_properties = lappend(lp->key_properties, token);
	else if (lp->depth == 2 && lp->in_record && lp->rfield)
	{
		LineField  *f = palloc(sizeof(LineField));

		f->name = lp->rfield;
		f->value = type == JSON_TOKEN_NULL ? NULL : token;
		lp->fields = lappend(lp->fields, f);
	}
}

static void
parse_line(const char *line, size_t len, LineParse *lp)
{
	JsonSemAction sem = {0};
	JsonParseErrorType rc;

	memset(lp, 0, sizeof(*lp));
	lp->lex = makeJsonLexContextCstringLen(unconstify(char *, line), len,
										   GetDatabaseEncoding(), true);
	sem.semstate = lp;
	sem.object_start = lp_object_start;
	sem.object_end = lp_object_end;
	sem.array_start = lp_array_start;
	sem.array_end = lp_array_end;
	sem.object_field_start = lp_field_start;
	sem.scalar = lp_scalar;
	rc = pg_parse_json(lp->lex, &sem);
	if (rc != JSON_SUCCESS)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("a Singer message for Kinesis is not valid JSON"),
				 errdetail_internal("%s", json_errdetail(rc, lp->lex))));
}

static const char *
field_value(LineParse *lp, const char *name, bool *found)
{
	ListCell   *lc;

	foreach(lc, lp->fields)
	{
		LineField  *f = lfirst(lc);

		if (strcmp(f->name, name) == 0)
		{
			*found = true;
			return f->value;
		}
	}
	*found = false;
	return NULL;
}

static StreamKeys *
stream_keys(KinesisSink *ks, const char *stream)
{
	char		k[NAMEDATALEN * 2 + 8];

	if (stream == NULL)
		return NULL;
	strlcpy(k, stream, sizeof(k));
	return hash_search(ks->schemas, k, HASH_FIND, NULL);
}

/* "(id, region)=(5, eu)" of a row, for messages */
static char *
key_label(KinesisSink *ks, LineParse *lp)
{
	StreamKeys *sk = stream_keys(ks, lp->stream);
	StringInfoData buf;
	ListCell   *lc;
	bool		found;

	initStringInfo(&buf);
	if (lp->type && strcmp(lp->type, "RECORD") != 0)
	{
		appendStringInfo(&buf, "%s message", lp->type);
		if (lp->stream)
			appendStringInfo(&buf, " of stream \"%s\"", lp->stream);
		return buf.data;
	}
	appendStringInfo(&buf, "row ");
	if (sk && sk->key_properties != NIL)
	{
		appendStringInfoChar(&buf, '(');
		foreach(lc, sk->key_properties)
			appendStringInfo(&buf, "%s%s", foreach_current_index(lc) > 0 ? ", " : "",
							 (char *) lfirst(lc));
		appendStringInfoString(&buf, ")=(");
		foreach(lc, sk->key_properties)
		{
			const char *v = field_value(lp, lfirst(lc), &found);

			appendStringInfo(&buf, "%s%s", foreach_current_index(lc) > 0 ? ", " : "",
							 v ? v : "null");
		}
		appendStringInfoString(&buf, ") ");
	}
	else
		appendStringInfoString(&buf, "without key ");
	appendStringInfo(&buf, "of stream \"%s\"", lp->stream ? lp->stream : "?");
	return buf.data;
}

/* the partition key of a RECORD line */
static char *
record_partition_key(KinesisSink *ks, LineParse *lp)
{
	StringInfoData buf;
	bool		found;
	const char *v;
	const char *stream = lp->stream ? lp->stream : "";

	initStringInfo(&buf);
	appendStringInfoString(&buf, stream);
	switch (ks->key_mode)
	{
		case KKEY_TABLE:
			break;
		case KKEY_COLUMN:
			v = field_value(lp, ks->key_column, &found);
			appendStringInfo(&buf, "|%s", found ? (v ? v : "null") : "");
			break;
		case KKEY_PRIMARY_KEY:
			{
				StreamKeys *sk = stream_keys(ks, lp->stream);
				ListCell   *lc;

				/* no key (no SCHEMA seen, or a table without one): the table */
				if (sk == NULL)
					break;
				foreach(lc, sk->key_properties)
				{
					v = field_value(lp, lfirst(lc), &found);
					appendStringInfo(&buf, "|%s", v ? v : "null");
				}
				break;
			}
	}
	return egress_kinesis_partition_key(buf.data, buf.len);
}

/* one complete message; partition_key NULL: derived from the line */
static void
queue_message(EgressSink *sink, const char *data, size_t len,
			  const char *partition_key)
{
	KinesisSink *ks = sink->private_data;
	MemoryContext old;
	LineParse	lp;
	char	   *key;
	bool		barrier = false;

	while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
		len--;
	if (len == 0)
		return;
	if (partition_key != NULL)
	{
		size_t		keylen = strlen(partition_key);

		/* the usual case: a record with its key, nothing to allocate */
		if (keylen > 0 && keylen <= KINESIS_MAX_KEY_BYTES &&
			len + keylen <= KINESIS_MAX_RECORD_BYTES)
		{
			egress_kinesis_add(ks->kc, data, len, partition_key, false, NULL);
			return;
		}
	}
	old = MemoryContextSwitchTo(ks->line_cxt);
	if (partition_key != NULL)
	{
		/*
		 * A record with its key (write_record): a rendered change, or a
		 * Singer RECORD, the only Singer message callers give a key: no
		 * line to read, no barrier.
		 */
		memset(&lp, 0, sizeof(lp));
		key = egress_kinesis_partition_key(partition_key, strlen(partition_key));
	}
	else
	{
		if (ks->format == KFORMAT_PG_KINESIS)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("format \"pg_kinesis\" of Kinesis stream \"%s\" is written only by LOG_BASED streams",
							ks->stream),
					 errdetail("This stream sends Singer messages."),
					 errhint("Use \"format\": \"singer\" for FULL_TABLE and INCREMENTAL streams.")));
		parse_line(data, len, &lp);
		if (lp.type == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("a Singer message for Kinesis has no type")));
		if (strcmp(lp.type, "SCHEMA") == 0 && lp.stream && lp.has_key_properties)
		{
			char		k[NAMEDATALEN * 2 + 8];
			StreamKeys *sk;
			bool		found;
			ListCell   *lc;

			strlcpy(k, lp.stream, sizeof(k));
			sk = hash_search(ks->schemas, k, HASH_ENTER, &found);
			if (found)
				list_free_deep(sk->key_properties);
			sk->key_properties = NIL;
			MemoryContextSwitchTo(ks->cxt);
			foreach(lc, lp.key_properties)
				sk->key_properties = lappend(sk->key_properties, pstrdup(lfirst(lc)));
			MemoryContextSwitchTo(ks->line_cxt);
		}
		barrier = strcmp(lp.type, "RECORD") != 0;
		if (partition_key != NULL)
			key = egress_kinesis_partition_key(partition_key, strlen(partition_key));
		else if (strcmp(lp.type, "RECORD") == 0)
			key = record_partition_key(ks, &lp);
		else if (strcmp(lp.type, "STATE") == 0)
			key = pstrdup(STATE_PARTITION_KEY);
		else
			key = egress_kinesis_partition_key(lp.stream ? lp.stream : lp.type,
											   strlen(lp.stream ? lp.stream : lp.type));
	}
	/* a Singer RECORD given with its key: read it now, to name the row */
	if (len + strlen(key) > KINESIS_MAX_RECORD_BYTES &&
		lp.lex == NULL && ks->format == KFORMAT_SINGER)
		parse_line(data, len, &lp);
	if (len + strlen(key) > KINESIS_MAX_RECORD_BYTES)
		ereport(ERROR,
				(errcode(EGRESS_ERRCODE_REJECTED),
				 errmsg("%s is too large for Kinesis stream \"%s\": %zu bytes",
						lp.lex ? key_label(ks, &lp) : psprintf("record of partition key \"%s\"", key),
						ks->stream, len + strlen(key)),
				 errdetail("A Kinesis record, partition key included, has at most %d bytes.",
						   KINESIS_MAX_RECORD_BYTES),
				 errhint("The stream stops here; nothing after this record is sent. Exclude the column or the row, then resync the stream.")));
	egress_kinesis_add(ks->kc, data, len, key, barrier, NULL);
	MemoryContextSwitchTo(old);
	MemoryContextReset(ks->line_cxt);
}

/* ---------------------------------------------------------------------
 * Sink operations
 * ---------------------------------------------------------------------
 */

static void
kinesis_begin_batch(EgressSink *sink, const EgressBatchInfo *info)
{
	KinesisSink *ks = sink->private_data;

	if (ks->kc == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(ks->cxt);

		ks->kc = egress_kinesis_open(ks->stream, ks->region, ks->max_inflight);
		MemoryContextSwitchTo(old);
	}
	egress_kinesis_discard(ks->kc);
	resetStringInfo(&ks->carry);
	ks->open = true;
}

static void
kinesis_write(EgressSink *sink, const char *data, size_t len)
{
	KinesisSink *ks = sink->private_data;
	const char *end = data + len;

	while (data < end)
	{
		const char *nl = memchr(data, '\n', end - data);

		if (nl == NULL)
		{
			appendBinaryStringInfo(&ks->carry, data, end - data);
			return;
		}
		if (ks->carry.len > 0)
		{
			appendBinaryStringInfo(&ks->carry, data, nl - data);
			queue_message(sink, ks->carry.data, ks->carry.len, NULL);
			resetStringInfo(&ks->carry);
		}
		else
			queue_message(sink, data, nl - data, NULL);
		data = nl + 1;
	}
}

static void
kinesis_write_record(EgressSink *sink, const char *data, size_t len,
					 const char *partition_key)
{
	KinesisSink *ks = sink->private_data;

	if (ks->carry.len > 0)
	{
		queue_message(sink, ks->carry.data, ks->carry.len, NULL);
		resetStringInfo(&ks->carry);
	}
	queue_message(sink, data, len, partition_key);
}

static void
kinesis_commit_batch(EgressSink *sink, const char *batch_id)
{
	KinesisSink *ks = sink->private_data;

	if (ks->carry.len > 0)
	{
		queue_message(sink, ks->carry.data, ks->carry.len, NULL);
		resetStringInfo(&ks->carry);
	}
	egress_kinesis_flush(ks->kc, sink->keep_retrying, sink->keep_retrying_arg);
	egress_sink_retry_done(sink);
	ks->open = false;
	if (ks->carry.maxlen > 8 * 1024 * 1024)
	{
		pfree(ks->carry.data);
		ks->carry.data = MemoryContextAlloc(ks->cxt, 1024);
		ks->carry.maxlen = 1024;
		resetStringInfo(&ks->carry);
	}
}

static void
kinesis_abort_batch(EgressSink *sink)
{
	KinesisSink *ks = sink->private_data;

	if (ks->kc)
		egress_kinesis_discard(ks->kc);
	resetStringInfo(&ks->carry);
	MemoryContextReset(ks->line_cxt);
	ks->open = false;
}

static void
kinesis_cleanup(EgressSink *sink, const char *prefix)
{
	/* nothing is sent before a commit: no leftovers */
}

static void
kinesis_close(EgressSink *sink)
{
	KinesisSink *ks = sink->private_data;

	kinesis_abort_batch(sink);
	if (ks->kc)
		egress_kinesis_close(ks->kc);
	ks->kc = NULL;
	MemoryContextDelete(ks->cxt);
	sink->private_data = NULL;
}

/* egress_check: the stream exists and may be written (ACTIVE or UPDATING) */
static char *
kinesis_probe(EgressSink *sink)
{
	KinesisSink *ks = sink->private_data;
	char	   *status = egress_kinesis_describe(ks->stream, ks->region);

	if (strcmp(status, "ACTIVE") != 0 && strcmp(status, "UPDATING") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("Kinesis stream \"%s\" cannot take records: its status is %s",
						ks->stream, status)));
	return psprintf("Kinesis stream \"%s\" is %s (DescribeStreamSummary).", ks->stream, status);
}

static const EgressSinkOps kinesis_sink_ops = {
	.begin_batch = kinesis_begin_batch,
	.write = kinesis_write,
	.write_record = kinesis_write_record,
	.commit_batch = kinesis_commit_batch,
	.abort_batch = kinesis_abort_batch,
	.cleanup = kinesis_cleanup,
	.close = kinesis_close,
	.probe = kinesis_probe,
};

/* kinesis://stream: a Kinesis stream name; the location is the name */
static char *
kinesis_parse_url(const char *url)
{
	const char *stream = url + strlen("kinesis://");
	size_t		len = strlen(stream);

	if (len == 0 || len > 128 ||
		strspn(stream, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != len)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid Kinesis destination URL"),
				 errhint("Write it as kinesis://stream, with a stream name of 1 to 128 letters, digits, underscores, hyphens and dots.")));
	return pstrdup(stream);
}

/*
 * The values of the Kinesis options (sink_options.c checked their kinds).
 * Who may use the server's AWS credentials is the catalog's rule (as for
 * S3), the endpoint a superuser's setting.
 */
static void
kinesis_validate(const char *location, const EgressSinkOptions *opts,
				 Oid owner, bool owner_superuser)
{
	if (opts->region != NULL)
	{
		bool		ok = strlen(opts->region) <= 32;

		for (const char *p = opts->region; ok && *p; p++)
			ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-';
		if (!ok)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid AWS region \"%s\" in destination option \"region\"",
							opts->region)));
	}
	if (opts->max_inflight != 0 &&
		(opts->max_inflight < 1 || opts->max_inflight > KINESIS_MAX_INFLIGHT))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("destination option \"max_inflight\" must be between 1 and %d",
						KINESIS_MAX_INFLIGHT)));
	if (strlen(opts->partition_key) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("destination option \"partition_key\" must be \"primary_key\", \"table\" or a column name")));
}

static void
kinesis_open(EgressSink *sink)
{
	const EgressSinkOptions *opts = &sink->opts;
	KinesisSink *ks;
	MemoryContext cxt;
	MemoryContext old;
	HASHCTL		ctl;

	kinesis_validate(sink->location, opts, InvalidOid, false);
	cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_egress Kinesis sink",
								ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	ks = palloc0(sizeof(KinesisSink));
	ks->cxt = cxt;
	ks->line_cxt = AllocSetContextCreate(cxt, "pg_egress Kinesis line",
										 ALLOCSET_DEFAULT_SIZES);
	ks->stream = pstrdup(sink->location);
	ks->region = opts->region ? pstrdup(opts->region) : NULL;
	ks->max_inflight = opts->max_inflight > 0 ? (int) opts->max_inflight : KINESIS_DEFAULT_INFLIGHT;
	ks->format = strcmp(opts->format, "pg_kinesis") == 0 ? KFORMAT_PG_KINESIS : KFORMAT_SINGER;
	if (strcmp(opts->partition_key, "primary_key") == 0)
		ks->key_mode = KKEY_PRIMARY_KEY;
	else if (strcmp(opts->partition_key, "table") == 0)
		ks->key_mode = KKEY_TABLE;
	else
	{
		ks->key_mode = KKEY_COLUMN;
		ks->key_column = pstrdup(opts->partition_key);
	}
	initStringInfo(&ks->carry);
	ctl.keysize = NAMEDATALEN * 2 + 8;
	ctl.entrysize = sizeof(StreamKeys);
	ctl.hcxt = cxt;
	ks->schemas = hash_create("pg_egress Kinesis stream keys", 64, &ctl,
							  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	MemoryContextSwitchTo(old);

	sink->ops = &kinesis_sink_ops;
	sink->private_data = ks;
}

const EgressSinkKind egress_kinesis_sink_kind = {
	.name = "kinesis",
	.schemes = {"kinesis://", NULL},
	.parse_url = kinesis_parse_url,
	.validate = kinesis_validate,
	.open = kinesis_open,
};
