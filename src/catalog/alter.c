/*-------------------------------------------------------------------------
 * alter.c
 *	  egress_alter_destination() and egress_alter_stream(): change a
 *	  destination's URL and options, or a stream's options, in place.
 *
 * Both are a trust surface, held to the rules of the add functions:
 *   - only members of the owner role may alter (as for remove and pause);
 *     another role's destination or stream gets "permission denied" and
 *     nothing else: not its options, not a lock on its row;
 *   - the new settings are validated exactly as egress_add_destination()
 *     validates them, as the destination's owner (the role its workers
 *     send as): allowed hosts, superuser-only options, the rights of
 *     file and S3 destinations;
 *   - the catalog is read and written as the bootstrap superuser with a
 *     pinned search path (egress_catalog_enter), no user-controlled name is
 *     resolved there;
 *   - the change is a row update in the caller's transaction: an error
 *     changes nothing, and the workers see it only after commit (their
 *     configuration fingerprint covers the destination's location and
 *     options and the streams' options);
 *   - messages never show option values (header values are secrets).
 *
 * What would silently break a running pipeline is refused with a hint:
 * another kind of destination, another slot or decoder (the slot holds the
 * LOG_BASED streams' place in the WAL), another set of columns, row filter,
 * replication key or tap bookmark of a stream (its records would change
 * shape under the same table version).
 *
 * Options are given as a patch: keys given replace the old values, a key
 * given as JSON null is removed, others stay.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"

#include "catalog/catalog.h"
#include "catalog/publication.h"
#include "catalog/sqlfuncs.h"
#include "pg_egress.h"

PG_FUNCTION_INFO_V1(egress_alter_destination);
PG_FUNCTION_INFO_V1(egress_alter_stream);

static void
require_arg(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" must not be null", argname)));
}

static void
require_object(Jsonb *j, const char *argname)
{
	if (!JB_ROOT_IS_OBJECT(j) || JB_ROOT_IS_SCALAR(j))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" must be a JSON object", argname)));
}

/* old with the keys of patch: replaced, or removed where patch has null */
static Jsonb *
apply_patch(Jsonb *old, Jsonb *patch)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	Datum		result = JsonbPGetDatum(old);
	char	   *key = NULL;

	it = JsonbIteratorInit(&patch->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			key = pnstrdup(v.val.string.val, v.val.string.len);
		else if (tok == WJB_VALUE)
		{
			result = DirectFunctionCall2(jsonb_delete, result, CStringGetTextDatum(key));
			if (v.type != jbvNull)
			{
				JsonbParseState *ps = NULL;
				JsonbValue	k;
				JsonbValue *obj;

				k.type = jbvString;
				k.val.string.val = key;
				k.val.string.len = strlen(key);
				(void) pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
				(void) pushJsonbValue(&ps, WJB_KEY, &k);
				(void) pushJsonbValue(&ps, WJB_VALUE, &v);
				obj = pushJsonbValue(&ps, WJB_END_OBJECT, NULL);
				result = DirectFunctionCall2(jsonb_concat, result,
											 JsonbPGetDatum(JsonbValueToJsonb(obj)));
			}
		}
	}
	return DatumGetJsonbP(result);
}

/* The value of key in j as canonical text, NULL when absent. */
static char *
option_text(Jsonb *j, const char *key)
{
	JsonbValue	k;
	JsonbValue *v;

	k.type = jbvString;
	k.val.string.val = unconstify(char *, key);
	k.val.string.len = strlen(key);
	v = findJsonbValueFromContainer(&j->root, JB_FOBJECT, &k);
	if (v == NULL)
		return NULL;
	return JsonbToCString(NULL, &JsonbValueToJsonb(v)->root, 0);
}

static bool
option_changes(Jsonb *old, Jsonb *new, const char *key)
{
	char	   *a = option_text(old, key);
	char	   *b = option_text(new, key);

	if (a == NULL || b == NULL)
		return a != b;
	return strcmp(a, b) != 0;
}

/* The kind a URL's scheme names, NULL for none (egress_validate_destination says why). */
static const char *
url_kind(const char *url)
{
	static const char *const schemes[][2] = {
		{"file://", "file"}, {"http://", "http"}, {"https://", "http"},
		{"s3://", "s3"}, {"kinesis://", "kinesis"},
		{"postgres://", "postgres"}, {"postgresql://", "postgres"}
	};

	for (int i = 0; i < lengthof(schemes); i++)
		if (pg_strncasecmp(url, schemes[i][0], strlen(schemes[i][0])) == 0)
			return schemes[i][1];
	return NULL;
}

static void
refuse_kind_change(const char *name, const char *old_kind, const char *new_kind)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("cannot change the kind of destination \"%s\" from %s to %s",
					name, old_kind, new_kind),
			 errdetail("Its streams' batches, bookmarks and options belong to its kind."),
			 errhint("Add a new destination with egress_add_destination(), and add the streams to it.")));
}

/*
 * Read the named row (sql: $1 = the name, first column the owner's oid),
 * check that the caller has its owner's privileges, then lock it and look
 * again: a role that may not alter it must not hold up its owner.  Caller
 * is inside egress_catalog_enter().
 */
static Oid
lock_own_row(EgressCatalogGuard *guard, const char *what, const char *name,
			 const char *sql, const char *sql_locked)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};
	Oid			owner = InvalidOid;
	bool		isnull;

	for (int pass = 0; pass < 2; pass++)
	{
		if (egress_catalog_exec(pass == 0 ? sql : sql_locked,
								1, argtypes, values, NULL, false) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("%s \"%s\" does not exist", what, name)));
		owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull));
		if (!has_privs_of_role(guard->save_userid, owner))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for %s \"%s\"", what, name),
					 errdetail("Only members of the %s's owner role may change it.", what)));
	}
	return owner;
}

/*
 * egress_alter_destination(name, url DEFAULT NULL, options DEFAULT NULL)
 *		url NULL: the same location; options: a patch (see above).
 */
Datum
egress_alter_destination(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *url = NULL;
	Jsonb	   *patch = NULL;
	EgressCatalogGuard guard;
	Oid			owner;
	char	   *old_kind;
	char	   *old_location;
	Jsonb	   *old_options;
	Jsonb	   *new_options;
	const char *new_kind;
	char	   *new_location;
	bool		isnull;
	Oid			argtypes[3] = {TEXTOID, TEXTOID, JSONBOID};
	Datum		values[3];

	require_arg(fcinfo, 0, "name");
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (!PG_ARGISNULL(1))
		url = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (!PG_ARGISNULL(2))
	{
		patch = PG_GETARG_JSONB_P(2);
		require_object(patch, "options");
	}

	egress_catalog_enter(&guard);
	owner = lock_own_row(&guard, "destination", name,
						 "SELECT owner::pg_catalog.oid FROM egress.destination "
						 "WHERE name OPERATOR(pg_catalog.=) $1",
						 "SELECT owner::pg_catalog.oid, kind, location, options "
						 "FROM egress.destination "
						 "WHERE name OPERATOR(pg_catalog.=) $1 FOR UPDATE");
	old_kind = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	old_location = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
	old_options = DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0],
												   SPI_tuptable->tupdesc, 4, &isnull));
	new_options = patch ? apply_patch(old_options, patch) : old_options;

	/*
	 * The slot keeps the LOG_BASED streams' place: it stays, and so does the
	 * decoder that reads it (compared as they take effect: the default
	 * written out is no change).
	 */
	{
		const char *keys[2] = {"slot_name", "decoder"};
		const char *was[2];
		const char *now[2];

		was[0] = egress_jsonb_get_string(old_options, "slot_name");
		now[0] = egress_jsonb_get_string(new_options, "slot_name");
		was[0] = was[0] ? was[0] : psprintf("pg_egress_%s", name);
		now[0] = now[0] ? now[0] : psprintf("pg_egress_%s", name);
		was[1] = egress_destination_decoder(old_options);
		now[1] = egress_destination_decoder(new_options);
		for (int i = 0; i < lengthof(keys); i++)
			if (strcmp(was[i], now[i]) != 0)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("destination option \"%s\" of destination \"%s\" cannot be changed",
								keys[i], name),
						 errdetail("The destination's replication slot and decoder hold the place of its LOG_BASED streams in the write-ahead log."),
						 errhint("Add a new destination with the option, and move the streams to it.")));
	}

	/*
	 * Validated as egress_add_destination() validates, as the destination's
	 * owner: the role its workers send as.  Whoever alters it has at least
	 * the owner's privileges (checked above), so nothing the owner may not
	 * do gets in, even when a superuser alters another role's destination.
	 */
	SetUserIdAndSecContext(owner, guard.save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	if (url == NULL)
	{
		/* file, S3 and Kinesis locations are stored without their scheme */
		if (strcmp(old_kind, "http") == 0)
			url = old_location;
		else
			url = psprintf("%s://%s", old_kind, old_location);
	}
	/* the kind first: its message says more than an option's */
	if (url_kind(url) != NULL && strcmp(url_kind(url), old_kind) != 0)
		refuse_kind_change(name, old_kind, url_kind(url));
	new_kind = egress_validate_destination(url, new_options, owner, &new_location);
	if (strcmp(new_kind, old_kind) != 0)
		refuse_kind_change(name, old_kind, new_kind);
	{
		char	   *problem = egress_destination_use_problem(owner, new_kind, InvalidOid);

		if (problem != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to alter destination \"%s\"", name),
					 errdetail("%s.", problem)));
	}
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   guard.save_sec_context | SECURITY_LOCAL_USERID_CHANGE);

	values[0] = CStringGetTextDatum(name);

	/*
	 * Where the destination sends is what its streams' owners agreed to when
	 * they added their streams: its location, its HTTP headers (an ingest
	 * service's key picks the account the rows land in) and a Kinesis
	 * stream's region.  A stream of a role whose privileges the caller does
	 * not have reads tables the caller may not read: moving the destination
	 * would hand those rows to whoever the caller picks.  So it moves only
	 * when the caller has the privileges of every stream's owner.  A postgres
	 * destination's target schemas and the roles granted SELECT there are
	 * where its rows land, too.  No stream comes in meanwhile:
	 * egress_add_stream() locks the destination's row, which is locked here.  The streams are read with the latest snapshot,
	 * not the transaction's: under REPEATABLE READ a caller could otherwise
	 * take its snapshot, wait for another role to add a stream, and move the
	 * destination under it.  The other roles' streams are not named.
	 */
	if (strcmp(new_location, old_location) != 0 ||
		option_changes(old_options, new_options, "headers") ||
		option_changes(old_options, new_options, "region") ||
		option_changes(old_options, new_options, "default_target_schema") ||
		option_changes(old_options, new_options, "schema_mapping") ||
		option_changes(old_options, new_options, "target_schema_privileges") ||
		option_changes(old_options, new_options, "sslmode") ||
		option_changes(old_options, new_options, "sslrootcert") ||
		option_changes(old_options, new_options, "sslcert") ||
		option_changes(old_options, new_options, "sslkey"))
	{
		SPIPlanPtr	plan = SPI_prepare("SELECT s.owner::pg_catalog.oid FROM egress.stream s "
									   "WHERE s.destination OPERATOR(pg_catalog.=) $1",
									   1, argtypes);
		uint64		n;

		if (plan == NULL ||
			SPI_execute_snapshot(plan, values, NULL, GetLatestSnapshot(), InvalidSnapshot,
								 true, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read the streams of destination \"%s\"", name);
		n = SPI_processed;
		for (uint64 i = 0; i < n; i++)
		{
			Oid			sowner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
																SPI_tuptable->tupdesc, 1,
																&isnull));

			if (!has_privs_of_role(guard.save_userid, sowner))
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("permission denied to move destination \"%s\"", name),
						 errdetail("Streams of roles whose privileges you do not have send to it: its URL, HTTP headers, Kinesis region and PostgreSQL target schemas and grantees decide where their rows go."),
						 errhint("Their owners can remove them from it, or a role with their privileges can move it.")));
		}
	}

	/* the stored password goes only where it was given for */
	if (strcmp(old_kind, "postgres") == 0 &&
		strcmp(new_location, old_location) != 0 &&
		egress_jsonb_get_string(old_options, "password") != NULL &&
		(patch == NULL || option_text(patch, "password") == NULL))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("changing the location of destination \"%s\" requires its password", name),
				 errdetail("The stored password is sent only to the server it was given for."),
				 errhint("Give it again in option \"password\".")));

	values[1] = CStringGetTextDatum(new_location);
	values[2] = JsonbPGetDatum(new_options);
	egress_catalog_exec("UPDATE egress.destination SET location = $2, options = $3 "
						"WHERE name OPERATOR(pg_catalog.=) $1",
						3, argtypes, values, NULL, false);
	egress_catalog_exit(&guard);

	egress_wake_dbworker_at_commit();
	PG_RETURN_VOID();
}

/*
 * Stream options that decide what the stream's records are: changed only
 * by removing the stream and adding it again (a new table version).
 */
static const char *const stream_fixed[] = {"columns", "filter", "replication_key", "state"};

/*
 * The options only one method takes (the rules of egress_add_stream()).
 */
static const struct
{
	const char *option;
	const char *method;
	const char *method2;		/* another method that takes it, or NULL */
}			stream_method_options[] = {
	{"interval", "INCREMENTAL", "FULL_TABLE"},
	{"limit", "INCREMENTAL", NULL},
	{"fast_sync", "FULL_TABLE", NULL},
	{"fast_sync_format", "FULL_TABLE", NULL},
	{"parallel", "FULL_TABLE", NULL},
	{"chunk_rows", "LOG_BASED", NULL},
	{"chunk_bytes", "LOG_BASED", NULL},
};

/*
 * egress_alter_stream(name, options)
 *		options: a patch of the stream's options (see above).
 */
Datum
egress_alter_stream(PG_FUNCTION_ARGS)
{
	char	   *name;
	Jsonb	   *patch;
	EgressCatalogGuard guard;
	Jsonb	   *old_options;
	Jsonb	   *new_options;
	char	   *method;
	Oid			relid;
	int32		id;
	bool		isnull;
	Oid			argtypes[2] = {INT4OID, JSONBOID};
	Datum		values[2];

	require_arg(fcinfo, 0, "name");
	require_arg(fcinfo, 1, "options");
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	patch = PG_GETARG_JSONB_P(1);
	require_object(patch, "options");

	egress_catalog_enter(&guard);
	(void) lock_own_row(&guard, "stream", name,
						"SELECT owner::pg_catalog.oid FROM egress.stream "
						"WHERE name OPERATOR(pg_catalog.=) $1",
						"SELECT owner::pg_catalog.oid, id, method, options, relid "
						"FROM egress.stream "
						"WHERE name OPERATOR(pg_catalog.=) $1 FOR UPDATE");
	id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	method = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
	old_options = DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0],
												   SPI_tuptable->tupdesc, 4, &isnull));
	relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull));
	new_options = apply_patch(old_options, patch);

	for (int i = 0; i < lengthof(stream_fixed); i++)
		if (option_changes(old_options, new_options, stream_fixed[i]))
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("stream option \"%s\" of stream \"%s\" cannot be changed",
							stream_fixed[i], name),
					 errdetail("It decides which rows and columns the stream's records carry, or where it started."),
					 errhint("Remove the stream with egress_remove_stream() and add it again with the new option.")));

	/* every key known, every value of the right kind: as egress_add_stream() */
	egress_validate_stream_options(new_options);
	for (int i = 0; i < lengthof(stream_method_options); i++)
	{
		const char *opt = stream_method_options[i].option;

		const char *method2 = stream_method_options[i].method2;

		if (option_text(new_options, opt) != NULL &&
			strcmp(method, stream_method_options[i].method) != 0 &&
			(method2 == NULL || strcmp(method, method2) != 0))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("stream option \"%s\" is only valid for %s%s%s streams",
							opt, stream_method_options[i].method,
							method2 ? " and " : "", method2 ? method2 : ""),
					 errdetail("Stream \"%s\" has method %s.", name, method)));
	}
	{
		bool		fast_sync;

		if (egress_jsonb_get_bool(new_options, "fast_sync", &fast_sync) && fast_sync &&
			(option_text(new_options, "columns") != NULL ||
			 option_text(new_options, "filter") != NULL))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("stream option \"fast_sync\" cannot be combined with \"columns\" or \"filter\""),
					 errdetail("A fast sync exports the whole table.")));
	}
	{
		int64		nparallel;

		if (egress_jsonb_get_int64(new_options, "parallel", &nparallel))
		{
			char		relkind = get_rel_relkind(relid);

			egress_check_parallel_option(nparallel, relkind,
										 psprintf("stream \"%s\"", name));
		}
	}

	values[0] = Int32GetDatum(id);
	values[1] = JsonbPGetDatum(new_options);
	egress_catalog_exec("UPDATE egress.stream SET options = $2 WHERE id OPERATOR(pg_catalog.=) $1",
						2, argtypes, values, NULL, false);
	egress_catalog_exit(&guard);

	egress_wake_dbworker_at_commit();
	PG_RETURN_VOID();
}
