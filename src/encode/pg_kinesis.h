/*-------------------------------------------------------------------------
 * pg_kinesis.h
 *	  One change rendered in the JSON shape pg_kinesis documents, for Kinesis
 *	  destinations with "format": "pg_kinesis".
 *
 *	  {"lsn":"1C/BB48DBF0","time":"2020-01-02T02:06:47Z",
 *	   "table":"public.customers","operation":"INSERT",
 *	   "columns":{"id":{"new":{"q":"false","t":"integer","v":"1"}}, ...}}
 *
 * pg_kinesis parses test_decoding's text, so its output carries that
 * plugin's conventions, reproduced here: the table and column names as
 * quote_qualified_identifier/quote_identifier print them, "t" the type's
 * format_type name (no typmod), "q" "false" for the values test_decoding
 * leaves unquoted (integers, oid, floats, numeric, boolean, null,
 * unchanged TOASTed values) and "true" for the others, whose "v" keeps
 * test_decoding's doubled single quotes as pg_kinesis does.  Keys of
 * "columns" (and of each column's object) come in byte order, as Go's
 * encoding/json writes map keys; strings are escaped as Go escapes them
 * (<, >, & and U+2028/U+2029 as \u escapes).  See docs/kinesis.md.
 *
 * Pure formatting: no catalog access (the caller gives the column types,
 * see egress_pg_kinesis_columns), so the CDC worker may call it anywhere.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_PG_KINESIS_H
#define EGRESS_PG_KINESIS_H

#include "access/tupdesc.h"
#include "lib/stringinfo.h"

#include "decode/change.h"
#include "encode/singer_types.h"

/* one column of the relation, as the renderer needs it */
typedef struct EgressPgKinesisColumn
{
	const char *name;			/* attname, unquoted */
	Oid			typid;			/* the column's declared type */
	Oid			basetypid;		/* domains stripped (for the value's text) */
	const char *typname;		/* format_type_be(typid) */
} EgressPgKinesisColumn;

/*
 * The columns of a tuple descriptor (dropped ones left out), with their
 * type names.  Looks types up: call in a transaction, e.g. once per
 * relation when its descriptor is (re)built.
 */
extern EgressPgKinesisColumn *egress_pg_kinesis_columns(TupleDesc desc,
														int *ncolumns);

/*
 * The same for columns already described for Singer (a stream's columns,
 * restricted to its column list): no relation to open.  Looks type names
 * up: call in a transaction (a historic snapshot will do).
 */
extern EgressPgKinesisColumn *egress_pg_kinesis_columns_of(const EgressColumn *cols,
														   int n);

/*
 * Appends the JSON of one INSERT, UPDATE or DELETE (no newline) to buf and
 * returns true; other actions (TRUNCATE, which pg_kinesis does not pass
 * on, BEGIN, ...) append nothing and return false.  lsn: the change's WAL
 * position (pg_kinesis gives the message's); commit_time: the
 * transaction's commit time (pg_kinesis can only approximate it).
 */
extern bool egress_pg_kinesis_render(StringInfo buf, const EgressChange *change,
									 const char *schema, const char *table,
									 const EgressPgKinesisColumn *columns,
									 int ncolumns, XLogRecPtr lsn,
									 TimestampTz commit_time);

#endif							/* EGRESS_PG_KINESIS_H */
