/*-------------------------------------------------------------------------
 * pg_kinesis.c
 *	  Renders one change in pg_kinesis' JSON shape (see pg_kinesis.h and
 *	  docs/kinesis.md for the conventions and why they are as they are).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgtime.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "encode/pg_kinesis.h"

/* one entry of "columns" */
typedef struct KColumn
{
	const char *key;			/* quoted column name */
	const EgressPgKinesisColumn *type;
	const char *new_v;			/* NULL: no "new" */
	bool		new_q;
	const char *old_v;			/* NULL: no "old" */
	bool		old_q;
} KColumn;

EgressPgKinesisColumn *
egress_pg_kinesis_columns(TupleDesc desc, int *ncolumns)
{
	EgressPgKinesisColumn *cols = palloc0(Max(desc->natts, 1) * sizeof(EgressPgKinesisColumn));
	int			n = 0;

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped || att->attnum <= 0)
			continue;
		cols[n].name = pstrdup(NameStr(att->attname));
		cols[n].typid = att->atttypid;
		cols[n].basetypid = getBaseType(att->atttypid);
		cols[n].typname = format_type_be(att->atttypid);
		n++;
	}
	*ncolumns = n;
	return cols;
}

EgressPgKinesisColumn *
egress_pg_kinesis_columns_of(const EgressColumn *cols, int n)
{
	EgressPgKinesisColumn *out = palloc0(Max(n, 1) * sizeof(EgressPgKinesisColumn));

	for (int i = 0; i < n; i++)
	{
		out[i].name = pstrdup(cols[i].name);
		out[i].typid = cols[i].typid;
		out[i].basetypid = getBaseType(cols[i].typid);
		out[i].typname = format_type_be(cols[i].typid);
	}
	return out;
}

/*
 * A JSON string as Go's encoding/json writes it: besides what JSON needs,
 * <, > and & become \u003c, \u003e, \u0026, and U+2028, U+2029 \u2028,
 * \u2029; control characters other than \n, \r, \t are \u00xx.
 */
static void
append_go_string(StringInfo buf, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *) s;

	appendStringInfoChar(buf, '"');
	for (; *p; p++)
	{
		unsigned char c = *p;

		switch (c)
		{
			case '"':
				appendStringInfoString(buf, "\\\"");
				break;
			case '\\':
				appendStringInfoString(buf, "\\\\");
				break;
			case '\n':
				appendStringInfoString(buf, "\\n");
				break;
			case '\r':
				appendStringInfoString(buf, "\\r");
				break;
			case '\t':
				appendStringInfoString(buf, "\\t");
				break;
			case '<':
			case '>':
			case '&':
				appendStringInfo(buf, "\\u00%c%c", hex[c >> 4], hex[c & 15]);
				break;
			default:
				if (c < 0x20)
					appendStringInfo(buf, "\\u00%c%c", hex[c >> 4], hex[c & 15]);
				else if (c == 0xE2 && p[1] == 0x80 && (p[2] == 0xA8 || p[2] == 0xA9))
				{
					appendStringInfo(buf, "\\u202%c", p[2] == 0xA8 ? '8' : '9');
					p += 2;
				}
				else
					appendStringInfoChar(buf, c);
				break;
		}
	}
	appendStringInfoChar(buf, '"');
}

/*
 * The "v" and "q" of a value as pg_kinesis reads them from test_decoding:
 * unquoted for integers, oid, floats and numeric (as printed), booleans
 * (true, false),
 * null ("null") and unchanged TOASTed values ("unchanged-toast-datum");
 * bit strings come as B'...' and pg_kinesis keeps "'..." of them; every
 * other value is quoted, single quotes doubled, and pg_kinesis keeps the
 * doubled quotes.
 */
static const char *
value_of(const EgressPgKinesisColumn *type, const EgressChangeColumn *col,
		 bool *quoted)
{
	const char *text;

	*quoted = false;
	if (col == NULL || col->unchanged)
		return "unchanged-toast-datum";
	if (col->isnull)
		return "null";
	text = egress_change_value_text(col, type ? type->basetypid : InvalidOid);
	if (text == NULL)
		return "null";
	switch (type ? type->typid : InvalidOid)
	{
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case OIDOID:
		case FLOAT4OID:
		case FLOAT8OID:
		case NUMERICOID:
			return text;
		case BOOLOID:
			/* test_decoding spells booleans out */
			return strcmp(text, "t") == 0 ? "true" : "false";
		case BITOID:
		case VARBITOID:
			*quoted = true;
			return psprintf("'%s", text);
		default:
			{
				StringInfoData v;

				*quoted = true;
				if (strchr(text, '\'') == NULL)
					return text;
				initStringInfo(&v);
				for (const char *p = text; *p; p++)
				{
					if (*p == '\'')
						appendStringInfoChar(&v, '\'');
					appendStringInfoChar(&v, *p);
				}
				return v.data;
			}
	}
}

static const EgressPgKinesisColumn *
find_type(const EgressPgKinesisColumn *columns, int ncolumns, int hint,
		  const char *name)
{
	if (hint >= 0 && hint < ncolumns && strcmp(columns[hint].name, name) == 0)
		return &columns[hint];
	for (int i = 0; i < ncolumns; i++)
		if (strcmp(columns[i].name, name) == 0)
			return &columns[i];
	return NULL;
}

static const EgressChangeColumn *
find_column(const EgressChangeColumn *cols, int n, int hint, const char *name)
{
	if (hint >= 0 && hint < n && strcmp(cols[hint].name, name) == 0)
		return &cols[hint];
	for (int i = 0; i < n; i++)
		if (strcmp(cols[i].name, name) == 0)
			return &cols[i];
	return NULL;
}

static int
kcolumn_cmp(const void *a, const void *b)
{
	return strcmp(((const KColumn *) a)->key, ((const KColumn *) b)->key);
}

static void
append_value(StringInfo buf, const char *label, bool quoted,
			 const EgressPgKinesisColumn *type, const char *v)
{
	appendStringInfo(buf, "\"%s\":{\"q\":\"%s\",\"t\":", label, quoted ? "true" : "false");
	append_go_string(buf, type ? type->typname : "unknown");
	appendStringInfoString(buf, ",\"v\":");
	append_go_string(buf, v);
	appendStringInfoChar(buf, '}');
}

bool
egress_pg_kinesis_render(StringInfo buf, const EgressChange *change,
						 const char *schema, const char *table,
						 const EgressPgKinesisColumn *columns, int ncolumns,
						 XLogRecPtr lsn, TimestampTz commit_time)
{
	const char *operation;
	KColumn    *kc;
	int			n = 0;
	pg_time_t	t;
	struct pg_tm *tm;
	char		timebuf[64];

	switch (change->action)
	{
		case EGRESS_CHANGE_INSERT:
			operation = "INSERT";
			break;
		case EGRESS_CHANGE_UPDATE:
			operation = "UPDATE";
			break;
		case EGRESS_CHANGE_DELETE:
			operation = "DELETE";
			break;
		default:
			return false;
	}

	kc = palloc0(sizeof(KColumn) * (Max(ncolumns, Max(change->ncolumns, change->nidentity)) + 1));
	if (change->action == EGRESS_CHANGE_DELETE)
	{
		/*
		 * The replica identity, as "old" (nothing without one); test_decoding
		 * leaves out its null values.
		 */
		for (int i = 0; i < change->nidentity; i++)
		{
			const EgressChangeColumn *c = &change->identity[i];

			if (c->isnull)
				continue;
			kc[n].key = quote_identifier(c->name);
			kc[n].type = find_type(columns, ncolumns, i, c->name);
			kc[n].old_v = value_of(kc[n].type, c, &kc[n].old_q);
			n++;
		}
	}
	else
	{
		/*
		 * Every column of the new row: test_decoding prints each, an
		 * unchanged TOASTed one as unchanged-toast-datum (wal2json leaves
		 * such a column out: it is one of the relation's columns that the
		 * change lacks).
		 */
		int			ncols = ncolumns > 0 ? ncolumns : change->ncolumns;

		for (int i = 0; i < ncols; i++)
		{
			const char *name = ncolumns > 0 ? columns[i].name : change->columns[i].name;
			const EgressChangeColumn *c = find_column(change->columns, change->ncolumns, i, name);
			const EgressChangeColumn *o;

			kc[n].key = quote_identifier(name);
			kc[n].type = ncolumns > 0 ? &columns[i] : NULL;
			kc[n].new_v = value_of(kc[n].type, c, &kc[n].new_q);
			/* the old value, when the replica identity gives it and it differs */
			o = change->action == EGRESS_CHANGE_UPDATE ?
				find_column(change->identity, change->nidentity, i, name) : NULL;
			if (o != NULL && !o->isnull)
			{
				bool		q;
				const char *ov = value_of(kc[n].type, o, &q);

				if (strcmp(ov, kc[n].new_v) != 0)
				{
					kc[n].old_v = ov;
					kc[n].old_q = q;
				}
			}
			n++;
		}
	}
	qsort(kc, n, sizeof(KColumn), kcolumn_cmp);

	appendStringInfo(buf, "{\"lsn\":\"%X/%X\",\"time\":\"", LSN_FORMAT_ARGS(lsn));
	/* RFC 3339 to the second, UTC */
	t = timestamptz_to_time_t(commit_time);
	tm = pg_gmtime(&t);
	if (tm != NULL)
		pg_strftime(timebuf, sizeof(timebuf), "%Y-%m-%dT%H:%M:%SZ", tm);
	else
		strlcpy(timebuf, "1970-01-01T00:00:00Z", sizeof(timebuf));
	appendStringInfoString(buf, timebuf);
	appendStringInfoString(buf, "\",\"table\":");
	append_go_string(buf, quote_qualified_identifier(schema, table));
	appendStringInfo(buf, ",\"operation\":\"%s\",\"columns\":{", operation);
	for (int i = 0; i < n; i++)
	{
		if (i > 0)
			appendStringInfoChar(buf, ',');
		append_go_string(buf, kc[i].key);
		appendStringInfoString(buf, ":{");
		/* "new" before "old": byte order */
		if (kc[i].new_v)
			append_value(buf, "new", kc[i].new_q, kc[i].type, kc[i].new_v);
		if (kc[i].old_v)
		{
			if (kc[i].new_v)
				appendStringInfoChar(buf, ',');
			append_value(buf, "old", kc[i].old_q, kc[i].type, kc[i].old_v);
		}
		appendStringInfoChar(buf, '}');
	}
	appendStringInfoString(buf, "}}");
	pfree(kc);
	return true;
}

/*
 * egress_pg_kinesis_preview(relation regclass, operation text,
 *							 new_values text[], old_values text[],
 *							 lsn pg_lsn, commit_time timestamptz) -> text
 *
 * The pg_kinesis JSON of one change given as the output functions' text of
 * the relation's columns (in column order, dropped ones left out; NULL for
 * a null value): new_values for INSERT/UPDATE, old_values the replica
 * identity of UPDATE/DELETE (NULL: none; its null elements are columns it
 * does not give).  A test hook, not in the extension's script: tests
 * declare it (CREATE FUNCTION ... LANGUAGE C), which takes a superuser;
 * the caller must be able to read the relation.
 */
PG_FUNCTION_INFO_V1(egress_pg_kinesis_preview);

static EgressChangeColumn *
preview_columns(ArrayType *arr, const EgressPgKinesisColumn *cols, int ncols,
				int *n, bool skip_nulls)
{
	Datum	   *elems;
	bool	   *nulls;
	int			nelems;
	EgressChangeColumn *out;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &nelems);
	if (nelems != ncols)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expected %d values, got %d", ncols, nelems)));
	out = palloc0(Max(nelems, 1) * sizeof(EgressChangeColumn));
	*n = 0;
	for (int i = 0; i < nelems; i++)
	{
		if (nulls[i] && skip_nulls)
			continue;
		out[*n].name = unconstify(char *, cols[i].name);
		out[*n].isnull = nulls[i];
		out[*n].value = nulls[i] ? NULL : TextDatumGetCString(elems[i]);
		out[*n].raw_text = true;
		(*n)++;
	}
	return out;
}

Datum
egress_pg_kinesis_preview(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *op;
	Relation	rel;
	EgressPgKinesisColumn *cols;
	int			ncols;
	EgressChange change = {0};
	StringInfoData buf;
	AclResult	aclresult;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(4) || PG_ARGISNULL(5))
		PG_RETURN_NULL();
	op = text_to_cstring(PG_GETARG_TEXT_PP(1));
	aclresult = pg_class_aclcheck(relid, GetUserId(), ACL_SELECT);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_TABLE, get_rel_name(relid));
	rel = table_open(relid, AccessShareLock);
	cols = egress_pg_kinesis_columns(RelationGetDescr(rel), &ncols);

	if (strcmp(op, "INSERT") == 0)
		change.action = EGRESS_CHANGE_INSERT;
	else if (strcmp(op, "UPDATE") == 0)
		change.action = EGRESS_CHANGE_UPDATE;
	else if (strcmp(op, "DELETE") == 0)
		change.action = EGRESS_CHANGE_DELETE;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("operation must be INSERT, UPDATE or DELETE")));
	if (!PG_ARGISNULL(2))
		change.columns = preview_columns(PG_GETARG_ARRAYTYPE_P(2), cols, ncols,
										 &change.ncolumns, false);
	if (!PG_ARGISNULL(3))
		change.identity = preview_columns(PG_GETARG_ARRAYTYPE_P(3), cols, ncols,
										  &change.nidentity, true);
	change.relid = relid;

	initStringInfo(&buf);
	(void) egress_pg_kinesis_render(&buf, &change,
									get_namespace_name(RelationGetNamespace(rel)),
									RelationGetRelationName(rel), cols, ncols,
									PG_GETARG_LSN(4), PG_GETARG_TIMESTAMPTZ(5));
	table_close(rel, AccessShareLock);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf.data, buf.len));
}
