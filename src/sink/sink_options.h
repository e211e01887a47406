/*-------------------------------------------------------------------------
 * sink_options.h
 *	  A destination's options, parsed once into a typed struct.
 *
 * egress_sink_options_parse() is both the validator (egress_add_destination
 * reaches it through the sink kind's validate operation) and the reader
 * (each sink fills its settings from the struct when it is opened), so a
 * value is accepted at add time exactly when the sink can use it.  Which
 * keys a destination takes depends on its kind: every kind takes the
 * common ones (slot, batches, flush, error retry, decoder); HTTP adds its
 * transport options, Kinesis its region, format and partition key.
 *
 * Durations have one grammar, that of SQL intervals (as the stream option
 * "interval" has): a JSON number of seconds, or a string such as "30s",
 * "500ms", "1 second", "5 minutes", "00:01:30" or a bare number of seconds.
 * The database worker reads error_retry_interval in SQL (::interval), the
 * same grammar.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_SINK_OPTIONS_H
#define EGRESS_SINK_OPTIONS_H

#include "nodes/pg_list.h"
#include "utils/jsonb.h"

/* one "headers" entry */
typedef struct EgressSinkHeader
{
	char	   *name;
	char	   *value;			/* a secret: never shown */
} EgressSinkHeader;

typedef struct EgressSinkOptions
{
	/* every kind */
	char	   *slot_name;		/* NULL: pg_egress_<destination> */
	bool		drop_adopted_slot;
	int64		batch_max_rows; /* 0: not set */
	int64		batch_max_bytes;	/* 0: not set */
	long		flush_interval_ms;	/* -1: not set */
	long		error_retry_interval_ms;	/* -1: not set */
	char	   *decoder;		/* NULL: not set (pgoutput) */

	/* HTTP */
	List	   *headers;		/* of EgressSinkHeader, in the given order */
	bool		gzip;
	int			gzip_level;
	long		timeout_ms;
	long		connect_timeout_ms;
	long		retry_initial_ms;
	long		retry_max_ms;
	char	   *ca_file;		/* NULL: the system's authorities */
	bool		verify;
	bool		stream;

	/* Kinesis */
	char	   *file_mode;		/* file: octal permissions; NULL: 0600 */
	char	   *region;			/* NULL: as for S3 */
	char	   *format;			/* "singer" (default) or "pg_kinesis" */
	char	   *partition_key;	/* "primary_key" (default), "table", a column */
	int64		max_inflight;	/* PutRecords calls at once; 0: not set */

	/*
	 * postgres (connect_timeout_ms above is shared with HTTP; the option
	 * batch_size_rows sets batch_max_rows)
	 */
	char	   *password;		/* a secret: never shown */
	char	   *sslmode;		/* NULL: libpq's default (prefer) */
	char	   *sslrootcert;
	char	   *sslcert;
	char	   *sslkey;
	long		statement_timeout_ms;	/* option "timeout": each statement's deadline */
	char	   *default_target_schema;	/* NULL: the source table's schema */
	List	   *schema_mapping;	/* of EgressSchemaMapping */
	bool		hard_delete;	/* default false */
	bool		add_metadata_columns;	/* default false */
	bool		primary_key_required;	/* default true */
	int			parallelism;	/* connections; default 1 */
	bool		validate_records;	/* default false */
	List	   *target_schema_privileges;	/* role names (char *) */
} EgressSinkOptions;

/* the most connections a postgres destination opens (option "parallelism") */
#define EGRESS_PG_MAX_PARALLELISM	16

/* one "schema_mapping" entry: tables of source schema go to target schema */
typedef struct EgressSchemaMapping
{
	char	   *source_schema;
	char	   *target_schema;
} EgressSchemaMapping;

/*
 * Parses options (a JSON object) for a destination of kind ("file",
 * "http", "s3"): ERROR on an unknown key or a value of the wrong kind,
 * naming the key but never showing a header value.  Unset keys get their
 * defaults.  Allocates in the current memory context.
 */
extern void egress_sink_options_parse(const char *kind, Jsonb *options,
									  EgressSinkOptions *out);

/* milliseconds, or -1 when s is not a duration (see above) */
extern long egress_parse_duration_ms(const char *s);

/* option key of options as a duration in milliseconds, -1 when unset or bad */
extern long egress_duration_option_ms(Jsonb *options, const char *key);

#endif							/* EGRESS_SINK_OPTIONS_H */
