/*-------------------------------------------------------------------------
 * pg_typemap.c
 *	  postgres destinations: the Singer schema -> column type map, COPY text
 *	  escaping, validate_records checks, and a small ordered JSON tree.
 *
 * The type map follows pipelinewise-target-postgres (db_sync.py,
 * column_type): the first rule that matches wins.  pg_egress differs in
 * one place, "number": numeric rather than double precision, since the
 * values pg_egress sends are exact decimals (docs/postgres_target.md).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/numeric.h"

#include "sink/pg_typemap.h"

/* ---------------------------------------------------------------------
 * JSON tree
 * ---------------------------------------------------------------------
 */

typedef struct TreeBuild
{
	JsonLexContext *lex;
	List	   *stack;			/* of EgressJNode *: open objects/arrays */
	char	   *pending_key;	/* the field whose value comes next */
	EgressJNode *root;
} TreeBuild;

static EgressJNode *
tree_add(TreeBuild *tb, JsonTokenType type)
{
	EgressJNode *n = palloc0(sizeof(EgressJNode));

	n->type = type;
	if (tb->stack == NIL)
		tb->root = n;
	else
	{
		EgressJNode *parent = llast(tb->stack);

		if (parent->type == JSON_TOKEN_OBJECT_START)
			parent->keys = lappend(parent->keys, tb->pending_key);
		parent->values = lappend(parent->values, n);
	}
	return n;
}

/* object_start and array_start run before the '{' or '[' is consumed */
static void
tree_open(TreeBuild *tb, JsonTokenType type)
{
	EgressJNode *n = tree_add(tb, type);

	n->raw = tb->lex->token_start;
	tb->stack = lappend(tb->stack, n);
}

/* ... and object_end, array_end after the closing one is */
static void
tree_close(TreeBuild *tb)
{
	EgressJNode *n = llast(tb->stack);

	n->rawlen = tb->lex->prev_token_terminator - n->raw;
	tb->stack = list_delete_last(tb->stack);
}

static void
tree_object_start(void *st)
{
	tree_open(st, JSON_TOKEN_OBJECT_START);
}

static void
tree_array_start(void *st)
{
	tree_open(st, JSON_TOKEN_ARRAY_START);
}

static void
tree_end(void *st)
{
	tree_close(st);
}

static void
tree_field(void *st, char *fname, bool isnull)
{
	((TreeBuild *) st)->pending_key = fname;
}

static void
tree_scalar(void *st, char *token, JsonTokenType type)
{
	TreeBuild  *tb = st;
	EgressJNode *n = tree_add(tb, type);

	n->str = token;
	/* the token is consumed: it ended at prev_token_terminator */
	n->raw = n->str;
	n->rawlen = strlen(token);
}

EgressJNode *
egress_jnode_parse(const char *json, int len, char **error)
{
	TreeBuild	tb = {0};
	JsonSemAction sem = {0};
	JsonParseErrorType rc;

	tb.lex = makeJsonLexContextCstringLen((char *) json, len, GetDatabaseEncoding(), true);
	sem.semstate = &tb;
	sem.object_start = tree_object_start;
	sem.object_end = tree_end;
	sem.array_start = tree_array_start;
	sem.array_end = tree_end;
	sem.object_field_start = tree_field;
	sem.scalar = tree_scalar;
	rc = pg_parse_json(tb.lex, &sem);
	if (rc != JSON_SUCCESS)
	{
		*error = json_errdetail(rc, tb.lex);
		return NULL;
	}
	return tb.root;
}

EgressJNode *
egress_jnode_get(const EgressJNode *obj, const char *key)
{
	ListCell   *k,
			   *v;

	if (obj == NULL || obj->type != JSON_TOKEN_OBJECT_START)
		return NULL;
	forboth(k, obj->keys, v, obj->values)
	{
		if (strcmp(lfirst(k), key) == 0)
			return lfirst(v);
	}
	return NULL;
}

/* ---------------------------------------------------------------------
 * Type map
 * ---------------------------------------------------------------------
 */

static int
jtype_bit(const char *name)
{
	if (strcmp(name, "null") == 0)
		return EGRESS_JT_NULL;
	if (strcmp(name, "string") == 0)
		return EGRESS_JT_STRING;
	if (strcmp(name, "number") == 0)
		return EGRESS_JT_NUMBER;
	if (strcmp(name, "integer") == 0)
		return EGRESS_JT_INTEGER;
	if (strcmp(name, "boolean") == 0)
		return EGRESS_JT_BOOLEAN;
	if (strcmp(name, "object") == 0)
		return EGRESS_JT_OBJECT;
	if (strcmp(name, "array") == 0)
		return EGRESS_JT_ARRAY;
	return 0;
}

/* "type": a name or a list of names */
static int
jtypes_of(const EgressJNode *t)
{
	int			bits = 0;
	ListCell   *lc;

	if (t == NULL)
		return 0;
	if (t->type == JSON_TOKEN_STRING)
		return jtype_bit(t->str);
	if (t->type != JSON_TOKEN_ARRAY_START)
		return 0;
	foreach(lc, t->values)
	{
		EgressJNode *e = lfirst(lc);

		if (e->type == JSON_TOKEN_STRING)
			bits |= jtype_bit(e->str);
	}
	return bits;
}

/*
 * pipelinewise's integer rule: the narrowest of smallint, integer, bigint
 * that holds maximum; numeric when there is none (or it is larger).
 */
static int
numeric_compare(Numeric a, Numeric b)
{
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(a),
											 NumericGetDatum(b)));
}

static const char *
integer_type(const char *maximum)
{
	Numeric		max;

	if (maximum == NULL)
		return "numeric";
	max = DatumGetNumeric(DirectFunctionCall3(numeric_in, CStringGetDatum(maximum),
											  ObjectIdGetDatum(InvalidOid),
											  Int32GetDatum(-1)));
	if (numeric_is_nan(max))
		return "numeric";
	if (numeric_compare(max, int64_to_numeric(PG_INT16_MAX)) <= 0)
		return "smallint";
	if (numeric_compare(max, int64_to_numeric(PG_INT32_MAX)) <= 0)
		return "integer";
	if (numeric_compare(max, int64_to_numeric(PG_INT64_MAX)) <= 0)
		return "bigint";
	return "numeric";
}

static const char *
column_type(const EgressPgColumn *col, const char *format)
{
	int			t = col->jtypes;

	if (t & (EGRESS_JT_OBJECT | EGRESS_JT_ARRAY))
		return "jsonb";
	if (format && strcmp(format, "date-time") == 0)
		return "timestamp without time zone";
	if (format && strcmp(format, "time") == 0)
		return "time without time zone";
	if (t & EGRESS_JT_NUMBER)
		return "numeric";
	if ((t & EGRESS_JT_INTEGER) && (t & EGRESS_JT_STRING))
		return "character varying";
	if (t & EGRESS_JT_INTEGER)
		return integer_type(col->maximum);
	if (t & EGRESS_JT_BOOLEAN)
		return "boolean";
	return "character varying";
}

static char *
number_text(const EgressJNode *n)
{
	if (n == NULL || (n->type != JSON_TOKEN_NUMBER))
		return NULL;
	return n->str;
}

void
egress_pg_column_map(EgressPgColumn *col, const char *name, const EgressJNode *prop)
{
	EgressJNode *format = egress_jnode_get(prop, "format");
	EgressJNode *maxlen = egress_jnode_get(prop, "maxLength");
	const char *fmt = (format && format->type == JSON_TOKEN_STRING) ? format->str : NULL;

	memset(col, 0, sizeof(EgressPgColumn));
	col->name = pstrdup(name);
	col->jtypes = jtypes_of(egress_jnode_get(prop, "type"));
	col->date_time = fmt && strcmp(fmt, "date-time") == 0;
	col->max_length = -1;
	if (maxlen && maxlen->type == JSON_TOKEN_NUMBER)
		col->max_length = strtoi64(maxlen->str, NULL, 10);
	col->minimum = number_text(egress_jnode_get(prop, "minimum"));
	col->maximum = number_text(egress_jnode_get(prop, "maximum"));
	col->type = column_type(col, fmt);
	col->jsonb = strcmp(col->type, "jsonb") == 0;
}

/* integer types and numeric, narrowest first; 0: another type */
static int
numeric_rank(const char *type)
{
	static const char *const ranks[] = {"smallint", "integer", "bigint", "numeric"};

	for (int i = 0; i < lengthof(ranks); i++)
		if (strcmp(type, ranks[i]) == 0)
			return i + 1;
	return 0;
}

bool
egress_pg_type_compatible(const char *existing, const char *wanted, const char *column)
{
	int			have = numeric_rank(existing);
	int			want = numeric_rank(wanted);

	if (strcmp(existing, wanted) == 0)
		return true;
	/* a wider number column takes the values (a table made earlier) */
	if (have && want && have >= want)
		return true;
	/* pipelinewise's "number" columns */
	if (strcmp(existing, "double precision") == 0 && strcmp(wanted, "numeric") == 0)
		return true;
	if (strcmp(existing, "text") == 0 && strcmp(wanted, "character varying") == 0)
		return true;
	if (strcmp(existing, "timestamp with time zone") == 0 &&
		strcmp(wanted, "timestamp without time zone") == 0)
		return true;
	/* a table pipelinewise made: its _sdc_deleted_at is character varying */
	if (strcmp(column, "_sdc_deleted_at") == 0 &&
		(strcmp(existing, "character varying") == 0 || strcmp(existing, "text") == 0))
		return true;
	return false;
}

/* ---------------------------------------------------------------------
 * Values
 * ---------------------------------------------------------------------
 */

void
egress_pg_copy_escape(StringInfo buf, const char *s, size_t len)
{
	const char *start = s;
	const char *end = s + len;

	enlargeStringInfo(buf, len);
	for (const char *p = s; p < end; p++)
	{
		char		c = *p;
		char		esc;

		switch (c)
		{
			case '\\':
				esc = '\\';
				break;
			case '\n':
				esc = 'n';
				break;
			case '\r':
				esc = 'r';
				break;
			case '\t':
				esc = 't';
				break;
			default:
				continue;
		}
		appendBinaryStringInfo(buf, start, p - start);
		appendStringInfoChar(buf, '\\');
		appendStringInfoChar(buf, esc);
		start = p + 1;
	}
	appendBinaryStringInfo(buf, start, end - start);
}

/* integer text within the column's minimum/maximum */
static bool
integer_in_bounds(const EgressPgColumn *col, const char *text)
{
	Datum		v;

	if (col->minimum == NULL && col->maximum == NULL)
		return true;
	v = DirectFunctionCall3(numeric_in, CStringGetDatum(text),
							ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
	if (col->minimum &&
		numeric_compare(DatumGetNumeric(v),
					 DatumGetNumeric(DirectFunctionCall3(numeric_in,
														 CStringGetDatum(col->minimum),
														 ObjectIdGetDatum(InvalidOid),
														 Int32GetDatum(-1)))) < 0)
		return false;
	if (col->maximum &&
		numeric_compare(DatumGetNumeric(v),
					 DatumGetNumeric(DirectFunctionCall3(numeric_in,
														 CStringGetDatum(col->maximum),
														 ObjectIdGetDatum(InvalidOid),
														 Int32GetDatum(-1)))) > 0)
		return false;
	return true;
}

static bool
is_integer_text(const char *text)
{
	return strpbrk(text, ".eE") == NULL;
}

const char *
egress_pg_check_value(const EgressPgColumn *col, JsonTokenType tok, const char *text)
{
	int			t = col->jtypes;

	if (t == 0)
		return NULL;			/* a schema without "type": anything */
	/* json columns (["null","object","array"]): a scalar is embedded as is */
	if ((t & EGRESS_JT_OBJECT) && (t & EGRESS_JT_ARRAY) && tok != JSON_TOKEN_NULL)
		return NULL;
	switch (tok)
	{
		case JSON_TOKEN_NULL:
			return (t & EGRESS_JT_NULL) ? NULL : "null in a column that does not allow null";
		case JSON_TOKEN_STRING:
			if (!(t & EGRESS_JT_STRING))
				return "a string where the schema wants another type";
			if (col->max_length >= 0 &&
				pg_mbstrlen(text) > col->max_length)
				return "a string longer than maxLength";
			return NULL;
		case JSON_TOKEN_NUMBER:
			if (t & EGRESS_JT_NUMBER)
				return NULL;
			if (!(t & EGRESS_JT_INTEGER) || !is_integer_text(text))
				return "a number where the schema wants another type";
			return integer_in_bounds(col, text) ? NULL :
				"an integer outside the schema's minimum and maximum";
		case JSON_TOKEN_TRUE:
		case JSON_TOKEN_FALSE:
			return (t & EGRESS_JT_BOOLEAN) ? NULL : "a boolean where the schema wants another type";
		case JSON_TOKEN_OBJECT_START:
			return (t & EGRESS_JT_OBJECT) ? NULL : "an object where the schema wants another type";
		case JSON_TOKEN_ARRAY_START:
			return (t & EGRESS_JT_ARRAY) ? NULL : "an array where the schema wants another type";
		default:
			return "a value of an unknown type";
	}
}
