/*-------------------------------------------------------------------------
 * cdc.c
 *	  The CDC worker of a destination: decodes the destination's logical
 *	  slot in-process with wal2json and publishes the committed changes of
 *	  its LOG_BASED streams as Singer batches.
 *
 * One worker per destination, because a process holds one slot at a time.
 * Decoding is driven the way pg_logical_slot_get_changes() drives it, but
 * the decoding context stays open across rounds; each round reads WAL up
 * to the flush pointer taken at its start, then the worker sleeps on its
 * latch.  A batch is acknowledged by the sink before the positions it
 * carried are recorded (stream bookmarks in the catalog, the slot's
 * confirmed_flush), so after any crash delivery resumes from the last
 * acknowledged position; transactions at or before a stream's bookmark
 * are skipped when WAL is decoded again.
 *
 * The worker runs as the bootstrap superuser but reads for each stream's
 * owner: privileges are checked again, as of the change, after every
 * catalog change that can affect them (privilege_problem), and user code
 * reached while rendering runs as the owner (as_owner_begin).
 *
 * LOG_BASED_READY
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/heaptoast.h"
#include "access/relation.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "executor/tuptable.h"
#include "storage/procarray.h"
#include "utils/snapshot.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlogutils.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/decode.h"
#include "replication/logical.h"
#include "replication/slot.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "nodes/value.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/syscache.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"
#include "utils/resowner.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "catalog/catalog.h"
#include "catalog/sqlfuncs.h"
#include "decode/slot.h"
#include "decode/wal2json.h"
#include "encode/singer.h"
#include "pg_egress.h"
#include "sink/sink.h"
#include "worker/snapshot.h"

/* Why a stream takes no more changes in this session. */
typedef enum CdcStopKind
{
	CDC_STOP_NONE,
	CDC_STOP_ERROR,				/* its owner may no longer read it */
	CDC_STOP_RESYNC				/* a partition was truncated */
} CdcStopKind;

/* One LOG_BASED stream of the destination. */
typedef struct CdcStream
{
	EgressStreamDef *def;
	EgressSingerStream *st;		/* rebuilt from the decoded catalog after DDL */
	bool		st_stale;
	bool		recheck;		/* DDL touched the table: does it still exist? */
	bool		dropped;		/* ... it does not */
	char	   *sent_schema;	/* schema_json last sent for this stream */
	bool		schema_in_batch;	/* SCHEMA already written in the batch */
	bool		debug_lsn;
	bool		pause_on_lag;
	int64		version;
	XLogRecPtr	bookmark;		/* transactions ending at or before are done */
	bool		needs_sync;		/* initial sync (or resync) pending */
	EgressWorkerSlot *slot;
	int64		rows_sent;
	int64		bytes_sent;
	int64		batches_sent;
	bool		privs_stale;	/* grants, schema, roles or policies changed */
	bool		user_code;		/* rendering may reach user code */
	CdcStopKind stop;			/* stopped in this session (see stop_stream) */
	char	   *stop_message;
	int64		acked_version;	/* version as of the last acknowledged batch */
} CdcStream;

/* Output held back until a deferred row is re-read (see defer_row). */
typedef struct PendingPiece
{
	StringInfoData text;		/* batch output before the deferred record */
	CdcStream  *s;
	EgressSingerStream *st;
	EgressChange ch;
	XLogRecPtr	commit;
	TimestampTz commit_time;
	int64		version;
	char	   *time_extracted;
} PendingPiece;

/*
 * Where a decoded table name leads: a stream index or -1.  Keyed by the
 * (schema, table) pair as wal2json gives them: joined with a dot, "a.b"."c"
 * and "a"."b.c" would be one key.
 */
typedef struct RelMapKey
{
	NameData	schema;
	NameData	table;
} RelMapKey;

typedef struct RelMapEntry
{
	RelMapKey	key;
	int			stream;
	Oid			relid;			/* the decoded relation (maybe a partition) */
} RelMapEntry;

typedef struct CdcState
{
	char	   *dest_name;
	char	   *dest_kind;
	char	   *dest_location;
	Oid			dest_owner;
	bool		dest_owner_superuser;
	Jsonb	   *dest_options;
	char	   *slot_name;
	bool		slot_owned;

	int			nstreams;
	CdcStream  *streams;
	HTAB	   *relmap;
	bool		relmap_stale;	/* rebuilt at the next lookup */

	LogicalDecodingContext *ctx;
	MemoryContext decodecxt;	/* the decoding context and its helpers */
	EgressSink *sink;

	/* the open batch */
	bool		batch_open;
	int64		batch_rows;
	int64		batch_bytes;
	TimestampTz batch_started;
	XLogRecPtr	batch_first_commit;
	int			batch_first_ordinal;	/* record number in its transaction */
	XLogRecPtr	batch_last_commit;
	XLogRecPtr	batch_last_end; /* end of the last complete txn in the batch */
	StringInfoData buf;
	StringInfoData time_extracted;
	MemoryContext batchcxt;
	MemoryContext msgcxt;
	MemoryContext pendcxt;		/* deferred records */
	List	   *pending;		/* of PendingPiece */
	int64		max_rows;
	int64		max_bytes;
	bool		acked_since_persist;

	/* the transaction being replayed */
	XLogRecPtr	txn_commit;
	XLogRecPtr	txn_end;
	TimestampTz txn_time;
	int			txn_records;

	XLogRecPtr	delivered;		/* everything ending here or before is acked */
	XLogRecPtr	persisted_end;	/* end of our last bookmark update's WAL */
	TimestampTz persisted_at;
	bool		lag_warned;
	uint32		config_gen;
	char	   *fingerprint;	/* of the configuration loaded (TopMemoryContext) */
	bool		catalog_moved;	/* a bookmark found its stream no longer streaming */
	EgressColumn deleted_at_col;	/* renders _sdc_deleted_at */
} CdcState;

static CdcState *cdc;
static ResourceOwner cdc_owner;

static void cdc_commit_batch(void);
static void resolve_pending(void);
static char *config_fingerprint(MemoryContext cxt);

/*
 * Decoding leaves time-travel entries in the caches: throw them away before
 * ordinary catalog work.  Only inside a transaction, since relcache entries
 * in use are rebuilt on the spot.
 */
static void
start_catalog_transaction(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	InvalidateSystemCaches();
}

/* ---- relation map and DDL ------------------------------------------------ */

/*
 * Invalidation callbacks.  They run wherever invalidations are processed,
 * also in the middle of a catalog lookup of lookup_stream(): they only mark
 * things stale and never free memory that may be in use.  During decoding
 * they report the catalog changes of decoded transactions, so the stale
 * marks take effect from the first change committed after them.
 */
static void
cdc_relcache_callback(Datum arg, Oid relid)
{
	if (cdc == NULL)
		return;
	for (int i = 0; i < cdc->nstreams; i++)
		if (!OidIsValid(relid) || cdc->streams[i].def->relid == relid)
			cdc->streams[i].st_stale = cdc->streams[i].recheck =
				cdc->streams[i].privs_stale = true;
	/* a rename or a new partition changes where names lead */
	cdc->relmap_stale = true;
}

/* Schemas (USAGE), roles (superuser, BYPASSRLS) and memberships changed. */
static void
cdc_syscache_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	if (cdc == NULL)
		return;
	for (int i = 0; i < cdc->nstreams; i++)
		cdc->streams[i].privs_stale = true;
	if (cacheid == NAMESPACEOID)
		cdc->relmap_stale = true;	/* a renamed schema */
}

static int
stream_of_relid(Oid relid)
{
	for (int i = 0; i < cdc->nstreams; i++)
		if (cdc->streams[i].def->relid == relid && !cdc->streams[i].needs_sync)
			return i;
	return -1;
}

/*
 * Runs inside decoding: catalog lookups see the catalog as of the change.
 * *relid is the decoded relation (a partition of the stream's table, or
 * the table itself).
 */
static int
lookup_stream(const char *schema, const char *table, Oid *relidp)
{
	RelMapKey	key;
	RelMapEntry *e;
	bool		found;
	Oid			nsp;
	Oid			relid;
	int			stream;

	*relidp = InvalidOid;
	if (strlen(schema) >= NAMEDATALEN || strlen(table) >= NAMEDATALEN)
		return -1;				/* not a name PostgreSQL could have */

	/* nothing points into the map here: a stale one can go */
	if (cdc->relmap != NULL && cdc->relmap_stale)
	{
		hash_destroy(cdc->relmap);
		cdc->relmap = NULL;
	}
	if (cdc->relmap == NULL)
	{
		HASHCTL		hctl;

		hctl.keysize = sizeof(RelMapKey);
		hctl.entrysize = sizeof(RelMapEntry);
		hctl.hcxt = cdc->decodecxt;
		cdc->relmap = hash_create("pg_egress relation map", 64, &hctl,
								  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		cdc->relmap_stale = false;
	}
	memset(&key, 0, sizeof(key));
	namestrcpy(&key.schema, schema);
	namestrcpy(&key.table, table);
	e = hash_search(cdc->relmap, &key, HASH_FIND, NULL);
	if (e != NULL)
	{
		*relidp = e->relid;
		return e->stream;
	}

	/*
	 * Resolve first, enter afterwards: these lookups may process
	 * invalidations.  If one arrives meanwhile, the entry is entered all
	 * the same and the map is rebuilt at the next lookup.
	 */
	nsp = get_namespace_oid(schema, true);
	relid = OidIsValid(nsp) ? get_relname_relid(table, nsp) : InvalidOid;
	stream = OidIsValid(relid) ? stream_of_relid(relid) : -1;
	if (stream < 0 && OidIsValid(relid) && get_rel_relispartition(relid))
	{
		/* a partition: its rows belong to the partitioned table's stream */
		List	   *ancestors = get_partition_ancestors(relid);
		ListCell   *lc;

		foreach(lc, ancestors)
		{
			stream = stream_of_relid(lfirst_oid(lc));
			if (stream >= 0)
				break;
		}
		list_free(ancestors);
	}

	e = hash_search(cdc->relmap, &key, HASH_ENTER, &found);
	e->stream = stream;
	e->relid = relid;
	*relidp = relid;
	return stream;
}

/*
 * What the stream's owner lacks to read the stream's table as it is now
 * (inside decoding: as of the change being decoded), or NULL.  The same
 * rules as egress_add_stream: USAGE on the schema, SELECT on the table or
 * on every column, and no row-level security that applies to the owner.
 * A table that is gone is left to stop_dropped_streams().  Result in
 * CurrentMemoryContext.
 */
static char *
privilege_problem(EgressStreamDef *def)
{
	HeapTuple	tup;
	Oid			nsp;
	char	   *role;
	char	   *problem;

	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(def->relid));
	if (!HeapTupleIsValid(tup))
		return NULL;
	nsp = ((Form_pg_class) GETSTRUCT(tup))->relnamespace;
	ReleaseSysCache(tup);

	role = GetUserNameFromId(def->owner, true);
	if (role == NULL)
		return psprintf("the role that owns stream \"%s\" no longer exists", def->name);
	if (pg_namespace_aclcheck(nsp, def->owner, ACL_USAGE) != ACLCHECK_OK)
		return psprintf("permission denied for schema %s: role \"%s\" has no USAGE on it",
						get_namespace_name(nsp), role);
	if (pg_class_aclcheck(def->relid, def->owner, ACL_SELECT) != ACLCHECK_OK &&
		pg_attribute_aclcheck_all(def->relid, def->owner, ACL_SELECT, ACLMASK_ALL) != ACLCHECK_OK)
		return psprintf(pg_attribute_aclcheck_all(def->relid, def->owner, ACL_SELECT, ACLMASK_ANY) == ACLCHECK_OK ?
						"permission denied for table %s: role \"%s\" may not read all of its columns" :
						"permission denied for table %s: role \"%s\" may not read it",
						def->relation, role);
	if (check_enable_rls(def->relid, def->owner, true) == RLS_ENABLED)
		return psprintf("row-level security of table %s applies to role \"%s\", the owner of stream \"%s\"",
						def->relation, role, def->name);
	/* and may still send it there (pg_write_server_files, S3, destination owner) */
	problem = egress_destination_use_problem(def->owner, def->dest_kind, def->dest_owner);
	if (problem != NULL)
		return psprintf("stream \"%s\" may no longer use destination \"%s\": %s",
						def->name, def->dest_name, problem);
	return NULL;
}

/*
 * The stream takes no more changes in this session; apply_stream_stops()
 * records why once decoding pauses, and the session starts over.
 */
static void
stop_stream(CdcStream *s, CdcStopKind kind, const char *message)
{
	if (s->stop != CDC_STOP_NONE)
		return;
	s->stop = kind;
	s->stop_message = MemoryContextStrdup(cdc->decodecxt, message);
}

/* The stream's column layout as of the change being decoded. */
static void
refresh_descriptor(CdcStream *s)
{
	Relation	rel;
	MemoryContext oldcxt;

	if (!s->st_stale && s->st != NULL)
		return;
	rel = RelationIdGetRelation(s->def->relid);
	if (!RelationIsValid(rel))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation %s of stream \"%s\" no longer exists",
						s->def->relation, s->def->name)));
	RelationClose(rel);
	oldcxt = MemoryContextSwitchTo(cdc->decodecxt);
	s->st = egress_singer_stream_for_relation_nolock(s->def->relid, true, s->debug_lsn);
	MemoryContextSwitchTo(oldcxt);
	s->st_stale = false;

	/*
	 * Values come as text and arrays are parsed again (egress_column_value_
	 * text).  Their elements are parsed with a type whose input function
	 * reaches no user code (egress_check_free_input_type): a domain's base
	 * type, since the values passed the domain's CHECK when they were
	 * written, and the CHECK is user code.  When there is none (a composite
	 * with a domain field, a range of a domain), rendering may reach user
	 * code: only then does it switch to the owner (see as_owner_begin; it
	 * costs a settings save and restore per change).
	 */
	s->user_code = false;
	for (int i = 0; i < s->st->ncolumns; i++)
	{
		EgressColumn *col = &s->st->columns[i];
		Oid			elem;

		if (col->kind != EGRESS_KIND_ARRAY || !col->has_infunc)
			continue;
		elem = egress_check_free_input_type(col->typioparam, NULL);
		if (OidIsValid(elem))
			col->typioparam = elem;
		else
		{
			col->typioparam = getBaseType(col->typioparam);
			s->user_code = true;
		}
	}
	if (s->sent_schema == NULL || strcmp(s->sent_schema, s->st->schema_json) != 0)
		s->schema_in_batch = false; /* a new SCHEMA before the next record */
}

/* ---- delivery: batch age, giving up a retry -------------------------------- */

/* How long a sink retries a batch before the worker takes over again. */
#define CDC_MAX_RETRY_MS 30000

static int
cdc_flush_interval_ms(void)
{
	return egress_dest_flush_interval_ms(cdc->dest_options);
}

static int64 current_lag(void);
static int64 current_unacked(void);
static bool check_lag(int64 lag, bool may_pause);
static void enforce_wal_limit(int64 lag);
static bool over_wal_limit(int64 lag);
static void slot_invalidated(void);

/* the stream an initial sync is for, for the error path; 0: none */
static int32 syncing_stream = 0;

/* the sink is retrying a batch: the streams show state "retrying" */
static bool cdc_retrying = false;

static void
set_retrying(bool retrying)
{
	for (int i = 0; i < cdc->nstreams; i++)
		if (cdc->streams[i].slot && !cdc->streams[i].needs_sync)
			egress_set_phase(cdc->streams[i].slot, retrying ? "retrying" : "streaming");
	cdc_retrying = retrying;
}

/*
 * Asked by the sink between retries of a batch.  It gives up (and the
 * error path shows the failure, applies the WAL retention guard and starts
 * a new session after a pause) when the configuration changed, when the
 * destination left more WAL unacknowledged than pg_egress.max_slot_wal,
 * when a stream's lag_policy "pause" applies, or after CDC_MAX_RETRY_MS.  Nothing was
 * acknowledged, so the new session sends the same changes again.  An
 * initial sync's batches are retried until they are delivered (giving up
 * would put the stream into state error).
 */
static bool
cdc_keep_retrying(void *arg, TimestampTz since)
{
	int64		lag;

	/*
	 * The WAL guards first: a dead destination must not hold WAL past them,
	 * not even while an initial sync is retried.
	 */
	if (over_wal_limit(current_unacked()))
		return false;			/* the error path drops the slot */
	lag = current_lag();
	(void) check_lag(lag, false);
	for (int i = 0; i < cdc->nstreams; i++)
		if (cdc->streams[i].pause_on_lag && egress_max_slot_lag_mb > 0 &&
			lag > (int64) egress_max_slot_lag_mb * 1024 * 1024)
			return false;

	if (syncing_stream != 0)
		return true;
	if (!cdc_retrying)
		set_retrying(true);
	if (pg_atomic_read_u32(&egress_shared->config_gen) != cdc->config_gen)
		return false;
	if (TimestampDifferenceExceeds(since, GetCurrentTimestamp(), CDC_MAX_RETRY_MS))
		return false;
	return true;
}

/* ---- batches ------------------------------------------------------------- */

static void
hand_to_sink(void)
{
	/* after a deferred record, keep the order: wait until it is resolved */
	if (cdc->buf.len > 0 && cdc->pending == NIL)
	{
		cdc->sink->ops->write(cdc->sink, cdc->buf.data, cdc->buf.len);
		cdc->batch_bytes += cdc->buf.len;
		resetStringInfo(&cdc->buf);
	}
}

static void
cdc_begin_batch(void)
{
	EgressBatchInfo info;
	char		prefix[NAMEDATALEN + 2];

	/* '~' cannot start a stream name: no clash with snapshot batches */
	snprintf(prefix, sizeof(prefix), "~%s", cdc->dest_name);
	info.prefix = prefix;
	cdc->sink->ops->begin_batch(cdc->sink, &info);
	cdc->batch_open = true;
	cdc->batch_rows = 0;
	cdc->batch_bytes = 0;
	cdc->batch_started = GetCurrentTimestamp();
	cdc->batch_first_commit = cdc->txn_commit;
	cdc->batch_first_ordinal = cdc->txn_records;
	cdc->batch_last_end = InvalidXLogRecPtr;
	resetStringInfo(&cdc->time_extracted);
	egress_append_time_extracted(&cdc->time_extracted, cdc->batch_started);
	for (int i = 0; i < cdc->nstreams; i++)
		cdc->streams[i].schema_in_batch = false;
}

/* Before a record (or ACTIVATE_VERSION) of stream s goes into the batch. */
static void
prepare_record(CdcStream *s)
{
	if (!cdc->batch_open)
		cdc_begin_batch();
	refresh_descriptor(s);
	if (!s->schema_in_batch)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(cdc->decodecxt);

		egress_singer_schema(&cdc->buf, s->st);
		if (s->sent_schema)
			pfree(s->sent_schema);
		s->sent_schema = pstrdup(s->st->schema_json);
		s->schema_in_batch = true;
		MemoryContextSwitchTo(oldcxt);
	}
}

static void
after_record(void)
{
	cdc->batch_rows++;
	cdc->txn_records++;
	cdc->batch_last_commit = cdc->txn_commit;
	if (cdc->buf.len >= 256 * 1024)
		hand_to_sink();
	/* a batch waiting for a re-read is closed when decoding pauses */
	if (cdc->pending == NIL &&
		(cdc->batch_rows >= cdc->max_rows ||
		 cdc->batch_bytes + cdc->buf.len >= cdc->max_bytes))
		cdc_commit_batch();
}

static XLogRecPtr
stream_lsn(CdcStream *s, XLogRecPtr upto)
{
	return Max(s->bookmark, upto);
}

static void
cdc_commit_batch(void)
{
	char		batch_id[NAMEDATALEN + 64];
	XLogRecPtr	upto;
	bool		first = true;
	StringInfoData bm;

	if (!cdc->batch_open)
		return;
	resolve_pending();

	/* the positions this batch completes: its last whole transaction */
	upto = XLogRecPtrIsInvalid(cdc->batch_last_end) ? cdc->delivered : cdc->batch_last_end;

	initStringInfo(&bm);
	egress_singer_state_open(&cdc->buf, NULL);
	for (int i = 0; i < cdc->nstreams; i++)
	{
		CdcStream  *s = &cdc->streams[i];

		if (s->needs_sync || s->st == NULL || s->stop != CDC_STOP_NONE)
			continue;
		resetStringInfo(&bm);
		egress_singer_bookmark_log_based(&bm, stream_lsn(s, upto), s->version);
		egress_singer_state_add(&cdc->buf, s->st->stream_id, bm.data, first);
		first = false;
	}
	egress_singer_state_close(&cdc->buf);
	pfree(bm.data);
	hand_to_sink();

	snprintf(batch_id, sizeof(batch_id), "%s-%08X%08X-%08X%08X-%010d",
			 cdc->dest_name,
			 LSN_FORMAT_ARGS(cdc->batch_first_commit),
			 LSN_FORMAT_ARGS(cdc->batch_last_commit),
			 cdc->batch_first_ordinal);
	cdc->sink->ops->commit_batch(cdc->sink, batch_id);
	cdc->batch_open = false;
	if (cdc_retrying)
		set_retrying(false);

	/* acknowledged: what it completed is delivered */
	cdc->delivered = Max(cdc->delivered, upto);
	for (int i = 0; i < cdc->nstreams; i++)
	{
		CdcStream  *s = &cdc->streams[i];

		if (s->needs_sync || s->stop != CDC_STOP_NONE)
			continue;
		s->bookmark = Max(s->bookmark, cdc->delivered);
		s->acked_version = s->version;
		s->batches_sent++;
		if (s->slot)
		{
			s->slot->rows_sent = s->rows_sent;
			s->slot->batches_sent = s->batches_sent;
			s->slot->confirmed_lsn = s->bookmark;
		}
	}
	cdc->acked_since_persist = true;
	MemoryContextReset(cdc->batchcxt);
	ereport(DEBUG1,
			(errmsg_internal("pg_egress destination \"%s\": batch %s acknowledged",
							 cdc->dest_name, batch_id)));
}

/* ---- rendering changes ---------------------------------------------------- */

/*
 * Rendering a change can call user code: input functions that reach a
 * domain's CHECK (an array of a composite type with a domain field, a
 * range of a domain), and the TOAST re-read.  It runs as the stream's
 * owner under SECURITY_RESTRICTED_OPERATION with search_path pinned, as
 * snapshot.c runs the initial sync's query; never as the bootstrap
 * superuser the worker is.  An error there stops that stream only (the
 * error path of egress_cdc_main records it on syncing_stream); the
 * transaction's abort restores the user and the settings.
 */
typedef struct OwnerScope
{
	CdcStream  *s;
	bool		active;
	Oid			save_userid;
	int			save_sec;
	int			nestlevel;
} OwnerScope;

static void
as_owner_begin(CdcStream *s, OwnerScope *sc, bool always)
{
	sc->s = s;
	sc->active = always || s->user_code;
	if (!sc->active)
		return;
	GetUserIdAndSecContext(&sc->save_userid, &sc->save_sec);
	SetUserIdAndSecContext(s->def->owner,
						   sc->save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	sc->nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

static void
as_owner_end(OwnerScope *sc)
{
	if (!sc->active)
		return;
	/* settings the user code changed go too, as after an error */
	AtEOXact_GUC(false, sc->nestlevel);
	SetUserIdAndSecContext(sc->save_userid, sc->save_sec);
}

/* In PG_CATCH of code run by as_owner_begin: blame the stream, rethrow. */
static void
as_owner_failed(OwnerScope *sc)
{
	ErrorData  *edata;
	char	   *role;
	MemoryContext oldcxt = MemoryContextSwitchTo(cdc->decodecxt);

	edata = CopyErrorData();
	MemoryContextSwitchTo(oldcxt);
	/* FATAL and worse, a cancel, lack of memory: not the stream's fault */
	if (edata->elevel != ERROR ||
		edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
		edata->sqlerrcode == ERRCODE_OUT_OF_MEMORY)
		PG_RE_THROW();
	FlushErrorState();
	role = GetUserNameFromId(sc->s->def->owner, true);

	/*
	 * Errors of input functions (data exceptions) quote the value: row
	 * data, which must not reach the server log or egress_streams.
	 */
	if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) == ERRCODE_DATA_EXCEPTION)
		edata->message = psprintf("a value could not be read back (SQLSTATE %s)",
								  unpack_sql_state(edata->sqlerrcode));
	syncing_stream = sc->s->def->id;
	ereport(ERROR,
			(errcode(edata->sqlerrcode),
			 errmsg("stream \"%s\" stopped: a change could not be rendered as role \"%s\": %s",
					sc->s->def->name, role ? role : "?",
					edata->message),
			 errhint("Fix the cause, then call egress_resume_stream(); the stream is synchronized again.")));
}

static EgressChangeColumn *
find_column(EgressChangeColumn *cols, int ncols, const char *name, int *hint)
{
	/* wal2json writes columns in attribute order: try the next one first */
	if (*hint < ncols && strcmp(cols[*hint].name, name) == 0)
		return &cols[(*hint)++];
	for (int i = 0; i < ncols; i++)
		if (strcmp(cols[i].name, name) == 0)
		{
			*hint = i + 1;
			return &cols[i];
		}
	return NULL;
}

/* Append the rendering of a decoded column value. */
static void
append_value(StringInfo buf, EgressColumn *col, EgressChangeColumn *mc)
{
	if (mc->isnull)
		egress_column_value_text(buf, col, NULL, true);
	else if (mc->plain)
		egress_column_value_plain_text(buf, col,
									   egress_change_value_text(mc, col->basetypid));
	else
		egress_column_value_text(buf, col,
								 egress_change_value_text(mc, col->basetypid), false);
}

static void
append_sdc(StringInfo buf, CdcStream *s, bool deleted, bool first,
		   XLogRecPtr commit, TimestampTz commit_time)
{
	appendStringInfoString(buf, first ? "\"_sdc_deleted_at\":" : ",\"_sdc_deleted_at\":");
	if (deleted)
		egress_column_value(buf, &cdc->deleted_at_col, TimestampTzGetDatum(commit_time), false);
	else
		appendStringInfoString(buf, "null");
	if (s->debug_lsn)
		appendStringInfo(buf, ",\"_sdc_lsn\":\"" UINT64_FORMAT "\"", (uint64) commit);
}

/*
 * Unchanged TOASTed values are not in an UPDATE's WAL unless the old row
 * was logged whole (REPLICA IDENTITY FULL).  Otherwise the row is read
 * again by primary key, after decoding (with the current catalog: the
 * table may have been rewritten since the change), in the transaction
 * snapshot of the caller: the value may be newer than the change, never a
 * made-up null.  Returns NULL if the row is gone (a later change in the
 * WAL then carries its fate).
 */
static HeapTuple
reselect_row(CdcStream *s, EgressChange *ch, TupleDesc *descp)
{
	Relation	rel;
	Relation	idx;
	Oid			pkoid;
	IndexScanDesc scan;
	ScanKeyData keys[INDEX_MAX_KEYS];
	Form_pg_index indexform;
	Snapshot	snap;
	TupleTableSlot *slot;
	HeapTuple	result = NULL;

	rel = table_open(s->def->relid, AccessShareLock);
	pkoid = RelationGetPrimaryKeyIndex(rel);
	if (!OidIsValid(pkoid))
	{
		table_close(rel, AccessShareLock);
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot fill unchanged TOAST values of %s without a primary key",
						s->def->relation),
				 errhint("Set REPLICA IDENTITY FULL on the table.")));
	}
	idx = index_open(pkoid, AccessShareLock);
	indexform = idx->rd_index;
	for (int k = 0; k < indexform->indnkeyatts; k++)
	{
		AttrNumber	attno = indexform->indkey.values[k];
		Form_pg_attribute att = TupleDescAttr(RelationGetDescr(rel), attno - 1);
		int			hint = 0;
		EgressChangeColumn *mc = find_column(ch->columns, ch->ncolumns,
											 NameStr(att->attname), &hint);
		Oid			typinput;
		Oid			typioparam;
		Oid			opfamily = idx->rd_opfamily[k];
		Oid			opno;
		Oid			basetype;
		Oid			coltype;
		int32		basetypmod = att->atttypmod;
		Datum		value;

		if (mc == NULL || mc->isnull)
			elog(ERROR, "pg_egress: key column \"%s\" missing from a decoded change",
				 NameStr(att->attname));

		/*
		 * The key as a type whose input function reaches no user code: it
		 * passed a domain's CHECK when it was written, and the CHECK is user
		 * code, which a plain SELECT by the owner would not run.  A domain
		 * is read as its base type, an array of a domain as the array of
		 * the base type, relabelled below to the column's element type (the
		 * index's array_eq compares element types); egress_add_stream
		 * refuses keys that have no such type.
		 */
		basetype = egress_check_free_input_type(att->atttypid, &basetypmod);
		if (!OidIsValid(basetype))
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot read a row of %s again by its primary key column \"%s\"",
							s->def->relation, NameStr(att->attname)),
					 errdetail("Values of type %s cannot be read back without running code of the type's owners (a domain's CHECK).",
							   format_type_be(att->atttypid)),
					 errhint("Set REPLICA IDENTITY FULL on the table.")));
		getTypeInputInfo(basetype, &typinput, &typioparam);
		value = OidInputFunctionCall(typinput,
									 (char *) egress_change_value_text(mc, basetype),
									 typioparam, basetypmod);
		coltype = getBaseType(att->atttypid);
		if (basetype != coltype && type_is_array(coltype))
		{
			ArrayType  *arr = DatumGetArrayTypePCopy(value);

			ARR_ELEMTYPE(arr) = get_element_type(coltype);
			value = PointerGetDatum(arr);
		}
		opno = get_opfamily_member(opfamily, idx->rd_opcintype[k], idx->rd_opcintype[k],
								   BTEqualStrategyNumber);
		ScanKeyInit(&keys[k], k + 1, BTEqualStrategyNumber, get_opcode(opno), value);
		keys[k].sk_collation = idx->rd_indcollation[k];
	}

	snap = GetActiveSnapshot();
	slot = table_slot_create(rel, NULL);
	scan = index_beginscan(rel, idx, snap, indexform->indnkeyatts, 0);
	index_rescan(scan, keys, indexform->indnkeyatts, NULL, 0);
	if (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		shouldfree;
		HeapTuple	tup = ExecFetchSlotHeapTuple(slot, true, &shouldfree);

		/* detoast now: the snapshot goes away with this function */
		result = heap_copytuple(toast_flatten_tuple(tup, RelationGetDescr(rel)));
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(idx, AccessShareLock);
	*descp = CreateTupleDescCopy(RelationGetDescr(rel));
	table_close(rel, AccessShareLock);
	return result;
}

/* Render the new row of a change; again/againdesc supply what WAL lacked. */
static void
render_row(StringInfo buf, CdcStream *s, EgressSingerStream *st, EgressChange *ch,
		   HeapTuple again, TupleDesc againdesc, XLogRecPtr commit,
		   TimestampTz commit_time, int64 version, const char *time_extracted)
{
	int			hint = 0;
	int			ihint = 0;

	egress_singer_record_open(buf, st);
	for (int i = 0; i < st->ncolumns; i++)
	{
		EgressColumn *col = &st->columns[i];
		EgressChangeColumn *mc = find_column(ch->columns, ch->ncolumns, col->name, &hint);

		if (mc == NULL)
			mc = find_column(ch->identity, ch->nidentity, col->name, &ihint);
		if (i > 0)
			appendStringInfoChar(buf, ',');
		escape_json(buf, col->name);
		appendStringInfoChar(buf, ':');
		if (mc != NULL)
			append_value(buf, col, mc);
		else
		{
			int			attno = -1;
			bool		isnull = true;
			Datum		d = (Datum) 0;

			for (int a = 0; againdesc && a < againdesc->natts; a++)
				if (!TupleDescAttr(againdesc, a)->attisdropped &&
					strcmp(NameStr(TupleDescAttr(againdesc, a)->attname), col->name) == 0)
					attno = a + 1;
			if (attno > 0)
				d = heap_getattr(again, attno, againdesc, &isnull);
			egress_column_value(buf, col, d, isnull);
		}
	}
	append_sdc(buf, s, false, st->ncolumns == 0, commit, commit_time);
	egress_singer_record_close(buf, version, time_extracted);
}

static EgressChangeColumn *
copy_columns(EgressChangeColumn *cols, int n)
{
	EgressChangeColumn *c = palloc(sizeof(EgressChangeColumn) * Max(n, 1));

	for (int i = 0; i < n; i++)
	{
		c[i] = cols[i];
		c[i].name = pstrdup(cols[i].name);
		c[i].value = cols[i].value ? pstrdup(cols[i].value) : NULL;
	}
	return c;
}

/*
 * A record that must wait for a re-read: what the batch holds so far is
 * kept with it, and nothing more reaches the sink until decoding pauses.
 */
static void
defer_row(CdcStream *s, EgressChange *ch)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(cdc->pendcxt);
	PendingPiece *piece = palloc0(sizeof(PendingPiece));

	initStringInfo(&piece->text);
	appendBinaryStringInfo(&piece->text, cdc->buf.data, cdc->buf.len);
	resetStringInfo(&cdc->buf);
	piece->s = s;
	piece->st = s->st;
	piece->ch = *ch;
	piece->ch.columns = copy_columns(ch->columns, ch->ncolumns);
	piece->ch.identity = copy_columns(ch->identity, ch->nidentity);
	piece->commit = cdc->txn_commit;
	piece->commit_time = cdc->txn_time;
	piece->version = s->version;
	piece->time_extracted = pstrdup(cdc->time_extracted.data);
	cdc->pending = lappend(cdc->pending, piece);
	MemoryContextSwitchTo(oldcxt);
}

/* Outside decoding: re-read the deferred rows, hand everything to the sink. */
static void
resolve_pending(void)
{
	ListCell   *lc;
	StringInfoData rec;
	List	   *pending = cdc->pending;

	if (pending == NIL)
		return;
	cdc->pending = NIL;			/* hand_to_sink may now write */

	start_catalog_transaction();
	PushActiveSnapshot(GetTransactionSnapshot());
	initStringInfo(&rec);
	foreach(lc, pending)
	{
		PendingPiece *p = lfirst(lc);
		TupleDesc	desc = NULL;
		HeapTuple	again;

		OwnerScope	sc;

		cdc->sink->ops->write(cdc->sink, p->text.data, p->text.len);
		cdc->batch_bytes += p->text.len;

		resetStringInfo(&rec);
		as_owner_begin(p->s, &sc, true);
		PG_TRY();
		{
			again = reselect_row(p->s, &p->ch, &desc);
			if (again != NULL)
				render_row(&rec, p->s, p->st, &p->ch, again, desc, p->commit,
						   p->commit_time, p->version, p->time_extracted);
		}
		PG_CATCH();
		{
			as_owner_failed(&sc);
		}
		PG_END_TRY();
		as_owner_end(&sc);
		if (again == NULL)
		{
			ereport(DEBUG1,
					(errmsg_internal("pg_egress stream \"%s\": the row of an UPDATE is gone; its later change carries it",
									 p->s->def->name)));
			p->s->rows_sent--;
			continue;
		}
		cdc->sink->ops->write(cdc->sink, rec.data, rec.len);
		cdc->batch_bytes += rec.len;
	}
	/* rec lived in the transaction's memory */
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextReset(cdc->pendcxt);
}

/*
 * The new row of an INSERT or UPDATE.  Columns wal2json left out are
 * unchanged TOASTed values: taken from the old row when it was logged
 * (REPLICA IDENTITY FULL), else read again once decoding pauses.
 */
static void
emit_row(CdcStream *s, EgressChange *ch)
{
	int			hint = 0;
	int			ihint = 0;
	bool		missing = false;

	prepare_record(s);
	for (int i = 0; i < s->st->ncolumns && !missing; i++)
	{
		const char *name = s->st->columns[i].name;

		if (find_column(ch->columns, ch->ncolumns, name, &hint) == NULL &&
			find_column(ch->identity, ch->nidentity, name, &ihint) == NULL)
			missing = true;
	}
	if (missing)
		defer_row(s, ch);
	else
	{
		OwnerScope	sc;

		as_owner_begin(s, &sc, false);
		PG_TRY();
		{
			render_row(&cdc->buf, s, s->st, ch, NULL, NULL, cdc->txn_commit,
					   cdc->txn_time, s->version, cdc->time_extracted.data);
		}
		PG_CATCH();
		{
			as_owner_failed(&sc);
		}
		PG_END_TRY();
		as_owner_end(&sc);
	}
	s->rows_sent++;
	after_record();
}

static void emit_delete(CdcStream *s, EgressChangeColumn *key, int nkey);

/* The old key of an UPDATE that changed it, as a deletion of that key. */
static void
emit_delete_key(CdcStream *s, EgressChange *ch)
{
	EgressChangeColumn *key = palloc(sizeof(EgressChangeColumn) * Max(ch->nidentity, 1));
	int			nkey = 0;
	ListCell   *lc;

	foreach(lc, s->st->key_properties)
	{
		int			hint = 0;
		EgressChangeColumn *c = find_column(ch->identity, ch->nidentity, lfirst(lc), &hint);

		if (c)
			key[nkey++] = *c;
	}
	emit_delete(s, key, nkey);
}

/* A deletion: the replica identity columns and the commit time. */
static void
emit_delete(CdcStream *s, EgressChangeColumn *key, int nkey)
{
	volatile bool first = true;
	OwnerScope	sc;

	prepare_record(s);
	egress_singer_record_open(&cdc->buf, s->st);
	as_owner_begin(s, &sc, false);
	PG_TRY();
	{
		for (int i = 0; i < s->st->ncolumns; i++)
		{
			EgressColumn *col = &s->st->columns[i];
			int			hint = 0;
			EgressChangeColumn *mc = find_column(key, nkey, col->name, &hint);

			if (mc == NULL)
				continue;
			if (!first)
				appendStringInfoChar(&cdc->buf, ',');
			first = false;
			escape_json(&cdc->buf, col->name);
			appendStringInfoChar(&cdc->buf, ':');
			append_value(&cdc->buf, col, mc);
		}
	}
	PG_CATCH();
	{
		as_owner_failed(&sc);
	}
	PG_END_TRY();
	as_owner_end(&sc);
	append_sdc(&cdc->buf, s, true, first, cdc->txn_commit, cdc->txn_time);
	egress_singer_record_close(&cdc->buf, s->version, cdc->time_extracted.data);
	s->rows_sent++;
	after_record();
}

/*
 * Did an UPDATE change the primary key?  identity holds the old key (or,
 * with REPLICA IDENTITY FULL, the whole old row: only key columns count).
 */
static bool
key_changed(CdcStream *s, EgressChange *ch)
{
	ListCell   *lc;

	foreach(lc, s->st->key_properties)
	{
		const char *name = lfirst(lc);
		int			hint = 0;
		int			ihint = 0;
		EgressChangeColumn *old = find_column(ch->identity, ch->nidentity, name, &ihint);
		EgressChangeColumn *new = find_column(ch->columns, ch->ncolumns, name, &hint);

		if (old == NULL || new == NULL)
			continue;			/* not logged: unchanged */
		if (old->isnull != new->isnull)
			return true;
		if (!old->isnull && strcmp(old->value, new->value) != 0)
			return true;
	}
	return false;
}

/*
 * A TRUNCATE of the stream's table: a new version, from which a target
 * drops the older rows.  The version is a function of the WAL (the commit
 * time in milliseconds, above the previous version), not of the clock, so
 * that a batch sent again after a crash carries the same version; the
 * version recorded with the bookmarks is the one of the acknowledged
 * batches (acked_version).
 */
static void
emit_truncate(CdcStream *s)
{
	int64		commit_ms = cdc->txn_time / 1000 +
		(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;

	prepare_record(s);
	s->version = Max(commit_ms, s->version + 1);
	egress_singer_activate_version(&cdc->buf, s->st, s->version);
	cdc->batch_last_commit = cdc->txn_commit;
	cdc->txn_records++;
}

static void
cdc_prepare_write(LogicalDecodingContext *ctx, XLogRecPtr lsn, TransactionId xid,
				  bool last_write)
{
	resetStringInfo(ctx->out);
}

static void
cdc_write(LogicalDecodingContext *ctx, XLogRecPtr lsn, TransactionId xid,
		  bool last_write)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(cdc->msgcxt);
	EgressChange ch;
	int			si;
	CdcStream  *s;
	Oid			relid;
	char	   *problem;

	egress_wal2json_parse(ctx->out->data, ctx->out->len, &ch);
	switch (ch.action)
	{
		case EGRESS_CHANGE_BEGIN:
			cdc->txn_commit = ch.lsn;
			cdc->txn_end = ch.nextlsn;
			cdc->txn_time = ch.timestamp;
			cdc->txn_records = 0;
			break;
		case EGRESS_CHANGE_COMMIT:
			/* the whole transaction is in the batch, or had nothing for us */
			if (cdc->batch_open)
				cdc->batch_last_end = cdc->txn_end;
			else
				cdc->delivered = Max(cdc->delivered, cdc->txn_end);
			break;
		case EGRESS_CHANGE_INSERT:
		case EGRESS_CHANGE_UPDATE:
		case EGRESS_CHANGE_DELETE:
		case EGRESS_CHANGE_TRUNCATE:
			si = lookup_stream(ch.schema, ch.table, &relid);
			if (si < 0)
				break;
			s = &cdc->streams[si];
			/* in the initial snapshot, or acknowledged before a crash */
			if (cdc->txn_end <= s->bookmark)
				break;
			if (s->stop != CDC_STOP_NONE)
				break;

			/*
			 * Grants, the schema, roles or policies changed in a
			 * transaction decoded before this one: may the owner still
			 * read the table, as of this change?
			 */
			if (s->privs_stale)
			{
				s->privs_stale = false;
				problem = privilege_problem(s->def);
				if (problem)
				{
					stop_stream(s, CDC_STOP_ERROR, problem);
					break;
				}
			}

			/*
			 * A partition's TRUNCATE: the other partitions keep their rows,
			 * so no ACTIVATE_VERSION; the stream is synchronized again.
			 */
			if (ch.action == EGRESS_CHANGE_TRUNCATE && relid != s->def->relid)
			{
				stop_stream(s, CDC_STOP_RESYNC,
							psprintf("partition %s.%s of %s was truncated",
									 quote_identifier(ch.schema),
									 quote_identifier(ch.table),
									 s->def->relation));
				break;
			}
			if (ch.action == EGRESS_CHANGE_INSERT)
				emit_row(s, &ch);
			else if (ch.action == EGRESS_CHANGE_UPDATE)
			{
				refresh_descriptor(s);
				if (ch.nidentity > 0 && key_changed(s, &ch))
					emit_delete_key(s, &ch);
				emit_row(s, &ch);
			}
			else if (ch.action == EGRESS_CHANGE_DELETE)
				emit_delete(s, ch.identity, ch.nidentity);
			else
				emit_truncate(s);
			break;
		case EGRESS_CHANGE_MESSAGE:
		case EGRESS_CHANGE_RELATION:
		case EGRESS_CHANGE_OTHER:
			break;
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(cdc->msgcxt);
}

/* ---- configuration ----------------------------------------------------- */

static void
release_stream_slots(void)
{
	for (int i = 0; i < cdc->nstreams; i++)
		if (cdc->streams[i].slot)
		{
			egress_release_slot(cdc->streams[i].slot);
			cdc->streams[i].slot = NULL;
		}
}

static void
release_slots_at_exit(int code, Datum arg)
{
	if (cdc)
		release_stream_slots();
}

/*
 * Read the destination and its LOG_BASED streams.  Streams whose relation
 * is gone or no longer readable by their owner are put into the error
 * state here, so they cannot stop the others.  Returns the number of
 * streams to serve.
 */
static int
load_config(MemoryContext cxt)
{
	EgressCatalogGuard guard;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	int			n;
	int32	   *ids;
	List	   *errors = NIL;	/* pairs: stream id, message */
	ListCell   *lc;
	MemoryContext oldcxt;

	release_stream_slots();
	cdc->nstreams = 0;
	cdc->catalog_moved = false;
	cdc->config_gen = pg_atomic_read_u32(&egress_shared->config_gen);

	if (!egress_worker_catalog_begin(&guard, false))
		return 0;

	/*
	 * First: everything read below is at least as new as this, so a change
	 * the fingerprint shows has been acted on (see config_changed()).
	 */
	if (cdc->fingerprint)
		pfree(cdc->fingerprint);
	cdc->fingerprint = config_fingerprint(TopMemoryContext);

	values[0] = CStringGetTextDatum(cdc->dest_name);
	if (egress_catalog_exec("SELECT kind, location, options, slot_name, slot_owned, "
							"owner::pg_catalog.oid "
							"FROM egress.destination WHERE name = $1",
							1, argtypes, values, NULL, true) == 0)
	{
		egress_worker_catalog_end(&guard);
		return 0;
	}
	oldcxt = MemoryContextSwitchTo(cxt);
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		d;
		char	   *opt_slot;

		cdc->dest_kind = SPI_getvalue(tup, desc, 1);
		cdc->dest_location = SPI_getvalue(tup, desc, 2);
		d = SPI_getbinval(tup, desc, 3, &isnull);
		cdc->dest_options = isnull ? NULL : DatumGetJsonbPCopy(d);
		cdc->slot_name = SPI_getvalue(tup, desc, 4);
		cdc->slot_owned = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
		cdc->dest_owner = DatumGetObjectId(SPI_getbinval(tup, desc, 6, &isnull));
		cdc->dest_owner_superuser = superuser_arg(cdc->dest_owner);
		opt_slot = egress_jsonb_get_string(cdc->dest_options, "slot_name");
		if (cdc->slot_name == NULL)
			cdc->slot_name = opt_slot ? opt_slot : psprintf("pg_egress_%s", cdc->dest_name);
	}
	MemoryContextSwitchTo(oldcxt);

	n = egress_catalog_exec("SELECT s.id FROM egress.stream s "
							"JOIN egress.stream_state st ON st.stream_id = s.id "
							"WHERE s.destination = $1 AND s.method = 'LOG_BASED' "
							"AND s.enabled AND st.state <> 'error' ORDER BY s.id",
							1, argtypes, values, NULL, true);
	ids = palloc(sizeof(int32) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
											 1, &isnull));
	}

	cdc->streams = MemoryContextAllocZero(cxt, sizeof(CdcStream) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		EgressStreamDef *def = egress_load_stream(ids[i], cxt);
		CdcStream  *s;
		Oid			argtypes2[1] = {INT4OID};
		Datum		values2[1] = {Int32GetDatum(ids[i])};
		bool		isnull;
		char	   *state;
		Datum		d;
		const char *problem = NULL;
		char	   *policy;

		if (def == NULL)
			continue;
		if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(def->relid)))
			problem = psprintf("relation %s of stream \"%s\" no longer exists",
							   def->relation, def->name);
		else
			problem = privilege_problem(def);
		if (problem)
		{
			/* in cxt: SPI's memory is gone when these are reported */
			MemoryContext oldcxt2 = MemoryContextSwitchTo(cxt);

			errors = lappend(errors, list_make2(makeInteger(def->id),
												makeString(pstrdup(problem))));
			MemoryContextSwitchTo(oldcxt2);
			continue;
		}

		if (egress_catalog_exec("SELECT state, resync, version, confirmed_lsn, rows_sent, batches_sent "
								"FROM egress.stream_state WHERE stream_id OPERATOR(pg_catalog.=) $1",
								1, argtypes2, values2, NULL, true) == 0)
			continue;			/* removed meanwhile */
		s = &cdc->streams[cdc->nstreams++];
		s->def = def;
		state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		s->needs_sync = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)) ||
			strcmp(state, "streaming") != 0;
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
		s->version = isnull ? 0 : DatumGetInt64(d);
		s->acked_version = s->version;
		s->privs_stale = true;	/* checked again as of the first change */
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull);
		s->bookmark = isnull ? InvalidXLogRecPtr : DatumGetLSN(d);
		s->rows_sent = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull));
		s->batches_sent = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 6, &isnull));
		(void) egress_jsonb_get_bool(def->options, "debug_lsn", &s->debug_lsn);
		policy = egress_jsonb_get_string(def->options, "lag_policy");
		s->pause_on_lag = policy != NULL && strcmp(policy, "pause") == 0;
		s->st_stale = true;
		s->slot = egress_claim_cdc_stream(def->id, s->needs_sync ? "pending" : "streaming");
		if (s->slot == NULL)
		{
			/*
			 * Every shared entry is taken.  Without one the stream has no
			 * live figures and no claim: stop it where the owner sees why,
			 * rather than serve it unguarded.
			 */
			MemoryContext oldcxt2 = MemoryContextSwitchTo(cxt);

			errors = lappend(errors,
							 list_make2(makeInteger(def->id),
										makeString(psprintf("stream \"%s\" has no shared worker entry: all %d are taken (raise pg_egress.max_active_streams)",
															def->name, egress_max_active_streams))));
			MemoryContextSwitchTo(oldcxt2);
			memset(s, 0, sizeof(*s));
			cdc->nstreams--;
			continue;
		}
		/* egress_stream_activity() shows the entry to the owner's members */
		egress_set_slot_owner(s->slot, def->owner);
		s->slot->rows_sent = s->rows_sent;
		s->slot->batches_sent = s->batches_sent;
	}
	egress_worker_catalog_end(&guard);

	foreach(lc, errors)
	{
		List	   *pair = lfirst(lc);

		ereport(WARNING,
				(errmsg("pg_egress stream stopped: %s", strVal(lsecond(pair)))));
		egress_record_stream_error(intVal(linitial(pair)), strVal(lsecond(pair)));
	}
	return cdc->nstreams;
}

/*
 * What this destination's configuration looks like; a committed egress_*
 * call elsewhere (another destination, a FULL_TABLE stream) leaves it
 * unchanged, and then the decoding session goes on.  Every stream's state
 * and resync flag are in it, so that any request for a resync is seen,
 * whatever came before it in the same transaction (egress_pause_stream()
 * then egress_resume_stream() leave enabled as it was but the stream
 * pending a resync).  The worker's own state changes (an initial sync
 * finished, a stream stopped with an error) change it too: then the next
 * committed egress_* call costs one needless new session, nothing more.
 * Caller is inside egress_catalog_enter().  Result in CurrentMemoryContext
 * of the caller's choosing (cxt).
 */
static char *
config_fingerprint(MemoryContext cxt)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	char	   *fp;

	values[0] = CStringGetTextDatum(cdc->dest_name);
	egress_catalog_exec("SELECT coalesce((SELECT d.location || d.options::pg_catalog.text FROM egress.destination d "
						"WHERE d.name = $1), '') || '|' || coalesce(string_agg("
						"s.id || ':' || s.enabled || ':' || st.state || ':' || st.resync || ':' || "
						"s.options::pg_catalog.text, ',' ORDER BY s.id), '') "
						"FROM egress.stream s JOIN egress.stream_state st ON st.stream_id = s.id "
						"WHERE s.destination = $1 AND s.method = 'LOG_BASED'",
						1, argtypes, values, NULL, true);
	fp = SPI_processed > 0 ? SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1) : NULL;
	return MemoryContextStrdup(cxt, fp ? fp : "");
}

/* Did our configuration change since load_config()? */
static bool
config_changed(void)
{
	EgressCatalogGuard guard;
	uint32		gen = pg_atomic_read_u32(&egress_shared->config_gen);
	char	   *fp;
	bool		changed;

	if (cdc->catalog_moved)
		return true;
	if (gen == cdc->config_gen)
		return false;
	if (!egress_worker_catalog_begin(&guard, true))
		return true;
	fp = config_fingerprint(TopMemoryContext);
	egress_worker_catalog_end(&guard);

	changed = cdc->fingerprint == NULL || strcmp(fp, cdc->fingerprint) != 0;
	pfree(fp);
	if (!changed)
		cdc->config_gen = gen;	/* someone else's change */
	return changed;
}

/* Record the catalog side of the slot before creating it (see below). */
static void
record_slot(const char *slot_name, bool owned)
{
	EgressCatalogGuard guard;
	Oid			argtypes[3] = {TEXTOID, TEXTOID, BOOLOID};
	Datum		values[3];

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	egress_catalog_enter(&guard);
	values[0] = CStringGetTextDatum(cdc->dest_name);
	values[1] = CStringGetTextDatum(slot_name);
	values[2] = BoolGetDatum(owned);
	egress_catalog_exec("UPDATE egress.destination SET slot_name = $2, slot_owned = $3 "
						"WHERE name = $1",
						3, argtypes, values, NULL, false);
	egress_worker_catalog_end(&guard);
}

static void note_failure(const char *message, bool stop);

/*
 * Before a new slot is created: record it as the destination's (ours), and
 * in the same transaction mark every stream that carries on from a bookmark
 * of an earlier slot (state streaming) for a new initial sync.  The new
 * slot lacks the changes made while no slot existed, so no stream may ever
 * go on from its bookmark on it; marking only in memory would lose them if
 * the session ended before every such stream was synced again.  Streams in
 * state error are synced again when resumed; they are flagged too, their
 * error left as it is.  Pending and syncing streams are synced anyway.
 */
static void
record_new_slot(const char *slot_name)
{
	EgressCatalogGuard guard;
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		values[2];

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	egress_catalog_enter(&guard);
	values[0] = CStringGetTextDatum(cdc->dest_name);
	values[1] = CStringGetTextDatum(slot_name);
	egress_catalog_exec("UPDATE egress.destination SET slot_name = $2, slot_owned = true "
						"WHERE name OPERATOR(pg_catalog.=) $1",
						2, argtypes, values, NULL, false);
	values[1] = CStringGetTextDatum(psprintf("replication slot \"%s\" was created anew: the changes made while it did not exist are not in it",
											 slot_name));
	egress_catalog_exec("UPDATE egress.stream_state st SET resync = true, "
						"state = CASE WHEN st.state OPERATOR(pg_catalog.=) 'error' THEN 'error' ELSE 'pending' END, "
						"last_error = CASE WHEN st.state OPERATOR(pg_catalog.=) 'error' THEN st.last_error ELSE $2 END, "
						"last_error_at = CASE WHEN st.state OPERATOR(pg_catalog.=) 'error' THEN st.last_error_at ELSE pg_catalog.now() END, "
						"updated_at = pg_catalog.now() "
						"FROM egress.stream s WHERE s.id OPERATOR(pg_catalog.=) st.stream_id "
						"AND s.destination OPERATOR(pg_catalog.=) $1 "
						"AND s.method OPERATOR(pg_catalog.=) 'LOG_BASED' "
						"AND (st.state OPERATOR(pg_catalog.=) 'streaming' "
						"OR (st.state OPERATOR(pg_catalog.=) 'error' AND NOT st.resync))",
						2, argtypes, values, NULL, false);
	egress_worker_catalog_end(&guard);
}

/*
 * May this destination use the existing slot it did not create?
 *
 * A slot in egress.dropped_slot is one pg_egress made (or was told to drop)
 * for a destination removed since, waiting for the database worker: a
 * destination added again under that name takes it over as its own, in the
 * transaction that takes it off the list (the database worker drops only
 * listed slots, and never one in use).
 *
 * Any other slot belongs to another tool (or destination): consuming it
 * advances it for that tool, which is what the REPLICATION attribute is
 * for.  Checked at every session, whether the slot was named by option
 * "slot_name" or has the default name pg_egress_<destination>.
 */
static bool
adoption_allowed(void)
{
	EgressCatalogGuard guard;
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		values[2];
	bool		ours;
	bool		allowed;

	if (!egress_worker_catalog_begin(&guard, true))
		return false;
	values[0] = CStringGetTextDatum(cdc->dest_name);
	values[1] = CStringGetTextDatum(cdc->slot_name);
	ours = egress_catalog_exec("DELETE FROM egress.dropped_slot "
							   "WHERE slot_name OPERATOR(pg_catalog.=) $2::pg_catalog.name",
							   2, argtypes, values, NULL, false) > 0;
	if (ours)
	{
		egress_catalog_exec("UPDATE egress.destination SET slot_name = $2, slot_owned = true "
							"WHERE name OPERATOR(pg_catalog.=) $1",
							2, argtypes, values, NULL, false);
		cdc->slot_owned = true;
		allowed = true;
	}
	else
		allowed = has_rolreplication(cdc->dest_owner);
	egress_worker_catalog_end(&guard);
	if (ours)
		ereport(LOG,
				(errmsg("pg_egress destination \"%s\": took over replication slot \"%s\" of a removed destination",
						cdc->dest_name, cdc->slot_name)));
	return allowed;
}

/*
 * The destination's slot: adopt one that exists (see adoption_allowed),
 * else create it.  The catalog says "ours" before the slot exists, so a
 * crash in between never leaves a slot pg_egress made but would not drop.
 * Returns false when the destination may not adopt the slot: its streams
 * are then in state error, and the slot is left alone.
 */
static bool
ensure_slot(void)
{
	char	   *plugin = NULL;
	Oid			dboid = InvalidOid;

	if (egress_slot_lookup(cdc->slot_name, &plugin, &dboid))
	{
		if (strcmp(plugin, EGRESS_PLUGIN_WAL2JSON) != 0 || dboid != MyDatabaseId)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("replication slot \"%s\" cannot be used by destination \"%s\"",
							cdc->slot_name, cdc->dest_name),
					 errdetail("It uses plugin \"%s\" in another database or with another plugin; pg_egress needs a wal2json slot of this database.",
							   plugin)));
		if (!cdc->slot_owned && !adoption_allowed())
		{
			char	   *message = psprintf("permission denied to use replication slot \"%s\": destination \"%s\" did not create it and its owner has no REPLICATION attribute",
										   cdc->slot_name, cdc->dest_name);

			ereport(WARNING,
					(errmsg("pg_egress streams of destination \"%s\" stopped: %s",
							cdc->dest_name, message)));
			note_failure(message, true);
			return false;
		}
		if (egress_slot_lost(cdc->slot_name))
			slot_invalidated();
		if (!cdc->slot_owned)
			record_slot(cdc->slot_name, false);
		return true;
	}

	record_new_slot(cdc->slot_name);	/* marks the streams for resync */
	cdc->slot_owned = true;
	egress_slot_create(cdc->slot_name, EGRESS_PLUGIN_WAL2JSON);
	ereport(LOG,
			(errmsg("pg_egress destination \"%s\": created replication slot \"%s\"",
					cdc->dest_name, cdc->slot_name)));

	/*
	 * Streams with a bookmark from an earlier slot have lost what happened
	 * meanwhile: they start over (the catalog says so: record_new_slot()).
	 */
	for (int i = 0; i < cdc->nstreams; i++)
		cdc->streams[i].needs_sync = true;
	return true;
}

/* Record acknowledged positions: the bookmarks and figures of every stream. */
static void
persist_bookmarks(void)
{
	EgressCatalogGuard guard;
	StringInfoData bm;

	start_catalog_transaction();
	PushActiveSnapshot(GetTransactionSnapshot());
	egress_catalog_enter(&guard);
	initStringInfo(&bm);
	for (int i = 0; i < cdc->nstreams; i++)
	{
		CdcStream  *s = &cdc->streams[i];
		Oid			argtypes[6] = {INT4OID, LSNOID, JSONBOID, INT8OID, INT8OID, INT8OID};
		Datum		values[6];

		/* a stopped stream keeps the bookmark it had: it is synced again */
		if (s->needs_sync || s->stop != CDC_STOP_NONE)
			continue;
		resetStringInfo(&bm);
		egress_singer_bookmark_log_based(&bm, s->bookmark, s->acked_version);
		values[0] = Int32GetDatum(s->def->id);
		values[1] = LSNGetDatum(s->bookmark);
		values[2] = DirectFunctionCall1(jsonb_in, CStringGetDatum(bm.data));
		values[3] = Int64GetDatum(s->acked_version);
		values[4] = Int64GetDatum(s->rows_sent);
		values[5] = Int64GetDatum(s->batches_sent);
		/*
		 * Not streaming any more (a resync or a pause asked for meanwhile):
		 * its bookmark no longer counts; make sure the session starts over
		 * and sees why, rather than go on without recording its progress.
		 */
		if (egress_catalog_exec("UPDATE egress.stream_state SET confirmed_lsn = $2, bookmark = $3, "
								"version = $4, rows_sent = $5, batches_sent = $6, "
								"last_error = NULL, last_error_at = NULL, attempts = 0, "
								"updated_at = now() WHERE stream_id = $1 AND state = 'streaming'",
								6, argtypes, values, NULL, false) == 0)
			cdc->catalog_moved = true;
	}
	egress_worker_catalog_end(&guard);
	cdc->acked_since_persist = false;
	cdc->persisted_end = XactLastCommitEnd;
	cdc->persisted_at = GetCurrentTimestamp();
}

/*
 * Show a failure on every stream of the destination, without stopping them;
 * or, when the destination rejected a batch for good (stop), put them into
 * state error until egress_resume_stream() or the destination's
 * error_retry_interval.
 */
static void
note_failure(const char *message, bool stop)
{
	EgressCatalogGuard guard;
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		values[2];

	if (egress_worker_catalog_begin(&guard, false))
	{
		values[0] = CStringGetTextDatum(cdc->dest_name);
		values[1] = CStringGetTextDatum(message);
		egress_catalog_exec(stop ?
							"UPDATE egress.stream_state st SET state = 'error', last_error = $2, "
							"last_error_at = now(), attempts = attempts + 1, updated_at = now() "
							"FROM egress.stream s WHERE s.id = st.stream_id "
							"AND s.destination = $1 AND s.method = 'LOG_BASED' "
							"AND s.enabled AND st.state <> 'error'" :
							"UPDATE egress.stream_state st SET last_error = $2, "
							"last_error_at = now(), attempts = attempts + 1, updated_at = now() "
							"FROM egress.stream s WHERE s.id = st.stream_id "
							"AND s.destination = $1 AND s.method = 'LOG_BASED' "
							"AND st.state <> 'error'",
							2, argtypes, values, NULL, false);
		egress_worker_catalog_end(&guard);
	}
}

/*
 * No shared entry is free for this destination's worker: say so on its
 * streams (their state stays: nothing was lost, they go on once an entry is
 * free), and wait one naptime before exiting, so that the database worker,
 * which starts a wanted destination's worker again at once, does not start
 * one after another.
 */
static void
no_free_entry(const char *dest)
{
	EgressCatalogGuard guard;
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		values[2];

	if (egress_worker_catalog_begin(&guard, false))
	{
		values[0] = CStringGetTextDatum(dest);
		values[1] = CStringGetTextDatum(psprintf("the CDC worker of destination \"%s\" has no shared worker entry: all %d are taken (raise pg_egress.max_active_streams)",
												 dest, egress_max_active_streams));
		egress_catalog_exec("UPDATE egress.stream_state st SET last_error = $2, "
							"last_error_at = pg_catalog.now() FROM egress.stream s "
							"WHERE s.id OPERATOR(pg_catalog.=) st.stream_id "
							"AND s.destination OPERATOR(pg_catalog.=) $1 "
							"AND s.method OPERATOR(pg_catalog.=) 'LOG_BASED'",
							2, argtypes, values, NULL, false);
		egress_worker_catalog_end(&guard);
	}
	/* the whole naptime: a wake-up of the latch is no reason to go sooner */
	{
		TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														Max(egress_naptime_ms, 1000));

		for (;;)
		{
			long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);

			if (left <= 0)
				break;
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 left, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
	}
}

/* ---- initial sync ---------------------------------------------------------- */

static void
initial_sync(CdcStream *s)
{
	EgressCatalogGuard guard;
	Oid			argtypes[5] = {INT4OID, INT8OID, LSNOID, JSONBOID, INT8OID};
	Datum		values[5];
	int64		version;
	XLogRecPtr	consistent;
	EgressSnapshotResult result;
	char		tmpname[NAMEDATALEN];
	StringInfoData bm;

	syncing_stream = s->def->id;
	version = egress_next_version(s->version);
	egress_set_phase(s->slot, "syncing");

	/* announce it */
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	egress_catalog_enter(&guard);
	egress_mark_syncing(s->def->id, version);
	egress_worker_catalog_end(&guard);

	/* read the table in the initial snapshot of a short-lived slot */
	ereport(LOG,
			(errmsg("pg_egress stream \"%s\": initial sync of %s started, version " INT64_FORMAT,
					s->def->name, s->def->relation, version)));
	snprintf(tmpname, sizeof(tmpname), "pg_egress_sync_%d", MyProcPid);
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	XactIsoLevel = XACT_REPEATABLE_READ;
	consistent = egress_slot_snapshot(tmpname);
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "LOG_BASED initial sync");
	egress_snapshot_write(s->def, cdc->sink, s->slot, version, true, consistent, &result);
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);

	/* from here on, changes committed after the snapshot */
	initStringInfo(&bm);
	egress_singer_bookmark_log_based(&bm, consistent, version);
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	egress_catalog_enter(&guard);
	values[0] = Int32GetDatum(s->def->id);
	values[1] = Int64GetDatum(version);
	values[2] = LSNGetDatum(consistent);
	values[3] = DirectFunctionCall1(jsonb_in, CStringGetDatum(bm.data));
	values[4] = Int64GetDatum(result.rows);
	egress_catalog_exec("UPDATE egress.stream_state SET state = 'streaming', confirmed_lsn = $3, "
						"bookmark = $4, rows_sent = $5, bytes_sent = 0, batches_sent = 0, "
						"last_error = NULL, last_error_at = NULL, attempts = 0, "
						"sync_finished_at = now(), updated_at = now() "
						"WHERE stream_id = $1 AND version = $2",
						5, argtypes, values, NULL, false);
	egress_worker_catalog_end(&guard);

	s->version = version;
	s->acked_version = version;
	s->bookmark = consistent;
	s->needs_sync = false;
	s->rows_sent = result.rows;
	s->batches_sent = 0;
	s->st_stale = true;
	egress_set_phase(s->slot, "streaming");
	syncing_stream = 0;
	ereport(LOG,
			(errmsg("pg_egress stream \"%s\": initial sync finished, " INT64_FORMAT " rows; changes follow from %X/%X",
					s->def->name, result.rows, LSN_FORMAT_ARGS(consistent))));
}

/* ---- decoding ---------------------------------------------------------------- */

static void
open_decoding(void)
{
	MemoryContext oldcxt = MemoryContextSwitchTo(cdc->decodecxt);

	ReplicationSlotAcquire(cdc->slot_name, true);
	if (XLogRecPtrIsInvalid(MyReplicationSlot->data.restart_lsn))
		slot_invalidated();		/* released by the error path */
	cdc->ctx = CreateDecodingContext(InvalidXLogRecPtr, egress_wal2json_options(NULL), false,
									 XL_ROUTINE(.page_read = read_local_xlog_page,
												.segment_open = wal_segment_open,
												.segment_close = wal_segment_close),
									 cdc_prepare_write, cdc_write, NULL);
	XLogBeginRead(cdc->ctx->reader, MyReplicationSlot->data.restart_lsn);
	cdc->delivered = Max(cdc->delivered, MyReplicationSlot->data.confirmed_flush);

	/*
	 * The slot confirms only what was acknowledged for every streaming
	 * stream, but progress without records is recorded in the catalog now
	 * and then only: start the bookmarks from the slot, so that what
	 * egress_streams shows never goes back when a session restarts.
	 */
	for (int i = 0; i < cdc->nstreams; i++)
	{
		CdcStream  *s = &cdc->streams[i];

		if (s->needs_sync)
			continue;
		s->bookmark = Max(s->bookmark, MyReplicationSlot->data.confirmed_flush);
		if (s->slot)
			s->slot->confirmed_lsn = s->bookmark;
	}
	MemoryContextSwitchTo(oldcxt);
}

static void
close_decoding(void)
{
	if (cdc->ctx)
	{
		FreeDecodingContext(cdc->ctx);
		cdc->ctx = NULL;
	}
	if (MyReplicationSlot)
		ReplicationSlotRelease();
	start_catalog_transaction();
	CommitTransactionCommand();
	if (cdc->relmap)
	{
		hash_destroy(cdc->relmap);
		cdc->relmap = NULL;
	}
}

/* One round: decode the WAL flushed so far, send what is due. */
static void
decode_round(void)
{
	XLogRecPtr	end = GetFlushRecPtr(NULL);

	while (cdc->ctx->reader->EndRecPtr < end)
	{
		XLogRecord *record;
		char	   *errm = NULL;

		record = XLogReadRecord(cdc->ctx->reader, &errm);
		if (errm)
			ereport(ERROR,
					(errmsg("could not read WAL for logical decoding: %s", errm)));
		if (record != NULL)
			LogicalDecodingProcessRecord(cdc->ctx, cdc->ctx->reader);
		/* decoding's transaction handling resets it */
		CurrentResourceOwner = cdc_owner;
		CHECK_FOR_INTERRUPTS();
	}
	resolve_pending();

	if (cdc->batch_open &&
		TimestampDifferenceExceeds(cdc->batch_started, GetCurrentTimestamp(),
								   cdc_flush_interval_ms()))
		cdc_commit_batch();
	if (!cdc->batch_open)
		cdc->delivered = Max(cdc->delivered, cdc->ctx->reader->EndRecPtr);

	/*
	 * Acknowledged: record the bookmarks, then free the WAL.  Progress that
	 * carried no records is recorded now and then only, and never for WAL
	 * that is just our own previous bookmark update.
	 */
	for (int i = 0; i < cdc->nstreams; i++)
	{
		CdcStream  *s = &cdc->streams[i];

		if (s->needs_sync)
			continue;
		if (!cdc->batch_open)
			s->bookmark = Max(s->bookmark, cdc->delivered);
		if (s->slot)
			s->slot->confirmed_lsn = s->bookmark;
	}
	if (cdc->acked_since_persist ||
		(cdc->delivered > cdc->persisted_end &&
		 TimestampDifferenceExceeds(cdc->persisted_at, GetCurrentTimestamp(), 10000)))
		persist_bookmarks();
	if (cdc->delivered > MyReplicationSlot->data.confirmed_flush)
	{
		LogicalConfirmReceivedLocation(cdc->delivered);
		ReplicationSlotMarkDirty();
	}

}

/*
 * The destination's slot is of no more use, and the error path should give
 * it up (give_up_slot()): the destination left more WAL unacknowledged than
 * pg_egress.max_slot_wal, or PostgreSQL invalidated the slot.
 */
static bool slot_must_go = false;
static char slot_problem[512];

/* bytes as MB, rounded up: "held 3 MB, more than 2 MB", never "2 MB ... 2 MB" */
#define MB_ROUNDED_UP(b) (((b) + 1024 * 1024 - 1) / (1024 * 1024))

/*
 * The hard limit: unacked is the WAL the destination has not acknowledged
 * (current_unacked()), not the WAL the slot retains (current_lag()).  A
 * long transaction anywhere in the cluster keeps restart_lsn back while a
 * caught-up destination acknowledges everything: dropping its slot would
 * free none of that WAL, only resync every stream.
 */
static bool
over_wal_limit(int64 unacked)
{
	if (egress_max_slot_wal_mb <= 0 || unacked <= (int64) egress_max_slot_wal_mb * 1024 * 1024)
		return false;
	if (!slot_must_go)
		snprintf(slot_problem, sizeof(slot_problem),
				 "replication slot \"%s\" held " INT64_FORMAT " MB of WAL its destination has not acknowledged, more than pg_egress.max_slot_wal (%d MB)",
				 cdc->slot_name, MB_ROUNDED_UP(unacked), egress_max_slot_wal_mb);
	slot_must_go = true;
	return true;
}

/* The hard WAL limit, outside a sink's retries: ends the session. */
static void
enforce_wal_limit(int64 lag)
{
	if (over_wal_limit(lag))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("%s", slot_problem)));
}

/* The slot was invalidated (max_slot_wal_keep_size): ends the session. */
static void
slot_invalidated(void)
{
	snprintf(slot_problem, sizeof(slot_problem),
			 "replication slot \"%s\" was invalidated by the server (max_slot_wal_keep_size): the changes it held are gone",
			 cdc->slot_name);
	slot_must_go = true;
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("%s", slot_problem)));
}

/*
 * Mark every LOG_BASED stream of the destination (not those in state
 * error, whose resume syncs them again anyway) for a new initial sync, with
 * the reason in last_error.
 */
static bool
resync_destination_streams(const char *why)
{
	EgressCatalogGuard guard;
	Oid			argtypes[2] = {TEXTOID, TEXTOID};
	Datum		values[2];

	if (!egress_worker_catalog_begin(&guard, true))
		return false;
	values[0] = CStringGetTextDatum(cdc->dest_name);
	values[1] = CStringGetTextDatum(why);
	egress_catalog_exec("UPDATE egress.stream_state st SET state = 'pending', resync = true, "
						"last_error = $2, last_error_at = pg_catalog.now(), "
						"updated_at = pg_catalog.now() "
						"FROM egress.stream s WHERE s.id OPERATOR(pg_catalog.=) st.stream_id "
						"AND s.destination OPERATOR(pg_catalog.=) $1 "
						"AND s.method OPERATOR(pg_catalog.=) 'LOG_BASED' "
						"AND st.state OPERATOR(pg_catalog.<>) 'error'",
						2, argtypes, values, NULL, false);
	egress_worker_catalog_end(&guard);
	return true;
}

/*
 * The slot to give up turned out not to be a slot of pg_egress (another
 * database's, or another plugin's: someone replaced ours): nothing is
 * dropped, and the streams stop (state error) rather than being synced
 * again as if a slot had been freed.
 */
static void
stop_for_foreign_slot(void)
{
	char	   *msg = psprintf("%s; it is not a slot of pg_egress (another database's, or another output plugin's) and was not dropped",
							   slot_problem);

	ereport(WARNING,
			(errmsg("pg_egress did not drop replication slot \"%s\" of destination \"%s\": it is not a slot of pg_egress",
					cdc->slot_name, cdc->dest_name),
			 errdetail("%s.", slot_problem),
			 errhint("The streams of the destination are stopped; drop or rename that slot, then resume them.")));
	note_failure(msg, true);
	pfree(msg);
}

/*
 * Give up the destination's slot (it is not held: called from the error
 * path): drop it and sync the streams again; the next session makes a new
 * slot.  A slot pg_egress did not create is dropped only with the
 * destination option drop_adopted_slot; otherwise its streams stop (state
 * error) and the slot is left to whoever made it.
 */
static void
give_up_slot(void)
{
	bool		drop_adopted = false;

	(void) egress_jsonb_get_bool(cdc->dest_options, "drop_adopted_slot", &drop_adopted);
	if (!cdc->slot_owned && !drop_adopted)
	{
		ereport(WARNING,
				(errmsg("pg_egress streams of destination \"%s\" stopped: %s",
						cdc->dest_name, slot_problem),
				 errdetail("The slot was not created by pg_egress; it is dropped only with the destination option drop_adopted_slot."),
				 errhint("Drop the slot yourself, then resume the streams: they are synced again.")));
		note_failure(slot_problem, true);
		return;
	}

	if (!egress_slot_is_ours(cdc->slot_name))
	{
		stop_for_foreign_slot();
		return;
	}

	/*
	 * First the resync, committed; then the drop: a stream must never carry
	 * on from its bookmark on a new slot that lacks what happened meanwhile.
	 * If the drop does not happen (in use), the streams are synced again on
	 * the old slot: needless, but nothing is lost.
	 */
	if (!resync_destination_streams(slot_problem))
		return;
	switch (egress_slot_drop(cdc->slot_name))
	{
		case EGRESS_SLOT_IN_USE:
			/* another process holds it: the next session tries again */
			ereport(WARNING,
					(errmsg("pg_egress could not drop replication slot \"%s\" of destination \"%s\": it is in use",
							cdc->slot_name, cdc->dest_name),
					 errdetail("%s", slot_problem),
					 errhint("Its streams are synced again (a new version).")));
			break;
		case EGRESS_SLOT_ABSENT:
			ereport(WARNING,
					(errmsg("pg_egress replication slot \"%s\" of destination \"%s\" is gone: %s",
							cdc->slot_name, cdc->dest_name, slot_problem),
					 errdetail("Its streams are synced again (a new version) once the destination accepts batches.")));
			break;
		case EGRESS_SLOT_NOT_OURS:
			/* replaced since the check above */
			stop_for_foreign_slot();
			break;
		case EGRESS_SLOT_DROPPED:
			ereport(WARNING,
					(errmsg("pg_egress dropped replication slot \"%s\" of destination \"%s\": %s",
							cdc->slot_name, cdc->dest_name, slot_problem),
					 errdetail("Its streams are synced again (a new version) once the destination accepts batches.")));
			break;
	}
}

/* Streams with lag_policy "pause" stop when the slot holds too much WAL. */
static bool
pause_lagging_streams(int64 lag)
{
	bool		paused = false;

	if (egress_max_slot_lag_mb <= 0 || lag <= (int64) egress_max_slot_lag_mb * 1024 * 1024)
		return false;
	for (int i = 0; i < cdc->nstreams; i++)
	{
		CdcStream  *s = &cdc->streams[i];

		if (!s->pause_on_lag)
			continue;
		egress_record_stream_error(s->def->id,
								   psprintf("stopped: replication slot \"%s\" holds " INT64_FORMAT " MB of WAL, more than pg_egress.max_slot_lag (%d MB)",
											cdc->slot_name, MB_ROUNDED_UP(lag), egress_max_slot_lag_mb));
		paused = true;
	}
	return paused;
}

static int64
current_lag(void)
{
	XLogRecPtr	restart = InvalidXLogRecPtr;
	ReplicationSlot *s;

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	s = SearchNamedReplicationSlot(cdc->slot_name, false);
	if (s)
	{
		SpinLockAcquire(&s->mutex);
		restart = s->data.restart_lsn;
		SpinLockRelease(&s->mutex);
	}
	LWLockRelease(ReplicationSlotControlLock);
	if (XLogRecPtrIsInvalid(restart))
		return 0;
	return (int64) (GetFlushRecPtr(NULL) - restart);
}

/* WAL the destination has not acknowledged: what pg_egress.max_slot_wal limits */
static int64
current_unacked(void)
{
	return Max(egress_slot_unacked_wal(cdc->slot_name, false), 0);
}

/*
 * The WAL retention guard: show the WAL the slot holds, warn once per
 * crossing of pg_egress.max_slot_lag, and, when the destination is failing
 * (may_pause), stop streams with lag_policy "pause".  A healthy destination
 * that is catching up is never stopped.  Returns true if streams were
 * stopped.
 */
static bool
check_lag(int64 lag, bool may_pause)
{
	bool		over = egress_max_slot_lag_mb > 0 &&
		lag > (int64) egress_max_slot_lag_mb * 1024 * 1024;

	for (int i = 0; i < cdc->nstreams; i++)
		if (cdc->streams[i].slot)
			cdc->streams[i].slot->lag_bytes = lag;
	if (!over)
	{
		cdc->lag_warned = false;
		return false;
	}
	if (!cdc->lag_warned)
		ereport(WARNING,
				(errmsg("pg_egress replication slot \"%s\" holds " INT64_FORMAT " MB of WAL, more than pg_egress.max_slot_lag (%d MB)",
						cdc->slot_name, MB_ROUNDED_UP(lag), egress_max_slot_lag_mb),
				 errhint("Check destination \"%s\"; its streams with lag_policy \"pause\" are stopped.",
						 cdc->dest_name)));
	cdc->lag_warned = true;
	return may_pause && pause_lagging_streams(lag);
}

/*
 * Record what stopped streams during the round (see stop_stream): an
 * owner who may no longer read the table puts the stream into state error
 * (egress_resume_stream() then synchronizes it again, since the slot moved
 * on for the other streams); a partition's TRUNCATE asks for a new sync.
 * Returns true if any stream stopped: the session starts over without it.
 */
static bool
apply_stream_stops(void)
{
	bool		any = false;

	for (int i = 0; i < cdc->nstreams; i++)
	{
		CdcStream  *s = &cdc->streams[i];
		EgressCatalogGuard guard;

		if (s->stop == CDC_STOP_ERROR)
		{
			ereport(WARNING,
					(errmsg("pg_egress stream \"%s\" stopped: %s",
							s->def->name, s->stop_message),
					 errdetail("No change committed after the privileges changed was sent."),
					 errhint("Grant the privileges again, then call egress_resume_stream(); the stream is synchronized again.")));
			egress_record_stream_error(s->def->id, s->stop_message);
			any = true;
		}
		else if (s->stop == CDC_STOP_RESYNC)
		{
			Oid			argtypes[1] = {INT4OID};
			Datum		values[1] = {Int32GetDatum(s->def->id)};

			ereport(LOG,
					(errmsg("pg_egress stream \"%s\": %s; the stream is synchronized again",
							s->def->name, s->stop_message)));
			if (egress_worker_catalog_begin(&guard, true))
			{
				egress_catalog_exec("UPDATE egress.stream_state SET resync = true, updated_at = now() "
									"WHERE stream_id = $1",
									1, argtypes, values, NULL, false);
				egress_worker_catalog_end(&guard);
			}
			any = true;
		}
	}
	return any;
}

/*
 * A stream whose table was dropped stops with an error instead of waiting
 * for changes that cannot come; checked when DDL touched a stream's table.
 */
static bool
stop_dropped_streams(void)
{
	bool		any_stale = false;
	bool		any_gone = false;

	for (int i = 0; i < cdc->nstreams; i++)
		any_stale |= cdc->streams[i].recheck;
	if (!any_stale)
		return false;

	start_catalog_transaction();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	for (int i = 0; i < cdc->nstreams; i++)
	{
		Oid			argtypes[1] = {OIDOID};
		Datum		values[1] = {ObjectIdGetDatum(cdc->streams[i].def->relid)};

		/* flags, not a list: SPI's and the transaction's memory go away */
		if (cdc->streams[i].recheck &&
			SPI_execute_with_args("SELECT 1 FROM pg_catalog.pg_class WHERE oid OPERATOR(pg_catalog.=) $1",
								  1, argtypes, values, NULL, true, 1) == SPI_OK_SELECT &&
			SPI_processed == 0)
			cdc->streams[i].dropped = any_gone = true;
		cdc->streams[i].recheck = false;
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();

	for (int i = 0; i < cdc->nstreams; i++)
	{
		CdcStream  *s = &cdc->streams[i];
		char	   *msg;

		if (!s->dropped)
			continue;
		msg = psprintf("relation %s of stream \"%s\" no longer exists",
								   s->def->relation, s->def->name);

		ereport(WARNING, (errmsg("pg_egress stream stopped: %s", msg)));
		egress_record_stream_error(s->def->id, msg);
	}
	return any_gone;
}

/*
 * One session: configuration, slot, initial syncs, then decoding until the
 * configuration changes.  Returns false when there is nothing to serve.
 */
static bool
run_session(MemoryContext sessioncxt)
{
	bool		need_sync = false;

	cdc_retrying = false;
	if (load_config(sessioncxt) == 0)
		return false;
	{
		(void) check_lag(current_lag(), false);
		enforce_wal_limit(current_unacked());
	}

	if (cdc->sink == NULL)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(TopMemoryContext);

		cdc->sink = egress_sink_open(MemoryContextStrdup(TopMemoryContext, cdc->dest_kind),
									 MemoryContextStrdup(TopMemoryContext, cdc->dest_location),
									 cdc->dest_options);
		cdc->sink->keep_retrying = cdc_keep_retrying;
		MemoryContextSwitchTo(oldcxt);
	}
	/* every session: the owner's superuser status may have changed */
	cdc->sink->owner_superuser = cdc->dest_owner_superuser;

	if (!ensure_slot())
		return true;			/* its streams stopped: the next session sees */
	for (int i = 0; i < cdc->nstreams; i++)
		need_sync |= cdc->streams[i].needs_sync;
	if (need_sync)
	{
		for (int i = 0; i < cdc->nstreams; i++)
			if (cdc->streams[i].needs_sync)
				initial_sync(&cdc->streams[i]);
	}

	{
		char		prefix[NAMEDATALEN + 2];

		snprintf(prefix, sizeof(prefix), "~%s", cdc->dest_name);
		cdc->sink->ops->cleanup(cdc->sink, prefix);
	}

	open_decoding();
	cdc->max_rows = PG_INT64_MAX;
	cdc->max_bytes = PG_INT64_MAX;
	for (int i = 0; i < cdc->nstreams; i++)
	{
		cdc->max_rows = Min(cdc->max_rows, egress_stream_batch_rows(cdc->streams[i].def));
		cdc->max_bytes = Min(cdc->max_bytes, egress_stream_batch_bytes(cdc->streams[i].def));
	}
	pgstat_report_activity(STATE_RUNNING, "streaming changes");

	for (;;)
	{
		long		timeout;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		decode_round();

		if (apply_stream_stops() || config_changed() || stop_dropped_streams())
			break;
		{
			(void) check_lag(current_lag(), false);
			enforce_wal_limit(current_unacked());
		}

		/* more WAL flushed meanwhile: decode it now */
		if (GetFlushRecPtr(NULL) > cdc->ctx->reader->EndRecPtr)
			continue;

		/* poll the flush position at the flush interval; sooner if a batch is due */
		timeout = cdc_flush_interval_ms();
		if (cdc->batch_open)
		{
			long		age = TimestampDifferenceMilliseconds(cdc->batch_started,
															  GetCurrentTimestamp());

			timeout = Max(1, cdc_flush_interval_ms() - age);
		}
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}

	/* configuration changed: deliver what is pending, then start over */
	cdc_commit_batch();
	if (cdc->acked_since_persist)
		persist_bookmarks();
	if (cdc->delivered > MyReplicationSlot->data.confirmed_flush)
	{
		LogicalConfirmReceivedLocation(cdc->delivered);
		ReplicationSlotMarkDirty();
	}
	close_decoding();
	return true;
}

static void
release_dest_entry(int code, Datum arg)
{
	egress_release_slot((EgressWorkerSlot *) DatumGetPointer(arg));
}

void
egress_cdc_main(Datum main_arg)
{
	Oid			dboid;
	char		dest[NAMEDATALEN];
	MemoryContext sessioncxt;
	volatile int failures = 0;
	EgressWorkerSlot *dest_entry;
	pid_t		holder;

	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	strlcpy(dest, MyBgworkerEntry->bgw_extra + sizeof(Oid), sizeof(dest));

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	egress_pin_output_settings();

	/*
	 * One CDC worker per destination: a database worker that was restarted
	 * does not know the one its predecessor started.
	 */
	dest_entry = egress_claim_destination(dest, &holder);
	if (dest_entry == NULL)
	{
		/*
		 * Without the entry nothing keeps a second worker off this
		 * destination (two decoding sessions, two writers): never go on
		 * without it.  The database worker starts one again later.
		 */
		if (holder != 0)
			ereport(LOG,
					(errmsg("pg_egress destination \"%s\" is already served by process %d",
							dest, (int) holder)));
		else
		{
			ereport(LOG,
					(errmsg("pg_egress CDC worker for destination \"%s\" exits: no free shared worker entry",
							dest),
					 errhint("Raise pg_egress.max_active_streams (needs a restart).")));
			no_free_entry(dest);
		}
		proc_exit(0);
	}
	before_shmem_exit(release_dest_entry, PointerGetDatum(dest_entry));

	/*
	 * The reorder buffer keeps this much of large transactions in memory
	 * before spilling to disk; half the server default keeps the worker
	 * well under 100 MB with room for batches and caches.
	 */
	SetConfigOption("logical_decoding_work_mem", "32MB", PGC_USERSET, PGC_S_OVERRIDE);

	cdc = MemoryContextAllocZero(TopMemoryContext, sizeof(CdcState));
	cdc->dest_name = MemoryContextStrdup(TopMemoryContext, dest);
	cdc->batchcxt = AllocSetContextCreate(TopMemoryContext, "pg_egress cdc batch",
										  ALLOCSET_DEFAULT_SIZES);
	cdc->msgcxt = AllocSetContextCreate(TopMemoryContext, "pg_egress cdc message",
										ALLOCSET_DEFAULT_SIZES);
	cdc->pendcxt = AllocSetContextCreate(TopMemoryContext, "pg_egress cdc deferred",
										 ALLOCSET_DEFAULT_SIZES);
	sessioncxt = AllocSetContextCreate(TopMemoryContext, "pg_egress cdc session",
									   ALLOCSET_DEFAULT_SIZES);
	cdc->decodecxt = sessioncxt;
	{
		MemoryContext oldcxt;

		/* the type map looks up type information: inside a transaction */
		StartTransactionCommand();
		oldcxt = MemoryContextSwitchTo(TopMemoryContext);
		initStringInfo(&cdc->buf);
		initStringInfo(&cdc->time_extracted);
		egress_column_init(&cdc->deleted_at_col, "_sdc_deleted_at", TIMESTAMPTZOID, -1, false);
		MemoryContextSwitchTo(oldcxt);
		CommitTransactionCommand();
	}
	CacheRegisterRelcacheCallback(cdc_relcache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(NAMESPACEOID, cdc_syscache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHOID, cdc_syscache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHMEMMEMROLE, cdc_syscache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, cdc_syscache_callback, (Datum) 0);
	before_shmem_exit(release_slots_at_exit, (Datum) 0);

	ereport(LOG,
			(errmsg("pg_egress CDC worker started for destination \"%s\"", dest)));

	for (;;)
	{
		volatile bool more = true;

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		cdc_owner = ResourceOwnerCreate(NULL, "pg_egress cdc");
		CurrentResourceOwner = cdc_owner;
		PG_TRY();
		{
			more = run_session(sessioncxt);
			failures = 0;
		}
		PG_CATCH();
		{
			ErrorData  *edata;
			long		backoff;

			MemoryContextSwitchTo(TopMemoryContext);
			edata = CopyErrorData();
			EmitErrorReport();
			FlushErrorState();
			AbortOutOfAnyTransaction();
			if (cdc->ctx)
			{
				/* closes the WAL segment and the reorder buffer's spill files */
				PG_TRY();
				{
					FreeDecodingContext(cdc->ctx);
				}
				PG_CATCH();
				{
					FlushErrorState();
				}
				PG_END_TRY();
			}
			if (MyReplicationSlot)
				ReplicationSlotRelease();
			ReplicationSlotCleanup();
			start_catalog_transaction();
			CommitTransactionCommand();
			cdc->ctx = NULL;	/* its memory goes with the session context */
			cdc->relmap = NULL;
			if (cdc->sink)
				cdc->sink->ops->abort_batch(cdc->sink);
			cdc->batch_open = false;
			cdc->pending = NIL;
			resetStringInfo(&cdc->buf);
			MemoryContextReset(cdc->batchcxt);
			MemoryContextReset(cdc->msgcxt);
			MemoryContextReset(cdc->pendcxt);

			/* a slot that held too much WAL, or was invalidated */
			if (!slot_must_go && cdc->slot_name != NULL && egress_slot_lost(cdc->slot_name))
			{
				snprintf(slot_problem, sizeof(slot_problem),
						 "replication slot \"%s\" was invalidated by the server (max_slot_wal_keep_size): the changes it held are gone",
						 cdc->slot_name);
				slot_must_go = true;
			}
			/* a sink that fails at once (file) never asks cdc_keep_retrying */
			if (!slot_must_go && cdc->slot_name != NULL && cdc->nstreams > 0)
				(void) over_wal_limit(current_unacked());
			if (slot_must_go)
			{
				give_up_slot();
				slot_must_go = false;
				syncing_stream = 0;
				/* the destination may still be dead: do not hurry */
				failures++;
				backoff = Min(1000L << Min(failures - 1, 6), 60000L);
			}
			else if (syncing_stream != 0)
			{
				/* an initial sync that failed stops its stream, not the others */
				egress_record_stream_error(syncing_stream, edata->message);
				syncing_stream = 0;
				backoff = 0;
			}
			else if (edata->sqlerrcode == EGRESS_ERRCODE_REJECTED)
			{
				/* refused for good: its streams stop until resumed */
				ereport(WARNING,
						(errmsg("pg_egress streams of destination \"%s\" stopped: the destination rejected a batch",
								cdc->dest_name)));
				note_failure(edata->message, true);
				backoff = 0;
			}
			else
			{
				/* a failing destination: show it, retry with a growing pause */
				note_failure(edata->message, false);
				failures++;
				backoff = Min(1000L << Min(failures - 1, 6), 60000L);
			}
			FreeErrorData(edata);

			/* while the destination fails, WAL piles up: show it, apply the policy */
			if (cdc->nstreams > 0 && check_lag(current_lag(), true))
				backoff = 0;
			if (backoff > 0)
			{
				(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 backoff, PG_WAIT_EXTENSION);
				ResetLatch(MyLatch);
			}
		}
		PG_END_TRY();

		release_stream_slots();
		CurrentResourceOwner = NULL;
		ResourceOwnerRelease(cdc_owner, RESOURCE_RELEASE_BEFORE_LOCKS, false, true);
		ResourceOwnerRelease(cdc_owner, RESOURCE_RELEASE_LOCKS, false, true);
		ResourceOwnerRelease(cdc_owner, RESOURCE_RELEASE_AFTER_LOCKS, false, true);
		ResourceOwnerDelete(cdc_owner);
		cdc->streams = NULL;
		cdc->nstreams = 0;
		cdc->slot_name = NULL;	/* in the session's memory */
		MemoryContextReset(sessioncxt);
		if (!more)
			break;
	}

	ereport(LOG,
			(errmsg("pg_egress CDC worker for destination \"%s\" has no streams left", dest)));
	proc_exit(0);
}
