/*-------------------------------------------------------------------------
 * singer_types.h
 *	  The one map from PostgreSQL types to Singer JSON schema and values.
 *
 * Every path that renders rows (FULL_TABLE snapshots, CDC, previews) goes
 * through this module, so the same row always gives the same RECORD.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_SINGER_TYPES_H
#define EGRESS_SINGER_TYPES_H

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "lib/stringinfo.h"

/* How a value is rendered; decided once per column by egress_column_init. */
typedef enum EgressValueKind
{
	EGRESS_KIND_INTEGER,		/* int2/int4/int8: output text is the number */
	EGRESS_KIND_NUMERIC,		/* numeric: exact text, NaN/Inf -> null */
	EGRESS_KIND_FLOAT,			/* float4/float8: shortest text, NaN/Inf -> null */
	EGRESS_KIND_BOOL,			/* boolean */
	EGRESS_KIND_BIT1,			/* bit(1): true/false */
	EGRESS_KIND_DATE,
	EGRESS_KIND_TIMESTAMP,
	EGRESS_KIND_TIMESTAMPTZ,
	EGRESS_KIND_TIME,
	EGRESS_KIND_TIMETZ,
	EGRESS_KIND_JSON,			/* json: embedded */
	EGRESS_KIND_JSONB,			/* jsonb: embedded */
	EGRESS_KIND_HSTORE,			/* hstore: JSON object */
	EGRESS_KIND_INTERVAL,		/* ISO 8601 duration string */
	EGRESS_KIND_BYTEA,			/* bytea: "\\x..." hex string */
	EGRESS_KIND_ARRAY,			/* nested JSON arrays of the element kind */
	EGRESS_KIND_STRING			/* everything else: the type's text output */
} EgressValueKind;

typedef struct EgressColumn
{
	char	   *name;			/* column name */
	Oid			typid;			/* declared type, may be a domain */
	int32		typmod;
	bool		notnull;

	/* derived by egress_column_init; private to singer_types.c */
	EgressValueKind kind;
	Oid			basetypid;		/* typid with domains stripped */
	int32		basetypmod;
	FmgrInfo	outfunc;		/* output function of basetypid; for hstore,
								 * its hstore_to_json function */
	struct EgressColumn *elem;	/* array element, for EGRESS_KIND_ARRAY */
	int16		elmlen;
	bool		elmbyval;
	char		elmalign;

	/*
	 * Input function of basetypid, for egress_column_value_text; set up for
	 * the kinds that are rendered from a Datum (not for integers, numeric,
	 * floats and strings, whose text is the rendering).
	 */
	bool		has_infunc;
	FmgrInfo	infunc;
	Oid			typioparam;
	bool		typbyval;
} EgressColumn;

/*
 * Fill *col for a column; allocates in CurrentMemoryContext, which must live
 * as long as the column is used (the caller's per-stream context).
 */
extern void egress_column_init(EgressColumn *col, const char *name,
							   Oid typid, int32 typmod, bool notnull);

/* Append the column's JSON schema object, e.g. {"type":["null","integer"],...}. */
extern void egress_column_schema(StringInfo buf, const EgressColumn *col);

/* Append the JSON rendering of one value (null when isnull). */
extern void egress_column_value(StringInfo buf, EgressColumn *col,
								Datum value, bool isnull);

/*
 * Append the JSON rendering of one value given as the text the type's output
 * function printed, byte-identical to egress_column_value on the Datum.  The
 * text must come from a session with DateStyle ISO, IntervalStyle postgres,
 * TimeZone UTC, extra_float_digits 1 (or more) and bytea_output hex, as in
 * the CDC worker; this function's result does not depend on the settings
 * of the session it runs in.
 */
extern void egress_column_value_text(StringInfo buf, EgressColumn *col,
									 const char *text, bool isnull);

/*
 * egress_column_value_text for a text known to need no JSON escaping (no
 * quote, backslash or control character, as a JSON string without escape
 * sequences): strings are then copied without a scan.
 */
extern void egress_column_value_plain_text(StringInfo buf, EgressColumn *col,
										   const char *text);

/*
 * A type whose input function reads the text of a value of typid the same
 * way and reaches no user code: typid itself (base types, whose input
 * functions are C written by a superuser; enums; composites, ranges and
 * arrays of such), its base type for a domain (a domain's CHECK is the
 * domain owner's code), the array of the mapped element for an array whose
 * element maps to another type.  InvalidOid when a value of typid cannot be
 * parsed without user code: a composite with a field of a domain, a range
 * of a domain, an array of those.  *typmod (if not NULL) is updated to the
 * result's typmod (a domain's base typmod, -1 for a mapped array).
 */
extern Oid	egress_check_free_input_type(Oid typid, int32 *typmod);

/* Append a quoted RFC 3339 UTC timestamp "YYYY-MM-DDTHH:MI:SS.ffffffZ" (time_extracted). */
extern void egress_append_time_extracted(StringInfo buf, TimestampTz ts);

#endif							/* EGRESS_SINGER_TYPES_H */
