/*-------------------------------------------------------------------------
 * patterns.c
 *	  egress_add_streams(): one stream per table matching psql-style
 *	  patterns, and the event trigger that adds tables created later
 *	  (option follow_new_tables).
 *
 * Patterns follow psql's \dt rules: "schema.table", where "*" matches any
 * sequence of characters and "?" any one character; unquoted letters are
 * folded to lower case; inside double quotes everything is literal, case
 * included ("" is a quote).  Other regular-expression characters outside
 * quotes keep their meaning, as in psql (e.g. [0-9]); "$" is literal.
 * An unqualified pattern matches the tables visible in the search path.
 * Several patterns are separated by commas.
 *
 * Tables are ordinary and partitioned tables (not partitions), outside the
 * system schemas and the egress schema, not temporary.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/event_trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/syscache.h"

#include "catalog/catalog.h"
#include "catalog/sqlfuncs.h"
#include "pg_egress.h"

PG_FUNCTION_INFO_V1(egress_add_streams);
PG_FUNCTION_INFO_V1(egress_remove_stream_pattern);
PG_FUNCTION_INFO_V1(egress_follow_new_tables);

#define MAX_NAME_LEN 48

typedef struct TablePattern
{
	char	   *nsp_re;			/* NULL: visible in the search path */
	char	   *rel_re;
} TablePattern;

static void
bad_pattern(const char *what, const char *text, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid %s pattern \"%s\"", what, text),
			 errdetail("%s", detail)));
}

/* Parse a comma-separated list of patterns into anchored regexes. */
static List *
parse_patterns(const char *text, const char *what)
{
	List	   *result = NIL;
	StringInfoData parts[2];
	int			npart = 0;
	bool		inquotes = false;
	bool		any = false;	/* anything in the current part */
	const char *p = text;

	initStringInfo(&parts[0]);
	initStringInfo(&parts[1]);
	for (;;)
	{
		char		ch = *p;

		if (ch == '\0' || (!inquotes && ch == ','))
		{
			TablePattern *tp;

			if (inquotes)
				bad_pattern(what, text, "A double quote is not closed.");
			if (!any)
				bad_pattern(what, text,
							npart == 0 ? "A pattern is empty." :
							"The table part after the dot is empty.");
			tp = palloc0(sizeof(TablePattern));
			if (npart == 1)
			{
				tp->nsp_re = psprintf("^(%s)$", parts[0].data);
				tp->rel_re = psprintf("^(%s)$", parts[1].data);
			}
			else
				tp->rel_re = psprintf("^(%s)$", parts[0].data);
			result = lappend(result, tp);
			if (ch == '\0')
				break;
			resetStringInfo(&parts[0]);
			resetStringInfo(&parts[1]);
			npart = 0;
			any = false;
			p++;
			continue;
		}

		if (ch == '"')
		{
			if (inquotes && p[1] == '"')
			{
				appendStringInfoChar(&parts[npart], '"');
				p += 2;
				continue;
			}
			inquotes = !inquotes;
			any = true;			/* "" is an empty name, matched as such */
			p++;
			continue;
		}
		if (inquotes)
		{
			if (strchr("|*+?()[]{}.^$\\", ch))
				appendStringInfoChar(&parts[npart], '\\');
			appendStringInfoChar(&parts[npart], ch);
		}
		else if (ch == '.')
		{
			if (!any)
				bad_pattern(what, text, "The schema part before the dot is empty.");
			if (npart == 1)
				bad_pattern(what, text, "A pattern has at most one dot: schema.table.");
			npart = 1;
			any = false;
		}
		else if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r')
		{
			/* white space outside quotes separates nothing: ignored */
		}
		else
		{
			if (ch == '*')
				appendStringInfoString(&parts[npart], ".*");
			else if (ch == '?')
				appendStringInfoChar(&parts[npart], '.');
			else if (ch == '$')
				appendStringInfoString(&parts[npart], "\\$");
			else if (ch >= 'A' && ch <= 'Z')
				appendStringInfoChar(&parts[npart], ch + ('a' - 'A'));
			else
				appendStringInfoChar(&parts[npart], ch);
			any = true;
		}
		p++;
	}
	return result;
}

/* SQL condition over n.nspname, c.relname and c.oid: any pattern matches. */
static char *
patterns_condition(List *patterns)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '(');
	foreach(lc, patterns)
	{
		TablePattern *tp = lfirst(lc);

		if (foreach_current_index(lc) > 0)
			appendStringInfoString(&buf, " OR ");
		appendStringInfoChar(&buf, '(');
		if (tp->nsp_re)
			appendStringInfo(&buf, "n.nspname OPERATOR(pg_catalog.~) %s::pg_catalog.text COLLATE pg_catalog.\"default\"",
							 quote_literal_cstr(tp->nsp_re));
		else
			appendStringInfoString(&buf, "pg_catalog.pg_table_is_visible(c.oid)");
		appendStringInfo(&buf, " AND c.relname OPERATOR(pg_catalog.~) %s::pg_catalog.text COLLATE pg_catalog.\"default\")",
						 quote_literal_cstr(tp->rel_re));
	}
	appendStringInfoChar(&buf, ')');
	return buf.data;
}

typedef struct MatchedTable
{
	Oid			relid;
	char	   *nspname;
	char	   *relname;
} MatchedTable;

/*
 * The tables matching include and not exclude, by schema and name; only
 * relid when given.  Caller is connected to SPI.
 */
static List *
matching_tables(const char *include, const char *exclude, Oid relid)
{
	StringInfoData sql;
	List	   *result = NIL;
	uint64		n;

	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c "
					 "JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace "
					 "WHERE c.relkind OPERATOR(pg_catalog.=) ANY ('{r,p}'::pg_catalog.\"char\"[]) "
					 "AND NOT c.relispartition "
					 "AND c.relpersistence OPERATOR(pg_catalog.<>) 't'::pg_catalog.\"char\" "
					 "AND n.nspname OPERATOR(pg_catalog.<>) ALL ('{pg_catalog,information_schema,egress}'::pg_catalog.name[]) "
					 "AND n.nspname OPERATOR(pg_catalog.!~) '^pg_(toast|temp_|toast_temp_)'::pg_catalog.text "
					 "AND %s", patterns_condition(parse_patterns(include, "include")));
	if (exclude != NULL)
		appendStringInfo(&sql, " AND NOT %s",
						 patterns_condition(parse_patterns(exclude, "exclude")));
	if (OidIsValid(relid))
		appendStringInfo(&sql, " AND c.oid OPERATOR(pg_catalog.=) '%u'::pg_catalog.oid", relid);
	appendStringInfoString(&sql, " ORDER BY 2, 3");

	if (SPI_execute(sql.data, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "table pattern query failed");
	n = SPI_processed;
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		MatchedTable *m;
		bool		isnull;
		MemoryContext oldcxt = MemoryContextSwitchTo(CurTransactionContext);

		m = palloc(sizeof(MatchedTable));
		m->relid = DatumGetObjectId(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull));
		m->nspname = pstrdup(SPI_getvalue(tup, SPI_tuptable->tupdesc, 2));
		m->relname = pstrdup(SPI_getvalue(tup, SPI_tuptable->tupdesc, 3));
		result = lappend(result, m);
		MemoryContextSwitchTo(oldcxt);
	}
	return result;
}

/*
 * The stream name of a table: "<prefix><schema>_<table>" (option
 * "name_prefix", checked by check_name_prefix; NULL: none), lower case,
 * other characters as "_", at most MAX_NAME_LEN characters.
 */
static char *
stream_name_for(const char *prefix, const char *nspname, const char *relname)
{
	char	   *name = psprintf("%s%s_%s", prefix ? prefix : "", nspname, relname);
	char	   *result;

	for (char *c = name; *c; c++)
	{
		if (*c >= 'A' && *c <= 'Z')
			*c += 'a' - 'A';
		else if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9')))
			*c = '_';
	}
	if (!(name[0] >= 'a' && name[0] <= 'z'))
		name = psprintf("t_%s", name);
	result = pnstrdup(name, MAX_NAME_LEN);
	return result;
}

/* options without follow_new_tables and name_prefix: what each stream gets */
static Jsonb *
stream_options(Jsonb *options)
{
	Datum		d = DirectFunctionCall2(jsonb_delete, JsonbPGetDatum(options),
										CStringGetTextDatum("follow_new_tables"));

	d = DirectFunctionCall2(jsonb_delete, d, CStringGetTextDatum("name_prefix"));
	return DatumGetJsonbP(d);
}

/*
 * Option "name_prefix": NULL when absent, else a string of lower-case
 * letters, digits and underscores that starts with a letter (what a stream
 * name may start with), at most MAX_NAME_LEN / 2 characters.
 */
static char *
check_name_prefix(Jsonb *options)
{
	JsonbValue	k;
	JsonbValue *v;
	bool		ok;

	k.type = jbvString;
	k.val.string.val = "name_prefix";
	k.val.string.len = strlen(k.val.string.val);
	v = findJsonbValueFromContainer(&options->root, JB_FOBJECT, &k);
	if (v == NULL)
		return NULL;
	ok = v->type == jbvString && v->val.string.len > 0 &&
		v->val.string.len <= MAX_NAME_LEN / 2 &&
		v->val.string.val[0] >= 'a' && v->val.string.val[0] <= 'z';
	for (int i = 0; ok && i < v->val.string.len; i++)
	{
		char		c = v->val.string.val[i];

		ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream option \"name_prefix\" must be a string of 1 to %d lower-case letters, digits and underscores, starting with a letter",
						MAX_NAME_LEN / 2)));
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* Have two tables in the list the same stream name? */
static void
check_names_unique(List *tables, const char *prefix)
{
	ListCell   *a;
	ListCell   *b;

	foreach(a, tables)
	{
		MatchedTable *ma = lfirst(a);
		char	   *na = stream_name_for(prefix, ma->nspname, ma->relname);

		for_each_from(b, tables, foreach_current_index(a) + 1)
		{
			MatchedTable *mb = lfirst(b);

			if (strcmp(na, stream_name_for(prefix, mb->nspname, mb->relname)) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_DUPLICATE_OBJECT),
						 errmsg("tables %s and %s would both be stream \"%s\"",
								quote_qualified_identifier(ma->nspname, ma->relname),
								quote_qualified_identifier(mb->nspname, mb->relname), na),
						 errhint("Exclude one of them and add it with egress_add_stream().")));
		}
	}
}

Datum
egress_add_streams(PG_FUNCTION_ARGS)
{
	char	   *include;
	char	   *exclude = NULL;
	char	   *method;
	char	   *dest;
	Jsonb	   *options;
	Jsonb	   *per_stream;
	bool		follow = false;
	List	   *tables;
	ListCell   *lc;
	Datum	   *names;
	int			n = 0;
	char	   *prefix;

	/* name the first argument that is null (calls are often positional) */
	{
		static const struct
		{
			int			argno;
			const char *name;
		}			required[] = {{0, "include"}, {2, "method"}, {3, "destination"}, {4, "options"}};

		for (int i = 0; i < lengthof(required); i++)
			if (PG_ARGISNULL(required[i].argno))
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("argument \"%s\" must not be null", required[i].name),
						 errdetail("egress_add_streams() takes include, exclude, method, destination and options; only exclude may be null.")));
	}
	include = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (!PG_ARGISNULL(1))
		exclude = text_to_cstring(PG_GETARG_TEXT_PP(1));
	method = text_to_cstring(PG_GETARG_TEXT_PP(2));
	dest = text_to_cstring(PG_GETARG_TEXT_PP(3));
	options = PG_GETARG_JSONB_P(4);

	if (!JB_ROOT_IS_OBJECT(options) || JB_ROOT_IS_SCALAR(options))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"options\" must be a JSON object")));
	{
		JsonbValue	k;
		JsonbValue *v;

		k.type = jbvString;
		k.val.string.val = "follow_new_tables";
		k.val.string.len = strlen(k.val.string.val);
		v = findJsonbValueFromContainer(&options->root, JB_FOBJECT, &k);
		if (v != NULL && v->type != jbvBool)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("stream option \"follow_new_tables\" must be true or false")));
		follow = v != NULL && v->val.boolean;
	}
	per_stream = stream_options(options);
	prefix = check_name_prefix(options);

	if (follow)
	{
		ListCell   *pc;

		if (pg_strcasecmp(method, "INCREMENTAL") == 0)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("follow_new_tables is available for LOG_BASED and FULL_TABLE streams")));
		foreach(pc, parse_patterns(include, "include"))
			if (((TablePattern *) lfirst(pc))->nsp_re == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("follow_new_tables needs schema-qualified include patterns"),
						 errdetail("Pattern \"%s\" names no schema; tables created later are matched without a search path.",
								   include),
						 errhint("Write the schema, e.g. public.*.")));
	}

	/* match as the caller: their search path decides unqualified patterns */
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	tables = matching_tables(include, exclude, InvalidOid);
	SPI_finish();

	check_names_unique(tables, prefix);
	names = palloc(sizeof(Datum) * Max(list_length(tables), 1));
	foreach(lc, tables)
	{
		MatchedTable *m = lfirst(lc);
		char	   *name = stream_name_for(prefix, m->nspname, m->relname);

		/* all or nothing: an ERROR here undoes the streams added before */
		egress_add_stream_internal(name, m->relid, method, dest, NULL, per_stream, true);
		names[n++] = CStringGetTextDatum(name);
	}
	if (tables == NIL)
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("no table matches \"%s\"%s%s", include,
						exclude ? " but not " : "", exclude ? exclude : ""),
				 errdetail(follow ? "No stream was added; tables created later that match will be." :
						   "No stream was added.")));

	if (follow)
	{
		EgressCatalogGuard guard;
		Oid			argtypes[6] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID, OIDOID};
		Datum		values[6];
		char		nulls[6] = "      ";

		egress_catalog_enter(&guard);
		values[0] = CStringGetTextDatum(include);
		values[1] = exclude ? CStringGetTextDatum(exclude) : (Datum) 0;
		nulls[1] = exclude ? ' ' : 'n';
		values[2] = CStringGetTextDatum(pg_strcasecmp(method, "LOG_BASED") == 0 ? "LOG_BASED" : "FULL_TABLE");
		values[3] = CStringGetTextDatum(dest);
		/* the rule's streams get the same names: name_prefix is kept with it */
		values[4] = prefix == NULL ? JsonbPGetDatum(per_stream) :
			DirectFunctionCall2(jsonb_concat, JsonbPGetDatum(per_stream),
								DirectFunctionCall1(jsonb_in,
													CStringGetDatum(psprintf("{\"name_prefix\": \"%s\"}", prefix))));
		values[5] = ObjectIdGetDatum(guard.save_userid);
		if (egress_catalog_exec("SELECT owner::pg_catalog.oid, kind FROM egress.destination "
								"WHERE name OPERATOR(pg_catalog.=) $4 FOR SHARE",
								6, argtypes, values, nulls, false) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("destination \"%s\" does not exist", dest)));
		/* as egress_add_stream() checks it, for the streams to come */
		{
			bool		isnull;
			Oid			dest_owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
																	SPI_tuptable->tupdesc, 1, &isnull));
			char	   *kind = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);

			if (!has_privs_of_role(guard.save_userid, dest_owner))
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("permission denied for destination \"%s\"", dest),
						 errdetail("Only members of the destination's owner role may send streams to it.")));
			if (strcmp(kind, "file") == 0 &&
				!has_privs_of_role(guard.save_userid, ROLE_PG_WRITE_SERVER_FILES))
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("permission denied to write to file destinations"),
						 errhint("Only roles with privileges of the \"pg_write_server_files\" role may use file destinations.")));
		}
		egress_catalog_exec("INSERT INTO egress.stream_pattern "
							"(include, exclude, method, destination, options, owner) "
							"VALUES ($1, $2, $3, $4, $5, $6)",
							6, argtypes, values, nulls, false);
		egress_catalog_exit(&guard);
	}

	PG_RETURN_ARRAYTYPE_P(construct_array(names, n, TEXTOID, -1, false, TYPALIGN_INT));
}

Datum
egress_remove_stream_pattern(PG_FUNCTION_ARGS)
{
	EgressCatalogGuard guard;
	Oid			argtypes[1] = {INT4OID};
	Datum		values[1];
	bool		isnull;
	Oid			owner;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"id\" must not be null")));
	values[0] = PG_GETARG_DATUM(0);
	egress_catalog_enter(&guard);
	if (egress_catalog_exec("SELECT owner::pg_catalog.oid FROM egress.stream_pattern "
							"WHERE id OPERATOR(pg_catalog.=) $1 FOR UPDATE",
							1, argtypes, values, NULL, false) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("stream pattern %d does not exist", DatumGetInt32(values[0]))));
	owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (!has_privs_of_role(guard.save_userid, owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for stream pattern %d", DatumGetInt32(values[0])),
				 errdetail("Only members of the pattern's owner role may remove it.")));
	egress_catalog_exec("DELETE FROM egress.stream_pattern WHERE id OPERATOR(pg_catalog.=) $1",
						1, argtypes, values, NULL, false);
	egress_catalog_exit(&guard);
	PG_RETURN_VOID();
}

/* A follow rule, read from the catalog. */
typedef struct FollowRule
{
	int32		id;
	char	   *include;
	char	   *exclude;
	char	   *method;
	char	   *dest;
	Jsonb	   *options;
	Oid			owner;
} FollowRule;

/* The owner of a relation; InvalidOid when it is gone. */
static Oid
relation_owner(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		return InvalidOid;
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * Adds one stream as the rule's owner, in a subtransaction: a table the
 * owner may not read, or that the method cannot stream, gets a WARNING and
 * the CREATE TABLE goes on.
 */
static void
follow_one(FollowRule *rule, MatchedTable *m)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	Oid			save_userid;
	int			save_sec;
	char	   *name = stream_name_for(egress_jsonb_get_string(rule->options, "name_prefix"),
										   m->nspname, m->relname);
	Jsonb	   *options = stream_options(rule->options);
	int			nestlevel;

	/*
	 * Only tables owned by the rule's owner or by a role it is a member of,
	 * not counting superuser's implicit privileges: otherwise anyone who may
	 * create a table in a matching schema could have code of theirs (a row
	 * security policy, a domain's CHECK run when a change is rendered) run as
	 * the rule's owner, a superuser included.  The server log says why; the
	 * table's creator is not told about the rule.
	 */
	if (!is_member_of_role_nosuper(rule->owner, relation_owner(m->relid)))
	{
		ereport(LOG,
				(errmsg("pg_egress did not add a stream for new table %s: stream pattern %d follows only tables owned by its owner or by roles its owner is a member of",
						quote_qualified_identifier(m->nspname, m->relname), rule->id)));
		return;
	}

	/*
	 * The stream is added as the rule's owner, in the session of whoever
	 * created the table: nothing may resolve through that session's schemas
	 * or its pg_temp while it runs.
	 */
	nestlevel = NewGUCNestLevel();
	egress_pin_search_path();

	GetUserIdAndSecContext(&save_userid, &save_sec);
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		SetUserIdAndSecContext(rule->owner, save_sec | SECURITY_LOCAL_USERID_CHANGE);
		egress_add_stream_internal(name, m->relid, rule->method, rule->dest, NULL,
								   options, true);
		SetUserIdAndSecContext(save_userid, save_sec);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		ereport(NOTICE,
				(errmsg("pg_egress added stream \"%s\" for new table %s",
						name, quote_qualified_identifier(m->nspname, m->relname))));
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		SetUserIdAndSecContext(save_userid, save_sec);
		ereport(WARNING,
				(errmsg("pg_egress could not add a stream for new table %s: %s",
						quote_qualified_identifier(m->nspname, m->relname), edata->message),
				 errdetail("The table matches stream pattern %d.", rule->id)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	AtEOXact_GUC(true, nestlevel);
}

/*
 * The event trigger (ddl_command_end of CREATE TABLE ...): tables created
 * that match a follow rule get a stream.  Reads the catalog as the
 * bootstrap superuser, so that a user who cannot read it can still create
 * tables.
 */
Datum
egress_follow_new_tables(PG_FUNCTION_ARGS)
{
	EgressCatalogGuard guard;
	List	   *rules = NIL;
	List	   *created = NIL;
	List	   *todo = NIL;		/* pairs (rule, table) */
	ListCell   *lc;
	int			n;
	MemoryContext cxt = CurrentMemoryContext;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("egress_follow_new_tables() must be called as an event trigger")));

	egress_catalog_enter(&guard);
	n = egress_catalog_exec("SELECT id, include, exclude, method, destination, options, owner::pg_catalog.oid "
							"FROM egress.stream_pattern ORDER BY id",
							0, NULL, NULL, NULL, true);
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		MemoryContext oldcxt = MemoryContextSwitchTo(cxt);
		FollowRule *r = palloc0(sizeof(FollowRule));
		char	   *s;

		r->id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		r->include = pstrdup(SPI_getvalue(tup, desc, 2));
		s = SPI_getvalue(tup, desc, 3);
		r->exclude = s ? pstrdup(s) : NULL;
		r->method = pstrdup(SPI_getvalue(tup, desc, 4));
		r->dest = pstrdup(SPI_getvalue(tup, desc, 5));
		r->options = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 6, &isnull));
		r->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 7, &isnull));
		rules = lappend(rules, r);
		MemoryContextSwitchTo(oldcxt);
	}
	if (rules != NIL)
	{
		n = egress_catalog_exec("SELECT DISTINCT objid FROM pg_catalog.pg_event_trigger_ddl_commands() "
								"WHERE object_type OPERATOR(pg_catalog.=) 'table' AND NOT in_extension",
								0, NULL, NULL, NULL, true);
		for (int i = 0; i < n; i++)
		{
			bool		isnull;
			Oid			relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
															   SPI_tuptable->tupdesc, 1, &isnull));
			MemoryContext oldcxt = MemoryContextSwitchTo(cxt);

			created = lappend_oid(created, relid);
			MemoryContextSwitchTo(oldcxt);
		}
		foreach(lc, created)
		{
			ListCell   *rc;

			foreach(rc, rules)
			{
				FollowRule *r = lfirst(rc);
				List	   *m = matching_tables(r->include, r->exclude, lfirst_oid(lc));
				MemoryContext oldcxt = MemoryContextSwitchTo(cxt);

				if (m != NIL)
					todo = lappend(todo, list_make2(r, linitial(m)));
				MemoryContextSwitchTo(oldcxt);
			}
		}
	}
	egress_catalog_exit(&guard);

	foreach(lc, todo)
		follow_one(linitial((List *) lfirst(lc)), lsecond((List *) lfirst(lc)));

	PG_RETURN_VOID();
}
