/*-------------------------------------------------------------------------
 * sink.h
 *	  The one interface every destination kind implements.
 *
 * A batch is begun, written in pieces, then committed.  commit_batch
 * returns only once the destination has acknowledged the batch durably
 * (file renamed and fsync'ed, HTTP 2xx, ...); otherwise it raises an ERROR.
 * Only then may the caller record the positions the batch carried.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_SINK_H
#define EGRESS_SINK_H

#include "datatype/timestamp.h"
#include "utils/jsonb.h"

/* egress_check_destination_host(), for egress_add_destination */
#include "net/hosts.h"

typedef struct EgressBatchInfo
{
	/* stream or destination name: what temporary leftovers are found by */
	const char *prefix;
} EgressBatchInfo;

typedef struct EgressSink EgressSink;

typedef struct EgressSinkOps
{
	void		(*begin_batch) (EgressSink *sink, const EgressBatchInfo *info);
	/*
	 * Optional (NULL if not implemented), called right after begin_batch by
	 * callers that know the id commit_batch will be given: lets a sink start
	 * sending while the batch is still being written.
	 */
	void		(*announce_batch_id) (EgressSink *sink, const char *batch_id);
	void		(*write) (EgressSink *sink, const char *data, size_t len);
	/*
	 * Optional (NULL if not implemented): one whole message with the
	 * partition key the caller chose for it (Kinesis).  Callers use write()
	 * for sinks without it.
	 */
	void		(*write_record) (EgressSink *sink, const char *data, size_t len,
								 const char *partition_key);
	/*
	 * batch_id is deterministic (stream and positions), so that a batch sent
	 * again after a crash carries the same id: the file name, the HTTP
	 * header, ...
	 */
	void		(*commit_batch) (EgressSink *sink, const char *batch_id);
	/* drop an uncommitted batch; must not raise an error */
	void		(*abort_batch) (EgressSink *sink);
	/* forget leftovers of earlier, interrupted runs under this prefix */
	void		(*cleanup) (EgressSink *sink, const char *prefix);
	void		(*close) (EgressSink *sink);
} EgressSinkOps;

struct EgressSink
{
	const EgressSinkOps *ops;
	const char *kind;
	char	   *location;
	Jsonb	   *options;
	void	   *private_data;

	/*
	 * Optional, set by the caller: asked while a sink waits to retry a
	 * failed delivery; false makes commit_batch give up with an ERROR, so
	 * that the caller can act (a configuration change, a WAL retention
	 * limit).  since: when the first attempt of this batch started.
	 */
	bool		(*keep_retrying) (void *arg, TimestampTz since);
	void	   *keep_retrying_arg;

	/*
	 * Set by the caller: the destination's owner (who chose its URL) is a
	 * superuser.  While false (the default, also when the caller does not
	 * know), every connection the sink opens must go to an address that
	 * pg_egress.allowed_destination_hosts allows (net/hosts.h).
	 */
	bool		owner_superuser;
};

/*
 * SQLSTATE of a batch the destination refused for good (an HTTP 4xx other
 * than 408 and 429): sending it again unchanged cannot succeed.  Only the
 * HTTP sink raises it; the CDC worker then stops the destination's streams
 * (state error) instead of retrying.  Every other delivery failure (S3
 * errors included, even after their retries) uses another SQLSTATE and is
 * retried by the worker.
 */
#define EGRESS_ERRCODE_REJECTED MAKE_SQLSTATE('P','E','0','0','1')

extern EgressSink *egress_sink_open(const char *kind, const char *location,
									Jsonb *options);

/* sink kinds, one per file */
extern EgressSink *egress_file_sink_create(const char *location, Jsonb *options);
extern EgressSink *egress_s3_sink_create(const char *location, Jsonb *options);
extern EgressSink *egress_http_sink_create(const char *location, Jsonb *options);
extern EgressSink *egress_kinesis_sink_create(const char *location, Jsonb *options);

/* kinesis.c: checks a Kinesis destination's options (ERROR when wrong) */
extern void egress_kinesis_sink_check_options(Jsonb *options, char **region,
											  int *format, int *key_mode,
											  char **key_column);

/* http.c helpers, also used to validate options */
extern long egress_parse_interval_ms(const char *s);
extern char *egress_http_shown_url(const char *url);

#endif							/* EGRESS_SINK_H */
