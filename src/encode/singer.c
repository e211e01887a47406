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

#include "catalog/catalog.h"
#include "encode/singer.h"

/*
 * Primary-key column names in key order; without a primary key, those of
 * the replica identity index (REPLICA IDENTITY USING INDEX: a unique index
 * of NOT NULL columns, which is what deletes and key changes carry); NIL
 * with neither.  A table with a primary key and an identity index that
 * does not cover it is refused for LOG_BASED (check_changes_keyed).
 */
static List *
primary_key_columns(Relation rel)
{
	Oid			pkoid = RelationGetPrimaryKeyIndex(rel);
	List	   *result = NIL;
	HeapTuple	tup;
	Form_pg_index idx;

	if (!OidIsValid(pkoid) && rel->rd_rel->relreplident == REPLICA_IDENTITY_INDEX)
		pkoid = RelationGetReplicaIndex(rel);
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

/* Describe an open relation as a Singer stream, in CurrentMemoryContext. */
static EgressSingerStream *
stream_for_rel(Relation rel, bool log_based, bool debug_lsn, List *only)
{
	EgressSingerStream *st = palloc0(sizeof(EgressSingerStream));
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
		if (only != NIL)
		{
			ListCell   *lc;
			bool		listed = false;

			foreach(lc, only)
				if (strcmp((char *) lfirst(lc), NameStr(att->attname)) == 0)
					listed = true;
			if (!listed)
				continue;
		}
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
	st->log_based = log_based;
	st->debug_lsn = debug_lsn;

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
	if (log_based)
		appendStringInfoString(&buf, ",\"_sdc_deleted_at\":{\"type\":[\"null\",\"string\"],\"format\":\"date-time\"}");
	if (log_based && debug_lsn)
		appendStringInfoString(&buf, ",\"_sdc_lsn\":{\"type\":[\"null\",\"string\"]}");
	appendStringInfoString(&buf, "}}");
	st->schema_json = buf.data;
	return st;
}

/* Describe a relation as a Singer stream, in CurrentMemoryContext. */
EgressSingerStream *
egress_singer_stream_for_relation(Oid relid, bool log_based, bool debug_lsn)
{
	Relation	rel = relation_open(relid, AccessShareLock);
	EgressSingerStream *st = stream_for_rel(rel, log_based, debug_lsn, NIL);

	relation_close(rel, NoLock);
	return st;
}

/*
 * The same, taking no lock: for logical decoding, where the relation is
 * seen as of the change being decoded and a lock could wait on DDL.
 */
EgressSingerStream *
egress_singer_stream_for_relation_nolock(Oid relid, bool log_based, bool debug_lsn)
{
	Relation	rel = RelationIdGetRelation(relid);
	EgressSingerStream *st;

	if (!RelationIsValid(rel))
		elog(ERROR, "could not open relation with OID %u", relid);
	st = stream_for_rel(rel, log_based, debug_lsn, NIL);
	RelationClose(rel);
	return st;
}

EgressSingerStream *
egress_singer_stream_for_def(EgressStreamDef *def, bool lock, bool debug_lsn)
{
	Relation	rel;
	EgressSingerStream *st;
	bool		log_based = strcmp(def->method, "LOG_BASED") == 0;

	if (lock)
		rel = relation_open(def->relid, AccessShareLock);
	else
	{
		rel = RelationIdGetRelation(def->relid);
		if (!RelationIsValid(rel))
			elog(ERROR, "could not open relation with OID %u", def->relid);
	}
	st = stream_for_rel(rel, log_based, debug_lsn, def->columns);
	if (lock)
		relation_close(rel, NoLock);
	else
		RelationClose(rel);
	return st;
}

void
egress_singer_schema(StringInfo buf, EgressSingerStream *st)
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
	if (st->replication_key)
	{
		appendStringInfoString(buf, "],\"bookmark_properties\":[");
		escape_json(buf, st->replication_key);
		appendStringInfoString(buf, "]}\n");
	}
	else
		appendStringInfoString(buf, st->log_based ?
							   "],\"bookmark_properties\":[\"lsn\"]}\n" :
							   "],\"bookmark_properties\":[]}\n");
}

void
egress_singer_record_open(StringInfo buf, EgressSingerStream *st)
{
	appendStringInfoString(buf, "{\"type\":\"RECORD\",\"stream\":");
	escape_json(buf, st->stream_id);
	appendStringInfoString(buf, ",\"record\":{");
}

/* time_extracted is already a quoted JSON string */
void
egress_singer_record_close(StringInfo buf, int64 version, const char *time_extracted)
{
	egress_singer_record_close_at(buf, version, time_extracted, NULL);
}

/* ... with a top-level "position" when position is not NULL (plain ASCII) */
void
egress_singer_record_close_at(StringInfo buf, int64 version, const char *time_extracted,
							  const char *position)
{
	char		num[MAXINT8LEN + 1];

	/* once per record: without the printf machinery */
	appendStringInfoString(buf, "},\"version\":");
	appendBinaryStringInfo(buf, num, pg_lltoa(version, num));
	appendStringInfoString(buf, ",\"time_extracted\":");
	appendStringInfoString(buf, time_extracted);
	if (position != NULL)
	{
		appendStringInfoString(buf, ",\"position\":\"");
		appendStringInfoString(buf, position);
		appendStringInfoChar(buf, '"');
	}
	appendBinaryStringInfo(buf, "}\n", 2);
}

/* values/isnull are indexed by attnum - 1, as in a deformed tuple. */
void
egress_singer_record(StringInfo buf, EgressSingerStream *st,
					 Datum *values, bool *isnull,
					 int64 version, const char *time_extracted,
					 const char *extra)
{
	egress_singer_record_open(buf, st);
	for (int i = 0; i < st->ncolumns; i++)
	{
		int			a = st->attnums[i] - 1;

		if (i > 0)
			appendStringInfoChar(buf, ',');
		escape_json(buf, st->columns[i].name);
		appendStringInfoChar(buf, ':');
		egress_column_value(buf, &st->columns[i], values[a], isnull[a]);
	}
	if (extra)
		appendStringInfoString(buf, extra);
	egress_singer_record_close(buf, version, time_extracted);
}

void
egress_singer_activate_version(StringInfo buf, EgressSingerStream *st, int64 version)
{
	egress_singer_activate_version_at(buf, st, version, NULL);
}

void
egress_singer_activate_version_at(StringInfo buf, EgressSingerStream *st, int64 version,
								  const char *position)
{
	appendStringInfoString(buf, "{\"type\":\"ACTIVATE_VERSION\",\"stream\":");
	escape_json(buf, st->stream_id);
	if (position == NULL)
		appendStringInfo(buf, ",\"version\":" INT64_FORMAT "}\n", version);
	else
		appendStringInfo(buf, ",\"version\":" INT64_FORMAT ",\"position\":\"%s\"}\n",
						 version, position);
}

/* The bookmark pipelinewise-tap-postgres keeps for a FULL_TABLE stream. */
void
egress_singer_bookmark_full_table(StringInfo buf, int64 version)
{
	appendStringInfo(buf,
					 "{\"last_replication_method\":\"FULL_TABLE\",\"version\":" INT64_FORMAT ",\"xmin\":null}",
					 version);
}

/* ... and for a LOG_BASED one: the LSN as an integer, as the tap has it. */
void
egress_singer_bookmark_log_based(StringInfo buf, XLogRecPtr lsn, int64 version)
{
	appendStringInfo(buf,
					 "{\"last_replication_method\":\"LOG_BASED\",\"lsn\":" UINT64_FORMAT ",\"version\":" INT64_FORMAT ",\"xmin\":null}",
					 (uint64) lsn, version);
}

void
egress_singer_state_open(StringInfo buf, const char *currently_syncing)
{
	appendStringInfoString(buf, "{\"type\":\"STATE\",\"value\":{\"currently_syncing\":");
	if (currently_syncing)
		escape_json(buf, currently_syncing);
	else
		appendStringInfoString(buf, "null");
	appendStringInfoString(buf, ",\"bookmarks\":{");
}

void
egress_singer_state_add(StringInfo buf, const char *stream_id,
						const char *bookmark_json, bool first)
{
	if (!first)
		appendStringInfoChar(buf, ',');
	escape_json(buf, stream_id);
	appendStringInfoChar(buf, ':');
	appendStringInfoString(buf, bookmark_json);
}

void
egress_singer_state_close(StringInfo buf)
{
	appendStringInfoString(buf, "}}}\n");
}

/*
 * ... and for an INCREMENTAL one, with the tap's keys; pg_egress_position
 * (ours, ignored by the tap) holds the exact (key, primary key) position.
 */
void
egress_singer_bookmark_incremental(StringInfo buf, const char *key,
								   const char *key_value_json, int64 version,
								   const char *position_json)
{
	appendStringInfoString(buf, "{\"last_replication_method\":\"INCREMENTAL\",\"replication_key\":");
	escape_json(buf, key);
	appendStringInfo(buf, ",\"replication_key_value\":%s,\"version\":" INT64_FORMAT,
					 key_value_json ? key_value_json : "null", version);
	if (position_json)
		appendStringInfo(buf, ",\"pg_egress_position\":%s", position_json);
	appendStringInfoChar(buf, '}');
}
