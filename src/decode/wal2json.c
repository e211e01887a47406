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
 * "columns", M "transactional", "prefix" and "content".  Keys we do not
 * know are skipped with everything below them, so options that add keys do
 * not break the parser.
 *
 * The tokens come from PostgreSQL's own JSON lexer (common/jsonapi.h), run
 * without de-escaping: that is what makes parsing cheap, since most strings
 * (numbers printed as strings, timestamps, names) hold no escape sequence
 * and are simply copied.  A string that does is de-escaped by the same
 * lexer, on that one token.  The grammar of a message is fixed and shallow,
 * so it is walked here directly rather than through semantic callbacks,
 * which in PostgreSQL 15 do not see the raw token of a string.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/value.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "decode/wal2json.h"

/* first size of the columns and identity arrays; doubled when full */
#define EGRESS_WAL2JSON_INITIAL_COLUMNS 16

/* the top-level keys we use */
typedef enum TopField
{
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

/* a growing array of columns */
typedef struct ColumnArray
{
	EgressChangeColumn *items;
	int			count;
	int			size;
} ColumnArray;

typedef struct Walker
{
	const char *data;			/* the message, for errors */
	int			len;
	JsonLexContext *lex;		/* positioned on the current token */
	bool		reporting;		/* parse_error is reporting */
	StringInfoData unescaped;	/* de-escaping buffer, set up when needed */
} Walker;

/*
 * The commit timestamp is the same in every message of a transaction, and
 * timestamptz_in is slow: remember the last text parsed.  The text always
 * carries its UTC offset, so the value does not depend on settings.
 */
static char last_ts_text[64];
static int	last_ts_len = -1;
static TimestampTz last_ts_value;

static void parse_error(Walker *w, const char *reason) pg_attribute_noreturn();
static void parse_error_context(void *arg);
static inline void next_token(Walker *w);
static inline JsonTokenType token(Walker *w);
static void expect(Walker *w, JsonTokenType type);
static bool next_member(Walker *w, JsonTokenType end, bool *first);
static void unexpected_token(Walker *w) pg_attribute_noreturn();
static bool key_is(Walker *w, const char *key, int keylen);
static TopField top_field(Walker *w);
static char *take_string(Walker *w, bool *plain);
static char *take_raw(Walker *w);
static void skip_value(Walker *w);
static void parse_top_value(Walker *w, TopField field, EgressChange *change,
							ColumnArray *columns, ColumnArray *identity,
							bool *has_action);
static void parse_columns(Walker *w, ColumnArray *array);
static TimestampTz parse_timestamp(const char *text);
static EgressChangeColumn *column_array_add(ColumnArray *array);


/*
 * parse_error
 *		Report a message we cannot use.  reason is a full sentence.
 *
 * The message carries row data, and errors go to the server log: neither
 * the message nor any value or token of it is shown, only where in it
 * parsing stopped.
 */
static void
parse_error(Walker *w, const char *reason)
{
	int			at = (w->lex && w->lex->token_start) ?
		(int) (w->lex->token_start - w->lex->input) : w->len;

	w->reporting = true;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("could not parse wal2json message"),
			 errdetail("%s Parsing stopped at byte %d of a message of %d bytes.",
					   reason, Max(at, 0), w->len)));
}

/*
 * parse_error_context
 *		Say what was being parsed in errors raised elsewhere meanwhile (an
 *		input function, out of memory); like parse_error, without the
 *		message's content.
 */
static void
parse_error_context(void *arg)
{
	Walker	   *w = (Walker *) arg;

	if (w->reporting)
		return;
	errcontext("parsing a wal2json message of %d bytes", w->len);
}

/*
 * egress_wal2json_parse
 *		Parse one wal2json format-version 2 message into *change.
 */
void
egress_wal2json_parse(const char *data, int len, EgressChange *change)
{
	Walker		w;
	ColumnArray columns = {0};
	ColumnArray identity = {0};
	bool		has_action = false;
	bool		first = true;
	ErrorContextCallback errcallback;

	memset(change, 0, sizeof(EgressChange));
	change->lsn = InvalidXLogRecPtr;
	change->nextlsn = InvalidXLogRecPtr;
	change->xid = InvalidTransactionId;

	memset(&w, 0, sizeof(Walker));
	w.data = data;
	w.len = len;

	errcallback.callback = parse_error_context;
	errcallback.arg = &w;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	/* no de-escaping: the lexer only finds and checks the tokens */
	w.lex = makeJsonLexContextCstringLen(unconstify(char *, data), len,
										 GetDatabaseEncoding(), false);
	next_token(&w);
	if (token(&w) != JSON_TOKEN_OBJECT_START)
		parse_error(&w, "The message is not a JSON object.");
	next_token(&w);
	while (next_member(&w, JSON_TOKEN_OBJECT_END, &first))
	{
		TopField	field = top_field(&w);

		next_token(&w);
		expect(&w, JSON_TOKEN_COLON);
		parse_top_value(&w, field, change, &columns, &identity, &has_action);
	}
	if (token(&w) != JSON_TOKEN_END)
		parse_error(&w, "The message has more than one JSON value.");
	pfree(w.lex);
	w.lex = NULL;
	if (w.unescaped.data != NULL)
		pfree(w.unescaped.data);

	if (!has_action)
		parse_error(&w, "The message has no \"action\".");
	switch (change->action)
	{
		case EGRESS_CHANGE_INSERT:
		case EGRESS_CHANGE_UPDATE:
		case EGRESS_CHANGE_DELETE:
		case EGRESS_CHANGE_TRUNCATE:
			if (change->table == NULL)
				parse_error(&w, "The change has no \"table\".");
			break;
		default:
			break;
	}

	error_context_stack = errcallback.previous;

	change->ncolumns = columns.count;
	change->columns = columns.items;
	change->nidentity = identity.count;
	change->identity = identity.items;
}

/* Move to the next token; a lexical error is reported with the message. */
static inline void
next_token(Walker *w)
{
	JsonParseErrorType result = json_lex(w->lex);

	if (result != JSON_SUCCESS)
		parse_error(w, "The message is not valid JSON.");
}

static inline JsonTokenType
token(Walker *w)
{
	return w->lex->token_type;
}

/* Step over a token of the given type, which must be the current one. */
static void
expect(Walker *w, JsonTokenType type)
{
	if (token(w) != type)
		unexpected_token(w);
	next_token(w);
}

/*
 * next_member
 *		Inside an object or array whose opening token has been consumed:
 *		true when another member follows (then positioned on it, past a
 *		comma), false at the end (then past the closing token).  *first is
 *		true before the first call for a container.
 */
static bool
next_member(Walker *w, JsonTokenType end, bool *first)
{
	if (*first)
	{
		*first = false;
		if (token(w) != end)
			return true;
	}
	else if (token(w) != end)
	{
		expect(w, JSON_TOKEN_COMMA);
		if (token(w) != end)
			return true;
		/* a comma before the end */
		unexpected_token(w);
	}
	next_token(w);
	return false;
}

/* Report the current token as out of place. */
static void
unexpected_token(Walker *w)
{
	parse_error(w, psprintf("The message is not valid JSON (unexpected token at byte %d).",
							(int) (w->lex->token_start - w->data)));
}

/* Whether the current token is the string key (no escapes in our keys). */
static bool
key_is(Walker *w, const char *key, int keylen)
{
	const char *start = w->lex->token_start;

	return w->lex->token_terminator - start == keylen + 2 &&
		memcmp(start + 1, key, keylen) == 0;
}

/* The top-level key at the current token, which must be a string. */
static TopField
top_field(Walker *w)
{
	if (token(w) != JSON_TOKEN_STRING)
		unexpected_token(w);

	/* by length first: this runs for every key of every message */
	switch (w->lex->token_terminator - w->lex->token_start - 2)
	{
		case 3:
			if (key_is(w, "lsn", 3))
				return TOP_LSN;
			if (key_is(w, "xid", 3))
				return TOP_XID;
			break;
		case 5:
			if (key_is(w, "table", 5))
				return TOP_TABLE;
			break;
		case 6:
			if (key_is(w, "action", 6))
				return TOP_ACTION;
			if (key_is(w, "schema", 6))
				return TOP_SCHEMA;
			if (key_is(w, "prefix", 6))
				return TOP_PREFIX;
			break;
		case 7:
			if (key_is(w, "columns", 7))
				return TOP_COLUMNS;
			if (key_is(w, "nextlsn", 7))
				return TOP_NEXTLSN;
			if (key_is(w, "content", 7))
				return TOP_CONTENT;
			break;
		case 8:
			if (key_is(w, "identity", 8))
				return TOP_IDENTITY;
			break;
		case 9:
			if (key_is(w, "timestamp", 9))
				return TOP_TIMESTAMP;
			break;
		case 13:
			if (key_is(w, "transactional", 13))
				return TOP_TRANSACTIONAL;
			break;
	}
	return TOP_OTHER;
}

/*
 * take_string
 *		The content of the current string token, de-escaped, and step over
 *		it.  *plain (if given) tells whether it held no escape sequence.
 */
static char *
take_string(Walker *w, bool *plain)
{
	const char *start = w->lex->token_start;
	int			len = w->lex->token_terminator - start;
	char	   *result;

	Assert(token(w) == JSON_TOKEN_STRING);
	if (memchr(start + 1, '\\', len - 2) == NULL)
	{
		result = pnstrdup(start + 1, len - 2);
		if (plain)
			*plain = true;
	}
	else
	{
		JsonLexContext sub;
		JsonParseErrorType r;

		/* the same lexer, de-escaping just this token */
		if (w->unescaped.data == NULL)
			initStringInfo(&w->unescaped);
		resetStringInfo(&w->unescaped);
		memset(&sub, 0, sizeof(JsonLexContext));
		sub.input = sub.token_terminator = sub.line_start = unconstify(char *, start);
		sub.input_length = len;
		sub.input_encoding = w->lex->input_encoding;
		sub.line_number = 1;
		sub.strval = &w->unescaped;
		r = json_lex(&sub);
		if (r != JSON_SUCCESS)
			parse_error(w, "A string of the message is not valid JSON.");
		result = pnstrdup(w->unescaped.data, w->unescaped.len);
		if (plain)
			*plain = false;
	}
	next_token(w);
	return result;
}

/* The current scalar token as written (numbers, true, false), stepped over. */
static char *
take_raw(Walker *w)
{
	char	   *result = pnstrdup(w->lex->token_start,
								  w->lex->token_terminator - w->lex->token_start);

	next_token(w);
	return result;
}

/* Step over the current value, whatever it is. */
static void
skip_value(Walker *w)
{
	JsonTokenType type = token(w);
	bool		first = true;

	check_stack_depth();
	switch (type)
	{
		case JSON_TOKEN_OBJECT_START:
			next_token(w);
			while (next_member(w, JSON_TOKEN_OBJECT_END, &first))
			{
				expect(w, JSON_TOKEN_STRING);
				expect(w, JSON_TOKEN_COLON);
				skip_value(w);
			}
			break;
		case JSON_TOKEN_ARRAY_START:
			next_token(w);
			while (next_member(w, JSON_TOKEN_ARRAY_END, &first))
				skip_value(w);
			break;
		case JSON_TOKEN_STRING:
		case JSON_TOKEN_NUMBER:
		case JSON_TOKEN_TRUE:
		case JSON_TOKEN_FALSE:
		case JSON_TOKEN_NULL:
			next_token(w);
			break;
		default:
			unexpected_token(w);
	}
}

/*
 * parse_top_value
 *		Store the value of a top-level key, and step over it.
 */
static void
parse_top_value(Walker *w, TopField field, EgressChange *change,
				ColumnArray *columns, ColumnArray *identity, bool *has_action)
{
	JsonTokenType type = token(w);
	bool		isstring = (type == JSON_TOKEN_STRING);
	bool		isnull = (type == JSON_TOKEN_NULL);
	char	   *text;

	if (field == TOP_OTHER)
	{
		skip_value(w);
		return;
	}
	if (field == TOP_COLUMNS || field == TOP_IDENTITY)
	{
		if (isnull)
			next_token(w);
		else
			parse_columns(w, field == TOP_COLUMNS ? columns : identity);
		return;
	}
	if (type == JSON_TOKEN_OBJECT_START)
		parse_error(w, "A known key has an object value.");
	if (type == JSON_TOKEN_ARRAY_START)
		parse_error(w, "A known key has an array value.");

	switch (field)
	{
		case TOP_ACTION:
			if (!isstring)
				parse_error(w, "The \"action\" is not a one-letter string.");
			text = take_string(w, NULL);
			if (text[0] == '\0' || text[1] != '\0')
				parse_error(w, "The \"action\" is not a one-letter string.");
			switch (text[0])
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
					parse_error(w, psprintf("The action \"%s\" is unknown.", text));
			}
			*has_action = true;
			pfree(text);
			return;

		case TOP_LSN:
		case TOP_NEXTLSN:
			if (isnull)
				break;
			{
				bool		have_error = false;
				XLogRecPtr	lsn;

				if (!isstring)
					parse_error(w, "An LSN is not a string.");
				text = take_string(w, NULL);
				lsn = pg_lsn_in_internal(text, &have_error);
				if (have_error)
					parse_error(w, "An LSN is malformed.");
				if (field == TOP_LSN)
					change->lsn = lsn;
				else
					change->nextlsn = lsn;
				pfree(text);
			}
			return;

		case TOP_TIMESTAMP:
			/* null in a non-transactional message */
			if (isnull)
			{
				change->timestamp = 0;
				change->has_timestamp = false;
				break;
			}
			if (!isstring)
				parse_error(w, "The \"timestamp\" is not a string.");
			text = take_string(w, NULL);
			change->timestamp = parse_timestamp(text);
			change->has_timestamp = true;
			pfree(text);
			return;

		case TOP_XID:
			if (isnull)
				break;
			{
				char	   *end;
				unsigned long xid;

				if (type != JSON_TOKEN_NUMBER)
					parse_error(w, "The \"xid\" is not a number.");
				text = take_raw(w);
				errno = 0;
				xid = strtoul(text, &end, 10);
				if (errno != 0 || *end != '\0' || xid > PG_UINT32_MAX)
					parse_error(w, "The \"xid\" is not a transaction ID.");
				change->xid = (TransactionId) xid;
				pfree(text);
			}
			return;

		case TOP_TRANSACTIONAL:
			if (type != JSON_TOKEN_TRUE && type != JSON_TOKEN_FALSE)
				parse_error(w, "The \"transactional\" field is not a boolean.");
			change->transactional = (type == JSON_TOKEN_TRUE);
			break;

		case TOP_SCHEMA:
		case TOP_TABLE:
		case TOP_PREFIX:
		case TOP_CONTENT:
			if (isnull)
				break;
			if (!isstring)
				parse_error(w, "A name or message field is not a string.");
			text = take_string(w, NULL);
			if (field == TOP_SCHEMA)
				change->schema = text;
			else if (field == TOP_TABLE)
				change->table = text;
			else if (field == TOP_PREFIX)
				change->prefix = text;
			else
				change->content = text;
			return;

		case TOP_OTHER:
		case TOP_COLUMNS:
		case TOP_IDENTITY:
			/* handled above */
			break;
	}
	next_token(w);
}

/*
 * parse_columns
 *		The array of "columns" or "identity": objects with "name" and
 *		"value" (and keys we skip, such as "type").  A repeated key replaces
 *		the earlier array.
 */
static void
parse_columns(Walker *w, ColumnArray *array)
{
	bool		first = true;

	if (token(w) != JSON_TOKEN_ARRAY_START)
		parse_error(w, "The \"columns\" or \"identity\" field is not an array.");
	next_token(w);
	array->count = 0;
	while (next_member(w, JSON_TOKEN_ARRAY_END, &first))
	{
		EgressChangeColumn *col;
		bool		has_name = false;
		bool		has_value = false;
		bool		first_key = true;

		if (token(w) != JSON_TOKEN_OBJECT_START)
			parse_error(w, "An element of \"columns\" or \"identity\" is not an object.");
		next_token(w);
		col = column_array_add(array);
		while (next_member(w, JSON_TOKEN_OBJECT_END, &first_key))
		{
			bool		is_name;
			bool		is_value;
			JsonTokenType type;

			if (token(w) != JSON_TOKEN_STRING)
				unexpected_token(w);
			is_value = key_is(w, "value", 5);
			is_name = !is_value && key_is(w, "name", 4);
			next_token(w);
			expect(w, JSON_TOKEN_COLON);
			if (!is_name && !is_value)
			{
				skip_value(w);
				continue;
			}

			type = token(w);
			if (type == JSON_TOKEN_OBJECT_START || type == JSON_TOKEN_ARRAY_START)
				parse_error(w, "A column has a non-scalar name or value.");
			if (is_name)
			{
				if (type != JSON_TOKEN_STRING)
					parse_error(w, "A column name is not a string.");
				col->name = take_string(w, NULL);
				has_name = true;
				continue;
			}

			has_value = true;
			col->quoted = (type == JSON_TOKEN_STRING);
			col->isnull = (type == JSON_TOKEN_NULL);
			col->plain = false;
			if (col->isnull)
			{
				col->value = NULL;
				next_token(w);
			}
			else if (col->quoted)
				col->value = take_string(w, &col->plain);
			else
				col->value = take_raw(w);
		}
		if (!has_name || !has_value)
			parse_error(w, "A column has no \"name\" or no \"value\".");
	}
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
	col->plain = false;
	col->unchanged = false;
	col->raw_text = false;
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
