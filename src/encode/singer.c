/*-------------------------------------------------------------------------
 * singer.c
 *	  Builds Singer messages, one JSON object per line.
 *
 * Values come from singer_types.c, the one type map; this file only frames
 * them.  Everything that does not change per row (stream id, schema) is
 * rendered once per stream.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/table.h"
#include "catalog/index.h"
#include "catalog/pg_index.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/syscache.h"

#include "encode/singer.h"

/* Primary-key column names in key order; NIL without a primary key. */
static List *
primary_key_columns(Relation rel)
{
	Oid			pkoid = RelationGetPrimaryKeyIndex(rel);
	List	   *result = NIL;
	HeapTuple	tup;
	Form_pg_index idx;

	if (!OidIsValid(pkoid))
		return NIL;
	tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(pkoid));
	if (!HeapTupleIsValid(tup))
		return NIL;
	idx = (Form_pg_index) GETSTRUCT(tup);
	for (int i = 0; i < idx->indnkeyatts; i++)
	{
		AttrNumber	att = idx->indkey.values[i];

		result = lappend(result, get_attname(RelationGetRelid(rel), att, false));
	}
	ReleaseSysCache(tup);
	return result;
}

/*
 * Describe a relation as a Singer stream, in CurrentMemoryContext.  The
 * caller holds a lock on the relation or accepts that it may change.
 */
EgressSingerStream *
egress_singer_stream_for_relation(Oid relid)
{
	EgressSingerStream *st = palloc0(sizeof(EgressSingerStream));
	Relation	rel = relation_open(relid, AccessShareLock);
	TupleDesc	desc = RelationGetDescr(rel);
	StringInfoData buf;
	int			n = 0;

	st->stream_id = psprintf("%s-%s",
							 get_namespace_name(RelationGetNamespace(rel)),
							 RelationGetRelationName(rel));
	st->columns = palloc0(sizeof(EgressColumn) * Max(desc->natts, 1));
	st->attnums = palloc0(sizeof(AttrNumber) * Max(desc->natts, 1));
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped)
			continue;
		egress_column_init(&st->columns[n], NameStr(att->attname),
						   att->atttypid, att->atttypmod, att->attnotnull);
		st->attnums[n] = att->attnum;
		n++;
	}
	st->ncolumns = n;
	if (rel->rd_rel->relkind == RELKIND_RELATION ||
		rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE ||
		rel->rd_rel->relkind == RELKIND_MATVIEW)
		st->key_properties = primary_key_columns(rel);
	relation_close(rel, NoLock);

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"type\":\"object\",\"properties\":{");
	for (int i = 0; i < st->ncolumns; i++)
	{
		if (i > 0)
			appendStringInfoChar(&buf, ',');
		escape_json(&buf, st->columns[i].name);
		appendStringInfoChar(&buf, ':');
		egress_column_schema(&buf, &st->columns[i]);
	}
	appendStringInfoString(&buf, "}}");
	st->schema_json = buf.data;
	return st;
}

void
egress_singer_schema(StringInfo buf, EgressSingerStream *st,
					 const char *bookmark_property)
{
	ListCell   *lc;
	bool		first = true;

	appendStringInfoString(buf, "{\"type\":\"SCHEMA\",\"stream\":");
	escape_json(buf, st->stream_id);
	appendStringInfoString(buf, ",\"schema\":");
	appendStringInfoString(buf, st->schema_json);
	appendStringInfoString(buf, ",\"key_properties\":[");
	foreach(lc, st->key_properties)
	{
		if (!first)
			appendStringInfoChar(buf, ',');
		escape_json(buf, (char *) lfirst(lc));
		first = false;
	}
	appendStringInfoString(buf, "],\"bookmark_properties\":[");
	if (bookmark_property)
		escape_json(buf, bookmark_property);
	appendStringInfoString(buf, "]}\n");
}

/* values/isnull are indexed by attnum - 1, as in a deformed tuple. */
void
egress_singer_record(StringInfo buf, EgressSingerStream *st,
					 Datum *values, bool *isnull,
					 int64 version, const char *time_extracted)
{
	appendStringInfoString(buf, "{\"type\":\"RECORD\",\"stream\":");
	escape_json(buf, st->stream_id);
	appendStringInfoString(buf, ",\"record\":{");
	for (int i = 0; i < st->ncolumns; i++)
	{
		int			a = st->attnums[i] - 1;

		if (i > 0)
			appendStringInfoChar(buf, ',');
		escape_json(buf, st->columns[i].name);
		appendStringInfoChar(buf, ':');
		egress_column_value(buf, &st->columns[i], values[a], isnull[a]);
	}
	/* time_extracted is already a quoted JSON string */
	appendStringInfo(buf, "},\"version\":" INT64_FORMAT ",\"time_extracted\":%s}\n",
					 version, time_extracted);
}

void
egress_singer_activate_version(StringInfo buf, EgressSingerStream *st, int64 version)
{
	appendStringInfoString(buf, "{\"type\":\"ACTIVATE_VERSION\",\"stream\":");
	escape_json(buf, st->stream_id);
	appendStringInfo(buf, ",\"version\":" INT64_FORMAT "}\n", version);
}

/* The bookmark pipelinewise-tap-postgres keeps for a FULL_TABLE stream. */
void
egress_singer_bookmark_full_table(StringInfo buf, int64 version)
{
	appendStringInfo(buf,
					 "{\"last_replication_method\":\"FULL_TABLE\",\"version\":" INT64_FORMAT ",\"xmin\":null}",
					 version);
}

void
egress_singer_state_full_table(StringInfo buf, EgressSingerStream *st,
							   bool currently_syncing, int64 version)
{
	appendStringInfoString(buf, "{\"type\":\"STATE\",\"value\":{\"currently_syncing\":");
	if (currently_syncing)
		escape_json(buf, st->stream_id);
	else
		appendStringInfoString(buf, "null");
	appendStringInfoString(buf, ",\"bookmarks\":{");
	escape_json(buf, st->stream_id);
	appendStringInfoChar(buf, ':');
	egress_singer_bookmark_full_table(buf, version);
	appendStringInfoString(buf, "}}}\n");
}
