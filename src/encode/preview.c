/*-------------------------------------------------------------------------
 * preview.c
 *	  SQL functions showing what pg_egress would send for a table and a row.
 *
 * egress_preview_schema(regclass) returns the Singer schema object of a
 * relation, egress_preview_record(anyelement) the Singer record object of
 * a row.  Both go through singer_types.c, the map every sync path uses, so
 * what they show is what a stream sends.
 *
 * egress_preview_record_via_text(anyelement) renders the row the way the
 * CDC path does, from each value's output text (as wal2json prints it in
 * the worker's pinned session) through egress_column_value_text; the
 * tests check that both give the same record.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/tupdesc.h"
#include "catalog/pg_class.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/typcache.h"

#include "encode/singer_types.h"

PG_FUNCTION_INFO_V1(egress_preview_schema);
PG_FUNCTION_INFO_V1(egress_preview_record);
PG_FUNCTION_INFO_V1(egress_preview_record_via_text);

/*
 * Per-call-site cache of egress_preview_record, in fn_extra: the row type
 * it was built for and that type's columns, so that a query previewing
 * many rows sets the columns up once.
 */
typedef struct PreviewRecordCache
{
	Oid			typid;
	int32		typmod;
	TupleDesc	tupdesc;		/* copy of the row type's descriptor */
	EgressColumn *columns;		/* one per attribute; unused if dropped */
	char	  **keys;			/* "name": per attribute, NULL if dropped */
	Datum	   *values;
	bool	   *nulls;
	FmgrInfo   *outfuncs;		/* output function of each attribute's
								 * declared type, for the text path; set up
								 * on first use */
	char	  **texts;
} PreviewRecordCache;

/*
 * egress_preview_schema
 *		The Singer schema object of a relation's columns.
 */
Datum
egress_preview_schema(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	Relation	rel;
	TupleDesc	tupdesc;
	StringInfoData buf;
	bool		first = true;
	bool		all_columns;
	char	   *relname;
	int			i;

	/*
	 * The caller must be able to read the relation (or some of its
	 * columns), and that is checked before the relation is locked: a role
	 * must not queue locks on a relation it cannot read.  Only the columns
	 * it may read are shown.
	 */
	relname = get_rel_name(relid);
	if (relname == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	all_columns = pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) == ACLCHECK_OK;
	if (!all_columns &&
		pg_attribute_aclcheck_all(relid, GetUserId(), ACL_SELECT, ACLMASK_ANY) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", relname)));

	rel = try_relation_open(relid, AccessShareLock);
	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));

	/* only relations whose rows a stream could send */
	switch (rel->rd_rel->relkind)
	{
		case RELKIND_RELATION:
		case RELKIND_PARTITIONED_TABLE:
		case RELKIND_VIEW:
		case RELKIND_MATVIEW:
		case RELKIND_FOREIGN_TABLE:
			break;
		default:
			ereport(ERROR,
					(errcode(ERRCODE_WRONG_OBJECT_TYPE),
					 errmsg("cannot preview the schema of relation \"%s\"",
							RelationGetRelationName(rel)),
					 errdetail_relkind_not_supported(rel->rd_rel->relkind)));
	}

	tupdesc = RelationGetDescr(rel);
	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"type\":\"object\",\"properties\":{");
	for (i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);
		EgressColumn col;

		if (att->attisdropped)
			continue;
		if (!all_columns &&
			pg_attribute_aclcheck(relid, att->attnum, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
			continue;
		egress_column_init(&col, NameStr(att->attname), att->atttypid,
						   att->atttypmod, att->attnotnull);
		if (!first)
			appendStringInfoChar(&buf, ',');
		first = false;
		escape_json(&buf, NameStr(att->attname));
		appendStringInfoChar(&buf, ':');
		egress_column_schema(&buf, &col);
	}
	appendStringInfoString(&buf, "}}");

	relation_close(rel, AccessShareLock);

	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf.data, buf.len));
}

/*
 * build_record_cache
 *		Set up the columns of row type typid/typmod in fn_mcxt.
 */
static PreviewRecordCache *
build_record_cache(FunctionCallInfo fcinfo, Oid typid, int32 typmod)
{
	MemoryContext oldcxt;
	PreviewRecordCache *cache;
	TupleDesc	tupdesc;
	int			natts;
	int			i;

	oldcxt = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);

	cache = (PreviewRecordCache *) palloc0(sizeof(PreviewRecordCache));
	cache->typid = typid;
	cache->typmod = typmod;

	tupdesc = lookup_rowtype_tupdesc(typid, typmod);
	cache->tupdesc = CreateTupleDescCopy(tupdesc);
	ReleaseTupleDesc(tupdesc);
	tupdesc = cache->tupdesc;

	natts = tupdesc->natts;
	cache->columns = (EgressColumn *) palloc0(Max(natts, 1) * sizeof(EgressColumn));
	cache->keys = (char **) palloc0(Max(natts, 1) * sizeof(char *));
	cache->values = (Datum *) palloc(Max(natts, 1) * sizeof(Datum));
	cache->nulls = (bool *) palloc(Max(natts, 1) * sizeof(bool));

	for (i = 0; i < natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);
		StringInfoData key;

		if (att->attisdropped)
			continue;
		egress_column_init(&cache->columns[i], NameStr(att->attname),
						   att->atttypid, att->atttypmod, att->attnotnull);
		initStringInfo(&key);
		escape_json(&key, NameStr(att->attname));
		appendStringInfoChar(&key, ':');
		cache->keys[i] = key.data;
	}

	MemoryContextSwitchTo(oldcxt);
	return cache;
}

/*
 * deform_row_argument
 *		Check that the first argument is a row value, set up the call site's
 *		cache for its type and deform it into cache->values/nulls.
 */
static PreviewRecordCache *
deform_row_argument(FunctionCallInfo fcinfo, const char *funcname)
{
	Oid			argtype = get_fn_expr_argtype(fcinfo->flinfo, 0);
	HeapTupleHeader td;
	Oid			typid;
	int32		typmod;
	PreviewRecordCache *cache;
	HeapTupleData tuple;

	if (!OidIsValid(argtype) || !type_is_rowtype(argtype))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("argument of %s must be a row value", funcname),
				 OidIsValid(argtype) ?
				 errdetail("Type %s is not a composite type.",
						   format_type_be(argtype)) : 0,
				 errhint("Pass a table row, as in SELECT %s(t) FROM t.",
						 funcname)));

	td = PG_GETARG_HEAPTUPLEHEADER(0);
	typid = HeapTupleHeaderGetTypeId(td);
	typmod = HeapTupleHeaderGetTypMod(td);

	cache = (PreviewRecordCache *) fcinfo->flinfo->fn_extra;
	if (cache == NULL || cache->typid != typid || cache->typmod != typmod)
	{
		cache = build_record_cache(fcinfo, typid, typmod);
		fcinfo->flinfo->fn_extra = cache;
	}

	tuple.t_len = HeapTupleHeaderGetDatumLength(td);
	ItemPointerSetInvalid(&(tuple.t_self));
	tuple.t_tableOid = InvalidOid;
	tuple.t_data = td;
	heap_deform_tuple(&tuple, cache->tupdesc, cache->values, cache->nulls);

	return cache;
}

/*
 * egress_preview_record
 *		The Singer record object of a row value.
 */
Datum
egress_preview_record(PG_FUNCTION_ARGS)
{
	PreviewRecordCache *cache;
	StringInfoData buf;
	bool		first = true;
	int			i;

	cache = deform_row_argument(fcinfo, "egress_preview_record");

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (i = 0; i < cache->tupdesc->natts; i++)
	{
		if (cache->keys[i] == NULL)
			continue;
		if (!first)
			appendStringInfoChar(&buf, ',');
		first = false;
		appendStringInfoString(&buf, cache->keys[i]);
		egress_column_value(&buf, &cache->columns[i], cache->values[i],
							cache->nulls[i]);
	}
	appendStringInfoChar(&buf, '}');

	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf.data, buf.len));
}

/*
 * egress_preview_record_via_text
 *		The Singer record object of a row value, rendered from the values'
 *		output text as the CDC path renders wal2json's values.
 *
 * Every value is printed with its type's output function under the
 * settings the CDC worker pins (the caller's settings are restored
 * afterwards), then rendered with egress_column_value_text in the caller's
 * session.
 */
Datum
egress_preview_record_via_text(PG_FUNCTION_ARGS)
{
	PreviewRecordCache *cache;
	TupleDesc	tupdesc;
	StringInfoData buf;
	bool		first = true;
	int			nestlevel;
	int			i;

	cache = deform_row_argument(fcinfo, "egress_preview_record_via_text");
	tupdesc = cache->tupdesc;

	if (cache->outfuncs == NULL)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);

		cache->outfuncs = (FmgrInfo *) palloc0(Max(tupdesc->natts, 1) * sizeof(FmgrInfo));
		cache->texts = (char **) palloc0(Max(tupdesc->natts, 1) * sizeof(char *));
		for (i = 0; i < tupdesc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(tupdesc, i);
			Oid			typoutput;
			bool		typisvarlena;

			if (att->attisdropped)
				continue;
			/* the declared type's, as wal2json does; a domain has its base's */
			getTypeOutputInfo(att->atttypid, &typoutput, &typisvarlena);
			fmgr_info_cxt(typoutput, &cache->outfuncs[i], fcinfo->flinfo->fn_mcxt);
		}
		MemoryContextSwitchTo(oldcxt);
	}

	nestlevel = NewGUCNestLevel();
	(void) set_config_option("DateStyle", "ISO, MDY",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("IntervalStyle", "postgres",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("TimeZone", "UTC",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("extra_float_digits", "1",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("bytea_output", "hex",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	for (i = 0; i < tupdesc->natts; i++)
	{
		if (cache->keys[i] == NULL || cache->nulls[i])
			cache->texts[i] = NULL;
		else
			cache->texts[i] = OutputFunctionCall(&cache->outfuncs[i],
												 cache->values[i]);
	}
	AtEOXact_GUC(true, nestlevel);

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (i = 0; i < tupdesc->natts; i++)
	{
		if (cache->keys[i] == NULL)
			continue;
		if (!first)
			appendStringInfoChar(&buf, ',');
		first = false;
		appendStringInfoString(&buf, cache->keys[i]);
		egress_column_value_text(&buf, &cache->columns[i], cache->texts[i],
								 cache->nulls[i]);
	}
	appendStringInfoChar(&buf, '}');

	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf.data, buf.len));
}
