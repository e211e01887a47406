/*-------------------------------------------------------------------------
 * s3.c
 *	  S3 client for exports and sinks: SigV4 signing through libcurl
 *	  (CURLOPT_AWS_SIGV4), path-style URLs against pg_egress.s3_endpoint or
 *	  AWS, single PUT for small objects and multipart upload for large
 *	  ones, retries with backoff (egress_s3_upload_set_attempts: 1 for
 *	  callers with a retry loop of their own), abort on every error path.
 *
 * libcurl 7.88 signing rules this file follows (see docs/export.md):
 * x-amz-content-sha256 is always sent; query strings are written in name
 * order, valueless parameters with a trailing '='; the path is
 * percent-encoded by us; no header-removal entries in the header list.
 *
 * Waiting: requests run on a curl multi handle; waits are on its sockets
 * and the latch at once (net/curl_wait.h), so pg_cancel_backend and
 * statement_timeout stop an upload as soon as they arrive; retries wait
 * with the shared back-off (net/backoff.h).  The caller's PG_CATCH (or
 * PG_FINALLY) then calls egress_s3_upload_abort().
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>
#include <sys/stat.h>

#include "lib/stringinfo.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/wait_event.h"

#include "net/backoff.h"
#include "net/curl_wait.h"
#include "net/s3.h"

char	   *egress_s3_endpoint = NULL;
char	   *egress_s3_region = NULL;
char	   *egress_s3_access_key_id = NULL;
char	   *egress_s3_secret_access_key = NULL;
char	   *egress_s3_session_token = NULL;
int			egress_s3_part_size_kb = 8 * 1024;
int			egress_s3_max_concurrency = 4;

#define S3_MAX_ATTEMPTS		5
#define S3_WAIT_MAX_MS		1000	/* longest wait before curl is called again */
#define S3_RETRY_INITIAL_MS	200		/* back-off after the first failure */
#define S3_RETRY_MAX_MS		6400
#define S3_RESPONSE_MAX		(16 * 1024)	/* bytes of an answer kept */
#define S3_ABORT_TIMEOUT_S	10

typedef struct S3Request
{
	CURL	   *easy;
	struct curl_slist *headers;
	const char *body;
	size_t		body_len;
	size_t		body_off;
	StringInfoData response;
	char		etag[128];
	char		errbuf[CURL_ERROR_SIZE];
	bool		running;
	CURLcode	result;
	long		status;
	int			attempt;
	/* a part upload: its number and bytes */
	int			partno;
	char	   *query;
	StringInfoData data;
} S3Request;

#define S3_MAX_INFLIGHT		16

struct EgressS3Upload
{
	MemoryContext cxt;
	char	   *bucket;
	char	   *key;
	char	   *region;
	char	   *access_key;
	char	   *secret_key;
	char	   *session_token;
	char	   *kms_key;
	char	   *sigv4;			/* "aws:amz:<region>:s3" */
	char	   *object_url;		/* endpoint/bucket/encoded-key */
	size_t		part_size;
	int			max_attempts;	/* per request, S3_MAX_ATTEMPTS by default */

	StringInfoData fill;		/* part being filled */
	S3Request	req;			/* single PUT, create, complete, abort */
	S3Request	parts[S3_MAX_INFLIGHT]; /* part uploads */
	int			nslots;			/* of parts[] in use */

	char	   *upload_id;		/* multipart upload, once created */
	char	   *abort_query;	/* its AbortMultipartUpload query, made in
								 * advance: aborting allocates nothing */
	int			nparts;			/* parts started */
	char	  **etags;			/* by part number - 1 */
	int			etags_size;
	bool		sealed;
	bool		completed;
	uint64		bytes;
	size_t		since_pump;		/* bytes written since the last pump */
	ResourceOwner owner;		/* CurrentResourceOwner at begin (or NULL) */
	EgressS3Upload *live_next;	/* in live_uploads */
};

static CURLM *s3_multi = NULL;

/*
 * Uploads begun and not yet released.  A FATAL exit (pg_terminate_backend,
 * a worker's SIGTERM) runs no PG_CATCH: the exit callback aborts them.
 */
static EgressS3Upload *live_uploads = NULL;
static bool exit_callback_registered = false;

static void
s3_exit_abort(int code, Datum arg)
{
	while (live_uploads != NULL)
		egress_s3_upload_abort(live_uploads);
}

/*
 * And an error that reaches the end of a transaction (or of a portal) past
 * a caller that did not abort its upload: the upload is aborted with the
 * resource owner it was begun under (resowner.c makes the owner being
 * released current while its callbacks run).  Uploads begun outside any
 * resource owner (a worker between transactions) are its caller's.
 */
static void
s3_resowner_abort(ResourceReleasePhase phase, bool isCommit, bool isTopLevel,
				  void *arg)
{
	EgressS3Upload *up = live_uploads;

	/* at a commit an open upload may still be in use: its caller's */
	if (phase != RESOURCE_RELEASE_BEFORE_LOCKS || isCommit ||
		CurrentResourceOwner == NULL)
		return;
	while (up != NULL)
	{
		EgressS3Upload *next = up->live_next;

		if (up->owner == CurrentResourceOwner)
			egress_s3_upload_abort(up);
		up = next;
	}
}

void
egress_s3_define_gucs(void)
{
	DefineCustomStringVariable("pg_egress.s3_endpoint",
							   "Base URL of an S3-compatible store, used with path-style addressing.",
							   "Empty means AWS: https://s3.<region>.amazonaws.com.",
							   &egress_s3_endpoint,
							   "",
							   PGC_SUSET,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("pg_egress.s3_region",
							   "AWS region used when a call names none.",
							   "Empty means AWS_REGION, AWS_DEFAULT_REGION, then us-east-1.",
							   &egress_s3_region,
							   "",
							   PGC_SUSET,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("pg_egress.s3_access_key_id",
							   "AWS access key id used for S3.",
							   NULL,
							   &egress_s3_access_key_id,
							   "",
							   PGC_SUSET,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("pg_egress.s3_secret_access_key",
							   "AWS secret access key used for S3.",
							   NULL,
							   &egress_s3_secret_access_key,
							   "",
							   PGC_SUSET,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("pg_egress.s3_session_token",
							   "AWS session token sent with the S3 credentials.",
							   NULL,
							   &egress_s3_session_token,
							   "",
							   PGC_SUSET,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("pg_egress.s3_part_size",
							"Size of the parts of an S3 multipart upload.",
							"Objects smaller than this are sent with one PUT. Two parts are held in memory.",
							&egress_s3_part_size_kb,
							8 * 1024, 5 * 1024, 512 * 1024,
							PGC_USERSET,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_egress.s3_max_concurrency",
							"Parts of one S3 multipart upload sent at once.",
							"An upload holds this many parts plus the one being filled in memory.",
							&egress_s3_max_concurrency,
							4, 1, S3_MAX_INFLIGHT,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);
}

/* ---------------------------------------------------------------------
 * URIs, encoding
 * ---------------------------------------------------------------------
 */

void
egress_s3_parse_uri(const char *uri, char **bucket, char **key)
{
	const char *b;
	const char *slash;

	if (strncmp(uri, "s3://", 5) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid S3 URI \"%s\"", uri),
				 errdetail("An S3 URI has the form s3://bucket/key.")));
	b = uri + 5;
	slash = strchr(b, '/');
	if (slash == NULL || slash == b || slash[1] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid S3 URI \"%s\"", uri),
				 errdetail("An S3 URI has the form s3://bucket/key, with a non-empty bucket and key.")));
	*bucket = pnstrdup(b, slash - b);
	*key = pstrdup(slash + 1);
}

static void
check_bucket_name(const char *bucket)
{
	const char *p;

	if (strlen(bucket) < 3 || strlen(bucket) > 63)
		goto bad;
	for (p = bucket; *p; p++)
	{
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
			  *p == '-' || *p == '.'))
			goto bad;
	}
	return;
bad:
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid S3 bucket name \"%s\"", bucket),
			 errdetail("Bucket names have 3 to 63 characters: lower-case letters, digits, hyphens and dots.")));
}

/* percent-encodes everything but A-Za-z0-9-._~ (and '/' if keep_slash) */
static void
append_uri_encoded(StringInfo buf, const char *s, bool keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s; s++)
	{
		unsigned char c = (unsigned char) *s;

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			(c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
			c == '~' || (keep_slash && c == '/'))
			appendStringInfoChar(buf, c);
		else
		{
			appendStringInfoChar(buf, '%');
			appendStringInfoChar(buf, hex[c >> 4]);
			appendStringInfoChar(buf, hex[c & 15]);
		}
	}
}

/* ---------------------------------------------------------------------
 * Credentials and region
 * ---------------------------------------------------------------------
 */

static char *
trim(char *s)
{
	char	   *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
		*--e = '\0';
	return s;
}

/* reads one profile of an AWS shared credentials file; false if none */
static bool
read_credentials_file(const char *path, const char *profile,
					  char **akey, char **skey, char **token)
{
	FILE	   *f;
	char		line[1024];
	bool		in_profile = false;

	f = AllocateFile(path, "r");
	if (f == NULL)
		return false;
	while (fgets(line, sizeof(line), f) != NULL)
	{
		char	   *l = trim(line);
		char	   *eq;

		if (*l == '#' || *l == ';' || *l == '\0')
			continue;
		if (*l == '[')
		{
			char	   *end = strchr(l, ']');

			if (end)
				*end = '\0';
			in_profile = strcmp(trim(l + 1), profile) == 0;
			continue;
		}
		if (!in_profile || (eq = strchr(l, '=')) == NULL)
			continue;
		*eq = '\0';
		l = trim(l);
		if (strcmp(l, "aws_access_key_id") == 0)
			*akey = pstrdup(trim(eq + 1));
		else if (strcmp(l, "aws_secret_access_key") == 0)
			*skey = pstrdup(trim(eq + 1));
		else if (strcmp(l, "aws_session_token") == 0)
			*token = pstrdup(trim(eq + 1));
	}
	FreeFile(f);
	explicit_bzero(line, sizeof(line));
	return *akey != NULL && *skey != NULL;
}

static bool
nonempty(const char *s)
{
	return s != NULL && s[0] != '\0';
}

/*
 * The AWS credentials of a request to target (words for messages, e.g. S3
 * object "s3://b/k"): the given ones, else pg_egress.s3_access_key_id and
 * friends, else the server's environment, else its shared credentials file.
 * Also used by net/kinesis.c.
 */
void
egress_aws_credentials(const char *target, const char *access_key,
					   const char *secret_key, const char *session_token,
					   char **akey_out, char **skey_out, char **token_out)
{
	char	   *akey = NULL;
	char	   *skey = NULL;
	char	   *token = NULL;
	const char *source;

	if (nonempty(access_key))
	{
		source = "the call";
		akey = pstrdup(access_key);
		skey = secret_key ? pstrdup(secret_key) : NULL;
		token = nonempty(session_token) ? pstrdup(session_token) : NULL;
	}
	else if (nonempty(egress_s3_access_key_id))
	{
		source = "pg_egress.s3_access_key_id";
		akey = pstrdup(egress_s3_access_key_id);
		skey = pstrdup(egress_s3_secret_access_key);
		token = nonempty(egress_s3_session_token) ? pstrdup(egress_s3_session_token) : NULL;
	}
	else if (nonempty(getenv("AWS_ACCESS_KEY_ID")))
	{
		source = "AWS_ACCESS_KEY_ID";
		akey = pstrdup(getenv("AWS_ACCESS_KEY_ID"));
		skey = getenv("AWS_SECRET_ACCESS_KEY") ? pstrdup(getenv("AWS_SECRET_ACCESS_KEY")) : NULL;
		token = nonempty(getenv("AWS_SESSION_TOKEN")) ? pstrdup(getenv("AWS_SESSION_TOKEN")) : NULL;
	}
	else
	{
		const char *path = getenv("AWS_SHARED_CREDENTIALS_FILE");
		const char *profile = getenv("AWS_PROFILE");
		char		home_path[MAXPGPATH];

		if (!nonempty(profile))
			profile = "default";
		if (!nonempty(path))
		{
			const char *home = getenv("HOME");

			if (!nonempty(home))
				home = "";
			snprintf(home_path, sizeof(home_path), "%s/.aws/credentials", home);
			path = home_path;
		}
		source = "the shared credentials file";
		if (!read_credentials_file(path, profile, &akey, &skey, &token))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("no AWS credentials for %s", target),
					 errdetail("Neither the call, nor pg_egress.s3_access_key_id, nor the server's AWS_ACCESS_KEY_ID, nor profile \"%s\" of \"%s\" gives credentials.",
							   profile, path),
					 errhint("Set pg_egress.s3_access_key_id and pg_egress.s3_secret_access_key, or give the server credentials in its environment or shared credentials file.")));
	}
	if (!nonempty(skey))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no AWS secret access key for %s", target),
				 errdetail("The access key id comes from %s, which gives no secret access key.",
						   source)));
	if (strchr(akey, ':') != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid AWS access key id"),
				 errdetail("The access key id from %s contains a colon.", source)));
	*akey_out = akey;
	*skey_out = skey;
	*token_out = token;
}

static void
resolve_credentials(EgressS3Upload *up, const EgressS3Target *t)
{
	char	   *target = psprintf("S3 object \"s3://%s/%s\"", up->bucket, up->key);

	egress_aws_credentials(target, t->access_key, t->secret_key, t->session_token,
						   &up->access_key, &up->secret_key, &up->session_token);
	pfree(target);
}

static char *
resolve_region(const char *region)
{
	const char *r = region;

	if (!nonempty(r))
		r = egress_s3_region;
	if (!nonempty(r))
		r = getenv("AWS_REGION");
	if (!nonempty(r))
		r = getenv("AWS_DEFAULT_REGION");
	if (!nonempty(r))
		r = "us-east-1";
	for (const char *p = r; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid AWS region \"%s\"", r)));
	return pstrdup(r);
}

char *
egress_s3_default_region(void)
{
	return resolve_region(NULL);
}

/* ---------------------------------------------------------------------
 * Requests
 * ---------------------------------------------------------------------
 */

static size_t
read_cb(char *buf, size_t size, size_t nitems, void *arg)
{
	S3Request  *req = (S3Request *) arg;
	size_t		n = Min(size * nitems, req->body_len - req->body_off);

	memcpy(buf, req->body + req->body_off, n);
	req->body_off += n;
	return n;
}

static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *arg)
{
	S3Request  *req = (S3Request *) arg;
	size_t		n = size * nmemb;
	size_t		skip = 0;
	size_t		room;

	/*
	 * Keep the start of the answer only: the ones read (errors, the results
	 * of CreateMultipartUpload and CompleteMultipartUpload) are small, and a
	 * cut one just lacks the values looked for.  Called from within libcurl:
	 * no ERROR may escape, so the buffer was enlarged beforehand and this
	 * only copies.  Whitespace before the document (S3 pads a slow
	 * CompleteMultipartUpload with it) is not kept.
	 */
	if (req->response.len == 0)
		while (skip < n && isspace((unsigned char) ptr[skip]))
			skip++;
	room = S3_RESPONSE_MAX - req->response.len;
	if (room > 0 && skip < n)
	{
		size_t		len = Min(n - skip, room);

		Assert(req->response.maxlen > S3_RESPONSE_MAX);
		memcpy(req->response.data + req->response.len, ptr + skip, len);
		req->response.len += len;
		req->response.data[req->response.len] = '\0';
	}
	return n;
}

static size_t
header_cb(char *buf, size_t size, size_t nitems, void *arg)
{
	S3Request  *req = (S3Request *) arg;
	size_t		n = size * nitems;

	if (n > 5 && pg_strncasecmp(buf, "etag:", 5) == 0)
	{
		size_t		start = 5;
		size_t		end = n;

		while (start < end && (buf[start] == ' ' || buf[start] == '\t'))
			start++;
		while (end > start && (buf[end - 1] == '\r' || buf[end - 1] == '\n' || buf[end - 1] == ' '))
			end--;
		if (end - start < sizeof(req->etag))
		{
			memcpy(req->etag, buf + start, end - start);
			req->etag[end - start] = '\0';
		}
	}
	return n;
}

static void
ensure_curl(void)
{
	if (s3_multi == NULL)
	{
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not initialize libcurl")));
		s3_multi = curl_multi_init();
		if (s3_multi == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not create a libcurl multi handle")));
	}
}

/*
 * An allocation that, for requests of error paths (no_raise), gives NULL
 * instead of raising an error.
 */
static char *
s3_alloc(size_t len, bool no_raise)
{
	char	   *r = palloc_extended(len, no_raise ? MCXT_ALLOC_NO_OOM : 0);

	return r;
}

/*
 * Starts a request on req's handle: method, query string (already encoded
 * and in name order), body.  Does not wait.  A request of an error path
 * (for_abort) raises no error: false when it could not be started.
 */
static bool
request_start(EgressS3Upload *up, S3Request *req, const char *method,
			  const char *query, const char *body, size_t body_len,
			  bool for_abort)
{
	char	   *url;
	char	   *token_header = NULL;
	char	   *kms_header = NULL;
	size_t		len;
	CURL	   *e;
	const char *failed_opt = NULL;
	CURLcode	failed_rc = CURLE_OK;
	CURLMcode	mc;

#define S3_SETOPT(opt, val) \
	do { \
		CURLcode	rc_ = curl_easy_setopt(e, (opt), (val)); \
		if (rc_ != CURLE_OK && failed_opt == NULL) \
		{ \
			failed_opt = #opt; \
			failed_rc = rc_; \
		} \
	} while (0)

	Assert(!req->running);
	if (req->easy == NULL)
	{
		req->easy = curl_easy_init();
		if (req->easy == NULL)
		{
			if (for_abort)
				return false;
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not create a libcurl handle")));
		}
	}
	else
		curl_easy_reset(req->easy);
	e = req->easy;
	if (req->headers)
	{
		curl_slist_free_all(req->headers);
		req->headers = NULL;
	}
	if (req->response.data == NULL)
	{
		MemoryContext old;

		if (for_abort)
			return false;		/* never used: nothing was started with it */
		old = MemoryContextSwitchTo(up->cxt);
		initStringInfo(&req->response);
		/* write_cb copies into this room, it cannot enlarge it */
		enlargeStringInfo(&req->response, S3_RESPONSE_MAX + 1);
		MemoryContextSwitchTo(old);
	}
	resetStringInfo(&req->response);
	req->etag[0] = '\0';
	req->errbuf[0] = '\0';
	req->body = body;
	req->body_len = body_len;
	req->body_off = 0;
	req->status = 0;
	req->result = CURLE_OK;

	len = strlen(up->object_url) + (query ? strlen(query) + 1 : 0) + 1;
	url = s3_alloc(len, for_abort);
	if (url == NULL)
		return false;
	snprintf(url, len, "%s%s%s", up->object_url, query ? "?" : "", query ? query : "");

	req->headers = curl_slist_append(NULL, "x-amz-content-sha256: UNSIGNED-PAYLOAD");
	if (up->session_token)
	{
		len = strlen(up->session_token) + 64;
		token_header = s3_alloc(len, for_abort);
		if (token_header == NULL)
		{
			pfree(url);
			return false;
		}
		snprintf(token_header, len, "x-amz-security-token: %s", up->session_token);
		req->headers = curl_slist_append(req->headers, token_header);
	}
	/* server-side encryption is requested where the object is created */
	if (up->kms_key &&
		((strcmp(method, "PUT") == 0 && query == NULL) ||
		 (query && strcmp(query, "uploads=") == 0)))
	{
		req->headers = curl_slist_append(req->headers,
										 "x-amz-server-side-encryption: aws:kms");
		kms_header = psprintf("x-amz-server-side-encryption-aws-kms-key-id: %s", up->kms_key);
		req->headers = curl_slist_append(req->headers, kms_header);
		pfree(kms_header);
	}
	if (strcmp(method, "POST") == 0 && body_len > 0)
		req->headers = curl_slist_append(req->headers, "Content-Type: application/xml");

	S3_SETOPT(CURLOPT_URL, url);
	S3_SETOPT(CURLOPT_AWS_SIGV4, up->sigv4);
	S3_SETOPT(CURLOPT_USERNAME, up->access_key);
	S3_SETOPT(CURLOPT_PASSWORD, up->secret_key);
	S3_SETOPT(CURLOPT_HTTPHEADER, req->headers);
	S3_SETOPT(CURLOPT_WRITEFUNCTION, write_cb);
	S3_SETOPT(CURLOPT_WRITEDATA, req);
	S3_SETOPT(CURLOPT_HEADERFUNCTION, header_cb);
	S3_SETOPT(CURLOPT_HEADERDATA, req);
	S3_SETOPT(CURLOPT_ERRORBUFFER, req->errbuf);
	S3_SETOPT(CURLOPT_PRIVATE, (void *) req);
	S3_SETOPT(CURLOPT_NOSIGNAL, 1L);
	S3_SETOPT(CURLOPT_CONNECTTIMEOUT, 30L);
	S3_SETOPT(CURLOPT_EXPECT_100_TIMEOUT_MS, 200L);
	/* a stalled transfer is a failure, retried like one */
	S3_SETOPT(CURLOPT_LOW_SPEED_LIMIT, 1L);
	S3_SETOPT(CURLOPT_LOW_SPEED_TIME, 60L);
	S3_SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
	/* never to another host than the endpoint: no redirects */
	S3_SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
	if (for_abort)
		S3_SETOPT(CURLOPT_TIMEOUT, (long) S3_ABORT_TIMEOUT_S);

	if (strcmp(method, "PUT") == 0)
	{
		S3_SETOPT(CURLOPT_UPLOAD, 1L);
		S3_SETOPT(CURLOPT_READFUNCTION, read_cb);
		S3_SETOPT(CURLOPT_READDATA, req);
		S3_SETOPT(CURLOPT_INFILESIZE_LARGE, (curl_off_t) body_len);
	}
	else if (strcmp(method, "POST") == 0)
	{
		S3_SETOPT(CURLOPT_POST, 1L);
		S3_SETOPT(CURLOPT_POSTFIELDS, body ? body : "");
		S3_SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) body_len);
	}
	else
		S3_SETOPT(CURLOPT_CUSTOMREQUEST, method);
#undef S3_SETOPT

	/* libcurl copied the URL and the header list's strings */
	pfree(url);
	if (token_header)
	{
		explicit_bzero(token_header, strlen(token_header));
		pfree(token_header);
	}
	if (req->headers == NULL || failed_opt != NULL)
	{
		if (for_abort)
			return false;
		if (req->headers == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory")));
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not set libcurl option %s: %s",
						failed_opt, curl_easy_strerror(failed_rc))));
	}

	mc = curl_multi_add_handle(s3_multi, e);
	if (mc != CURLM_OK)
	{
		if (for_abort)
			return false;
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not start an S3 request: %s", curl_multi_strerror(mc))));
	}
	req->running = true;
	return true;
}

/*
 * Advances every transfer; notes the requests that finished.  A failure of
 * the multi interface itself is returned (error paths must not raise).
 */
static CURLMcode
multi_pump(void)
{
	int			still;
	CURLMsg    *msg;
	int			left;
	CURLMcode	mc;

	mc = curl_multi_perform(s3_multi, &still);
	while ((msg = curl_multi_info_read(s3_multi, &left)) != NULL)
	{
		S3Request  *req = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		if (curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &req) != CURLE_OK ||
			req == NULL)
			continue;
		req->result = msg->data.result;
		if (curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &req->status) != CURLE_OK)
			req->status = 0;
		(void) curl_multi_remove_handle(s3_multi, req->easy);
		req->running = false;
	}
	return mc;
}

/* multi_pump, raising its failure */
static void
multi_pump_checked(void)
{
	CURLMcode	mc = multi_pump();

	if (mc != CURLM_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("S3 transfer failed: %s", curl_multi_strerror(mc))));
}

/* stops a running request without waiting for it; never raises an error */
static void
request_cancel(S3Request *req)
{
	if (req->running)
	{
		(void) curl_multi_remove_handle(s3_multi, req->easy);
		req->running = false;
	}
}

/*
 * Waits for transfer activity: on the sockets and the latch (interrupts
 * served as they arrive) if interruptible, else (error paths) on the
 * sockets only, raising nothing.
 */
static CURLMcode
multi_poll(bool interruptible)
{
	CURLMcode	mc;

	if (!interruptible)
		return egress_curl_wait_quiet(s3_multi, S3_WAIT_MAX_MS);
	mc = egress_curl_wait(s3_multi, S3_WAIT_MAX_MS);
	if (mc != CURLM_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("S3 transfer failed: %s", curl_multi_strerror(mc))));
	return mc;
}

/*
 * Waits for one request, checking for interrupts if interruptible; else (on
 * error paths) raises nothing: a failure of the multi interface ends the
 * request with result CURLE_RECV_ERROR.
 */
static void
request_wait(S3Request *req, bool interruptible)
{
	for (;;)
	{
		CURLMcode	mc = CURLM_OK;

		if (interruptible)
			multi_pump_checked();
		else
			mc = multi_pump();
		if (!req->running)
		{
			if (interruptible)
				egress_curl_wait_done();
			return;
		}
		if (mc == CURLM_OK)
			mc = multi_poll(interruptible);
		if (mc != CURLM_OK)
		{
			request_cancel(req);
			req->result = CURLE_RECV_ERROR;
			return;
		}
	}
}

/*
 * A failure that may succeed later: transport errors, 408, 429, 5xx, and
 * the error documents S3 sends for them (SlowDown, InternalError,
 * ServiceUnavailable, RequestTimeout), also inside a 200 answer
 * (CompleteMultipartUpload).  Everything else (AccessDenied,
 * InvalidAccessKeyId, SignatureDoesNotMatch, NoSuchBucket, ...) is not.
 */
static bool
request_retryable(S3Request *req)
{
	const char *doc = req->response.data;

	if (req->result != CURLE_OK)
		return req->result != CURLE_URL_MALFORMAT &&
			req->result != CURLE_UNSUPPORTED_PROTOCOL;
	if (req->status == 408 || req->status == 429 || req->status >= 500)
		return true;
	return doc != NULL && strstr(doc, "<Error>") != NULL &&
		(strstr(doc, "<Code>SlowDown</Code>") != NULL ||
		 strstr(doc, "<Code>InternalError</Code>") != NULL ||
		 strstr(doc, "<Code>ServiceUnavailable</Code>") != NULL ||
		 strstr(doc, "<Code>RequestTimeout</Code>") != NULL);
}

static bool
request_ok(S3Request *req)
{
	if (req->result != CURLE_OK || req->status < 200 || req->status >= 300)
		return false;
	/* S3 may answer 200 with an error document (CompleteMultipartUpload) */
	if (strstr(req->response.data, "<Error>") != NULL)
		return false;
	return true;
}

/* text between <tag> and </tag> in an S3 XML answer, or NULL */
static char *
xml_value(const char *xml, const char *tag)
{
	char		open[64];
	char		close[64];
	const char *s;
	const char *e;

	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	s = strstr(xml, open);
	if (s == NULL)
		return NULL;
	s += strlen(open);
	e = strstr(s, close);
	if (e == NULL)
		return NULL;
	return pnstrdup(s, e - s);
}

/*
 * The error of a failed request, classified by SQLSTATE:
 * ERRCODE_CONNECTION_FAILURE for a failure that may succeed later
 * (request_retryable); for answers that retrying does not change,
 * ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION (AccessDenied,
 * InvalidAccessKeyId, SignatureDoesNotMatch: the credentials or the
 * bucket's policy), ERRCODE_UNDEFINED_OBJECT (NoSuchBucket), else
 * ERRCODE_EXTERNAL_ROUTINE_EXCEPTION.
 */
static void
request_report(EgressS3Upload *up, S3Request *req, const char *what)
{
	if (req->result != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not %s S3 object \"s3://%s/%s\": %s",
						what, up->bucket, up->key,
						req->errbuf[0] ? req->errbuf : curl_easy_strerror(req->result)),
				 req->attempt > 1 ? errdetail("Tried %d times.", req->attempt) : 0));
	else
	{
		char	   *code = xml_value(req->response.data, "Code");
		char	   *message = xml_value(req->response.data, "Message");

		int			sqlstate = ERRCODE_EXTERNAL_ROUTINE_EXCEPTION;

		if (request_retryable(req))
			sqlstate = ERRCODE_CONNECTION_FAILURE;
		else if (code != NULL &&
				 (strcmp(code, "AccessDenied") == 0 ||
				  strcmp(code, "InvalidAccessKeyId") == 0 ||
				  strcmp(code, "SignatureDoesNotMatch") == 0))
			sqlstate = ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
		else if (code != NULL && strcmp(code, "NoSuchBucket") == 0)
			sqlstate = ERRCODE_UNDEFINED_OBJECT;

		ereport(ERROR,
				(errcode(sqlstate),
				 errmsg("could not %s S3 object \"s3://%s/%s\": HTTP status %ld%s%s",
						what, up->bucket, up->key, req->status,
						code ? " " : "", code ? code : ""),
				 message ? errdetail("S3 says: %s", message) : 0));
	}
}

/*
 * The delay before attempt number "attempt" + 1 of a request: the shared
 * back-off (net/backoff.h), slept on the latch.
 */
static void
backoff(int attempt)
{
	(void) egress_backoff_sleep(egress_backoff_after(S3_RETRY_INITIAL_MS,
													 S3_RETRY_MAX_MS, attempt),
								NULL, NULL, 0);
}

/* a whole request with retries; ERROR unless it succeeds */
static void
request_run(EgressS3Upload *up, const char *method, const char *query,
			const char *body, size_t body_len, const char *what)
{
	for (up->req.attempt = 1;; up->req.attempt++)
	{
		(void) request_start(up, &up->req, method, query, body, body_len, false);
		request_wait(&up->req, true);
		if (request_ok(&up->req))
			return;
		if (!request_retryable(&up->req) || up->req.attempt >= up->max_attempts)
			request_report(up, &up->req, what);
		backoff(up->req.attempt);
	}
}

/* ---------------------------------------------------------------------
 * Uploads
 * ---------------------------------------------------------------------
 */

EgressS3Upload *
egress_s3_upload_begin(const EgressS3Target *t)
{
	MemoryContext cxt;
	MemoryContext old;
	EgressS3Upload *up;
	StringInfoData buf;

	check_bucket_name(t->bucket);
	if (t->key[0] == '\0' || strlen(t->key) > 1024)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid S3 key \"%s\"", t->key),
				 errdetail("An S3 key has 1 to 1024 bytes.")));
	ensure_curl();

	cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_egress S3 upload",
								ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	up = palloc0(sizeof(EgressS3Upload));
	up->cxt = cxt;
	up->bucket = pstrdup(t->bucket);
	up->key = pstrdup(t->key);
	up->region = resolve_region(t->region);
	up->kms_key = nonempty(t->kms_key) ? pstrdup(t->kms_key) : NULL;
	resolve_credentials(up, t);
	up->sigv4 = psprintf("aws:amz:%s:s3", up->region);
	up->part_size = (size_t) egress_s3_part_size_kb * 1024;
	up->max_attempts = S3_MAX_ATTEMPTS;

	initStringInfo(&buf);
	if (nonempty(egress_s3_endpoint))
	{
		int			len = strlen(egress_s3_endpoint);

		if (strncmp(egress_s3_endpoint, "http://", 7) != 0 &&
			strncmp(egress_s3_endpoint, "https://", 8) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid pg_egress.s3_endpoint \"%s\"", egress_s3_endpoint),
					 errdetail("The endpoint is an http:// or https:// URL.")));
		while (len > 0 && egress_s3_endpoint[len - 1] == '/')
			len--;
		appendBinaryStringInfo(&buf, egress_s3_endpoint, len);
	}
	else
		appendStringInfo(&buf, "https://s3.%s.amazonaws.com", up->region);
	appendStringInfoChar(&buf, '/');
	append_uri_encoded(&buf, up->bucket, false);
	appendStringInfoChar(&buf, '/');
	append_uri_encoded(&buf, up->key, true);
	up->object_url = buf.data;

	initStringInfo(&up->fill);
	up->nslots = Max(1, Min(egress_s3_max_concurrency, S3_MAX_INFLIGHT));

	if (!exit_callback_registered)
	{
		before_shmem_exit(s3_exit_abort, (Datum) 0);
		RegisterResourceReleaseCallback(s3_resowner_abort, NULL);
		exit_callback_registered = true;
	}
	up->owner = CurrentResourceOwner;
	up->live_next = live_uploads;
	live_uploads = up;
	MemoryContextSwitchTo(old);
	return up;
}

void
egress_s3_upload_set_attempts(EgressS3Upload *up, int max_attempts)
{
	up->max_attempts = Max(max_attempts, 1);
}

uint64
egress_s3_upload_bytes(EgressS3Upload *up)
{
	return up->bytes;
}

static void
create_multipart(EgressS3Upload *up)
{
	char	   *id;

	request_run(up, "POST", "uploads=", NULL, 0, "start a multipart upload of");
	id = xml_value(up->req.response.data, "UploadId");
	if (id == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("could not start a multipart upload of S3 object \"s3://%s/%s\"",
						up->bucket, up->key),
				 errdetail("The answer has no UploadId.")));
	{
		MemoryContext old = MemoryContextSwitchTo(up->cxt);
		StringInfoData qs;

		initStringInfo(&qs);
		appendStringInfoString(&qs, "uploadId=");
		append_uri_encoded(&qs, id, false);
		up->abort_query = qs.data;
		up->upload_id = pstrdup(id);
		MemoryContextSwitchTo(old);
	}
}

static void
part_start(EgressS3Upload *up, S3Request *p)
{
	StringInfoData q;
	MemoryContext old = MemoryContextSwitchTo(up->cxt);

	if (p->query)
		pfree(p->query);
	initStringInfo(&q);
	appendStringInfo(&q, "partNumber=%d&uploadId=", p->partno);
	append_uri_encoded(&q, up->upload_id, false);
	p->query = q.data;
	MemoryContextSwitchTo(old);
	(void) request_start(up, p, "PUT", p->query, p->data.data, p->data.len, false);
}

/*
 * A part upload that finished: record its ETag, or retry it (after a
 * backoff), or raise the error.  True when the slot is free again.
 */
static bool
part_settle(EgressS3Upload *up, S3Request *p)
{
	if (p->running || p->partno == 0)
		return !p->running;
	if (request_ok(p) && p->etag[0] != '\0')
	{
		if (p->partno > up->etags_size)
		{
			int			n = Max(up->etags_size * 2, Max(p->partno, 16));

			if (up->etags == NULL)
				up->etags = MemoryContextAllocZero(up->cxt, n * sizeof(char *));
			else
			{
				up->etags = repalloc(up->etags, n * sizeof(char *));
				memset(up->etags + up->etags_size, 0,
					   (n - up->etags_size) * sizeof(char *));
			}
			up->etags_size = n;
		}
		up->etags[p->partno - 1] = MemoryContextStrdup(up->cxt, p->etag);
		up->bytes += p->data.len;
		p->partno = 0;
		resetStringInfo(&p->data);
		return true;
	}
	if ((request_ok(p) || request_retryable(p)) && p->attempt < up->max_attempts)
	{
		ereport(DEBUG1,
				(errmsg_internal("pg_egress: retrying part %d of s3://%s/%s (HTTP %ld)",
								 p->partno, up->bucket, up->key, p->status)));
		backoff(p->attempt);
		p->attempt++;
		part_start(up, p);
		return false;
	}
	request_report(up, p, "upload a part of");
	return false;				/* not reached */
}

/* a free part slot, waiting for one if all are busy */
static S3Request *
part_slot(EgressS3Upload *up)
{
	for (;;)
	{
		multi_pump_checked();
		for (int i = 0; i < up->nslots; i++)
		{
			S3Request  *p = &up->parts[i];

			if (part_settle(up, p))
			{
				egress_curl_wait_done();
				return p;
			}
		}
		(void) multi_poll(true);
	}
}

/* waits until every part is uploaded */
static void
parts_wait(EgressS3Upload *up)
{
	for (;;)
	{
		bool		busy = false;

		multi_pump_checked();
		for (int i = 0; i < up->nslots; i++)
			if (!part_settle(up, &up->parts[i]))
				busy = true;
		if (!busy)
		{
			egress_curl_wait_done();
			return;
		}
		(void) multi_poll(true);
	}
}

/* sends the filled part in a free slot */
static void
send_fill(EgressS3Upload *up)
{
	S3Request  *p;
	StringInfoData tmp;

	if (up->upload_id == NULL)
		create_multipart(up);
	p = part_slot(up);
	if (p->data.data == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(up->cxt);

		initStringInfo(&p->data);
		MemoryContextSwitchTo(old);
	}
	tmp = p->data;
	p->data = up->fill;
	up->fill = tmp;
	resetStringInfo(&up->fill);
	p->partno = ++up->nparts;
	p->attempt = 1;
	part_start(up, p);
}

void
egress_s3_upload_write(EgressS3Upload *up, const char *data, size_t len)
{
	size_t		total = len;

	Assert(!up->sealed);
	while (len > 0)
	{
		size_t		room = up->part_size - up->fill.len;
		size_t		n = Min(room, len);

		if (up->fill.maxlen < (int) up->part_size + 1)
			enlargeStringInfo(&up->fill, up->part_size);
		appendBinaryStringInfo(&up->fill, data, n);
		data += n;
		len -= n;
		if (up->fill.len >= up->part_size)
			send_fill(up);
	}

	/*
	 * Keep the parts in flight moving while the caller produces more: every
	 * 64 kB, about what a socket buffer takes, not on every row.
	 */
	up->since_pump += total;
	if (up->upload_id != NULL && up->since_pump >= 64 * 1024)
	{
		up->since_pump = 0;
		multi_pump_checked();
	}
}

void
egress_s3_upload_seal(EgressS3Upload *up)
{
	if (up->sealed)
		return;
	if (up->upload_id != NULL)
	{
		if (up->fill.len > 0)
			send_fill(up);
		parts_wait(up);
	}
	up->sealed = true;
}

void
egress_s3_upload_complete(EgressS3Upload *up)
{
	StringInfoData xml;
	StringInfoData qs;

	egress_s3_upload_seal(up);
	if (up->upload_id == NULL)
	{
		/* small object: one PUT of the buffer (possibly empty) */
		request_run(up, "PUT", NULL, up->fill.data, up->fill.len, "upload");
		up->bytes = up->fill.len;
		up->completed = true;
		return;
	}
	initStringInfo(&xml);
	appendStringInfoString(&xml, "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
	for (int i = 0; i < up->nparts; i++)
		appendStringInfo(&xml, "<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>",
						 i + 1, up->etags[i]);
	appendStringInfoString(&xml, "</CompleteMultipartUpload>");
	initStringInfo(&qs);
	appendStringInfoString(&qs, "uploadId=");
	append_uri_encoded(&qs, up->upload_id, false);
	request_run(up, "POST", qs.data, xml.data, xml.len, "complete the upload of");
	up->completed = true;
}

static void
request_free(S3Request *req)
{
	request_cancel(req);
	if (req->easy)
	{
		curl_easy_cleanup(req->easy);
		req->easy = NULL;
	}
	if (req->headers)
	{
		curl_slist_free_all(req->headers);
		req->headers = NULL;
	}
}

void
egress_s3_upload_abort(EgressS3Upload *up)
{
	if (up == NULL)
		return;
	for (EgressS3Upload **l = &live_uploads; *l != NULL; l = &(*l)->live_next)
	{
		if (*l == up)
		{
			*l = up->live_next;
			break;
		}
	}
	for (int i = 0; i < S3_MAX_INFLIGHT; i++)
		request_free(&up->parts[i]);
	request_cancel(&up->req);
	if (up->upload_id != NULL && !up->completed)
	{
		/*
		 * This runs on error paths (PG_CATCH, exit callbacks), possibly with
		 * an error in flight: it neither checks for interrupts nor raises
		 * errors, and allocates nothing that could fail (the query was made
		 * with the upload id; request_start and request_wait raise nothing
		 * for it).  Stores that lack AbortMultipartUpload answer 405/501;
		 * their parts stay unseen as no object is ever completed.
		 */
		if (request_start(up, &up->req, "DELETE", up->abort_query, NULL, 0, true))
			request_wait(&up->req, false);
		else
			up->req.result = CURLE_FAILED_INIT;	/* not started */
		if (up->req.result != CURLE_OK ||
			(up->req.status != 204 && up->req.status != 200 &&
			 up->req.status != 404))
			ereport(LOG,
					(errmsg("pg_egress: could not abort the multipart upload of S3 object \"s3://%s/%s\": %s%ld",
							up->bucket, up->key,
							up->req.result != CURLE_OK ? "transfer error, HTTP status " : "HTTP status ",
							up->req.status)));
		up->upload_id = NULL;
	}
	request_free(&up->req);
	MemoryContextDelete(up->cxt);
}

bool
egress_s3_delete_object(EgressS3Upload *up)
{
	bool		deleted;

	request_cancel(&up->req);

	/*
	 * An upload made only to delete an object (a parallel export's part
	 * written by another process) has no response buffer yet, and the
	 * abort path of request_start() never allocates one.
	 */
	if (up->req.response.data == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(up->cxt);

		initStringInfo(&up->req.response);
		enlargeStringInfo(&up->req.response, S3_RESPONSE_MAX + 1);
		MemoryContextSwitchTo(old);
	}
	/* an error path too: raises nothing */
	if (request_start(up, &up->req, "DELETE", NULL, NULL, 0, true))
		request_wait(&up->req, false);
	else
		up->req.result = CURLE_FAILED_INIT;
	deleted = up->req.result == CURLE_OK &&
		(up->req.status == 204 || up->req.status == 200);
	if (!deleted)
		ereport(LOG,
				(errmsg("pg_egress: could not delete S3 object \"s3://%s/%s\": HTTP status %ld",
						up->bucket, up->key, up->req.status)));
	request_cancel(&up->req);
	return deleted;
}
