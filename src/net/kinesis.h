/*-------------------------------------------------------------------------
 * kinesis.h
 *	  A Kinesis PutRecords client: SigV4 through libcurl, the API's limits,
 *	  per-partition-key order, and resending of failed entries.
 *
 * Records are queued with egress_kinesis_add(), which may already send
 * calls of them, and sent by egress_kinesis_flush(), which returns only once
 * Kinesis has accepted every queued record (or raises an ERROR, after which
 * the caller sends the whole batch again: duplicates of accepted records
 * are possible, losses are not).  Delivery errors are raised by
 * egress_kinesis_flush only; egress_kinesis_add raises for a record over
 * the API's limit.
 *
 * Order: records of one partition key are accepted in the order they were
 * added.  A call never carries a record of a key while an earlier record of
 * that key is unsent, in another call in flight, or was refused, so a
 * failed entry cannot be overtaken by a later one of its key.  A record added as a barrier (Singer SCHEMA
 * and STATE messages) is sent only once everything before it is accepted,
 * and nothing after it is sent before it is accepted.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_KINESIS_H
#define EGRESS_KINESIS_H

#include "datatype/timestamp.h"

/* GUC pg_egress.kinesis_endpoint (registered in guc.c) */
extern char *egress_kinesis_endpoint;

/* API limits */
#define KINESIS_MAX_RECORDS_PER_CALL	500
#define KINESIS_MAX_BYTES_PER_CALL		(5 * 1024 * 1024)
#define KINESIS_MAX_RECORD_BYTES		(1024 * 1024)	/* data + partition key */
#define KINESIS_MAX_KEY_BYTES			256

/* PutRecords calls in flight at once: the default, the most */
#define KINESIS_DEFAULT_INFLIGHT		4
#define KINESIS_MAX_INFLIGHT			64

typedef struct EgressKinesisClient EgressKinesisClient;

typedef struct EgressKinesisStats
{
	uint64		calls;			/* PutRecords calls answered 200 */
	uint64		records_sent;	/* entries in those calls */
	uint64		records_accepted;
	uint64		entries_failed; /* per-entry failures, resent */
	uint64		throttled;		/* whole calls refused for throughput */
	uint64		errors;			/* other failed calls, retried */
	int			max_inflight;	/* most calls in flight at once */
} EgressKinesisStats;

/*
 * stream: the Kinesis stream name; region NULL or "": as for S3
 * (pg_egress.s3_region, AWS_REGION, ...).  Credentials as for S3 (read at
 * each batch's first call; ERROR when none are found).  max_inflight: how
 * many PutRecords calls may run at once (1 .. KINESIS_MAX_INFLIGHT).
 */
extern EgressKinesisClient *egress_kinesis_open(const char *stream,
												const char *region,
												int max_inflight);

/*
 * Queues one record (copied).  A record over the API's limit raises an
 * ERROR with SQLSTATE EGRESS_ERRCODE_REJECTED naming its partition key
 * (key_label, e.g. the row's key, when given) and its size.
 */
extern void egress_kinesis_add(EgressKinesisClient *kc, const char *data,
							   size_t len, const char *partition_key,
							   bool barrier, const char *key_label);
extern int	egress_kinesis_pending(EgressKinesisClient *kc);

/*
 * Sends every queued record; returns once all are accepted.  Failed
 * entries and throttled or failed calls are retried with back-off; while
 * retrying, keep_retrying (optional) is asked whether to go on.
 */
extern void egress_kinesis_flush(EgressKinesisClient *kc,
								 bool (*keep_retrying) (void *arg, TimestampTz since),
								 void *arg);

/* forgets the queued records; raises no error */
extern void egress_kinesis_discard(EgressKinesisClient *kc);
extern void egress_kinesis_close(EgressKinesisClient *kc);
extern const EgressKinesisStats *egress_kinesis_stats(EgressKinesisClient *kc);

/*
 * egress_check: DescribeStreamSummary of a stream, once, with the
 * credentials and endpoint a client would use; returns its StreamStatus
 * (ACTIVE, CREATING, ...), or raises an ERROR with the answer.
 */
extern char *egress_kinesis_describe(const char *stream, const char *region);

/* a partition key of at most KINESIS_MAX_KEY_BYTES: long ones are hashed */
extern char *egress_kinesis_partition_key(const char *key, size_t len);

#endif							/* EGRESS_KINESIS_H */
