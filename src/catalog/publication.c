/*-------------------------------------------------------------------------
 * publication.c
 *	  The publication of a destination decoded with pgoutput, and the
 *	  column lists and row filters of streams.
 *
 * Which publication is pg_egress's: the one named egress_publication_name()
 * of a destination whose decoder is pgoutput, owned by the bootstrap
 * superuser.  egress_add_destination() creates it (as the bootstrap
 * superuser) and refuses to add the destination when a publication of that
 * name exists already, so pg_egress never takes over a publication someone
 * else made; sync and drop leave alone a publication of that name that
 * another role owns (only a superuser could have given ours away).
 *
 * Everything here that changes a publication runs inside
 * egress_catalog_enter(): as the bootstrap superuser, search path pinned.
 * The SQL names tables by their current qualified, quoted names looked up
 * by OID, and columns by quote_identifier(); a row filter is never pasted
 * in as given: egress_filter_sql() parses it, checks it as the stream's
 * owner and deparses the parse tree, so what the superuser's statement
 * parses again is one expression of built-in operators, functions, types
 * and constants.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/sysattr.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_class.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "common/keywords.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_clause.h"
#include "parser/parse_collate.h"
#include "parser/parse_node.h"
#include "parser/parse_relation.h"
#include "parser/parser.h"
#include "parser/scanner.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/ruleutils.h"
#include "utils/syscache.h"

#include "catalog/catalog.h"
#include "catalog/publication.h"
#include "egress_slots.h"

const char *
egress_destination_decoder(Jsonb *dest_options)
{
	char	   *decoder = egress_jsonb_get_string(dest_options, "decoder");

	if (decoder != NULL && strcmp(decoder, EGRESS_PLUGIN_WAL2JSON) == 0)
		return EGRESS_PLUGIN_WAL2JSON;
	return EGRESS_PLUGIN_PGOUTPUT;
}

/*
 * "pg_egress_" and a destination name (at most 48 characters: see
 * validate_name() in sqlfuncs.c) fit in NAMEDATALEN - 1 = 63 bytes: no
 * shortening needed.
 */
char *
egress_publication_name(const char *destination)
{
	return psprintf("pg_egress_%s", destination);
}

/* The publication's OID and owner; false when there is none. */
static bool
publication_lookup(const char *pubname, Oid *pubid, Oid *owner)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(pubname)};
	bool		isnull;

	if (egress_catalog_exec("SELECT oid, pubowner FROM pg_catalog.pg_publication "
							"WHERE pubname OPERATOR(pg_catalog.=) $1::pg_catalog.name",
							1, argtypes, values, NULL, false) == 0)
		return false;
	*pubid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
											1, &isnull));
	*owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
											2, &isnull));
	return true;
}

/*
 * Runs one statement on a publication, as the bootstrap superuser (caller
 * is inside egress_catalog_enter()).  Its text holds deparsed row filters,
 * whose string constants mean what egress_filter_sql() checked only when
 * standard_conforming_strings is on: with it off in the session, a
 * backslash in a constant would escape the closing quote and the rest of
 * the constant would be SQL of the superuser.  So the setting is pinned,
 * and the text must be one statement all the same.
 */
static void
publication_exec(const char *sql)
{
	int			nestlevel = NewGUCNestLevel();
	List	   *raw;

	(void) set_config_option("standard_conforming_strings", "on", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	raw = raw_parser(sql, RAW_PARSE_DEFAULT);
	if (list_length(raw) != 1)
		elog(ERROR, "pg_egress publication statement is not one statement: %s", sql);
	egress_catalog_exec(sql, 0, NULL, NULL, NULL, false);
	AtEOXact_GUC(true, nestlevel);
}

static void
create_publication(const char *destination, const char *pubname)
{
	int			nestlevel;
	char	   *comment;

	/*
	 * CREATE PUBLICATION warns when wal_level is below logical.  Every
	 * pgoutput destination gets its publication, also on servers that only
	 * run FULL_TABLE and INCREMENTAL streams; LOG_BASED streams check
	 * wal_level themselves when they are added.
	 */
	nestlevel = NewGUCNestLevel();
	(void) set_config_option("client_min_messages", "error", PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("log_min_messages", "error", PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	publication_exec(psprintf("CREATE PUBLICATION %s WITH (publish = 'insert, update, delete, truncate', "
								 "publish_via_partition_root = false)",
								 quote_identifier(pubname)));
	AtEOXact_GUC(true, nestlevel);

	comment = psprintf("changes of the LOG_BASED streams of pg_egress destination \"%s\"; "
					   "managed by pg_egress, dropped with the destination", destination);
	publication_exec(psprintf("COMMENT ON PUBLICATION %s IS %s",
								 quote_identifier(pubname), quote_literal_cstr(comment)));
}

void
egress_publication_create(const char *destination)
{
	char	   *pubname = egress_publication_name(destination);
	Oid			pubid;
	Oid			owner;

	if (publication_lookup(pubname, &pubid, &owner))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("publication \"%s\" already exists", pubname),
				 errdetail("Destination \"%s\" decodes changes with pgoutput through a publication of that name, which pg_egress creates and owns.",
						   destination),
				 errhint("Drop or rename the existing publication, give the destination another name, or add it with option \"decoder\": \"wal2json\".")));
	create_publication(destination, pubname);
}

/*
 * The destination's options, or NULL when it does not exist.  With touch,
 * its row is updated (to itself): see egress_publication_sync().
 */
static Jsonb *
destination_options(const char *destination, bool touch)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(destination)};
	bool		isnull;
	Datum		d;

	if (egress_catalog_exec(touch ?
							"UPDATE egress.destination SET options = options "
							"WHERE name OPERATOR(pg_catalog.=) $1 RETURNING options" :
							"SELECT options FROM egress.destination "
							"WHERE name OPERATOR(pg_catalog.=) $1",
							1, argtypes, values, NULL, false) == 0)
		return NULL;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? NULL : DatumGetJsonbPCopy(d);
}

static void
not_ours(const char *pubname, const char *destination)
{
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("publication \"%s\" was not created by pg_egress", pubname),
			 errdetail("Destination \"%s\" decodes through a publication of that name owned by the bootstrap superuser; this one belongs to another role.",
					   destination),
			 errhint("Drop or rename that publication; pg_egress then creates its own.")));
}

/* A LOG_BASED stream as the publication needs it. */
typedef struct PubStream
{
	char	   *name;
	Oid			relid;
	Oid			owner;
	Jsonb	   *options;
} PubStream;

/* The publication's current entry for a table (PostgreSQL keeps it up to date) */
typedef struct PubEntry
{
	Oid			relid;
	char	   *columns;		/* "a, b" (quoted), or NULL: no column list */
	char	   *qual;			/* deparsed row filter, or NULL: none */
} PubEntry;

static List *
publication_entries(Oid pubid)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(pubid)};
	List	   *result = NIL;
	int			n;

	n = egress_catalog_exec("SELECT pr.prrelid, "
							"(SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum) "
							" FROM pg_catalog.pg_attribute a WHERE a.attrelid OPERATOR(pg_catalog.=) pr.prrelid "
							" AND a.attnum OPERATOR(pg_catalog.=) ANY (pr.prattrs::pg_catalog.int2[]) "
							" AND NOT a.attisdropped), "
							"pg_catalog.pg_get_expr(pr.prqual, pr.prrelid) "
							"FROM pg_catalog.pg_publication_rel pr WHERE pr.prpubid OPERATOR(pg_catalog.=) $1",
							1, argtypes, values, NULL, true);
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		PubEntry   *e = palloc0(sizeof(PubEntry));
		bool		isnull;

		e->relid = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
		e->columns = SPI_getvalue(tup, desc, 2);
		e->qual = SPI_getvalue(tup, desc, 3);
		result = lappend(result, e);
	}
	return result;
}

static PubEntry *
publication_entry(List *entries, Oid relid)
{
	ListCell   *lc;

	foreach(lc, entries)
		if (((PubEntry *) lfirst(lc))->relid == relid)
			return lfirst(lc);
	return NULL;
}

/*
 * A stream's filter as egress_filter_sql() makes it, or NULL (with a
 * WARNING) when it no longer passes: a column of it renamed, dropped or no
 * longer readable by the owner, a type changed...  One stream's filter must
 * not fail the sync of a destination that other roles' streams share: its
 * caller falls back on what the publication holds.
 */
static char *
try_filter_sql(PubStream *ps, const char *filter)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	char	   *result = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		result = egress_filter_sql(ps->relid, filter, ps->owner, NULL);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
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
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
			edata->sqlerrcode == ERRCODE_OUT_OF_MEMORY)
			ReThrowError(edata);
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("filter of stream \"%s\" no longer applies: %s", ps->name, edata->message),
				 errdetail("Its destination's publication keeps the filter it had for the table, if any; without one, the table is left out of the publication."),
				 errhint("Remove the stream and add it again with a filter that applies.")));
		FreeErrorData(edata);
		result = NULL;
	}
	PG_END_TRY();
	return result;
}

/*
 * Whether PostgreSQL lets UPDATE and DELETE of a published table through:
 * the table has REPLICA IDENTITY FULL, or an identity index (the primary
 * key under DEFAULT, the chosen index under USING INDEX — a dropped one
 * leaves none).  For a partitioned table, each leaf partition must have
 * one, as the changes are those of the partitions.  A relation that is gone
 * counts as having one (nothing to break).
 */
bool
egress_table_has_replica_identity(Oid relid)
{
	List	   *rels;
	ListCell   *lc;
	bool		result = true;

	if (get_rel_relkind(relid) == RELKIND_PARTITIONED_TABLE)
		rels = find_all_inheritors(relid, AccessShareLock, NULL);
	else
		rels = list_make1_oid(relid);
	foreach(lc, rels)
	{
		Relation	rel = try_relation_open(lfirst_oid(lc), AccessShareLock);

		if (rel == NULL)
			continue;
		if (rel->rd_rel->relkind == RELKIND_RELATION &&
			rel->rd_rel->relreplident != REPLICA_IDENTITY_FULL &&
			!OidIsValid(RelationGetReplicaIndex(rel)))
			result = false;
		relation_close(rel, AccessShareLock);
		if (!result)
			break;
	}
	list_free(rels);
	return result;
}

void
egress_publication_sync(const char *destination)
{
	Jsonb	   *dest_options;
	char	   *pubname;
	Oid			pubid;
	Oid			owner;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	List	   *streams = NIL;
	List	   *relids = NIL;
	List	   *entries;
	ListCell   *lc;
	StringInfoData sql;
	int			n;

	/*
	 * The publication's tables are computed from the streams this
	 * transaction sees, and ALTER PUBLICATION ... SET TABLE replaces them
	 * all: two transactions doing this at once for one destination must not
	 * each miss the other's stream.  Updating the destination's row makes
	 * them take turns: under READ COMMITTED the second waits here for the
	 * first to end, and its statements after the wait see the first's
	 * streams; under REPEATABLE READ or SERIALIZABLE it fails with a
	 * serialization error instead of using a snapshot that misses them.
	 */
	dest_options = destination_options(destination, true);
	if (dest_options == NULL ||
		strcmp(egress_destination_decoder(dest_options), EGRESS_PLUGIN_PGOUTPUT) != 0)
		return;
	pubname = egress_publication_name(destination);
	if (!publication_lookup(pubname, &pubid, &owner))
	{
		create_publication(destination, pubname);
		if (!publication_lookup(pubname, &pubid, &owner))
			elog(ERROR, "publication \"%s\" was not created", pubname);
	}
	else if (owner != BOOTSTRAP_SUPERUSERID)
		not_ours(pubname, destination);

	entries = publication_entries(pubid);
	values[0] = CStringGetTextDatum(destination);
	n = egress_catalog_exec("SELECT name, relid, owner::pg_catalog.oid, options FROM egress.stream "
							"WHERE destination OPERATOR(pg_catalog.=) $1 "
							"AND method OPERATOR(pg_catalog.=) 'LOG_BASED' ORDER BY id",
							1, argtypes, values, NULL, false);
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		PubStream  *ps = palloc0(sizeof(PubStream));
		bool		isnull;

		ps->name = SPI_getvalue(tup, desc, 1);
		ps->relid = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
		ps->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
		ps->options = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 4, &isnull));
		streams = lappend(streams, ps);
	}

	/*
	 * One entry per table: a table streamed twice to one destination is so
	 * only without columns and filter (egress_add_stream checks it).  A
	 * stream of a dropped table has no table any more.
	 */
	initStringInfo(&sql);
	foreach(lc, streams)
	{
		PubStream  *ps = lfirst(lc);
		PubEntry   *entry;
		List	   *columns;
		char	   *filter;
		char	   *filter_sql = NULL;
		char	   *relname;
		char	   *nspname;
		StringInfoData cols;
		bool		missing = false;
		ListCell   *cc;

		if (list_member_oid(relids, ps->relid))
			continue;
		relname = get_rel_name(ps->relid);
		nspname = relname ? get_namespace_name(get_rel_namespace(ps->relid)) : NULL;
		if (relname == NULL || nspname == NULL)
			continue;

		/*
		 * A table without a usable replica identity (REPLICA IDENTITY
		 * NOTHING, DEFAULT without a primary key, an identity index dropped;
		 * for a partitioned table: any leaf so) stays out: while it is in a
		 * publication that publishes updates and deletes, PostgreSQL fails
		 * every UPDATE and DELETE of the application.  egress_add_stream
		 * refuses such tables; this catches DDL since.  The CDC worker puts
		 * the stream into state error (egress_table_has_replica_identity).
		 */
		if (!egress_table_has_replica_identity(ps->relid))
		{
			/* another role's stream and table are not named to the caller */
			if (!has_privs_of_role(GetOuterUserId(), ps->owner))
				ereport(WARNING,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("the table of a stream of another role has no replica identity"),
						 errdetail("It is left out of the publication of destination \"%s\".",
								   destination)));
			else
				ereport(WARNING,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("table %s of stream \"%s\" has no replica identity",
								quote_qualified_identifier(nspname, relname), ps->name),
						 errdetail("It is left out of the publication of destination \"%s\": PostgreSQL fails every UPDATE and DELETE of a table without a replica identity while a publication publishes them.",
								   destination),
						 errhint("Give the table a primary key, or set REPLICA IDENTITY USING INDEX or FULL, then resync the stream.")));
			continue;
		}

		entry = publication_entry(entries, ps->relid);

		/*
		 * The column list: the stream's columns by name.  A column renamed
		 * or dropped since no longer has its name; then the publication's
		 * list (kept by attribute number, so renames follow), else those
		 * that remain.  Never no list at all for a stream that has one: the
		 * publication would send every column, also those its owner may not
		 * read.
		 */
		columns = egress_stream_columns(ps->options);
		initStringInfo(&cols);
		foreach(cc, columns)
		{
			const char *col = lfirst(cc);

			if (get_attnum(ps->relid, col) <= 0)
			{
				missing = true;
				continue;
			}
			appendStringInfo(&cols, "%s%s", cols.len > 0 ? ", " : "", quote_identifier(col));
		}
		if (missing && entry != NULL && entry->columns != NULL)
		{
			resetStringInfo(&cols);
			appendStringInfoString(&cols, entry->columns);
		}
		if (columns != NIL && cols.len == 0)
		{
			ereport(WARNING,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("none of the columns of stream \"%s\" exists any more", ps->name),
					 errdetail("The table is left out of its destination's publication.")));
			continue;
		}

		/* the row filter: likewise the publication's when it no longer applies */
		filter = egress_stream_filter(ps->options);
		if (filter != NULL)
		{
			filter_sql = try_filter_sql(ps, filter);
			if (filter_sql == NULL && entry != NULL && entry->qual != NULL)
				filter_sql = entry->qual;
			if (filter_sql == NULL)
				continue;
		}

		relids = lappend_oid(relids, ps->relid);
		appendStringInfo(&sql, "%sONLY %s", sql.len > 0 ? ", " : "",
						 quote_qualified_identifier(nspname, relname));
		if (cols.len > 0)
			appendStringInfo(&sql, " (%s)", cols.data);
		if (filter_sql != NULL)
			appendStringInfo(&sql, " WHERE (%s)", filter_sql);
	}

	if (sql.len > 0)
	{
		publication_exec(psprintf("ALTER PUBLICATION %s SET TABLE %s",
									 quote_identifier(pubname), sql.data));
		return;
	}

	/* no table any more: drop the ones it has */
	{
		Oid			pargtypes[1] = {OIDOID};
		Datum		pvalues[1] = {ObjectIdGetDatum(pubid)};

		n = egress_catalog_exec("SELECT pg_catalog.quote_ident(n.nspname) OPERATOR(pg_catalog.||) '.' "
								"OPERATOR(pg_catalog.||) pg_catalog.quote_ident(c.relname) "
								"FROM pg_catalog.pg_publication_rel pr "
								"JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) pr.prrelid "
								"JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace "
								"WHERE pr.prpubid OPERATOR(pg_catalog.=) $1",
								1, pargtypes, pvalues, NULL, false);
		for (int i = 0; i < n; i++)
			appendStringInfo(&sql, "%sONLY %s", i > 0 ? ", " : "",
							 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
		if (n > 0)
			publication_exec(psprintf("ALTER PUBLICATION %s DROP TABLE %s",
										 quote_identifier(pubname), sql.data));
	}
}

void
egress_publication_drop(const char *destination)
{
	Jsonb	   *dest_options = destination_options(destination, false);
	char	   *pubname = egress_publication_name(destination);
	Oid			pubid;
	Oid			owner;

	if (dest_options == NULL ||
		strcmp(egress_destination_decoder(dest_options), EGRESS_PLUGIN_PGOUTPUT) != 0)
		return;
	if (!publication_lookup(pubname, &pubid, &owner) || owner != BOOTSTRAP_SUPERUSERID)
		return;
	publication_exec(psprintf("DROP PUBLICATION %s", quote_identifier(pubname)));
}

List *
egress_stream_columns(Jsonb *options)
{
	JsonbValue	k;
	JsonbValue *v;
	JsonbIterator *it;
	JsonbValue	e;
	JsonbIteratorToken tok;
	List	   *result = NIL;

	if (options == NULL || !JB_ROOT_IS_OBJECT(options))
		return NIL;
	k.type = jbvString;
	k.val.string.val = "columns";
	k.val.string.len = strlen("columns");
	v = findJsonbValueFromContainer(&options->root, JB_FOBJECT, &k);
	if (v == NULL || v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
		return NIL;
	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &e, true)) != WJB_DONE)
		if (tok == WJB_ELEM && e.type == jbvString)
			result = lappend(result, pnstrdup(e.val.string.val, e.val.string.len));
	return result;
}

char *
egress_stream_filter(Jsonb *options)
{
	return egress_jsonb_get_string(options, "filter");
}

/*
 * Parser errors point into the statement made here, not into the caller's:
 * show them as an internal query, and say which option it was.
 */
static void
filter_error_callback(void *arg)
{
	const char *sql = (const char *) arg;
	int			pos = geterrposition();

	if (pos > 0)
	{
		errposition(0);
		internalerrposition(pos);
		internalerrquery(sql);
	}
	errcontext("stream option \"filter\"");
}

static void
bad_filter(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("stream option \"filter\" must be one SQL boolean expression"),
			 errdetail("%s", detail)));
}

/*
 * The filter's tokens: parentheses that close only what the filter opened
 * and no semicolon, so that "x) OR (y" or "x); DROP ..." is refused for
 * what it is rather than for what the wrapping makes of it.
 */
static void
check_filter_tokens(const char *filter)
{
	core_yyscan_t scanner;
	core_yy_extra_type yyextra;
	core_YYSTYPE yylval;
	YYLTYPE		yylloc;
	int			depth = 0;
	int			tok;

	scanner = scanner_init(filter, &yyextra, &ScanKeywords, ScanKeywordTokens);
	while ((tok = core_yylex(&yylval, &yylloc, scanner)) != 0)
	{
		if (tok == '(')
			depth++;
		else if (tok == ')' && --depth < 0)
			bad_filter("It closes a parenthesis it did not open.");
		else if (tok == ';')
			bad_filter("It contains a semicolon.");
	}
	scanner_finish(scanner);
	if (depth != 0)
		bad_filter("It leaves a parenthesis open.");
}

static bool
filter_function_refused(Oid funcid, void *context)
{
	return funcid >= FirstNormalObjectId || func_volatile(funcid) != PROVOLATILE_IMMUTABLE;
}

/*
 * What a PostgreSQL 15 publication's row filter may hold, so that a filter
 * means the same to the publication and to the reads, and so that nothing
 * in it runs code of any role: columns (no system columns), constants,
 * built-in operators, immutable built-in functions, built-in types and
 * collations, and the plain expression nodes that combine them.
 */
static bool
filter_walker(Node *node, void *context)
{
	const char *problem = NULL;

	if (node == NULL)
		return false;
	switch (nodeTag(node))
	{
		case T_Var:
			if (((Var *) node)->varattno < 0)
				problem = "System columns are not allowed.";
			break;
		case T_OpExpr:
		case T_DistinctExpr:
		case T_NullIfExpr:
			if (((OpExpr *) node)->opno >= FirstNormalObjectId)
				problem = "User-defined operators are not allowed.";
			break;
		case T_ScalarArrayOpExpr:
			if (((ScalarArrayOpExpr *) node)->opno >= FirstNormalObjectId)
				problem = "User-defined operators are not allowed.";
			break;
		case T_RowCompareExpr:
			{
				ListCell   *lc;

				foreach(lc, ((RowCompareExpr *) node)->opnos)
					if (lfirst_oid(lc) >= FirstNormalObjectId)
						problem = "User-defined operators are not allowed.";
			}
			break;
		case T_Const:
		case T_FuncExpr:
		case T_BoolExpr:
		case T_RelabelType:
		case T_CollateExpr:
		case T_CaseExpr:
		case T_CaseTestExpr:
		case T_ArrayExpr:
		case T_RowExpr:
		case T_CoalesceExpr:
		case T_MinMaxExpr:
		case T_XmlExpr:
		case T_NullTest:
		case T_BooleanTest:
		case T_List:
			break;
		default:
			problem = "Only columns, constants, built-in operators, built-in data types, built-in collations, and immutable built-in functions are allowed.";
			break;
	}
	if (problem == NULL && !IsA(node, List))
	{
		if (exprType(node) >= FirstNormalObjectId)
			problem = "User-defined types are not allowed.";
		else if (check_functions_in_node(node, filter_function_refused, NULL))
			problem = "User-defined or built-in mutable functions are not allowed.";
		else if (exprCollation(node) >= FirstNormalObjectId ||
				 exprInputCollation(node) >= FirstNormalObjectId)
			problem = "User-defined collations are not allowed.";
	}
	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("invalid stream filter"),
				 errdetail("%s", problem),
				 errhint("A filter follows the rules of a publication's row filter (WHERE clause).")));
	return expression_tree_walker(node, filter_walker, context);
}

char *
egress_filter_sql(Oid relid, const char *filter, Oid owner, Bitmapset **attnos)
{
	char	   *sql;
	List	   *raw;
	SelectStmt *sel;
	ParseState *pstate;
	ParseNamespaceItem *nsitem;
	Relation	rel;
	Node	   *expr;
	Bitmapset  *used = NULL;
	int			x;
	char	   *result;
	EgressOwnerSave owner_save;
	ErrorContextCallback errcb;
	bool		table_select;

	/*
	 * As the owner, restricted, names resolved in pg_catalog only: the
	 * parser runs type input functions for constants (a domain's CHECK
	 * inside a composite literal is its owner's code).
	 */
	egress_become_owner(owner, &owner_save);
	egress_pin_search_path();
	/* the text means the same in every session that reads it */
	(void) set_config_option("standard_conforming_strings", "on", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("backslash_quote", "safe_encoding", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	/*
	 * ... and its constants the same for the publication (made in the
	 * caller's session) and for the reads (in a worker, whose output settings
	 * egress_pin_output_settings() pins): '2020-01-01' of a timestamptz, a
	 * date in DMY or '{NULL}' must not be two different values.
	 */
	egress_pin_value_settings(true);
	(void) set_config_option("array_nulls", "on", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);

	sql = psprintf("SELECT 1 WHERE (%s\n)", filter);
	errcb.callback = filter_error_callback;
	errcb.arg = sql;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	errcb.arg = (void *) filter;
	check_filter_tokens(filter);
	errcb.arg = sql;
	raw = raw_parser(sql, RAW_PARSE_DEFAULT);
	if (list_length(raw) != 1 || !IsA(linitial_node(RawStmt, raw)->stmt, SelectStmt))
		bad_filter("It is more than one expression.");
	sel = (SelectStmt *) linitial_node(RawStmt, raw)->stmt;
	if (sel->op != SETOP_NONE || sel->distinctClause != NIL || sel->intoClause != NULL ||
		list_length(sel->targetList) != 1 || sel->fromClause != NIL ||
		sel->whereClause == NULL || sel->groupClause != NIL || sel->havingClause != NULL ||
		sel->windowClause != NIL || sel->valuesLists != NIL || sel->sortClause != NIL ||
		sel->limitOffset != NULL || sel->limitCount != NULL || sel->lockingClause != NIL ||
		sel->withClause != NULL)
		bad_filter("It is more than one expression.");

	rel = relation_open(relid, AccessShareLock);
	pstate = make_parsestate(NULL);
	nsitem = addRangeTableEntryForRelation(pstate, rel, AccessShareLock, NULL,
										   false, false);
	addNSItemToQuery(pstate, nsitem, false, true, true);
	expr = transformWhereClause(pstate, sel->whereClause, EXPR_KIND_WHERE, "WHERE");
	assign_expr_collations(pstate, expr);
	(void) filter_walker(expr, NULL);
	free_parsestate(pstate);

	/* the owner reads the columns it uses (a whole row has a table type) */
	pull_varattnos(expr, 1, &used);
	table_select = pg_class_aclcheck(relid, owner, ACL_SELECT) == ACLCHECK_OK;
	x = -1;
	while ((x = bms_next_member(used, x)) >= 0)
	{
		AttrNumber	attnum = x + FirstLowInvalidHeapAttributeNumber;

		if (!table_select && attnum > 0 &&
			pg_attribute_aclcheck(relid, attnum, owner, ACL_SELECT) != ACLCHECK_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for column %s of relation %s",
							quote_identifier(get_attname(relid, attnum, false)),
							quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
													   RelationGetRelationName(rel))),
					 errdetail("A stream's filter reads with the privileges of the role that adds it.")));
	}

	result = deparse_expression(expr,
								deparse_context_for(RelationGetRelationName(rel), relid),
								false, false);
	relation_close(rel, NoLock);

	error_context_stack = errcb.previous;

	/*
	 * false: also undo what code run as the owner may have set (a domain's
	 * CHECK in a composite constant runs before filter_walker refuses it),
	 * as PostgreSQL does after running a table owner's code in maintenance
	 * commands; a plain SET would otherwise outlive this nest level and stay
	 * in the caller's session.
	 */
	egress_restore_owner(&owner_save);

	if (attnos)
		*attnos = used;
	return result;
}
