/*-------------------------------------------------------------------------
 * catalog.c
 *	  Access to the egress.* catalog through SPI.
 *
 * The catalog is revoked from PUBLIC; the SQL functions check the caller's
 * rights themselves and then touch the catalog as the bootstrap superuser.
 * No name in these statements may resolve to an object a caller made:
 * search_path is pinned to "pg_catalog, pg_temp" (pg_temp last: when the
 * path does not name it, the session's temporary schema is searched FIRST
 * for types and relations, so a caller's pg_temp.oid domain with a CHECK of
 * its own would capture a cast to oid), and every type, operator and function in
 * the SQL text is schema-qualified all the same.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "catalog/catalog.h"
#include "catalog/publication.h"

/* See catalog.h. */
void
egress_pin_value_settings(bool local)
{
	static const char *const settings[][2] = {
		{"TimeZone", "UTC"},
		{"DateStyle", "ISO, MDY"},
		{"IntervalStyle", "postgres"},
		{"extra_float_digits", "1"},
	};

	for (int i = 0; i < lengthof(settings); i++)
	{
		if (local)
			(void) set_config_option(settings[i][0], settings[i][1], PGC_USERSET,
									 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
		else
			SetConfigOption(settings[i][0], settings[i][1], PGC_SUSET, PGC_S_OVERRIDE);
	}
}

/*
 * The search path of code that runs with raised privileges or on behalf of
 * another role: pg_catalog, then the session's temporary schema (never
 * searched for functions and operators; last for types and relations).
 * Undone by AtEOXact_GUC() of the caller's nest level, or at (sub)transaction
 * abort.
 */
void
egress_pin_search_path(void)
{
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

/* See catalog.h. */
void
egress_become_owner(Oid owner, EgressOwnerSave *save)
{
	GetUserIdAndSecContext(&save->save_userid, &save->save_sec);
	save->nestlevel = NewGUCNestLevel();
	save->role_set = false;

	/*
	 * SET ROLE, as the GUC does it: the outer user id, "role" and
	 * is_superuser become the owner's.  PostgreSQL allows it only outside a
	 * local user id change or a security-restricted operation (restoring
	 * "role" resets the outer user id, which must not happen inside one), and
	 * only to a role the session user is a member of: a background worker
	 * logged in as the bootstrap superuser always can.  Where it cannot (a
	 * caller already switched, e.g. SQL functions entering the catalog), the
	 * user id switch alone applies, as PostgreSQL's maintenance commands do.
	 * The name comes from the owner's OID; "none" would mean the session
	 * user, and PostgreSQL reserves it.
	 */
	if (save->save_sec == 0 && IsTransactionState() &&
		is_member_of_role(GetSessionUserId(), owner))
	{
		char	   *name = GetUserNameFromId(owner, false);

		if (strcmp(name, "none") == 0)
			elog(ERROR, "role name \"none\" is reserved");
		(void) set_config_option("role", name, PGC_SUSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, ERROR, false);
		save->role_set = true;
	}
	SetUserIdAndSecContext(owner, save->save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
}

/* See catalog.h. */
void
egress_restore_owner(EgressOwnerSave *save)
{
	/*
	 * The user id and context first: restoring "role" (assign_role) sets the
	 * outer user id, which PostgreSQL does only outside a restricted
	 * operation.  false: what user code set at this level goes too.
	 */
	SetUserIdAndSecContext(save->save_userid, save->save_sec);
	AtEOXact_GUC(false, save->nestlevel);
	/* assign_role made the outer user current: back to the caller's exactly */
	if (save->role_set)
		SetUserIdAndSecContext(save->save_userid, save->save_sec);
}

void
egress_catalog_enter(EgressCatalogGuard *guard)
{
	GetUserIdAndSecContext(&guard->save_userid, &guard->save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   guard->save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	guard->save_nestlevel = NewGUCNestLevel();
	egress_pin_search_path();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

void
egress_catalog_exit(EgressCatalogGuard *guard)
{
	SPI_finish();
	AtEOXact_GUC(true, guard->save_nestlevel);
	SetUserIdAndSecContext(guard->save_userid, guard->save_sec_context);
}

/* Run one statement; returns SPI_processed.  Internal failures are elog. */
int
egress_catalog_exec(const char *sql, int nargs, Oid *argtypes,
					Datum *values, const char *nulls, bool read_only)
{
	int			rc;

	rc = SPI_execute_with_args(sql, nargs, argtypes, values, nulls, read_only, 0);
	if (rc < 0)
		elog(ERROR, "pg_egress catalog statement failed (%s): %s",
			 SPI_result_code_string(rc), sql);
	return (int) SPI_processed;
}

bool
egress_extension_present(void)
{
	return OidIsValid(get_extension_oid("pg_egress", true));
}

bool
egress_worker_catalog_begin(EgressCatalogGuard *guard, bool invalidate)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (invalidate)
		InvalidateSystemCaches();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (!egress_extension_present())
	{
		PopActiveSnapshot();
		CommitTransactionCommand();
		return false;
	}
	egress_catalog_enter(guard);
	return true;
}

void
egress_worker_catalog_end(EgressCatalogGuard *guard)
{
	egress_catalog_exit(guard);
	PopActiveSnapshot();
	CommitTransactionCommand();
}

static char *
spi_text(HeapTuple tup, TupleDesc desc, int col)
{
	return SPI_getvalue(tup, desc, col);
}

static Jsonb *
spi_jsonb(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	if (isnull)
		return NULL;
	return DatumGetJsonbPCopy(d);
}

/*
 * Load a stream and its destination into callercxt (SPI's own context
 * is gone after egress_catalog_exit).
 * Returns NULL when the stream no longer exists.  Caller is inside
 * egress_catalog_enter().
 */
EgressStreamDef *
egress_load_stream(int32 stream_id, MemoryContext callercxt)
{
	MemoryContext oldcxt;
	Oid			argtypes[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(stream_id)};
	EgressStreamDef *def;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;

	egress_catalog_exec("SELECT s.id, s.name, s.relid, s.relation, s.method, s.replication_key, "
						"s.format, s.options, s.owner::pg_catalog.oid, s.enabled, d.name, d.kind, "
						"d.location, d.options, st.version, d.owner::pg_catalog.oid "
						"FROM egress.stream s JOIN egress.destination d "
						"ON d.name OPERATOR(pg_catalog.=) s.destination "
						"JOIN egress.stream_state st ON st.stream_id OPERATOR(pg_catalog.=) s.id "
						"WHERE s.id OPERATOR(pg_catalog.=) $1",
						1, argtypes, values, NULL, true);
	if (SPI_processed == 0)
		return NULL;

	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	oldcxt = MemoryContextSwitchTo(callercxt);
	def = palloc0(sizeof(EgressStreamDef));
	def->id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
	def->name = spi_text(tup, desc, 2);
	def->relid = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
	def->relation = spi_text(tup, desc, 4);
	def->method = spi_text(tup, desc, 5);
	def->replication_key = spi_text(tup, desc, 6);
	def->format = spi_text(tup, desc, 7);
	def->options = spi_jsonb(tup, desc, 8);
	def->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 9, &isnull));
	def->enabled = DatumGetBool(SPI_getbinval(tup, desc, 10, &isnull));
	def->columns = egress_stream_columns(def->options);
	def->filter = egress_stream_filter(def->options);
	def->dest_name = spi_text(tup, desc, 11);
	def->dest_kind = spi_text(tup, desc, 12);
	def->dest_location = spi_text(tup, desc, 13);
	def->dest_options = spi_jsonb(tup, desc, 14);
	def->prev_version = DatumGetInt64(SPI_getbinval(tup, desc, 15, &isnull));
	if (isnull)
		def->prev_version = 0;
	def->dest_owner = DatumGetObjectId(SPI_getbinval(tup, desc, 16, &isnull));
	def->dest_owner_superuser = superuser_arg(def->dest_owner);
	MemoryContextSwitchTo(oldcxt);
	return def;
}

/* Integer option from a jsonb object; false when absent. */
bool
egress_jsonb_get_int64(Jsonb *options, const char *key, int64 *result)
{
	JsonbValue	k;
	JsonbValue *v;

	if (options == NULL || !JB_ROOT_IS_OBJECT(options))
		return false;
	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	v = findJsonbValueFromContainer(&options->root, JB_FOBJECT, &k);
	if (v == NULL || v->type != jbvNumeric)
		return false;
	*result = DatumGetInt64(DirectFunctionCall1(numeric_int8,
												NumericGetDatum(v->val.numeric)));
	return true;
}

static JsonbValue *
jsonb_get(Jsonb *options, const char *key)
{
	JsonbValue	k;

	if (options == NULL || !JB_ROOT_IS_OBJECT(options))
		return NULL;
	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	return findJsonbValueFromContainer(&options->root, JB_FOBJECT, &k);
}

/* Boolean option from a jsonb object; false when absent. */
bool
egress_jsonb_get_bool(Jsonb *options, const char *key, bool *result)
{
	JsonbValue *v = jsonb_get(options, key);

	if (v == NULL || v->type != jbvBool)
		return false;
	*result = v->val.boolean;
	return true;
}

/* String option from a jsonb object (palloc'd); NULL when absent. */
char *
egress_jsonb_get_string(Jsonb *options, const char *key)
{
	JsonbValue *v = jsonb_get(options, key);

	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* A sync of the stream starts: new version, resync request taken. */
void
egress_mark_syncing(int32 stream_id, int64 version)
{
	Oid			argtypes[2] = {INT4OID, INT8OID};
	Datum		values[2];

	values[0] = Int32GetDatum(stream_id);
	values[1] = Int64GetDatum(version);
	egress_catalog_exec("UPDATE egress.stream_state SET state = 'syncing', resync = false, "
						"version = $2, attempts = attempts OPERATOR(pg_catalog.+) 1, "
						"sync_started_at = pg_catalog.now(), updated_at = pg_catalog.now() "
						"WHERE stream_id OPERATOR(pg_catalog.=) $1",
						2, argtypes, values, NULL, false);
}

/*
 * Helpers of both the catalog functions and the workers, here so that
 * catalog code need not include worker headers.
 */

/*
 * The primary-key column names of a relation, in key order; NIL without
 * one.
 */
List *
egress_primary_key_columns(Oid relid)
{
	Relation	rel = relation_open(relid, AccessShareLock);
	Oid			pkoid = RelationGetPrimaryKeyIndex(rel);
	List	   *result = NIL;

	if (OidIsValid(pkoid))
	{
		Relation	idx = relation_open(pkoid, AccessShareLock);

		for (int i = 0; i < idx->rd_index->indnkeyatts; i++)
			result = lappend(result,
							 get_attname(relid, idx->rd_index->indkey.values[i], false));
		relation_close(idx, AccessShareLock);
	}
	relation_close(rel, AccessShareLock);
	return result;
}

/* A new table version: epoch ms, always above the previous one. */
int64
egress_next_version(int64 prev_version)
{
	int64		now_ms = (GetCurrentTimestamp() / 1000) +
		(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;

	return Max(now_ms, prev_version + 1);
}
