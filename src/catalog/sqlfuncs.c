/*-------------------------------------------------------------------------
 * sqlfuncs.c
 *	  The egress_* administration functions.
 *
 * Each validates every argument before it writes anything, so an error
 * leaves no partial rows; the writes happen in the caller's transaction and
 * the database worker is woken only when that transaction commits.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/sysattr.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "commands/extension.h"
#include "access/genam.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "utils/fmgroids.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_namespace.h"
#include "storage/lmgr.h"
#include "utils/syscache.h"
#include "utils/rel.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"

#include "catalog/catalog.h"
#include "catalog/check.h"
#include "catalog/publication.h"
#include "catalog/sqlfuncs.h"
#include "catalog/takeover.h"
#include "encode/singer_types.h"
#include "egress_slots.h"
#include "pg_egress.h"
#include "replication/slot.h"

PG_FUNCTION_INFO_V1(egress_add_destination);
PG_FUNCTION_INFO_V1(egress_remove_destination);
PG_FUNCTION_INFO_V1(egress_add_stream);
PG_FUNCTION_INFO_V1(egress_remove_stream);
PG_FUNCTION_INFO_V1(egress_pause_stream);
PG_FUNCTION_INFO_V1(egress_resume_stream);
PG_FUNCTION_INFO_V1(egress_resync_stream);
PG_FUNCTION_INFO_V1(egress_sync_now);

#define MAX_NAME_LEN 48

/* Stream options and the kind of value each takes. */
typedef struct OptionSpec
{
	const char *name;
	enum
	{
		OPT_POSITIVE_INT,
		OPT_NONNEG_INT,			/* 0 .. INT64_MAX */
		OPT_BOOL,
		OPT_CHOICE,				/* one of two strings, in choices */
		OPT_INTERVAL,
		OPT_OBJECT,
		OPT_STRING,
		OPT_NAME_LIST			/* a non-empty JSON array of distinct names */
	}			type;
	const char *choices[2];
} OptionSpec;

static const OptionSpec stream_options[] = {
	{"batch_max_rows", OPT_POSITIVE_INT},
	{"batch_max_bytes", OPT_POSITIVE_INT},
	{"debug_lsn", OPT_BOOL},
	{"lag_policy", OPT_CHOICE, {"pause", "continue"}},
	{"replication_key", OPT_STRING},
	{"interval", OPT_INTERVAL},
	{"limit", OPT_POSITIVE_INT},
	{"state", OPT_OBJECT},
	{"fast_sync", OPT_BOOL},
	{"fast_sync_format", OPT_CHOICE, {"rds", "batch"}},
	{"columns", OPT_NAME_LIST},
	{"filter", OPT_STRING},
	{"chunk_rows", OPT_NONNEG_INT},
	{"chunk_bytes", OPT_POSITIVE_INT},
	{"parallel", OPT_POSITIVE_INT},
};

static void
require_arg(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" must not be null", argname)));
}

/*
 * Names end up in file names, slot names and HTTP headers: keep them to a
 * set of characters that is safe in all of these.
 */
static void
validate_name(const char *what, const char *name)
{
	size_t		len = strlen(name);
	bool		ok = len > 0 && len <= MAX_NAME_LEN && name[0] >= 'a' && name[0] <= 'z';

	for (size_t i = 0; ok && i < len; i++)
	{
		char		c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
			ok = false;
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("invalid %s name \"%s\"", what, name),
				 errdetail("A %s name has 1 to %d characters: lower-case letters, digits and underscores, starting with a letter.",
						   what, MAX_NAME_LEN)));
}

static void
validate_options_object(Jsonb *options, const char *argname)
{
	if (!JB_ROOT_IS_OBJECT(options) || JB_ROOT_IS_SCALAR(options))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" must be a JSON object", argname)));
}

static const char *
option_names(const OptionSpec *specs, int nspecs)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < nspecs; i++)
		appendStringInfo(&buf, "%s%s", i > 0 ? ", " : "", specs[i].name);
	return buf.data;
}

/* Every key known, every value of the right kind. */
static void
validate_options(Jsonb *options, const OptionSpec *specs, int nspecs,
				 const char *what)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *key = NULL;

	validate_options_object(options, "options");
	it = JsonbIteratorInit(&options->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		const OptionSpec *spec = NULL;

		if (tok == WJB_KEY)
		{
			key = pnstrdup(v.val.string.val, v.val.string.len);
			continue;
		}
		if (tok != WJB_VALUE)
			continue;

		for (int i = 0; i < nspecs; i++)
			if (strcmp(specs[i].name, key) == 0)
				spec = &specs[i];
		if (spec == NULL)
		{
			if (nspecs == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("unrecognized %s option \"%s\"", what, key),
						 errdetail("This kind of %s takes no options.", what)));
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unrecognized %s option \"%s\"", what, key),
					 errhint("Valid options are: %s.", option_names(specs, nspecs))));
		}

		switch (spec->type)
		{
			case OPT_BOOL:
				if (v.type != jbvBool)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("%s option \"%s\" must be true or false", what, key)));
				break;
			case OPT_CHOICE:
				{
					bool		ok = false;

					for (int c = 0; c < lengthof(spec->choices) && v.type == jbvString; c++)
						if (v.val.string.len == strlen(spec->choices[c]) &&
							strncmp(v.val.string.val, spec->choices[c], v.val.string.len) == 0)
							ok = true;
					if (!ok)
						ereport(ERROR,
								(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
								 errmsg("%s option \"%s\" must be \"%s\" or \"%s\"", what, key,
										spec->choices[0], spec->choices[1])));
				}
				break;
			case OPT_STRING:
				if (v.type != jbvString || v.val.string.len == 0)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("%s option \"%s\" must be a non-empty string", what, key)));
				break;
			case OPT_OBJECT:
				if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("%s option \"%s\" must be a JSON object", what, key)));
				break;
			case OPT_INTERVAL:
				{
					/*
					 * seconds (a number) or an interval string, at least
					 * 100ms (a run is a new background worker) and at most
					 * 366 days (the next run's time must stay in range)
					 */
					bool		ok;

					if (v.type == jbvNumeric)
					{
						float8		secs = DatumGetFloat8(DirectFunctionCall1(numeric_float8_no_overflow,
																			  NumericGetDatum(v.val.numeric)));

						ok = secs >= 0.1 && secs <= 366.0 * SECS_PER_DAY;
					}
					else if (v.type == jbvString)
					{
						Interval	iv;
						Interval	least;
						Interval	most;

						/* not an interval: this message, naming the option */
						ok = egress_parse_interval(pnstrdup(v.val.string.val, v.val.string.len),
												   &iv);
						memset(&least, 0, sizeof(least));
						least.time = 100 * INT64CONST(1000);
						memset(&most, 0, sizeof(most));
						most.day = 366;
						ok = ok &&
							DatumGetBool(DirectFunctionCall2(interval_ge,
															 IntervalPGetDatum(&iv),
															 IntervalPGetDatum(&least))) &&
							DatumGetBool(DirectFunctionCall2(interval_le,
															 IntervalPGetDatum(&iv),
															 IntervalPGetDatum(&most)));
					}
					else
						ok = false;
					if (!ok)
						ereport(ERROR,
								(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
								 errmsg("%s option \"%s\" must be a number of seconds or an interval from 100 milliseconds to 366 days", what, key)));
				}
				break;
			case OPT_NAME_LIST:
				{
					JsonbIterator *ait;
					JsonbValue	e;
					JsonbIteratorToken atok;
					List	   *seen = NIL;
					bool		ok = v.type == jbvBinary && JsonContainerIsArray(v.val.binary.data);

					if (ok)
					{
						ait = JsonbIteratorInit(v.val.binary.data);
						while ((atok = JsonbIteratorNext(&ait, &e, true)) != WJB_DONE)
						{
							char	   *elem;
							ListCell   *lc;

							if (atok != WJB_ELEM)
								continue;
							if (e.type != jbvString || e.val.string.len == 0)
							{
								ok = false;
								break;
							}
							elem = pnstrdup(e.val.string.val, e.val.string.len);
							foreach(lc, seen)
								if (strcmp(lfirst(lc), elem) == 0)
									ereport(ERROR,
											(errcode(ERRCODE_DUPLICATE_COLUMN),
											 errmsg("%s option \"%s\" names column \"%s\" twice",
													what, key, elem)));
							seen = lappend(seen, elem);
						}
					}
					if (!ok || seen == NIL)
						ereport(ERROR,
								(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
								 errmsg("%s option \"%s\" must be a non-empty JSON array of column names", what, key)));
				}
				break;
			case OPT_POSITIVE_INT:
			case OPT_NONNEG_INT:
				{
					bool		ok = false;
					int64		least = spec->type == OPT_POSITIVE_INT ? 1 : 0;

					if (v.type == jbvNumeric)
					{
						Numeric		n = v.val.numeric;
						char	   *txt = DatumGetCString(DirectFunctionCall1(numeric_out,
																			   NumericGetDatum(n)));

						/* an integer in least .. INT64_MAX */
						ok = strspn(txt, "0123456789") == strlen(txt) &&
							strlen(txt) <= 18 && strtoll(txt, NULL, 10) >= least;
					}
					if (!ok)
						ereport(ERROR,
								(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
								 least > 0 ?
								 errmsg("%s option \"%s\" must be a positive integer", what, key) :
								 errmsg("%s option \"%s\" must be an integer of 0 or more", what, key)));
				}
				break;
		}
	}
}

/* The schema of extension pg_egress, or InvalidOid (PG 15 exports no helper). */
static Oid
egress_extension_schema(void)
{
	Oid			extoid = get_extension_oid("pg_egress", true);
	Oid			result = InvalidOid;
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;

	if (!OidIsValid(extoid))
		return InvalidOid;
	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(extoid));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
		result = ((Form_pg_extension) GETSTRUCT(tup))->extnamespace;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return result;
}

/*
 * May role use the server's S3 credentials, as egress_export() does?
 * Superusers, and roles allowed to execute egress_export(text, text, text)
 * of the extension's schema (not granted to PUBLIC).
 */
static bool
may_use_s3_credentials(Oid role)
{
	Oid			extschema;
	Oid			fnoid = InvalidOid;
	Oid			argtypes[3] = {TEXTOID, TEXTOID, TEXTOID};

	if (superuser_arg(role))
		return true;
	extschema = egress_extension_schema();
	if (OidIsValid(extschema))
	{
		char	   *nspname = get_namespace_name(extschema);

		if (nspname != NULL)
			fnoid = LookupFuncName(list_make2(makeString(nspname),
											  makeString("egress_export")),
								   3, argtypes, true);
	}
	return OidIsValid(fnoid) && pg_proc_aclcheck(fnoid, role, ACL_EXECUTE) == ACLCHECK_OK;
}

/*
 * egress_destination_use_problem
 *		What keeps role from sending a stream to a destination of this kind
 *		owned by dest_owner (InvalidOid: not checked), or NULL when nothing
 *		does.  The one rule for egress_add_destination(), egress_add_stream()
 *		and the workers, which check it again whenever they open a sink: a
 *		right revoked since the stream was added stops it.
 *
 *		file: the rights of COPY to a file (pg_write_server_files);
 *		s3, kinesis: the server's S3 (AWS) credentials (see may_use_s3_credentials);
 *		any kind: the privileges of the destination's owner.
 *
 *		Caller is in a transaction; the message is palloc'd.
 */
char *
egress_destination_use_problem(Oid role, const char *kind, Oid dest_owner)
{
	char	   *rolename = GetUserNameFromId(role, true);

	if (rolename == NULL)
		return psprintf("role %u no longer exists", role);
	if (OidIsValid(dest_owner) && !has_privs_of_role(role, dest_owner))
	{
		char	   *ownername = GetUserNameFromId(dest_owner, true);

		return ownername ?
			psprintf("role \"%s\" no longer has the privileges of role \"%s\", the owner of the destination",
					 rolename, ownername) :
			psprintf("the role that owned the destination no longer exists");
	}
	if (strcmp(kind, "file") == 0 && !has_privs_of_role(role, ROLE_PG_WRITE_SERVER_FILES))
		return psprintf("role \"%s\" has no privileges of role \"pg_write_server_files\", which file destinations need",
						rolename);
	if ((strcmp(kind, "s3") == 0 || strcmp(kind, "kinesis") == 0) &&
		!may_use_s3_credentials(role))
		return psprintf("role \"%s\" may not use the server's S3 credentials, which S3 destinations need",
						rolename);
	return NULL;
}

/*
 * In a worker: the stream's owner may still send the stream to its
 * destination, or ERROR (which the worker records as the stream's error).
 * Called in a transaction or between a worker's transactions, after the
 * stream was claimed (its resync request taken: no restart loop).
 */
void
egress_check_destination_use(EgressStreamDef *def)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	bool		in_xact = IsTransactionState();
	char	   *problem;

	/* between a worker's transactions: one of its own, to read the catalog */
	if (!in_xact)
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
	}
	problem = egress_destination_use_problem(def->owner, def->dest_kind, def->dest_owner);
	if (problem != NULL)
		problem = MemoryContextStrdup(oldcxt, problem);
	if (!in_xact)
		CommitTransactionCommand();
	MemoryContextSwitchTo(oldcxt);

	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("stream \"%s\" may no longer use destination \"%s\": %s",
						def->name, def->dest_name, problem)));
}

static void
check_write_server_files(void)
{
	if (egress_destination_use_problem(GetUserId(), "file", InvalidOid) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to write to file destinations"),
				 errdetail("File destinations need the rights of COPY to a file."),
				 errhint("Only roles with privileges of the \"pg_write_server_files\" role may use file destinations.")));
}

/*
 * S3 destinations write with the server's S3 credentials, as egress_export()
 * does: they need superuser or the right to execute egress_export(), which
 * is not granted to PUBLIC.
 */
static void
check_s3_credentials_use(void)
{
	if (egress_destination_use_problem(GetUserId(), "s3", InvalidOid) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to use S3 destinations"),
				 errdetail("S3 destinations write with the server's S3 credentials."),
				 errhint("Only superusers and roles allowed to execute egress_export(text, text, text) may add S3 destinations.")));
}

/*
 * Does the replica identity index hold every primary key column (true
 * without a primary key)?
 */
static bool
identity_covers_primary_key(Relation rel)
{
	Bitmapset  *pk = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_PRIMARY_KEY);
	Bitmapset  *ident = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_IDENTITY_KEY);

	return bms_is_subset(pk, ident);
}

/*
 * UPDATEs and DELETEs of a LOG_BASED stream's table must say which row they
 * change: a primary key, a replica identity index, or REPLICA IDENTITY
 * FULL, on the table and (for a partitioned table) on every partition,
 * since each partition logs its own replica identity.
 */
static void
check_changes_keyed(Oid relid, const char *qualified)
{
	List	   *rels = find_all_inheritors(relid, AccessShareLock, NULL);
	ListCell   *lc;

	foreach(lc, rels)
	{
		Relation	rel = relation_open(lfirst_oid(lc), NoLock);
		char		ident = rel->rd_rel->relreplident;
		bool		keyed;

		if (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE && lfirst_oid(lc) != relid)
			keyed = true;		/* holds no rows itself */
		else if (ident == REPLICA_IDENTITY_FULL || ident == REPLICA_IDENTITY_INDEX)
			keyed = true;
		else if (ident == REPLICA_IDENTITY_DEFAULT)
			keyed = OidIsValid(RelationGetPrimaryKeyIndex(rel));
		else
			keyed = false;
		if (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE && lfirst_oid(lc) == relid &&
			list_length(rels) > 1 && ident != REPLICA_IDENTITY_NOTHING)
			keyed = true;		/* its partitions decide */
		if (ident == REPLICA_IDENTITY_INDEX && rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE &&
			!identity_covers_primary_key(rel))
		{
			char	   *name = pstrdup(RelationGetRelationName(rel));

			relation_close(rel, NoLock);
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cannot stream changes of \"%s\": the replica identity index of \"%s\" does not cover its primary key",
							qualified, name),
					 errdetail("Deletes and key changes would carry only the identity index's columns, not the primary key that the stream's records are keyed by."),
					 errhint("Use REPLICA IDENTITY DEFAULT or FULL, or an identity index that contains the primary key's columns.")));
		}
		if (!keyed)
		{
			char	   *name = pstrdup(RelationGetRelationName(rel));

			relation_close(rel, NoLock);
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cannot stream changes of \"%s\": updates and deletes of \"%s\" cannot be keyed",
							qualified, name),
					 errdetail("The table has no primary key and its replica identity is not FULL."),
					 errhint("Add a primary key, or run ALTER TABLE ... REPLICA IDENTITY FULL.")));
		}
		relation_close(rel, NoLock);
	}
}

/*
 * The destination's slot can be used or made, and one more slot is free
 * for the initial sync's snapshot.
 *
 * An existing slot the destination did not create (slot_owned false), under
 * the name of option "slot_name" or the default name pg_egress_<dest>,
 * would be adopted: consumed and advanced, maybe under another tool's feet.
 * That needs the REPLICATION attribute of the destination's owner (as
 * "slot_name" does of its setter), except for a slot pg_egress made for a
 * removed destination of the same name, waiting in egress.dropped_slot for
 * the database worker: that one the CDC worker takes over.  Caller is
 * inside egress_catalog_enter().
 */
/*
 * Whether a slot is a removed destination's, waiting in egress.dropped_slot
 * for the database worker.  Caller is inside egress_catalog_enter().
 */
static bool
slot_is_dropped(const char *slot_name)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(slot_name)};

	return egress_catalog_exec("SELECT 1 FROM egress.dropped_slot "
							   "WHERE slot_name OPERATOR(pg_catalog.=) $1::pg_catalog.name",
							   1, argtypes, values, NULL, true) > 0;
}

static void
check_slot_available(const char *dest, const char *slot_name, Oid dest_owner,
					 bool slot_owned)
{
	char	   *plugin = NULL;
	Oid			dboid = InvalidOid;
	bool		exists = egress_slot_lookup(slot_name, &plugin, &dboid);
	int			needed = exists ? 1 : 2;

	if (exists && (!egress_plugin_is_ours(plugin) || dboid != MyDatabaseId))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("replication slot \"%s\" cannot be used by destination \"%s\"", slot_name, dest),
				 errdetail("pg_egress needs a slot of this database with plugin pgoutput or wal2json; it has plugin \"%s\".",
						   plugin)));
	if (exists && !slot_owned && !has_rolreplication(dest_owner))
	{
		if (!slot_is_dropped(slot_name))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to use replication slot \"%s\" for destination \"%s\"",
							slot_name, dest),
					 errdetail("The slot exists and destination \"%s\" did not create it: consuming it would take changes from the tool that made it.",
							   dest),
					 errhint("Only destinations owned by superusers or roles with the REPLICATION attribute may use an existing slot; add the destination under another name to get a slot of its own.")));
	}
	if (egress_free_slots() < needed)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("no free replication slot for a LOG_BASED stream of destination \"%s\"", dest),
				 errdetail("%d free replication slots are needed, %d are free.", needed, egress_free_slots()),
				 errhint("Raise max_replication_slots: pg_egress uses one slot per destination and one more while an initial sync runs.")));
}

Datum
egress_add_destination(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *url;
	Jsonb	   *options;
	char	   *kind;
	char	   *location;
	char	   *slot_name;
	const char *requested;
	const char *decoder;
	EgressCatalogGuard guard;
	Oid			argtypes[5] = {TEXTOID, TEXTOID, TEXTOID, JSONBOID, OIDOID};
	Datum		values[5];

	require_arg(fcinfo, 0, "name");
	require_arg(fcinfo, 1, "url");
	require_arg(fcinfo, 2, "options");
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	url = text_to_cstring(PG_GETARG_TEXT_PP(1));
	options = PG_GETARG_JSONB_P(2);

	validate_name("destination", name);
	/* URL grammar and options: the destination kind's (sink/sink.c) */
	kind = (char *) egress_validate_destination(url, options, GetUserId(), &location);
	if (strcmp(kind, "file") == 0)
		check_write_server_files();
	else if (strcmp(kind, "s3") == 0 || strcmp(kind, "kinesis") == 0)
		check_s3_credentials_use();

	egress_catalog_enter(&guard);
	values[0] = CStringGetTextDatum(name);
	if (egress_catalog_exec("SELECT 1 FROM egress.destination WHERE name OPERATOR(pg_catalog.=) $1",
							1, argtypes, values, NULL, false) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("destination \"%s\" already exists", name)));

	/*
	 * The decoder: option "decoder" (default pgoutput), unless the slot the
	 * destination would take over was made for wal2json (a tap's): then
	 * wal2json, written into the options so that everyone reads one answer.
	 * A pgoutput destination gets its publication now, so that it exists
	 * before its slot's first change.
	 */
	slot_name = egress_jsonb_get_string(options, "slot_name");
	if (slot_name == NULL)
		slot_name = psprintf("pg_egress_%s", name);
	requested = egress_jsonb_get_string(options, "decoder");
	decoder = egress_takeover_decoder(name, slot_name, requested);
	if (requested == NULL && strcmp(decoder, EGRESS_PLUGIN_PGOUTPUT) != 0)
	{
		Datum		extra = DirectFunctionCall1(jsonb_in,
												CStringGetDatum("{\"decoder\": \"wal2json\"}"));

		options = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat, JsonbPGetDatum(options),
													 extra));
	}
	/*
	 * The row first: a concurrent call adding the same name waits here for
	 * this transaction and, once it commits, gets "already exists" rather
	 * than a unique violation of the catalog or of pg_publication.
	 */
	values[1] = CStringGetTextDatum(kind);
	values[2] = CStringGetTextDatum(location);
	values[3] = JsonbPGetDatum(options);
	values[4] = ObjectIdGetDatum(guard.save_userid);
	if (egress_catalog_exec("INSERT INTO egress.destination (name, kind, location, options, owner) "
							"VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
							5, argtypes, values, NULL, false) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("destination \"%s\" already exists", name)));
	if (strcmp(decoder, EGRESS_PLUGIN_PGOUTPUT) == 0)
		egress_publication_create(name);
	egress_catalog_exit(&guard);

	PG_RETURN_VOID();
}

Datum
egress_remove_destination(PG_FUNCTION_ARGS)
{
	char	   *name;
	bool		cascade;
	EgressCatalogGuard guard;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	bool		isnull;
	Oid			owner;
	int			nstreams;

	require_arg(fcinfo, 0, "name");
	require_arg(fcinfo, 1, "cascade");
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	cascade = PG_GETARG_BOOL(1);

	egress_catalog_enter(&guard);
	values[0] = CStringGetTextDatum(name);

	/*
	 * Whose it is, before any lock: a role that may not remove it must not
	 * hold up its owner either.  Then lock it and look again, since it may
	 * have gone meanwhile.
	 */
	for (int pass = 0; pass < 2; pass++)
	{
		if (egress_catalog_exec(pass == 0 ?
								"SELECT owner::pg_catalog.oid FROM egress.destination "
								"WHERE name OPERATOR(pg_catalog.=) $1" :
								"SELECT owner::pg_catalog.oid FROM egress.destination "
								"WHERE name OPERATOR(pg_catalog.=) $1 FOR UPDATE",
								1, argtypes, values, NULL, false) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("destination \"%s\" does not exist", name)));
		owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull));
		if (!has_privs_of_role(guard.save_userid, owner))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for destination \"%s\"", name),
					 errdetail("Only members of the destination's owner role may change it.")));
	}

	nstreams = egress_catalog_exec("SELECT s.name, s.owner::pg_catalog.oid FROM egress.stream s "
								   "WHERE s.destination OPERATOR(pg_catalog.=) $1 "
								   "ORDER BY s.name FOR UPDATE",
								   1, argtypes, values, NULL, false);
	if (nstreams > 0)
	{
		StringInfoData names;
		int			nothers = 0;

		/* the names of other roles' streams are not the caller's to see */
		initStringInfo(&names);
		for (int i = 0; i < nstreams; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			Oid			sowner = DatumGetObjectId(SPI_getbinval(tup, SPI_tuptable->tupdesc,
																2, &isnull));

			if (!has_privs_of_role(guard.save_userid, sowner))
			{
				nothers++;
				continue;
			}
			appendStringInfo(&names, "%s%s", names.len > 0 ? ", " : "",
							 SPI_getvalue(tup, SPI_tuptable->tupdesc, 1));
		}
		if (cascade && nothers > 0)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to remove destination \"%s\" with its streams", name),
					 errdetail("Streams of other roles use it.")));
		if (!cascade)
		{
			if (nothers > 0)
				appendStringInfo(&names, "%sstreams of other roles", names.len > 0 ? ", and " : "");
			ereport(ERROR,
					(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
					 errmsg("cannot remove destination \"%s\" because streams use it", name),
					 errdetail("Streams using it: %s.", names.data),
					 errhint("Remove those streams first, or use cascade => true.")));
		}
		egress_catalog_exec("DELETE FROM egress.stream WHERE destination OPERATOR(pg_catalog.=) $1",
							1, argtypes, values, NULL, false);
	}
	/* its publication goes with it; its slot after commit, by the database worker */
	egress_publication_drop(name);
	egress_catalog_exec("INSERT INTO egress.dropped_slot (slot_name) "
						"SELECT slot_name FROM egress.destination WHERE name OPERATOR(pg_catalog.=) $1 "
						"AND slot_name IS NOT NULL AND (slot_owned OR "
						"coalesce((options OPERATOR(pg_catalog.->>) 'drop_adopted_slot')::pg_catalog.bool, false)) "
						"ON CONFLICT DO NOTHING",
						1, argtypes, values, NULL, false);
	egress_catalog_exec("DELETE FROM egress.destination WHERE name OPERATOR(pg_catalog.=) $1",
						1, argtypes, values, NULL, false);
	egress_catalog_exit(&guard);

	egress_wake_dbworker_at_commit();
	PG_RETURN_VOID();
}

/*
 * Replication keys of INCREMENTAL streams: a column whose type orders as
 * users expect (what the tap reads with ORDER BY too), of a relation with a
 * primary key, which breaks ties between rows sharing a key value.
 */
static void
check_replication_key(Oid relid, const char *qualified, const char *key)
{
	AttrNumber	att = get_attnum(relid, key);
	Oid			base;

	if (att == InvalidAttrNumber || att < 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("replication key column \"%s\" of relation \"%s\" does not exist",
						key, qualified)));
	base = getBaseType(get_atttype(relid, att));
	if (base != INT2OID && base != INT4OID && base != INT8OID && base != NUMERICOID &&
		base != DATEOID && base != TIMESTAMPOID && base != TIMESTAMPTZOID &&
		base != TEXTOID && base != VARCHAROID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("replication key column \"%s\" has type %s, which INCREMENTAL streams cannot use",
						key, format_type_be(get_atttype(relid, att))),
				 errdetail("A replication key is of type smallint, integer, bigint, numeric, date, timestamp, timestamp with time zone, text or varchar.")));
	if (egress_primary_key_columns(relid) == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot add INCREMENTAL stream of \"%s\": it has no primary key", qualified),
				 errdetail("INCREMENTAL streams resume after the last (replication key, primary key) sent, so that rows sharing a key value are neither lost nor sent twice."),
				 errhint("Add a primary key, or use FULL_TABLE.")));
}

/*
 * Primary-key values the workers parse again: an INCREMENTAL stream's
 * bookmark (compared in its runs' WHERE), a LOG_BASED stream's key of a
 * row read again for its unchanged TOAST values (unless the table logs
 * whole old rows, REPLICA IDENTITY FULL).  They run as the stream's
 * owner, and must not run code a plain SELECT by the owner would not: a
 * type whose values cannot be parsed without a domain's CHECK (the
 * domain owner's code) is refused (egress_check_free_input_type).
 */
static void
check_key_types(Oid relid, const char *qualified, const char *method)
{
	ListCell   *lc;

	foreach(lc, egress_primary_key_columns(relid))
	{
		const char *col = lfirst(lc);
		Oid			typid = get_atttype(relid, get_attnum(relid, col));

		if (!OidIsValid(egress_check_free_input_type(typid, NULL)))
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot add %s stream of \"%s\": its primary key values cannot be read back safely",
							method, qualified),
					 errdetail("Primary key column \"%s\" has type %s, whose values cannot be parsed without running code of the type's owners (a domain's CHECK).",
							   col, format_type_be(typid)),
					 strcmp(method, "LOG_BASED") == 0 ?
					 errhint("Set REPLICA IDENTITY FULL on the table, or use a primary key without domains inside composite or range types.") :
					 errhint("Use a primary key without domains inside composite or range types, or use FULL_TABLE.")));
	}
}

/*
 * What a stream's owner needs to read the relation the way its workers
 * read it: SELECT on the table (or on every column; with option "columns",
 * on every column listed) and USAGE on its schema (the workers' queries
 * name it).  Uses the caches only: takes no lock.
 */
static void
check_stream_privileges(Oid relid, const char *qualified, Oid owner, List *columns)
{
	Oid			nspid = get_rel_namespace(relid);
	bool		ok = pg_class_aclcheck(relid, owner, ACL_SELECT) == ACLCHECK_OK;
	ListCell   *lc;

	if (!ok && columns == NIL)
		ok = pg_attribute_aclcheck_all(relid, owner, ACL_SELECT, ACLMASK_ALL) == ACLCHECK_OK;
	else if (!ok)
	{
		ok = true;
		foreach(lc, columns)
		{
			AttrNumber	attnum = get_attnum(relid, lfirst(lc));

			if (attnum > 0 &&
				pg_attribute_aclcheck(relid, attnum, owner, ACL_SELECT) != ACLCHECK_OK)
				ok = false;
		}
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", qualified),
				 errdetail("A stream reads with the privileges of the role that adds it.")));
	if (!OidIsValid(nspid) ||
		pg_namespace_aclcheck(nspid, owner, ACL_USAGE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for schema %s",
						OidIsValid(nspid) ? quote_identifier(get_namespace_name(nspid)) : "?"),
				 errdetail("A stream reads %s with the privileges of the role that adds it, which needs USAGE on the table's schema.",
						   qualified)));
}

/*
 * LOG_BASED streams and row-level security.  Changes are decoded from the
 * WAL, where no policy applies: a stream would send every row of every
 * change, whatever the policies let its owner see.  So the table may have
 * row security only where the policies would not apply to the owner's
 * SELECT either: the owner is a superuser or has BYPASSRLS, or owns the
 * table (is a member of its owner role) and the table does not FORCE ROW
 * LEVEL SECURITY -- what check_enable_rls() decides, for the stream's
 * owner instead of the session's user.
 *
 * Only the relation streamed counts, as for a SELECT: a query through a
 * partitioned (or inheritance) parent applies the parent's policies and not
 * its partitions', a query of a partition the partition's own.
 */
static void
check_row_security(Oid relid, const char *qualified, Oid owner)
{
	HeapTuple	tup;
	bool		rowsecurity;
	bool		force;

	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"%s\" does not exist", qualified)));
	rowsecurity = ((Form_pg_class) GETSTRUCT(tup))->relrowsecurity;
	force = ((Form_pg_class) GETSTRUCT(tup))->relforcerowsecurity;
	ReleaseSysCache(tup);

	if (!rowsecurity || has_bypassrls_privilege(owner))
		return;
	if (pg_class_ownercheck(relid, owner) && !force)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("cannot stream changes of \"%s\": it has row-level security", qualified),
			 errdetail("LOG_BASED streams decode changes from the write-ahead log, where the table's row-level security policies cannot filter them, and the policies apply to role \"%s\".",
					   GetUserNameFromId(owner, false)),
			 errhint("Grant the role BYPASSRLS, use a FULL_TABLE or INCREMENTAL stream (they read through the policies), or have the table's owner add the stream.")));
}

/*
 * Stream options "columns" and "filter": what the stream sends of the
 * relation, the same for every read (FULL_TABLE, INCREMENTAL, the initial
 * sync of LOG_BASED streams) and for changes (the publication's column
 * list and row filter).  Checked here as far as they do not depend on the
 * destination's decoder (check_columns_filter_decoder does the rest).
 *
 * A LOG_BASED table's column list and row filter also bind the
 * application: PostgreSQL 15 fails an UPDATE or DELETE of a published
 * table whose column list leaves out a replica identity column, or whose
 * row filter uses a column outside the replica identity (unless REPLICA
 * IDENTITY FULL), and refuses any column list under REPLICA IDENTITY FULL.
 * Those are refused here instead.
 */
static void
check_columns_filter(Oid relid, const char *qualified, char relkind, const char *method,
					 const char *replication_key, Jsonb *options, Oid owner)
{
	List	   *columns = egress_stream_columns(options);
	char	   *filter = egress_stream_filter(options);
	bool		log_based = strcmp(method, "LOG_BASED") == 0;
	bool		b;
	ListCell   *lc;
	Relation	rel;
	Bitmapset  *identity;
	char		ident;
	bool		table_select;

	if (columns == NIL && filter == NULL)
		return;
	if (egress_jsonb_get_bool(options, "fast_sync", &b) && b)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream option \"fast_sync\" cannot be combined with \"columns\" or \"filter\""),
				 errdetail("A fast sync exports the whole table.")));
	if (log_based && relkind == RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot use stream options \"columns\" or \"filter\" for LOG_BASED stream of partitioned table \"%s\"",
						qualified),
				 errdetail("Changes of a partitioned table are published as changes of its partitions, which the table's column list and row filter do not apply to."),
				 errhint("Add a stream for each partition, or use a FULL_TABLE or INCREMENTAL stream.")));

	rel = relation_open(relid, AccessShareLock);
	ident = rel->rd_rel->relreplident;
	identity = log_based ? RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_IDENTITY_KEY) : NULL;
	relation_close(rel, AccessShareLock);

	if (columns != NIL)
	{
		List	   *needed = egress_primary_key_columns(relid);
		int			x = -1;

		table_select = pg_class_aclcheck(relid, owner, ACL_SELECT) == ACLCHECK_OK;
		foreach(lc, columns)
		{
			const char *col = lfirst(lc);
			AttrNumber	attnum = get_attnum(relid, col);

			if (attnum == InvalidAttrNumber || attnum < 0)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_COLUMN),
						 errmsg("column \"%s\" of relation \"%s\" does not exist", col, qualified),
						 errcontext("stream option \"columns\"")));
			if (!table_select &&
				pg_attribute_aclcheck(relid, attnum, owner, ACL_SELECT) != ACLCHECK_OK)
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("permission denied for column %s of relation %s",
								quote_identifier(col), qualified),
						 errdetail("A stream reads with the privileges of the role that adds it.")));
		}
		if (strcmp(method, "INCREMENTAL") == 0 && replication_key != NULL)
			needed = lappend(needed, (char *) replication_key);
		while ((x = bms_next_member(identity, x)) >= 0)
			needed = lappend(needed,
							 get_attname(relid, x + FirstLowInvalidHeapAttributeNumber, false));
		foreach(lc, needed)
		{
			const char *col = lfirst(lc);
			ListCell   *cc;
			bool		found = false;

			foreach(cc, columns)
				if (strcmp(lfirst(cc), col) == 0)
					found = true;
			if (!found)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("stream option \"columns\" must include column \"%s\" of relation \"%s\"",
								col, qualified),
						 errdetail("%s",
								   strcmp(method, "INCREMENTAL") == 0 && strcmp(col, replication_key) == 0 ?
								   "The replication key's values are the stream's bookmarks." :
								   log_based ?
								   "It belongs to the table's primary key or replica identity: without it, receivers cannot key the rows, and PostgreSQL would make every UPDATE and DELETE of the table fail." :
								   "It belongs to the primary key, with which receivers key the rows.")));
		}
		if (log_based && ident == REPLICA_IDENTITY_FULL)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot use stream option \"columns\" for LOG_BASED stream of \"%s\": its replica identity is FULL",
							qualified),
					 errdetail("PostgreSQL makes every UPDATE and DELETE of a table with REPLICA IDENTITY FULL fail while a publication has a column list for it."),
					 errhint("Use REPLICA IDENTITY DEFAULT (the primary key) or USING INDEX, or leave out \"columns\".")));
	}

	if (filter != NULL)
	{
		Bitmapset  *used = NULL;

		(void) egress_filter_sql(relid, filter, owner, &used);
		if (log_based && ident != REPLICA_IDENTITY_FULL && !bms_is_subset(used, identity))
		{
			int			x = bms_next_member(bms_difference(used, identity), -1);

			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("filter of LOG_BASED stream of \"%s\" uses column \"%s\", which is not in the table's replica identity",
							qualified, get_attname(relid, x + FirstLowInvalidHeapAttributeNumber, false)),
					 errdetail("UPDATEs and DELETEs log only the replica identity's old values; PostgreSQL would make every UPDATE and DELETE of the table fail."),
					 errhint("Filter on primary key or replica identity columns, or set REPLICA IDENTITY FULL on the table.")));
		}
	}
}

/*
 * ... and what depends on the destination: wal2json cannot filter rows
 * (columns are left out by the renderer); one table has one column list
 * and row filter in a publication, so a table streamed twice to one
 * destination cannot have either.
 *
 * With pgoutput, the column list and row filter go into the destination's
 * publication, where they constrain the table's owner: PostgreSQL fails
 * the owner's UPDATE and DELETE when the replica identity changes to one
 * that does not cover them, and refuses (or, with CASCADE, silently
 * publishes without) dropping or retyping a listed or filtered column.
 * PostgreSQL itself requires ownership of a table to put it into a
 * publication; so does pg_egress for a stream with "columns" or "filter"
 * (a plain LOG_BASED stream has neither, and needs only SELECT).  Caller
 * is inside egress_catalog_enter().
 */
static void
check_columns_filter_decoder(Oid relid, const char *qualified, const char *dest,
							 const char *decoder, Jsonb *options, Oid owner)
{
	Oid			argtypes[3] = {TEXTOID, OIDOID, BOOLOID};
	Datum		values[3];
	bool		mine = egress_stream_columns(options) != NIL || egress_stream_filter(options) != NULL;

	if (mine && strcmp(decoder, EGRESS_PLUGIN_PGOUTPUT) == 0 && !superuser_arg(owner))
	{
		HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
		Oid			relowner;

		if (!HeapTupleIsValid(tup))
			elog(ERROR, "cache lookup failed for relation %u", relid);
		relowner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
		ReleaseSysCache(tup);
		if (!has_privs_of_role(owner, relowner))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to use stream options \"columns\" or \"filter\" for LOG_BASED stream of \"%s\"",
							qualified),
					 errdetail("The column list and row filter go into the publication of destination \"%s\", where they bind the table's owner: changing the replica identity, or dropping or retyping a listed or filtered column, would make the owner's UPDATE, DELETE or ALTER TABLE fail. Like PostgreSQL for publications, pg_egress requires the privileges of the table's owner for that.",
							   dest),
					 errhint("Ask the table's owner to add the stream, or leave out \"columns\" and \"filter\".")));
	}

	if (egress_stream_filter(options) != NULL &&
		strcmp(decoder, EGRESS_PLUGIN_WAL2JSON) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot use stream option \"filter\" for LOG_BASED streams of destination \"%s\"", dest),
				 errdetail("The destination decodes with wal2json, which cannot filter rows."),
				 errhint("Send the stream to a destination that decodes with pgoutput.")));
	values[0] = CStringGetTextDatum(dest);
	values[1] = ObjectIdGetDatum(relid);
	values[2] = BoolGetDatum(mine);
	if (egress_catalog_exec("SELECT 1 FROM egress.stream WHERE destination OPERATOR(pg_catalog.=) $1 "
							"AND relid OPERATOR(pg_catalog.=) $2 AND method OPERATOR(pg_catalog.=) 'LOG_BASED' "
							"AND (options OPERATOR(pg_catalog.?|) '{columns,filter}'::pg_catalog.text[] OR $3)",
							3, argtypes, values, NULL, false) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("\"%s\" is already streamed to destination \"%s\" by a LOG_BASED stream", qualified, dest),
				 errdetail("A table streamed twice to one destination cannot have \"columns\" or \"filter\": the destination's publication has one column list and row filter per table.")));
}

Datum
egress_add_stream(PG_FUNCTION_ARGS)
{
	require_arg(fcinfo, 0, "name");
	require_arg(fcinfo, 1, "relation");
	require_arg(fcinfo, 2, "method");
	require_arg(fcinfo, 3, "destination");
	require_arg(fcinfo, 5, "options");
	egress_add_stream_internal(text_to_cstring(PG_GETARG_TEXT_PP(0)),
							   PG_GETARG_OID(1),
							   text_to_cstring(PG_GETARG_TEXT_PP(2)),
							   text_to_cstring(PG_GETARG_TEXT_PP(3)),
							   PG_ARGISNULL(4) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(4)),
							   PG_GETARG_JSONB_P(5), false);
	PG_RETURN_VOID();
}

/*
 * The workers serve the database of pg_egress.database only: a stream added
 * in another one would wait in state pending forever without a word.  Say
 * it (a WARNING, once per session: egress_add_streams adds many streams)
 * and leave it in the stream's last_error, where egress_streams shows it
 * until the stream runs.
 */
static void
note_unserved_database(const char *name, int32 stream_id)
{
	static bool warned = false;
	char	   *db = get_database_name(MyDatabaseId);
	const char *served = egress_database ? egress_database : "";
	char	   *why;
	Oid			argtypes[2] = {INT4OID, TEXTOID};
	Datum		values[2];

	if (db == NULL || strcmp(db, served) == 0)
		return;
	why = psprintf("no pg_egress worker serves database \"%s\": pg_egress.database is \"%s\"; the stream waits until pg_egress.database names this database",
				   db, served);
	if (!warned)
	{
		warned = true;
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("stream \"%s\" will not run: pg_egress serves database \"%s\", not \"%s\"",
						name, served, db),
				 errdetail("The pg_egress workers serve the one database named by pg_egress.database; streams of other databases stay pending."),
				 errhint("Set pg_egress.database = '%s' in postgresql.conf and reload the configuration, or use the extension in database \"%s\".",
						 db, served)));
	}
	values[0] = Int32GetDatum(stream_id);
	values[1] = CStringGetTextDatum(why);
	egress_catalog_exec("UPDATE egress.stream_state SET last_error = $2, last_error_at = pg_catalog.now() "
						"WHERE stream_id OPERATOR(pg_catalog.=) $1",
						2, argtypes, values, NULL, false);
}

/*
 * Adds one stream, in the caller's transaction; an ERROR leaves nothing.
 * With state_missing_ok, a "state" option without a bookmark for this
 * relation is no error (patterns: one STATE for many tables).
 */
void
egress_add_stream_internal(const char *name, Oid relid, const char *method,
						   const char *dest, const char *replication_key,
						   Jsonb *options, bool state_missing_ok)
{
	char		relkind;
	char	   *relname;
	char	   *qualified;
	EgressCatalogGuard guard;
	Oid			argtypes[8] = {TEXTOID, OIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID, OIDOID};
	Datum		values[8];
	char		nulls[8] = "        ";
	bool		isnull;
	Oid			dest_owner;
	char	   *dest_kind;
	int32		stream_id;
	Oid			caller = GetUserId();
	char	   *key_option;
	Jsonb	   *state = NULL;
	EgressTakeover takeover;
	bool		taking_over = false;
	bool		fast_sync;

	validate_name("stream", name);
	validate_options(options, stream_options, lengthof(stream_options), "stream");

	/* the relation: exists, readable kind, not temporary, caller may read it */
	relname = get_rel_name(relid);
	if (relname == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	qualified = quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
										   relname);
	relkind = get_rel_relkind(relid);
	if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE &&
		relkind != RELKIND_VIEW && relkind != RELKIND_MATVIEW &&
		relkind != RELKIND_FOREIGN_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("cannot stream relation \"%s\"", qualified),
				 errdetail("Streams read tables, partitioned tables, views, materialized views and foreign tables.")));
	if (get_rel_persistence(relid) == RELPERSISTENCE_TEMP)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot stream temporary relation \"%s\"", relname),
				 errdetail("Temporary relations are visible only to the session that created them.")));

	/*
	 * The caller may read it: checked before anything below locks it, so
	 * that no role can queue locks on a relation it cannot read.  Then lock
	 * it, so that it cannot go away before this transaction commits, and
	 * check again what may have changed while waiting for the lock.
	 */
	check_stream_privileges(relid, qualified, caller, egress_stream_columns(options));
	LockRelationOid(relid, AccessShareLock);
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"%s\" does not exist", qualified)));
	check_stream_privileges(relid, qualified, caller, egress_stream_columns(options));

	/* the method */
	if (pg_strcasecmp(method, "FULL_TABLE") == 0)
		method = "FULL_TABLE";
	else if (pg_strcasecmp(method, "LOG_BASED") == 0)
		method = "LOG_BASED";
	else if (pg_strcasecmp(method, "INCREMENTAL") == 0)
		method = "INCREMENTAL";
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unrecognized replication method \"%s\"", method),
				 errhint("Valid methods are FULL_TABLE, INCREMENTAL and LOG_BASED.")));
	key_option = egress_jsonb_get_string(options, "replication_key");
	if (key_option != NULL && replication_key != NULL && strcmp(key_option, replication_key) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("replication_key \"%s\" and stream option \"replication_key\" \"%s\" differ",
						replication_key, key_option)));
	if (replication_key == NULL)
		replication_key = key_option;
	if (strcmp(method, "INCREMENTAL") == 0)
	{
		if (replication_key == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("INCREMENTAL streams need a replication key"),
					 errhint("Pass replication_key => 'column' to egress_add_stream(), or options => '{\"replication_key\": \"column\"}' to egress_add_streams().")));
		check_replication_key(relid, qualified, replication_key);
		check_key_types(relid, qualified, "INCREMENTAL");
	}
	else if (replication_key != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("replication_key is only valid for INCREMENTAL streams")));
	else
	{
		int64		dummy;
		JsonbValue	ikey;

		/* FULL_TABLE streams may be scheduled too: a new version each run */
		ikey.type = jbvString;
		ikey.val.string.val = "interval";
		ikey.val.string.len = strlen("interval");
		if (strcmp(method, "FULL_TABLE") != 0 &&
			options != NULL && JB_ROOT_IS_OBJECT(options) &&
			findJsonbValueFromContainer(&options->root, JB_FOBJECT, &ikey) != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("stream option \"interval\" is only valid for INCREMENTAL and FULL_TABLE streams"),
					 errhint("LOG_BASED streams send changes as they are committed; pg_egress.flush_interval and the destination option \"flush_interval\" decide how often.")));
		if (egress_jsonb_get_int64(options, "limit", &dummy))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("stream option \"limit\" is only valid for INCREMENTAL streams")));
	}
	if (strcmp(method, "FULL_TABLE") != 0 &&
		(egress_jsonb_get_string(options, "fast_sync_format") != NULL ||
		 egress_jsonb_get_bool(options, "fast_sync", &fast_sync)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream options \"fast_sync\" and \"fast_sync_format\" are only valid for FULL_TABLE streams")));
	if (strcmp(method, "LOG_BASED") != 0)
	{
		int64		dummy;

		if (egress_jsonb_get_int64(options, "chunk_rows", &dummy) ||
			egress_jsonb_get_int64(options, "chunk_bytes", &dummy))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("stream options \"chunk_rows\" and \"chunk_bytes\" are only valid for LOG_BASED streams"),
					 errdetail("They size the chunks of a LOG_BASED stream's initial sync.")));
	}
	/* parallel FULL_TABLE syncs: see worker/sync.c */
	{
		int64		nparallel;

		if (egress_jsonb_get_int64(options, "parallel", &nparallel))
		{
			if (strcmp(method, "FULL_TABLE") != 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("stream option \"parallel\" is only valid for FULL_TABLE streams")));
			egress_check_parallel_option(nparallel, relkind, psprintf("\"%s\"", qualified));
		}
	}
	if (strcmp(method, "LOG_BASED") == 0)
	{
		if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
			ereport(ERROR,
					(errcode(ERRCODE_WRONG_OBJECT_TYPE),
					 errmsg("cannot stream changes of \"%s\"", qualified),
					 errdetail("LOG_BASED streams read tables and partitioned tables."),
					 errhint("Use FULL_TABLE for views, materialized views and foreign tables.")));
		check_row_security(relid, qualified, caller);
		check_changes_keyed(relid, qualified);
		{
			Relation	rel = relation_open(relid, AccessShareLock);
			bool		full = rel->rd_rel->relreplident == REPLICA_IDENTITY_FULL;

			relation_close(rel, AccessShareLock);
			if (!full)
				check_key_types(relid, qualified, "LOG_BASED");
		}
	}

	check_columns_filter(relid, qualified, relkind, method, replication_key, options, caller);

	/* taking over from a tap: read its bookmark (as the caller) */
	{
		JsonbValue	k;
		JsonbValue *v;

		k.type = jbvString;
		k.val.string.val = "state";
		k.val.string.len = 5;
		v = findJsonbValueFromContainer(&options->root, JB_FOBJECT, &k);
		if (v != NULL)
			state = JsonbValueToJsonb(v);
	}
	if (state != NULL)
		taking_over = egress_takeover_parse(state, relid, method, replication_key,
											state_missing_ok, &takeover);

	/* what egress_check() would say against it (check.c) */
	egress_check_add_stream(dest, caller);

	egress_catalog_enter(&guard);

	/*
	 * The destination: exists, the caller may use it.  Whose it is is known
	 * before its row is locked and before anything about its slot is said.
	 * A LOG_BASED stream changes the destination's publication: its row is
	 * locked as egress_publication_sync() will update it, so that two such
	 * calls for one destination take turns instead of deadlocking there.
	 */
	values[0] = CStringGetTextDatum(dest);
	for (int pass = 0; pass < 2; pass++)
	{
		if (egress_catalog_exec(pass == 0 ?
								"SELECT owner::pg_catalog.oid FROM egress.destination "
								"WHERE name OPERATOR(pg_catalog.=) $1" :
								strcmp(method, "LOG_BASED") == 0 ?
								"SELECT owner::pg_catalog.oid, kind, "
								"coalesce(slot_name::pg_catalog.text, options OPERATOR(pg_catalog.->>) 'slot_name', "
								"'pg_egress_' OPERATOR(pg_catalog.||) name), "
								"slot_name IS NOT NULL AND slot_owned, options "
								"FROM egress.destination WHERE name OPERATOR(pg_catalog.=) $1 FOR NO KEY UPDATE" :
								"SELECT owner::pg_catalog.oid, kind, "
								"coalesce(slot_name::pg_catalog.text, options OPERATOR(pg_catalog.->>) 'slot_name', "
								"'pg_egress_' OPERATOR(pg_catalog.||) name), "
								"slot_name IS NOT NULL AND slot_owned, options "
								"FROM egress.destination WHERE name OPERATOR(pg_catalog.=) $1 FOR SHARE",
								1, argtypes, values, NULL, false) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("destination \"%s\" does not exist", dest),
					 errhint("Create it with egress_add_destination().")));
		dest_owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
													SPI_tuptable->tupdesc, 1, &isnull));
		if (!has_privs_of_role(caller, dest_owner))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for destination \"%s\"", dest),
					 errdetail("Only members of the destination's owner role may send streams to it.")));
	}
	dest_kind = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	/* the same rule the workers apply again whenever they open the sink */
	if (egress_destination_use_problem(caller, dest_kind, InvalidOid) != NULL)
	{
		SetUserIdAndSecContext(guard.save_userid, guard.save_sec_context);
		if (strcmp(dest_kind, "s3") == 0 || strcmp(dest_kind, "kinesis") == 0)
			check_s3_credentials_use();
		else
			check_write_server_files();
	}
	if (strcmp(method, "LOG_BASED") == 0)
	{
		char	   *slot_name = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
		bool		slot_owned = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
															SPI_tuptable->tupdesc, 4, &isnull));
		Jsonb	   *dest_options = DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0],
																	SPI_tuptable->tupdesc, 5, &isnull));
		const char *decoder = egress_destination_decoder(dest_options);
		char	   *plugin = NULL;

		/*
		 * A slot that is there already decodes with its own plugin, unless
		 * it is a removed destination's, listed in egress.dropped_slot: the
		 * CDC worker adopts that one only when its plugin is the
		 * destination's decoder, and drops it otherwise.
		 */
		if (egress_slot_lookup(slot_name, &plugin, NULL) &&
			strcmp(plugin, EGRESS_PLUGIN_WAL2JSON) == 0 &&
			!slot_is_dropped(slot_name))
			decoder = EGRESS_PLUGIN_WAL2JSON;
		egress_check_decoding_possible(decoder);
		check_slot_available(dest, slot_name, dest_owner, slot_owned);
		if (taking_over)
			egress_takeover_check_slot(&takeover, slot_name);
		check_columns_filter_decoder(relid, qualified, dest, decoder, options, caller);
	}

	values[0] = CStringGetTextDatum(name);
	if (egress_catalog_exec("SELECT 1 FROM egress.stream WHERE name OPERATOR(pg_catalog.=) $1",
							1, argtypes, values, NULL, false) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("stream \"%s\" already exists", name),
				 errhint("Choose another name; egress_add_streams() prefixes the names it makes with its option \"name_prefix\".")));

	values[1] = ObjectIdGetDatum(relid);
	values[2] = CStringGetTextDatum(qualified);
	values[3] = CStringGetTextDatum(method);
	values[4] = replication_key ? CStringGetTextDatum(replication_key) : (Datum) 0;
	nulls[4] = replication_key ? ' ' : 'n';
	values[5] = CStringGetTextDatum(dest);
	values[6] = JsonbPGetDatum(options);
	values[7] = ObjectIdGetDatum(caller);
	/* a concurrent call adding the same name: it waits here, then this */
	if (egress_catalog_exec("INSERT INTO egress.stream "
							"(name, relid, relation, method, replication_key, destination, options, owner) "
							"VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
							"ON CONFLICT (name) DO NOTHING RETURNING id",
							8, argtypes, values, nulls, false) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("stream \"%s\" already exists", name),
				 errhint("Choose another name; egress_add_streams() prefixes the names it makes with its option \"name_prefix\".")));
	stream_id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
											SPI_tuptable->tupdesc, 1, &isnull));
	argtypes[0] = INT4OID;
	values[0] = Int32GetDatum(stream_id);
	egress_catalog_exec("INSERT INTO egress.stream_state (stream_id) VALUES ($1)",
						1, argtypes, values, NULL, false);
	note_unserved_database(name, stream_id);
	if (taking_over)
	{
		/*
		 * Where the tap stopped, without an initial sync: LOG_BASED streams
		 * stream from its lsn, INCREMENTAL ones run from its key value.
		 */
		Oid			targtypes[5] = {INT4OID, TEXTOID, INT8OID, JSONBOID, LSNOID};
		Datum		tvalues[5];
		char		tnulls[5] = "     ";

		tvalues[0] = Int32GetDatum(stream_id);
		tvalues[1] = CStringGetTextDatum(takeover.log_based ? "streaming" : "pending");
		tvalues[2] = Int64GetDatum(takeover.version);
		tvalues[3] = DirectFunctionCall1(jsonb_in,
										 CStringGetDatum(egress_takeover_bookmark(&takeover, replication_key)));
		tvalues[4] = LSNGetDatum(takeover.lsn);
		if (!takeover.log_based)
			tnulls[4] = 'n';
		egress_catalog_exec("UPDATE egress.stream_state SET state = $2, resync = false, "
							"version = $3, bookmark = $4, confirmed_lsn = $5 "
							"WHERE stream_id OPERATOR(pg_catalog.=) $1",
							5, targtypes, tvalues, tnulls, false);
	}

	/*
	 * The table joins the destination's publication in this transaction:
	 * what PostgreSQL refuses in a publication refuses the stream.
	 */
	if (strcmp(method, "LOG_BASED") == 0)
		egress_publication_sync(dest);
	egress_catalog_exit(&guard);

	egress_wake_dbworker_at_commit();
}

/*
 * Checks that the caller may change the stream named by the first
 * argument, locks it, then runs the statements ($1 = the stream id).
 *
 * Another role's stream gets "permission denied" and nothing else: not its
 * method, not a lock on its row (which would hold up its owner's calls), so
 * the row is read first and locked only when it is the caller's.  With
 * refuse_log_based, a LOG_BASED stream is refused (egress_sync_now); with
 * sync_publication, the publication of a LOG_BASED stream's destination is
 * brought in step afterwards (egress_remove_stream).
 */
static void
change_own_stream_ext(FunctionCallInfo fcinfo, const char *const *sqls, int nsqls,
					  bool refuse_log_based, bool sync_publication)
{
	EgressCatalogGuard guard;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	char	   *name;
	int32		id = 0;
	bool		isnull;
	Oid			owner;
	char	   *method = NULL;
	char	   *dest = NULL;

	require_arg(fcinfo, 0, "name");
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));

	egress_catalog_enter(&guard);
	values[0] = CStringGetTextDatum(name);
	for (int pass = 0; pass < 2; pass++)
	{
		if (egress_catalog_exec(pass == 0 ?
								"SELECT id, owner::pg_catalog.oid, method, destination FROM egress.stream "
								"WHERE name OPERATOR(pg_catalog.=) $1" :
								"SELECT id, owner::pg_catalog.oid, method, destination FROM egress.stream "
								"WHERE name OPERATOR(pg_catalog.=) $1 FOR UPDATE",
								1, argtypes, values, NULL, false) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("stream \"%s\" does not exist", name)));
		id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		method = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
		dest = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4);
		if (!has_privs_of_role(guard.save_userid, owner))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for stream \"%s\"", name),
					 errdetail("Only members of the stream's owner role may change it.")));
	}
	if (refuse_log_based && method != NULL && strcmp(method, "LOG_BASED") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("stream \"%s\" is LOG_BASED: it sends changes continuously", name),
				 errhint("Use egress_resync_stream() for a new initial sync.")));

	argtypes[0] = INT4OID;
	values[0] = Int32GetDatum(id);
	for (int i = 0; i < nsqls; i++)
		egress_catalog_exec(sqls[i], 1, argtypes, values, NULL, false);
	if (sync_publication && strcmp(method, "LOG_BASED") == 0)
		egress_publication_sync(dest);
	egress_catalog_exit(&guard);

	egress_wake_dbworker_at_commit();
}

static void
change_own_stream(FunctionCallInfo fcinfo, const char *const *sqls, int nsqls)
{
	change_own_stream_ext(fcinfo, sqls, nsqls, false, false);
}

Datum
egress_remove_stream(PG_FUNCTION_ARGS)
{
	static const char *const sqls[] = {
		"DELETE FROM egress.stream WHERE id OPERATOR(pg_catalog.=) $1"
	};

	change_own_stream_ext(fcinfo, sqls, lengthof(sqls), false, true);
	PG_RETURN_VOID();
}

Datum
egress_pause_stream(PG_FUNCTION_ARGS)
{
	static const char *const sqls[] = {
		"UPDATE egress.stream SET enabled = false WHERE id = $1"
	};

	change_own_stream(fcinfo, sqls, lengthof(sqls));
	PG_RETURN_VOID();
}

/*
 * A LOG_BASED stream that was paused (or stopped by an error) missed the
 * changes its destination's slot passed meanwhile for the other streams:
 * it is synced again (state pending: a new version, a new initial sync),
 * never resumed past the gap.
 */
Datum
egress_resume_stream(PG_FUNCTION_ARGS)
{
	static const char *const sqls[] = {
		"UPDATE egress.stream_state st SET state = 'pending', "
		"resync = st.resync OR s.method OPERATOR(pg_catalog.=) 'LOG_BASED', "
		"updated_at = pg_catalog.now() "
		"FROM egress.stream s WHERE s.id OPERATOR(pg_catalog.=) st.stream_id "
		"AND st.stream_id OPERATOR(pg_catalog.=) $1 "
		"AND (st.state OPERATOR(pg_catalog.=) 'error' "
		"OR (s.method OPERATOR(pg_catalog.=) 'LOG_BASED' AND NOT s.enabled))",
		"UPDATE egress.stream SET enabled = true WHERE id OPERATOR(pg_catalog.=) $1"
	};

	change_own_stream(fcinfo, sqls, lengthof(sqls));
	PG_RETURN_VOID();
}

Datum
egress_resync_stream(PG_FUNCTION_ARGS)
{
	static const char *const sqls[] = {
		"UPDATE egress.stream_state SET resync = true, "
		"state = CASE WHEN state OPERATOR(pg_catalog.=) 'error' THEN 'pending' ELSE state END, "
		"updated_at = pg_catalog.now() WHERE stream_id OPERATOR(pg_catalog.=) $1"
	};

	/*
	 * A LOG_BASED stream's table may have been left out of the publication
	 * (no replica identity at the last sync): put it back if it has one now.
	 */
	change_own_stream_ext(fcinfo, sqls, lengthof(sqls), false, true);
	PG_RETURN_VOID();
}

/*
 * A run now: an INCREMENTAL stream's next run, a FULL_TABLE stream's
 * resync.  LOG_BASED streams send changes as they come.
 */
Datum
egress_sync_now(PG_FUNCTION_ARGS)
{
	static const char *const sqls[] = {
		"UPDATE egress.stream_state st SET "
		"resync = st.resync OR s.method OPERATOR(pg_catalog.=) 'FULL_TABLE', "
		"state = CASE WHEN s.method OPERATOR(pg_catalog.=) 'INCREMENTAL' "
		"OR st.state OPERATOR(pg_catalog.=) 'error' THEN 'pending' "
		"ELSE st.state END, updated_at = pg_catalog.now() "
		"FROM egress.stream s WHERE s.id OPERATOR(pg_catalog.=) st.stream_id "
		"AND st.stream_id OPERATOR(pg_catalog.=) $1"
	};

	change_own_stream_ext(fcinfo, sqls, lengthof(sqls), true, false);
	PG_RETURN_VOID();
}

/*
 * Stream option "parallel" (egress_add_stream(), egress_alter_stream()):
 * every part is a pg_egress worker, and parts read ranges of blocks.
 * subject names the stream or relation in the message.
 */
void
egress_check_parallel_option(int64 nparallel, char relkind, const char *subject)
{
	if (nparallel > egress_max_workers)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("parallel => " INT64_FORMAT " is more than pg_egress.max_workers (%d)",
						nparallel, egress_max_workers),
				 errdetail("Every part of a parallel sync is a pg_egress worker."),
				 errhint("Use at most %d, or raise pg_egress.max_workers.", egress_max_workers)));
	if (nparallel > 1 && relkind != RELKIND_RELATION && relkind != RELKIND_MATVIEW)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("%s cannot be read in parallel", subject),
				 errdetail("Parallel syncs read a table or materialized view in ranges of blocks."),
				 errhint("Use parallel => 1.")));
}

/*
 * A stream's options: every key known, every value of the right kind (the
 * first check egress_add_stream() makes; egress_alter_stream() makes it
 * too).
 */
void
egress_validate_stream_options(Jsonb *options)
{
	validate_options(options, stream_options, lengthof(stream_options), "stream");
}

/*
 * For egress_check() (check.c): one of the checks egress_add_stream() makes
 * of a stream's relation, with its messages; ERROR when it fails.
 */
void
egress_stream_check(EgressStreamCheck which, Oid relid, const char *qualified,
					Oid owner, List *columns)
{
	switch (which)
	{
		case EGRESS_STREAM_CHECK_PRIVILEGES:
			check_stream_privileges(relid, qualified, owner, columns);
			break;
		case EGRESS_STREAM_CHECK_ROW_SECURITY:
			check_row_security(relid, qualified, owner);
			break;
		case EGRESS_STREAM_CHECK_KEYED:
			check_changes_keyed(relid, qualified);
			break;
	}
}
