/*-------------------------------------------------------------------------
 * cdc_backfill.c
 *	  CDC worker: the chunked initial sync of LOG_BASED streams (DBLog),
 *	  run by the CDC worker itself between decoding rounds while every
 *	  stream of the destination keeps streaming.
 *
 * A stream whose option "chunk_rows" is above 0 (50,000 by default) is
 * synchronized in chunks of its key (the primary key, else the replica
 * identity index), each read in a short transaction of its own, instead of
 * one snapshot held for the whole table.  Its live changes are sent under
 * the new version from the start; chunk k goes:
 *
 * 1. write watermark L (a non-transactional logical message, flushed) and
 *    decode until L comes back: every transaction whose commit record
 *    precedes L has been decoded (and its changes sent).  The H of the
 *    previous chunk serves as L when the chunks follow one another;
 * 2. take snapshot S; a transaction decoded before L that changed a
 *    backfilling table but is still running for S (its commit record is
 *    written but it has not left the proc array yet, e.g. waiting for a
 *    synchronous standby) would make S show an older row than the change
 *    already sent: nothing is read, and once it ended the chunk starts
 *    again at a new L (the straggler check).
 *    Read the chunk in S as the stream's owner, rendered as the initial
 *    sync renders rows, into a buffer that spills to a temporary file;
 *    the transaction ends, and with it the worker's xmin;
 * 3. write watermark H, decode until it comes back; every change of the
 *    table decoded between L and H was sent already and carries a value
 *    at least as new as S: the chunk's row of that key is dropped (a
 *    TRUNCATE drops them all);
 * 4. at H the remaining rows go into the open batch.  The chunk's last key
 *    is recorded as the stream's progress (egress.stream_state
 *    .backfill_after) with the bookmarks of the first batch acknowledged
 *    after them, never before; the chunk that comes back shorter than
 *    chunk_rows ends the backfill with the final ACTIVATE_VERSION, and the
 *    stream becomes "streaming" once that batch is acknowledged.
 *
 * After a crash or a new session a stream in state syncing with progress
 * goes on at the next chunk, same version (the watermarks carry a nonce of
 * the session, so an earlier session's are ignored).  A table without a
 * key is read in block ranges (ctid); since a change of it cannot be
 * matched to a buffered row, any change decoded while it is backfilled (or
 * a rewrite of the table) gives the chunked backfill up for the
 * one-snapshot sync of 0.1 (backfill_after '{}' says so, for the next
 * session).  One backfill reads at a time; the others stream meanwhile.
 *
 * The first chunk of a stream also waits for the writers of its table that
 * were running when the backfill started (collect_writers).  The worker
 * never blocks on another transaction: it checks them, and the straggler,
 * between decoding rounds without waiting, so an open transaction holds at
 * most its own table's backfill back, never the destination's decoding.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "worker/cdc_internal.h"

#include "access/transam.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "common/hashfn.h"
#include "optimizer/plancat.h"
#include "replication/message.h"
#include "replication/reorderbuffer.h"
#include "storage/buffile.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "storage/procarray.h"
#include "utils/guc.h"

#define WATERMARK_PREFIX	"pg_egress.watermark"
#define DEFAULT_CHUNK_ROWS	50000
/*
 * Chunk rows held in memory before the buffer spills to a temporary file:
 * logical_decoding_work_mem, the budget decoding already has (default
 * 64MB; a default chunk of wide rows fits, a spilled chunk is written and
 * read once more).
 */
#define CHUNK_MEMORY_BYTES	((Size) logical_decoding_work_mem * 1024)

/* The progress of one stream's backfill. */
typedef struct CdcBackfill
{
	int			nkey;			/* key columns; 0: block ranges */
	char	  **keycols;
	int64		chunk_rows;
	int64		chunk_bytes;
	BlockNumber blocks_per_chunk;	/* block ranges */
	Oid			relfilenode;	/* block ranges: of the table read */

	/* what the next chunk reads after (read so far) */
	char	  **after;			/* NULL: from the start */
	BlockNumber next_block;
	int64		chunks;
	int64		rows;
	bool		read_all;		/* the last chunk was read */

	/* sent (in a batch), maybe not acknowledged yet */
	bool		sent_pending;
	int64		sent_batches;	/* the stream's batches_sent when sent */
	char	  **sent_after;
	BlockNumber sent_block;
	int64		sent_chunks;
	int64		sent_rows;
	bool		sent_final;

	/* acknowledged */
	char	  **acked_after;
	BlockNumber acked_block;
	int64		acked_chunks;
	int64		acked_rows;
	bool		acked_final;
	bool		any_acked;		/* acked_* changed since the start */

	bool		give_up;		/* block ranges: the table changed */
	/* writers of the table running at the start, still running */
	VirtualTransactionId *writers;
	int			nwriters;

	/*
	 * Keyed: the key the backfill started with, as "name/type/typmod/
	 * collation" per column (key_signature); it is stored as the trailing
	 * element of backfill_after, after the key's text values, so that a
	 * resume after the key changed starts over instead of reading the old
	 * key's progress with the new key.
	 */
	char	   *keysig;
	uint32		storage;		/* keyed: relfilenodes when last read */
	bool		restart;		/* keyed: the key changed: start over */
	MemoryContext cxt;
} CdcBackfill;

typedef enum ChunkPhase
{
	CHUNK_NONE,
	CHUNK_NEED_L,				/* write L */
	CHUNK_WAIT_L,				/* decode until L */
	CHUNK_READ,					/* L seen: read the chunk, write H */
	CHUNK_WAIT_H,				/* decode until H */
	CHUNK_EMIT,					/* H seen: send what is left of the chunk */
	CHUNK_STALLED				/* a straggler runs: a new L once it ended */
} ChunkPhase;

/*
 * The chunk's rows in memory, reused from chunk to chunk (no allocation per
 * row): the rendered rows back to back in "arena" (the reader renders each
 * row straight into it: chunk_row_target), their keys and partition keys
 * (NUL-terminated) in "keyarena", and per row a ChunkRow.  At H the rows
 * kept go out as runs of the arena, each one write of the sink, not row by
 * row (emit_mem_rows).
 */
typedef struct ChunkRow
{
	Size		row;			/* offset in arena */
	Size		key;			/* offset in keyarena */
	int32		len;			/* of the row (a record: without its line end) */
	int32		keylen;
	int32		pklen;			/* partition key length, -1: none (at key + keylen + 1) */
} ChunkRow;

static StringInfoData arena;
static StringInfoData keyarena;
static ChunkRow *rowidx = NULL;
static int64 rowidx_size = 0;

/*
 * Memory the rows may take before the buffer spills: CHUNK_MEMORY_BYTES,
 * within what one StringInfo can hold.
 */
static Size
chunk_memory_limit(void)
{
	return Min(CHUNK_MEMORY_BYTES, (Size) MaxAllocSize / 4);
}

/* A key changed in the window (L, H]: by hash, then text. */
typedef struct DirtyEntry
{
	uint32		hash;
	List	   *keys;
} DirtyEntry;

/* The chunk being read: one at a time, for stream s. */
static struct
{
	CdcStream  *s;
	ChunkPhase	phase;
	int64		chunk_no;
	char		nonce[40];
	char	   *lmsg;
	char	   *hmsg;
	bool		break_round;
	bool		retry;			/* a change without its key in the window */
	bool		truncated;		/* a TRUNCATE in the window */
	HTAB	   *dirty;
	MemoryContext cxt;			/* the chunk's: keys, messages */
	int64		mem_rows;		/* rows in the arena */
	BufFile    *file;			/* then here */
	int64		file_rows;
	MemoryContextCallback file_cb;
	/* the read */
	int64		nread;
	int64		bytes_read;
	bool		end;
	char	  **last;
	BlockNumber blk_to;
	Oid		   *keyout;			/* keys kept as Datums: their output functions */
	TransactionId straggler;	/* CHUNK_STALLED: the transaction */
} chunk;

/*
 * The backfill waits for other transactions to end (the writers running at
 * its start, a straggler): without blocking, the main loop polls again
 * after wait_ms (10 ms, doubling up to 100 ms) while it decodes.
 */
#define WAIT_MIN_MS		10
#define WAIT_MAX_MS		100
static bool waiting = false;
static long wait_ms = WAIT_MIN_MS;

/*
 * The chunk's rows are rendered with the table's columns as of its read;
 * they are sent at H.  A change of the table's definition decoded (or
 * committed) between the read and H would have them sent after the new
 * SCHEMA with the old columns: ddl_watch is set from the chunk's snapshot
 * to H, and after a relcache invalidation of the table meanwhile
 * (ddl_seen, backfill_relcache_callback) the chunk is read again if the
 * table's columns differ from those of the read (ddl_colsig).
 */
static bool ddl_watch = false;
static bool ddl_seen = false;
static char *ddl_colsig = NULL;	/* in chunk.cxt */
static bool ddl_callback_registered = false;

/* xids of decoded transactions that changed a backfilling table */
static List *straggler_xids = NIL;
static MemoryContext backfill_cxt = NULL;
static uint64 session_nonce = 0;

/* ---- the chunk buffer ---------------------------------------------------- */

static void
chunk_file_close(void *arg)
{
	if (chunk.file != NULL)
		BufFileClose(chunk.file);
	chunk.file = NULL;
	chunk.file_rows = 0;
}

static void
file_write_str(const char *str, int len)
{
	int32		l = str ? len : -1;

	BufFileWrite(chunk.file, &l, sizeof(l));
	if (l > 0)
		BufFileWrite(chunk.file, (void *) str, l);
}

static char *
file_read_str(int *lenp)
{
	int32		l;
	char	   *str;

	if (BufFileRead(chunk.file, &l, sizeof(l)) != sizeof(l))
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read a backfill chunk from a temporary file")));
	if (lenp)
		*lenp = Max(l, 0);
	if (l < 0)
		return NULL;
	str = palloc(l + 1);
	if (l > 0 && BufFileRead(chunk.file, str, l) != l)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read a backfill chunk from a temporary file")));
	str[l] = '\0';
	return str;
}

/*
 * egress_snapshot_read_chunk's row_target: render the next row into the
 * arena while the rows fit in memory, else into the reader's buffer (it
 * goes to the temporary file).
 */
static StringInfo
chunk_row_target(void *arg)
{
	MemoryContext oldcxt;

	if (chunk.file != NULL)
		return NULL;
	if (arena.data == NULL)
	{
		oldcxt = MemoryContextSwitchTo(backfill_cxt);
		initStringInfo(&arena);
		initStringInfo(&keyarena);
		MemoryContextSwitchTo(oldcxt);
	}
	if (arena.len + keyarena.len + chunk.mem_rows * sizeof(ChunkRow) >= chunk_memory_limit())
		return NULL;
	return &arena;
}

/* egress_snapshot_read_chunk's callback: keep the row. */
static void
buffer_row(void *arg, const char *key, int keylen, const char *data, int len,
		   const char *partkey)
{
	MemoryContext oldcxt;

	chunk.nread++;
	if (chunk.file == NULL && arena.data != NULL &&
		data >= arena.data && data < arena.data + arena.len)
	{
		/* rendered into the arena (chunk_row_target): index it */
		ChunkRow   *cr;

		if (chunk.mem_rows >= rowidx_size)
		{
			int64		n = Max(rowidx_size * 2, 1024);

			if (rowidx == NULL)
				rowidx = MemoryContextAllocHuge(backfill_cxt, sizeof(ChunkRow) * n);
			else
				rowidx = repalloc_huge(rowidx, sizeof(ChunkRow) * n);
			rowidx_size = n;
		}
		cr = &rowidx[chunk.mem_rows++];
		cr->row = data - arena.data;
		cr->len = len;
		cr->key = keyarena.len;
		cr->keylen = keylen;
		appendBinaryStringInfo(&keyarena, key, keylen);
		appendStringInfoChar(&keyarena, '\0');
		cr->pklen = -1;
		if (partkey != NULL)
		{
			cr->pklen = strlen(partkey);
			appendBinaryStringInfo(&keyarena, partkey, cr->pklen);
			appendStringInfoChar(&keyarena, '\0');
		}
		return;
	}
	if (chunk.file == NULL)
	{
		oldcxt = MemoryContextSwitchTo(chunk.cxt);
		chunk.file = BufFileCreateTemp(true);	/* read after the transaction */
		chunk.file_rows = 0;
		chunk.file_cb.func = chunk_file_close;
		chunk.file_cb.arg = NULL;
		MemoryContextRegisterResetCallback(chunk.cxt, &chunk.file_cb);
		MemoryContextSwitchTo(oldcxt);
	}
	file_write_str(key, keylen);
	file_write_str(data, len);
	file_write_str(partkey, partkey ? strlen(partkey) : 0);
	chunk.file_rows++;
}

/* ---- the window: keys changed between L and H ---------------------------- */

static void
dirty_add(const char *key, int len)
{
	uint32		h = hash_bytes((const unsigned char *) key, len);
	bool		found;
	DirtyEntry *e;
	MemoryContext oldcxt;
	ListCell   *lc;

	e = hash_search(chunk.dirty, &h, HASH_ENTER, &found);
	if (!found)
		e->keys = NIL;
	foreach(lc, e->keys)
		if (strlen(lfirst(lc)) == len && memcmp(lfirst(lc), key, len) == 0)
			return;
	oldcxt = MemoryContextSwitchTo(chunk.cxt);
	e->keys = lappend(e->keys, pnstrdup(key, len));
	MemoryContextSwitchTo(oldcxt);
}

static bool
dirty_has(const char *key, int len)
{
	uint32		h = hash_bytes((const unsigned char *) key, len);
	DirtyEntry *e = hash_search(chunk.dirty, &h, HASH_FIND, NULL);
	ListCell   *lc;

	if (e == NULL)
		return false;
	foreach(lc, e->keys)
		if (strlen(lfirst(lc)) == len && memcmp(lfirst(lc), key, len) == 0)
			return true;
	return false;
}

/*
 * Did the key of a buffered row change in the window?  Integer keys are
 * kept as Datums (EgressChunkSpec.key_datums): their text is made here, only
 * when the window holds changes.
 */
static bool
row_key_dirty(const char *key, int keylen)
{
	if (hash_get_num_entries(chunk.dirty) == 0)
		return false;
	if (chunk.keyout != NULL)
	{
		int			nkey = chunk.s->bf->nkey;
		Datum	   *vals = palloc(sizeof(Datum) * nkey);
		StringInfoData text;
		bool		dirty;

		Assert(keylen == sizeof(Datum) * nkey);
		memcpy(vals, key, sizeof(Datum) * nkey);	/* the arena is unaligned */
		initStringInfo(&text);
		egress_chunk_key_from_datums(&text, chunk.keyout, nkey, vals);
		dirty = dirty_has(text.data, text.len);
		pfree(text.data);
		pfree(vals);
		return dirty;
	}
	return dirty_has(key, keylen);
}

/* A new chunk: its buffer, window and messages start empty. */
static void
chunk_reset(void)
{
	HASHCTL		ctl;

	if (chunk.cxt == NULL)
		chunk.cxt = AllocSetContextCreate(backfill_cxt, "pg_egress backfill chunk",
										  ALLOCSET_DEFAULT_SIZES);
	MemoryContextReset(chunk.cxt);	/* closes the file */
	if (arena.data != NULL)
	{
		resetStringInfo(&arena);
		resetStringInfo(&keyarena);
	}
	chunk.mem_rows = 0;
	chunk.file = NULL;
	chunk.file_rows = 0;
	chunk.nread = 0;
	chunk.bytes_read = 0;
	chunk.end = false;
	chunk.last = NULL;
	chunk.keyout = NULL;
	chunk.retry = false;
	ddl_watch = ddl_seen = false;
	ddl_colsig = NULL;
	chunk.truncated = false;
	chunk.lmsg = chunk.hmsg = NULL;
	ctl.keysize = sizeof(uint32);
	ctl.entrysize = sizeof(DirtyEntry);
	ctl.hcxt = chunk.cxt;
	chunk.dirty = hash_create("pg_egress backfill window", 256, &ctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/*
 * The key of a decoded change: cols (the new row) or, failing that, ident
 * (the old key), as egress_chunk_key_append writes it; false when a key
 * column is missing.
 */
static bool
change_key(CdcBackfill *b, CdcStream *s, EgressChangeColumn *cols, int ncols,
		   StringInfo out)
{
	resetStringInfo(out);
	for (int k = 0; k < b->nkey; k++)
	{
		EgressChangeColumn *c = NULL;
		Oid			basetypid = InvalidOid;

		for (int i = 0; i < ncols && c == NULL; i++)
			if (strcmp(cols[i].name, b->keycols[k]) == 0)
				c = &cols[i];
		if (c == NULL || c->unchanged || c->isnull || c->value == NULL)
			return false;
		for (int i = 0; s->st && i < s->st->ncolumns; i++)
			if (strcmp(s->st->columns[i].name, b->keycols[k]) == 0)
				basetypid = s->st->columns[i].basetypid;
		egress_chunk_key_append(out, egress_change_value_text(c, basetypid));
	}
	return true;
}

/*
 * A decoded change of backfilling stream s (apply_change, before it is
 * sent): its transaction is remembered for the straggler check, and in
 * the window of s's chunk its keys are marked.
 */
void
cdc_backfill_change(CdcStream *s, EgressChange *ch)
{
	CdcBackfill *b = s->bf;
	StringInfoData key;
	MemoryContext oldcxt;

	if (b == NULL)
		return;
	if (TransactionIdIsValid(cdc->txn_xid) &&
		(straggler_xids == NIL || llast_oid(straggler_xids) != cdc->txn_xid))
	{
		oldcxt = MemoryContextSwitchTo(backfill_cxt);
		straggler_xids = lappend_oid(straggler_xids, cdc->txn_xid);
		MemoryContextSwitchTo(oldcxt);
	}
	if (b->nkey == 0)
	{
		/* no key: which row a change is cannot be told until all are sent */
		if (!b->read_all)
			b->give_up = true;
		return;
	}
	if (chunk.s != s || (chunk.phase != CHUNK_READ && chunk.phase != CHUNK_WAIT_H))
		return;
	if (ch->action == EGRESS_CHANGE_TRUNCATE)
	{
		chunk.truncated = true;
		return;
	}
	initStringInfo(&key);
	if (ch->action == EGRESS_CHANGE_INSERT || ch->action == EGRESS_CHANGE_UPDATE)
	{
		if (change_key(b, s, ch->columns, ch->ncolumns, &key) ||
			change_key(b, s, ch->identity, ch->nidentity, &key))
			dirty_add(key.data, key.len);
		else
			chunk.retry = true;
	}
	if ((ch->action == EGRESS_CHANGE_UPDATE && ch->nidentity > 0) ||
		ch->action == EGRESS_CHANGE_DELETE)
	{
		if (change_key(b, s, ch->identity, ch->nidentity, &key))
			dirty_add(key.data, key.len);
		else
			chunk.retry = true;
	}
	pfree(key.data);
}

/* ---- watermarks ------------------------------------------------------------ */

static char *
watermark_content(char which)
{
	return psprintf("%s/%s/%d/" INT64_FORMAT "/%c", cdc->slot_name, chunk.nonce,
					chunk.s->def->id, chunk.chunk_no, which);
}

/* Write a watermark, flushed: the decoder reads only flushed WAL. */
static void
write_watermark(const char *content)
{
	XLogRecPtr	end;

	end = LogLogicalMessage(WATERMARK_PREFIX, content, strlen(content), false);
	XLogFlush(end);
}

/* A decoded logical message: ours, of this session, for the chunk? */
void
cdc_backfill_message(EgressChange *ch)
{
	if (ch->transactional || ch->prefix == NULL ||
		strcmp(ch->prefix, WATERMARK_PREFIX) != 0 || chunk.s == NULL ||
		ch->content == NULL)
		return;
	if (chunk.phase == CHUNK_WAIT_L && strcmp(ch->content, chunk.lmsg) == 0)
	{
		chunk.phase = CHUNK_READ;
		chunk.break_round = true;
	}
	else if (chunk.phase == CHUNK_WAIT_H && strcmp(ch->content, chunk.hmsg) == 0)
	{
		chunk.phase = CHUNK_EMIT;
		chunk.break_round = true;
	}
}

/* Should decoding pause after this record (a watermark came)? */
bool
cdc_backfill_break_round(void)
{
	if (!chunk.break_round)
		return false;
	chunk.break_round = false;
	return true;
}

/* ---- starting ------------------------------------------------------------ */

static int64
option_int(EgressStreamDef *def, const char *name, int64 dflt)
{
	int64		v;

	if (egress_jsonb_get_int64(def->options, name, &v))
		return v;
	return dflt;
}

/*
 * Does the table look no larger than one chunk (the planner's estimate of
 * its rows and pages, summed over the leaves of a partitioned table)?
 * Then one short transaction reads it as fast as a chunk would, without
 * the watermarks: the one-transaction sync.
 */
static bool
fits_one_chunk(CdcStream *s)
{
	int64		chunk_rows = option_int(s->def, "chunk_rows", DEFAULT_CHUNK_ROWS);
	int64		chunk_bytes = option_int(s->def, "chunk_bytes", 0);
	double		rows = 0;
	double		pages = 0;
	List	   *rels;
	ListCell   *lc;

	cdc_start_catalog_transaction();
	rels = s->partitioned ? find_all_inheritors(s->def->relid, AccessShareLock, NULL) :
		list_make1_oid(s->def->relid);
	foreach(lc, rels)
	{
		Relation	rel = table_open(lfirst_oid(lc), AccessShareLock);

		if (rel->rd_rel->relkind == RELKIND_RELATION)
		{
			BlockNumber p;
			double		t;
			double		frac;
			int32	   *widths = palloc0(sizeof(int32) *
										 (RelationGetNumberOfAttributes(rel) + 1));

			estimate_rel_size(rel, widths, &p, &t, &frac);
			rows += t;
			pages += p;
		}
		table_close(rel, AccessShareLock);
	}
	CommitTransactionCommand();
	if (rows > (double) chunk_rows)
		return false;
	if (chunk_bytes > 0 && pages * BLCKSZ > (double) chunk_bytes)
		return false;
	return true;
}

/*
 * Is s, which needs an initial sync, synced in chunks?  Its option
 * chunk_rows is above 0, the slot decodes with pgoutput (watermarks are
 * logical messages), and the chunked backfill was not given up for the
 * table (backfill_after '{}').  A partitioned table without a key has no
 * block ranges: one snapshot.
 */
bool
cdc_backfill_wanted(CdcStream *s)
{
	char	   *plugin = NULL;
	Oid			dboid;

	if (option_int(s->def, "chunk_rows", DEFAULT_CHUNK_ROWS) <= 0)
		return false;
	if (s->bf_nafter == 0)
		return false;
	if (!egress_slot_lookup(cdc->slot_name, &plugin, &dboid) ||
		strcmp(plugin, EGRESS_PLUGIN_PGOUTPUT) != 0)
		return false;
	if (s->partitioned)
	{
		bool		keyed;

		cdc_start_catalog_transaction();
		keyed = egress_primary_key_columns(s->def->relid) != NIL;
		CommitTransactionCommand();
		if (!keyed)
			return false;
	}
	return !fits_one_chunk(s);
}

/* The stream's key: primary key, else replica identity index; NIL: none. */
static List *
stream_key(Oid relid)
{
	List	   *cols = egress_primary_key_columns(relid);
	Relation	rel;
	Oid			idxoid;

	if (cols != NIL)
		return cols;
	rel = table_open(relid, AccessShareLock);
	idxoid = RelationGetReplicaIndex(rel);
	if (OidIsValid(idxoid))
	{
		Relation	idx = index_open(idxoid, AccessShareLock);

		for (int i = 0; i < idx->rd_index->indnkeyatts; i++)
			cols = lappend(cols, get_attname(relid, idx->rd_index->indkey.values[i], false));
		index_close(idx, AccessShareLock);
	}
	table_close(rel, AccessShareLock);
	return cols;
}

static void
free_texts(char **texts, int n)
{
	if (texts == NULL)
		return;
	for (int i = 0; i < n; i++)
		if (texts[i])
			pfree(texts[i]);
	pfree(texts);
}

static char **
copy_texts(char **texts, int n, MemoryContext cxt)
{
	char	  **c;

	if (texts == NULL)
		return NULL;
	c = MemoryContextAllocZero(cxt, sizeof(char *) * Max(n, 1));
	for (int i = 0; i < n; i++)
		c[i] = MemoryContextStrdup(cxt, texts[i]);
	return c;
}

/*
 * The transactions holding a lock on s's table (each leaf partition of a
 * partitioned one) that conflicts with ShareLock: its writers, running
 * now.  The first chunk of s waits until all of them are gone
 * (writers_done).  In a transaction.
 */
static void
collect_writers(CdcStream *s, CdcBackfill *b)
{
	List	   *rels;
	ListCell   *lc;
	List	   *found = NIL;
	int			total = 0;

	/* NoLock: a lock tag needs no open relation, and nothing is waited for */
	rels = s->partitioned ? find_all_inheritors(s->def->relid, NoLock, NULL) :
		list_make1_oid(s->def->relid);
	foreach(lc, rels)
	{
		LOCKTAG		tag;
		int			count = 0;
		VirtualTransactionId *vxids;

		SET_LOCKTAG_RELATION(tag, MyDatabaseId, lfirst_oid(lc));
		vxids = GetLockConflicts(&tag, ShareLock, &count);
		found = lappend(found, vxids);
		total += count;
	}
	b->writers = MemoryContextAllocZero(b->cxt,
										sizeof(VirtualTransactionId) * Max(total, 1));
	b->nwriters = 0;
	foreach(lc, found)
	{
		VirtualTransactionId *vxids = lfirst(lc);

		for (; VirtualTransactionIdIsValid(*vxids); vxids++)
			b->writers[b->nwriters++] = *vxids;
	}
	if (b->nwriters > 0)
		ereport(DEBUG1,
				(errmsg_internal("pg_egress stream \"%s\": the first chunk waits for %d transactions writing %s",
								 s->def->name, b->nwriters, s->def->relation)));
}

/*
 * Have the writers of s's table that ran when its backfill started all
 * ended?  Checked without waiting (the worker decodes for every stream of
 * the destination meanwhile); those that ended are forgotten.
 */
static bool
writers_done(CdcStream *s)
{
	CdcBackfill *b = s->bf;
	int			n = 0;

	if (b->nwriters == 0)
		return true;
	cdc_start_catalog_transaction();
	for (int i = 0; i < b->nwriters; i++)
	{
		if (!VirtualXactLock(b->writers[i], false))
			b->writers[n++] = b->writers[i];
	}
	CommitTransactionCommand();
	b->nwriters = n;
	return n == 0;
}

/*
 * Lock the stream's table (and, for a partitioned one, every partition, as
 * the chunk's query will) in AccessShareLock before the chunk's snapshot
 * is taken: a rewrite (ALTER TABLE ... TYPE, VACUUM FULL) that committed
 * between a snapshot and the lock would leave the snapshot looking at new
 * storage whose rows it cannot see.  Returns a hash of the relfilenodes,
 * to tell that the storage changed since the previous chunk.
 */
static uint32
lock_stream_tables(CdcStream *s)
{
	List	   *rels;
	ListCell   *lc;
	uint32		h = 0;

	LockRelationOid(s->def->relid, AccessShareLock);
	if (s->partitioned)
		rels = find_all_inheritors(s->def->relid, AccessShareLock, NULL);
	else
		rels = list_make1_oid(s->def->relid);
	foreach(lc, rels)
	{
		HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(lfirst_oid(lc)));

		if (!HeapTupleIsValid(tup))
			continue;
		h = hash_combine(h, ((Form_pg_class) GETSTRUCT(tup))->relfilenode);
		ReleaseSysCache(tup);
	}
	list_free(rels);
	return h;
}

/*
 * The key's columns as the backfill reads them: "name/type/typmod/collation"
 * per column, comma-separated, prefixed "key:" (never a key value: it is
 * the trailing element of backfill_after).  In the caller's context.
 */
static char *
key_signature(Oid relid)
{
	List	   *key = stream_key(relid);
	ListCell   *lc;
	StringInfoData sig;

	initStringInfo(&sig);
	appendStringInfoString(&sig, "key:");
	foreach(lc, key)
	{
		const char *name = lfirst(lc);
		AttrNumber	attnum = get_attnum(relid, name);
		Oid			typid = InvalidOid;
		int32		typmod = -1;
		Oid			collid = InvalidOid;

		if (attnum != InvalidAttrNumber)
			get_atttypetypmodcoll(relid, attnum, &typid, &typmod, &collid);
		appendStringInfo(&sig, "%s%s/%u/%d/%u", foreach_current_index(lc) > 0 ? "," : "",
						 quote_identifier(name), typid, typmod, collid);
	}
	return sig.data;
}

/*
 * After the decoding context is open: start (or resume) the chunked
 * backfill of s.  A stream in state syncing with recorded progress and no
 * new request goes on after its last acknowledged chunk under the same
 * version; otherwise a new version starts here, its ACTIVATE_VERSION first
 * in the batch, and the stream's changes are sent from the slot's
 * confirmed position on (the bookmark).
 */
void
cdc_backfill_begin(CdcStream *s)
{
	CdcBackfill *b;
	bool		resume;
	List	   *key;
	ListCell   *lc;
	int			i = 0;
	EgressCatalogGuard guard;

	if (backfill_cxt == NULL)
		backfill_cxt = AllocSetContextCreate(TopMemoryContext, "pg_egress backfill",
											 ALLOCSET_DEFAULT_SIZES);
	if (session_nonce == 0)
	{
		/*
		 * Any role may write logical messages (pg_logical_emit_message):
		 * a watermark must not be guessable, or a forged H would let a chunk
		 * go out before its window closed.
		 */
		if (!pg_strong_random(&session_nonce, sizeof(session_nonce)))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate a random watermark nonce")));
		session_nonce |= 1;		/* never 0: 0 means not yet chosen */
		snprintf(chunk.nonce, sizeof(chunk.nonce), UINT64_FORMAT, session_nonce);
	}
	b = MemoryContextAllocZero(cdc->decodecxt, sizeof(CdcBackfill));
	b->cxt = cdc->decodecxt;
	b->chunk_rows = option_int(s->def, "chunk_rows", DEFAULT_CHUNK_ROWS);
	b->chunk_bytes = option_int(s->def, "chunk_bytes", 0);

	cdc_start_catalog_transaction();

	/*
	 * Transactions that wrote the table and are running now may have
	 * written their commit record before the stream's start (or before the
	 * table joined the publication): their changes are not sent, so no
	 * chunk may be read in a snapshot that does not show them yet.  Each
	 * holds RowExclusiveLock on the table (or the leaf partition it wrote)
	 * until after it left the proc array; the lock manager lists them, as
	 * CREATE INDEX CONCURRENTLY finds the writers it waits for.  One that
	 * takes the lock after this writes its commit record after the current
	 * WAL position, so it is decoded (and joins the straggler check).
	 * Transactions that did not write the table (other tables, other
	 * databases, readers) are never waited for.
	 */
	collect_writers(s, b);
	key = stream_key(s->def->relid);
	b->nkey = list_length(key);
	b->keycols = MemoryContextAllocZero(b->cxt, sizeof(char *) * Max(b->nkey, 1));
	foreach(lc, key)
		b->keycols[i++] = MemoryContextStrdup(b->cxt, lfirst(lc));
	if (b->nkey > 0)
	{
		b->storage = lock_stream_tables(s);
		b->keysig = MemoryContextStrdup(b->cxt, key_signature(s->def->relid));
	}
	if (b->nkey == 0)
	{
		Relation	rel = table_open(s->def->relid, AccessShareLock);
		double		tuples = rel->rd_rel->reltuples;
		BlockNumber pages = rel->rd_rel->relpages;
		double		per_block = (tuples > 0 && pages > 0) ? tuples / pages : 100.0;

		b->relfilenode = rel->rd_node.relNode;
		b->blocks_per_chunk = (BlockNumber) Max(1.0, Min((double) b->chunk_rows / per_block,
														 (double) MaxBlockNumber / 4));
		table_close(rel, AccessShareLock);
	}
	CommitTransactionCommand();

	/* keyed progress: the key's values, then the key's signature */
	resume = s->syncing && !s->resync && s->bf_nafter > 0 &&
		(b->nkey == 0 ? s->bf_nafter == 2 :
		 s->bf_nafter == b->nkey + 1 && strcmp(s->bf_after[b->nkey], b->keysig) == 0);
	if (!resume && b->nkey > 0 && s->syncing && !s->resync && s->bf_nafter > 0)
		ereport(LOG,
				(errmsg("pg_egress stream \"%s\": chunked backfill of %s starts over under a new version: its key changed since the progress was recorded",
						s->def->name, s->def->relation)));
	if (resume && b->nkey == 0)
	{
		uint32		blk = (uint32) strtoul(s->bf_after[0], NULL, 10);
		Oid			node = (Oid) strtoul(s->bf_after[1], NULL, 10);

		/* the table was rewritten meanwhile: its block ranges mean nothing */
		if (node != b->relfilenode)
			resume = false;
		b->next_block = blk;
	}
	if (resume)
	{
		if (b->nkey > 0)
			b->after = copy_texts(s->bf_after, b->nkey, b->cxt);
		b->chunks = s->bf_chunks;
		b->rows = s->bf_rows;
	}
	else
	{
		Oid			argtypes[4] = {INT4OID, INT8OID, LSNOID, JSONBOID};
		Datum		values[4];
		StringInfoData bm;

		s->version = egress_next_version(s->version);
		s->acked_version = s->version;
		s->bookmark = MyReplicationSlot->data.confirmed_flush;
		s->rows_sent = 0;
		s->batches_sent = 0;
		b->next_block = 0;
		initStringInfo(&bm);
		egress_singer_bookmark_log_based(&bm, s->bookmark, s->version);
		cdc_start_catalog_transaction();
		PushActiveSnapshot(GetTransactionSnapshot());
		egress_catalog_enter(&guard);
		values[0] = Int32GetDatum(s->def->id);
		values[1] = Int64GetDatum(s->version);
		values[2] = LSNGetDatum(s->bookmark);
		values[3] = DirectFunctionCall1(jsonb_in, CStringGetDatum(bm.data));
		egress_catalog_exec("UPDATE egress.stream_state SET state = 'syncing', resync = false, "
							"version = $2, confirmed_lsn = $3, bookmark = $4, "
							"rows_sent = 0, bytes_sent = 0, batches_sent = 0, "
							"backfill_after = NULL, backfill_chunks = 0, backfill_rows = 0, "
							"attempts = attempts OPERATOR(pg_catalog.+) 1, "
							"sync_started_at = pg_catalog.now(), sync_finished_at = NULL, "
							"updated_at = pg_catalog.now() "
							"WHERE stream_id OPERATOR(pg_catalog.=) $1",
							4, argtypes, values, NULL, false);
		egress_worker_catalog_end(&guard);
	}
	b->acked_after = copy_texts(b->after, b->nkey, b->cxt);
	b->acked_block = b->next_block;
	b->acked_chunks = b->chunks;
	b->acked_rows = b->rows;
	s->bf = b;
	s->needs_sync = false;
	s->st_stale = true;
	if (s->slot)
	{
		egress_set_phase(s->slot, "syncing");
		s->slot->confirmed_lsn = s->bookmark;
		s->slot->rows_sent = s->rows_sent;
		s->slot->batches_sent = s->batches_sent;
	}

	if (resume)
		ereport(LOG,
				(errmsg("pg_egress stream \"%s\": chunked backfill of %s resumed after chunk " INT64_FORMAT,
						s->def->name, s->def->relation, b->chunks)));
	else
	{
		ereport(LOG,
				(errmsg("pg_egress stream \"%s\": chunked backfill of %s started, version " INT64_FORMAT ", " INT64_FORMAT " rows per chunk%s",
						s->def->name, s->def->relation, s->version, b->chunk_rows,
						b->nkey == 0 ? " (block ranges: the table has no key)" : "")));
		/*
		 * The new version opens before its first change or row.  A batch
		 * opened here is named after the stream's start position (its
		 * first commit LSN), which no later batch precedes.
		 */
		if (!cdc->batch_open)
		{
			cdc->txn_commit = s->bookmark;
			cdc->txn_records = 0;
		}
		cdc_start_catalog_transaction();
		cdc_prepare_record(s);
		if (!cdc_pg_kinesis_format())
			egress_singer_activate_version(&cdc->buf, s->st, s->version);
		CommitTransactionCommand();
	}
}

/* ---- acknowledgements and the catalog ---------------------------------------- */

/* Were the rows of the last chunk sent acknowledged? */
static void
check_acked(CdcStream *s)
{
	CdcBackfill *b = s->bf;

	if (!b->sent_pending)
		return;
	if (cdc->batch_open && s->batches_sent <= b->sent_batches)
		return;
	b->sent_pending = false;
	free_texts(b->acked_after, b->nkey);
	b->acked_after = b->sent_after;
	b->sent_after = NULL;
	b->acked_block = b->sent_block;
	b->acked_chunks = b->sent_chunks;
	b->acked_rows = b->sent_rows;
	b->acked_final = b->sent_final;
	b->any_acked = true;
}

/* The chunk (or the final ACTIVATE_VERSION) just went into the batch. */
static void
note_sent(CdcStream *s, bool final)
{
	CdcBackfill *b = s->bf;

	check_acked(s);
	free_texts(b->sent_after, b->nkey);
	b->sent_after = copy_texts(b->after, b->nkey, b->cxt);
	b->sent_block = b->next_block;
	b->sent_chunks = b->chunks;
	b->sent_rows = b->rows;
	b->sent_final = final;
	b->sent_batches = s->batches_sent;
	b->sent_pending = true;
	/* the batch was cut with the last row: acknowledged already */
	if (!cdc->batch_open)
		check_acked(s);
}

/*
 * From cdc_persist_bookmarks, in its catalog transaction: record the
 * backfilling stream's bookmark with the progress acknowledged so far;
 * after the final ACTIVATE_VERSION was acknowledged, the stream is
 * streaming.  Returns false if s has no backfill (the caller records it).
 */
bool
cdc_backfill_persist(CdcStream *s)
{
	CdcBackfill *b = s->bf;
	Oid			argtypes[10] = {INT4OID, LSNOID, JSONBOID, INT8OID, INT8OID, INT8OID,
	TEXTARRAYOID, INT8OID, INT8OID, BOOLOID};
	Datum		values[10];
	char		nulls[10] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	StringInfoData bm;
	int			n;

	if (b == NULL)
		return false;
	n = b->nkey == 0 ? 2 : b->nkey;
	check_acked(s);
	initStringInfo(&bm);
	egress_singer_bookmark_log_based(&bm, s->bookmark, s->acked_version);
	values[0] = Int32GetDatum(s->def->id);
	values[1] = LSNGetDatum(s->bookmark);
	values[2] = DirectFunctionCall1(jsonb_in, CStringGetDatum(bm.data));
	values[3] = Int64GetDatum(s->acked_version);
	values[4] = Int64GetDatum(s->rows_sent);
	values[5] = Int64GetDatum(s->batches_sent);
	if (b->nkey == 0 && b->acked_chunks > 0)
	{
		Datum		elems[2];

		elems[0] = CStringGetTextDatum(psprintf("%u", b->acked_block));
		elems[1] = CStringGetTextDatum(psprintf("%u", b->relfilenode));
		values[6] = PointerGetDatum(construct_array(elems, 2, TEXTOID, -1, false, TYPALIGN_INT));
	}
	else if (b->nkey > 0 && b->acked_after != NULL)
	{
		Datum	   *elems = palloc(sizeof(Datum) * (n + 1));

		for (int i = 0; i < n; i++)
			elems[i] = CStringGetTextDatum(b->acked_after[i]);
		/* the key the values belong to (see CdcBackfill.keysig) */
		elems[n] = CStringGetTextDatum(b->keysig);
		values[6] = PointerGetDatum(construct_array(elems, n + 1, TEXTOID, -1, false, TYPALIGN_INT));
	}
	else
		nulls[6] = 'n';
	values[7] = Int64GetDatum(b->acked_chunks);
	values[8] = Int64GetDatum(b->acked_rows);
	values[9] = BoolGetDatum(b->acked_final);
	/*
	 * egress_streams' progress: rows acknowledged / the table's reltuples
	 * (read without a lock: this transaction must not wait for the table)
	 */
	if (s->slot && s->slot->run_started_at == 0)
		egress_progress_resume(s->slot, egress_relation_reltuples(s->def->relid),
							   b->acked_rows);
	egress_progress_rows(s->slot, b->acked_rows);
	if (b->acked_final)
		egress_progress_end(s->slot);

	/*
	 * Progress of a chunk that is not the last commits without waiting for
	 * its WAL flush (this transaction only): the next chunk's watermark,
	 * flushed before that chunk is sent, makes it durable.  A crash before
	 * then loses at most this record, and a resume re-reads the chunk it
	 * recorded, already sent: one chunk, as a crash between the chunk's
	 * acknowledgement and this commit re-reads anyway.  The end of the
	 * backfill (the state becomes streaming) is flushed as ever.
	 */
	if (!b->acked_final)
		(void) set_config_option("synchronous_commit", "off", PGC_SUSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
	if (egress_catalog_exec("UPDATE egress.stream_state SET confirmed_lsn = $2, bookmark = $3, "
							"version = $4, rows_sent = $5, batches_sent = $6, "
							"backfill_after = $7, backfill_chunks = $8, backfill_rows = $9, "
							"state = CASE WHEN $10 THEN 'streaming' ELSE state END, "
							"sync_finished_at = CASE WHEN $10 THEN pg_catalog.now() ELSE sync_finished_at END, "
							"last_error = NULL, last_error_at = NULL, attempts = 0, "
							"updated_at = pg_catalog.now() "
							"WHERE stream_id OPERATOR(pg_catalog.=) $1 "
							"AND state OPERATOR(pg_catalog.=) 'syncing' AND NOT resync",
							10, argtypes, values, nulls, false) == 0)
		cdc->catalog_moved = true;
	else if (b->acked_final)
	{
		ereport(LOG,
				(errmsg("pg_egress stream \"%s\": chunked backfill of %s finished, " INT64_FORMAT " rows in " INT64_FORMAT " chunks",
						s->def->name, s->def->relation, b->acked_rows, b->acked_chunks)));
		s->bf = NULL;
		if (s->slot)
			egress_set_phase(s->slot, "streaming");
	}
	return true;
}

/* ---- one chunk ------------------------------------------------------------- */

/*
 * A decoded transaction that changed a backfilling table and is still
 * running for snap, or InvalidTransactionId.  Those that precede snap's
 * xmin are finished for every later snapshot: forgotten.
 */
static TransactionId
straggler(Snapshot snap)
{
	List	   *keep = NIL;
	ListCell   *lc;
	TransactionId found = InvalidTransactionId;
	MemoryContext oldcxt = MemoryContextSwitchTo(backfill_cxt);

	foreach(lc, straggler_xids)
	{
		TransactionId xid = lfirst_oid(lc);

		if (TransactionIdPrecedes(xid, snap->xmin))
			continue;
		keep = lappend_oid(keep, xid);
		if (!TransactionIdIsValid(found) && XidInMVCCSnapshot(xid, snap))
			found = xid;
	}
	list_free(straggler_xids);
	straggler_xids = keep;
	MemoryContextSwitchTo(oldcxt);
	return found;
}

/* See ddl_watch: the table's definition changed while a chunk was out. */
static void
backfill_relcache_callback(Datum arg, Oid relid)
{
	if (!ddl_watch || chunk.s == NULL)
		return;
	if (!OidIsValid(relid) || relid == chunk.s->def->relid)
		ddl_seen = true;
}

/*
 * The table's columns (name, type, typmod of each live one) as the current
 * catalog has them, in the caller's context; NULL if it is gone.  In a
 * transaction.
 */
static char *
column_signature(Oid relid)
{
	Relation	rel = RelationIdGetRelation(relid);
	StringInfoData sig;
	TupleDesc	desc;

	if (!RelationIsValid(rel))
		return NULL;
	desc = RelationGetDescr(rel);
	initStringInfo(&sig);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped)
			continue;
		appendStringInfo(&sig, "%s/%u/%d,", quote_identifier(NameStr(att->attname)),
						 att->atttypid, att->atttypmod);
	}
	RelationClose(rel);
	return sig.data;
}

/*
 * The backfill waits for other transactions (what, for pg_stat_activity),
 * or no longer (NULL).
 */
static void
set_waiting(const char *what)
{
	static char reported[256];

	if (what != NULL)
	{
		wait_ms = waiting ? Min(wait_ms * 2, WAIT_MAX_MS) : WAIT_MIN_MS;
		if (!waiting || strcmp(what, reported) != 0)
		{
			strlcpy(reported, what, sizeof(reported));
			pgstat_report_activity(STATE_RUNNING, reported);
		}
		waiting = true;
	}
	else if (waiting)
	{
		waiting = false;
		wait_ms = WAIT_MIN_MS;
		reported[0] = '\0';
		pgstat_report_activity(STATE_RUNNING, "streaming changes");
	}
}

/* The main loop's wait: short while the backfill waits for others. */
long
cdc_backfill_timeout(long timeout)
{
	if (!waiting)
		return timeout;
	return Max(1, Min(timeout, wait_ms));
}

/*
 * L was decoded: read the chunk in a snapshot of its own (after the
 * straggler check), then write H.  The worker's xmin is held only here.
 */
static void
read_chunk(void)
{
	CdcStream  *s = chunk.s;
	CdcBackfill *b = s->bf;
	EgressChunkSpec spec;
	Snapshot	snap;
	bool		rewritten = false;
	uint32		storage;
	MemoryContext oldcxt;

	{
		TransactionId xid;
		char		what[256];

		cdc_start_catalog_transaction();
		XactIsoLevel = XACT_REPEATABLE_READ;
		storage = lock_stream_tables(s);	/* before the snapshot */
		snap = GetTransactionSnapshot();
		xid = straggler(snap);
		if (TransactionIdIsValid(xid))
		{
			/*
			 * Its change was sent before L but the snapshot does not show
			 * it: the chunk would send the older row after it.  Nothing is
			 * read; once it is gone from the proc array, a new L and a new
			 * snapshot.  The worker does not wait for it here: the other
			 * streams keep decoding meanwhile (cdc_backfill_step polls).
			 */
			AbortCurrentTransaction();
			ereport(DEBUG1,
					(errmsg_internal("pg_egress stream \"%s\": chunk waits for transaction %u, decoded but still running",
									 s->def->name, xid)));
			snprintf(what, sizeof(what),
					 "LOG_BASED backfill of %s: waiting for transaction %u (committed, still running)",
					 s->def->name, xid);
			set_waiting(what);
			chunk.straggler = xid;
			chunk.phase = CHUNK_STALLED;
			return;
		}
	}
	PushActiveSnapshot(snap);
	pgstat_report_activity(STATE_RUNNING, "LOG_BASED backfill chunk");
	if (!ddl_callback_registered)
	{
		CacheRegisterRelcacheCallback(backfill_relcache_callback, (Datum) 0);
		ddl_callback_registered = true;
	}
	ddl_watch = true;			/* until the chunk is sent (see ddl_watch) */
	ddl_seen = false;
	{
		char	   *sig = column_signature(s->def->relid);

		ddl_colsig = sig ? MemoryContextStrdup(chunk.cxt, sig) : NULL;
	}

	memset(&spec, 0, sizeof(spec));
	spec.nkey = b->nkey;
	spec.keycols = b->keycols;
	spec.after = b->after;
	spec.max_rows = b->chunk_rows;
	spec.max_bytes = b->chunk_bytes;
	spec.version = s->version;
	spec.lsn = s->bookmark;
	spec.row = buffer_row;
	spec.row_target = chunk_row_target;
	spec.key_datums = true;
	if (b->nkey == 0)
	{
		Relation	rel = table_open(s->def->relid, AccessShareLock);
		BlockNumber nblocks = RelationGetNumberOfBlocks(rel);

		rewritten = rel->rd_rel->relfilenode != b->relfilenode;
		table_close(rel, AccessShareLock);
		spec.blk_from = b->next_block;
		spec.blk_to = b->next_block + b->blocks_per_chunk;
		if (spec.blk_to < spec.blk_from)
			spec.blk_to = MaxBlockNumber;
		chunk.blk_to = spec.blk_to;
		chunk.end = spec.blk_to >= nblocks;
	}
	if (b->nkey > 0)
	{
		/* after the lock: the key this backfill reads by is still the key */
		char	   *sig = key_signature(s->def->relid);

		if (strcmp(sig, b->keysig) != 0)
		{
			ereport(LOG,
					(errmsg("pg_egress stream \"%s\": chunked backfill of %s starts over under a new version: its key changed (%s, was %s)",
							s->def->name, s->def->relation, sig, b->keysig)));
			b->restart = true;
		}
	}
	if (rewritten)
		b->give_up = true;
	else if (b->restart)
		;						/* cdc_backfill_step starts it over */
	else
	{
		cdc_syncing_stream = s->def->id;
		oldcxt = MemoryContextSwitchTo(chunk.cxt);
		egress_snapshot_read_chunk(s->def, cdc->sink, &spec);
		MemoryContextSwitchTo(oldcxt);
		cdc_syncing_stream = 0;
		chunk.keyout = spec.keyout;	/* in chunk.cxt */
		if (b->nkey > 0)
		{
			chunk.end = spec.end;
			chunk.last = spec.last;

			/*
			 * Nothing read from storage that changed since the previous
			 * chunk: not the end of the table; read the chunk again.
			 */
			if (spec.rows == 0 && storage != b->storage)
			{
				chunk.end = false;
				chunk.retry = true;
			}
			b->storage = storage;
		}
	}
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_RUNNING, "streaming changes");

	chunk.hmsg = MemoryContextStrdup(chunk.cxt, watermark_content('H'));
	write_watermark(chunk.hmsg);
	chunk.phase = CHUNK_WAIT_H;
}

/* Append one buffered row to the open batch. */
static void
send_row(CdcStream *s, const char *data, int len, const char *partkey)
{
	cdc_prepare_record(s);
	if (partkey != NULL)
	{
		/* Kinesis: what precedes (a SCHEMA) as lines, the row as a record */
		if (cdc->buf.len > 0)
		{
			cdc->sink->ops->write(cdc->sink, cdc->buf.data, cdc->buf.len);
			cdc->batch_bytes += cdc->buf.len;
			resetStringInfo(&cdc->buf);
		}
		cdc->sink->ops->write_record(cdc->sink, data, len, partkey);
		cdc->batch_bytes += len;
	}
	else
		appendBinaryStringInfo(&cdc->buf, data, len);
	s->rows_sent++;
	cdc_after_record();
}

/*
 * A run of Singer lines of the arena, back to back, goes into the open batch
 * with one write (the batch was opened and its SCHEMA put into cdc->buf by
 * cdc_prepare_record): the rows count as cdc_after_record counts them one by
 * one, and the batch is cut where cdc_after_record would have cut it.
 */
#define RUN_PIECE	((Size) 256 * 1024)

static void
flush_run(CdcStream *s, Size from, Size len, int64 nrows)
{
	if (nrows == 0)
		return;
	if (cdc->buf.len > 0)
	{
		cdc->sink->ops->write(cdc->sink, cdc->buf.data, cdc->buf.len);
		cdc->batch_bytes += cdc->buf.len;
		resetStringInfo(&cdc->buf);
	}
	/*
	 * In pieces of the size the batch buffer is handed over in: one huge
	 * write() of a cold arena costs the kernel far more than several
	 * smaller ones.
	 */
	for (Size off = 0; off < len; off += RUN_PIECE)
		cdc->sink->ops->write(cdc->sink, arena.data + from + off, Min(RUN_PIECE, len - off));
	cdc->batch_bytes += len;
	cdc->batch_rows += nrows;
	cdc->txn_records += nrows;
	cdc->batch_last_commit = cdc->txn_commit;
	s->rows_sent += nrows;
	if (cdc->batch_rows >= cdc->max_rows ||
		cdc->batch_bytes + cdc->buf.len >= cdc->max_bytes)
		cdc_commit_batch();
}

/*
 * The chunk's rows held in memory whose keys did not change in the window
 * go into the batch; returns how many.  Singer lines go in runs
 * (flush_run); Kinesis records, and every row while deferred records wait
 * to be resolved (their output is held back), one by one (send_row).
 */
static int64
emit_mem_rows(CdcStream *s)
{
	bool		check = hash_get_num_entries(chunk.dirty) > 0;
	int64		sent = 0;
	Size		from = 0;
	Size		len = 0;
	int64		nrows = 0;

	for (int64 i = 0; i < chunk.mem_rows; i++)
	{
		ChunkRow   *cr = &rowidx[i];

		if ((i & 1023) == 0)
			CHECK_FOR_INTERRUPTS();
		if (check && row_key_dirty(keyarena.data + cr->key, cr->keylen))
		{
			flush_run(s, from, len, nrows);
			nrows = 0;
			continue;
		}
		sent++;
		if (cr->pklen >= 0 || cdc->pending != NIL)
		{
			flush_run(s, from, len, nrows);
			nrows = 0;
			send_row(s, arena.data + cr->row, cr->len,
					 cr->pklen >= 0 ? keyarena.data + cr->key + cr->keylen + 1 : NULL);
			continue;
		}
		if (nrows == 0)
		{
			/* a run starts: the batch is open, its counters current */
			cdc_prepare_record(s);
			from = cr->row;
			len = 0;
		}
		Assert(from + len == cr->row);
		len += cr->len;
		nrows++;
		if (cdc->batch_rows + nrows >= cdc->max_rows ||
			cdc->batch_bytes + cdc->buf.len + len >= cdc->max_bytes)
		{
			flush_run(s, from, len, nrows);
			nrows = 0;
		}
	}
	flush_run(s, from, len, nrows);
	return sent;
}

/*
 * H was decoded (nothing after it yet): the chunk's rows whose keys did not
 * change in the window go into the batch, at this position.
 */
static void
emit_chunk(void)
{
	CdcStream  *s = chunk.s;
	CdcBackfill *b = s->bf;
	int64		sent = 0;
	MemoryContext rowcxt;
	MemoryContext oldcxt;

	ddl_watch = false;
	if (b->give_up || b->restart)
		return;					/* cdc_backfill_step gives it up */
	if (ddl_seen && ddl_colsig != NULL && !chunk.retry)
	{
		char	   *sig;

		/* the table's definition may have changed since the read */
		cdc_start_catalog_transaction();
		sig = column_signature(s->def->relid);
		if (sig != NULL && strcmp(sig, ddl_colsig) != 0)
			chunk.retry = true;
		CommitTransactionCommand();
		ddl_seen = false;
	}
	if (chunk.retry)
	{
		/*
		 * A change whose key was not in the WAL, or the table's definition
		 * changed since the read: read the chunk again.
		 */
		ereport(DEBUG1,
				(errmsg_internal("pg_egress stream \"%s\": chunk " INT64_FORMAT " is read again",
								 s->def->name, chunk.chunk_no)));
		chunk.phase = CHUNK_NEED_L;
		return;
	}

	/*
	 * Rows of the same version and order as the chunk's, as if they had
	 * come with the change just before H: a distinct ordinal range keeps
	 * the ids of batches that start with them apart from those of changes.
	 */
	cdc->txn_records = Max(cdc->txn_records,
						   1000000000 + (int) (chunk.chunk_no % 1000000000));
	cdc_start_catalog_transaction();
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "pg_egress backfill row",
								   ALLOCSET_SMALL_SIZES);
	if (!chunk.truncated)
	{
		sent = emit_mem_rows(s);
		if (chunk.file != NULL)
		{
			if (BufFileSeek(chunk.file, 0, 0, SEEK_SET) != 0)
				ereport(ERROR,
						(errcode_for_file_access(),
						 errmsg("could not seek in a temporary file of a backfill chunk")));
			for (int64 i = 0; i < chunk.file_rows; i++)
			{
				char	   *key;
				char	   *data;
				char	   *partkey;
				int			keylen;
				int			len;

				CHECK_FOR_INTERRUPTS();
				MemoryContextReset(rowcxt);
				oldcxt = MemoryContextSwitchTo(rowcxt);
				key = file_read_str(&keylen);
				data = file_read_str(&len);
				partkey = file_read_str(NULL);
				if (row_key_dirty(key, keylen))
				{
					MemoryContextSwitchTo(oldcxt);
					continue;
				}
				MemoryContextSwitchTo(oldcxt);
				send_row(s, data, len, partkey);
				sent++;
			}
		}
	}

	/* the chunk is read: the next one starts after it */
	b->chunks++;
	b->rows += sent;
	if (b->nkey == 0)
		b->next_block = chunk.blk_to;
	else if (chunk.last != NULL)
	{
		free_texts(b->after, b->nkey);
		b->after = copy_texts(chunk.last, b->nkey, b->cxt);
	}
	ereport(DEBUG1,
			(errmsg_internal("pg_egress stream \"%s\": chunked backfill of %s: chunk " INT64_FORMAT ", " INT64_FORMAT " rows read, " INT64_FORMAT " sent",
							 s->def->name, s->def->relation, chunk.chunk_no,
							 chunk.nread, sent)));
	if (chunk.end)
	{
		/* the last chunk: the version is complete */
		cdc_prepare_record(s);
		if (!cdc_pg_kinesis_format())
			egress_singer_activate_version(&cdc->buf, s->st, s->version);
		b->read_all = true;
	}
	CommitTransactionCommand();

	/*
	 * The batch goes now, not at the flush interval: the chunk's progress is
	 * recorded once it is acknowledged (a crash re-reads one chunk at most),
	 * and the last chunk's ACTIVATE_VERSION ends the sync at once.
	 */
	cdc_commit_batch();
	note_sent(s, chunk.end);
	chunk_reset();
	if (chunk.end)
	{
		chunk.phase = CHUNK_NONE;
		chunk.s = NULL;
	}
	else
	{
		/*
		 * H of this chunk is the next chunk's L: every commit before it has
		 * been decoded, and the next window starts here.  One watermark
		 * per chunk.
		 */
		chunk.chunk_no = b->chunks + 1;
		chunk.phase = CHUNK_READ;
	}
}

/* After a round, pending rows resolved: send the chunk if H came. */
void
cdc_backfill_after_round(void)
{
	if (chunk.s != NULL && chunk.phase == CHUNK_EMIT)
		emit_chunk();
}

/*
 * A table without a key changed (or was rewritten) during its backfill:
 * the stream is synced again in one snapshot (0.1's initial sync), which a
 * new session does; backfill_after '{}' says so until it is done.
 */
static void
give_up(CdcStream *s)
{
	EgressCatalogGuard guard;
	Oid			argtypes[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(s->def->id)};

	ereport(LOG,
			(errmsg("pg_egress stream \"%s\": chunked backfill of %s given up: the table, which has no key, changed during the backfill; it is synchronized again in one snapshot",
					s->def->name, s->def->relation)));
	cdc_start_catalog_transaction();
	PushActiveSnapshot(GetTransactionSnapshot());
	egress_catalog_enter(&guard);
	egress_catalog_exec("UPDATE egress.stream_state SET backfill_after = '{}', resync = true, "
						"state = 'pending', updated_at = pg_catalog.now() "
						"WHERE stream_id OPERATOR(pg_catalog.=) $1",
						1, argtypes, values, NULL, false);
	egress_worker_catalog_end(&guard);
	s->bf = NULL;
	s->needs_sync = true;		/* nothing of it is recorded meanwhile */
	if (chunk.s == s)
	{
		chunk.s = NULL;
		chunk.phase = CHUNK_NONE;
		chunk_reset();
	}
	cdc->catalog_moved = true;	/* the session starts over */
}

/*
 * The key of a keyed table changed during its backfill: its progress means
 * nothing for the new key.  The backfill starts over from the beginning
 * under a new version, as a resync does, in a new session.
 */
static void
start_over(CdcStream *s)
{
	EgressCatalogGuard guard;
	Oid			argtypes[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(s->def->id)};

	cdc_start_catalog_transaction();
	PushActiveSnapshot(GetTransactionSnapshot());
	egress_catalog_enter(&guard);
	egress_catalog_exec("UPDATE egress.stream_state SET backfill_after = NULL, resync = true, "
						"state = 'pending', updated_at = pg_catalog.now() "
						"WHERE stream_id OPERATOR(pg_catalog.=) $1",
						1, argtypes, values, NULL, false);
	egress_worker_catalog_end(&guard);
	s->bf = NULL;
	s->needs_sync = true;
	if (chunk.s == s)
	{
		chunk.s = NULL;
		chunk.phase = CHUNK_NONE;
		chunk_reset();
	}
	cdc->catalog_moved = true;	/* the session starts over */
}

/*
 * Between rounds: move the backfill on.  Writing a watermark flushes WAL,
 * so the main loop decodes again at once; waiting for one is the normal
 * wait for WAL (the latch), never a loop of its own.
 */
void
cdc_backfill_step(void)
{
	for (int i = 0; i < cdc->nstreams; i++)
	{
		CdcStream  *s = &cdc->streams[i];

		if (s->bf == NULL)
			continue;
		if (s->bf->give_up && s->stop == CDC_STOP_NONE)
		{
			give_up(s);
			return;
		}
		if (s->bf->restart && s->stop == CDC_STOP_NONE)
		{
			start_over(s);
			return;
		}
		check_acked(s);
	}
	if (chunk.s != NULL && (chunk.s->bf == NULL || chunk.s->stop != CDC_STOP_NONE))
	{
		chunk.s = NULL;
		chunk.phase = CHUNK_NONE;
	}
	if (chunk.s == NULL)
	{
		CdcStream  *blocked = NULL;

		/*
		 * The next stream to read: one whose table's writers of its start
		 * have all ended (those still running hold only their own stream
		 * back).
		 */
		for (int i = 0; i < cdc->nstreams && chunk.s == NULL; i++)
		{
			CdcStream  *s = &cdc->streams[i];

			if (s->bf != NULL && !s->bf->read_all && s->stop == CDC_STOP_NONE)
			{
				if (!writers_done(s))
				{
					if (blocked == NULL)
						blocked = s;
					continue;
				}
				chunk_reset();
				chunk.s = s;
				chunk.phase = CHUNK_NEED_L;
			}
		}
		if (chunk.s == NULL)
		{
			if (blocked != NULL)
			{
				char		what[256];

				snprintf(what, sizeof(what),
						 "LOG_BASED backfill of %s: waiting for %d transactions writing %s",
						 blocked->def->name, blocked->bf->nwriters, blocked->def->relation);
				set_waiting(what);
			}
			else
				set_waiting(NULL);
			return;
		}
	}
	if (chunk.phase == CHUNK_STALLED)
	{
		if (TransactionIdIsInProgress(chunk.straggler))
		{
			char		what[256];

			snprintf(what, sizeof(what),
					 "LOG_BASED backfill of %s: waiting for transaction %u (committed, still running)",
					 chunk.s->def->name, chunk.straggler);
			set_waiting(what);
			return;
		}
		chunk.phase = CHUNK_NEED_L;
	}
	set_waiting(NULL);
	switch (chunk.phase)
	{
		case CHUNK_NEED_L:
			chunk_reset();
			chunk.chunk_no = chunk.s->bf->chunks + 1;
			chunk.lmsg = MemoryContextStrdup(chunk.cxt, watermark_content('L'));
			chunk.phase = CHUNK_WAIT_L;
			write_watermark(chunk.lmsg);
			break;
		case CHUNK_READ:
			read_chunk();
			break;
		case CHUNK_EMIT:
			emit_chunk();
			break;
		default:
			break;
	}
}

/* A session ends (or failed): no chunk is in flight any more. */
void
cdc_backfill_reset(void)
{
	waiting = false;
	wait_ms = WAIT_MIN_MS;
	chunk.s = NULL;
	chunk.phase = CHUNK_NONE;
	chunk.break_round = false;
	if (chunk.cxt != NULL)
	{
		MemoryContextReset(chunk.cxt);	/* closes the file */
		chunk.file = NULL;
		chunk.dirty = NULL;
	}
	if (backfill_cxt != NULL)
	{
		straggler_xids = NIL;
		arena.data = NULL;		/* in backfill_cxt */
		keyarena.data = NULL;
		rowidx = NULL;
		rowidx_size = 0;
		chunk.mem_rows = 0;
		MemoryContextReset(backfill_cxt);
		chunk.cxt = NULL;		/* was a child */
	}
	/* a new nonce: an earlier session's watermarks are not ours */
	session_nonce++;
	snprintf(chunk.nonce, sizeof(chunk.nonce), UINT64_FORMAT, session_nonce);
}
