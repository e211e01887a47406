/*-------------------------------------------------------------------------
 * singer.h
 *	  Singer messages (SCHEMA, RECORD, ACTIVATE_VERSION, STATE) as NDJSON.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_SINGER_H
#define EGRESS_SINGER_H

#include "access/tupdesc.h"
#include "access/xlogdefs.h"
#include "encode/singer_types.h"
#include "nodes/pg_list.h"

/* A relation as a Singer stream: its id and the column renderers. */
typedef struct EgressSingerStream
{
	char	   *stream_id;		/* "<schema>-<table>" */
	int			ncolumns;
	EgressColumn *columns;		/* non-dropped columns, in attnum order */
	AttrNumber *attnums;		/* their attribute numbers in the tuple */
	List	   *key_properties; /* column names (char *) of the primary key */
	bool		log_based;		/* declares _sdc_deleted_at, bookmark "lsn" */
	bool		debug_lsn;		/* declares _sdc_lsn */
	char	   *replication_key;	/* INCREMENTAL: the bookmark property */
	char	   *schema_json;	/* the "schema" object, built once */
} EgressSingerStream;

extern EgressSingerStream *egress_singer_stream_for_relation(Oid relid, bool log_based,
															 bool debug_lsn);
extern EgressSingerStream *egress_singer_stream_for_relation_nolock(Oid relid, bool log_based,
																	bool debug_lsn);

/*
 * A stream's descriptor: its relation restricted to the stream's columns
 * (def->columns; NIL: all; names that no longer exist are left out), for
 * LOG_BASED streams with _sdc_deleted_at (and _sdc_lsn with debug_lsn).
 * With lock, the relation is opened with AccessShareLock; without, as of
 * the relcache (logical decoding).  In CurrentMemoryContext.
 */
struct EgressStreamDef;
extern EgressSingerStream *egress_singer_stream_for_def(struct EgressStreamDef *def,
														bool lock, bool debug_lsn);

extern void egress_singer_schema(StringInfo buf, EgressSingerStream *st);

/* A RECORD from a deformed tuple; extra is appended inside "record" (or NULL). */
extern void egress_singer_record(StringInfo buf, EgressSingerStream *st,
								 Datum *values, bool *isnull,
								 int64 version, const char *time_extracted,
								 const char *extra);
/* A RECORD built piecewise: open, then "key":value pairs, then close. */
extern void egress_singer_record_open(StringInfo buf, EgressSingerStream *st);
extern void egress_singer_record_close(StringInfo buf, int64 version,
									   const char *time_extracted);

extern void egress_singer_activate_version(StringInfo buf, EgressSingerStream *st,
										   int64 version);

/*
 * The same with a top-level "position" (a change's place in the WAL, see
 * cdc_render.c) after the other keys; NULL: none, as above.
 */
#define EGRESS_POSITION_LEN 27	/* 16 hex digits, '-', 10 digits */
extern void egress_singer_record_close_at(StringInfo buf, int64 version,
										  const char *time_extracted,
										  const char *position);
extern void egress_singer_activate_version_at(StringInfo buf, EgressSingerStream *st,
											  int64 version, const char *position);

/* STATE: open, one bookmark per stream, close. */
extern void egress_singer_state_open(StringInfo buf, const char *currently_syncing);
extern void egress_singer_state_add(StringInfo buf, const char *stream_id,
									const char *bookmark_json, bool first);
extern void egress_singer_state_close(StringInfo buf);

extern void egress_singer_bookmark_full_table(StringInfo buf, int64 version);
extern void egress_singer_bookmark_log_based(StringInfo buf, XLogRecPtr lsn,
											 int64 version);
/*
 * ... and for an INCREMENTAL one: key_value_json is the key's rendering
 * (as in RECORDs); position_json, when not NULL, our exact resume position.
 */
extern void egress_singer_bookmark_incremental(StringInfo buf, const char *key,
											   const char *key_value_json,
											   int64 version,
											   const char *position_json);

#endif							/* EGRESS_SINGER_H */
