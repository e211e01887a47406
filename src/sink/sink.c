/*-------------------------------------------------------------------------
 * sink.c
 *	  The destination kinds: validation of a new destination, and opening
 *	  a sink for one.
 *
 * Each kind (file.c, http.c, s3.c, kinesis.c, postgres.c) describes itself in an EgressSinkKind:
 * its URL schemes, a validate operation that owns its URL grammar, and an
 * open operation.  Options are parsed here, once, by sink_options.c, for
 * both: what egress_add_destination accepts is what the sink reads.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "catalog/catalog.h"
#include "executor/spi.h"
#include "net/backoff.h"
#include "pg_egress.h"
#include "sink/sink.h"

/* egress_sink_watch_destination: the sync's sink and what was last checked */
static EgressSink *watched_sink = NULL;
static int32 watched_stream = 0;
static bool watched_gen_valid = false;
static uint32 watched_gen = 0;

static const EgressSinkKind *const sink_kinds[] = {
	&egress_file_sink_kind,
	&egress_http_sink_kind,
	&egress_s3_sink_kind,
	&egress_kinesis_sink_kind,
	&egress_postgres_sink_kind,
};

static const EgressSinkKind *
kind_by_name(const char *name)
{
	for (int i = 0; i < lengthof(sink_kinds); i++)
		if (strcmp(sink_kinds[i]->name, name) == 0)
			return sink_kinds[i];
	return NULL;
}

static const EgressSinkKind *
kind_by_url(const char *url)
{
	for (int i = 0; i < lengthof(sink_kinds); i++)
		for (int j = 0; sink_kinds[i]->schemes[j] != NULL; j++)
			if (strncmp(url, sink_kinds[i]->schemes[j],
						strlen(sink_kinds[i]->schemes[j])) == 0)
				return sink_kinds[i];
	return NULL;
}

/*
 * Options of every kind that hand out more than the destination itself:
 * "slot_name" makes the destination consume (and "drop_adopted_slot" drop)
 * a replication slot that may belong to another tool; that is what the
 * REPLICATION attribute is for, as for pg_logical_slot_get_changes().  The
 * values are not shown.  (Kind-specific ones are the kind's validate's.)
 */
static void
check_common_privileges(const EgressSinkOptions *opts, Oid owner)
{
	if (opts->slot_name != NULL && !has_rolreplication(owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to set destination option \"slot_name\""),
				 errdetail("A destination that names a replication slot consumes changes from that slot, which may belong to another tool."),
				 errhint("Only superusers and roles with the REPLICATION attribute may name the slot; without \"slot_name\" the destination uses a slot of its own.")));
	if (opts->drop_adopted_slot && !has_rolreplication(owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to set destination option \"drop_adopted_slot\""),
				 errdetail("Dropping a replication slot that pg_egress did not create can break the tool that made it."),
				 errhint("Only superusers and roles with the REPLICATION attribute may set it.")));
}

const char *
egress_validate_destination(const char *url, Jsonb *options, Oid owner,
							char **location)
{
	const EgressSinkKind *kind = kind_by_url(url);
	EgressSinkOptions opts;

	if (kind == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unsupported destination URL"),
				 errdetail("A destination URL starts with file://, http://, https://, s3://, kinesis://, postgres:// or postgresql://.")));

	/* the URL first: its errors say more than an option's */
	*location = kind->parse_url(url);
	egress_sink_options_parse(kind->name, options, &opts);
	check_common_privileges(&opts, owner);
	if (kind->validate)
		kind->validate(*location, &opts, owner, superuser_arg(owner));
	return kind->name;
}

EgressSink *
egress_sink_open(const char *kind_name, const char *location, Jsonb *options)
{
	const EgressSinkKind *kind = kind_by_name(kind_name);
	EgressSink *sink;

	if (kind == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s destinations are not supported in this release", kind_name)));
	sink = palloc0(sizeof(EgressSink));
	sink->kind = kind->name;
	sink->location = pstrdup(location);
	sink->options = options;
	egress_sink_options_parse(kind->name, options, &sink->opts);
	kind->open(sink);
	return sink;
}

char *
egress_sink_probe(const char *kind, const char *location, Jsonb *options,
				  bool owner_superuser)
{
	EgressSink *sink = egress_sink_open(kind, location, options);
	char	   *volatile result = NULL;

	sink->owner_superuser = owner_superuser;
	PG_TRY();
	{
		if (sink->ops->probe != NULL)
			result = sink->ops->probe(sink);
	}
	PG_CATCH();
	{
		sink->ops->close(sink);
		PG_RE_THROW();
	}
	PG_END_TRY();
	sink->ops->close(sink);
	return result;
}

/* how messages name a kind: "HTTP destination http://..." */
static const char *
kind_label(const char *kind)
{
	if (strcmp(kind, "http") == 0)
		return "HTTP";
	if (strcmp(kind, "s3") == 0)
		return "S3";
	if (strcmp(kind, "kinesis") == 0)
		return "Kinesis";
	if (strcmp(kind, "postgres") == 0)
		return "PostgreSQL";
	return kind;
}

void
egress_sink_watch_destination(EgressSink *sink, int32 stream_id)
{
	watched_sink = sink;
	watched_stream = stream_id;
	watched_gen_valid = false;
}

/*
 * Is the destination of stream stream_id no longer what sink was opened
 * with (kind, location, options, owner)?  Callers run in long transactions
 * whose snapshot may predate the change: the row is read with the latest
 * snapshot.  A stream that is gone: false (its worker is stopped anyway).
 */
bool
egress_sink_destination_changed(EgressSink *sink, int32 stream_id)
{
	EgressCatalogGuard guard;
	Oid			argtypes[5] = {INT4OID, TEXTOID, TEXTOID, JSONBOID, OIDOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	bool		started = false;
	bool		same = true;

	if (!IsTransactionState())
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		started = true;
	}
	PushActiveSnapshot(GetLatestSnapshot());
	egress_catalog_enter(&guard);
	values[0] = Int32GetDatum(stream_id);
	values[1] = CStringGetTextDatum(sink->kind);
	values[2] = CStringGetTextDatum(sink->location);
	if (sink->options != NULL)
		values[3] = JsonbPGetDatum(sink->options);
	else
	{
		values[3] = (Datum) 0;
		nulls[3] = 'n';
	}
	values[4] = ObjectIdGetDatum(sink->owner);
	if (egress_catalog_exec("SELECT d.kind OPERATOR(pg_catalog.=) $2 "
							"AND d.location OPERATOR(pg_catalog.=) $3 "
							"AND d.options OPERATOR(pg_catalog.=) $4 "
							"AND d.owner::pg_catalog.oid OPERATOR(pg_catalog.=) $5 "
							"FROM egress.stream s JOIN egress.destination d "
							"ON d.name OPERATOR(pg_catalog.=) s.destination "
							"WHERE s.id OPERATOR(pg_catalog.=) $1",
							5, argtypes, values, nulls, true) == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0],
									  SPI_tuptable->tupdesc, 1, &isnull);

		same = !isnull && DatumGetBool(d);
	}
	/* no row: the stream was removed; its worker is stopped anyway */
	egress_catalog_exit(&guard);
	PopActiveSnapshot();
	if (started)
		CommitTransactionCommand();
	return !same;
}

/*
 * The watched sync's check: once at the first retry (a change may have come
 * before it), then again only when some egress_* change was committed
 * (config_gen, as the CDC workers do).
 */
static void
sink_check_destination(void)
{
	uint32		gen = pg_atomic_read_u32(&egress_shared->config_gen);

	if (watched_gen_valid && gen == watched_gen)
		return;
	/* taken before the read: a change committed after it moves gen again */
	watched_gen = gen;
	watched_gen_valid = true;
	if (egress_sink_destination_changed(watched_sink, watched_stream))
		ereport(ERROR,
				(errcode(EGRESS_ERRCODE_RESTART_RUN),
				 errmsg("pg_egress stream %d: its destination was changed while a batch was being retried",
						watched_stream),
				 errdetail("The run starts again with the destination as it is now.")));
}

/*
 * keep_retrying of the workers that sync one stream (FULL_TABLE,
 * INCREMENTAL): they retry until the batch gets through, and their stream
 * shows state "retrying" meanwhile.  arg: the worker's shared-memory slot.
 */
bool
egress_sink_show_retrying(void *arg, TimestampTz since)
{
	EgressWorkerSlot *slot = arg;

	if (slot != NULL && strcmp(slot->phase, "retrying") != 0)
		egress_set_phase(slot, "retrying");
	if (slot != NULL && watched_sink != NULL &&
		slot->stream_id == watched_stream)
		sink_check_destination();
	return true;
}

/* ... and reads again once a batch got through (delivered_after_retries) */
void
egress_sink_show_reading(void *arg)
{
	EgressWorkerSlot *slot = arg;

	if (slot != NULL && strcmp(slot->phase, "retrying") == 0)
		egress_set_phase(slot, "reading");
}

/*
 * A batch got through, perhaps after failed attempts: the caller's
 * delivered_after_retries hook shows it (cheap when nothing failed).
 */
void
egress_sink_retry_done(EgressSink *sink)
{
	if (sink->delivered_after_retries)
		sink->delivered_after_retries(sink->keep_retrying_arg);
}

void
egress_sink_commit_with_retries(EgressSink *sink, const char *batch_id)
{
	TimestampTz since = GetCurrentTimestamp();
	EgressBackoff backoff;
	int			attempt = 0;
	const char *label = kind_label(sink->kind);

	Assert(sink->ops->commit_attempt != NULL);
	egress_backoff_init(&backoff, sink->opts.retry_initial_ms, sink->opts.retry_max_ms);
	for (;;)
	{
		EgressSinkFailure failure = {NULL, -1};
		long		delay;

		attempt++;
		if (sink->ops->commit_attempt(sink, batch_id, &failure))
			break;

		/*
		 * Without keep_retrying (a FULL_TABLE sync) the loop goes on until
		 * the batch gets through or the process is interrupted (SIGTERM,
		 * pause, drop).  The delay: at least what the destination asked
		 * for (Retry-After), up to the cap.
		 */
		if (failure.what == NULL)
			failure.what = pstrdup("unknown failure");
		delay = egress_backoff_next(&backoff, failure.retry_after_ms);
		ereport(attempt == 1 ? LOG : DEBUG1,
				(errmsg("pg_egress could not deliver batch %s to %s destination %s (attempt %d): %s; retrying in %ld ms",
						batch_id, label, sink->location, attempt,
						failure.what, delay)));
		if (!egress_backoff_sleep(delay, sink->keep_retrying,
								  sink->keep_retrying_arg, since))
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("could not deliver batch %s to %s destination %s after %d attempts: %s",
							batch_id, label, sink->location, attempt,
							failure.what)));
		if (failure.what)
			pfree(failure.what);
	}

	if (attempt > 1)
		egress_sink_retry_done(sink);
	if (attempt > 1)
		ereport(LOG,
				(errmsg("pg_egress delivered batch %s to %s destination %s after %d attempts",
						batch_id, label, sink->location, attempt)));
}
