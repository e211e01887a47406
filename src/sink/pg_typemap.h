/*-------------------------------------------------------------------------
 * pg_typemap.h
 *	  postgres destinations: Singer JSON schema -> PostgreSQL column type,
 *	  and JSON value -> COPY text, in one place (pipelinewise-target-postgres's
 *	  map; docs/postgres_target.md).  Owned by pg_apply's author.
 *
 * Also a small JSON tree (EgressJNode) for the messages that are not on the
 * hot path (SCHEMA, STATE): unlike jsonb it keeps the order of an object's
 * keys, which is the order of the source table's columns.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_PG_TYPEMAP_H
#define EGRESS_PG_TYPEMAP_H

#include "common/jsonapi.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"

/* JSON schema "type" names, as bits */
#define EGRESS_JT_NULL		0x01
#define EGRESS_JT_STRING	0x02
#define EGRESS_JT_NUMBER	0x04
#define EGRESS_JT_INTEGER	0x08
#define EGRESS_JT_BOOLEAN	0x10
#define EGRESS_JT_OBJECT	0x20
#define EGRESS_JT_ARRAY		0x40

/* a JSON value: an object (keys/values in order), an array, or a scalar */
typedef struct EgressJNode
{
	JsonTokenType type;			/* OBJECT_START, ARRAY_START or a scalar's */
	char	   *str;			/* a scalar's text (strings de-escaped) */
	List	   *keys;			/* object: of char * */
	List	   *values;			/* object, array: of EgressJNode * */
	const char *raw;			/* the value's JSON text in the input */
	int			rawlen;
} EgressJNode;

/* One property of a stream's SCHEMA, mapped to a column. */
typedef struct EgressPgColumn
{
	char	   *name;			/* the property's name: the column's, exactly */
	const char *type;			/* column type (pipelinewise's column_type) */
	bool		jsonb;			/* type is jsonb: values go in as JSON text */
	int			jtypes;			/* EGRESS_JT_* of the schema's "type" */
	bool		date_time;		/* format date-time */
	int64		max_length;		/* maxLength, -1: none */
	char	   *minimum;		/* integer bounds as text, NULL: none */
	char	   *maximum;
} EgressPgColumn;

/*
 * Parses JSON text into a tree (current memory context).  NULL with *error
 * set when it is not JSON.
 */
extern EgressJNode *egress_jnode_parse(const char *json, int len, char **error);
extern EgressJNode *egress_jnode_get(const EgressJNode *obj, const char *key);

/* fills col from a SCHEMA property (prop may be NULL: a metadata column) */
extern void egress_pg_column_map(EgressPgColumn *col, const char *name,
								 const EgressJNode *prop);

/*
 * Whether an existing column of type existing (format_type without
 * typmod) takes values of a property mapped to wanted without renaming
 * it aside (as pipelinewise: equal, or timestamptz for timestamp; and
 * pipelinewise's varchar _sdc_deleted_at).
 */
extern bool egress_pg_type_compatible(const char *existing, const char *wanted,
									  const char *column);

/* appends s (len bytes) to buf escaped for COPY text format */
extern void egress_pg_copy_escape(StringInfo buf, const char *s, size_t len);

/*
 * validate_records: NULL when the value (tok/text as the JSON parser gave
 * it; tok JSON_TOKEN_NULL for null, OBJECT_START/ARRAY_START for nested)
 * fits col's schema, else the reason, which never shows the value.
 */
extern const char *egress_pg_check_value(const EgressPgColumn *col,
										 JsonTokenType tok, const char *text);

#endif							/* EGRESS_PG_TYPEMAP_H */
