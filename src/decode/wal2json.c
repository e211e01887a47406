/*-------------------------------------------------------------------------
 * wal2json.c
 *	  Parse the messages of wal2json's format-version 2.
 *
 * A message is one JSON object, for example
 *
 *	{"action":"I","timestamp":"2024-01-15 13:45:30.123456+00",
 *	 "lsn":"0/1A2B3C4","schema":"public","table":"t",
 *	 "columns":[{"name":"id","value":1},{"name":"t","value":"x"}]}
 *
 * B and C carry "lsn" and "nextlsn", U and D an "identity" array like
 * "columns", M "transactional", "prefix" and "content".  The parser is
 * PostgreSQL's own (common/jsonapi.h) driven by semantic actions; keys it
 * does not know are skipped with everything below them, so options that
 * add keys do not break it.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "nodes/makefuncs.h"
#include "nodes/value.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "decode/wal2json.h"

/* how much of a bad message an error shows */
#define EGRESS_WAL2JSON_ERROR_BYTES 200

/* first size of the columns and identity arrays; doubled when full */
#define EGRESS_WAL2JSON_INITIAL_COLUMNS 16

/* the top-level key whose value is being parsed */
typedef enum TopField
{
	TOP_NONE,					/* between keys */
	TOP_OTHER,					/* a key we do not use: skip its value */
	TOP_ACTION,
	TOP_LSN,
	TOP_NEXTLSN,
	TOP_TIMESTAMP,
	TOP_XID,
	TOP_SCHEMA,
	TOP_TABLE,
	TOP_COLUMNS,
	TOP_IDENTITY,
	TOP_TRANSACTIONAL,
	TOP_PREFIX,
	TOP_CONTENT
} TopField;

/* the key of a column object whose value is being parsed */
typedef enum ColumnField
{
	COL_NONE,
	COL_OTHER,					/* "type", "typeoid", ...: skipped */
	COL_NAME,
	COL_VALUE
} ColumnField;

/* a growing array of columns */
typedef struct ColumnArray
{
	EgressChangeColumn *items;
	int			count;
	int			size;
} ColumnArray;

typedef struct ParseState
{
	const char *data;			/* the message, for errors */
	int			len;
	EgressChange *change;
	int			depth;			/* objects and arrays open */
	TopField	top;			/* key at depth 1 */
	ColumnField colfield;		/* key at depth 3 inside columns/identity */
	ColumnArray *array;			/* columns or identity, while inside it */
	EgressChangeColumn *column; /* the column object being parsed */
	bool		has_name;
	bool		has_value;
	bool		has_action;
	bool		reporting;		/* parse_error is reporting */
	ColumnArray columns;
	ColumnArray identity;
} ParseState;

/*
 * The commit timestamp is the same in every message of a transaction, and
 * timestamptz_in is slow: remember the last text parsed.  The text always
 * carries its UTC offset, so the value does not depend on settings.
 */
static char last_ts_text[64];
static int	last_ts_len = -1;
static TimestampTz last_ts_value;

static void parse_error(ParseState *state, const char *reason)
			pg_attribute_noreturn();
static void parse_error_context(void *arg);
static void w2j_object_start(void *arg);
static void w2j_object_end(void *arg);
static void w2j_array_start(void *arg);
static void w2j_array_end(void *arg);
static void w2j_object_field_start(void *arg, char *fname, bool isnull);
static void w2j_scalar(void *arg, char *token, JsonTokenType tokentype);
static void top_scalar(ParseState *state, char *token, JsonTokenType tokentype);
static TimestampTz parse_timestamp(const char *text);
static EgressChangeColumn *column_array_add(ColumnArray *array);


/*
 * parse_error
 *		Report a message we cannot use.  reason is a full sentence.
 */
static void
parse_error(ParseState *state, const char *reason)
{
	int			cut = pg_mbcliplen(state->data, state->len,
								   EGRESS_WAL2JSON_ERROR_BYTES);

	state->reporting = true;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("could not parse wal2json message"),
			 errdetail("%s The message starts with: %.*s%s", reason,
					   cut, state->data, cut < state->len ? "..." : "")));
}

/*
 * parse_error_context
 *		Show the message in errors raised while parsing it elsewhere (an
 *		input function, out of memory).
 */
static void
parse_error_context(void *arg)
{
	ParseState *state = (ParseState *) arg;
	int			cut;

	if (state->reporting)
		return;
	cut = pg_mbcliplen(state->data, state->len, EGRESS_WAL2JSON_ERROR_BYTES);
	errcontext("wal2json message: %.*s%s",
			   cut, state->data, cut < state->len ? "..." : "");
}

/*
 * egress_wal2json_parse
 *		Parse one wal2json format-version 2 message into *change.
 */
void
egress_wal2json_parse(const char *data, int len, EgressChange *change)
{
	ParseState	state;
	JsonSemAction sem;
	JsonLexContext *lex;
	JsonParseErrorType result;
	ErrorContextCallback errcallback;

	memset(change, 0, sizeof(EgressChange));
	change->lsn = InvalidXLogRecPtr;
	change->nextlsn = InvalidXLogRecPtr;
	change->xid = InvalidTransactionId;

	memset(&state, 0, sizeof(ParseState));
	state.data = data;
	state.len = len;
	state.change = change;

	memset(&sem, 0, sizeof(JsonSemAction));
	sem.semstate = &state;
	sem.object_start = w2j_object_start;
	sem.object_end = w2j_object_end;
	sem.array_start = w2j_array_start;
	sem.array_end = w2j_array_end;
	sem.object_field_start = w2j_object_field_start;
	sem.scalar = w2j_scalar;

	errcallback.callback = parse_error_context;
	errcallback.arg = &state;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	/* the lexer does not write to its input */
	lex = makeJsonLexContextCstringLen(unconstify(char *, data), len,
									   GetDatabaseEncoding(), true);
	result = pg_parse_json(lex, &sem);
	if (result != JSON_SUCCESS)
		parse_error(&state, json_errdetail(result, lex));

	/* the lexer's buffer is 1 kB: give it back, batches are large */
	pfree(lex->strval->data);
	pfree(lex->strval);
	pfree(lex);

	if (!state.has_action)
		parse_error(&state, "The message has no \"action\".");
	switch (change->action)
	{
		case EGRESS_CHANGE_INSERT:
		case EGRESS_CHANGE_UPDATE:
		case EGRESS_CHANGE_DELETE:
		case EGRESS_CHANGE_TRUNCATE:
			if (change->table == NULL)
				parse_error(&state, "The change has no \"table\".");
			break;
		default:
			break;
	}

	error_context_stack = errcallback.previous;

	change->ncolumns = state.columns.count;
	change->columns = state.columns.items;
	change->nidentity = state.identity.count;
	change->identity = state.identity.items;
}

static void
w2j_object_start(void *arg)
{
	ParseState *state = (ParseState *) arg;

	state->depth++;
	if (state->depth == 3 && state->array != NULL)
	{
		/* a column object in "columns" or "identity" */
		state->column = column_array_add(state->array);
		state->colfield = COL_NONE;
		state->has_name = false;
		state->has_value = false;
	}
	else if (state->depth == 2 && state->top != TOP_OTHER)
		parse_error(state, "A known key has an object value.");
	else if (state->depth == 4 && state->column != NULL &&
			 state->colfield != COL_OTHER)
		parse_error(state, "A column has a non-scalar name or value.");
}

static void
w2j_object_end(void *arg)
{
	ParseState *state = (ParseState *) arg;

	if (state->depth == 3 && state->column != NULL)
	{
		if (!state->has_name || !state->has_value)
			parse_error(state, "A column has no \"name\" or no \"value\".");
		state->column = NULL;
	}
	else if (state->depth == 2)
		state->top = TOP_NONE;
	state->depth--;
}

static void
w2j_array_start(void *arg)
{
	ParseState *state = (ParseState *) arg;

	state->depth++;
	if (state->depth == 1)
		parse_error(state, "The message is not a JSON object.");
	else if (state->depth == 2)
	{
		if (state->top == TOP_COLUMNS || state->top == TOP_IDENTITY)
		{
			state->array = (state->top == TOP_COLUMNS) ?
				&state->columns : &state->identity;
			/* a repeated key replaces the earlier array */
			state->array->count = 0;
		}
		else if (state->top != TOP_OTHER)
			parse_error(state, "A known key has an array value.");
	}
	else if (state->depth == 3 && state->array != NULL)
		parse_error(state, "An element of \"columns\" or \"identity\" is not an object.");
	else if (state->depth == 4 && state->column != NULL &&
			 state->colfield != COL_OTHER)
		parse_error(state, "A column has a non-scalar name or value.");
}

static void
w2j_array_end(void *arg)
{
	ParseState *state = (ParseState *) arg;

	if (state->depth == 2)
	{
		state->array = NULL;
		state->top = TOP_NONE;
	}
	state->depth--;
}

static void
w2j_object_field_start(void *arg, char *fname, bool isnull)
{
	ParseState *state = (ParseState *) arg;

	if (state->depth == 1)
	{
		TopField	top = TOP_OTHER;

		/* by length first: this runs for every key of every message */
		switch (strlen(fname))
		{
			case 3:
				if (strcmp(fname, "lsn") == 0)
					top = TOP_LSN;
				else if (strcmp(fname, "xid") == 0)
					top = TOP_XID;
				break;
			case 5:
				if (strcmp(fname, "table") == 0)
					top = TOP_TABLE;
				break;
			case 6:
				if (strcmp(fname, "action") == 0)
					top = TOP_ACTION;
				else if (strcmp(fname, "schema") == 0)
					top = TOP_SCHEMA;
				else if (strcmp(fname, "prefix") == 0)
					top = TOP_PREFIX;
				break;
			case 7:
				if (strcmp(fname, "columns") == 0)
					top = TOP_COLUMNS;
				else if (strcmp(fname, "nextlsn") == 0)
					top = TOP_NEXTLSN;
				else if (strcmp(fname, "content") == 0)
					top = TOP_CONTENT;
				break;
			case 8:
				if (strcmp(fname, "identity") == 0)
					top = TOP_IDENTITY;
				break;
			case 9:
				if (strcmp(fname, "timestamp") == 0)
					top = TOP_TIMESTAMP;
				break;
			case 13:
				if (strcmp(fname, "transactional") == 0)
					top = TOP_TRANSACTIONAL;
				break;
		}
		state->top = top;
	}
	else if (state->depth == 3 && state->column != NULL)
	{
		if (strcmp(fname, "value") == 0)
			state->colfield = COL_VALUE;
		else if (strcmp(fname, "name") == 0)
			state->colfield = COL_NAME;
		else
			state->colfield = COL_OTHER;
	}
	pfree(fname);
}

static void
w2j_scalar(void *arg, char *token, JsonTokenType tokentype)
{
	ParseState *state = (ParseState *) arg;

	if (state->depth == 1)
	{
		top_scalar(state, token, tokentype);
		state->top = TOP_NONE;
		return;
	}
	if (state->depth == 3 && state->column != NULL)
	{
		EgressChangeColumn *col = state->column;

		switch (state->colfield)
		{
			case COL_NAME:
				if (tokentype != JSON_TOKEN_STRING)
					parse_error(state, "A column name is not a string.");
				col->name = token;
				state->has_name = true;
				return;
			case COL_VALUE:
				col->quoted = (tokentype == JSON_TOKEN_STRING);
				col->isnull = (tokentype == JSON_TOKEN_NULL);
				if (col->isnull)
				{
					col->value = NULL;
					pfree(token);
				}
				else
					col->value = token;
				state->has_value = true;
				return;
			default:
				break;
		}
	}
	else if (state->depth == 0)
		parse_error(state, "The message is not a JSON object.");
	else if (state->depth == 2 && state->array != NULL)
		parse_error(state, "An element of \"columns\" or \"identity\" is not an object.");
	pfree(token);
}

/*
 * top_scalar
 *		Store the scalar value of a top-level key.
 */
static void
top_scalar(ParseState *state, char *token, JsonTokenType tokentype)
{
	EgressChange *change = state->change;
	bool		isstring = (tokentype == JSON_TOKEN_STRING);
	bool		isnull = (tokentype == JSON_TOKEN_NULL);

	switch (state->top)
	{
		case TOP_NONE:
		case TOP_OTHER:
			pfree(token);
			return;

		case TOP_ACTION:
			if (!isstring || token[0] == '\0' || token[1] != '\0')
				parse_error(state, "The \"action\" is not a one-letter string.");
			switch (token[0])
			{
				case 'B':
					change->action = EGRESS_CHANGE_BEGIN;
					break;
				case 'C':
					change->action = EGRESS_CHANGE_COMMIT;
					break;
				case 'I':
					change->action = EGRESS_CHANGE_INSERT;
					break;
				case 'U':
					change->action = EGRESS_CHANGE_UPDATE;
					break;
				case 'D':
					change->action = EGRESS_CHANGE_DELETE;
					break;
				case 'T':
					change->action = EGRESS_CHANGE_TRUNCATE;
					break;
				case 'M':
					change->action = EGRESS_CHANGE_MESSAGE;
					break;
				default:
					parse_error(state,
								psprintf("The action \"%s\" is unknown.", token));
			}
			state->has_action = true;
			pfree(token);
			return;

		case TOP_LSN:
		case TOP_NEXTLSN:
			if (isnull)
				break;
			{
				bool		have_error = false;
				XLogRecPtr	lsn;

				if (!isstring)
					parse_error(state, "An LSN is not a string.");
				lsn = pg_lsn_in_internal(token, &have_error);
				if (have_error)
					parse_error(state, "An LSN is malformed.");
				if (state->top == TOP_LSN)
					change->lsn = lsn;
				else
					change->nextlsn = lsn;
			}
			break;

		case TOP_TIMESTAMP:
			/* null in a non-transactional message */
			if (isnull)
			{
				change->timestamp = 0;
				change->has_timestamp = false;
				break;
			}
			if (!isstring)
				parse_error(state, "The \"timestamp\" is not a string.");
			change->timestamp = parse_timestamp(token);
			change->has_timestamp = true;
			break;

		case TOP_XID:
			if (isnull)
				break;
			{
				char	   *end;
				unsigned long xid;

				if (tokentype != JSON_TOKEN_NUMBER)
					parse_error(state, "The \"xid\" is not a number.");
				errno = 0;
				xid = strtoul(token, &end, 10);
				if (errno != 0 || *end != '\0' || xid > PG_UINT32_MAX)
					parse_error(state, "The \"xid\" is not a transaction ID.");
				change->xid = (TransactionId) xid;
			}
			break;

		case TOP_TRANSACTIONAL:
			if (tokentype != JSON_TOKEN_TRUE && tokentype != JSON_TOKEN_FALSE)
				parse_error(state, "The \"transactional\" field is not a boolean.");
			change->transactional = (tokentype == JSON_TOKEN_TRUE);
			break;

		case TOP_SCHEMA:
		case TOP_TABLE:
		case TOP_PREFIX:
		case TOP_CONTENT:
			if (isnull)
				break;
			if (!isstring)
				parse_error(state, "A name or message field is not a string.");
			/* keep the token */
			if (state->top == TOP_SCHEMA)
				change->schema = token;
			else if (state->top == TOP_TABLE)
				change->table = token;
			else if (state->top == TOP_PREFIX)
				change->prefix = token;
			else
				change->content = token;
			return;

		case TOP_COLUMNS:
		case TOP_IDENTITY:
			if (isnull)
				break;
			parse_error(state, "The \"columns\" or \"identity\" field is not an array.");
	}
	pfree(token);
}

/*
 * parse_timestamp
 *		The value of wal2json's "timestamp", which it prints with
 *		timestamptz_to_str: ISO format with the UTC offset.
 */
static TimestampTz
parse_timestamp(const char *text)
{
	int			len = strlen(text);
	TimestampTz value;

	if (len == last_ts_len && memcmp(text, last_ts_text, len) == 0)
		return last_ts_value;

	value = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
													CStringGetDatum(text),
													ObjectIdGetDatum(InvalidOid),
													Int32GetDatum(-1)));
	if (len < (int) sizeof(last_ts_text))
	{
		memcpy(last_ts_text, text, len);
		last_ts_len = len;
		last_ts_value = value;
	}
	return value;
}

/*
 * column_array_add
 *		Append a zeroed column to the array, growing it geometrically.
 */
static EgressChangeColumn *
column_array_add(ColumnArray *array)
{
	EgressChangeColumn *col;

	if (array->count == array->size)
	{
		if (array->size == 0)
		{
			array->size = EGRESS_WAL2JSON_INITIAL_COLUMNS;
			array->items = (EgressChangeColumn *)
				palloc(array->size * sizeof(EgressChangeColumn));
		}
		else
		{
			array->size *= 2;
			array->items = (EgressChangeColumn *)
				repalloc(array->items, array->size * sizeof(EgressChangeColumn));
		}
	}
	col = &array->items[array->count++];
	col->name = NULL;
	col->value = NULL;
	col->isnull = true;
	col->quoted = false;
	return col;
}

/*
 * egress_parse_lsn
 *		Parse an LSN printed as "XXXXXXXX/XXXXXXXX".
 */
XLogRecPtr
egress_parse_lsn(const char *text)
{
	bool		have_error = false;
	XLogRecPtr	lsn;

	lsn = pg_lsn_in_internal(text, &have_error);
	if (have_error)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid LSN \"%s\"", text)));
	return lsn;
}

/*
 * egress_wal2json_value_text
 *		The output function's text of a column value.
 *
 * wal2json decides by the column's declared type: numbers are printed
 * bare, booleans as true/false, bytea without its leading "\x", everything
 * else (domains over those types included) as a JSON string.  So a bare
 * true/false is always a boolean, and a bytea value still starting with
 * "\x" came from a domain; hex digits never start with a backslash.
 */
const char *
egress_wal2json_value_text(const EgressChangeColumn *col, Oid basetypid)
{
	const char *value = col->value;

	if (col->isnull || value == NULL)
		return NULL;

	if (!col->quoted)
	{
		if (value[0] == 't' && strcmp(value, "true") == 0)
			return "t";
		if (value[0] == 'f' && strcmp(value, "false") == 0)
			return "f";
		return value;
	}

	if (basetypid == BYTEAOID && !(value[0] == '\\' && value[1] == 'x'))
	{
		size_t		len = strlen(value);
		char	   *result = palloc(len + 3);

		result[0] = '\\';
		result[1] = 'x';
		memcpy(result + 2, value, len + 1);
		return result;
	}

	return value;
}

/*
 * egress_wal2json_options
 *		The options pg_egress passes to wal2json.
 *
 * wal2json reads every value with strVal() and booleans with parse_bool(),
 * and rejects options it does not know.
 */
List *
egress_wal2json_options(const char *add_tables)
{
	static const char *const options[][2] = {
		{"format-version", "2"},
		{"include-transaction", "true"},
		{"include-timestamp", "true"},
		{"include-lsn", "true"},
		{"include-types", "false"},
		{"include-type-oids", "false"},
		{"include-pk", "false"},
		{"include-xids", "false"},
		{"include-schemas", "true"},
		{"actions", "insert,update,delete,truncate"},
	};
	List	   *result = NIL;
	int			i;

	for (i = 0; i < lengthof(options); i++)
		result = lappend(result,
						 makeDefElem(pstrdup(options[i][0]),
									 (Node *) makeString(pstrdup(options[i][1])),
									 -1));
	if (add_tables != NULL)
		result = lappend(result,
						 makeDefElem(pstrdup("add-tables"),
									 (Node *) makeString(pstrdup(add_tables)),
									 -1));
	return result;
}
