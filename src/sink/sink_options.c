/*-------------------------------------------------------------------------
 * sink_options.c
 *	  Parses a destination's options once, for validation and for use.
 *
 * One table says which keys exist, for which kinds, and what values they
 * take; one function walks the JSON object, checks each key against the
 * table and stores its value in EgressSinkOptions.  The sinks read the
 * struct, egress_add_destination (through the kind's validate operation)
 * relies on the errors.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "lib/stringinfo.h"
#include "replication/slot.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"
#include "utils/numeric.h"

#include "pg_egress.h"
#include "sink/sink_options.h"

typedef enum SinkOptionType
{
	SOPT_POSITIVE_INT,
	SOPT_BOOL,
	SOPT_SLOT_NAME,
	SOPT_STRING,
	SOPT_CHOICE,
	SOPT_DURATION,
	SOPT_HEADERS,
	SOPT_GZIP_LEVEL,
	SOPT_SECRET,				/* a non-empty string never shown */
	SOPT_SSLMODE,				/* one of libpq's sslmode values */
	SOPT_SCHEMA_NAME,			/* a name a target schema can have */
	SOPT_SCHEMA_MAPPING,		/* {"<source schema>": {"target_schema": ...}} */
	SOPT_ROLE_LIST,				/* an array of role names, or one */
	SOPT_PARALLELISM			/* 1 .. EGRESS_PG_MAX_PARALLELISM */
} SinkOptionType;

typedef struct SinkOptionSpec
{
	const char *name;
	SinkOptionType type;
	const char *kind;			/* the one kind it applies to; NULL: every kind */
	size_t		offset;			/* of the field in EgressSinkOptions */
	const char *choices[2];		/* SOPT_CHOICE */
} SinkOptionSpec;

#define SOPT_ALL	NULL

#define FIELD(f) offsetof(EgressSinkOptions, f)

/*
 * In the order the hint for an unknown key lists them.  A new kind's
 * options: a field in EgressSinkOptions (and its default in
 * egress_sink_options_parse), a line here naming the kind.
 */
static const SinkOptionSpec sink_options[] = {
	{"slot_name", SOPT_SLOT_NAME, SOPT_ALL, FIELD(slot_name)},
	{"drop_adopted_slot", SOPT_BOOL, SOPT_ALL, FIELD(drop_adopted_slot)},
	{"batch_max_rows", SOPT_POSITIVE_INT, SOPT_ALL, FIELD(batch_max_rows)},
	{"batch_max_bytes", SOPT_POSITIVE_INT, SOPT_ALL, FIELD(batch_max_bytes)},
	{"flush_interval", SOPT_DURATION, SOPT_ALL, FIELD(flush_interval_ms)},
	{"error_retry_interval", SOPT_DURATION, SOPT_ALL, FIELD(error_retry_interval_ms)},
	{"decoder", SOPT_CHOICE, SOPT_ALL, FIELD(decoder), {"pgoutput", "wal2json"}},
	{"headers", SOPT_HEADERS, "http", FIELD(headers)},
	{"gzip", SOPT_BOOL, "http", FIELD(gzip)},
	{"gzip_level", SOPT_GZIP_LEVEL, "http", FIELD(gzip_level)},
	{"timeout", SOPT_DURATION, "http", FIELD(timeout_ms)},
	{"connect_timeout", SOPT_DURATION, "http", FIELD(connect_timeout_ms)},
	{"retry_initial_interval", SOPT_DURATION, "http", FIELD(retry_initial_ms)},
	{"retry_max_interval", SOPT_DURATION, "http", FIELD(retry_max_ms)},
	{"ca_file", SOPT_STRING, "http", FIELD(ca_file)},
	{"verify", SOPT_BOOL, "http", FIELD(verify)},
	{"stream", SOPT_BOOL, "http", FIELD(stream)},
	{"file_mode", SOPT_STRING, "file", FIELD(file_mode)},
	{"region", SOPT_STRING, "kinesis", FIELD(region)},
	{"format", SOPT_CHOICE, "kinesis", FIELD(format), {"singer", "pg_kinesis"}},
	{"partition_key", SOPT_STRING, "kinesis", FIELD(partition_key)},
	{"max_inflight", SOPT_POSITIVE_INT, "kinesis", FIELD(max_inflight)},
	{"password", SOPT_SECRET, "postgres", FIELD(password)},
	{"sslmode", SOPT_SSLMODE, "postgres", FIELD(sslmode)},
	{"sslrootcert", SOPT_STRING, "postgres", FIELD(sslrootcert)},
	{"sslcert", SOPT_STRING, "postgres", FIELD(sslcert)},
	{"sslkey", SOPT_STRING, "postgres", FIELD(sslkey)},
	{"connect_timeout", SOPT_DURATION, "postgres", FIELD(connect_timeout_ms)},
	{"timeout", SOPT_DURATION, "postgres", FIELD(statement_timeout_ms)},
	{"default_target_schema", SOPT_SCHEMA_NAME, "postgres", FIELD(default_target_schema)},
	{"schema_mapping", SOPT_SCHEMA_MAPPING, "postgres", FIELD(schema_mapping)},
	{"hard_delete", SOPT_BOOL, "postgres", FIELD(hard_delete)},
	{"add_metadata_columns", SOPT_BOOL, "postgres", FIELD(add_metadata_columns)},
	{"primary_key_required", SOPT_BOOL, "postgres", FIELD(primary_key_required)},
	{"batch_size_rows", SOPT_POSITIVE_INT, "postgres", FIELD(batch_max_rows)},
	{"parallelism", SOPT_PARALLELISM, "postgres", FIELD(parallelism)},
	{"validate_records", SOPT_BOOL, "postgres", FIELD(validate_records)},
	{"target_schema_privileges", SOPT_ROLE_LIST, "postgres", FIELD(target_schema_privileges)},
};

/* libpq's sslmode values */
static const char *const sslmodes[] = {
	"disable", "allow", "prefer", "require", "verify-ca", "verify-full"
};

#define WHAT "destination"

/*
 * egress_parse_interval
 *		s as an SQL interval ("30s", "1 second", "5 minutes", "00:01:30",
 *		"PT30S", and a bare number, which SQL reads as seconds), without
 *		raising an error: false when it is not one.  The grammar of the
 *		interval type, so that every duration option reads exactly as the
 *		database worker reads it in SQL (::interval).
 */
bool
egress_parse_interval(const char *s, Interval *result)
{
	struct pg_itm_in itm;
	char	   *field[MAXDATEFIELDS];
	int			ftype[MAXDATEFIELDS];
	char		workbuf[256];
	int			nf;
	int			dtype;
	int			dterr;

	memset(&itm, 0, sizeof(itm));
	dterr = ParseDateTime(s, workbuf, sizeof(workbuf), field, ftype,
						  MAXDATEFIELDS, &nf);
	if (dterr == 0)
		dterr = DecodeInterval(field, ftype, nf, INTERVAL_FULL_RANGE, &dtype, &itm);
	if (dterr == DTERR_BAD_FORMAT)
		dterr = DecodeISO8601Interval(unconstify(char *, s), &dtype, &itm);
	if (dterr != 0 || dtype != DTK_DELTA)
		return false;
	if (itmin2interval(&itm, result) != 0)
		return false;

	/*
	 * No part below zero: "1 mon -29 days" is a day here (a month counted
	 * as 30 days), but less than nothing when added to a date in February,
	 * as SQL adds it (the database worker's next run, retry after an error).
	 */
	return result->month >= 0 && result->day >= 0 && result->time >= 0;
}

/* An interval in milliseconds (a month is 30 days), or -1 outside 0 .. INT_MAX. */
static long
interval_ms(const Interval *iv)
{
	double		ms = (double) iv->time / 1000.0 +
		((double) iv->day + (double) iv->month * DAYS_PER_MONTH) * (double) SECS_PER_DAY * 1000.0;

	if (ms < 0 || ms > (double) INT_MAX)
		return -1;
	return (long) ms;
}

long
egress_parse_duration_ms(const char *s)
{
	Interval	iv;

	if (!egress_parse_interval(s, &iv))
		return -1;
	return interval_ms(&iv);
}

/*
 * A duration option's value: a JSON number of seconds or a string
 * egress_parse_duration_ms() reads.  -1 when it is neither (or too long).
 */
static long
duration_value_ms(JsonbValue *v)
{
	if (v->type == jbvString)
		return egress_parse_duration_ms(pnstrdup(v->val.string.val, v->val.string.len));
	if (v->type == jbvNumeric)
	{
		/* 1e400 is too long, not an error of type double precision */
		double		secs = DatumGetFloat8(DirectFunctionCall1(numeric_float8_no_overflow,
															  NumericGetDatum(v->val.numeric)));

		if (secs >= 0 && secs * 1000.0 <= (double) INT_MAX)
			return (long) (secs * 1000.0);
	}
	return -1;
}

long
egress_duration_option_ms(Jsonb *options, const char *key)
{
	JsonbValue	k;
	JsonbValue *v;

	if (options == NULL || !JB_ROOT_IS_OBJECT(options) || JB_ROOT_IS_SCALAR(options))
		return -1;
	k.type = jbvString;
	k.val.string.val = unconstify(char *, key);
	k.val.string.len = strlen(key);
	v = findJsonbValueFromContainer(&options->root, JB_FOBJECT, &k);
	return v == NULL ? -1 : duration_value_ms(v);
}

static bool
applies(const SinkOptionSpec *spec, const char *kind)
{
	return spec->kind == NULL || strcmp(spec->kind, kind) == 0;
}

static const char *
option_names(const char *kind)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < lengthof(sink_options); i++)
		if (applies(&sink_options[i], kind))
			appendStringInfo(&buf, "%s%s", buf.len > 0 ? ", " : "",
							 sink_options[i].name);
	return buf.data;
}

/*
 * The "headers" option: an object of header names to string values.  The
 * values are secrets (tokens): no message shows them.
 */
static List *
parse_headers(JsonbValue *obj, const char *key)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	List	   *result = NIL;
	char	   *name = NULL;

	if (obj->type != jbvBinary || !JsonContainerIsObject(obj->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s option \"%s\" must be a JSON object of header names and string values",
						WHAT, key)));
	it = JsonbIteratorInit(obj->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			bool		ok = v.val.string.len > 0;

			name = pnstrdup(v.val.string.val, v.val.string.len);
			/* an RFC 9110 token */
			for (int i = 0; ok && name[i]; i++)
				ok = isalnum((unsigned char) name[i]) || strchr("!#$%&'*+-.^_`|~", name[i]) != NULL;
			if (!ok)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid HTTP header name \"%s\" in %s option \"%s\"",
								name, WHAT, key)));
			if (pg_strcasecmp(name, "Content-Type") == 0 ||
				pg_strcasecmp(name, "Content-Encoding") == 0 ||
				pg_strcasecmp(name, "Content-Length") == 0 ||
				pg_strcasecmp(name, "Transfer-Encoding") == 0 ||
				pg_strcasecmp(name, "Host") == 0 ||
				pg_strncasecmp(name, "X-Egress-", 9) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("HTTP header \"%s\" cannot be set in %s option \"%s\"",
								name, WHAT, key),
						 errdetail("pg_egress sets this header itself.")));
		}
		else if (tok == WJB_VALUE)
		{
			EgressSinkHeader *h;
			bool		ok = true;

			if (v.type != jbvString)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("values of %s option \"%s\" must be strings", WHAT, key)));
			/* no line breaks or other control characters; never shown */
			for (int i = 0; ok && i < v.val.string.len; i++)
			{
				unsigned char c = v.val.string.val[i];

				ok = c >= 0x20 && c != 0x7f;
			}
			if (!ok)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("values of %s option \"%s\" must not contain control characters",
								WHAT, key)));
			h = palloc(sizeof(EgressSinkHeader));
			h->name = name;
			h->value = pnstrdup(v.val.string.val, v.val.string.len);
			result = lappend(result, h);
		}
	}
	return result;
}

static char *
numeric_text(JsonbValue *v)
{
	return DatumGetCString(DirectFunctionCall1(numeric_out,
											   NumericGetDatum(v->val.numeric)));
}

/*
 * A schema name of the target: what CREATE SCHEMA accepts there (not
 * empty, shorter than NAMEDATALEN so that the target does not truncate it
 * to another name, not a reserved pg_ name).  what: how messages name it.
 */
static char *
schema_name_value(JsonbValue *v, const char *key, const char *what)
{
	char	   *name;

	if (v->type != jbvString || v->val.string.len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s in %s option \"%s\" must be a non-empty string", what, WHAT, key)));
	name = pnstrdup(v->val.string.val, v->val.string.len);
	if (strlen(name) != v->val.string.len)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s in %s option \"%s\" must not contain a zero byte", what, WHAT, key)));
	if (strlen(name) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("%s in %s option \"%s\" is too long", what, WHAT, key),
				 errdetail("Names are at most %d bytes long.", NAMEDATALEN - 1)));
	if (strncmp(name, "pg_", 3) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_RESERVED_NAME),
				 errmsg("%s in %s option \"%s\" cannot be \"%s\"", what, WHAT, key, name),
				 errdetail("The prefix \"pg_\" is reserved for system schemas.")));
	return name;
}

/*
 * "schema_mapping": {"<source schema>": {"target_schema": "<schema>"}} as
 * pipelinewise-target-postgres takes it, or {"<source schema>": "<schema>"}.
 */
static List *
parse_schema_mapping(JsonbValue *obj, const char *key)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	List	   *result = NIL;
	char	   *source = NULL;

	if (obj->type != jbvBinary || !JsonContainerIsObject(obj->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s option \"%s\" must be a JSON object", WHAT, key),
				 errhint("Write it as {\"<source schema>\": {\"target_schema\": \"<schema>\"}}.")));
	it = JsonbIteratorInit(obj->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		EgressSchemaMapping *m;
		JsonbValue *target = NULL;

		if (tok == WJB_KEY)
		{
			if (v.val.string.len == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("source schema names in %s option \"%s\" must not be empty", WHAT, key)));
			source = pnstrdup(v.val.string.val, v.val.string.len);
			continue;
		}
		if (tok != WJB_VALUE)
			continue;
		if (v.type == jbvString)
			target = &v;
		else if (v.type == jbvBinary && JsonContainerIsObject(v.val.binary.data))
		{
			JsonbIterator *it2 = JsonbIteratorInit(v.val.binary.data);
			JsonbValue	v2;
			JsonbIteratorToken tok2;
			char	   *k2 = NULL;

			while ((tok2 = JsonbIteratorNext(&it2, &v2, true)) != WJB_DONE)
			{
				if (tok2 == WJB_KEY)
				{
					k2 = pnstrdup(v2.val.string.val, v2.val.string.len);
					if (strcmp(k2, "target_schema") != 0)
						ereport(ERROR,
								(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
								 errmsg("unrecognized key \"%s\" in %s option \"%s\"", k2, WHAT, key),
								 errhint("Each source schema maps to {\"target_schema\": \"<schema>\"}.")));
				}
				else if (tok2 == WJB_VALUE)
				{
					target = palloc(sizeof(JsonbValue));
					*target = v2;
				}
			}
		}
		if (target == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s option \"%s\" maps schema \"%s\" to no target schema", WHAT, key, source),
					 errhint("Write it as {\"<source schema>\": {\"target_schema\": \"<schema>\"}}.")));
		m = palloc(sizeof(EgressSchemaMapping));
		m->source_schema = source;
		m->target_schema = schema_name_value(target, key, "target schema names");
		result = lappend(result, m);
	}
	return result;
}

/* one role name of "target_schema_privileges" */
static char *
role_name_value(JsonbValue *v, const char *key)
{
	char	   *name;

	if (v->type != jbvString || v->val.string.len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s option \"%s\" must be a role name or an array of role names", WHAT, key)));
	name = pnstrdup(v->val.string.val, v->val.string.len);
	if (strlen(name) != v->val.string.len || strlen(name) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("role names in %s option \"%s\" must be shorter than %d bytes and contain no zero byte",
						WHAT, key, NAMEDATALEN)));
	return name;
}

/* "target_schema_privileges": ["role", ...] or "role" */
static List *
parse_role_list(JsonbValue *v, const char *key)
{
	JsonbIterator *it;
	JsonbValue	e;
	JsonbIteratorToken tok;
	List	   *result = NIL;

	if (v->type == jbvString)
		return list_make1(role_name_value(v, key));
	if (v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s option \"%s\" must be a role name or an array of role names", WHAT, key)));
	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &e, true)) != WJB_DONE)
		if (tok == WJB_ELEM)
			result = lappend(result, role_name_value(&e, key));
	return result;
}

/* One value: checked, then stored in its field. */
static void
parse_value(const SinkOptionSpec *spec, const char *key, JsonbValue *v,
			EgressSinkOptions *out)
{
	char	   *field = (char *) out + spec->offset;

	switch (spec->type)
	{
		case SOPT_BOOL:
			if (v->type != jbvBool)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s option \"%s\" must be true or false", WHAT, key)));
			*(bool *) field = v->val.boolean;
			break;
		case SOPT_CHOICE:
			{
				bool		ok = false;

				for (int c = 0; c < lengthof(spec->choices) && v->type == jbvString; c++)
					if (v->val.string.len == strlen(spec->choices[c]) &&
						strncmp(v->val.string.val, spec->choices[c], v->val.string.len) == 0)
						ok = true;
				if (!ok)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("%s option \"%s\" must be \"%s\" or \"%s\"", WHAT, key,
									spec->choices[0], spec->choices[1])));
				*(char **) field = pnstrdup(v->val.string.val, v->val.string.len);
			}
			break;
		case SOPT_SLOT_NAME:
			{
				char	   *name;

				if (v->type != jbvString)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("%s option \"%s\" must be a string", WHAT, key)));
				name = pnstrdup(v->val.string.val, v->val.string.len);
				(void) ReplicationSlotValidateName(name, ERROR);
				*(char **) field = name;
			}
			break;
		case SOPT_STRING:
			if (v->type != jbvString || v->val.string.len == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s option \"%s\" must be a non-empty string", WHAT, key)));
			*(char **) field = pnstrdup(v->val.string.val, v->val.string.len);
			break;
		case SOPT_DURATION:
			{
				long		ms = duration_value_ms(v);

				if (ms <= 0)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("%s option \"%s\" must be a positive interval of at most 24 days", WHAT, key),
							 errhint("Give a number of seconds or an interval, such as 30, \"30s\", \"1 second\", \"500ms\" or \"5 minutes\".")));
				*(long *) field = ms;
			}
			break;
		case SOPT_GZIP_LEVEL:
			{
				char	   *txt = v->type == jbvNumeric ? numeric_text(v) : "";

				if (strlen(txt) != 1 || txt[0] < '1' || txt[0] > '9')
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("%s option \"%s\" must be an integer from 1 to 9", WHAT, key)));
				*(int *) field = txt[0] - '0';
			}
			break;
		case SOPT_HEADERS:
			*(List **) field = parse_headers(v, key);
			break;
		case SOPT_SECRET:
			/* the value is never shown, not even its length */
			if (v->type != jbvString || v->val.string.len == 0 ||
				memchr(v->val.string.val, '\0', v->val.string.len) != NULL)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s option \"%s\" must be a non-empty string", WHAT, key)));
			*(char **) field = pnstrdup(v->val.string.val, v->val.string.len);
			break;
		case SOPT_SSLMODE:
			{
				bool		ok = false;

				for (int c = 0; c < lengthof(sslmodes) && v->type == jbvString; c++)
					if (v->val.string.len == strlen(sslmodes[c]) &&
						strncmp(v->val.string.val, sslmodes[c], v->val.string.len) == 0)
						ok = true;
				if (!ok)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("%s option \"%s\" must be one of \"disable\", \"allow\", \"prefer\", \"require\", \"verify-ca\" or \"verify-full\"",
									WHAT, key)));
				*(char **) field = pnstrdup(v->val.string.val, v->val.string.len);
			}
			break;
		case SOPT_SCHEMA_NAME:
			*(char **) field = schema_name_value(v, key, "the schema name");
			break;
		case SOPT_SCHEMA_MAPPING:
			*(List **) field = parse_schema_mapping(v, key);
			break;
		case SOPT_ROLE_LIST:
			*(List **) field = parse_role_list(v, key);
			break;
		case SOPT_PARALLELISM:
			{
				char	   *txt = v->type == jbvNumeric ? numeric_text(v) : "";
				int			n = 0;

				if (strlen(txt) >= 1 && strlen(txt) <= 2 &&
					strspn(txt, "0123456789") == strlen(txt))
					n = atoi(txt);
				if (n < 1 || n > EGRESS_PG_MAX_PARALLELISM)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("%s option \"%s\" must be an integer from 1 to %d",
									WHAT, key, EGRESS_PG_MAX_PARALLELISM)));
				*(int *) field = n;
			}
			break;
		case SOPT_POSITIVE_INT:
			{
				int64		n = 0;

				if (v->type == jbvNumeric)
				{
					char	   *txt = numeric_text(v);

					/* an integer in 1 .. INT64_MAX */
					if (strspn(txt, "0123456789") == strlen(txt) && strlen(txt) <= 18)
						n = strtoll(txt, NULL, 10);
				}
				if (n <= 0)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("%s option \"%s\" must be a positive integer", WHAT, key)));
				*(int64 *) field = n;
			}
			break;
	}
}

void
egress_sink_options_parse(const char *kind, Jsonb *options, EgressSinkOptions *out)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *key = NULL;
	char	   *batch_rows_key = NULL;

	memset(out, 0, sizeof(EgressSinkOptions));
	out->flush_interval_ms = -1;
	out->error_retry_interval_ms = -1;
	out->gzip_level = 1;
	out->timeout_ms = 30000;
	out->connect_timeout_ms = 10000;
	out->retry_initial_ms = 500;
	out->retry_max_ms = 60000;
	out->verify = true;
	out->stream = true;
	out->format = "singer";
	out->partition_key = "primary_key";
	out->primary_key_required = true;
	out->parallelism = 1;
	/* long enough for any batch's MERGE; short enough that a hung target is noticed */
	out->statement_timeout_ms = 30 * 60 * 1000;

	if (options == NULL)
		return;
	if (!JB_ROOT_IS_OBJECT(options) || JB_ROOT_IS_SCALAR(options))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" must be a JSON object", "options")));

	it = JsonbIteratorInit(&options->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		const SinkOptionSpec *spec = NULL;

		if (tok == WJB_KEY)
		{
			key = pnstrdup(v.val.string.val, v.val.string.len);
			continue;
		}
		if (tok != WJB_VALUE)
			continue;
		for (int i = 0; i < lengthof(sink_options); i++)
			if (strcmp(sink_options[i].name, key) == 0 &&
				applies(&sink_options[i], kind))
				spec = &sink_options[i];
		if (spec == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unrecognized %s option \"%s\"", WHAT, key),
					 errhint("Valid options are: %s.", option_names(kind))));
		if (strcmp(key, "batch_max_rows") == 0 || strcmp(key, "batch_size_rows") == 0)
		{
			if (batch_rows_key != NULL)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s options \"%s\" and \"%s\" cannot both be given", WHAT,
								batch_rows_key, key),
						 errdetail("They are two names of one setting.")));
			batch_rows_key = key;
		}
		parse_value(spec, key, &v, out);
	}

	/* the back-off never waits less than its start */
	out->retry_max_ms = Max(out->retry_max_ms, out->retry_initial_ms);
}
