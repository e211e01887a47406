/*-------------------------------------------------------------------------
 * s3.c
 *	  S3 destinations: one object per batch, <prefix>/<batch_id>.jsonl.
 *
 * The object's key is the batch id, known only at commit, so a batch is
 * held in memory (bounded by pg_egress.batch_max_bytes and the streams'
 * batch options) and sent at commit: one PUT, or a multipart upload when
 * larger than pg_egress.s3_part_size.  The object exists only once S3 has
 * acknowledged it; a failed commit leaves no object and no open upload
 * (net/s3.c aborts it).  Each commit_attempt makes every request once; the
 * retries are sink.c's (egress_sink_commit_with_retries).  A batch sent
 * again after a crash has the same id, hence the same key: it replaces the
 * earlier copy.
 *
 * Credentials, region and endpoint: the server's (pg_egress.s3_* settings,
 * the AWS environment, the shared credentials file), as for exports.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/memutils.h"

#include "net/s3.h"
#include "sink/sink.h"

typedef struct S3Sink
{
	MemoryContext cxt;
	char	   *bucket;
	char	   *prefix;			/* without trailing '/'; may be empty */
	StringInfoData batch;
	bool		open;
} S3Sink;

static void
s3_begin_batch(EgressSink *sink, const EgressBatchInfo *info)
{
	S3Sink	   *ss = sink->private_data;

	resetStringInfo(&ss->batch);
	ss->open = true;
}

static void
s3_write(EgressSink *sink, const char *data, size_t len)
{
	S3Sink	   *ss = sink->private_data;

	appendBinaryStringInfo(&ss->batch, data, len);
}

/*
 * One delivery of the batch (egress_sink_commit_with_retries is the loop):
 * every S3 request is made once.  A failure that may succeed later
 * (ERRCODE_CONNECTION_FAILURE from net/s3.c: network errors, 408, 429,
 * 5xx, SlowDown) is returned; AccessDenied, InvalidAccessKeyId,
 * SignatureDoesNotMatch and NoSuchBucket (retrying does not help) are
 * raised again as rejections (EGRESS_ERRCODE_REJECTED); any other error
 * goes on at once, as it is.  Catching the error here without a
 * subtransaction is safe: what the attempt holds is the upload (curl
 * handles, memory of its own context), released by egress_s3_upload_abort
 * before anything else happens, and no locks, buffers or files.
 */
static bool
s3_commit_attempt(EgressSink *sink, const char *batch_id,
				  EgressSinkFailure *failure)
{
	S3Sink	   *ss = sink->private_data;
	EgressS3Target t = {0};
	EgressS3Upload *volatile up = NULL;
	MemoryContext cxt = CurrentMemoryContext;
	ErrorData  *volatile edata = NULL;

	t.bucket = ss->bucket;
	t.key = ss->prefix[0] ? psprintf("%s/%s.jsonl", ss->prefix, batch_id)
		: psprintf("%s.jsonl", batch_id);
	PG_TRY();
	{
		up = egress_s3_upload_begin(&t);
		egress_s3_upload_set_attempts(up, 1);
		egress_s3_upload_write(up, ss->batch.data, ss->batch.len);
		egress_s3_upload_complete(up);
	}
	PG_CATCH();
	{
		/* one that failed is aborted first: no object appears */
		if (up)
			egress_s3_upload_abort(up);
		up = NULL;
		if (geterrcode() != ERRCODE_CONNECTION_FAILURE &&
			geterrcode() != ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION &&
			geterrcode() != ERRCODE_UNDEFINED_OBJECT)
			PG_RE_THROW();
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		if (edata->sqlerrcode != ERRCODE_CONNECTION_FAILURE)
		{
			/*
			 * Wrong credentials, a policy that denies, no such bucket:
			 * sending the batch again cannot help until someone acts.  A
			 * rejection: the worker stops the destination's streams.
			 */
			edata->sqlerrcode = EGRESS_ERRCODE_REJECTED;
			if (edata->hint == NULL)
				edata->hint = pstrdup("Fix the credentials, the bucket or its policy, then call egress_resume_stream().");
			ReThrowError(edata);
		}
	}
	PG_END_TRY();
	if (up)
		egress_s3_upload_abort(up); /* releases the completed upload */
	pfree(t.key);
	if (edata != NULL)
	{
		failure->what = pstrdup(edata->message);
		FreeErrorData(edata);
		return false;
	}

	ss->open = false;
	/* do not keep a large buffer between batches */
	if (ss->batch.maxlen > 8 * 1024 * 1024)
	{
		ss->batch.data = repalloc(ss->batch.data, 1024);
		ss->batch.maxlen = 1024;
	}
	resetStringInfo(&ss->batch);
	return true;
}

static void
s3_abort_batch(EgressSink *sink)
{
	S3Sink	   *ss = sink->private_data;

	resetStringInfo(&ss->batch);
	ss->open = false;
}

static void
s3_cleanup(EgressSink *sink, const char *prefix)
{
	/* nothing is stored before a commit: no leftovers to remove */
}

static void
s3_close(EgressSink *sink)
{
	s3_abort_batch(sink);
}

/*
 * egress_check: an empty test object under the destination's prefix,
 * written with the server's credentials as a batch is (one attempt), then
 * deleted.  A write proves the bucket exists and the credentials may put
 * objects into it.
 */
static char *
s3_probe(EgressSink *sink)
{
	S3Sink	   *ss = sink->private_data;
	EgressS3Target t = {0};
	EgressS3Upload *volatile up = NULL;
	volatile bool deleted = false;

	t.bucket = ss->bucket;
	t.key = psprintf("%s%s.pg_egress_check-%d.tmp", ss->prefix, ss->prefix[0] ? "/" : "",
					 MyProcPid);
	PG_TRY();
	{
		up = egress_s3_upload_begin(&t);
		egress_s3_upload_set_attempts(up, 1);
		egress_s3_upload_complete(up);
		deleted = egress_s3_delete_object(up);
	}
	PG_CATCH();
	{
		if (up)
			egress_s3_upload_abort(up);
		PG_RE_THROW();
	}
	PG_END_TRY();
	egress_s3_upload_abort(up);
	/* deliveries need no DeleteObject right: say what was left, not fail */
	if (!deleted)
		return psprintf("A test object was written to S3 bucket \"%s\" but could not be deleted (DeleteObject refused or failed): remove s3://%s/%s.",
						ss->bucket, ss->bucket, t.key);
	return psprintf("A test object was written to and deleted from S3 bucket \"%s\".", ss->bucket);
}

static const EgressSinkOps s3_sink_ops = {
	.begin_batch = s3_begin_batch,
	.write = s3_write,
	.commit_batch = egress_sink_commit_with_retries,
	.commit_attempt = s3_commit_attempt,
	.abort_batch = s3_abort_batch,
	.cleanup = s3_cleanup,
	.close = s3_close,
	.probe = s3_probe,
};

/*
 * s3://bucket[/prefix]: objects <prefix>/<batch id>.jsonl; the location is
 * "bucket" or "bucket/prefix", without trailing '/'.
 */
static char *
s3_parse_url(const char *url)
{
	char	   *loc = pstrdup(url + strlen("s3://"));
	size_t		len = strlen(loc);
	char	   *slash;
	size_t		blen;

	while (len > 0 && loc[len - 1] == '/')
		loc[--len] = '\0';
	slash = strchr(loc, '/');
	blen = slash ? (size_t) (slash - loc) : len;
	if (len == 0 || slash == loc ||
		strspn(loc, "abcdefghijklmnopqrstuvwxyz0123456789-.") != blen ||
		blen < 3)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid S3 destination URL"),
				 errhint("Write it as s3://bucket or s3://bucket/prefix, with a valid bucket name.")));
	return loc;
}

static void
s3_open(EgressSink *sink)
{
	S3Sink	   *ss = palloc0(sizeof(S3Sink));
	const char *location = sink->location;
	const char *slash = strchr(location, '/');
	MemoryContext old;

	ss->cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_egress S3 sink",
									ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(ss->cxt);
	if (slash)
	{
		ss->bucket = pnstrdup(location, slash - location);
		ss->prefix = pstrdup(slash + 1);
	}
	else
	{
		ss->bucket = pstrdup(location);
		ss->prefix = pstrdup("");
	}
	initStringInfo(&ss->batch);
	MemoryContextSwitchTo(old);

	sink->ops = &s3_sink_ops;
	sink->private_data = ss;
}

/*
 * Who may use the server's S3 credentials is the catalog's rule, checked by
 * egress_add_destination and the workers; the endpoint is a superuser's
 * setting: nothing more to validate.
 */
const EgressSinkKind egress_s3_sink_kind = {
	.name = "s3",
	.schemes = {"s3://", NULL},
	.parse_url = s3_parse_url,
	.validate = NULL,
	.open = s3_open,
};
