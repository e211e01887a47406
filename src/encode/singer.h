/*-------------------------------------------------------------------------
 * singer.h
 *	  Singer messages (SCHEMA, RECORD, ACTIVATE_VERSION, STATE) as NDJSON.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_SINGER_H
#define EGRESS_SINGER_H

#include "access/tupdesc.h"
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
	char	   *schema_json;	/* the "schema" object, built once */
} EgressSingerStream;

extern EgressSingerStream *egress_singer_stream_for_relation(Oid relid);

extern void egress_singer_schema(StringInfo buf, EgressSingerStream *st,
								 const char *bookmark_property);
extern void egress_singer_record(StringInfo buf, EgressSingerStream *st,
								 Datum *values, bool *isnull,
								 int64 version, const char *time_extracted);
extern void egress_singer_activate_version(StringInfo buf, EgressSingerStream *st,
										   int64 version);
extern void egress_singer_state_full_table(StringInfo buf, EgressSingerStream *st,
										   bool currently_syncing, int64 version);
extern void egress_singer_bookmark_full_table(StringInfo buf, int64 version);

#endif							/* EGRESS_SINGER_H */
