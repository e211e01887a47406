/*-------------------------------------------------------------------------
 * http.c
 *	  HTTP(S) destinations: one POST per batch.
 *
 * A batch is buffered (gzip-compressed as it is written when the "gzip"
 * option is on) and POSTed at commit with a deterministic batch id header,
 * so a receiver can drop a batch it has seen.  commit_batch returns only on
 * a 2xx answer.  Each commit_attempt makes one POST; answers that may
 * succeed later (408, 429, 5xx, connection errors, timeouts) are retried
 * with the same body and the same id by sink.c's one retry loop, after an
 * exponential backoff with jitter that honours Retry-After
 * (net/backoff.h); the back-off sleeps on the latch and the transfer runs
 * on libcurl's multi interface, waiting on its sockets and the latch at
 * once (net/curl_wait.h), so interrupts (SIGTERM, postmaster death) are
 * served as soon as they arrive while a slow or dead endpoint is waited
 * for.  Any other answer is
 * a rejection: an ERROR with SQLSTATE EGRESS_ERRCODE_REJECTED that carries
 * the status and a short excerpt of the answer.
 *
 * One easy handle per sink is reused for every request, so the connection
 * is kept alive between batches.  Header values and URL credentials never
 * appear in messages: the URL is shown without user information and query.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <curl/curl.h>
#include <zlib.h>

#include "common/base64.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "net/curl_wait.h"
#include "net/hosts.h"
#include "pg_egress.h"
#include "sink/sink.h"

#define HTTP_EXCERPT_LEN	200		/* of an answer's body, in messages */
#define HTTP_RESP_KEEP		1024	/* bytes of an answer's body kept */
#define HTTP_WAIT_MAX_MS	1000	/* longest wait before curl is called again */
#define HTTP_MAX_RETRY_AFTER_MS	(3600 * 1000)
#define HTTP_STREAM_START	(256 * 1024)	/* body size at which streaming starts */
#define HTTP_PUMP_MIN		(1024 * 1024)	/* unsent body worth a curl call */

typedef struct HttpSink
{
	MemoryContext cxt;
	EgressSink *sink;			/* the sink this is the private data of */
	char	   *url;			/* as configured: may carry credentials */
	char	   *shown_url;		/* safe to show: no userinfo, query or path */
	char	   *host;			/* the URL's host, without brackets */
	bool		gzip;
	int			gzip_level;
	long		timeout_ms;
	long		connect_timeout_ms;
	char	   *ca_file;
	bool		verify;
	struct curl_slist *base_headers;	/* fixed ones and the user's */
	List	   *secrets;		/* header values, URL userinfo: never shown */

	CURLM	   *multi;
	CURL	   *easy;

	bool		probe;			/* egress_check's test request */

	/* the open batch */
	bool		open;
	bool		stream_body;	/* option "stream" */
	char		announced_id[NAMEDATALEN * 2 + 32];	/* "" if none */

	/* the request under way (a streamed one outlives http_write calls) */
	bool		in_flight;
	bool		streamed;		/* body sent while written (chunked) */
	bool		body_done;		/* streamed: the whole body is there */
	bool		paused;			/* streamed: waiting for more body */
	size_t		sent;			/* streamed: body bytes handed to curl */
	bool		done;			/* the transfer ended */
	CURLcode	done_result;
	struct curl_slist *req_headers;
	char		stream[NAMEDATALEN + 2];
	StringInfoData body;
	z_stream	zs;
	bool		zs_active;

	/* connections: checked against pg_egress.allowed_destination_hosts */
	bool		restricted;		/* the owner is not a superuser */
	char		refused[256];	/* why a connection was refused, or "" */

	/* the last answer */
	StringInfoData resp;
	long		retry_after_ms; /* -1: none */
	char		curl_error[CURL_ERROR_SIZE];
} HttpSink;

static bool curl_initialized = false;

static void http_start(HttpSink *hs, const char *batch_id, bool streamed);
static void http_pump(HttpSink *hs);
static void http_end(HttpSink *hs);

/*
 * curl_easy_setopt, checked: an option libcurl refuses (one this build
 * lacks, say) must not leave the handle silently misconfigured.
 */
#define HTTP_SETOPT(easy, opt, val) \
	http_setopt_check(curl_easy_setopt((easy), (opt), (val)), #opt)

static void
http_setopt_check(CURLcode rc, const char *optname)
{
	if (rc != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not set libcurl option %s: %s",
						optname, curl_easy_strerror(rc))));
}

/* ---- options --------------------------------------------------------------- */

/*
 * What messages may show of a URL: scheme, host and port.  User
 * information and query string may hold credentials, and so may the path
 * (webhook URLs carry their token there: /services/T000/B000/XXXX): a path
 * other than "/" is shown as "/" followed by three asterisks.
 */
static char *
http_shown_url(const char *url)
{
	const char *scheme_end = strstr(url, "://");
	const char *host;
	const char *path;
	const char *at;
	const char *q;
	StringInfoData buf;

	if (scheme_end == NULL)
		return pstrdup("(invalid URL)");
	host = scheme_end + 3;
	path = host + strcspn(host, "/?#");
	at = memchr(host, '@', path - host);
	/* userinfo may itself hold '@': the last one before the path counts */
	while (at != NULL)
	{
		const char *next = memchr(at + 1, '@', path - at - 1);

		host = at + 1;
		at = next;
	}
	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, url, scheme_end + 3 - url);
	appendBinaryStringInfo(&buf, host, path - host);
	q = path + strcspn(path, "?#");
	if (q - path > 1)
		appendStringInfoString(&buf, "/***");
	else if (q - path == 1)
		appendStringInfoChar(&buf, '/');
	return buf.data;
}

/* ---- curl callbacks ---------------------------------------------------------- */

static size_t
http_body_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	HttpSink   *hs = userdata;
	size_t		len = size * nmemb;
	size_t		room = hs->resp.len < HTTP_RESP_KEEP ? HTTP_RESP_KEEP - hs->resp.len : 0;

	/* called from within curl: no palloc failure may escape; room is reserved */
	if (room > 0)
	{
		size_t		n = Min(room, len);

		memcpy(hs->resp.data + hs->resp.len, ptr, n);
		hs->resp.len += n;
		hs->resp.data[hs->resp.len] = '\0';
	}
	return len;
}

static size_t
http_header_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	HttpSink   *hs = userdata;
	size_t		len = size * nmemb;

	if (len > 12 && pg_strncasecmp(ptr, "retry-after:", 12) == 0)
	{
		const char *p = ptr + 12;
		const char *end = ptr + len;
		long		secs = 0;
		bool		digits = false;

		while (p < end && (*p == ' ' || *p == '\t'))
			p++;

		/*
		 * delta-seconds only (an HTTP date falls back to the backoff),
		 * saturated rather than overflowed: an absurd value must mean "a
		 * long time", never a negative or tiny wait.  The back-off caps it
		 * at retry_max_interval.
		 */
		for (; p < end && *p >= '0' && *p <= '9'; p++)
		{
			digits = true;
			if (secs < HTTP_MAX_RETRY_AFTER_MS / 1000)
				secs = secs * 10 + (*p - '0');
		}
		if (digits)
			hs->retry_after_ms = Min((long) HTTP_MAX_RETRY_AFTER_MS, secs * 1000);
	}
	else if (len >= 5 && strncmp(ptr, "HTTP/", 5) == 0)
	{
		/* a new answer (after a 100 Continue, say): forget the last one's */
		hs->retry_after_ms = -1;
		hs->resp.len = 0;
		hs->resp.data[0] = '\0';
	}
	return len;
}

/*
 * Every socket libcurl opens for a restricted destination goes to an
 * address pg_egress.allowed_destination_hosts allows: the address actually
 * connected to, whatever the name resolved to when the destination was
 * added (DNS answers change).  A refused address gets no connection at all.
 */
static curl_socket_t
http_opensocket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *address)
{
	HttpSink   *hs = clientp;

	if (hs->restricted &&
		!egress_address_allowed(hs->host, &address->addr,
								hs->refused, sizeof(hs->refused)))
		return CURL_SOCKET_BAD;
	return socket(address->family, address->socktype, address->protocol);
}

/*
 * And before every request, on a new or a reused connection: a connection
 * kept alive from before a change of the setting is checked again.
 */
static int
http_prereq_cb(void *clientp, char *conn_primary_ip, char *conn_local_ip,
			   int conn_primary_port, int conn_local_port)
{
	HttpSink   *hs = clientp;
	struct sockaddr_storage ss;

	if (!hs->restricted)
		return CURL_PREREQFUNC_OK;
	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, conn_primary_ip, &((struct sockaddr_in *) &ss)->sin_addr) == 1)
		ss.ss_family = AF_INET;
	else if (inet_pton(AF_INET6, conn_primary_ip, &((struct sockaddr_in6 *) &ss)->sin6_addr) == 1)
		ss.ss_family = AF_INET6;
	else
		ss.ss_family = AF_UNSPEC;	/* a proxy over a Unix socket: refused */
	if (!egress_address_allowed(hs->host, (struct sockaddr *) &ss,
								hs->refused, sizeof(hs->refused)))
		return CURL_PREREQFUNC_ABORT;
	return CURL_PREREQFUNC_OK;
}

/* ---- the interface ------------------------------------------------------------ */

/*
 * zlib allocators: palloc in the sink's context, returning NULL (zlib's
 * Z_MEM_ERROR) rather than raising an error from inside zlib.
 */
static voidpf
http_zalloc(voidpf opaque, uInt items, uInt size)
{
	return MemoryContextAllocExtended((MemoryContext) opaque,
									  (Size) items * size, MCXT_ALLOC_NO_OOM);
}

static void
http_zfree(voidpf opaque, voidpf address)
{
	pfree(address);
}

static void
http_begin_batch(EgressSink *sink, const EgressBatchInfo *info)
{
	HttpSink   *hs = sink->private_data;
	const char *name = info->prefix;

	Assert(!hs->open);
	/* CDC batches are named "~<destination>": send the plain name */
	if (name[0] == '~')
		name++;
	strlcpy(hs->stream, name, sizeof(hs->stream));
	hs->announced_id[0] = '\0';
	hs->body_done = false;
	resetStringInfo(&hs->body);
	if (hs->gzip)
	{
		/* a stream an interrupted batch left (no abort_batch) is ended */
		if (hs->zs_active)
			deflateEnd(&hs->zs);
		hs->zs_active = false;
		memset(&hs->zs, 0, sizeof(hs->zs));
		/* zlib's memory lives in the sink's context, never outlives it */
		hs->zs.zalloc = http_zalloc;
		hs->zs.zfree = http_zfree;
		hs->zs.opaque = hs->cxt;
		/* 15 + 16: a gzip wrapper, not zlib's */
		if (deflateInit2(&hs->zs, hs->gzip_level, Z_DEFLATED, 15 + 16, 8,
						 Z_DEFAULT_STRATEGY) != Z_OK)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not initialize compression")));
		hs->zs_active = true;
	}
	hs->open = true;
}

static void
http_deflate(HttpSink *hs, const char *data, size_t len, int flush)
{
	hs->zs.next_in = (Bytef *) data;
	hs->zs.avail_in = len;
	for (;;)
	{
		int			rc;
		size_t		room;

		enlargeStringInfo(&hs->body, 64 * 1024);
		room = hs->body.maxlen - hs->body.len - 1;
		hs->zs.next_out = (Bytef *) hs->body.data + hs->body.len;
		hs->zs.avail_out = room;
		rc = deflate(&hs->zs, flush);
		if (rc == Z_STREAM_ERROR || rc == Z_MEM_ERROR)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not compress batch")));
		hs->body.len += room - hs->zs.avail_out;
		if (flush == Z_FINISH ? rc == Z_STREAM_END
			: (hs->zs.avail_in == 0 && hs->zs.avail_out > 0))
			break;
	}
}

static void
http_write(EgressSink *sink, const char *data, size_t len)
{
	HttpSink   *hs = sink->private_data;
	MemoryContext oldcxt = MemoryContextSwitchTo(hs->cxt);

	Assert(hs->open);
	if (hs->gzip)
		http_deflate(hs, data, len, Z_NO_FLUSH);
	else
		appendBinaryStringInfo(&hs->body, data, len);
	MemoryContextSwitchTo(oldcxt);

	/* the batch's id is known: send while the rest is being written */
	if (hs->announced_id[0] != '\0')
	{
		if (!hs->in_flight && hs->body.len >= HTTP_STREAM_START)
		{
			http_start(hs, hs->announced_id, true);
			http_pump(hs);
		}
		else if (hs->in_flight && hs->body.len - hs->sent >= HTTP_PUMP_MIN)
			http_pump(hs);
	}
}

static void
http_announce_batch_id(EgressSink *sink, const char *batch_id)
{
	HttpSink   *hs = sink->private_data;

	Assert(hs->open);
	if (hs->stream_body && strlen(batch_id) < sizeof(hs->announced_id))
		strlcpy(hs->announced_id, batch_id, sizeof(hs->announced_id));
}

/* A streamed body: what has been written so far, then pause until more. */
static size_t
http_read_cb(char *buffer, size_t size, size_t nitems, void *userdata)
{
	HttpSink   *hs = userdata;
	size_t		avail = hs->body.len - hs->sent;
	size_t		n = Min(avail, size * nitems);

	if (n == 0)
	{
		if (hs->body_done)
			return 0;			/* end of body */
		hs->paused = true;
		return CURL_READFUNC_PAUSE;
	}
	memcpy(buffer, hs->body.data + hs->sent, n);
	hs->sent += n;
	return n;
}

/* Note a finished transfer, if there is one. */
static void
http_collect(HttpSink *hs)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(hs->multi, &left)) != NULL)
	{
		if (msg->msg == CURLMSG_DONE)
		{
			hs->done = true;
			hs->done_result = msg->data.result;
		}
	}
}

/* Let a streamed request take what the batch has so far; never waits. */
static void
http_pump(HttpSink *hs)
{
	int			running;
	CURLcode	rc;
	CURLMcode	mc;

	if (!hs->in_flight || hs->done)
		return;

	if (hs->paused && hs->sent < hs->body.len)
	{
		hs->paused = false;
		rc = curl_easy_pause(hs->easy, CURLPAUSE_CONT);
		if (rc != CURLE_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not resume the HTTP request to %s: %s",
							hs->shown_url, curl_easy_strerror(rc))));
	}
	mc = curl_multi_perform(hs->multi, &running);
	if (mc != CURLM_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not run the HTTP request to %s: %s",
						hs->shown_url, curl_multi_strerror(mc))));
	http_collect(hs);
}

/*
 * Run the request under way to its end.  Returns false on a failure of the
 * multi interface itself (message in curl_error); else *result is the
 * transfer's outcome.
 */
static bool
http_transfer(HttpSink *hs, CURLcode *result)
{
	int			running = 1;
	CURLMcode	mc = CURLM_OK;
	TimestampTz deadline = 0;

	/*
	 * A streamed request sat paused while the batch was written: its
	 * "timeout" counts from now, the end of the batch (curl's own timeout,
	 * which would count the pauses too, is off for it).
	 */
	if (hs->streamed && hs->timeout_ms > 0)
		deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), hs->timeout_ms);

	for (;;)
	{
		long		wait = HTTP_WAIT_MAX_MS;

		if (hs->paused && (hs->sent < hs->body.len || hs->body_done))
		{
			CURLcode	rc;

			hs->paused = false;
			rc = curl_easy_pause(hs->easy, CURLPAUSE_CONT);
			if (rc != CURLE_OK)
			{
				snprintf(hs->curl_error, sizeof(hs->curl_error),
						 "could not resume the request: %s", curl_easy_strerror(rc));
				return false;
			}
		}
		mc = curl_multi_perform(hs->multi, &running);
		if (mc != CURLM_OK)
			break;
		http_collect(hs);
		if (hs->done)
		{
			*result = hs->done_result;
			return true;
		}
		if (deadline != 0)
			wait = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		/* on the sockets and the latch: interrupts are served at once */
		if (wait > 0)
			mc = egress_curl_wait(hs->multi, Min(wait, HTTP_WAIT_MAX_MS));
		if (mc != CURLM_OK)
			break;
		if (deadline != 0 && GetCurrentTimestamp() >= deadline)
		{
			snprintf(hs->curl_error, sizeof(hs->curl_error),
					 "streamed request timed out %ld ms after the end of the batch",
					 hs->timeout_ms);
			*result = CURLE_OPERATION_TIMEDOUT;
			return true;
		}
	}
	snprintf(hs->curl_error, sizeof(hs->curl_error), "%s", curl_multi_strerror(mc));
	return false;
}

/* Forget the request under way (a streamed one is cut off: never complete). */
static void
http_end(HttpSink *hs)
{
	/* called on error paths: nothing here may raise an error */
	if (hs->in_flight)
		(void) curl_multi_remove_handle(hs->multi, hs->easy);
	if (hs->req_headers != NULL)
	{
		(void) curl_easy_setopt(hs->easy, CURLOPT_HTTPHEADER, NULL);
		curl_slist_free_all(hs->req_headers);
		hs->req_headers = NULL;
	}
	hs->in_flight = false;
	hs->paused = false;
}

/* appends to the request's header list; false when out of memory */
static bool
add_header(HttpSink *hs, const char *line)
{
	struct curl_slist *l = curl_slist_append(hs->req_headers, line);

	if (l == NULL)
		return false;
	hs->req_headers = l;
	return true;
}

/*
 * Start a POST of the batch: of the whole body, or (streamed) of what the
 * batch has so far and the rest as it is written, with chunked transfer
 * encoding.
 */
static void
http_start(HttpSink *hs, const char *batch_id, bool streamed)
{
	struct curl_slist *h;
	bool		ok = true;
	char		line[NAMEDATALEN * 2 + 64];
	CURLMcode	mc;

	Assert(!hs->in_flight);
	http_end(hs);				/* headers of an earlier, failed start */

	/*
	 * per request: the fixed ones, then batch id and stream.  The list is
	 * the request's from the start: http_end() frees it on every path (the
	 * next start, abort_batch, close), so an error below leaks nothing.
	 */
	for (h = hs->base_headers; h && ok; h = h->next)
		ok = add_header(hs, h->data);
	snprintf(line, sizeof(line), "X-Egress-Batch-Id: %s", batch_id);
	ok = ok && add_header(hs, line);
	snprintf(line, sizeof(line), "X-Egress-Stream: %s", hs->stream);
	ok = ok && add_header(hs, line);
	if (hs->gzip)
		ok = ok && add_header(hs, "Content-Encoding: gzip");
	if (hs->probe)
		ok = ok && add_header(hs, "X-Pg-Egress-Check: 1");
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));

	hs->resp.len = 0;
	hs->resp.data[0] = '\0';
	hs->retry_after_ms = -1;
	hs->curl_error[0] = '\0';
	hs->refused[0] = '\0';
	hs->restricted = !hs->sink->owner_superuser;
	hs->done = false;
	hs->done_result = CURLE_OK;
	hs->streamed = streamed;
	hs->paused = false;
	hs->sent = 0;

	HTTP_SETOPT(hs->easy, CURLOPT_HTTPHEADER, hs->req_headers);
	/* a streamed request pauses while rows are produced: see http_transfer */
	HTTP_SETOPT(hs->easy, CURLOPT_TIMEOUT_MS, streamed ? 0L : hs->timeout_ms);
	if (streamed)
	{
		HTTP_SETOPT(hs->easy, CURLOPT_POSTFIELDS, NULL);
		HTTP_SETOPT(hs->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) -1);
		HTTP_SETOPT(hs->easy, CURLOPT_READFUNCTION, http_read_cb);
		HTTP_SETOPT(hs->easy, CURLOPT_READDATA, hs);
	}
	else
	{
		HTTP_SETOPT(hs->easy, CURLOPT_POSTFIELDS, hs->body.data);
		HTTP_SETOPT(hs->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) hs->body.len);
	}

	mc = curl_multi_add_handle(hs->multi, hs->easy);
	if (mc != CURLM_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not start HTTP request: %s", curl_multi_strerror(mc))));
	hs->in_flight = true;
}

/*
 * Finish the request under way; returns the HTTP status, or 0 for a
 * transport error (message in curl_error).
 */
static long
http_finish(HttpSink *hs)
{
	CURLcode	result = CURLE_OK;
	bool		ok;
	long		status = 0;

	/*
	 * On an error (an interrupt) the request stays registered: the
	 * caller's abort_batch (or close, or the next start) ends it, as it
	 * does every other resource of the batch.
	 */
	ok = http_transfer(hs, &result);
	http_end(hs);
	egress_curl_wait_done();
	if (!ok)
		return 0;
	if (result != CURLE_OK)
	{
		if (hs->curl_error[0] == '\0')
			strlcpy(hs->curl_error, curl_easy_strerror(result), sizeof(hs->curl_error));
		return 0;
	}
	/* kept by the handle after the transfer */
	curl_easy_getinfo(hs->easy, CURLINFO_RESPONSE_CODE, &status);
	/* an answer before the whole streamed body was taken is no acknowledgement */
	if (hs->streamed && hs->sent != hs->body.len && status >= 200 && status < 300)
	{
		snprintf(hs->curl_error, sizeof(hs->curl_error),
				 "answered with status %ld before the whole body was sent", status);
		return 0;
	}
	return status;
}

/*
 * Messages quote the receiver's answer, which might echo a header: mask
 * every secret in them.
 */
static char *
redact(HttpSink *hs, char *msg)
{
	ListCell   *lc;

	foreach(lc, hs->secrets)
	{
		const char *secret = lfirst(lc);
		size_t		slen = strlen(secret);
		StringInfoData buf;
		char	   *p = msg;
		char	   *hit;

		if (slen == 0 || strstr(msg, secret) == NULL)
			continue;
		initStringInfo(&buf);
		while ((hit = strstr(p, secret)) != NULL)
		{
			appendBinaryStringInfo(&buf, p, hit - p);
			appendStringInfoString(&buf, "***");
			p = hit + slen;
		}
		appendStringInfoString(&buf, p);
		msg = buf.data;
	}
	return msg;
}

/*
 * A short, printable excerpt of the answer's body, secrets masked.  The
 * whole kept answer is masked before it is cut, so that no secret shows
 * its start at the cut; a secret that starts in the kept answer and goes
 * on past its end (the rest was not kept) is left out too.  Bytes other
 * than printable ASCII become spaces, so the cut cannot split a character.
 */
static char *
resp_excerpt(HttpSink *hs)
{
	StringInfoData buf;
	StringInfoData out;
	int			len = hs->resp.len;
	bool		cut = false;
	char	   *masked;
	int			mlen;
	ListCell   *lc;

	/* the answer was cut at HTTP_RESP_KEEP: drop a secret's partial start */
	if (len >= HTTP_RESP_KEEP)
	{
		foreach(lc, hs->secrets)
		{
			const char *secret = lfirst(lc);
			int			slen = strlen(secret);

			for (int k = Min(slen - 1, len); k > 0; k--)
			{
				if (memcmp(hs->resp.data + len - k, secret, k) == 0)
				{
					len -= k;
					cut = true;
					break;
				}
			}
		}
	}

	/* secrets are C strings: a NUL in the answer cannot be part of one */
	initStringInfo(&buf);
	for (int i = 0; i < len; i++)
	{
		char		c = hs->resp.data[i];

		appendStringInfoChar(&buf, c != '\0' ? c : ' ');
	}
	masked = redact(hs, buf.data);
	mlen = strlen(masked);

	initStringInfo(&out);
	for (int i = 0; i < mlen && i < HTTP_EXCERPT_LEN; i++)
	{
		unsigned char c = masked[i];

		appendStringInfoChar(&out, (c >= 0x20 && c < 0x7f) ? c : ' ');
	}
	if (mlen > HTTP_EXCERPT_LEN || cut)
		appendStringInfoString(&out, "...");
	return out.data;
}

static bool
status_is_retryable(long status)
{
	return status == 0 || status == 408 || status == 429 || status >= 500;
}

/* the batch is over: its body is complete (compression ended) */
static void
http_seal(HttpSink *hs)
{
	MemoryContext oldcxt;

	if (hs->body_done)
		return;
	oldcxt = MemoryContextSwitchTo(hs->cxt);
	if (hs->gzip)
	{
		http_deflate(hs, NULL, 0, Z_FINISH);
		deflateEnd(&hs->zs);
		hs->zs_active = false;
	}
	MemoryContextSwitchTo(oldcxt);
	hs->body_done = true;
}

/*
 * One POST of the batch (egress_sink_commit_with_retries is the loop):
 * true on a 2xx answer; false, with the reason, on one that may succeed
 * later (transport errors, 408, 429, 5xx); any other answer, or a
 * connection pg_egress.allowed_destination_hosts refuses, is a rejection:
 * EGRESS_ERRCODE_REJECTED.
 */
static bool
http_commit_attempt(EgressSink *sink, const char *batch_id,
					EgressSinkFailure *failure)
{
	HttpSink   *hs = sink->private_data;
	long		status;
	char	   *what;
	MemoryContext oldcxt;

	Assert(hs->open);
	http_seal(hs);

	/* a streamed request under way for another id cannot be used */
	if (hs->in_flight && strcmp(hs->announced_id, batch_id) != 0)
		http_end(hs);

	if (!hs->in_flight)
		http_start(hs, batch_id, false);
	status = http_finish(hs);
	if (status < 200 || status >= 300)
	{
		/* a connection pg_egress.allowed_destination_hosts refused */
		if (status == 0 && hs->refused[0] != '\0')
			ereport(ERROR,
					(errcode(EGRESS_ERRCODE_REJECTED),
					 errmsg("HTTP destination %s may not be connected to: %s",
							hs->shown_url, hs->refused),
					 errdetail("pg_egress.allowed_destination_hosts does not allow this address for destinations of roles that are not superusers."),
					 errhint("A superuser can list the host, its address or its network in pg_egress.allowed_destination_hosts; then call egress_resume_stream().")));

		if (status == 0)
			what = psprintf("%s", hs->curl_error);
		else
			what = psprintf("HTTP status %ld: %s", status, resp_excerpt(hs));
		what = redact(hs, what);

		if (!status_is_retryable(status))
			ereport(ERROR,
					(errcode(EGRESS_ERRCODE_REJECTED),
					 errmsg("HTTP destination %s rejected batch %s: %s",
							hs->shown_url, batch_id, what),
					 errhint("Fix the cause, then call egress_resume_stream().")));

		failure->what = what;
		/* the receiver's Retry-After; the back-off caps it */
		failure->retry_after_ms = hs->retry_after_ms;
		return false;
	}

	hs->open = false;
	/* a huge batch's buffer is not kept for the next, small one */
	if (hs->body.maxlen > 16 * 1024 * 1024)
	{
		pfree(hs->body.data);
		oldcxt = MemoryContextSwitchTo(hs->cxt);
		initStringInfo(&hs->body);
		MemoryContextSwitchTo(oldcxt);
	}
	else
		resetStringInfo(&hs->body);
	return true;
}

static void
http_abort_batch(EgressSink *sink)
{
	HttpSink   *hs = sink->private_data;

	http_end(hs);
	if (hs->zs_active)
	{
		deflateEnd(&hs->zs);
		hs->zs_active = false;
	}
	hs->open = false;
	resetStringInfo(&hs->body);
}

/* Nothing is left behind at the receiver by an interrupted batch. */
static void
http_cleanup(EgressSink *sink, const char *prefix)
{
}

static void
http_close(EgressSink *sink)
{
	HttpSink   *hs = sink->private_data;

	http_abort_batch(sink);
	if (hs->easy)
		curl_easy_cleanup(hs->easy);
	if (hs->multi)
		curl_multi_cleanup(hs->multi);
	curl_slist_free_all(hs->base_headers);
	hs->easy = NULL;
	hs->multi = NULL;
	hs->base_headers = NULL;
}

/*
 * egress_check: an empty batch, marked by header "X-Pg-Egress-Check: 1"
 * (receivers that know it acknowledge it without storing anything), sent
 * once, with the destination's headers and TLS settings, through the hosts
 * check of every delivery.  Any 2xx answer will do.
 */
static char *
http_probe(EgressSink *sink)
{
	HttpSink   *hs = sink->private_data;
	EgressBatchInfo info = {"pg_egress_check"};
	EgressSinkFailure failure = {NULL, -1};
	volatile bool ok = false;

	hs->probe = true;
	PG_TRY();
	{
		http_begin_batch(sink, &info);
		ok = http_commit_attempt(sink, "pg_egress_check", &failure);
	}
	PG_CATCH();
	{
		http_abort_batch(sink);
		hs->probe = false;
		PG_RE_THROW();
	}
	PG_END_TRY();
	http_abort_batch(sink);
	hs->probe = false;
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("HTTP destination %s could not be reached: %s",
						hs->shown_url, failure.what ? failure.what : "unknown failure"),
				 errhint("Deliveries are retried; check that the receiver runs and answers.")));
	return psprintf("HTTP destination %s acknowledged a test request (header X-Pg-Egress-Check: 1).",
					hs->shown_url);
}

static const EgressSinkOps http_sink_ops = {
	.begin_batch = http_begin_batch,
	.announce_batch_id = http_announce_batch_id,
	.write = http_write,
	.commit_batch = egress_sink_commit_with_retries,
	.commit_attempt = http_commit_attempt,
	.abort_batch = http_abort_batch,
	.cleanup = http_cleanup,
	.close = http_close,
	.probe = http_probe,
};

/* The "headers" option, after the fixed headers; every value is a secret. */
static struct curl_slist *
user_headers(HttpSink *hs, List *headers, struct curl_slist *list)
{
	ListCell   *lc;

	foreach(lc, headers)
	{
		EgressSinkHeader *h = lfirst(lc);
		char	   *line = psprintf("%s: %s", h->name, h->value);

		list = curl_slist_append(list, line);
		pfree(line);
		/* every value may be a secret, however short */
		if (h->value[0] != '\0')
			hs->secrets = lappend(hs->secrets, pstrdup(h->value));
	}
	return list;
}

/*
 * User name and password of the URL, as written and decoded, and the Basic
 * authorization credentials made of them (an answer may echo the header).
 */
static void
url_secrets(HttpSink *hs, const char *url)
{
	CURLU	   *u = curl_url();
	CURLUPart	parts[2] = {CURLUPART_USER, CURLUPART_PASSWORD};
	char	   *decoded[2] = {NULL, NULL};

	if (u == NULL || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
	{
		if (u)
			curl_url_cleanup(u);
		return;
	}
	for (int i = 0; i < 2; i++)
	{
		for (int decode = 0; decode < 2; decode++)
		{
			char	   *part = NULL;

			if (curl_url_get(u, parts[i], &part, decode ? CURLU_URLDECODE : 0) == CURLUE_OK &&
				part != NULL)
			{
				if (part[0] != '\0')
					hs->secrets = lappend(hs->secrets, pstrdup(part));
				if (decode)
					decoded[i] = pstrdup(part);
			}
			if (part)
				curl_free(part);
		}
	}

	/*
	 * Path and query may carry tokens too (webhook URLs): an answer that
	 * echoes them (a 404 page naming the path, say) is masked: the whole
	 * path and query, and each piece between '/', '&' and '=' of 6 or more
	 * characters, as written and decoded; shorter pieces are words ("api",
	 * "v1") more than secrets.
	 */
	for (int i = 0; i < 2; i++)
	{
		for (int decode = 0; decode < 2; decode++)
		{
			char	   *part = NULL;

			if (curl_url_get(u, i == 0 ? CURLUPART_PATH : CURLUPART_QUERY, &part,
							 decode ? CURLU_URLDECODE : 0) == CURLUE_OK && part != NULL)
			{
				const char *p = part;

				/* the whole of it too: an echo then shows none of its pieces */
				if (strlen(part) >= 6)
					hs->secrets = lappend(hs->secrets, pstrdup(part));

				while (*p != '\0')
				{
					size_t		n = strcspn(p, "/&=");

					if (n >= 6)
						hs->secrets = lappend(hs->secrets, pnstrdup(p, n));
					p += n;
					if (*p != '\0')
						p++;
				}
			}
			if (part)
				curl_free(part);
		}
	}
	curl_url_cleanup(u);
	if (decoded[0] != NULL)
	{
		char	   *pair = psprintf("%s:%s", decoded[0], decoded[1] ? decoded[1] : "");
		int			len = strlen(pair);
		char	   *b64 = palloc(pg_b64_enc_len(len) + 1);
		int			n = pg_b64_encode(pair, len, b64, pg_b64_enc_len(len));

		if (n > 0)
		{
			b64[n] = '\0';
			hs->secrets = lappend(hs->secrets, b64);
		}
	}
}

/* longest first: a secret is masked before any shorter one inside it */
static int
secret_cmp(const ListCell *a, const ListCell *b)
{
	size_t		la = strlen(lfirst(a));
	size_t		lb = strlen(lfirst(b));

	return la > lb ? -1 : la < lb ? 1 : 0;
}

static void
http_open(EgressSink *sink)
{
	const char *location = sink->location;
	const EgressSinkOptions *opts = &sink->opts;
	HttpSink   *hs = palloc0(sizeof(HttpSink));
	MemoryContext oldcxt;

	if (!curl_initialized)
	{
		if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not initialize libcurl")));
		curl_initialized = true;
	}

	hs->cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_egress http sink",
									ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(hs->cxt);
	hs->sink = sink;
	hs->url = pstrdup(location);
	hs->shown_url = http_shown_url(location);
	hs->host = egress_url_host(location);
	hs->gzip = opts->gzip;
	hs->gzip_level = opts->gzip_level;
	hs->verify = opts->verify;
	hs->stream_body = opts->stream;
	hs->ca_file = opts->ca_file ? pstrdup(opts->ca_file) : NULL;
	hs->timeout_ms = opts->timeout_ms;
	hs->connect_timeout_ms = opts->connect_timeout_ms;
	initStringInfo(&hs->body);
	initStringInfo(&hs->resp);
	enlargeStringInfo(&hs->resp, HTTP_RESP_KEEP + 1);
	hs->retry_after_ms = -1;
	MemoryContextSwitchTo(oldcxt);

	hs->base_headers = curl_slist_append(NULL, "Content-Type: application/x-ndjson");
	/* no "Expect: 100-continue" round trip before each large body */
	hs->base_headers = curl_slist_append(hs->base_headers, "Expect:");
	oldcxt = MemoryContextSwitchTo(hs->cxt);
	hs->base_headers = user_headers(hs, opts->headers, hs->base_headers);
	url_secrets(hs, location);
	list_sort(hs->secrets, secret_cmp);
	MemoryContextSwitchTo(oldcxt);

	hs->multi = curl_multi_init();
	hs->easy = curl_easy_init();
	if (hs->multi == NULL || hs->easy == NULL || hs->base_headers == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create an HTTP client")));

	HTTP_SETOPT(hs->easy, CURLOPT_URL, hs->url);
	HTTP_SETOPT(hs->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	HTTP_SETOPT(hs->easy, CURLOPT_NOSIGNAL, 1L);
	HTTP_SETOPT(hs->easy, CURLOPT_POST, 1L);
	HTTP_SETOPT(hs->easy, CURLOPT_USERAGENT, "pg_egress/" EGRESS_VERSION_STR);
	HTTP_SETOPT(hs->easy, CURLOPT_CONNECTTIMEOUT_MS, hs->connect_timeout_ms);
	HTTP_SETOPT(hs->easy, CURLOPT_WRITEFUNCTION, http_body_cb);
	HTTP_SETOPT(hs->easy, CURLOPT_WRITEDATA, hs);
	HTTP_SETOPT(hs->easy, CURLOPT_HEADERFUNCTION, http_header_cb);
	HTTP_SETOPT(hs->easy, CURLOPT_HEADERDATA, hs);
	HTTP_SETOPT(hs->easy, CURLOPT_ERRORBUFFER, hs->curl_error);
	/* never to another host than the one checked: no redirects */
	HTTP_SETOPT(hs->easy, CURLOPT_FOLLOWLOCATION, 0L);
	HTTP_SETOPT(hs->easy, CURLOPT_OPENSOCKETFUNCTION, http_opensocket_cb);
	HTTP_SETOPT(hs->easy, CURLOPT_OPENSOCKETDATA, hs);
	HTTP_SETOPT(hs->easy, CURLOPT_PREREQFUNCTION, http_prereq_cb);
	HTTP_SETOPT(hs->easy, CURLOPT_PREREQDATA, hs);
	HTTP_SETOPT(hs->easy, CURLOPT_TCP_KEEPALIVE, 1L);
	/* large bodies go out in fewer, larger writes (the default is 64 kB) */
	HTTP_SETOPT(hs->easy, CURLOPT_UPLOAD_BUFFERSIZE, 2L * 1024 * 1024);
	HTTP_SETOPT(hs->easy, CURLOPT_SSL_VERIFYPEER, hs->verify ? 1L : 0L);
	HTTP_SETOPT(hs->easy, CURLOPT_SSL_VERIFYHOST, hs->verify ? 2L : 0L);
	if (hs->ca_file)
		HTTP_SETOPT(hs->easy, CURLOPT_CAINFO, hs->ca_file);

	sink->ops = &http_sink_ops;
	sink->location = hs->shown_url;
	sink->private_data = hs;
}

/* http://host[:port]/path or https://...: the whole URL is the location */
static char *
http_parse_url(const char *url)
{
	CURLU	   *u = curl_url();
	char	   *host = NULL;
	bool		ok;

	if (u == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	ok = curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
		curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
		host != NULL && host[0] != '\0' &&
		strpbrk(url, " \t\r\n") == NULL;
	if (host)
		curl_free(host);
	curl_url_cleanup(u);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid HTTP destination URL"),
				 errhint("Write it as http://host[:port]/path or https://host[:port]/path.")));
	return pstrdup(url);
}

/*
 * "ca_file" makes the server read a file of its choice and "verify": false
 * turns off the check of whom the server talks to: superusers only.  The
 * option values are not shown (a file name may say more than its owner
 * wants).  Then the host: pg_egress.allowed_destination_hosts.
 */
static void
http_validate(const char *location, const EgressSinkOptions *opts, Oid owner,
			  bool owner_superuser)
{
	if (opts->ca_file != NULL && !owner_superuser)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to set destination option \"ca_file\""),
				 errdetail("The option makes the server read a file and decides which servers a destination trusts."),
				 errhint("Only superusers may set it; other roles use the system's certificate authorities.")));
	if (!opts->verify && !owner_superuser)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to set destination option \"verify\" to false"),
				 errdetail("Without verification any server on the way can read and change what the destination sends."),
				 errhint("Only superusers may turn verification off.")));
	egress_check_destination_host("http", location);
}

const EgressSinkKind egress_http_sink_kind = {
	.name = "http",
	.schemes = {"http://", "https://", NULL},
	.parse_url = http_parse_url,
	.validate = http_validate,
	.open = http_open,
};
