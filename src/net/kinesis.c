/*-------------------------------------------------------------------------
 * kinesis.c
 *	  Kinesis PutRecords client: SigV4 through libcurl (CURLOPT_AWS_SIGV4,
 *	  service kinesis), the API's limits, per-partition-key order, resending
 *	  of failed entries with back-off.
 *
 * A flush sends the queued records in calls of at most 500 records and
 * 5 MiB.  A call is built by walking the queue in order and taking every
 * record whose key is not yet in the call and has no earlier record still
 * waiting (unsent, or refused by the last call): the first record of a key
 * that is skipped blocks every later one of that key.  A barrier record
 * (Singer SCHEMA, STATE) is sent alone once everything before it is
 * accepted.  Entries an answer marks failed (FailedRecordCount > 0) stay in
 * the queue, in place, and go into the next call; a whole call refused for
 * throughput (ProvisionedThroughputExceededException) or failing with a
 * 5xx or a transfer error is sent again after a back-off.  Any other
 * answer is an ERROR that names Kinesis' error type and message.
 *
 * The body is sent with CURLOPT_POSTFIELDS, so libcurl signs the SHA-256 of
 * the real payload, as Kinesis wants (not UNSIGNED-PAYLOAD).
 *
 * Waiting: requests run on a curl multi handle, waited for on their sockets
 * and the latch at once (net/curl_wait.h); retries sleep the shared
 * back-off (net/backoff.h).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "common/base64.h"
#include "common/jsonapi.h"
#include "common/md5.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"
#include "common/pg_prng.h"

#include "net/backoff.h"
#include "net/curl_wait.h"
#include "net/kinesis.h"
#include "net/s3.h"
#include "sink/sink.h"

char	   *egress_kinesis_endpoint = NULL;

#define KINESIS_WAIT_MAX_MS		1000	/* a wait's limit; sockets and the
											 * latch end it earlier */
#define KINESIS_RESPONSE_MAX	(1024 * 1024)
#define KINESIS_BACKOFF_MIN_MS	50
#define KINESIS_BACKOFF_MAX_MS	5000
/* records of keys already in a call looked past while filling it */
#define KINESIS_MAX_SKIPPED		1000
/* failed calls in a row (nothing accepted) before giving up */
#define KINESIS_MAX_FUTILE		10

typedef struct KinesisRecord
{
	char	   *data;
	int			len;
	char	   *key;
	int			keylen;
	bool		barrier;
	bool		done;			/* accepted */
} KinesisRecord;

typedef struct KeyEntry
{
	char		key[KINESIS_MAX_KEY_BYTES + 1];
} KeyEntry;

struct EgressKinesisClient
{
	MemoryContext cxt;
	MemoryContext batch_cxt;	/* queued records; reset by flush/discard */
	char	   *stream;
	char	   *region_opt;		/* the destination's, or NULL */
	char	   *region;			/* in use */
	char	   *url;
	char	   *sigv4;
	char	   *access_key;
	char	   *secret_key;
	char	   *session_token;

	KinesisRecord *recs;
	int			nrecs;
	int			size;
	int			first;			/* records before it are all accepted */

	CURLM	   *multi;
	CURL	   *easy;
	struct curl_slist *headers;
	char		errbuf[CURL_ERROR_SIZE];
	StringInfoData body;
	StringInfoData response;
	bool		response_cut;

	EgressKinesisStats stats;
};

/* ---------------------------------------------------------------------
 * Queue
 * ---------------------------------------------------------------------
 */

char *
egress_kinesis_partition_key(const char *key, size_t len)
{
	char		hex[33];
	const char *errstr = NULL;

	if (len > 0 && len <= KINESIS_MAX_KEY_BYTES)
		return pnstrdup(key, len);
	if (len == 0)
		return pstrdup("-");
	/* too long for Kinesis: the same long key always gives the same hash */
	if (!pg_md5_hash(key, len, hex, &errstr))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not hash a partition key: %s", errstr)));
	return psprintf("md5:%s", hex);
}

EgressKinesisClient *
egress_kinesis_open(const char *stream, const char *region)
{
	MemoryContext cxt;
	MemoryContext old;
	EgressKinesisClient *kc;

	cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_egress Kinesis client",
								ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	kc = palloc0(sizeof(EgressKinesisClient));
	kc->cxt = cxt;
	kc->batch_cxt = AllocSetContextCreate(cxt, "pg_egress Kinesis batch",
										  ALLOCSET_DEFAULT_SIZES);
	kc->stream = pstrdup(stream);
	if (region != NULL && region[0] != '\0')
	{
		for (const char *p = region; *p; p++)
			if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid AWS region \"%s\"", region)));
		kc->region_opt = pstrdup(region);
	}
	initStringInfo(&kc->body);
	initStringInfo(&kc->response);
	MemoryContextSwitchTo(old);
	return kc;
}

/*
 * Credentials, endpoint and signing scope, read again before every flush:
 * a changed secret or endpoint (reloaded settings, a rotated credentials
 * file) applies to the next batch without reopening the sink.
 */
static void
refresh_settings(EgressKinesisClient *kc)
{
	MemoryContext old = MemoryContextSwitchTo(kc->cxt);
	char	   *target;
	char	   *akey;
	char	   *skey;
	char	   *token;
	char	   *url;

	target = psprintf("Kinesis stream \"%s\"", kc->stream);
	egress_aws_credentials(target, NULL, NULL, NULL, &akey, &skey, &token);
	pfree(target);
	if (kc->region)
		pfree(kc->region);
	if (kc->sigv4)
		pfree(kc->sigv4);
	kc->region = kc->region_opt ? pstrdup(kc->region_opt) : egress_s3_default_region();
	kc->sigv4 = psprintf("aws:amz:%s:kinesis", kc->region);
	if (egress_kinesis_endpoint != NULL && egress_kinesis_endpoint[0] != '\0')
	{
		int			len = strlen(egress_kinesis_endpoint);

		if (strncmp(egress_kinesis_endpoint, "http://", 7) != 0 &&
			strncmp(egress_kinesis_endpoint, "https://", 8) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid pg_egress.kinesis_endpoint \"%s\"", egress_kinesis_endpoint),
					 errdetail("The endpoint is an http:// or https:// URL.")));
		while (len > 0 && egress_kinesis_endpoint[len - 1] == '/')
			len--;
		url = psprintf("%.*s/", len, egress_kinesis_endpoint);
	}
	else
		url = psprintf("https://kinesis.%s.amazonaws.com/", kc->region);

	if (kc->secret_key)
	{
		explicit_bzero(kc->secret_key, strlen(kc->secret_key));
		pfree(kc->secret_key);
	}
	if (kc->session_token)
	{
		explicit_bzero(kc->session_token, strlen(kc->session_token));
		pfree(kc->session_token);
	}
	if (kc->access_key)
		pfree(kc->access_key);
	if (kc->url)
		pfree(kc->url);
	kc->access_key = akey;
	kc->secret_key = skey;
	kc->session_token = token;
	kc->url = url;
	/* the header list carries the session token: made again */
	if (kc->headers)
	{
		curl_slist_free_all(kc->headers);
		kc->headers = NULL;
	}
	MemoryContextSwitchTo(old);
}

void
egress_kinesis_add(EgressKinesisClient *kc, const char *data, size_t len,
				   const char *partition_key, bool barrier, const char *key_label)
{
	KinesisRecord *r;
	size_t		keylen = strlen(partition_key);

	if (keylen == 0 || keylen > KINESIS_MAX_KEY_BYTES)
		elog(ERROR, "invalid Kinesis partition key length %zu", keylen);
	if (len + keylen > KINESIS_MAX_RECORD_BYTES)
		ereport(ERROR,
				(errcode(EGRESS_ERRCODE_REJECTED),
				 errmsg("record of %s is too large for Kinesis stream \"%s\": %zu bytes",
						key_label ? key_label : psprintf("partition key \"%s\"", partition_key),
						kc->stream, len + keylen),
				 errdetail("A Kinesis record, partition key included, has at most %d bytes; this one has %zu bytes of data and a partition key of %zu bytes (\"%s\").",
						   KINESIS_MAX_RECORD_BYTES, len, keylen, partition_key)));
	if (kc->nrecs >= kc->size)
	{
		int			n = Max(1024, kc->size * 2);

		if (kc->recs == NULL)
			kc->recs = MemoryContextAlloc(kc->batch_cxt, n * sizeof(KinesisRecord));
		else
			kc->recs = repalloc_huge(kc->recs, n * sizeof(KinesisRecord));
		kc->size = n;
	}
	r = &kc->recs[kc->nrecs++];
	r->data = MemoryContextAlloc(kc->batch_cxt, len + 1);
	memcpy(r->data, data, len);
	r->data[len] = '\0';
	r->len = len;
	r->key = MemoryContextStrdup(kc->batch_cxt, partition_key);
	r->keylen = keylen;
	r->barrier = barrier;
	r->done = false;
}

int
egress_kinesis_pending(EgressKinesisClient *kc)
{
	return kc->nrecs - kc->first;
}

void
egress_kinesis_discard(EgressKinesisClient *kc)
{
	MemoryContextReset(kc->batch_cxt);
	kc->recs = NULL;
	kc->nrecs = 0;
	kc->size = 0;
	kc->first = 0;
}

const EgressKinesisStats *
egress_kinesis_stats(EgressKinesisClient *kc)
{
	return &kc->stats;
}

/* ---------------------------------------------------------------------
 * One call
 * ---------------------------------------------------------------------
 */

static void
append_json_string(StringInfo buf, const char *s, int len)
{
	/* partition keys and stream names: escape what JSON requires */
	appendStringInfoChar(buf, '"');
	for (int i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c == '"' || c == '\\')
		{
			appendStringInfoChar(buf, '\\');
			appendStringInfoChar(buf, c);
		}
		else if (c < 0x20)
			appendStringInfo(buf, "\\u%04x", c);
		else
			appendStringInfoChar(buf, c);
	}
	appendStringInfoChar(buf, '"');
}

/*
 * Chooses the records of the next call (indexes into recs, in order).
 * Returns how many.
 */
static int
build_call(EgressKinesisClient *kc, int *chosen)
{
	HASHCTL		ctl;
	HTAB	   *seen;
	int			n = 0;
	int			skipped = 0;
	size_t		bytes = 0;

	while (kc->first < kc->nrecs && kc->recs[kc->first].done)
		kc->first++;
	if (kc->first >= kc->nrecs)
		return 0;
	/* a barrier waits for everything before it, and goes alone */
	if (kc->recs[kc->first].barrier)
	{
		chosen[0] = kc->first;
		return 1;
	}

	ctl.keysize = KINESIS_MAX_KEY_BYTES + 1;
	ctl.entrysize = sizeof(KeyEntry);
	ctl.hcxt = CurrentMemoryContext;
	seen = hash_create("pg_egress Kinesis call keys", 512, &ctl,
					   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	for (int i = kc->first; i < kc->nrecs && n < KINESIS_MAX_RECORDS_PER_CALL; i++)
	{
		KinesisRecord *r = &kc->recs[i];
		bool		found;

		if (r->done)
			continue;
		if (r->barrier)
			break;
		/*
		 * A key met once (taken into the call, or skipped) blocks every
		 * later record of that key for this call.
		 */
		(void) hash_search(seen, r->key, HASH_ENTER, &found);
		if (found)
		{
			/*
			 * Looking further only costs time when few keys take most
			 * records (partition_key "table"): the later records wait for
			 * the next call.
			 */
			if (++skipped >= KINESIS_MAX_SKIPPED)
				break;
			continue;
		}
		if (bytes + r->len + r->keylen > KINESIS_MAX_BYTES_PER_CALL)
			break;
		bytes += r->len + r->keylen;
		chosen[n++] = i;
	}
	hash_destroy(seen);
	return n;
}

static void
build_body(EgressKinesisClient *kc, const int *chosen, int n)
{
	StringInfo	b = &kc->body;

	resetStringInfo(b);
	appendStringInfoString(b, "{\"StreamName\":");
	append_json_string(b, kc->stream, strlen(kc->stream));
	appendStringInfoString(b, ",\"Records\":[");
	for (int i = 0; i < n; i++)
	{
		KinesisRecord *r = &kc->recs[chosen[i]];
		int			enc = pg_b64_enc_len(r->len);
		int			got;

		if (i > 0)
			appendStringInfoChar(b, ',');
		appendStringInfoString(b, "{\"Data\":\"");
		enlargeStringInfo(b, enc + 1);
		got = pg_b64_encode(r->data, r->len, b->data + b->len, enc);
		if (got < 0)
			elog(ERROR, "could not base64-encode a Kinesis record");
		b->len += got;
		b->data[b->len] = '\0';
		appendStringInfoString(b, "\",\"PartitionKey\":");
		append_json_string(b, r->key, r->keylen);
		appendStringInfoChar(b, '}');
	}
	appendStringInfoString(b, "]}");
}

static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *arg)
{
	EgressKinesisClient *kc = arg;
	size_t		n = size * nmemb;
	size_t		room = KINESIS_RESPONSE_MAX - kc->response.len;
	size_t		len = Min(n, room);

	/* room was made beforehand: no ERROR may escape from within libcurl */
	if (len > 0)
	{
		memcpy(kc->response.data + kc->response.len, ptr, len);
		kc->response.len += len;
		kc->response.data[kc->response.len] = '\0';
	}
	if (len < n)
		kc->response_cut = true;
	return n;
}

/* sends kc->body; *status = HTTP status, 0 after a transfer error */
static CURLcode
perform(EgressKinesisClient *kc, long *status)
{
	CURL	   *e;
	CURLMcode	mc;
	volatile CURLcode result = CURLE_OK;
	volatile bool running = true;
	const char *failed_opt = NULL;

#define K_SETOPT(opt, val) \
	do { \
		if (curl_easy_setopt(e, (opt), (val)) != CURLE_OK && failed_opt == NULL) \
			failed_opt = #opt; \
	} while (0)

	if (kc->multi == NULL)
	{
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not initialize libcurl")));
		kc->multi = curl_multi_init();
		kc->easy = curl_easy_init();
		if (kc->multi == NULL || kc->easy == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not create a libcurl handle")));
	}
	if (kc->headers == NULL)
	{
		struct curl_slist *h;

		h = curl_slist_append(NULL, "Content-Type: application/x-amz-json-1.1");
		if (h)
			h = curl_slist_append(h, "X-Amz-Target: Kinesis_20131202.PutRecords");
		if (h && kc->session_token)
		{
			char	   *t = psprintf("x-amz-security-token: %s", kc->session_token);

			h = curl_slist_append(h, t);
			explicit_bzero(t, strlen(t));
			pfree(t);
		}
		if (h == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory")));
		kc->headers = h;
	}
	e = kc->easy;
	curl_easy_reset(e);
	resetStringInfo(&kc->response);
	if (kc->response.maxlen <= KINESIS_RESPONSE_MAX)
		enlargeStringInfo(&kc->response, KINESIS_RESPONSE_MAX + 1);
	kc->response_cut = false;
	kc->errbuf[0] = '\0';

	K_SETOPT(CURLOPT_URL, kc->url);
	K_SETOPT(CURLOPT_AWS_SIGV4, kc->sigv4);
	K_SETOPT(CURLOPT_USERNAME, kc->access_key);
	K_SETOPT(CURLOPT_PASSWORD, kc->secret_key);
	K_SETOPT(CURLOPT_HTTPHEADER, kc->headers);
	K_SETOPT(CURLOPT_POST, 1L);
	K_SETOPT(CURLOPT_POSTFIELDS, kc->body.data);
	K_SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) kc->body.len);
	K_SETOPT(CURLOPT_WRITEFUNCTION, write_cb);
	K_SETOPT(CURLOPT_WRITEDATA, kc);
	K_SETOPT(CURLOPT_ERRORBUFFER, kc->errbuf);
	K_SETOPT(CURLOPT_NOSIGNAL, 1L);
	K_SETOPT(CURLOPT_CONNECTTIMEOUT, 30L);
	K_SETOPT(CURLOPT_TIMEOUT, 120L);
	K_SETOPT(CURLOPT_EXPECT_100_TIMEOUT_MS, 200L);
	K_SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
	K_SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
#undef K_SETOPT
	if (failed_opt)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not set libcurl option %s", failed_opt)));

	mc = curl_multi_add_handle(kc->multi, e);
	if (mc != CURLM_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not start a Kinesis request: %s", curl_multi_strerror(mc))));
	PG_TRY();
	{
		while (running)
		{
			int			still;
			int			left;
			CURLMsg    *msg;

			mc = curl_multi_perform(kc->multi, &still);
			while ((msg = curl_multi_info_read(kc->multi, &left)) != NULL)
			{
				if (msg->msg == CURLMSG_DONE)
				{
					result = msg->data.result;
					running = false;
				}
			}
			if (mc == CURLM_OK && running)
				mc = egress_curl_wait(kc->multi, KINESIS_WAIT_MAX_MS);
			if (mc != CURLM_OK)
				ereport(ERROR,
						(errcode(ERRCODE_INTERNAL_ERROR),
						 errmsg("Kinesis transfer failed: %s", curl_multi_strerror(mc))));
		}
	}
	PG_FINALLY();
	{
		(void) curl_multi_remove_handle(kc->multi, e);
	}
	PG_END_TRY();
	egress_curl_wait_done();

	*status = 0;
	if (result == CURLE_OK &&
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status) != CURLE_OK)
		*status = 0;
	return result;
}

/* ---------------------------------------------------------------------
 * Answers
 * ---------------------------------------------------------------------
 */

typedef struct AnswerParse
{
	int			depth;
	bool		in_records;		/* inside the "Records" array */
	int			index;			/* entry being read */
	char	   *field;			/* last field name at the current depth */
	int			failed_count;
	bool		has_failed_count;
	int			nentries;
	char	  **codes;			/* per entry: ErrorCode or NULL */
	int			ncodes;
	char	   *type;			/* __type of an error answer */
	char	   *message;
} AnswerParse;

static void
ap_object_start(void *st)
{
	((AnswerParse *) st)->depth++;
}

static void
ap_object_end(void *st)
{
	((AnswerParse *) st)->depth--;
}

static void
ap_array_start(void *st)
{
	AnswerParse *ap = st;

	if (ap->depth == 1 && ap->field && strcmp(ap->field, "Records") == 0)
	{
		ap->in_records = true;
		ap->index = -1;
	}
	ap->depth++;
}

static void
ap_array_end(void *st)
{
	AnswerParse *ap = st;

	ap->depth--;
	if (ap->depth == 1)
		ap->in_records = false;
}

static void
ap_array_element_start(void *st, bool isnull)
{
	AnswerParse *ap = st;

	if (ap->in_records && ap->depth == 2)
	{
		ap->index++;
		ap->nentries = ap->index + 1;
	}
}

static void
ap_field_start(void *st, char *fname, bool isnull)
{
	AnswerParse *ap = st;

	ap->field = fname;
}

static void
ap_scalar(void *st, char *token, JsonTokenType type)
{
	AnswerParse *ap = st;

	if (ap->field == NULL)
		return;
	if (ap->depth == 1)
	{
		if (strcmp(ap->field, "FailedRecordCount") == 0 && type == JSON_TOKEN_NUMBER)
		{
			ap->failed_count = atoi(token);
			ap->has_failed_count = true;
		}
		else if (strcmp(ap->field, "__type") == 0)
			ap->type = token;
		else if (pg_strcasecmp(ap->field, "message") == 0)
			ap->message = token;
	}
	else if (ap->depth == 3 && ap->in_records && ap->index >= 0 &&
			 strcmp(ap->field, "ErrorCode") == 0 && type == JSON_TOKEN_STRING &&
			 ap->index < ap->ncodes)
		ap->codes[ap->index] = token;
}

/*
 * The usual answer, every record accepted, recognized without lexing it
 * (a 500-record answer is some 60 kB of sequence numbers, and lexing it
 * was a tenth of the worker's time): "FailedRecordCount":0, no
 * "ErrorCode" anywhere, and one "SequenceNumber" per record sent.
 * Anything else (other spacing included) takes the full parse.
 */
static bool
all_accepted(EgressKinesisClient *kc, int n)
{
	const char *data = kc->response.data;
	const char *p = strstr(data, "\"FailedRecordCount\":0");
	int			seqs = 0;

	if (p == NULL)
		return false;
	p += strlen("\"FailedRecordCount\":0");
	if (*p != ',' && *p != '}')
		return false;
	if (strstr(data, "\"ErrorCode\"") != NULL)
		return false;
	for (p = strstr(data, "\"SequenceNumber\""); p != NULL;
		 p = strstr(p + 1, "\"SequenceNumber\""))
		seqs++;
	return seqs == n;
}

static bool
parse_answer(EgressKinesisClient *kc, AnswerParse *ap, int ncodes)
{
	JsonLexContext *lex;
	JsonSemAction sem = {0};

	memset(ap, 0, sizeof(*ap));
	ap->ncodes = ncodes;
	ap->codes = ncodes > 0 ? palloc0(ncodes * sizeof(char *)) : NULL;
	if (kc->response_cut || kc->response.len == 0)
		return false;
	if (all_accepted(kc, ncodes))
	{
		ap->has_failed_count = true;
		ap->failed_count = 0;
		ap->nentries = ncodes;
		return true;
	}
	lex = makeJsonLexContextCstringLen(kc->response.data, kc->response.len,
									   PG_UTF8, true);
	sem.semstate = ap;
	sem.object_start = ap_object_start;
	sem.object_end = ap_object_end;
	sem.array_start = ap_array_start;
	sem.array_end = ap_array_end;
	sem.array_element_start = ap_array_element_start;
	sem.object_field_start = ap_field_start;
	sem.scalar = ap_scalar;
	return pg_parse_json(lex, &sem) == JSON_SUCCESS;
}

/* a throttling or transient error type, worth sending again */
static bool
retryable_type(const char *type)
{
	if (type == NULL)
		return false;
	/* "__type" may come with a namespace prefix: com.amazon...#Name */
	if (strchr(type, '#'))
		type = strchr(type, '#') + 1;
	return strcmp(type, "ProvisionedThroughputExceededException") == 0 ||
		strcmp(type, "LimitExceededException") == 0 ||
		strcmp(type, "ThrottlingException") == 0 ||
		strcmp(type, "KMSThrottlingException") == 0 ||
		strcmp(type, "InternalFailure") == 0 ||
		strcmp(type, "ServiceUnavailable") == 0;
}

static bool
throttling_type(const char *type)
{
	if (type && strchr(type, '#'))
		type = strchr(type, '#') + 1;
	return type && (strcmp(type, "ProvisionedThroughputExceededException") == 0 ||
					strcmp(type, "LimitExceededException") == 0 ||
					strcmp(type, "ThrottlingException") == 0 ||
					strcmp(type, "KMSThrottlingException") == 0);
}

/*
 * The shared back-off (net/backoff.h) before the next attempt of a call
 * that got nothing in; ERROR when keep_retrying says to give up.
 */
static void
backoff_wait(EgressKinesisClient *kc, EgressBackoff *b, TimestampTz since,
			 bool (*keep_retrying) (void *, TimestampTz), void *arg,
			 const char *why)
{
	long		delay = egress_backoff_next(b, -1);

	if (!egress_backoff_sleep(delay, keep_retrying, arg, since))
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("gave up sending to Kinesis stream \"%s\": %s",
						kc->stream, why),
				 errdetail("%d records of the batch are not accepted yet.",
						   egress_kinesis_pending(kc))));
}

/* 25-75 ms on the latch: between resends of a call's failed entries */
static void
short_pause(void)
{
	long		ms = 25 + (long) pg_prng_uint64_range(&pg_global_prng_state, 0, 50);

	(void) egress_backoff_sleep(ms, NULL, NULL, 0);
}

void
egress_kinesis_flush(EgressKinesisClient *kc,
					 bool (*keep_retrying) (void *arg, TimestampTz since),
					 void *arg)
{
	MemoryContext call_cxt;
	MemoryContext old;
	int		   *chosen;
	int			futile = 0;		/* failed calls in a row */
	EgressBackoff backoff;
	TimestampTz since = GetCurrentTimestamp();	/* last progress */

	call_cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_egress Kinesis call",
									 ALLOCSET_DEFAULT_SIZES);
	if (egress_kinesis_pending(kc) > 0)
		refresh_settings(kc);
	egress_backoff_init(&backoff, KINESIS_BACKOFF_MIN_MS, KINESIS_BACKOFF_MAX_MS);
	old = MemoryContextSwitchTo(call_cxt);
	for (;;)
	{
		int			n;
		long		status;
		CURLcode	rc;
		AnswerParse ap;
		char	   *why;

		MemoryContextReset(call_cxt);
		chosen = palloc(KINESIS_MAX_RECORDS_PER_CALL * sizeof(int));
		n = build_call(kc, chosen);
		if (n == 0)
			break;
		build_body(kc, chosen, n);
		rc = perform(kc, &status);
		if (rc != CURLE_OK)
			why = psprintf("%s", kc->errbuf[0] ? kc->errbuf : curl_easy_strerror(rc));
		else
		{
			bool		parsed = parse_answer(kc, &ap, n);

			if (status == 200 && parsed && ap.has_failed_count && ap.nentries == n)
			{
				int			failed = 0;

				kc->stats.calls++;
				kc->stats.records_sent += n;
				for (int i = 0; i < n; i++)
				{
					if (ap.codes[i] == NULL)
						kc->recs[chosen[i]].done = true;
					else
						failed++;
				}
				kc->stats.records_accepted += n - failed;
				kc->stats.entries_failed += failed;
				if (failed == 0)
				{
					egress_backoff_init(&backoff, KINESIS_BACKOFF_MIN_MS, KINESIS_BACKOFF_MAX_MS);
					futile = 0;
					since = GetCurrentTimestamp();
					continue;
				}
				why = NULL;
				for (int i = 0; i < n && why == NULL; i++)
					if (ap.codes[i])
						why = psprintf("%d of %d records failed, e.g. %s", failed, n, ap.codes[i]);
				ereport(DEBUG1,
						(errmsg_internal("pg_egress: Kinesis stream \"%s\": %s, resending them",
										 kc->stream, why)));
				if (failed < n)
				{
					/*
					 * Some accepted: the batch progresses.  Resend the rest
					 * after a short pause (partial failures are per shard:
					 * the others keep taking records); the long back-off
					 * and the caller's verdict are for calls that get
					 * nothing in.
					 */
					futile = 0;
					egress_backoff_init(&backoff, KINESIS_BACKOFF_MIN_MS, KINESIS_BACKOFF_MAX_MS);
					since = GetCurrentTimestamp();
					short_pause();
					continue;
				}
				futile++;
				if (futile >= KINESIS_MAX_FUTILE && keep_retrying == NULL)
					ereport(ERROR,
							(errcode(ERRCODE_CONNECTION_FAILURE),
							 errmsg("could not send to Kinesis stream \"%s\": %s", kc->stream, why),
							 errdetail("Tried %d times in a row without any record accepted.", futile)));
				backoff_wait(kc, &backoff, since, keep_retrying, arg, why);
				continue;
			}
			if (status == 200)
				ereport(ERROR,
						(errcode(ERRCODE_PROTOCOL_VIOLATION),
						 errmsg("unexpected answer from Kinesis stream \"%s\" to PutRecords", kc->stream),
						 errdetail("The answer does not give one result per record sent (%d sent).", n)));
			if (!(status >= 500 || retryable_type(ap.type)))
			{
				char	   *type = ap.type ? ap.type : "";

				if (strchr(type, '#'))
					type = strchr(type, '#') + 1;
				ereport(ERROR,
						(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
						 errmsg("Kinesis stream \"%s\" refused PutRecords: HTTP status %ld%s%s",
								kc->stream, status, type[0] ? " " : "", type),
						 ap.message ? errdetail("Kinesis says: %s", ap.message) : 0,
						 (strcmp(type, "InvalidSignatureException") == 0 ||
						  strcmp(type, "UnrecognizedClientException") == 0) ?
						 errhint("Check the AWS credentials of the server (pg_egress.s3_access_key_id and pg_egress.s3_secret_access_key, or its environment).") : 0));
			}
			if (throttling_type(ap.type))
				kc->stats.throttled++;
			else
				kc->stats.errors++;
			why = psprintf("HTTP status %ld%s%s", status, ap.type ? " " : "",
						   ap.type ? ap.type : "");
		}
		/* the whole call failed: send the same records again */
		futile++;
		ereport(DEBUG1,
				(errmsg_internal("pg_egress: Kinesis stream \"%s\": %s, retrying",
								 kc->stream, why)));
		if (futile >= KINESIS_MAX_FUTILE && keep_retrying == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("could not send to Kinesis stream \"%s\": %s", kc->stream, why),
					 errdetail("Tried %d times.", futile)));
		backoff_wait(kc, &backoff, since, keep_retrying, arg, why);
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(call_cxt);
	egress_kinesis_discard(kc);
	/* do not keep a large body between batches */
	if (kc->body.maxlen > 8 * 1024 * 1024)
	{
		pfree(kc->body.data);
		old = MemoryContextSwitchTo(kc->cxt);
		initStringInfo(&kc->body);
		MemoryContextSwitchTo(old);
	}
}

void
egress_kinesis_close(EgressKinesisClient *kc)
{
	if (kc == NULL)
		return;
	if (kc->easy)
		curl_easy_cleanup(kc->easy);
	if (kc->multi)
		curl_multi_cleanup(kc->multi);
	if (kc->headers)
		curl_slist_free_all(kc->headers);
	if (kc->secret_key)
		explicit_bzero(kc->secret_key, strlen(kc->secret_key));
	MemoryContextDelete(kc->cxt);
}
