/*-------------------------------------------------------------------------
 * export.h
 *	  Query exports to files and S3 with COPY's own output.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_EXPORT_H
#define EGRESS_EXPORT_H

#include "net/s3.h"

typedef struct EgressExportResult
{
	uint64		rows;
	uint64		files;
	uint64		bytes;
} EgressExportResult;

/*
 * Runs query (one SELECT, VALUES or TABLE statement) in this backend with
 * the current user's privileges and writes what COPY (query) TO STDOUT WITH
 * (options) would send to uri: file:///path or s3://bucket/key.  s3 gives
 * region, credentials and KMS key for s3:// URIs (NULL: the defaults);
 * its bucket and key are ignored.
 */
extern void egress_export_run(const char *query, const char *uri,
							  const char *options, const EgressS3Target *s3,
							  EgressExportResult *result);

/* the entry point of a parallel export's part workers (parallel.c) */
extern PGDLLEXPORT void egress_export_part_main(Datum main_arg);

#endif							/* EGRESS_EXPORT_H */
