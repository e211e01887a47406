/*-------------------------------------------------------------------------
 * sink.c
 *	  Chooses the sink implementation for a destination kind.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "sink/sink.h"

EgressSink *
egress_sink_open(const char *kind, const char *location, Jsonb *options)
{
	EgressSink *sink;

	if (strcmp(kind, "file") == 0)
		sink = egress_file_sink_create(location, options);
	else if (strcmp(kind, "s3") == 0)
		sink = egress_s3_sink_create(location, options);
	else if (strcmp(kind, "http") == 0)
		sink = egress_http_sink_create(location, options);
	else if (strcmp(kind, "kinesis") == 0)
		sink = egress_kinesis_sink_create(location, options);
	else
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s destinations are not supported in this release", kind)));
	sink->kind = kind;
	return sink;
}
