/*-------------------------------------------------------------------------
 * cdc_internal.h
 *	  State shared by the files of the CDC worker (src/worker/cdc*.c): the
 *	  worker's CdcState and its streams, and the functions one file calls
 *	  in another.  Not for use outside the CDC worker.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_CDC_INTERNAL_H
#define EGRESS_CDC_INTERNAL_H

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
#include "catalog/publication.h"
#include "catalog/sqlfuncs.h"
#include "decode/pgoutput.h"
#include "decode/slot.h"
#include "decode/wal2json.h"
#include "encode/singer.h"
#include "pg_egress.h"
#include "shmem.h"
#include "sink/sink.h"
#include "worker/snapshot.h"

/* Why a stream takes no more changes in this session. */
typedef enum CdcStopKind
{
	CDC_STOP_NONE,
	CDC_STOP_ERROR,				/* its owner may no longer read it */
	CDC_STOP_RESYNC,			/* a partition was truncated */
	CDC_STOP_UNFILTERED			/* option filter, wal2json slot */
} CdcStopKind;

/* One LOG_BASED stream of the destination. */
typedef struct CdcStream
{
	EgressStreamDef *def;
	EgressSingerStream *st;		/* rebuilt from the decoded catalog after DDL */
	MemoryContext stcxt;		/* holds st; replaced when st is rebuilt */
	bool		st_stale;
	bool		st_live;		/* st built outside decoding: from the live catalog */
	bool		recheck;		/* DDL touched the table: does it still exist? */
	bool		dropped;		/* ... it does not */
	bool		lost_identity;	/* ... it has no replica identity (pgoutput) */
	bool		left_publication;	/* ... it is not in the publication */
	bool		partitioned;	/* its table is partitioned (leaves matter) */
	char	   *sent_schema;	/* schema_json last sent for this stream */
	char	   *sent_stream_id; /* ... under this stream id */
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
	/* as of the batch committed last, for cdc_finish_ack */
	bool		ack_valid;
	int64		ack_version;
	int64		ack_rows;

	/* positions (cdc_render.c): this stream's lines of the transaction */
	uint64		pos_txn;		/* cdc->txn_seq they were counted in */
	int64		pos_next;		/* the next line's ordinal in it */

	/* as loaded, for a chunked backfill (cdc_backfill.c) */
	bool		resync;			/* a new sync was asked for */
	bool		syncing;		/* state syncing */
	int			bf_nafter;		/* backfill_after: -1 NULL, else its length */
	char	  **bf_after;
	int64		bf_chunks;
	int64		bf_rows;
	struct CdcBackfill *bf;		/* a chunked backfill runs (cdc_backfill.c) */
} CdcStream;

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
	bool		pgoutput;		/* the slot decodes with pgoutput, else wal2json */

	int			nstreams;
	CdcStream  *streams;
	HTAB	   *relmap;			/* decoded relation -> stream (cdc_relmap.c) */

	LogicalDecodingContext *ctx;
	MemoryContext decodecxt;	/* the decoding context and its helpers */
	EgressSink *sink;
	MemoryContext sinkcxt;		/* the sink and sink_identity */
	char	   *sink_identity;	/* kind|location|options it was opened with */

	/* the open batch */
	bool		batch_open;
	int64		batch_rows;
	int64		batch_bytes;
	TimestampTz batch_started;
	TimestampTz batch_oldest;	/* its oldest change's time, for the lag */
	XLogRecPtr	batch_first_commit;
	int			batch_first_ordinal;	/* record number in its transaction */
	XLogRecPtr	batch_last_commit;
	XLogRecPtr	batch_last_end; /* end of the last complete txn in the batch */
	StringInfoData buf;
	StringInfoData time_extracted;
	MemoryContext batchcxt;
	MemoryContext msgcxt;
	MemoryContext pendcxt;		/* deferred records */
	List	   *pending;		/* deferred rows (cdc_render.c) */
	int64		max_rows;
	int64		max_bytes;
	bool		acked_since_persist;
	/* the batch committed last, not recorded yet (cdc_finish_ack) */
	bool		ack_pending;
	bool		ack_async;		/* ... its acknowledgement under way */
	XLogRecPtr	ack_upto;
	char		ack_batch_id[NAMEDATALEN + 64];

	/* the transaction being replayed */
	TransactionId txn_xid;
	XLogRecPtr	txn_commit;
	XLogRecPtr	txn_end;
	TimestampTz txn_time;
	int			txn_records;
	uint64		txn_seq;		/* transactions begun in this process */

	XLogRecPtr	delivered;		/* everything ending here or before is acked */
	XLogRecPtr	persisted_end;	/* end of our last bookmark update's WAL */
	TimestampTz persisted_at;
	bool		lag_warned;
	uint32		config_gen;
	char	   *fingerprint;	/* of the configuration loaded (TopMemoryContext) */
	bool		catalog_moved;	/* a bookmark found its stream no longer streaming */
	EgressColumn deleted_at_col;	/* renders _sdc_deleted_at */
} CdcState;

/* cdc.c */
extern CdcState *cdc;
extern EgressWorkerSlot *cdc_dest_entry;	/* the destination's shared entry */
extern ResourceOwner cdc_owner;
extern int32 cdc_syncing_stream;	/* the stream an initial sync is for; 0: none */
extern bool cdc_own_invalidation;	/* in cdc_start_catalog_transaction's flush */
extern void cdc_start_catalog_transaction(void);

/* cdc_relmap.c */
extern void cdc_relcache_callback(Datum arg, Oid relid);
extern void cdc_syscache_callback(Datum arg, int cacheid, uint32 hashvalue);
extern void cdc_relmap_open(void);
extern void cdc_relmap_close(bool free);
extern int	cdc_lookup_relid(Oid relid);
extern Oid	cdc_lookup_name(const char *schema, const char *table);
extern char *cdc_privilege_problem(EgressStreamDef *def);
extern void cdc_stop_stream(CdcStream *s, CdcStopKind kind, const char *message);
extern void cdc_refuse_unfiltered(CdcStream *s);
extern void cdc_refresh_descriptor(CdcStream *s);

/* cdc_batch.c */
extern bool cdc_retrying;
extern int	cdc_flush_interval_ms(void);
extern bool cdc_keep_retrying(void *arg, TimestampTz since);
extern bool cdc_failing;
extern void cdc_show_failing(void);
extern void cdc_delivered_after_retries(void *arg);
extern void cdc_prepare_record(CdcStream *s);
extern void cdc_after_record(void);
extern void cdc_commit_batch(void);
extern void cdc_finish_ack(void);

/* cdc_render.c */
extern void cdc_resolve_pending(void);
extern bool cdc_pending_over_limit(void);
extern void cdc_emit_row(CdcStream *s, EgressChange *ch);
extern void cdc_emit_delete_key(CdcStream *s, EgressChange *ch);
extern void cdc_emit_delete(CdcStream *s, EgressChangeColumn *key, int nkey);
extern bool cdc_key_changed(CdcStream *s, EgressChange *ch);
extern void cdc_emit_truncate(CdcStream *s);
extern bool cdc_pg_kinesis_format(void);

/* cdc_decode.c */
extern void cdc_open_decoding(void);
extern void cdc_close_decoding(void);
extern void cdc_decode_round(void);

/* cdc_config.c */
extern void cdc_release_stream_slots(void);
extern int	cdc_load_config(MemoryContext cxt);
extern bool cdc_config_changed(void);
extern bool cdc_ensure_slot(void);
extern void cdc_persist_bookmarks(void);
extern void cdc_note_failure(const char *message, bool stop);
extern void cdc_no_free_entry(const char *dest);
extern void cdc_initial_sync(CdcStream *s);

/* cdc_backfill.c */
extern bool cdc_backfill_wanted(CdcStream *s);
extern void cdc_backfill_begin(CdcStream *s);
extern void cdc_backfill_step(void);
extern bool cdc_backfill_break_round(void);
extern void cdc_backfill_after_round(void);
extern void cdc_backfill_message(EgressChange *ch);
extern void cdc_backfill_change(CdcStream *s, EgressChange *ch);
extern bool cdc_backfill_persist(CdcStream *s);
extern void cdc_backfill_reset(void);
extern long cdc_backfill_timeout(long timeout);

/* cdc_walguard.c */
#define CDC_SLOT_PROBLEM_LEN 512
extern bool cdc_slot_must_go;	/* the error path should give up the slot */
extern char cdc_slot_problem[CDC_SLOT_PROBLEM_LEN];
extern bool cdc_over_wal_limit(int64 unacked);
extern void cdc_enforce_wal_limit(int64 lag);
extern void cdc_slot_invalidated(void);
extern void cdc_give_up_slot(void);
extern int64 cdc_current_lag(void);
extern int64 cdc_current_unacked(void);
extern bool cdc_check_lag(int64 lag, bool may_pause);

/* cdc_heartbeat.c */
extern void cdc_confirm_read_position(void);
extern void cdc_heartbeat_start(void);
extern bool cdc_heartbeat(void);
extern long cdc_heartbeat_timeout(long timeout);

#endif							/* EGRESS_CDC_INTERNAL_H */
