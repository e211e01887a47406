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

#include "sink/sink_options.h"

typedef struct EgressBatchInfo
{
	/* stream or destination name: what temporary leftovers are found by */
	const char *prefix;
} EgressBatchInfo;

typedef struct EgressSink EgressSink;

/* A failed delivery attempt that may succeed later (commit_attempt). */
typedef struct EgressSinkFailure
{
	char	   *what;			/* why, safe to show (no secrets) */
	long		retry_after_ms; /* what the destination asked for; -1: none */
} EgressSinkFailure;

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
	 * batch_id is deterministic (stream and positions), so that a batch sent
	 * again after a crash carries the same id: the file name, the HTTP
	 * header, ...
	 *
	 * Sinks whose deliveries can fail for a while (network ones) set this
	 * to egress_sink_commit_with_retries and implement commit_attempt
	 * instead: the retry loop is written once, in sink.c.
	 */
	void		(*commit_batch) (EgressSink *sink, const char *batch_id);

	/*
	 * Optional, both or neither: commit_batch, except that it may return
	 * while the batch's last step (a COMMIT) is under way, before the
	 * destination acknowledged it: true then, and the caller must not
	 * record the positions the batch carried until commit_batch_finish
	 * returned (an ERROR, ERRCODE_CONNECTION_FAILURE: not acknowledged,
	 * its outcome unknown; the batch must be sent again).  Meanwhile the
	 * next batch may be begun and written, so that the destination
	 * acknowledges one batch while the source decodes the next.  false:
	 * acknowledged, as after commit_batch.
	 */
	bool		(*commit_batch_start) (EgressSink *sink, const char *batch_id);
	void		(*commit_batch_finish) (EgressSink *sink);

	/*
	 * Optional: one delivery attempt of the batch, for
	 * egress_sink_commit_with_retries.  Returns true once the destination
	 * has acknowledged the batch; false for a failure that may succeed
	 * later (a network error, a timeout, HTTP 408/429/5xx, S3 SlowDown),
	 * with *failure filled in; raises an ERROR (EGRESS_ERRCODE_REJECTED or
	 * another classified SQLSTATE) for one that cannot.  After a false the
	 * batch is intact: the attempt may be made again.
	 */
	bool		(*commit_attempt) (EgressSink *sink, const char *batch_id,
								   struct EgressSinkFailure *failure);
	/*
	 * Drop an uncommitted batch; must not raise an error.  Callers call it
	 * after an error of begin_batch, write or commit_batch, before using
	 * the sink again: it releases what the batch holds (a request under
	 * way, compression state, a temporary file).
	 */
	void		(*abort_batch) (EgressSink *sink);
	/* forget leftovers of earlier, interrupted runs under this prefix */
	void		(*cleanup) (EgressSink *sink, const char *prefix);
	void		(*close) (EgressSink *sink);

	/*
	 * Optional (NULL if not implemented): one record of the open batch,
	 * for sinks whose destination stores records rather than a byte stream
	 * (Kinesis).  data is one whole message without its line end;
	 * partition_key, when not NULL, says which records must stay in order
	 * relative to each other (records of one key are delivered in the
	 * order written).  Callers that have records use it when it is set and
	 * fall back to write() (data followed by a newline) otherwise; a sink
	 * that sets it must still accept write(), splitting lines itself.
	 * Delivery is acknowledged by commit_batch as for write().
	 */
	void		(*write_record) (EgressSink *sink, const char *data, size_t len,
								 const char *partition_key);

	/*
	 * Optional (NULL if not implemented), for egress_check(): can the
	 * destination be reached and written with its credentials, now?  One
	 * attempt, no retries, nothing left behind (a test object is deleted,
	 * an HTTP test request carries "X-Pg-Egress-Check: 1" so that receivers
	 * can drop it).  Connections obey pg_egress.allowed_destination_hosts
	 * as deliveries do (owner_superuser).  ERROR, with the message a
	 * delivery would get, when not; otherwise returns what was checked, in
	 * a sentence that shows no secret.
	 */
	char	   *(*probe) (EgressSink *sink);
} EgressSinkOps;

struct EgressSink
{
	const EgressSinkOps *ops;
	const char *kind;
	char	   *location;		/* what messages show (open may redact it) */
	char	   *stored_location;	/* as egress.destination stores it */
	Jsonb	   *options;
	EgressSinkOptions opts;		/* options, parsed by egress_sink_open */
	void	   *private_data;

	/*
	 * Optional, set by the caller: asked while a sink waits to retry a
	 * failed delivery; false makes commit_batch give up with an ERROR, so
	 * that the caller can act (a configuration change, a WAL retention
	 * limit).  since: when the first attempt of this batch started.
	 */
	bool		(*keep_retrying) (void *arg, TimestampTz since);
	void	   *keep_retrying_arg;
	/* Optional: called with keep_retrying_arg when a batch got through after failed attempts. */
	void		(*delivered_after_retries) (void *arg);

	/*
	 * Set by the caller: the destination's owner (who chose its URL) is a
	 * superuser.  While false (the default, also when the caller does not
	 * know), every connection the sink opens must go to an address that
	 * pg_egress.allowed_destination_hosts allows (net/hosts.h).
	 */
	bool		owner_superuser;
	/* the destination's owner, when known: superuser status re-read at each connection */
	Oid			owner;

	/*
	 * Set by the kind's open: the sink wants every RECORD and ACTIVATE_VERSION
	 * that the CDC worker renders for a decoded change to carry its position
	 * (a top-level "position" key, see cdc_render.c), so that it can
	 * recognise a change it already applied (postgres destinations).
	 */
	bool		wants_positions;
};

/*
 * SQLSTATE of a batch the destination refused for good (an HTTP 4xx other
 * than 408 and 429; S3 AccessDenied, InvalidAccessKeyId,
 * SignatureDoesNotMatch, NoSuchBucket; a Kinesis record too large): sending
 * it again unchanged cannot succeed.  The CDC worker then stops the
 * destination's streams (state error) instead of retrying.  Every other
 * delivery failure uses another SQLSTATE and is retried by the worker.
 */
#define EGRESS_ERRCODE_REJECTED MAKE_SQLSTATE('P','E','0','0','1')

/*
 * SQLSTATE of a sync (FULL_TABLE, INCREMENTAL) given up because its
 * destination was changed while a batch was being retried
 * (egress_sink_watch_destination): not a failure of the stream; the worker
 * ends, the stream stays pending/syncing, and the next worker runs it
 * again with the destination as it is now.
 */
#define EGRESS_ERRCODE_RESTART_RUN MAKE_SQLSTATE('P','E','0','0','2')

/*
 * What else the sinks raise, so that callers can classify a failure by its
 * SQLSTATE alone: ERRCODE_CONNECTION_FAILURE, a delivery that did not get
 * through (transport errors, 408/429/5xx answers, S3 SlowDown) once the
 * retries of egress_sink_commit_with_retries (net/backoff.h, bounded by
 * keep_retrying) are spent; ERRCODE_EXTERNAL_ROUTINE_EXCEPTION, another
 * error answer of S3, raised at the first attempt;
 * ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, no credentials; file access
 * errors (errcode_for_file_access) for file destinations; and the usual
 * interrupt and out-of-memory errors.  All of these the worker retries.
 */

/*
 * A sink kind: one per file (file.c, http.c, s3.c), listed in sink.c.
 * Adding a kind means adding a file and a line there, not touching the
 * catalog or the workers.
 */
typedef struct EgressSinkKind
{
	const char *name;			/* egress.destination.kind */
	const char *schemes[3];		/* URL prefixes of this kind, NULL-ended */

	/*
	 * The kind's URL grammar (postgres_fdw's validator model: the kind owns
	 * its grammar and options): ERROR unless url is one of this kind;
	 * returns the location egress.destination stores.  Never shows the
	 * whole URL in a message: it may carry credentials.
	 */
	char	   *(*parse_url) (const char *url);

	/*
	 * At egress_add_destination, as owner (the calling role), after
	 * parse_url and the parse of the options (keys and value types are
	 * checked by then): ERROR unless this location and these options are
	 * allowed to owner (privileged options, allowed hosts).  NULL: nothing
	 * to check.
	 */
	void		(*validate) (const char *location, const EgressSinkOptions *opts,
							 Oid owner, bool owner_superuser);

	/*
	 * Makes sink (allocated by egress_sink_open, with kind, location,
	 * options and opts filled in) ready: sets ops and private_data; may
	 * replace location by what messages may show of it.
	 */
	void		(*open) (EgressSink *sink);
} EgressSinkKind;

extern const EgressSinkKind egress_file_sink_kind;
extern const EgressSinkKind egress_http_sink_kind;
extern const EgressSinkKind egress_s3_sink_kind;
extern const EgressSinkKind egress_kinesis_sink_kind;
extern const EgressSinkKind egress_postgres_sink_kind;

extern EgressSink *egress_sink_open(const char *kind, const char *location,
									Jsonb *options);

/*
 * The one retry loop of the sinks: commit_attempt until it succeeds,
 * sleeping the back-off of net/backoff.h (options retry_initial_interval,
 * retry_max_interval) between attempts, as long as sink->keep_retrying
 * says so (without one: until interrupted); then an ERROR with
 * ERRCODE_CONNECTION_FAILURE.  The
 * commit_batch of the sinks that implement commit_attempt.
 */
extern void egress_sink_commit_with_retries(EgressSink *sink, const char *batch_id);
extern bool egress_sink_show_retrying(void *arg, TimestampTz since);

/*
 * The sink of this process's sync of stream stream_id: while
 * egress_sink_show_retrying retries one of its batches, a change of the
 * stream's destination (kind, location, options, owner: a password fixed
 * with egress_alter_destination) ends the retries with
 * EGRESS_ERRCODE_RESTART_RUN, so that the run starts again with the new
 * destination (and its checks: egress_check_destination_use).
 */
extern void egress_sink_watch_destination(EgressSink *sink, int32 stream_id);

/*
 * Is the destination of stream stream_id no longer what sink was opened
 * with (kind, location, options, owner)?  Reads the catalog with the latest
 * snapshot (in a transaction of its own when none is open).
 */
extern bool egress_sink_destination_changed(EgressSink *sink, int32 stream_id);
extern void egress_sink_show_reading(void *arg);
extern void egress_sink_retry_done(EgressSink *sink);

#endif							/* EGRESS_SINK_H */
