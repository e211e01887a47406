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

#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/timestamp.h"

#include "net/backoff.h"
#include "pg_egress.h"
#include "sink/sink.h"

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
