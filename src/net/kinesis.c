/*-------------------------------------------------------------------------
 * kinesis.c
 *	  Kinesis PutRecords client: SigV4 through libcurl (CURLOPT_AWS_SIGV4,
 *	  service kinesis), the API's limits, per-partition-key order, several
 *	  calls in flight, resending of failed entries with back-off.
 *
 * Records are encoded when they are queued: each becomes its PutRecords
 * entry, {"Data":"<base64>","PartitionKey":"<key>"}, written once into an
 * arena of large blocks (no allocation per record); a call's body is these
 * entries copied side by side, also when entries are resent.  A block is
 * freed once every record in it is accepted.
 *
 * Calls: up to max_inflight PutRecords calls run at once on one curl multi
 * handle, each of at most 500 records and 5 MiB.  Full calls start while
 * the batch is still being queued, so that rendering and sending overlap;
 * egress_kinesis_flush() sends the rest and returns once every record is
 * accepted.
 *
 * Order per partition key: a hash table holds the keys of the calls in
 * flight (only those: it stays small and in cache).  A call
 * is filled by walking, in queue order, first the records waiting to be
 * sent again (failed entries, and records skipped earlier), then records
 * not looked at yet; a record is taken unless its key is in a call in
 * flight or was met earlier in this walk (taken, or skipped: the first
 * record of a key that cannot go blocks every later one of that key; a key
 * met earlier is in flight by then, taken into this call or skipped
 * because it already was, so the table answers both questions).  So
 * a key is never in two calls at once, never twice in one call, and a
 * later record of a key never goes out while an earlier one is unsent or
 * failed.  Failed entries return to the waiting list at their place in
 * queue order.  A barrier record (Singer SCHEMA, STATE) goes alone, once
 * every record before it is accepted and nothing is in flight, and nothing
 * after it goes out before it is accepted.
 *
 * Failures: entries an answer marks failed (FailedRecordCount > 0) wait
 * for the next calls, after a short pause; a whole call refused for
 * throughput (ProvisionedThroughputExceededException) or failing with a
 * 5xx or a transfer error is sent again after the shared back-off
 * (net/backoff.h); while backing off, no new call starts (calls in flight
 * finish).  Any other answer fails the batch with an ERROR naming Kinesis'
 * error type and message.  Answers that arrive while records are still
 * being queued are taken in without raising: an error is kept and raised
 * by egress_kinesis_flush, so that the caller meets delivery errors at the
 * commit of its batch only.
 *
 * The body is sent with CURLOPT_POSTFIELDS, so libcurl signs the SHA-256 of
 * the real payload, as Kinesis wants (not UNSIGNED-PAYLOAD).
 *
 * Waiting: transfers are waited for on their sockets and the latch at once
 * (net/curl_wait.h); a back-off with nothing in flight sleeps on the latch
 * (net/backoff.h).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "common/hashfn.h"
#include "common/jsonapi.h"
#include "common/md5.h"
#include "common/pg_prng.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "port/pg_bswap.h"
#include "storage/latch.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

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
/* records of keys already met looked past while filling one call */
#define KINESIS_MAX_SKIPPED		1000
/* failed calls in a row (nothing accepted) before giving up */
#define KINESIS_MAX_FUTILE		10
#define KINESIS_WHY_LEN			256
/* arena blocks of encoded entries */
#define KINESIS_BLOCK_SIZE		(1024 * 1024)
/* free arena blocks kept (in the client's context) for the next ones */
#define KINESIS_SPARE_BLOCKS	8
/* while queuing: look at answers and start calls every that many records */
#define KINESIS_PUMP_EVERY		512
/* ... and start calls only when that many records wait to be looked at */
#define KINESIS_PUMP_MIN_NEW	(2 * KINESIS_MAX_RECORDS_PER_CALL)

typedef enum RecordState
{
	REC_NEW,					/* not looked at by a call yet */
	REC_WAITING,				/* in the waiting list */
	REC_INFLIGHT,
	REC_DONE					/* accepted */
} RecordState;

/*
 * The partition keys held by calls in flight (simplehash).  Only those: a
 * table of every key of the batch (100,000 rows: as many keys) missed the
 * cache at every record queued, while this one holds at most max_inflight
 * calls' keys.  An entry's key points into the arena, at the key of the
 * record in flight that holds it (kept until its answer is taken in).
 */
typedef struct KeyEntry
{
	const char *key;
	uint32		hash;
	char		status;
} KeyEntry;

#define SH_PREFIX		keytab
#define SH_ELEMENT_TYPE	KeyEntry
#define SH_KEY_TYPE		const char *
#define SH_KEY			key
#define SH_HASH_KEY(tb, k)	hash_bytes((const unsigned char *) (k), strlen(k))
/* the key a call holds is released by its own record: the same string */
#define SH_EQUAL(tb, a, b)	((a) == (b) || strcmp((a), (b)) == 0)
#define SH_STORE_HASH
#define SH_GET_HASH(tb, a)	((a)->hash)
#define SH_SCOPE		static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

typedef struct KinesisRecord
{
	char	   *entry;			/* the encoded PutRecords entry, followed in
								 * the arena by the partition key and a NUL */
	int			entry_len;
	int			size;			/* data + partition key: the API's measure */
	int			block;			/* arena block of entry */
	uint32		key_hash;		/* hash_bytes of the partition key */
	uint8		state;			/* RecordState */
	bool		barrier;
} KinesisRecord;

/* a record's partition key (NUL-terminated), while it is not accepted */
#define REC_KEY(r)	((r)->entry + (r)->entry_len)

typedef struct ArenaBlock
{
	char	   *mem;
	size_t		used;
	size_t		size;
	int			live;			/* records in it not accepted yet */
} ArenaBlock;

/* one PutRecords call: its handle, body and answer */
typedef struct KinesisCall
{
	CURL	   *easy;
	bool		busy;
	int		   *idx;			/* its records, in queue order */
	int			n;
	StringInfoData body;
	char	   *response;		/* KINESIS_RESPONSE_MAX + 1 bytes */
	int			response_len;
	bool		response_cut;
	char		errbuf[CURL_ERROR_SIZE];
	uint32		opts_gen;		/* settings_gen its options were set for */
} KinesisCall;

struct EgressKinesisClient
{
	MemoryContext cxt;
	MemoryContext batch_cxt;	/* queued records; reset by flush/discard */
	MemoryContext work_cxt;		/* reset after each answer */
	char	   *stream;
	char	   *region_opt;		/* the destination's, or NULL */
	char	   *region;			/* in use */
	char	   *url;
	char	   *sigv4;
	char	   *access_key;
	char	   *secret_key;
	char	   *session_token;
	int			max_inflight;
	uint32		settings_gen;	/* counts refresh_settings */

	/* the batch */
	KinesisRecord *recs;
	int			nrecs;
	int			size;
	int			ndone;
	int			next;			/* first record not looked at by a call */
	int		   *waiting;		/* looked at, not sent or failed: in order */
	int			nwaiting;
	int			waiting_size;
	keytab_hash *keys;			/* partition keys of the calls in flight */
	ArenaBlock *blocks;
	int			nblocks;
	int			blocks_size;
	char	   *spare[KINESIS_SPARE_BLOCKS];	/* blocks kept for reuse */
	int			nspare;
	bool		barrier_inflight;
	bool		settings_fresh; /* refresh_settings done for this batch */
	int			since_pump;

	/* calls and failures */
	KinesisCall *calls;
	int			ninflight;
	CURLM	   *multi;
	struct curl_slist *headers;
	TimestampTz resume_at;		/* no new call before (back-off) */
	EgressBackoff backoff;
	int			futile;			/* calls in a row that got nothing in */
	TimestampTz since;			/* last progress */
	char		last_why[KINESIS_WHY_LEN];	/* last failure, for messages */
	ErrorData  *error;			/* to raise at flush */

	EgressKinesisStats stats;
};

static void pump(EgressKinesisClient *kc);
static void drive(EgressKinesisClient *kc);
static int	start_calls(EgressKinesisClient *kc, bool full_only);

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
egress_kinesis_open(const char *stream, const char *region, int max_inflight)
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
	kc->work_cxt = AllocSetContextCreate(cxt, "pg_egress Kinesis answer",
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
	if (max_inflight < 1 || max_inflight > KINESIS_MAX_INFLIGHT)
		elog(ERROR, "invalid number of Kinesis calls in flight: %d", max_inflight);
	kc->max_inflight = max_inflight;
	kc->calls = palloc0(max_inflight * sizeof(KinesisCall));
	for (int i = 0; i < max_inflight; i++)
	{
		kc->calls[i].idx = palloc(KINESIS_MAX_RECORDS_PER_CALL * sizeof(int));
		initStringInfo(&kc->calls[i].body);
	}
	kc->keys = keytab_create(cxt, max_inflight * KINESIS_MAX_RECORDS_PER_CALL, NULL);
	egress_backoff_init(&kc->backoff, KINESIS_BACKOFF_MIN_MS, KINESIS_BACKOFF_MAX_MS);
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
	kc->settings_gen++;
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

/*
 * Whether a call in flight holds the partition key of record r.  A key met
 * while filling a call is always in flight from then on (taken into the
 * call, or blocked because it already was), so that is the one question
 * the ordering rules ask (see build_call).
 */
static inline bool
key_busy(EgressKinesisClient *kc, KinesisRecord *r)
{
	return keytab_lookup_hash(kc->keys, REC_KEY(r), r->key_hash) != NULL;
}

/* the key of r goes out in a call */
static inline void
key_hold(EgressKinesisClient *kc, KinesisRecord *r)
{
	bool		found;

	(void) keytab_insert_hash(kc->keys, REC_KEY(r), r->key_hash, &found);
	Assert(!found);
}

/* the call holding the key of r was answered */
static inline void
key_release(EgressKinesisClient *kc, KinesisRecord *r)
{
	KeyEntry   *e = keytab_lookup_hash(kc->keys, REC_KEY(r), r->key_hash);

	Assert(e != NULL);
	if (e != NULL)
		keytab_delete_item(kc->keys, e);
}

/* an arena block no record needs any more */
static void
release_block(EgressKinesisClient *kc, ArenaBlock *b)
{
	if (b->mem == NULL)
		return;
	if (b->size == KINESIS_BLOCK_SIZE && kc->nspare < KINESIS_SPARE_BLOCKS)
		kc->spare[kc->nspare++] = b->mem;
	else
		pfree(b->mem);
	b->mem = NULL;
}

/* room for len bytes in the arena's last block; returns that block's index */
static int
arena_reserve(EgressKinesisClient *kc, size_t len)
{
	ArenaBlock *b;

	if (kc->nblocks > 0)
	{
		b = &kc->blocks[kc->nblocks - 1];
		if (b->size - b->used >= len)
			return kc->nblocks - 1;
		/* the block is full: gone at once if all its records are in */
		if (b->live == 0)
			release_block(kc, b);
	}
	if (kc->nblocks >= kc->blocks_size)
	{
		int			n = Max(16, kc->blocks_size * 2);

		if (kc->blocks == NULL)
			kc->blocks = MemoryContextAlloc(kc->batch_cxt, n * sizeof(ArenaBlock));
		else
			kc->blocks = repalloc(kc->blocks, n * sizeof(ArenaBlock));
		kc->blocks_size = n;
	}
	b = &kc->blocks[kc->nblocks++];
	b->size = Max(KINESIS_BLOCK_SIZE, len);
	/* in the client's context: blocks are reused, also by later batches */
	if (b->size == KINESIS_BLOCK_SIZE && kc->nspare > 0)
		b->mem = kc->spare[--kc->nspare];
	else
		b->mem = MemoryContextAlloc(kc->cxt, b->size);
	b->used = 0;
	b->live = 0;
	return kc->nblocks - 1;
}

static void
record_done(EgressKinesisClient *kc, KinesisRecord *r)
{
	ArenaBlock *b = &kc->blocks[r->block];

	r->state = REC_DONE;
	r->entry = NULL;
	kc->ndone++;
	if (--b->live == 0 && r->block < kc->nblocks - 1)
		release_block(kc, b);
}

static const char b64_chars[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* the two base64 characters of every 12 bits: half the lookups */
static char b64_pairs[4096][2];
static bool b64_pairs_made = false;

/*
 * Base64 of the last len (< 3) bytes, with padding; returns the end.
 */
static inline char *
b64_tail(const unsigned char *in, size_t len, char *out)
{
	uint32		v;

	if (len == 0)
		return out;
	v = (uint32) in[0] << 16;
	if (len > 1)
		v |= (uint32) in[1] << 8;
	out[0] = b64_chars[v >> 18];
	out[1] = b64_chars[(v >> 12) & 63];
	out[2] = len > 1 ? b64_chars[(v >> 6) & 63] : '=';
	out[3] = '=';
	return out + 4;
}

/*
 * Standard base64 with padding, portable: six bytes at a time read as one
 * big-endian word, four lookups of two characters each.
 */
static char *
b64_encode_scalar(const unsigned char *in, size_t len, char *out)
{
	size_t		i = 0;

	if (!b64_pairs_made)
	{
		for (int v = 0; v < 4096; v++)
		{
			b64_pairs[v][0] = b64_chars[v >> 6];
			b64_pairs[v][1] = b64_chars[v & 63];
		}
		b64_pairs_made = true;
	}
	/* eight bytes read, six used */
	for (; i + 8 <= len; i += 6)
	{
		uint64		v;

		memcpy(&v, in + i, 8);
		v = pg_ntoh64(v);
		memcpy(out, b64_pairs[(v >> 52) & 4095], 2);
		memcpy(out + 2, b64_pairs[(v >> 40) & 4095], 2);
		memcpy(out + 4, b64_pairs[(v >> 28) & 4095], 2);
		memcpy(out + 6, b64_pairs[(v >> 16) & 4095], 2);
		out += 8;
	}
	for (; i + 3 <= len; i += 3)
	{
		uint32		v = ((uint32) in[i] << 16) | ((uint32) in[i + 1] << 8) | in[i + 2];

		memcpy(out, b64_pairs[v >> 12], 2);
		memcpy(out + 2, b64_pairs[v & 4095], 2);
		out += 4;
	}
	return b64_tail(in + i, len - i, out);
}

#if defined(__x86_64__) && defined(__GNUC__)
#define B64_SSSE3 1
#include <tmmintrin.h>

/*
 * The same with SSSE3, where the processor has it: twelve bytes become
 * sixteen characters per step.  Each 32-bit lane gets the bytes b a c b
 * of one group of three (a b c); two multiplies move the four 6-bit
 * fields into the lane's four bytes; one table lookup per byte then gives
 * the offset from the field's value to its character, by range: 0-25 'A',
 * 26-51 'a', 52-61 '0', 62 '+', 63 '/'.
 */
__attribute__((target("ssse3")))
static char *
b64_encode_ssse3(const unsigned char *in, size_t len, char *out)
{
	size_t		i = 0;
	const __m128i shuf = _mm_setr_epi8(1, 0, 2, 1, 4, 3, 5, 4,
									   7, 6, 8, 7, 10, 9, 11, 10);
	const __m128i mask_hi = _mm_set1_epi32(0x0fc0fc00);
	const __m128i mul_hi = _mm_set1_epi32(0x04000040);
	const __m128i mask_lo = _mm_set1_epi32(0x003f03f0);
	const __m128i mul_lo = _mm_set1_epi32(0x01000010);
	const __m128i offsets = _mm_setr_epi8('a' - 26,
										  '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52,
										  '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52,
										  '+' - 62, '/' - 63, 'A', 0, 0);
	const __m128i n51 = _mm_set1_epi8(51);
	const __m128i n26 = _mm_set1_epi8(26);
	const __m128i n13 = _mm_set1_epi8(13);

	/* sixteen bytes read, twelve used */
	for (; i + 16 <= len; i += 12)
	{
		__m128i		v = _mm_loadu_si128((const __m128i *) (in + i));
		__m128i		idx;
		__m128i		range;

		v = _mm_shuffle_epi8(v, shuf);
		idx = _mm_or_si128(_mm_mulhi_epu16(_mm_and_si128(v, mask_hi), mul_hi),
						   _mm_mullo_epi16(_mm_and_si128(v, mask_lo), mul_lo));
		/* 52-63: 1-12; 26-51: 0; 0-25: 13 */
		range = _mm_subs_epu8(idx, n51);
		range = _mm_or_si128(range, _mm_and_si128(_mm_cmpgt_epi8(n26, idx), n13));
		_mm_storeu_si128((__m128i *) out,
						 _mm_add_epi8(idx, _mm_shuffle_epi8(offsets, range)));
		out += 16;
	}
	return b64_encode_scalar(in + i, len - i, out);
}

static int	b64_have_ssse3 = -1;
#endif

/* standard base64 with padding; out has room for 4 * ((len + 2) / 3) */
static inline char *
b64_encode(const unsigned char *in, size_t len, char *out)
{
#ifdef B64_SSSE3
	if (b64_have_ssse3 < 0)
		b64_have_ssse3 = __builtin_cpu_supports("ssse3") ? 1 : 0;
	if (b64_have_ssse3)
		return b64_encode_ssse3(in, len, out);
#endif
	return b64_encode_scalar(in, len, out);
}

/* a JSON string (partition keys, stream names): what JSON requires escaped */
static char *
json_string(char *out, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";

	*out++ = '"';
	for (size_t i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c == '"' || c == '\\')
		{
			*out++ = '\\';
			*out++ = c;
		}
		else if (c < 0x20)
		{
			memcpy(out, "\\u00", 4);
			out[4] = hex[c >> 4];
			out[5] = hex[c & 15];
			out += 6;
		}
		else
			*out++ = c;
	}
	*out++ = '"';
	return out;
}

#define ENTRY_DATA		"{\"Data\":\""
#define ENTRY_KEY		"\",\"PartitionKey\":"

void
egress_kinesis_add(EgressKinesisClient *kc, const char *data, size_t len,
				   const char *partition_key, bool barrier, const char *key_label)
{
	KinesisRecord *r;
	size_t		keylen = strlen(partition_key);
	size_t		need;
	int			block;
	ArenaBlock *b;
	char	   *p;

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
			kc->recs = MemoryContextAllocHuge(kc->batch_cxt, n * sizeof(KinesisRecord));
		else
			kc->recs = repalloc_huge(kc->recs, n * sizeof(KinesisRecord));
		kc->size = n;
	}
	r = &kc->recs[kc->nrecs];
	r->key_hash = hash_bytes((const unsigned char *) partition_key, keylen);

	/*
	 * The entry, encoded once: {"Data":"<base64>","PartitionKey":"<key>"},
	 * then the key itself (REC_KEY) for the ordering rules.
	 */
	need = sizeof(ENTRY_DATA) - 1 + 4 * ((len + 2) / 3) + sizeof(ENTRY_KEY) - 1 +
		6 * keylen + 2 + 1 + keylen + 1;
	block = arena_reserve(kc, need);
	b = &kc->blocks[block];
	p = b->mem + b->used;
	r->entry = p;
	memcpy(p, ENTRY_DATA, sizeof(ENTRY_DATA) - 1);
	p += sizeof(ENTRY_DATA) - 1;
	p = b64_encode((const unsigned char *) data, len, p);
	memcpy(p, ENTRY_KEY, sizeof(ENTRY_KEY) - 1);
	p += sizeof(ENTRY_KEY) - 1;
	p = json_string(p, partition_key, keylen);
	*p++ = '}';
	r->entry_len = p - r->entry;
	memcpy(p, partition_key, keylen + 1);
	b->used += r->entry_len + keylen + 1;
	b->live++;
	r->block = block;
	r->size = len + keylen;
	r->state = REC_NEW;
	r->barrier = barrier;
	kc->nrecs++;

	if (++kc->since_pump >= KINESIS_PUMP_EVERY)
		pump(kc);
}

int
egress_kinesis_pending(EgressKinesisClient *kc)
{
	return kc->nrecs - kc->ndone;
}

void
egress_kinesis_discard(EgressKinesisClient *kc)
{
	/* calls in flight are abandoned: their records are sent again */
	for (int i = 0; i < kc->max_inflight; i++)
	{
		KinesisCall *call = &kc->calls[i];

		if (call->busy)
			(void) curl_multi_remove_handle(kc->multi, call->easy);
		call->busy = false;
		call->n = 0;
		/* no large body kept between batches */
		if (call->body.maxlen > 1024 * 1024)
		{
			pfree(call->body.data);
			call->body.data = MemoryContextAlloc(kc->cxt, 1024);
			call->body.maxlen = 1024;
		}
		resetStringInfo(&call->body);
	}
	kc->ninflight = 0;
	for (int i = 0; i < kc->nblocks; i++)
		release_block(kc, &kc->blocks[i]);
	MemoryContextReset(kc->batch_cxt);
	MemoryContextReset(kc->work_cxt);
	kc->recs = NULL;
	kc->nrecs = 0;
	kc->size = 0;
	kc->ndone = 0;
	kc->next = 0;
	kc->waiting = NULL;
	kc->nwaiting = 0;
	kc->waiting_size = 0;
	keytab_reset(kc->keys);
	kc->blocks = NULL;
	kc->nblocks = 0;
	kc->blocks_size = 0;
	kc->barrier_inflight = false;
	kc->settings_fresh = false;
	kc->since_pump = 0;
	kc->resume_at = 0;
	kc->futile = 0;
	kc->error = NULL;
	egress_backoff_init(&kc->backoff, KINESIS_BACKOFF_MIN_MS, KINESIS_BACKOFF_MAX_MS);
}

const EgressKinesisStats *
egress_kinesis_stats(EgressKinesisClient *kc)
{
	return &kc->stats;
}

/* ---------------------------------------------------------------------
 * Filling a call
 * ---------------------------------------------------------------------
 */

static void
take(EgressKinesisClient *kc, KinesisCall *call, int ri, size_t *bytes)
{
	KinesisRecord *r = &kc->recs[ri];

	r->state = REC_INFLIGHT;
	key_hold(kc, r);
	call->idx[call->n++] = ri;
	*bytes += r->size;
	if (r->barrier)
		kc->barrier_inflight = true;
}

/*
 * Chooses the records of the next call (see the head comment): first from
 * the waiting list, then from the records not looked at yet.  Returns how
 * many (0: nothing may go now).
 */
static int
build_call(EgressKinesisClient *kc, KinesisCall *call)
{
	size_t		bytes = 0;
	int			blocked = 0;
	bool		stop = false;
	int			keep = 0;

	call->n = 0;
	if (kc->barrier_inflight)
		return 0;

	for (int w = 0; w < kc->nwaiting; w++)
	{
		int			ri = kc->waiting[w];
		KinesisRecord *r = &kc->recs[ri];

		if (!stop)
		{
			if (r->barrier)
			{
				/* a barrier waits first in the list only when it failed */
				if (w == 0 && kc->ninflight == 0)
				{
					take(kc, call, ri, &bytes);
					stop = true;
					continue;
				}
				stop = true;
			}
			else if (key_busy(kc, r))
			{
				if (++blocked >= KINESIS_MAX_SKIPPED)
					stop = true;
			}
			else if (call->n >= KINESIS_MAX_RECORDS_PER_CALL ||
					 bytes + r->size > KINESIS_MAX_BYTES_PER_CALL)
				stop = true;
			else
			{
				take(kc, call, ri, &bytes);
				continue;
			}
		}
		kc->waiting[keep++] = ri;
	}
	kc->nwaiting = keep;

	/*
	 * New records only when every waiting one was looked at: a key met
	 * there (sent, or blocked) blocks its later records.
	 */
	while (!stop && kc->next < kc->nrecs && call->n < KINESIS_MAX_RECORDS_PER_CALL)
	{
		KinesisRecord *r = &kc->recs[kc->next];

		if (r->barrier)
		{
			/* alone, once everything before it is in */
			if (call->n == 0 && kc->nwaiting == 0 && kc->ninflight == 0)
			{
				take(kc, call, kc->next, &bytes);
				kc->next++;
			}
			break;
		}
		if (key_busy(kc, r))
		{
			r->state = REC_WAITING;
			if (kc->nwaiting >= kc->waiting_size)
			{
				int			n = Max(1024, kc->waiting_size * 2);

				if (kc->waiting == NULL)
					kc->waiting = MemoryContextAllocHuge(kc->batch_cxt, n * sizeof(int));
				else
					kc->waiting = repalloc_huge(kc->waiting, n * sizeof(int));
				kc->waiting_size = n;
			}
			kc->waiting[kc->nwaiting++] = kc->next++;
			/*
			 * Looking further only costs time when few keys take most
			 * records (partition_key "table"): the later records wait for
			 * the next call.
			 */
			if (++blocked >= KINESIS_MAX_SKIPPED)
				break;
			continue;
		}
		if (bytes + r->size > KINESIS_MAX_BYTES_PER_CALL)
			break;
		take(kc, call, kc->next, &bytes);
		kc->next++;
	}
	return call->n;
}

/* failed (or abandoned) records of a call back into the waiting list, in order */
static void
requeue(EgressKinesisClient *kc, const int *failed, int nf)
{
	int			i;
	int			j;
	int			k;

	if (nf == 0)
		return;
	if (kc->nwaiting + nf > kc->waiting_size)
	{
		int			n = Max(1024, Max(kc->waiting_size * 2, kc->nwaiting + nf));

		if (kc->waiting == NULL)
			kc->waiting = MemoryContextAllocHuge(kc->batch_cxt, n * sizeof(int));
		else
			kc->waiting = repalloc_huge(kc->waiting, n * sizeof(int));
		kc->waiting_size = n;
	}
	/* both lists are in queue order: merge from the end */
	i = kc->nwaiting - 1;
	j = nf - 1;
	k = kc->nwaiting + nf - 1;
	while (j >= 0)
	{
		if (i >= 0 && kc->waiting[i] > failed[j])
			kc->waiting[k--] = kc->waiting[i--];
		else
		{
			kc->recs[failed[j]].state = REC_WAITING;
			kc->waiting[k--] = failed[j--];
		}
	}
	kc->nwaiting += nf;
}

/* ---------------------------------------------------------------------
 * Sending
 * ---------------------------------------------------------------------
 */

static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *arg)
{
	KinesisCall *call = arg;
	size_t		n = size * nmemb;
	size_t		room = KINESIS_RESPONSE_MAX - call->response_len;
	size_t		len = Min(n, room);

	/* room was made beforehand: no ERROR may escape from within libcurl */
	if (len > 0)
	{
		memcpy(call->response + call->response_len, ptr, len);
		call->response_len += len;
		call->response[call->response_len] = '\0';
	}
	if (len < n)
		call->response_cut = true;
	return n;
}

static void
ensure_handles(EgressKinesisClient *kc)
{
	if (kc->multi == NULL)
	{
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not initialize libcurl")));
		kc->multi = curl_multi_init();
		if (kc->multi == NULL)
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
}

/* builds the body of call (its records chosen) and starts its transfer */
static void
send_call(EgressKinesisClient *kc, KinesisCall *call)
{
	StringInfo	b = &call->body;
	CURL	   *e;
	CURLMcode	mc;
	const char *failed_opt = NULL;
	size_t		total;
	char	   *p;

#define K_SETOPT(opt, val) \
	do { \
		if (curl_easy_setopt(e, (opt), (val)) != CURLE_OK && failed_opt == NULL) \
			failed_opt = #opt; \
	} while (0)

	/* the entries were encoded when queued: copied side by side */
	total = 0;
	for (int i = 0; i < call->n; i++)
		total += kc->recs[call->idx[i]].entry_len + 1;
	resetStringInfo(b);
	appendStringInfoString(b, "{\"StreamName\":");
	enlargeStringInfo(b, 6 * strlen(kc->stream) + 2);
	p = json_string(b->data + b->len, kc->stream, strlen(kc->stream));
	b->len = p - b->data;
	appendStringInfoString(b, ",\"Records\":[");
	enlargeStringInfo(b, total + 3);
	p = b->data + b->len;
	for (int i = 0; i < call->n; i++)
	{
		KinesisRecord *r = &kc->recs[call->idx[i]];

		if (i > 0)
			*p++ = ',';
		memcpy(p, r->entry, r->entry_len);
		p += r->entry_len;
	}
	*p++ = ']';
	*p++ = '}';
	*p = '\0';
	b->len = p - b->data;

	if (call->easy == NULL)
	{
		call->easy = curl_easy_init();
		if (call->easy == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not create a libcurl handle")));
	}
	if (call->response == NULL)
		call->response = MemoryContextAlloc(kc->cxt, KINESIS_RESPONSE_MAX + 1);
	e = call->easy;
	call->response_len = 0;
	call->response[0] = '\0';
	call->response_cut = false;
	call->errbuf[0] = '\0';

	/*
	 * The handle keeps its options from call to call (setting them all
	 * again, URL included, was a tenth of libcurl's share of the worker):
	 * only the body changes, unless the settings were read again.
	 */
	if (call->opts_gen == kc->settings_gen)
	{
		K_SETOPT(CURLOPT_POSTFIELDS, b->data);
		K_SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) b->len);
		goto set;
	}
	curl_easy_reset(e);
	K_SETOPT(CURLOPT_URL, kc->url);
	K_SETOPT(CURLOPT_AWS_SIGV4, kc->sigv4);
	K_SETOPT(CURLOPT_USERNAME, kc->access_key);
	K_SETOPT(CURLOPT_PASSWORD, kc->secret_key);
	K_SETOPT(CURLOPT_HTTPHEADER, kc->headers);
	K_SETOPT(CURLOPT_POST, 1L);
	K_SETOPT(CURLOPT_POSTFIELDS, b->data);
	K_SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) b->len);
	K_SETOPT(CURLOPT_WRITEFUNCTION, write_cb);
	K_SETOPT(CURLOPT_WRITEDATA, call);
	K_SETOPT(CURLOPT_PRIVATE, call);
	K_SETOPT(CURLOPT_ERRORBUFFER, call->errbuf);
	K_SETOPT(CURLOPT_NOSIGNAL, 1L);
	K_SETOPT(CURLOPT_CONNECTTIMEOUT, 30L);
	K_SETOPT(CURLOPT_TIMEOUT, 120L);
	K_SETOPT(CURLOPT_EXPECT_100_TIMEOUT_MS, 200L);
	K_SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
	K_SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
	/* a body of a few hundred kB handed to the socket in one go */
	K_SETOPT(CURLOPT_UPLOAD_BUFFERSIZE, 512 * 1024L);
	call->opts_gen = failed_opt ? 0 : kc->settings_gen;
set:
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
	call->busy = true;
	kc->ninflight++;
	if (kc->ninflight > kc->stats.max_inflight)
		kc->stats.max_inflight = kc->ninflight;
}

/*
 * Starts calls while allowed and records can go; returns how many.
 * full_only (while the batch is still being queued): no call of the few
 * new records left once full calls went, they wait for more to join them
 * (else every pump sent a small call besides its full ones).
 */
static int
start_calls(EgressKinesisClient *kc, bool full_only)
{
	int			started = 0;

	if (kc->error)
		return 0;
	if (!kc->settings_fresh)
	{
		/* once per batch, before its first call (none is in flight) */
		refresh_settings(kc);
		kc->settings_fresh = true;
	}
	ensure_handles(kc);
	while (kc->ninflight < kc->max_inflight)
	{
		KinesisCall *call = NULL;

		for (int i = 0; i < kc->max_inflight && call == NULL; i++)
			if (!kc->calls[i].busy)
				call = &kc->calls[i];
		Assert(call != NULL);
		if (full_only && kc->nwaiting == 0 &&
			kc->nrecs - kc->next < KINESIS_MAX_RECORDS_PER_CALL)
			break;
		if (build_call(kc, call) == 0)
			break;
		send_call(kc, call);
		started++;
	}
	return started;
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
 * was a tenth of the worker's time): "FailedRecordCount":0 and one
 * "SequenceNumber" per record sent (an entry that failed has none).
 * Anything else (other spacing included) takes the full parse.
 */
static bool
all_accepted(KinesisCall *call, int n)
{
	static const char fc[] = "\"FailedRecordCount\":0";
	static const char sn[] = "\"SequenceNumber\"";
	const char *data = call->response;
	const char *end = data + call->response_len;
	const char *p = memmem(data, call->response_len, fc, sizeof(fc) - 1);
	int			seqs = 0;

	if (p == NULL)
		return false;
	p += sizeof(fc) - 1;
	if (*p != ',' && *p != '}')
		return false;

	/*
	 * Counted at their 'q', a letter no other name or value of the answer
	 * has (digits, ShardId, EncryptionType, ...): one memchr per entry
	 * finds it, cheaper than a memmem per entry.  Any other 'q' is looked
	 * at and skipped.
	 */
	for (p = data + 3; p < end; p++)
	{
		p = memchr(p, 'q', end - p);
		if (p == NULL)
			break;
		if (end - (p - 3) >= (ptrdiff_t) sizeof(sn) - 1 &&
			memcmp(p - 3, sn, sizeof(sn) - 1) == 0)
			seqs++;
	}
	return seqs == n;
}

static bool
parse_answer(KinesisCall *call, AnswerParse *ap, int ncodes)
{
	JsonLexContext *lex;
	JsonSemAction sem = {0};

	memset(ap, 0, sizeof(*ap));
	ap->ncodes = ncodes;
	ap->codes = ncodes > 0 ? palloc0(ncodes * sizeof(char *)) : NULL;
	if (call->response_cut || call->response_len == 0)
		return false;
	if (all_accepted(call, ncodes))
	{
		ap->has_failed_count = true;
		ap->failed_count = 0;
		ap->nentries = ncodes;
		return true;
	}
	lex = makeJsonLexContextCstringLen(call->response, call->response_len,
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

/* ---------------------------------------------------------------------
 * Taking answers in
 * ---------------------------------------------------------------------
 */

/* an error for egress_kinesis_flush to raise (answers never raise) */
static void
set_error(EgressKinesisClient *kc, int sqlerrcode, char *message, char *detail,
		  char *hint)
{
	MemoryContext old;

	if (kc->error)
		return;
	old = MemoryContextSwitchTo(kc->batch_cxt);
	kc->error = palloc0(sizeof(ErrorData));
	kc->error->sqlerrcode = sqlerrcode;
	kc->error->message = pstrdup(message);
	kc->error->detail = detail ? pstrdup(detail) : NULL;
	kc->error->hint = hint ? pstrdup(hint) : NULL;
	MemoryContextSwitchTo(old);
}

static void
note_why(EgressKinesisClient *kc, const char *why)
{
	strlcpy(kc->last_why, why, KINESIS_WHY_LEN);
}

/* a call that got nothing in: its records wait again, new calls back off */
static void
call_futile(EgressKinesisClient *kc, const char *why)
{
	long		delay = egress_backoff_next(&kc->backoff, -1);

	kc->futile++;
	kc->resume_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay);
	note_why(kc, why);
	ereport(DEBUG1,
			(errmsg_internal("pg_egress: Kinesis stream \"%s\": %s, retrying in %ld ms",
							 kc->stream, why, delay)));
}

static void
progress(EgressKinesisClient *kc)
{
	kc->futile = 0;
	egress_backoff_init(&kc->backoff, KINESIS_BACKOFF_MIN_MS, KINESIS_BACKOFF_MAX_MS);
	kc->since = GetCurrentTimestamp();
}

/* the answer of a finished call (rc: libcurl's result of its transfer) */
static void
take_answer(EgressKinesisClient *kc, KinesisCall *call, CURLcode rc)
{
	long		status = 0;
	AnswerParse ap;
	int			n = call->n;
	int		   *failed;
	int			nfailed = 0;
	MemoryContext old;

	for (int i = 0; i < n; i++)
		key_release(kc, &kc->recs[call->idx[i]]);
	if (n > 0 && kc->recs[call->idx[0]].barrier)
		kc->barrier_inflight = false;

	old = MemoryContextSwitchTo(kc->work_cxt);
	failed = palloc(Max(n, 1) * sizeof(int));
	if (rc != CURLE_OK)
	{
		kc->stats.errors++;
		requeue(kc, call->idx, n);
		call_futile(kc, call->errbuf[0] ? call->errbuf : curl_easy_strerror(rc));
	}
	else
	{
		bool		parsed;

		if (curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK)
			status = 0;
		parsed = parse_answer(call, &ap, n);
		if (status == 200 && parsed && ap.has_failed_count && ap.nentries == n)
		{
			kc->stats.calls++;
			kc->stats.records_sent += n;
			for (int i = 0; i < n; i++)
			{
				if (ap.codes[i] == NULL)
					record_done(kc, &kc->recs[call->idx[i]]);
				else
					failed[nfailed++] = call->idx[i];
			}
			kc->stats.records_accepted += n - nfailed;
			kc->stats.entries_failed += nfailed;
			requeue(kc, failed, nfailed);
			if (nfailed == 0)
				progress(kc);
			else
			{
				char	   *why = NULL;

				for (int i = 0; i < n && why == NULL; i++)
					if (ap.codes[i])
						why = psprintf("%d of %d records failed, e.g. %s", nfailed, n, ap.codes[i]);
				if (nfailed < n)
				{
					long		ms = 25 + (long) pg_prng_uint64_range(&pg_global_prng_state, 0, 50);
					TimestampTz at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);

					/*
					 * Some accepted: the batch progresses.  The failed ones
					 * go again after a short pause (partial failures are per
					 * shard: the others keep taking records); the long
					 * back-off is for calls that get nothing in.
					 */
					progress(kc);
					note_why(kc, why);
					if (at > kc->resume_at)
						kc->resume_at = at;
					ereport(DEBUG1,
							(errmsg_internal("pg_egress: Kinesis stream \"%s\": %s, resending them",
											 kc->stream, why)));
				}
				else
					call_futile(kc, why);
			}
		}
		else if (status == 200)
		{
			requeue(kc, call->idx, n);
			set_error(kc, ERRCODE_PROTOCOL_VIOLATION,
					  psprintf("unexpected answer from Kinesis stream \"%s\" to PutRecords", kc->stream),
					  psprintf("The answer does not give one result per record sent (%d sent).", n),
					  NULL);
		}
		else if (!(status >= 500 || retryable_type(ap.type)))
		{
			char	   *type = ap.type ? ap.type : "";

			if (strchr(type, '#'))
				type = strchr(type, '#') + 1;
			requeue(kc, call->idx, n);
			set_error(kc, ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
					  psprintf("Kinesis stream \"%s\" refused PutRecords: HTTP status %ld%s%s",
							   kc->stream, status, type[0] ? " " : "", type),
					  ap.message ? psprintf("Kinesis says: %s", ap.message) : NULL,
					  (strcmp(type, "InvalidSignatureException") == 0 ||
					   strcmp(type, "UnrecognizedClientException") == 0) ?
					  "Check the AWS credentials of the server (pg_egress.s3_access_key_id and pg_egress.s3_secret_access_key, or its environment)." : NULL);
		}
		else
		{
			if (throttling_type(ap.type))
				kc->stats.throttled++;
			else
				kc->stats.errors++;
			requeue(kc, call->idx, n);
			call_futile(kc, psprintf("HTTP status %ld%s%s", status, ap.type ? " " : "",
									 ap.type ? ap.type : ""));
		}
	}
	call->n = 0;
	MemoryContextSwitchTo(old);
	MemoryContextReset(kc->work_cxt);
}

/* moves the transfers on and takes the answers of those that finished */
static void
drive(EgressKinesisClient *kc)
{
	int			still;
	int			left;
	CURLMsg    *msg;
	CURLMcode	mc;

	if (kc->multi == NULL || kc->ninflight == 0)
		return;
	mc = curl_multi_perform(kc->multi, &still);
	if (mc != CURLM_OK)
	{
		set_error(kc, ERRCODE_INTERNAL_ERROR,
				  psprintf("Kinesis transfer failed: %s", curl_multi_strerror(mc)),
				  NULL, NULL);
		return;
	}
	while ((msg = curl_multi_info_read(kc->multi, &left)) != NULL)
	{
		KinesisCall *call = NULL;
		CURLcode	rc = msg->data.result;
		CURL	   *e = msg->easy_handle;

		if (msg->msg != CURLMSG_DONE)
			continue;
		if (curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **) &call) != CURLE_OK ||
			call == NULL || !call->busy)
			continue;
		(void) curl_multi_remove_handle(kc->multi, e);
		call->busy = false;
		kc->ninflight--;
		take_answer(kc, call, rc);
	}
}

/*
 * While records are queued: take the answers in, and start calls once
 * enough records wait to fill them (never waits, never raises for a
 * delivery failure).
 */
static void
pump(EgressKinesisClient *kc)
{
	kc->since_pump = 0;
	if (kc->error)
		return;
	drive(kc);
	if (kc->error || kc->ninflight >= kc->max_inflight ||
		kc->nrecs - kc->next < KINESIS_PUMP_MIN_NEW)
		return;
	if (kc->resume_at != 0 && GetCurrentTimestamp() < kc->resume_at)
		return;
	if (!kc->settings_fresh)
	{
		MemoryContext cxt = CurrentMemoryContext;

		/*
		 * Credentials missing or an invalid endpoint: raised at the commit
		 * of the batch, as when nothing was sent before it.  Reading them
		 * holds no resource when it fails.
		 */
		PG_TRY();
		{
			refresh_settings(kc);
			kc->settings_fresh = true;
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(kc->batch_cxt);
			edata = CopyErrorData();
			MemoryContextSwitchTo(cxt);
			if (edata->elevel != ERROR)
				PG_RE_THROW();
			FlushErrorState();
			kc->error = edata;
		}
		PG_END_TRY();
		if (kc->error)
			return;
	}
	if (start_calls(kc, true) > 0)
		drive(kc);
}

static void
raise_error(EgressKinesisClient *kc)
{
	ErrorData  *e = kc->error;

	ereport(ERROR,
			(errcode(e->sqlerrcode),
			 errmsg_internal("%s", e->message),
			 e->detail ? errdetail_internal("%s", e->detail) : 0,
			 e->hint ? errhint("%s", e->hint) : 0));
}

void
egress_kinesis_flush(EgressKinesisClient *kc,
					 bool (*keep_retrying) (void *arg, TimestampTz since),
					 void *arg)
{
	TimestampTz asked = 0;

	kc->since = GetCurrentTimestamp();
	for (;;)
	{
		TimestampTz now;
		long		ms;

		drive(kc);
		if (kc->error)
			raise_error(kc);
		if (kc->ndone == kc->nrecs)
			break;
		if (kc->futile >= KINESIS_MAX_FUTILE && keep_retrying == NULL &&
			kc->ninflight == 0)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("could not send to Kinesis stream \"%s\": %s", kc->stream, kc->last_why),
					 errdetail("Tried %d times in a row without any record accepted.", kc->futile)));
		now = GetCurrentTimestamp();
		if (now >= kc->resume_at && start_calls(kc, false) > 0)
			continue;

		/* backing off: the caller says how long to go on */
		if (kc->futile > 0 && keep_retrying != NULL &&
			TimestampDifferenceExceeds(asked, now, 1000))
		{
			asked = now;
			if (!keep_retrying(arg, kc->since))
				ereport(ERROR,
						(errcode(ERRCODE_CONNECTION_FAILURE),
						 errmsg("gave up sending to Kinesis stream \"%s\": %s",
								kc->stream, kc->last_why),
						 errdetail("%d records of the batch are not accepted yet.",
								   egress_kinesis_pending(kc))));
		}
		ms = KINESIS_WAIT_MAX_MS;
		if (kc->resume_at > now)
			ms = Min(ms, TimestampDifferenceMilliseconds(now, kc->resume_at) + 1);
		if (kc->ninflight > 0)
		{
			CURLMcode	mc = egress_curl_wait(kc->multi, ms);

			if (mc != CURLM_OK)
				ereport(ERROR,
						(errcode(ERRCODE_INTERNAL_ERROR),
						 errmsg("Kinesis transfer failed: %s", curl_multi_strerror(mc))));
		}
		else if (kc->resume_at > now)
			(void) egress_backoff_sleep(ms, NULL, NULL, 0);
		else
			elog(ERROR, "pg_egress: %d Kinesis records cannot be sent",
				 egress_kinesis_pending(kc));
	}
	egress_curl_wait_done();
	egress_kinesis_discard(kc);
}

void
egress_kinesis_close(EgressKinesisClient *kc)
{
	if (kc == NULL)
		return;
	egress_kinesis_discard(kc);
	for (int i = 0; i < kc->max_inflight; i++)
		if (kc->calls[i].easy)
			curl_easy_cleanup(kc->calls[i].easy);
	if (kc->multi)
		curl_multi_cleanup(kc->multi);
	if (kc->headers)
		curl_slist_free_all(kc->headers);
	if (kc->secret_key)
		explicit_bzero(kc->secret_key, strlen(kc->secret_key));
	MemoryContextDelete(kc->cxt);
}

/*
 * egress_kinesis_describe: gives up when the backend is asked to stop (a
 * cancel or a termination), not for other interrupts (a memory context
 * dump, a barrier...), which are served after the request: they would
 * otherwise fail the check for nothing.
 */
static int
describe_progress_cb(void *arg, curl_off_t dltotal, curl_off_t dlnow,
					 curl_off_t ultotal, curl_off_t ulnow)
{
	return (QueryCancelPending || ProcDiePending) ? 1 : 0;
}

static size_t
describe_write_cb(char *ptr, size_t size, size_t nmemb, void *arg)
{
	StringInfo	s = arg;
	size_t		n = size * nmemb;

	if (s->len < KINESIS_RESPONSE_MAX)
		appendBinaryStringInfo(s, ptr, Min(n, (size_t) (KINESIS_RESPONSE_MAX - s->len)));
	return n;
}

char *
egress_kinesis_describe(const char *stream, const char *region)
{
	EgressKinesisClient *kc = egress_kinesis_open(stream, region, 1);
	CURL	   *e;
	struct curl_slist *h = NULL;
	StringInfoData body;
	StringInfoData resp;
	char		errbuf[CURL_ERROR_SIZE];
	CURLcode	rc;
	long		status = 0;
	char	   *p;
	char	   *result;

	refresh_settings(kc);
	initStringInfo(&body);
	appendStringInfoString(&body, "{\"StreamName\":");
	enlargeStringInfo(&body, 6 * strlen(stream) + 2);
	p = json_string(body.data + body.len, stream, strlen(stream));
	body.len = p - body.data;
	appendStringInfoChar(&body, '}');
	initStringInfo(&resp);
	errbuf[0] = '\0';

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK ||
		(e = curl_easy_init()) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not initialize libcurl")));
	h = curl_slist_append(h, "Content-Type: application/x-amz-json-1.1");
	if (h)
		h = curl_slist_append(h, "X-Amz-Target: Kinesis_20131202.DescribeStreamSummary");
	if (h && kc->session_token)
	{
		char	   *t = psprintf("x-amz-security-token: %s", kc->session_token);

		h = curl_slist_append(h, t);
		explicit_bzero(t, strlen(t));
		pfree(t);
	}
	if (h == NULL ||
		curl_easy_setopt(e, CURLOPT_URL, kc->url) != CURLE_OK ||
		curl_easy_setopt(e, CURLOPT_AWS_SIGV4, kc->sigv4) != CURLE_OK ||
		curl_easy_setopt(e, CURLOPT_USERNAME, kc->access_key) != CURLE_OK ||
		curl_easy_setopt(e, CURLOPT_PASSWORD, kc->secret_key) != CURLE_OK ||
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, h) != CURLE_OK ||
		curl_easy_setopt(e, CURLOPT_POST, 1L) != CURLE_OK ||
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, body.data) != CURLE_OK ||
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) body.len) != CURLE_OK ||
		curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, describe_write_cb) != CURLE_OK ||
		curl_easy_setopt(e, CURLOPT_WRITEDATA, &resp) != CURLE_OK ||
		curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf) != CURLE_OK ||
		curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
		curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L) != CURLE_OK ||
		curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, describe_progress_cb) != CURLE_OK ||
		curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 10L) != CURLE_OK ||
		curl_easy_setopt(e, CURLOPT_TIMEOUT, 30L) != CURLE_OK ||
		curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
		curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK)
	{
		curl_slist_free_all(h);
		curl_easy_cleanup(e);
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not set up a Kinesis request")));
	}
	rc = curl_easy_perform(e);
	if (rc == CURLE_OK)
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(h);
	curl_easy_cleanup(e);
	egress_kinesis_close(kc);
	CHECK_FOR_INTERRUPTS();

	if (rc != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not reach Kinesis stream \"%s\": %s", stream,
						errbuf[0] ? errbuf : curl_easy_strerror(rc))));
	if (status != 200)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("Kinesis refused DescribeStreamSummary of stream \"%s\": HTTP status %ld: %s",
						stream, status, resp.data)));
	p = strstr(resp.data, "\"StreamStatus\":\"");
	if (p == NULL)
		return pstrdup("unknown");
	p += strlen("\"StreamStatus\":\"");
	result = pnstrdup(p, strcspn(p, "\""));
	return result;
}
