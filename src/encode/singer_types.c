/*-------------------------------------------------------------------------
 * singer_types.c
 *	  The one map from PostgreSQL types to Singer JSON schema and values.
 *
 * egress_column_init decides once per column how its values are rendered,
 * so that egress_column_value, which runs for every value of every row,
 * does no catalog lookups and calls no output function where it can format
 * the value itself.  Dates, times and intervals are formatted here from the
 * C structs, never through their output functions, so the result does not
 * depend on DateStyle, IntervalStyle, TimeZone, extra_float_digits or
 * bytea_output.
 *
 * The mapping is specified in the "Types" table of singer-format.md.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <math.h>

#include "catalog/dependency.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "common/shortest_dec.h"
#include "nodes/makefuncs.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "utils/array.h"
#include "utils/arrayaccess.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "encode/singer_types.h"

/*
 * Dates and timestamps are sent as RFC 3339 strings, which have four-digit
 * years 0001-9999.  Values outside that range (BC dates, years after 9999,
 * and the infinities) are clamped to these strings.  The upper one has
 * three nines only because six fail some strict RFC 3339 validators.
 */
#define EGRESS_TS_MAX_TEXT	"9999-12-31T23:59:59.999"
#define EGRESS_TS_MIN_TEXT	"0001-01-01T00:00:00"

/* 0001-01-01 and 10000-01-01 as days since the PostgreSQL epoch */
#define EGRESS_DATE_MIN		(1721426 - POSTGRES_EPOCH_JDATE)	/* date2j(1, 1, 1) */
#define EGRESS_DATE_END		(5373485 - POSTGRES_EPOCH_JDATE)	/* date2j(10000, 1, 1) */
#define EGRESS_TS_MIN		((int64) EGRESS_DATE_MIN * USECS_PER_DAY)
#define EGRESS_TS_END		((int64) EGRESS_DATE_END * USECS_PER_DAY)

/* the suffix of every date and timestamp value: they are all in UTC */
#define EGRESS_UTC_SUFFIX	"+00:00"

/* decoding of numeric typmods, as in numeric.c (where it is static) */
#define NUMERIC_TYPMOD_PRECISION(typmod) \
	((((typmod) - VARHDRSZ) >> 16) & 0xffff)
#define NUMERIC_TYPMOD_SCALE(typmod) \
	(((((typmod) - VARHDRSZ) & 0x7ff) ^ 1024) - 1024)

static void setup_input(EgressColumn *col);
static bool lookup_hstore_to_json(Oid typid, FmgrInfo *finfo);
static void append_type_list(StringInfo buf, bool nullable,
							 const char *type1, const char *type2);
static void append_pow10(StringInfo buf, int exponent, bool negative);
static void append_timestamp(StringInfo buf, Timestamp ts,
							 bool always_fraction, const char *suffix);
static void append_date(StringInfo buf, DateADT date);
static void append_time(StringInfo buf, TimeADT time);
static void append_interval(StringInfo buf, const Interval *span);
static void append_bytea(StringInfo buf, Datum value);
static void append_array(StringInfo buf, EgressColumn *col, Datum value);
static void compact_json_tail(StringInfo buf, int start);
static char *put_digits(char *p, int value, int ndigits);
static bool is_special_number(const char *text);
static int	scan_time_text(const char *text, int *fraclen);
static void append_fraction6(StringInfo buf, const char *frac, int fraclen);
static bool append_datetime_text(StringInfo buf, EgressColumn *col,
								 const char *text);


/*
 * egress_column_init
 *		Decide how a column of type typid/typmod is rendered.
 */
void
egress_column_init(EgressColumn *col, const char *name,
				   Oid typid, int32 typmod, bool notnull)
{
	Oid			basetypid;
	int32		basetypmod = typmod;
	Oid			elemtypid;
	Oid			typoutput;
	bool		typisvarlena;

	memset(col, 0, sizeof(EgressColumn));
	col->name = name ? pstrdup(name) : NULL;
	col->typid = typid;
	col->typmod = typmod;
	col->notnull = notnull;

	/* a domain is rendered as its base type, with the domain's typmod */
	basetypid = getBaseTypeAndTypmod(typid, &basetypmod);
	col->basetypid = basetypid;
	col->basetypmod = basetypmod;

	/* get_element_type only reports true arrays, not name or point */
	elemtypid = get_element_type(basetypid);
	if (OidIsValid(elemtypid))
	{
		col->kind = EGRESS_KIND_ARRAY;
		get_typlenbyvalalign(elemtypid, &col->elmlen, &col->elmbyval,
							 &col->elmalign);
		/* an array column's typmod applies to its elements */
		col->elem = (EgressColumn *) palloc(sizeof(EgressColumn));
		egress_column_init(col->elem, NULL, elemtypid, basetypmod, false);
		setup_input(col);
		return;
	}

	col->kind = EGRESS_KIND_STRING;
	switch (basetypid)
	{
		case INT2OID:
		case INT4OID:
		case INT8OID:
			col->kind = EGRESS_KIND_INTEGER;
			return;
		case FLOAT4OID:
		case FLOAT8OID:
			col->kind = EGRESS_KIND_FLOAT;
			return;
		case BOOLOID:
			col->kind = EGRESS_KIND_BOOL;
			setup_input(col);
			return;
		case DATEOID:
			col->kind = EGRESS_KIND_DATE;
			setup_input(col);
			return;
		case TIMESTAMPOID:
			col->kind = EGRESS_KIND_TIMESTAMP;
			setup_input(col);
			return;
		case TIMESTAMPTZOID:
			col->kind = EGRESS_KIND_TIMESTAMPTZ;
			setup_input(col);
			return;
		case TIMEOID:
			col->kind = EGRESS_KIND_TIME;
			setup_input(col);
			return;
		case TIMETZOID:
			col->kind = EGRESS_KIND_TIMETZ;
			setup_input(col);
			return;
		case JSONOID:
			col->kind = EGRESS_KIND_JSON;
			setup_input(col);
			return;
		case JSONBOID:
			col->kind = EGRESS_KIND_JSONB;
			setup_input(col);
			return;
		case INTERVALOID:
			col->kind = EGRESS_KIND_INTERVAL;
			setup_input(col);
			return;
		case BYTEAOID:
			col->kind = EGRESS_KIND_BYTEA;
			setup_input(col);
			return;
		case BITOID:
			/* only bit(1) is a boolean; bit(n) is a string of digits */
			if (basetypmod == 1)
			{
				col->kind = EGRESS_KIND_BIT1;
				setup_input(col);
				return;
			}
			break;
		case NUMERICOID:
			/* numeric_out gives the exact text; NaN/Inf are caught first */
			col->kind = EGRESS_KIND_NUMERIC;
			break;
		default:
			/* hstore has no fixed OID: recognise it by its extension */
			if (lookup_hstore_to_json(basetypid, &col->outfunc))
			{
				col->kind = EGRESS_KIND_HSTORE;
				setup_input(col);
				return;
			}
			break;
	}

	getTypeOutputInfo(basetypid, &typoutput, &typisvarlena);
	fmgr_info_cxt(typoutput, &col->outfunc, CurrentMemoryContext);
}

/*
 * setup_input
 *		Look up the input function of the column's base type, with which
 *		egress_column_value_text turns text back into a Datum.
 */
static void
setup_input(EgressColumn *col)
{
	Oid			typinput;

	getTypeInputInfo(col->basetypid, &typinput, &col->typioparam);
	fmgr_info_cxt(typinput, &col->infunc, CurrentMemoryContext);
	col->typbyval = get_typbyval(col->basetypid);
	col->has_infunc = true;
}

/*
 * egress_check_free_input_type
 *		The type to parse a value of typid with so that no user code runs;
 *		InvalidOid if there is none (see singer_types.h).
 *
 * Parsing a value calls input functions: a domain's runs its CHECK (the
 * domain owner's code, which a plain SELECT of the value never runs), and
 * array_in, record_in, range_in and multirange_in call those of the
 * element, the fields, the subtype.  A domain's value passed its CHECK
 * when it was written and reads the same as its base type; an array of
 * a domain reads the same as the array of the base type (same storage,
 * only the element type in the array header differs).  A composite or a
 * range has no such twin: a field or subtype that needs mapping makes it
 * unusable.  Base types' input functions are C, written by a superuser;
 * enum_in reads the catalog; a range's canonical function is C too.
 */
Oid
egress_check_free_input_type(Oid typid, int32 *typmod)
{
	char		typtype;
	Oid			elem;

	check_stack_depth();		/* composites and domains nest */
	typtype = get_typtype(typid);
	if (typtype == TYPTYPE_DOMAIN)
	{
		int32		basetypmod = typmod ? *typmod : -1;
		Oid			base = getBaseTypeAndTypmod(typid, &basetypmod);

		if (typmod)
			*typmod = basetypmod;
		return egress_check_free_input_type(base, typmod);
	}
	elem = get_element_type(typid);
	if (OidIsValid(elem))
	{
		Oid			mapped = egress_check_free_input_type(elem, NULL);

		if (mapped == elem)
			return typid;
		if (typmod)
			*typmod = -1;
		return OidIsValid(mapped) ? get_array_type(mapped) : InvalidOid;
	}
	if (typtype == TYPTYPE_COMPOSITE)
	{
		TupleDesc	desc = lookup_rowtype_tupdesc(typid, -1);
		bool		ok = true;

		for (int i = 0; i < desc->natts && ok; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i);

			if (!att->attisdropped &&
				egress_check_free_input_type(att->atttypid, NULL) != att->atttypid)
				ok = false;
		}
		ReleaseTupleDesc(desc);
		return ok ? typid : InvalidOid;
	}
	if (typtype == TYPTYPE_RANGE)
	{
		Oid			sub = get_range_subtype(typid);

		return egress_check_free_input_type(sub, NULL) == sub ? typid : InvalidOid;
	}
	if (typtype == TYPTYPE_MULTIRANGE)
	{
		Oid			range = get_multirange_range(typid);

		return egress_check_free_input_type(range, NULL) == range ? typid : InvalidOid;
	}
	return typid;
}

/*
 * lookup_hstore_to_json
 *		If typid is the hstore type of the hstore extension, set up finfo to
 *		call that extension's hstore_to_json(hstore) and return true.
 *
 * hstore's binary layout is private to the extension, and its text output
 * would have to be re-parsed, so we let the extension render the object.
 * The function must belong to the same extension as the type, so that a
 * look-alike created by someone else in that schema is never called.
 */
static bool
lookup_hstore_to_json(Oid typid, FmgrInfo *finfo)
{
	HeapTuple	tp;
	Form_pg_type typform;
	Oid			typnamespace;
	bool		is_hstore;
	Oid			extoid;
	char	   *extname;
	char	   *nspname;
	List	   *funcname;
	Oid			funcoid;

	tp = SearchSysCache1(TYPEOID, ObjectIdGetDatum(typid));
	if (!HeapTupleIsValid(tp))
		elog(ERROR, "cache lookup failed for type %u", typid);
	typform = (Form_pg_type) GETSTRUCT(tp);
	is_hstore = (typform->typtype == TYPTYPE_BASE &&
				 strcmp(NameStr(typform->typname), "hstore") == 0);
	typnamespace = typform->typnamespace;
	ReleaseSysCache(tp);
	if (!is_hstore)
		return false;

	extoid = getExtensionOfObject(TypeRelationId, typid);
	if (!OidIsValid(extoid))
		return false;
	extname = get_extension_name(extoid);
	if (extname == NULL || strcmp(extname, "hstore") != 0)
		return false;

	nspname = get_namespace_name(typnamespace);
	if (nspname == NULL)
		return false;
	funcname = list_make2(makeString(nspname), makeString("hstore_to_json"));
	funcoid = LookupFuncName(funcname, 1, &typid, true);
	if (!OidIsValid(funcoid) ||
		get_func_rettype(funcoid) != JSONOID ||
		getExtensionOfObject(ProcedureRelationId, funcoid) != extoid)
		return false;

	fmgr_info_cxt(funcoid, finfo, CurrentMemoryContext);
	return true;
}


/*
 * append_type_list
 *		Append "type":[...] with "null" first when nullable.
 */
static void
append_type_list(StringInfo buf, bool nullable,
				 const char *type1, const char *type2)
{
	appendStringInfoString(buf, "\"type\":[");
	if (nullable)
		appendStringInfoString(buf, "\"null\",");
	appendStringInfoChar(buf, '"');
	appendStringInfoString(buf, type1);
	appendStringInfoChar(buf, '"');
	if (type2)
	{
		appendStringInfoString(buf, ",\"");
		appendStringInfoString(buf, type2);
		appendStringInfoChar(buf, '"');
	}
	appendStringInfoChar(buf, ']');
}

/*
 * append_pow10
 *		Append 10^exponent as a plain JSON number (no exponent notation, so
 *		that consumers parsing it as a decimal get it exactly).
 */
static void
append_pow10(StringInfo buf, int exponent, bool negative)
{
	int			i;

	if (negative)
		appendStringInfoChar(buf, '-');
	if (exponent >= 0)
	{
		appendStringInfoChar(buf, '1');
		for (i = 0; i < exponent; i++)
			appendStringInfoChar(buf, '0');
	}
	else
	{
		appendStringInfoString(buf, "0.");
		for (i = 1; i < -exponent; i++)
			appendStringInfoChar(buf, '0');
		appendStringInfoChar(buf, '1');
	}
}

/*
 * egress_column_schema
 *		Append the column's JSON schema object.
 */
void
egress_column_schema(StringInfo buf, const EgressColumn *col)
{
	bool		nullable = !col->notnull;

	appendStringInfoChar(buf, '{');
	switch (col->kind)
	{
		case EGRESS_KIND_INTEGER:
			append_type_list(buf, nullable, "integer", NULL);
			if (col->basetypid == INT2OID)
				appendStringInfoString(buf, ",\"minimum\":-32768,\"maximum\":32767");
			else if (col->basetypid == INT4OID)
				appendStringInfoString(buf, ",\"minimum\":-2147483648,\"maximum\":2147483647");
			else
				appendStringInfoString(buf, ",\"minimum\":-9223372036854775808,\"maximum\":9223372036854775807");
			break;
		case EGRESS_KIND_NUMERIC:
			append_type_list(buf, nullable, "number", NULL);
			if (col->basetypmod >= (int32) VARHDRSZ)
			{
				int			precision = NUMERIC_TYPMOD_PRECISION(col->basetypmod);
				int			scale = NUMERIC_TYPMOD_SCALE(col->basetypmod);

				/* |value| < 10^(p-s), in steps of 10^-s (s may be negative) */
				appendStringInfoString(buf, ",\"exclusiveMinimum\":");
				append_pow10(buf, precision - scale, true);
				appendStringInfoString(buf, ",\"exclusiveMaximum\":");
				append_pow10(buf, precision - scale, false);
				appendStringInfoString(buf, ",\"multipleOf\":");
				append_pow10(buf, -scale, false);
			}
			break;
		case EGRESS_KIND_FLOAT:
			append_type_list(buf, nullable, "number", NULL);
			break;
		case EGRESS_KIND_BOOL:
		case EGRESS_KIND_BIT1:
			append_type_list(buf, nullable, "boolean", NULL);
			break;
		case EGRESS_KIND_DATE:
		case EGRESS_KIND_TIMESTAMP:
		case EGRESS_KIND_TIMESTAMPTZ:
			append_type_list(buf, nullable, "string", NULL);
			appendStringInfoString(buf, ",\"format\":\"date-time\"");
			break;
		case EGRESS_KIND_TIME:
		case EGRESS_KIND_TIMETZ:
			append_type_list(buf, nullable, "string", NULL);
			appendStringInfoString(buf, ",\"format\":\"time\"");
			break;
		case EGRESS_KIND_JSON:
		case EGRESS_KIND_JSONB:
			/*
			 * Always nullable, as the tap declares it: even a NOT NULL
			 * column can hold the JSON value null.
			 */
			append_type_list(buf, true, "object", "array");
			break;
		case EGRESS_KIND_HSTORE:
			append_type_list(buf, nullable, "object", NULL);
			break;
		case EGRESS_KIND_ARRAY:
			/*
			 * Always nullable, as the tap declares arrays; elements are
			 * nullable since no constraint keeps NULLs out of an array.
			 */
			append_type_list(buf, true, "array", NULL);
			appendStringInfoString(buf, ",\"items\":");
			egress_column_schema(buf, col->elem);
			break;
		case EGRESS_KIND_INTERVAL:
		case EGRESS_KIND_BYTEA:
			append_type_list(buf, nullable, "string", NULL);
			break;
		case EGRESS_KIND_STRING:
			append_type_list(buf, nullable, "string", NULL);
			if ((col->basetypid == VARCHAROID || col->basetypid == BPCHAROID) &&
				col->basetypmod >= (int32) VARHDRSZ)
				appendStringInfo(buf, ",\"maxLength\":%d",
								 col->basetypmod - (int32) VARHDRSZ);
			break;
	}
	appendStringInfoChar(buf, '}');
}


/*
 * egress_column_value
 *		Append the JSON rendering of one value of the column.
 */
void
egress_column_value(StringInfo buf, EgressColumn *col,
					Datum value, bool isnull)
{
	char		tmp[DOUBLE_SHORTEST_DECIMAL_LEN + MAXINT8LEN];
	int			len;

	if (isnull)
	{
		appendBinaryStringInfo(buf, "null", 4);
		return;
	}

	switch (col->kind)
	{
		case EGRESS_KIND_INTEGER:
			if (col->basetypid == INT8OID)
				len = pg_lltoa(DatumGetInt64(value), tmp);
			else if (col->basetypid == INT4OID)
				len = pg_ltoa(DatumGetInt32(value), tmp);
			else
				len = pg_ltoa((int32) DatumGetInt16(value), tmp);
			appendBinaryStringInfo(buf, tmp, len);
			break;

		case EGRESS_KIND_NUMERIC:
			{
				Numeric		num = DatumGetNumeric(value);
				char	   *str;

				/* JSON numbers must be finite */
				if (numeric_is_nan(num) || numeric_is_inf(num))
				{
					appendBinaryStringInfo(buf, "null", 4);
					break;
				}
				/* plain decimal digits, never exponent notation */
				str = OutputFunctionCall(&col->outfunc, NumericGetDatum(num));
				appendStringInfoString(buf, str);
				pfree(str);
			}
			break;

		case EGRESS_KIND_FLOAT:
			/* JSON numbers must be finite */
			if (col->basetypid == FLOAT4OID)
			{
				float		f = DatumGetFloat4(value);

				if (isnan(f) || isinf(f))
					appendBinaryStringInfo(buf, "null", 4);
				else
				{
					len = float_to_shortest_decimal_buf(f, tmp);
					appendBinaryStringInfo(buf, tmp, len);
				}
			}
			else
			{
				double		d = DatumGetFloat8(value);

				if (isnan(d) || isinf(d))
					appendBinaryStringInfo(buf, "null", 4);
				else
				{
					len = double_to_shortest_decimal_buf(d, tmp);
					appendBinaryStringInfo(buf, tmp, len);
				}
			}
			break;

		case EGRESS_KIND_BOOL:
			if (DatumGetBool(value))
				appendBinaryStringInfo(buf, "true", 4);
			else
				appendBinaryStringInfo(buf, "false", 5);
			break;

		case EGRESS_KIND_BIT1:
			{
				/*
				 * A VarBit is an int32 bit count followed by the bits, high
				 * bit first.  Read it without detoasting into a copy; the
				 * packed header leaves the count unaligned.
				 */
				struct varlena *vb = PG_DETOAST_DATUM_PACKED(value);
				const char *data = VARDATA_ANY(vb);
				int32		bitlen;

				memcpy(&bitlen, data, sizeof(int32));
				if (bitlen > 0 && (((const unsigned char *) data)[sizeof(int32)] & 0x80))
					appendBinaryStringInfo(buf, "true", 4);
				else
					appendBinaryStringInfo(buf, "false", 5);
			}
			break;

		case EGRESS_KIND_DATE:
			append_date(buf, DatumGetDateADT(value));
			break;

		case EGRESS_KIND_TIMESTAMP:
		case EGRESS_KIND_TIMESTAMPTZ:
			/* timestamptz is stored in UTC; timestamp is taken as UTC */
			append_timestamp(buf, DatumGetTimestamp(value), false,
							 EGRESS_UTC_SUFFIX);
			break;

		case EGRESS_KIND_TIME:
			appendStringInfoChar(buf, '"');
			append_time(buf, DatumGetTimeADT(value));
			appendStringInfoChar(buf, '"');
			break;

		case EGRESS_KIND_TIMETZ:
			{
				TimeTzADT  *tz = DatumGetTimeTzADTP(value);
				TimeADT		t;

				/*
				 * zone is seconds west of UTC, so adding it gives UTC.  The
				 * offset is at most 16 hours, so one wrap suffices.
				 * Midnight, however reached (24:00:00+00 included), is
				 * 00:00:00: see append_time.
				 */
				t = tz->time + (int64) tz->zone * USECS_PER_SEC;
				if (t < 0)
					t += USECS_PER_DAY;
				else if (t >= USECS_PER_DAY)
					t -= USECS_PER_DAY;
				appendStringInfoChar(buf, '"');
				append_time(buf, t);
				appendStringInfoChar(buf, '"');
			}
			break;

		case EGRESS_KIND_JSON:
			{
				text	   *txt = DatumGetTextPP(value);
				int			start = buf->len;

				/*
				 * json keeps its input text, which json_in has validated;
				 * drop the whitespace between tokens, because line breaks
				 * in it would split the NDJSON line.
				 */
				appendBinaryStringInfo(buf, VARDATA_ANY(txt),
									   VARSIZE_ANY_EXHDR(txt));
				compact_json_tail(buf, start);
			}
			break;

		case EGRESS_KIND_JSONB:
			{
				Jsonb	   *jb = DatumGetJsonbP(value);
				int			start = buf->len;

				/* written straight into buf; compacted like json */
				(void) JsonbToCString(buf, &jb->root, VARSIZE(jb));
				compact_json_tail(buf, start);
			}
			break;

		case EGRESS_KIND_HSTORE:
			{
				text	   *json;
				int			start = buf->len;

				json = DatumGetTextPP(FunctionCall1(&col->outfunc, value));
				appendBinaryStringInfo(buf, VARDATA_ANY(json),
									   VARSIZE_ANY_EXHDR(json));
				compact_json_tail(buf, start);
			}
			break;

		case EGRESS_KIND_INTERVAL:
			appendStringInfoChar(buf, '"');
			append_interval(buf, DatumGetIntervalP(value));
			appendStringInfoChar(buf, '"');
			break;

		case EGRESS_KIND_BYTEA:
			append_bytea(buf, value);
			break;

		case EGRESS_KIND_ARRAY:
			append_array(buf, col, value);
			break;

		case EGRESS_KIND_STRING:
			{
				char	   *str = OutputFunctionCall(&col->outfunc, value);

				escape_json(buf, str);
				pfree(str);
			}
			break;
	}
}

/*
 * egress_column_value_plain_text
 *		egress_column_value_text for a text that needs no JSON escaping.
 */
void
egress_column_value_plain_text(StringInfo buf, EgressColumn *col,
							   const char *text)
{
	if (col->kind == EGRESS_KIND_STRING)
	{
		appendStringInfoChar(buf, '"');
		appendStringInfoString(buf, text);
		appendStringInfoChar(buf, '"');
	}
	else
		egress_column_value_text(buf, col, text, false);
}

/*
 * egress_column_value_text
 *		Append the JSON rendering of one value given as its output text.
 *
 * Where the text already is the rendering (integers, numeric, floats,
 * strings) or can be rearranged into it without doubt (booleans, bit(1),
 * json, jsonb, bytea in hex, and dates, timestamps and times of four-digit
 * years in ISO format), it is used directly; anything else goes through
 * the type's input function and egress_column_value, so the result is the
 * same as for the Datum.
 */
void
egress_column_value_text(StringInfo buf, EgressColumn *col,
						 const char *text, bool isnull)
{
	Datum		value;

	if (isnull || text == NULL)
	{
		appendBinaryStringInfo(buf, "null", 4);
		return;
	}

	switch (col->kind)
	{
		case EGRESS_KIND_INTEGER:
			appendStringInfoString(buf, text);
			return;

		case EGRESS_KIND_NUMERIC:
		case EGRESS_KIND_FLOAT:

			/*
			 * numeric_out prints plain decimal digits, float4out/float8out
			 * with extra_float_digits > 0 the shortest round-trip text,
			 * which is what egress_column_value prints; JSON numbers must
			 * be finite.
			 */
			if (is_special_number(text))
				appendBinaryStringInfo(buf, "null", 4);
			else
				appendStringInfoString(buf, text);
			return;

		case EGRESS_KIND_STRING:
			escape_json(buf, text);
			return;

		case EGRESS_KIND_BOOL:
			/* boolout prints t or f */
			if (text[0] == 't' && text[1] == '\0')
			{
				appendBinaryStringInfo(buf, "true", 4);
				return;
			}
			if (text[0] == 'f' && text[1] == '\0')
			{
				appendBinaryStringInfo(buf, "false", 5);
				return;
			}
			break;

		case EGRESS_KIND_BIT1:
			if (text[0] == '1' && text[1] == '\0')
			{
				appendBinaryStringInfo(buf, "true", 4);
				return;
			}
			if (text[0] == '0' && text[1] == '\0')
			{
				appendBinaryStringInfo(buf, "false", 5);
				return;
			}
			break;

		case EGRESS_KIND_DATE:
		case EGRESS_KIND_TIMESTAMP:
		case EGRESS_KIND_TIMESTAMPTZ:
		case EGRESS_KIND_TIME:
			if (append_datetime_text(buf, col, text))
				return;
			break;

		case EGRESS_KIND_JSON:
		case EGRESS_KIND_JSONB:
			{
				int			start = buf->len;

				/*
				 * json_out returns the stored text and jsonb_out the text of
				 * JsonbToCString, both exactly what egress_column_value
				 * appends before compacting.
				 */
				appendStringInfoString(buf, text);
				compact_json_tail(buf, start);
			}
			return;

		case EGRESS_KIND_BYTEA:
			{
				size_t		len = strlen(text);

				/* byteaout's hex format: \x and lower-case hex digits */
				if (len >= 2 && text[0] == '\\' && text[1] == 'x' &&
					strspn(text + 2, "0123456789abcdef") == len - 2)
				{
					appendBinaryStringInfo(buf, "\"\\\\", 3);
					appendBinaryStringInfo(buf, text + 1, len - 1);
					appendStringInfoChar(buf, '"');
					return;
				}
			}
			break;

		case EGRESS_KIND_TIMETZ:
		case EGRESS_KIND_INTERVAL:
		case EGRESS_KIND_HSTORE:
		case EGRESS_KIND_ARRAY:
			break;
	}

	/* the rest: back to a Datum, with the column's typmod */
	Assert(col->has_infunc);
	value = InputFunctionCall(&col->infunc, unconstify(char *, text),
							  col->typioparam, col->basetypmod);
	egress_column_value(buf, col, value, false);
	if (!col->typbyval)
		pfree(DatumGetPointer(value));
}

/*
 * is_special_number
 *		Whether a numeric or float output text is NaN or an infinity.
 */
static bool
is_special_number(const char *text)
{
	return text[0] == 'N' || text[0] == 'I' ||
		(text[0] == '-' && text[1] == 'I');
}

/*
 * scan_time_text
 *		Match "HH:MM:SS" with an optional fraction of 1-6 digits that are not
 *		all zeros (as time_out and timestamp_out print it) at the start of
 *		text.  Returns the length matched, or -1; *fraclen is the number of
 *		fraction digits.
 */
static int
scan_time_text(const char *text, int *fraclen)
{
	int			i;
	bool		nonzero = false;

	for (i = 0; i < 8; i++)
	{
		if (i == 2 || i == 5)
		{
			if (text[i] != ':')
				return -1;
		}
		else if (!isdigit((unsigned char) text[i]))
			return -1;
	}
	*fraclen = 0;
	if (text[8] != '.')
		return 8;
	for (i = 9; isdigit((unsigned char) text[i]); i++)
	{
		if (text[i] != '0')
			nonzero = true;
	}
	*fraclen = i - 9;
	if (*fraclen < 1 || *fraclen > 6 || !nonzero)
		return -1;
	return i;
}

/*
 * append_fraction6
 *		Append "." and the fraction digits padded to six with zeros, as
 *		egress_column_value prints microseconds.
 */
static void
append_fraction6(StringInfo buf, const char *frac, int fraclen)
{
	char		out[7];

	out[0] = '.';
	memcpy(out + 1, frac, fraclen);
	memset(out + 1 + fraclen, '0', 6 - fraclen);
	appendBinaryStringInfo(buf, out, 7);
}

/*
 * append_datetime_text
 *		The fast path for the ISO output of date ("YYYY-MM-DD"), timestamp
 *		("YYYY-MM-DD HH:MM:SS[.f]"), timestamptz (the same with "+00", for
 *		TimeZone UTC) and time ("HH:MM:SS[.f]").  A four-digit year without
 *		BC is inside the range egress_column_value prints as it is.  Returns
 *		false, having appended nothing, for any other text.
 */
static bool
append_datetime_text(StringInfo buf, EgressColumn *col, const char *text)
{
	int			fraclen;
	int			timelen;
	int			i;

	if (col->kind == EGRESS_KIND_TIME)
	{
		timelen = scan_time_text(text, &fraclen);
		if (timelen < 0 || text[timelen] != '\0')
			return false;
		appendStringInfoChar(buf, '"');
		/* 24:00:00 (time's only hour 24) as 00:00:00: see append_time */
		if (text[0] == '2' && text[1] == '4')
			appendBinaryStringInfo(buf, "00", 2);
		else
			appendBinaryStringInfo(buf, text, 2);
		appendBinaryStringInfo(buf, text + 2, 6);
		if (fraclen > 0)
			append_fraction6(buf, text + 9, fraclen);
		appendStringInfoChar(buf, '"');
		return true;
	}

	/* YYYY-MM-DD, year 0001-9999 */
	for (i = 0; i < 10; i++)
	{
		if (i == 4 || i == 7)
		{
			if (text[i] != '-')
				return false;
		}
		else if (!isdigit((unsigned char) text[i]))
			return false;
	}
	if (memcmp(text, "0000", 4) == 0)
		return false;

	if (col->kind == EGRESS_KIND_DATE)
	{
		if (text[10] != '\0')
			return false;
		appendStringInfoChar(buf, '"');
		appendBinaryStringInfo(buf, text, 10);
		appendBinaryStringInfo(buf, "T00:00:00" EGRESS_UTC_SUFFIX "\"", 16);
		return true;
	}

	if (text[10] != ' ')
		return false;
	timelen = scan_time_text(text + 11, &fraclen);
	if (timelen < 0)
		return false;
	if (col->kind == EGRESS_KIND_TIMESTAMPTZ)
	{
		if (strcmp(text + 11 + timelen, "+00") != 0)
			return false;
	}
	else if (text[11 + timelen] != '\0')
		return false;

	appendStringInfoChar(buf, '"');
	appendBinaryStringInfo(buf, text, 10);
	appendStringInfoChar(buf, 'T');
	appendBinaryStringInfo(buf, text + 11, 8);
	if (fraclen > 0)
		append_fraction6(buf, text + 20, fraclen);
	appendBinaryStringInfo(buf, EGRESS_UTC_SUFFIX "\"", 7);
	return true;
}

/*
 * egress_append_time_extracted
 *		Append "YYYY-MM-DDTHH:MI:SS.ffffffZ" for a time_extracted field.
 */
void
egress_append_time_extracted(StringInfo buf, TimestampTz ts)
{
	append_timestamp(buf, ts, true, "Z");
}


/*
 * put_digits
 *		Write value (>= 0) as exactly ndigits decimal digits, zero padded.
 */
static char *
put_digits(char *p, int value, int ndigits)
{
	int			i;

	for (i = ndigits - 1; i >= 0; i--)
	{
		p[i] = '0' + value % 10;
		value /= 10;
	}
	return p + ndigits;
}

/*
 * append_timestamp
 *		Append a quoted "YYYY-MM-DDTHH:MI:SS[.ffffff]<suffix>" for ts taken
 *		as UTC.  The fraction is printed (always six digits) when non-zero,
 *		or always when always_fraction is set.
 */
static void
append_timestamp(StringInfo buf, Timestamp ts, bool always_fraction,
				 const char *suffix)
{
	char		out[64];
	char	   *p = out;
	int64		days;
	int64		usecs;
	int			year;
	int			month;
	int			day;
	int			secs;

	*p++ = '"';
	if (TIMESTAMP_IS_NOBEGIN(ts) || ts < EGRESS_TS_MIN)
	{
		memcpy(p, EGRESS_TS_MIN_TEXT, strlen(EGRESS_TS_MIN_TEXT));
		p += strlen(EGRESS_TS_MIN_TEXT);
	}
	else if (TIMESTAMP_IS_NOEND(ts) || ts >= EGRESS_TS_END)
	{
		memcpy(p, EGRESS_TS_MAX_TEXT, strlen(EGRESS_TS_MAX_TEXT));
		p += strlen(EGRESS_TS_MAX_TEXT);
	}
	else
	{
		/* floor division: ts is negative before 2000-01-01 */
		days = ts / USECS_PER_DAY;
		usecs = ts - days * USECS_PER_DAY;
		if (usecs < 0)
		{
			days--;
			usecs += USECS_PER_DAY;
		}
		j2date((int) days + POSTGRES_EPOCH_JDATE, &year, &month, &day);

		p = put_digits(p, year, 4);
		*p++ = '-';
		p = put_digits(p, month, 2);
		*p++ = '-';
		p = put_digits(p, day, 2);
		*p++ = 'T';
		secs = (int) (usecs / USECS_PER_SEC);
		p = put_digits(p, secs / 3600, 2);
		*p++ = ':';
		p = put_digits(p, (secs / 60) % 60, 2);
		*p++ = ':';
		p = put_digits(p, secs % 60, 2);
		usecs %= USECS_PER_SEC;
		if (usecs != 0 || always_fraction)
		{
			*p++ = '.';
			p = put_digits(p, (int) usecs, 6);
		}
	}
	appendBinaryStringInfo(buf, out, p - out);
	appendStringInfoString(buf, suffix);
	appendStringInfoChar(buf, '"');
}

/*
 * append_date
 *		Append a date as a quoted midnight-UTC timestamp.
 */
static void
append_date(StringInfo buf, DateADT date)
{
	char		out[32];
	char	   *p = out;
	int			year;
	int			month;
	int			day;

	if (DATE_IS_NOBEGIN(date) || date < EGRESS_DATE_MIN)
	{
		appendStringInfoString(buf, "\"" EGRESS_TS_MIN_TEXT EGRESS_UTC_SUFFIX "\"");
		return;
	}
	if (DATE_IS_NOEND(date) || date >= EGRESS_DATE_END)
	{
		appendStringInfoString(buf, "\"" EGRESS_TS_MAX_TEXT EGRESS_UTC_SUFFIX "\"");
		return;
	}

	j2date(date + POSTGRES_EPOCH_JDATE, &year, &month, &day);
	*p++ = '"';
	p = put_digits(p, year, 4);
	*p++ = '-';
	p = put_digits(p, month, 2);
	*p++ = '-';
	p = put_digits(p, day, 2);
	memcpy(p, "T00:00:00" EGRESS_UTC_SUFFIX "\"", 16);
	p += 16;
	appendBinaryStringInfo(buf, out, p - out);
}

/*
 * append_time
 *		Append (unquoted) "HH:MI:SS[.ffffff]" for 0 <= time <= 24:00:00.
 *		24:00:00 is written 00:00:00, as the tap does: RFC 3339 (and
 *		strict "format": "time" validators) know no hour 24.
 */
static void
append_time(StringInfo buf, TimeADT time)
{
	char		out[16];
	char	   *p = out;
	int			secs;
	int			usecs;

	if (time >= USECS_PER_DAY)
		time = 0;
	secs = (int) (time / USECS_PER_SEC);
	usecs = (int) (time % USECS_PER_SEC);

	p = put_digits(p, secs / 3600, 2);
	*p++ = ':';
	p = put_digits(p, (secs / 60) % 60, 2);
	*p++ = ':';
	p = put_digits(p, secs % 60, 2);
	if (usecs != 0)
	{
		*p++ = '.';
		p = put_digits(p, usecs, 6);
	}
	appendBinaryStringInfo(buf, out, p - out);
}

/*
 * append_interval
 *		Append (unquoted) an ISO 8601 duration, the same text PostgreSQL
 *		prints with IntervalStyle iso_8601: every field keeps its own sign
 *		("P-1Y-2M", "P1DT-1H"), zero fields are left out, zero is "PT0S",
 *		and fractional seconds lose their trailing zeros.
 */
static void
append_interval(StringInfo buf, const Interval *span)
{
	char		num[MAXINT8LEN + 1];
	int32		years = span->month / MONTHS_PER_YEAR;
	int32		months = span->month % MONTHS_PER_YEAR;
	int32		days = span->day;
	int64		time = span->time;
	int64		hours;
	int64		minutes;
	int64		secs;
	int64		usecs;
	int			len;

	hours = time / USECS_PER_HOUR;
	time -= hours * USECS_PER_HOUR;
	minutes = time / USECS_PER_MINUTE;
	time -= minutes * USECS_PER_MINUTE;
	secs = time / USECS_PER_SEC;
	usecs = time - secs * USECS_PER_SEC;

	if (years == 0 && months == 0 && days == 0 && span->time == 0)
	{
		appendBinaryStringInfo(buf, "PT0S", 4);
		return;
	}

	appendStringInfoChar(buf, 'P');
	if (years != 0)
	{
		len = pg_ltoa(years, num);
		appendBinaryStringInfo(buf, num, len);
		appendStringInfoChar(buf, 'Y');
	}
	if (months != 0)
	{
		len = pg_ltoa(months, num);
		appendBinaryStringInfo(buf, num, len);
		appendStringInfoChar(buf, 'M');
	}
	if (days != 0)
	{
		len = pg_ltoa(days, num);
		appendBinaryStringInfo(buf, num, len);
		appendStringInfoChar(buf, 'D');
	}
	if (span->time == 0)
		return;

	appendStringInfoChar(buf, 'T');
	if (hours != 0)
	{
		len = pg_lltoa(hours, num);
		appendBinaryStringInfo(buf, num, len);
		appendStringInfoChar(buf, 'H');
	}
	if (minutes != 0)
	{
		len = pg_lltoa(minutes, num);
		appendBinaryStringInfo(buf, num, len);
		appendStringInfoChar(buf, 'M');
	}
	if (secs != 0 || usecs != 0)
	{
		/* one sign for seconds and fraction: -0.5 must keep its minus */
		if (secs < 0 || usecs < 0)
		{
			appendStringInfoChar(buf, '-');
			secs = -secs;
			usecs = -usecs;
		}
		len = pg_lltoa(secs, num);
		appendBinaryStringInfo(buf, num, len);
		if (usecs != 0)
		{
			char		frac[7];
			int			flen = 6;

			put_digits(frac, (int) usecs, 6);
			while (frac[flen - 1] == '0')
				flen--;
			appendStringInfoChar(buf, '.');
			appendBinaryStringInfo(buf, frac, flen);
		}
		appendStringInfoChar(buf, 'S');
	}
}

/*
 * append_bytea
 *		Append bytea as the JSON string "\\x<lower-case hex>", whatever
 *		bytea_output says.
 */
static void
append_bytea(StringInfo buf, Datum value)
{
	static const char hex[] = "0123456789abcdef";
	bytea	   *b = DatumGetByteaPP(value);
	const unsigned char *data = (const unsigned char *) VARDATA_ANY(b);
	int			len = VARSIZE_ANY_EXHDR(b);
	char	   *p;
	int			i;

	/* quote, two-character escaped backslash, x, hex, quote */
	enlargeStringInfo(buf, 2 * len + 5);
	p = buf->data + buf->len;
	*p++ = '"';
	*p++ = '\\';
	*p++ = '\\';
	*p++ = 'x';
	for (i = 0; i < len; i++)
	{
		*p++ = hex[data[i] >> 4];
		*p++ = hex[data[i] & 0x0f];
	}
	*p++ = '"';
	*p = '\0';
	buf->len = p - buf->data;
}

/*
 * append_array
 *		Append an array as nested JSON arrays, one level per dimension.
 */
static void
append_array(StringInfo buf, EgressColumn *col, Datum value)
{
	AnyArrayType *arr = DatumGetAnyArrayP(value);
	int			ndim = AARR_NDIM(arr);
	int		   *dims = AARR_DIMS(arr);
	int			idx[MAXDIM];
	int			nitems;
	array_iter	iter;
	int			i;
	int			d;

	nitems = ArrayGetNItems(ndim, dims);
	if (nitems == 0)
	{
		appendBinaryStringInfo(buf, "[]", 2);
		return;
	}

	for (d = 0; d < ndim; d++)
	{
		idx[d] = 0;
		appendStringInfoChar(buf, '[');
	}

	array_iter_setup(&iter, arr);
	for (i = 0; i < nitems; i++)
	{
		Datum		elem;
		bool		isnull;
		int			closed = 0;

		elem = array_iter_next(&iter, &isnull, i, col->elmlen,
							   col->elmbyval, col->elmalign);
		egress_column_value(buf, col->elem, elem, isnull);

		/* close every dimension this element completes, reopen the rest */
		for (d = ndim - 1; d >= 0 && ++idx[d] == dims[d]; d--)
		{
			idx[d] = 0;
			appendStringInfoChar(buf, ']');
			closed++;
		}
		if (d >= 0)
		{
			appendStringInfoChar(buf, ',');
			while (closed-- > 0)
				appendStringInfoChar(buf, '[');
		}
	}
}

/*
 * compact_json_tail
 *		Remove the whitespace between tokens of the valid JSON text that
 *		starts at buf->data[start] and runs to the end of buf.
 *
 * Whitespace inside strings is kept; strings cannot contain raw control
 * characters, so the result is one line.  Works in place since it never
 * grows the text.
 */
static void
compact_json_tail(StringInfo buf, int start)
{
	char	   *src = buf->data + start;
	char	   *end = buf->data + buf->len;
	char	   *dst = src;
	bool		in_string = false;

	while (src < end)
	{
		char		c = *src++;

		if (in_string)
		{
			*dst++ = c;
			if (c == '\\' && src < end)
				*dst++ = *src++;
			else if (c == '"')
				in_string = false;
		}
		else if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
			continue;
		else
		{
			*dst++ = c;
			if (c == '"')
				in_string = true;
		}
	}
	*dst = '\0';
	buf->len = dst - buf->data;
}
