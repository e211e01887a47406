/*-------------------------------------------------------------------------
 * discover.c
 *	  egress_discover(): the Singer catalog of the database, shaped like
 *	  the output of "tap-postgres --discover" (pipelinewise-tap-postgres),
 *	  with each column's JSON schema from the one type map RECORDs use.
 *
 * Lists the tables, partitioned tables (not their partitions), views,
 * materialized views and foreign tables the caller may read (SELECT on the
 * relation or on some of its columns, USAGE on its schema), with only the
 * columns the caller may read.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "catalog/catalog.h"
#include "encode/singer_types.h"

PG_FUNCTION_INFO_V1(egress_discover);

static void
append_bool(StringInfo buf, const char *key, bool value)
{
	escape_json(buf, key);
	appendStringInfoString(buf, value ? ":true" : ":false");
}

/* One stream entry of the catalog; false when the relation is gone. */
static bool
discover_relation(StringInfo buf, Oid relid, const char *nspname,
				  const char *relname, char relkind, int64 rowcount,
				  const char *dbname)
{
	Relation	rel = try_relation_open(relid, AccessShareLock);
	TupleDesc	desc;
	bool		whole;
	List	   *pk = NIL;
	List	   *visible_pk = NIL;
	List	   *visible = NIL;	/* primary-key columns the caller may read */
	ListCell   *lc;
	StringInfoData props;
	StringInfoData colmeta;
	bool		first = true;
	char	   *stream_id = psprintf("%s-%s", nspname, relname);

	if (rel == NULL)
		return false;			/* dropped meanwhile */
	whole = pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) == ACLCHECK_OK;
	desc = RelationGetDescr(rel);
	if (relkind == RELKIND_RELATION || relkind == RELKIND_PARTITIONED_TABLE)
		pk = egress_primary_key_columns(relid);

	initStringInfo(&props);
	initStringInfo(&colmeta);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		EgressColumn col;
		bool		is_pk = false;

		if (att->attisdropped)
			continue;
		if (!whole &&
			pg_attribute_aclcheck(relid, att->attnum, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
			continue;
		foreach(lc, pk)
			if (strcmp((char *) lfirst(lc), NameStr(att->attname)) == 0)
				is_pk = true;
		if (is_pk)
			visible = lappend(visible, pstrdup(NameStr(att->attname)));

		egress_column_init(&col, NameStr(att->attname), att->atttypid,
						   att->atttypmod, att->attnotnull);
		if (!first)
			appendStringInfoChar(&props, ',');
		escape_json(&props, NameStr(att->attname));
		appendStringInfoChar(&props, ':');
		egress_column_schema(&props, &col);

		appendStringInfoString(&colmeta, ",{\"breadcrumb\":[\"properties\",");
		escape_json(&colmeta, NameStr(att->attname));
		appendStringInfoString(&colmeta, "],\"metadata\":{\"sql-datatype\":");
		/* with its modifier, as format_type() prints it: character varying(20) */
		escape_json(&colmeta, format_type_with_typemod(att->atttypid, att->atttypmod));
		appendStringInfo(&colmeta, ",\"inclusion\":\"%s\",",
						 is_pk ? "automatic" : "available");
		append_bool(&colmeta, "selected-by-default", true);
		appendStringInfoString(&colmeta, "}}");
		first = false;
	}
	relation_close(rel, AccessShareLock);

	/* in key order */
	foreach(lc, pk)
	{
		ListCell   *lc2;

		foreach(lc2, visible)
			if (strcmp((char *) lfirst(lc), (char *) lfirst(lc2)) == 0)
				visible_pk = lappend(visible_pk, lfirst(lc));
	}

	appendStringInfoString(buf, "{\"tap_stream_id\":");
	escape_json(buf, stream_id);
	appendStringInfoString(buf, ",\"table_name\":");
	escape_json(buf, relname);
	appendStringInfoString(buf, ",\"stream\":");
	escape_json(buf, relname);
	appendStringInfoString(buf, ",\"schema\":{\"type\":\"object\",\"properties\":{");
	appendStringInfoString(buf, props.data);
	appendStringInfoString(buf, "}},\"metadata\":[{\"breadcrumb\":[],\"metadata\":{\"table-key-properties\":[");
	first = true;
	foreach(lc, visible_pk)
	{
		if (!first)
			appendStringInfoChar(buf, ',');
		escape_json(buf, (char *) lfirst(lc));
		first = false;
	}
	appendStringInfoString(buf, "],");
	append_bool(buf, "is-view", relkind == RELKIND_VIEW || relkind == RELKIND_MATVIEW);
	appendStringInfo(buf, ",\"row-count\":" INT64_FORMAT ",\"database-name\":", rowcount);
	escape_json(buf, dbname);
	appendStringInfoString(buf, ",\"schema-name\":");
	escape_json(buf, nspname);
	appendStringInfoChar(buf, ',');
	append_bool(buf, "selected-by-default", false);
	appendStringInfoString(buf, "}}");
	appendStringInfoString(buf, colmeta.data);
	appendStringInfoString(buf, "]}");
	return true;
}

Datum
egress_discover(PG_FUNCTION_ARGS)
{
	Datum		schemas = PG_ARGISNULL(0) ? (Datum) 0 : PG_GETARG_DATUM(0);
	Oid			argtypes[1] = {TEXTARRAYOID};
	Datum		values[1] = {schemas};
	char		nulls[1] = {PG_ARGISNULL(0) ? 'n' : ' '};
	StringInfoData buf;
	char	   *dbname = get_database_name(MyDatabaseId);
	int			nestlevel;
	uint64		n;
	MemoryContext callercxt = CurrentMemoryContext;
	Oid		   *relids;
	char	  **nsps;
	char	  **rels;
	char	   *kinds;
	int64	   *counts;

	/*
	 * The catalog query runs as the caller, with no schema of theirs in the
	 * way (pg_temp last: otherwise it is searched first for types and
	 * relations) and every name qualified all the same.
	 */
	nestlevel = NewGUCNestLevel();
	egress_pin_search_path();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("SELECT c.oid, n.nspname, c.relname, c.relkind, "
							  "GREATEST(c.reltuples, 0::pg_catalog.float4)::pg_catalog.int8 "
							  "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
							  "ON n.oid OPERATOR(pg_catalog.=) c.relnamespace "
							  "WHERE c.relkind OPERATOR(pg_catalog.=) "
							  "ANY ('{r,p,v,m,f}'::pg_catalog.\"char\"[]) "
							  "AND NOT c.relispartition "
							  "AND n.nspname OPERATOR(pg_catalog.<>) "
							  "ALL ('{pg_catalog,information_schema,egress}'::pg_catalog.name[]) "
							  "AND n.nspname OPERATOR(pg_catalog.!~) "
							  "'^pg_(toast|temp_|toast_temp_)'::pg_catalog.text "
							  "AND ($1 IS NULL OR n.nspname OPERATOR(pg_catalog.=) ANY ($1)) "
							  "AND pg_catalog.has_schema_privilege(n.oid, 'USAGE'::pg_catalog.text) "
							  "AND (pg_catalog.has_table_privilege(c.oid, 'SELECT'::pg_catalog.text) "
							  "OR pg_catalog.has_any_column_privilege(c.oid, 'SELECT'::pg_catalog.text)) "
							  "ORDER BY n.nspname, c.relname",
							  1, argtypes, values, nulls, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "egress_discover: catalog query failed");
	n = SPI_processed;
	relids = MemoryContextAlloc(callercxt, sizeof(Oid) * Max(n, 1));
	nsps = MemoryContextAlloc(callercxt, sizeof(char *) * Max(n, 1));
	rels = MemoryContextAlloc(callercxt, sizeof(char *) * Max(n, 1));
	kinds = MemoryContextAlloc(callercxt, Max(n, 1));
	counts = MemoryContextAlloc(callercxt, sizeof(int64) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		relids[i] = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
		nsps[i] = MemoryContextStrdup(callercxt, SPI_getvalue(tup, desc, 2));
		rels[i] = MemoryContextStrdup(callercxt, SPI_getvalue(tup, desc, 3));
		kinds[i] = DatumGetChar(SPI_getbinval(tup, desc, 4, &isnull));
		counts[i] = DatumGetInt64(SPI_getbinval(tup, desc, 5, &isnull));
	}
	SPI_finish();
	AtEOXact_GUC(true, nestlevel);

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"streams\":[");
	for (uint64 i = 0; i < n; i++)
	{
		StringInfoData one;

		CHECK_FOR_INTERRUPTS();
		initStringInfo(&one);
		if (!discover_relation(&one, relids[i], nsps[i], rels[i], kinds[i], counts[i], dbname))
			continue;
		if (buf.data[buf.len - 1] != '[')
			appendStringInfoChar(&buf, ',');
		appendBinaryStringInfo(&buf, one.data, one.len);
		pfree(one.data);
	}
	appendStringInfoString(&buf, "]}");

	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}
