/*-------------------------------------------------------------------------
 * takeover.c
 *	  Taking over from a Singer tap: the stream option "state" holds a
 *	  STATE value of pipelinewise-tap-postgres (or one stream's entry of
 *	  its "bookmarks"), and the new stream starts where the tap stopped:
 *	  a LOG_BASED stream from the tap's "lsn" in the tap's slot, an
 *	  INCREMENTAL one from its "replication_key_value".  No initial sync.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "replication/slot.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/pg_lsn.h"

#include "catalog/catalog.h"
#include "catalog/takeover.h"
#include "commands/dbcommands.h"
#include "egress_slots.h"
#include "encode/singer.h"

static JsonbValue *
get_key(JsonbContainer *obj, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	return findJsonbValueFromContainer(obj, JB_FOBJECT, &k);
}

static bool
is_object(JsonbValue *v)
{
	return v != NULL && v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data);
}

static char *
numeric_text(JsonbValue *v)
{
	return DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
}

/*
 * The bookmarks entry for the relation: state may be a STATE message, its
 * value, or the entry itself.  The tap names streams "<schema>-<table>"
 * (singer-io's tap-postgres: "<database>-<schema>-<table>").
 */
static JsonbContainer *
find_entry(Jsonb *state, Oid relid, bool missing_ok)
{
	JsonbContainer *c = &state->root;
	JsonbValue *v;
	char	   *nsp = get_namespace_name(get_rel_namespace(relid));
	char	   *rel = get_rel_name(relid);
	const char *ids[2];

	if (!JB_ROOT_IS_OBJECT(state) || JB_ROOT_IS_SCALAR(state))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream option \"state\" must be a JSON object")));
	v = get_key(c, "value");
	if (is_object(v))
		c = v->val.binary.data;
	v = get_key(c, "bookmarks");
	if (v == NULL)
		return c;				/* the entry itself */
	if (!is_object(v))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"bookmarks\" of stream option \"state\" must be a JSON object")));
	c = v->val.binary.data;
	ids[0] = psprintf("%s-%s", nsp, rel);
	ids[1] = psprintf("%s-%s-%s", get_database_name(MyDatabaseId), nsp, rel);
	for (int i = 0; i < lengthof(ids); i++)
	{
		v = get_key(c, ids[i]);
		if (is_object(v))
			return v->val.binary.data;
	}
	if (missing_ok)
		return NULL;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("stream option \"state\" has no bookmark for \"%s\"", ids[0]),
			 errhint("Pass the STATE value of the tap, whose \"bookmarks\" name the stream \"%s\", or that stream's bookmark alone.",
					 ids[0])));
	return NULL;				/* keep compiler quiet */
}

bool
egress_takeover_parse(Jsonb *state, Oid relid, const char *method,
					  const char *replication_key, bool missing_ok,
					  EgressTakeover *out)
{
	JsonbContainer *entry;
	JsonbValue *v;

	memset(out, 0, sizeof(*out));
	if (strcmp(method, "FULL_TABLE") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream option \"state\" is valid only for LOG_BASED and INCREMENTAL streams"),
				 errdetail("A FULL_TABLE stream has no position to resume from.")));
	entry = find_entry(state, relid, missing_ok);
	if (entry == NULL)
		return false;

	v = get_key(entry, "version");
	if (v != NULL && v->type == jbvNumeric)
		out->version = DatumGetInt64(DirectFunctionCall1(numeric_int8,
														 NumericGetDatum(v->val.numeric)));
	else
		out->version = egress_next_version(0);

	if (strcmp(method, "LOG_BASED") == 0)
	{
		v = get_key(entry, "lsn");
		if (v != NULL && v->type == jbvNumeric)
		{
			char	   *txt = numeric_text(v);
			char	   *end;

			errno = 0;
			out->lsn = strtoull(txt, &end, 10);
			if (errno != 0 || *end != '\0' || txt[0] == '-')
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid \"lsn\" in stream option \"state\": %s", txt)));
		}
		else if (v != NULL && v->type == jbvString)
			out->lsn = DatumGetLSN(DirectFunctionCall1(pg_lsn_in,
													   CStringGetDatum(pnstrdup(v->val.string.val,
																				v->val.string.len))));
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("stream option \"state\" has no \"lsn\" for a LOG_BASED stream"),
					 errhint("Pass the bookmark of a LOG_BASED stream of the tap.")));
		if (XLogRecPtrIsInvalid(out->lsn) || out->lsn > GetXLogWriteRecPtr())
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("\"lsn\" %X/%X in stream option \"state\" is not a position of this server's WAL",
							LSN_FORMAT_ARGS(out->lsn))));
		out->log_based = true;
		return true;
	}

	/* INCREMENTAL */
	v = get_key(entry, "replication_key");
	if (v != NULL && v->type == jbvString &&
		(strlen(replication_key) != v->val.string.len ||
		 strncmp(replication_key, v->val.string.val, v->val.string.len) != 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream option \"state\" is for replication key \"%s\", not \"%s\"",
						pnstrdup(v->val.string.val, v->val.string.len), replication_key)));
	v = get_key(entry, "replication_key_value");
	if (v != NULL && v->type == jbvNumeric)
	{
		out->key_value = numeric_text(v);
		out->key_value_json = out->key_value;
	}
	else if (v != NULL && v->type == jbvString)
	{
		StringInfoData buf;

		out->key_value = pnstrdup(v->val.string.val, v->val.string.len);
		initStringInfo(&buf);
		escape_json(&buf, out->key_value);
		out->key_value_json = buf.data;
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream option \"state\" has no \"replication_key_value\" for an INCREMENTAL stream")));

	/* the value must be one of the key's type (read as the caller) */
	{
		AttrNumber	att = get_attnum(relid, replication_key);
		Oid			base = getBaseType(get_atttype(relid, att));
		Oid			infunc;
		Oid			ioparam;

		getTypeInputInfo(base, &infunc, &ioparam);
		(void) OidInputFunctionCall(infunc, out->key_value, ioparam, -1);
	}
	return true;
}

/*
 * LOG_BASED: the tap's slot must still hold the changes after its lsn.
 * Reads the slot's confirmed_flush from shared memory (no SQL).
 */
void
egress_takeover_check_slot(EgressTakeover *t, const char *slot_name)
{
	XLogRecPtr	confirmed = InvalidXLogRecPtr;
	Oid			database = InvalidOid;
	bool		found = false;

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	for (int i = 0; i < max_replication_slots; i++)
	{
		ReplicationSlot *s = &ReplicationSlotCtl->replication_slots[i];

		if (s->in_use && strcmp(NameStr(s->data.name), slot_name) == 0)
		{
			found = true;
			SpinLockAcquire(&s->mutex);
			confirmed = s->data.confirmed_flush;
			database = s->data.database;
			SpinLockRelease(&s->mutex);
			break;
		}
	}
	LWLockRelease(ReplicationSlotControlLock);

	if (!found)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot resume from the tap's \"lsn\": replication slot \"%s\" does not exist",
						slot_name),
				 errhint("Name the tap's slot with the destination option \"slot_name\".")));
	if (database != MyDatabaseId)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot resume from the tap's \"lsn\": replication slot \"%s\" is not a logical slot of this database",
						slot_name)));
	if (!XLogRecPtrIsInvalid(confirmed) && t->lsn < confirmed)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("\"lsn\" %X/%X in stream option \"state\" is older than the restart point %X/%X of replication slot \"%s\"",
						LSN_FORMAT_ARGS(t->lsn), LSN_FORMAT_ARGS(confirmed), slot_name),
				 errdetail("The changes between the two positions can no longer be decoded from the slot."),
				 errhint("Pass the tap's latest state, or add the stream without \"state\" for a new initial sync.")));
}

/* The initial bookmark of a stream taking over (jsonb text). */
char *
egress_takeover_bookmark(EgressTakeover *t, const char *replication_key)
{
	StringInfoData buf;

	initStringInfo(&buf);
	if (t->log_based)
		egress_singer_bookmark_log_based(&buf, t->lsn, t->version);
	else
		egress_singer_bookmark_incremental(&buf, replication_key, t->key_value_json,
										   t->version, NULL);
	return buf.data;
}

/*
 * The decoder of a new destination whose slot will be slot_name
 * (requested: its option "decoder", or NULL).  An existing slot the
 * destination would take over decides, since its WAL can only be decoded
 * with the plugin it was made for: a Singer tap's wal2json slot makes a
 * wal2json destination, so that nothing between the tap's stop and
 * pg_egress's start is lost.  A slot of a removed destination waiting in
 * egress.dropped_slot is not taken over by a new one for its decoder (the
 * database worker drops it).  A pgoutput slot made by someone else cannot
 * be taken over: pgoutput reads the destination's publication as of the
 * decoded WAL, and the publication is only made with the destination.
 * Caller is inside egress_catalog_enter().
 */
const char *
egress_takeover_decoder(const char *destination, const char *slot_name,
						const char *requested)
{
	char	   *plugin = NULL;
	Oid			dboid = InvalidOid;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	const char *fallback = requested ? requested : EGRESS_PLUGIN_PGOUTPUT;

	if (!egress_slot_lookup(slot_name, &plugin, &dboid) || dboid != MyDatabaseId ||
		!egress_plugin_is_ours(plugin))
		return fallback;		/* none, or refused when a stream needs it */
	values[0] = CStringGetTextDatum(slot_name);
	if (egress_catalog_exec("SELECT 1 FROM egress.dropped_slot "
							"WHERE slot_name OPERATOR(pg_catalog.=) $1::pg_catalog.name",
							1, argtypes, values, NULL, true) > 0)
		return fallback;
	if (strcmp(plugin, EGRESS_PLUGIN_WAL2JSON) == 0)
	{
		if (requested != NULL && strcmp(requested, EGRESS_PLUGIN_WAL2JSON) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("destination \"%s\" cannot decode replication slot \"%s\" with %s",
							destination, slot_name, requested),
					 errdetail("The slot exists with plugin wal2json, and a slot's changes can only be decoded with the plugin it was created for."),
					 errhint("Leave out option \"decoder\" or set it to \"wal2json\".")));
		return EGRESS_PLUGIN_WAL2JSON;
	}
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("destination \"%s\" cannot take over replication slot \"%s\" of plugin pgoutput",
					destination, slot_name),
			 errdetail("pgoutput decodes through the destination's publication, which must exist before the slot's first change; pg_egress creates it with the destination."),
			 errhint("Name a wal2json slot, or leave out \"slot_name\" so that the destination makes a slot of its own.")));
	return NULL;				/* keep compiler quiet */
}
