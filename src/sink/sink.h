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

#include "utils/jsonb.h"

typedef struct EgressBatchInfo
{
	/* stream or destination name: what temporary leftovers are found by */
	const char *prefix;
} EgressBatchInfo;

typedef struct EgressSink EgressSink;

typedef struct EgressSinkOps
{
	void		(*begin_batch) (EgressSink *sink, const EgressBatchInfo *info);
	void		(*write) (EgressSink *sink, const char *data, size_t len);
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
};

extern EgressSink *egress_sink_open(const char *kind, const char *location,
									Jsonb *options);

/* sink kinds, one per file */
extern EgressSink *egress_file_sink_create(const char *location, Jsonb *options);
extern EgressSink *egress_s3_sink_create(const char *location, Jsonb *options);

#endif							/* EGRESS_SINK_H */
