/*-------------------------------------------------------------------------
 * check.c
 *	  egress_check(destination, stream): will the caller's streams work on
 *	  this server?  One row per check (check, ok, detail, hint), for the
 *	  server (wal_level, slots, workers, preloading, output plugins), for
 *	  each destination (usable by the caller, reachable with its
 *	  credentials, free disk, WAL its slot may hold) and for each stream
 *	  (privileges, row security, replica identity, TOAST re-reads).
 *
 * It runs as the caller and changes nothing: every check that can fail
 * with an ERROR runs in a subtransaction of its own, and its message
 * becomes the row's detail.  The checks egress_add_stream() makes are the
 * same functions (sqlfuncs.c, decode/slot.c, the sink kinds' probes), so a
 * refused stream and egress_check() say the same thing.
 *
 * A role sees only what it could change: destinations and streams of the
 * roles whose privileges it has, as egress_add_stream() requires.  Others'
 * are "not found", as if they did not exist.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/stat.h>
#include <sys/statvfs.h>

#include "access/relation.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "postmaster/postmaster.h"
#include "replication/logicallauncher.h"
#include "replication/slot.h"
#include "replication/walsender.h"
#include "storage/bufmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/syscache.h"
#include "utils/varlena.h"

#include "catalog/catalog.h"
#include "catalog/check.h"
#include "catalog/publication.h"
#include "catalog/sqlfuncs.h"
#include "egress_slots.h"
#include "pg_egress.h"

PG_FUNCTION_INFO_V1(egress_check);

typedef struct CheckDest
{
	char	   *name;
	char	   *kind;
	char	   *location;
	Jsonb	   *options;
	Oid			owner;
	char	   *slot_name;
	bool		log_based;		/* has LOG_BASED streams in scope */
	int64		table_bytes;	/* estimated size of its streams' tables */
} CheckDest;

typedef struct CheckStream
{
	char	   *name;
	Oid			relid;
	char	   *relation;
	char	   *method;
	char	   *dest;
	Jsonb	   *options;
	Oid			owner;
	int64		table_bytes;
} CheckStream;

typedef struct CheckOut
{
	Tuplestorestate *ts;
	TupleDesc	desc;
} CheckOut;

/* ok: 1 passed, 0 failed, -1 not checked (NULL) */
static void
add_row(CheckOut *out, const char *check, int ok, const char *detail, const char *hint)
{
	Datum		values[4];
	bool		nulls[4] = {false, ok < 0, detail == NULL, hint == NULL};

	values[0] = CStringGetTextDatum(check);
	values[1] = BoolGetDatum(ok > 0);
	values[2] = detail ? CStringGetTextDatum(detail) : (Datum) 0;
	values[3] = hint ? CStringGetTextDatum(hint) : (Datum) 0;
	tuplestore_putvalues(out->ts, out->desc, values, nulls);
}

/*
 * Runs fn(arg) in a subtransaction.  true when it returned; false when it
 * raised an ERROR, with *detail set to its message (and errdetail) and
 * *hint to its hint.  Cancels and the like are raised again.
 */
typedef char *(*CheckFn) (void *arg);

static bool
run_captured(CheckFn fn, void *arg, char **detail, char **hint)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;
	char	   *volatile result = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		result = fn(arg);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_END_TRY();

	if (edata == NULL)
	{
		*detail = result;
		*hint = NULL;
		return true;
	}
	if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
		edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN ||
		edata->sqlerrcode == ERRCODE_OUT_OF_MEMORY)
		ReThrowError(edata);
	*detail = edata->detail ? psprintf("%s: %s", edata->message, edata->detail)
		: pstrdup(edata->message);
	*hint = edata->hint ? pstrdup(edata->hint) : NULL;
	return false;
}

static char *
size_text(int64 bytes)
{
	return text_to_cstring(DatumGetTextPP(DirectFunctionCall1(pg_size_pretty,
															  Int64GetDatum(bytes))));
}

static bool
list_has(const char *list, const char *name)
{
	char	   *copy = pstrdup(list ? list : "");
	List	   *names;
	ListCell   *lc;

	if (!SplitIdentifierString(copy, ',', &names))
		return false;
	foreach(lc, names)
		if (strcmp((char *) lfirst(lc), name) == 0)
			return true;
	return false;
}

/* ---- loading what the caller may check ---- */

static void
load_scope(const char *dest_arg, const char *stream_arg, List **dests, List **streams)
{
	EgressCatalogGuard guard;
	MemoryContext outer = CurrentMemoryContext;
	Oid			caller = GetUserId();
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		values[2];
	char		nulls[2] = {dest_arg ? ' ' : 'n', stream_arg ? ' ' : 'n'};
	int			n;
	ListCell   *lc;

	values[0] = dest_arg ? CStringGetTextDatum(dest_arg) : (Datum) 0;
	values[1] = stream_arg ? CStringGetTextDatum(stream_arg) : (Datum) 0;
	*dests = NIL;
	*streams = NIL;

	egress_catalog_enter(&guard);

	/* size: as VACUUM and ANALYZE last estimated it (no lock taken) */
	n = egress_catalog_exec("SELECT s.name, s.relid, s.relation, s.method, s.destination, s.options, "
							"s.owner::pg_catalog.oid, "
							"pg_catalog.int8larger(c.relpages::pg_catalog.int8, 0) "
							"OPERATOR(pg_catalog.*) pg_catalog.current_setting('block_size')::pg_catalog.int8 "
							"FROM egress.stream s LEFT JOIN pg_catalog.pg_class c "
							"ON c.oid OPERATOR(pg_catalog.=) s.relid "
							"WHERE ($1 IS NULL OR s.destination OPERATOR(pg_catalog.=) $1) "
							"AND ($2 IS NULL OR s.name OPERATOR(pg_catalog.=) $2) ORDER BY s.name",
							2, argtypes, values, nulls, true);
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	td = SPI_tuptable->tupdesc;
		bool		isnull;
		Oid			owner = DatumGetObjectId(SPI_getbinval(tup, td, 7, &isnull));
		CheckStream *cs;
		MemoryContext old;
		Datum		d;

		if (!has_privs_of_role(caller, owner))
			continue;
		old = MemoryContextSwitchTo(outer);
		cs = palloc0(sizeof(CheckStream));
		cs->name = SPI_getvalue(tup, td, 1);
		cs->relid = DatumGetObjectId(SPI_getbinval(tup, td, 2, &isnull));
		cs->relation = SPI_getvalue(tup, td, 3);
		cs->method = SPI_getvalue(tup, td, 4);
		cs->dest = SPI_getvalue(tup, td, 5);
		cs->options = DatumGetJsonbPCopy(SPI_getbinval(tup, td, 6, &isnull));
		cs->owner = owner;
		d = SPI_getbinval(tup, td, 8, &isnull);
		cs->table_bytes = isnull ? 0 : DatumGetInt64(d);
		*streams = lappend(*streams, cs);
		MemoryContextSwitchTo(old);
	}

	n = egress_catalog_exec("SELECT name, kind, location, options, owner::pg_catalog.oid, "
							"coalesce(slot_name::pg_catalog.text, options OPERATOR(pg_catalog.->>) 'slot_name', "
							"'pg_egress_' OPERATOR(pg_catalog.||) name) "
							"FROM egress.destination WHERE $1 IS NULL OR name OPERATOR(pg_catalog.=) $1 "
							"ORDER BY name",
							1, argtypes, values, nulls, true);
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	td = SPI_tuptable->tupdesc;
		bool		isnull;
		char	   *name = SPI_getvalue(tup, td, 1);
		Oid			owner = DatumGetObjectId(SPI_getbinval(tup, td, 5, &isnull));
		bool		wanted;
		CheckDest  *cd;
		MemoryContext old;

		if (!has_privs_of_role(caller, owner))
			continue;
		if (dest_arg != NULL)
			wanted = strcmp(name, dest_arg) == 0;
		else if (stream_arg != NULL)
		{
			wanted = false;
			foreach(lc, *streams)
				if (strcmp(((CheckStream *) lfirst(lc))->dest, name) == 0)
					wanted = true;
		}
		else
			wanted = true;
		if (!wanted)
			continue;
		old = MemoryContextSwitchTo(outer);
		cd = palloc0(sizeof(CheckDest));
		cd->name = pstrdup(name);
		cd->kind = SPI_getvalue(tup, td, 2);
		cd->location = SPI_getvalue(tup, td, 3);
		cd->options = DatumGetJsonbPCopy(SPI_getbinval(tup, td, 4, &isnull));
		cd->owner = owner;
		cd->slot_name = SPI_getvalue(tup, td, 6);
		foreach(lc, *streams)
		{
			CheckStream *cs = lfirst(lc);

			if (strcmp(cs->dest, name) != 0)
				continue;
			cd->table_bytes += cs->table_bytes;
			if (strcmp(cs->method, "LOG_BASED") == 0)
				cd->log_based = true;
		}
		*dests = lappend(*dests, cd);
		MemoryContextSwitchTo(old);
	}
	egress_catalog_exit(&guard);
}

/* destinations (any role's) with LOG_BASED streams: one CDC worker each */
static int
count_cdc_workers(void)
{
	EgressCatalogGuard guard;
	int			result = 0;
	bool		isnull;

	egress_catalog_enter(&guard);
	if (egress_catalog_exec("SELECT count(DISTINCT destination)::pg_catalog.int4 FROM egress.stream "
							"WHERE method OPERATOR(pg_catalog.=) 'LOG_BASED'",
							0, NULL, NULL, NULL, true) == 1)
		result = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 1, &isnull));
	egress_catalog_exit(&guard);
	return result;
}

/* the decoder a destination's slot decodes with */
static const char *
dest_decoder(CheckDest *cd)
{
	char	   *plugin = NULL;

	if (egress_slot_lookup(cd->slot_name, &plugin, NULL) && egress_plugin_is_ours(plugin))
		return strcmp(plugin, EGRESS_PLUGIN_WAL2JSON) == 0 ? EGRESS_PLUGIN_WAL2JSON
			: EGRESS_PLUGIN_PGOUTPUT;
	return egress_destination_decoder(cd->options);
}

/* ---- the server ---- */

static void
check_server(CheckOut *out, List *dests, bool log_based)
{
	const char *wl = GetConfigOption("wal_level", false, false);
	const char *spl = GetConfigOption("shared_preload_libraries", false, false);
	const char *opl = GetConfigOption("output_plugin_libraries", true, false);
	int			free_slots = egress_free_slots();
	int			needed_slots = 0;
	int			cdc = count_cdc_workers();
	int			needed_workers;
	List	   *decoders = list_make1(EGRESS_PLUGIN_PGOUTPUT);
	ListCell   *lc;
	bool		pending = false;

	/* wal_level */
	if (wal_level >= WAL_LEVEL_LOGICAL)
		add_row(out, "wal_level", 1, "wal_level is \"logical\".", NULL);
	else
		add_row(out, "wal_level", 0,
				psprintf("LOG_BASED streams need wal_level \"logical\": wal_level is \"%s\".", wl),
				"Set wal_level = logical in postgresql.conf and restart the server.");

	/* max_replication_slots: a slot per destination, one more per initial sync */
	foreach(lc, dests)
	{
		CheckDest  *cd = lfirst(lc);

		if (cd->log_based && !egress_slot_lookup(cd->slot_name, NULL, NULL))
			needed_slots++;
	}
	if (log_based)
		needed_slots++;
	if (free_slots >= needed_slots && max_replication_slots > 0)
		add_row(out, "max_replication_slots", 1,
				psprintf("%d of %d replication slots are free; %d needed now.",
						 free_slots, max_replication_slots, needed_slots), NULL);
	else
	{
		/* egress_add_stream()'s message when one destination is in question */
		char	   *what = NULL;

		foreach(lc, dests)
		{
			CheckDest  *cd = lfirst(lc);

			if (cd->log_based)
				what = what ? "LOG_BASED streams" :
					psprintf("a LOG_BASED stream of destination \"%s\"", cd->name);
		}
		add_row(out, "max_replication_slots", 0,
				psprintf("no free replication slot for %s: %d free replication slots are needed, %d are free.",
						 what ? what : "LOG_BASED streams", Max(needed_slots, 1), free_slots),
				"Raise max_replication_slots: pg_egress uses one slot per destination and one more while an initial sync runs.");
	}

	/* max_wal_senders: decoding runs in pg_egress's own workers */
	add_row(out, "max_wal_senders", 1,
			psprintf("pg_egress decodes in its own background workers and needs no WAL sender (max_wal_senders is %d).",
					 max_wal_senders), NULL);

	/*
	 * max_worker_processes: the launcher, the database worker and up to
	 * pg_egress.max_workers more (CDC workers, syncs and their parts).
	 */
	needed_workers = 2 + egress_max_workers +
		(max_logical_replication_workers > 0 ? 1 : 0);
	if (max_worker_processes >= needed_workers)
		add_row(out, "max_worker_processes", 1,
				psprintf("max_worker_processes (%d) leaves room for pg_egress's %d: its launcher and database worker and pg_egress.max_workers (%d)%s.",
						 max_worker_processes, needed_workers, egress_max_workers,
						 max_logical_replication_workers > 0 ? ", with the logical replication launcher" : ""),
				NULL);
	else
		add_row(out, "max_worker_processes", 0,
				psprintf("max_worker_processes (%d) leaves too few background workers for pg_egress: it needs up to %d: its launcher and database worker and pg_egress.max_workers (%d)%s.",
						 max_worker_processes, needed_workers, egress_max_workers,
						 max_logical_replication_workers > 0 ? "; the logical replication launcher takes one more" : ""),
				psprintf("Raise max_worker_processes to at least %d (parallel queries and logical replication share it) and restart, or lower pg_egress.max_workers.",
						 needed_workers));

	/*
	 * pg_egress.max_workers: each destination with LOG_BASED streams holds
	 * one for its CDC worker; syncs need at least one more.
	 */
	if (cdc + 1 <= egress_max_workers)
		add_row(out, "pg_egress.max_workers", 1,
				psprintf("pg_egress.max_workers (%d) leaves %d for syncs beside the CDC workers of %d destinations with LOG_BASED streams.",
						 egress_max_workers, egress_max_workers - cdc, cdc),
				NULL);
	else
		add_row(out, "pg_egress.max_workers", 0,
				psprintf("pg_egress.max_workers (%d) is too low for %d destinations with LOG_BASED streams: each holds a worker for its changes, and syncs need one more.",
						 egress_max_workers, cdc),
				psprintf("Raise pg_egress.max_workers to at least %d (and max_worker_processes with it) and restart.",
						 cdc + 1));

	/* shared_preload_libraries, and a change waiting for a restart */
	{
		SPITupleTable *tt;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (SPI_execute("SELECT pending_restart FROM pg_catalog.pg_settings "
						"WHERE name OPERATOR(pg_catalog.=) 'shared_preload_libraries'",
						true, 1) == SPI_OK_SELECT && SPI_processed == 1)
		{
			bool		isnull;

			tt = SPI_tuptable;
			pending = DatumGetBool(SPI_getbinval(tt->vals[0], tt->tupdesc, 1, &isnull)) && !isnull;
		}
		SPI_finish();
	}
	if (!list_has(spl, "pg_egress"))
		add_row(out, "shared_preload_libraries", 0,
				psprintf("pg_egress must be loaded via \"shared_preload_libraries\": it is \"%s\".", spl),
				"Add pg_egress to shared_preload_libraries in postgresql.conf and restart the server.");
	else if (pending)
		add_row(out, "shared_preload_libraries", 0,
				"shared_preload_libraries was changed in the configuration files and the change waits for a restart: the pg_egress workers do not start if it no longer lists pg_egress.",
				"Make sure shared_preload_libraries still lists pg_egress before restarting the server.");
	else
		add_row(out, "shared_preload_libraries", 1,
				psprintf("shared_preload_libraries (\"%s\") loads pg_egress.", spl), NULL);

	/* output_plugin_libraries, on the builds that have it */
	foreach(lc, dests)
	{
		CheckDest  *cd = lfirst(lc);

		if (cd->log_based && strcmp(dest_decoder(cd), EGRESS_PLUGIN_WAL2JSON) == 0)
			decoders = list_append_unique_ptr(decoders, (void *) EGRESS_PLUGIN_WAL2JSON);
	}
	if (opl == NULL)
		add_row(out, "output_plugin_libraries", 1,
				"This server has no output_plugin_libraries setting: any installed output plugin may decode.",
				NULL);
	else
	{
		StringInfoData missing;

		initStringInfo(&missing);
		foreach(lc, decoders)
			if (!list_has(opl, lfirst(lc)))
				appendStringInfo(&missing, "%s%s", missing.len ? ", " : "", (char *) lfirst(lc));
		if (missing.len == 0)
			add_row(out, "output_plugin_libraries", 1,
					psprintf("output_plugin_libraries (\"%s\") allows the decoders in use (%s).", opl,
							 list_length(decoders) > 1 ? "pgoutput, wal2json" : "pgoutput"),
					NULL);
		else
			add_row(out, "output_plugin_libraries", 0,
					psprintf("decoding with %s needs it to be allowed as an output plugin: output_plugin_libraries is \"%s\".",
							 missing.data, opl),
					psprintf("Add %s to output_plugin_libraries in postgresql.conf, e.g. output_plugin_libraries = '%s, %s', and reload.",
							 missing.data, opl, missing.data));
	}
}

/* ---- destinations ---- */

typedef struct ProbeArg
{
	CheckDest  *cd;
} ProbeArg;

static char *
probe_fn(void *arg)
{
	CheckDest  *cd = ((ProbeArg *) arg)->cd;

	return egress_sink_probe(cd->kind, cd->location, cd->options, superuser_arg(cd->owner));
}

/* the directory of a file destination, or its nearest existing ancestor */
static char *
existing_dir(const char *dir)
{
	char	   *path = pstrdup(dir);
	struct stat st;

	while (stat(path, &st) != 0 && strcmp(path, "/") != 0)
	{
		char	   *slash = strrchr(path, '/');

		if (slash == path)
			slash[1] = '\0';
		else
			*slash = '\0';
	}
	return path;
}

static void
check_disk(CheckOut *out, const char *label, CheckDest *cd)
{
	char	   *path = existing_dir(cd->location);
	struct statvfs sv;
	int64		avail;

	if (statvfs(path, &sv) != 0)
	{
		add_row(out, label, 0,
				psprintf("could not read the free space of \"%s\": %m", path), NULL);
		return;
	}
	avail = (int64) sv.f_bavail * (int64) sv.f_frsize;
	if (avail >= cd->table_bytes)
		add_row(out, label, 1,
				psprintf("%s free on the file system of \"%s\"; the tables of the destination's streams take about %s.",
						 size_text(avail), path, size_text(cd->table_bytes)),
				NULL);
	else
		add_row(out, label, 0,
				psprintf("file destination \"%s\" has %s free on the file system of \"%s\", less than the %s its streams' tables take.",
						 cd->name, size_text(avail), path, size_text(cd->table_bytes)),
				"An initial sync writes at least as much as the table holds: free space there, or send the streams elsewhere.");
}

/* WAL the destination's slot holds, against max_slot_wal_keep_size */
static void
check_slot_wal(CheckOut *out, const char *label, CheckDest *cd)
{
	char	   *wal_status = NULL;
	int64		held = 0;
	bool		exists = false;
	char	   *plugin = NULL;
	Oid			dboid = InvalidOid;
	int64		keep = (int64) max_slot_wal_keep_size_mb * 1024 * 1024;
	MemoryContext outer = CurrentMemoryContext;

	if (egress_slot_lookup(cd->slot_name, &plugin, &dboid))
	{
		Oid			argtypes[1] = {TEXTOID};
		Datum		values[1] = {CStringGetTextDatum(cd->slot_name)};

		if (!egress_plugin_is_ours(plugin) || dboid != MyDatabaseId)
		{
			add_row(out, label, 0,
					psprintf("replication slot \"%s\" cannot be used by destination \"%s\": pg_egress needs a slot of this database with plugin pgoutput or wal2json; it has plugin \"%s\".",
							 cd->slot_name, cd->name, plugin),
					NULL);
			return;
		}
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (SPI_execute_with_args("SELECT wal_status, "
								  "pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), restart_lsn)::pg_catalog.int8 "
								  "FROM pg_catalog.pg_replication_slots WHERE slot_name OPERATOR(pg_catalog.=) $1::pg_catalog.name",
								  1, argtypes, values, NULL, true, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
		{
			bool		isnull;
			Datum		d;
			MemoryContext old = MemoryContextSwitchTo(outer);

			wal_status = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
			d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
			held = isnull ? 0 : DatumGetInt64(d);
			if (wal_status)
				wal_status = pstrdup(wal_status);
			MemoryContextSwitchTo(old);
			exists = true;
		}
		SPI_finish();
	}

	if (exists && wal_status != NULL && strcmp(wal_status, "lost") == 0)
	{
		add_row(out, label, 0,
				psprintf("replication slot \"%s\" of destination \"%s\" was invalidated: the server removed WAL it still needed.",
						 cd->slot_name, cd->name),
				"Resync the destination's LOG_BASED streams with egress_resync_stream().");
		return;
	}
	if (max_slot_wal_keep_size_mb < 0)
	{
		if (egress_max_slot_wal_mb == 0)
			add_row(out, label, 0,
					psprintf("nothing bounds the WAL replication slot \"%s\" may hold: max_slot_wal_keep_size and pg_egress.max_slot_wal are both unlimited.",
							 cd->slot_name),
					"Set pg_egress.max_slot_wal (or max_slot_wal_keep_size), so that a destination that keeps failing cannot fill pg_wal.");
		else
			add_row(out, label, 1,
					psprintf("Replication slot \"%s\" holds %s WAL; pg_egress.max_slot_wal (%d MB) bounds it, and max_slot_wal_keep_size is unlimited.",
							 cd->slot_name, exists ? psprintf("%s of", size_text(held)) : "no", egress_max_slot_wal_mb),
					NULL);
		return;
	}
	if (egress_max_slot_wal_mb == 0 || egress_max_slot_wal_mb >= max_slot_wal_keep_size_mb)
	{
		add_row(out, label, 0,
				psprintf("max_slot_wal_keep_size (%d MB) would invalidate replication slot \"%s\" before pg_egress.max_slot_wal (%d MB) acts: the server would remove WAL the slot needs, and the destination's LOG_BASED streams would have to be synced again from scratch.",
						 max_slot_wal_keep_size_mb, cd->slot_name, egress_max_slot_wal_mb),
				"Set pg_egress.max_slot_wal below max_slot_wal_keep_size, or raise max_slot_wal_keep_size.");
		return;
	}
	if (exists && (held >= keep / 10 * 8 ||
				   (wal_status != NULL && strcmp(wal_status, "unreserved") == 0)))
	{
		add_row(out, label, 0,
				psprintf("replication slot \"%s\" holds %s of WAL, close to max_slot_wal_keep_size (%d MB).",
						 cd->slot_name, size_text(held), max_slot_wal_keep_size_mb),
				"Find out why the destination does not acknowledge (egress_streams.last_error), or raise max_slot_wal_keep_size.");
		return;
	}
	add_row(out, label, 1,
			psprintf("Replication slot \"%s\" holds %s WAL; pg_egress.max_slot_wal (%d MB) acts before max_slot_wal_keep_size (%d MB).",
					 cd->slot_name, exists ? psprintf("%s of", size_text(held)) : "no", egress_max_slot_wal_mb,
					 max_slot_wal_keep_size_mb),
			NULL);
}

static void
check_destination(CheckOut *out, CheckDest *cd)
{
	Oid			caller = GetUserId();
	char	   *problem = egress_destination_use_problem(caller, cd->kind, cd->owner);
	char	   *detail;
	char	   *hint;
	ProbeArg	parg = {cd};
	int			ok;

	if (problem != NULL)
	{
		add_row(out, psprintf("destination (%s)", cd->name), 0,
				psprintf("%s.", problem),
				strcmp(cd->kind, "file") == 0 ?
				"Only roles with privileges of the \"pg_write_server_files\" role may use file destinations." :
				"Only superusers and roles allowed to execute egress_export(text, text, text) may use S3 and Kinesis destinations.");
		return;
	}
	add_row(out, psprintf("destination (%s)", cd->name), 1,
			psprintf("Destination \"%s\" (%s) may be used by role \"%s\".", cd->name, cd->kind,
					 GetUserNameFromId(caller, false)),
			NULL);

	ok = run_captured(probe_fn, &parg, &detail, &hint) ? 1 : 0;
	if (ok && detail == NULL)
	{
		ok = -1;
		detail = psprintf("%s destinations cannot be probed yet: not checked.", cd->kind);
	}
	add_row(out, psprintf("reachable (%s)", cd->name), ok, detail, hint);

	if (strcmp(cd->kind, "file") == 0)
		check_disk(out, psprintf("disk (%s)", cd->name), cd);
	if (cd->log_based)
		check_slot_wal(out, psprintf("slot_wal (%s)", cd->name), cd);
}

/* ---- streams ---- */

typedef struct StreamCheckArg
{
	EgressStreamCheck which;
	CheckStream *cs;
} StreamCheckArg;

static char *
stream_check_fn(void *arg)
{
	StreamCheckArg *a = arg;

	egress_stream_check(a->which, a->cs->relid, a->cs->relation, a->cs->owner,
						egress_stream_columns(a->cs->options));
	return NULL;
}

static bool
stream_captured(CheckStream *cs, EgressStreamCheck which, char **detail, char **hint)
{
	StreamCheckArg a = {which, cs};

	return run_captured(stream_check_fn, &a, detail, hint);
}

/* what UPDATEs and DELETEs of a LOG_BASED stream's table carry */
static char *
identity_text(Relation rel)
{
	char		ident = rel->rd_rel->relreplident;
	Oid			relid = RelationGetRelid(rel);

	if (ident == REPLICA_IDENTITY_FULL)
		return pstrdup("REPLICA IDENTITY FULL: UPDATEs and DELETEs carry the whole old row.");
	if (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
		return pstrdup("Each partition's replica identity decides what its UPDATEs and DELETEs carry.");
	{
		Bitmapset  *ident_cols = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_IDENTITY_KEY);
		StringInfoData cols;
		int			x = -1;

		initStringInfo(&cols);
		while ((x = bms_next_member(ident_cols, x)) >= 0)
			appendStringInfo(&cols, "%s%s", cols.len ? ", " : "",
							 quote_identifier(get_attname(relid, x + FirstLowInvalidHeapAttributeNumber, false)));
		return psprintf("REPLICA IDENTITY %s: UPDATEs carry the new row, DELETEs only the key (%s); old values of other columns are not sent.",
						ident == REPLICA_IDENTITY_INDEX ? "USING INDEX" : "DEFAULT (the primary key)",
						cols.data);
	}
}

static void
check_toast(CheckOut *out, const char *label, CheckStream *cs)
{
	Relation	rel;
	List	   *columns = egress_stream_columns(cs->options);
	StringInfoData cols;
	BlockNumber toast_blocks = 0;
	bool		full;

	rel = relation_open(cs->relid, AccessShareLock);
	full = rel->rd_rel->relreplident == REPLICA_IDENTITY_FULL;
	initStringInfo(&cols);
	for (int i = 0; i < RelationGetDescr(rel)->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), i);
		bool		listed = columns == NIL;
		ListCell   *lc;

		if (att->attisdropped || att->attlen != -1 || att->attstorage == TYPSTORAGE_PLAIN)
			continue;
		foreach(lc, columns)
			if (strcmp(lfirst(lc), NameStr(att->attname)) == 0)
				listed = true;
		if (listed)
			appendStringInfo(&cols, "%s%s", cols.len ? ", " : "",
							 quote_identifier(NameStr(att->attname)));
	}
	if (OidIsValid(rel->rd_rel->reltoastrelid))
	{
		Relation	toast = relation_open(rel->rd_rel->reltoastrelid, AccessShareLock);

		toast_blocks = RelationGetNumberOfBlocks(toast);
		relation_close(toast, AccessShareLock);
	}
	relation_close(rel, AccessShareLock);

	if (full)
		add_row(out, label, 1,
				"REPLICA IDENTITY FULL: unchanged TOASTed values come with the change, nothing is read again.",
				NULL);
	else if (cols.len == 0)
		add_row(out, label, 1, "No column of the stream can be TOASTed.", NULL);
	else if (toast_blocks == 0)
		add_row(out, label, 1,
				psprintf("No value of the table is stored out of line yet (columns that can be TOASTed: %s).",
						 cols.data),
				NULL);
	else
		add_row(out, label, 0,
				psprintf("UPDATEs of \"%s\" that leave TOASTed values unchanged (columns %s) do not log them: the stream reads each such row again from the table (its TOAST table has %s).",
						 cs->relation, cols.data, size_text((int64) toast_blocks * BLCKSZ)),
				"Set REPLICA IDENTITY FULL on the table to log whole old rows instead: more WAL, no re-reads.");
}

static void
check_stream(CheckOut *out, CheckStream *cs)
{
	bool		log_based = strcmp(cs->method, "LOG_BASED") == 0;
	char	   *detail;
	char	   *hint;
	char	   *owner = GetUserNameFromId(cs->owner, true);
	HeapTuple	tup;
	bool		rowsecurity;

	if (owner == NULL)
		owner = psprintf("%u", cs->owner);
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(cs->relid));
	if (!HeapTupleIsValid(tup))
	{
		add_row(out, psprintf("privileges (stream %s)", cs->name), 0,
				psprintf("relation \"%s\" of stream \"%s\" no longer exists.", cs->relation, cs->name),
				"Remove the stream with egress_remove_stream().");
		return;
	}
	rowsecurity = ((Form_pg_class) GETSTRUCT(tup))->relrowsecurity;
	ReleaseSysCache(tup);

	/* privileges of the stream's owner, as the workers read */
	if (stream_captured(cs, EGRESS_STREAM_CHECK_PRIVILEGES, &detail, &hint))
		add_row(out, psprintf("privileges (stream %s)", cs->name), 1,
				psprintf("Role \"%s\" may read %s%s and use its schema.", owner, cs->relation,
						 egress_stream_columns(cs->options) != NIL ? " (the columns streamed)" : ""),
				NULL);
	else
	{
		add_row(out, psprintf("privileges (stream %s)", cs->name), 0, detail, hint);
		return;					/* nothing else may be said of it */
	}

	/* row-level security */
	if (log_based)
	{
		if (stream_captured(cs, EGRESS_STREAM_CHECK_ROW_SECURITY, &detail, &hint))
			add_row(out, psprintf("row_security (stream %s)", cs->name), 1,
					rowsecurity ?
					psprintf("The policies of %s do not apply to role \"%s\": changes are sent whole.", cs->relation, owner) :
					psprintf("%s has no row-level security.", cs->relation),
					NULL);
		else
			add_row(out, psprintf("row_security (stream %s)", cs->name), 0, detail, hint);
	}
	else
		add_row(out, psprintf("row_security (stream %s)", cs->name), 1,
				rowsecurity ?
				psprintf("%s has row-level security: the stream reads the rows its policies let role \"%s\" see.", cs->relation, owner) :
				psprintf("%s has no row-level security.", cs->relation),
				NULL);

	if (!log_based)
		return;

	/* replica identity: can changes be keyed, and what they carry */
	if (stream_captured(cs, EGRESS_STREAM_CHECK_KEYED, &detail, &hint))
	{
		Relation	rel = relation_open(cs->relid, AccessShareLock);

		detail = identity_text(rel);
		relation_close(rel, AccessShareLock);
		add_row(out, psprintf("replica_identity (stream %s)", cs->name), 1, detail, NULL);
	}
	else
		add_row(out, psprintf("replica_identity (stream %s)", cs->name), 0, detail, hint);

	check_toast(out, psprintf("toast (stream %s)", cs->name), cs);
}

Datum
egress_check(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *dest_arg = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *stream_arg = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	List	   *dests;
	List	   *streams;
	ListCell   *lc;
	CheckOut	out;
	bool		log_based = false;

	InitMaterializedSRF(fcinfo, 0);
	out.ts = rsinfo->setResult;
	out.desc = rsinfo->setDesc;

	load_scope(dest_arg, stream_arg, &dests, &streams);
	foreach(lc, streams)
		if (strcmp(((CheckStream *) lfirst(lc))->method, "LOG_BASED") == 0)
			log_based = true;

	check_server(&out, dests, log_based);

	if (dest_arg != NULL && dests == NIL)
		add_row(&out, psprintf("destination (%s)", dest_arg), 0,
				psprintf("destination \"%s\" does not exist.", dest_arg),
				"egress_check() checks the destinations of the roles whose privileges the caller has.");
	if (stream_arg != NULL && streams == NIL)
		add_row(&out, psprintf("stream (%s)", stream_arg), 0,
				dest_arg ? psprintf("stream \"%s\" of destination \"%s\" does not exist.", stream_arg, dest_arg)
				: psprintf("stream \"%s\" does not exist.", stream_arg),
				"egress_check() checks the streams of the roles whose privileges the caller has.");

	foreach(lc, dests)
		check_destination(&out, lfirst(lc));
	foreach(lc, streams)
		check_stream(&out, lfirst(lc));

	return (Datum) 0;
}

/*
 * Called by egress_add_stream() before it writes anything: a file
 * destination's directory must be writable by the server (file.c's probe,
 * which changes nothing), with egress_check()'s message.
 */
void
egress_check_add_stream(const char *dest, Oid role)
{
	List	   *dests;
	List	   *streams;
	CheckDest  *cd;

	load_scope(dest, "", &dests, &streams);
	if (dests == NIL)
		return;
	cd = linitial(dests);
	if (egress_destination_use_problem(role, cd->kind, cd->owner) != NULL)
		return;
	if (strcmp(cd->kind, "file") == 0)
		(void) egress_sink_probe(cd->kind, cd->location, cd->options,
								 superuser_arg(cd->owner));
}
