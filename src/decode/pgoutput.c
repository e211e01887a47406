/*-------------------------------------------------------------------------
 * pgoutput.c
 *	  Read the messages of core's pgoutput plugin into EgressChanges.
 *
 * The messages are read with the backend's own reader of the logical
 * replication protocol (replication/logicalproto.h), as the apply worker
 * does, except MESSAGE, which the backend only writes: it is read here in
 * the order logicalrep_write_message writes it.
 *
 * pgoutput refers to a relation by OID only; its RELATION message, sent
 * before the relation's first change of a decoding session and again after
 * each change of its schema, gives the names.  They are kept in a map from
 * OID to the relation's description, in a memory context of its own under
 * TopMemoryContext.  Each entry has a small context of its own, reset when
 * the relation's RELATION message comes again: the map does not grow when
 * the same relation is described after every DDL, only with the number of
 * relations seen in the session.
 *
 * LSNs.  wal2json's B carries the commit record's start ("lsn") and end
 * ("nextlsn"); the worker takes a transaction's end from its BEGIN, since
 * it compares it with the streams' bookmarks for every change.  pgoutput's
 * BEGIN has only the commit record's start (final_lsn); the end is in
 * COMMIT.  The reorder buffer knows both before it replays a transaction,
 * so egress_pgoutput_attach wraps pgoutput's begin callback to note the
 * transaction's end, and a BEGIN of that transaction gets it as nextlsn.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "libpq/pqformat.h"
#include "nodes/makefuncs.h"
#include "nodes/value.h"
#include "replication/logical.h"
#include "replication/logicalproto.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "decode/pgoutput.h"

/* the flag of a transactional MESSAGE (proto.c's MESSAGE_TRANSACTIONAL) */
#define PGO_MESSAGE_TRANSACTIONAL	(1 << 0)

/* One relation of the map: the description of its last RELATION message */
typedef struct PgoRelation
{
	Oid			relid;			/* hash key */
	bool		valid;			/* rel is filled */
	MemoryContext cxt;			/* holds rel's names and arrays */
	LogicalRepRelation rel;
} PgoRelation;

static MemoryContext map_cxt = NULL;
static HTAB *relation_map = NULL;

/* pgoutput's own begin callback, and the transaction it was last called for */
static LogicalDecodeBeginCB pgoutput_begin_cb = NULL;
static XLogRecPtr begin_final_lsn = InvalidXLogRecPtr;
static XLogRecPtr begin_end_lsn = InvalidXLogRecPtr;

List *
egress_pgoutput_options(const char *publication)
{
	List	   *options = NIL;

	/*
	 * pgoutput splits publication_names with SplitIdentifierString: the one
	 * name is a list element, quoted as an identifier.
	 */
	options = lappend(options,
					  makeDefElem("proto_version", (Node *) makeString(pstrdup("1")), -1));
	options = lappend(options,
					  makeDefElem("publication_names",
								  (Node *) makeString(pstrdup(quote_identifier(publication))),
								  -1));
	options = lappend(options,
					  makeDefElem("messages", (Node *) makeString(pstrdup("true")), -1));
	options = lappend(options,
					  makeDefElem("binary", (Node *) makeString(pstrdup("false")), -1));
	return options;
}

/*
 * Note the end of the transaction pgoutput starts, then let pgoutput do its
 * part.  Called by the reorder buffer before any change of txn is replayed;
 * pgoutput sends BEGIN later, with the transaction's first change that is
 * published.
 */
static void
egress_begin_cb(LogicalDecodingContext *ctx, ReorderBufferTXN *txn)
{
	begin_final_lsn = txn->final_lsn;
	begin_end_lsn = txn->end_lsn;
	pgoutput_begin_cb(ctx, txn);
}

void
egress_pgoutput_attach(LogicalDecodingContext *ctx)
{
	begin_final_lsn = InvalidXLogRecPtr;
	begin_end_lsn = InvalidXLogRecPtr;
	if (ctx->callbacks.begin_cb == egress_begin_cb)
		return;
	pgoutput_begin_cb = ctx->callbacks.begin_cb;
	ctx->callbacks.begin_cb = egress_begin_cb;
}

void
egress_pgoutput_reset(void)
{
	if (map_cxt == NULL)
		map_cxt = AllocSetContextCreate(TopMemoryContext,
										"pg_egress pgoutput relations",
										ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(map_cxt);	/* the hash and every entry's context */
	relation_map = NULL;
	begin_final_lsn = InvalidXLogRecPtr;
	begin_end_lsn = InvalidXLogRecPtr;
}

static HTAB *
get_relation_map(void)
{
	HASHCTL		ctl;

	if (relation_map != NULL)
		return relation_map;
	if (map_cxt == NULL)
		egress_pgoutput_reset();
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(PgoRelation);
	ctl.hcxt = map_cxt;
	relation_map = hash_create("pg_egress pgoutput relations", 64, &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	return relation_map;
}

/*
 * Keep the description read from a RELATION message (allocated in the
 * caller's context) in the map, replacing the relation's previous one.
 */
static void
remember_relation(LogicalRepRelation *rel)
{
	PgoRelation *entry;
	bool		found;
	MemoryContext oldcxt;
	int			i;

	entry = hash_search(get_relation_map(), &rel->remoteid, HASH_ENTER, &found);
	if (!found)
	{
		entry->valid = false;
		entry->cxt = NULL;
		entry->cxt = AllocSetContextCreate(map_cxt,
										   "pg_egress pgoutput relation",
										   ALLOCSET_SMALL_SIZES);
	}
	entry->valid = false;
	MemoryContextReset(entry->cxt);

	oldcxt = MemoryContextSwitchTo(entry->cxt);
	entry->rel.remoteid = rel->remoteid;
	entry->rel.nspname = pstrdup(rel->nspname);
	entry->rel.relname = pstrdup(rel->relname);
	entry->rel.natts = rel->natts;
	entry->rel.attnames = palloc(Max(rel->natts, 1) * sizeof(char *));
	entry->rel.atttyps = palloc(Max(rel->natts, 1) * sizeof(Oid));
	for (i = 0; i < rel->natts; i++)
	{
		entry->rel.attnames[i] = pstrdup(rel->attnames[i]);
		entry->rel.atttyps[i] = rel->atttyps[i];
	}
	entry->rel.replident = rel->replident;
	entry->rel.relkind = rel->relkind;
	entry->rel.attkeys = bms_copy(rel->attkeys);
	MemoryContextSwitchTo(oldcxt);
	entry->valid = true;
}

static LogicalRepRelation *
lookup_relation(LogicalRepRelId relid)
{
	PgoRelation *entry = NULL;

	if (relation_map != NULL)
		entry = hash_search(relation_map, &relid, HASH_FIND, NULL);
	if (entry == NULL || !entry->valid)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("pgoutput sent a change of relation %u before its RELATION message",
						relid)));
	return &entry->rel;
}

/*
 * The columns of a tuple of rel as EgressChangeColumns: all of them, or
 * with keys_only (an old key, pgoutput's 'K') the replica identity columns
 * only (the others are sent as nulls).
 */
static void
tuple_columns(LogicalRepRelation *rel, LogicalRepTupleData *tuple,
			  bool keys_only, EgressChangeColumn **columns, int *ncolumns)
{
	EgressChangeColumn *cols;
	int			n = 0;
	int			i;

	if (tuple->ncols != rel->natts)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("pgoutput sent %d columns of relation %u, its RELATION message had %d",
						tuple->ncols, rel->remoteid, rel->natts)));

	cols = palloc0(Max(tuple->ncols, 1) * sizeof(EgressChangeColumn));
	for (i = 0; i < tuple->ncols; i++)
	{
		EgressChangeColumn *col;

		if (keys_only && !bms_is_member(i, rel->attkeys))
			continue;
		col = &cols[n++];
		col->name = pstrdup(rel->attnames[i]);
		col->raw_text = true;	/* a value is never in wal2json's form */
		switch (tuple->colstatus[i])
		{
			case LOGICALREP_COLUMN_NULL:
				col->isnull = true;
				break;
			case LOGICALREP_COLUMN_UNCHANGED:
				col->unchanged = true;
				break;
			case LOGICALREP_COLUMN_TEXT:
				/* logicalrep_read_tuple made it NUL-terminated */
				col->value = tuple->colvalues[i].data;
				break;
			default:
				/* binary 'false' is asked for: 'b' is a protocol error */
				ereport(ERROR,
						(errcode(ERRCODE_PROTOCOL_VIOLATION),
						 errmsg("pgoutput sent column \"%s\" of relation %u in representation '%c'",
								rel->attnames[i], rel->remoteid,
								tuple->colstatus[i]),
						 errdetail("Only text values were asked for.")));
		}
	}
	*columns = cols;
	*ncolumns = n;
}

static void
set_relation(EgressChange *change, LogicalRepRelation *rel)
{
	change->relid = rel->remoteid;
	change->schema = pstrdup(rel->nspname);
	change->table = pstrdup(rel->relname);
}

void
egress_pgoutput_parse(const char *data, int len, EgressChange *change)
{
	StringInfoData in;
	char		action;

	memset(change, 0, sizeof(EgressChange));
	change->lsn = InvalidXLogRecPtr;
	change->nextlsn = InvalidXLogRecPtr;
	change->xid = InvalidTransactionId;
	change->relid = InvalidOid;

	/* read-only view of the message: the pq_getmsg* readers do not write */
	in.data = unconstify(char *, data);
	in.len = len;
	in.maxlen = len;
	in.cursor = 0;

	action = pq_getmsgbyte(&in);
	switch (action)
	{
		case LOGICAL_REP_MSG_BEGIN:
			{
				LogicalRepBeginData begin;

				logicalrep_read_begin(&in, &begin);
				change->action = EGRESS_CHANGE_BEGIN;
				change->lsn = begin.final_lsn;
				if (begin.final_lsn == begin_final_lsn)
					change->nextlsn = begin_end_lsn;
				change->timestamp = begin.committime;
				change->has_timestamp = true;
				change->xid = begin.xid;
				break;
			}
		case LOGICAL_REP_MSG_COMMIT:
			{
				LogicalRepCommitData commit;

				logicalrep_read_commit(&in, &commit);
				change->action = EGRESS_CHANGE_COMMIT;
				change->lsn = commit.commit_lsn;
				change->nextlsn = commit.end_lsn;
				change->timestamp = commit.committime;
				change->has_timestamp = true;
				break;
			}
		case LOGICAL_REP_MSG_INSERT:
			{
				LogicalRepTupleData newtup;
				LogicalRepRelId relid;
				LogicalRepRelation *rel;

				relid = logicalrep_read_insert(&in, &newtup);
				rel = lookup_relation(relid);
				change->action = EGRESS_CHANGE_INSERT;
				set_relation(change, rel);
				tuple_columns(rel, &newtup, false,
							  &change->columns, &change->ncolumns);
				break;
			}
		case LOGICAL_REP_MSG_UPDATE:
			{
				LogicalRepTupleData oldtup;
				LogicalRepTupleData newtup;
				bool		has_oldtuple;
				char		oldkind;
				LogicalRepRelId relid;
				LogicalRepRelation *rel;

				/* 'K' (old key) or 'O' (old row) follows the relation's OID */
				oldkind = (len > 5) ? data[5] : '\0';
				relid = logicalrep_read_update(&in, &has_oldtuple, &oldtup,
											   &newtup);
				rel = lookup_relation(relid);
				change->action = EGRESS_CHANGE_UPDATE;
				set_relation(change, rel);
				if (has_oldtuple)
					tuple_columns(rel, &oldtup, oldkind == 'K',
								  &change->identity, &change->nidentity);
				tuple_columns(rel, &newtup, false,
							  &change->columns, &change->ncolumns);
				break;
			}
		case LOGICAL_REP_MSG_DELETE:
			{
				LogicalRepTupleData oldtup;
				char		oldkind;
				LogicalRepRelId relid;
				LogicalRepRelation *rel;

				oldkind = (len > 5) ? data[5] : '\0';
				relid = logicalrep_read_delete(&in, &oldtup);
				rel = lookup_relation(relid);
				change->action = EGRESS_CHANGE_DELETE;
				set_relation(change, rel);
				tuple_columns(rel, &oldtup, oldkind == 'K',
							  &change->identity, &change->nidentity);
				break;
			}
		case LOGICAL_REP_MSG_TRUNCATE:
			{
				bool		cascade;
				bool		restart_seqs;
				List	   *relids;
				ListCell   *lc;
				int			i = 0;

				relids = logicalrep_read_truncate(&in, &cascade, &restart_seqs);
				change->action = EGRESS_CHANGE_TRUNCATE;
				change->nrelids = list_length(relids);
				change->relids = palloc(Max(change->nrelids, 1) * sizeof(Oid));
				foreach(lc, relids)
					change->relids[i++] = lfirst_oid(lc);
				list_free(relids);
				break;
			}
		case LOGICAL_REP_MSG_RELATION:
			{
				LogicalRepRelation *rel;

				rel = logicalrep_read_rel(&in);
				remember_relation(rel);
				change->action = EGRESS_CHANGE_RELATION;
				change->relid = rel->remoteid;
				break;
			}
		case LOGICAL_REP_MSG_MESSAGE:
			{
				/* as logicalrep_write_message writes it, with no xid (proto 1) */
				uint8		flags;
				Size		sz;
				const char *content;

				flags = pq_getmsgbyte(&in);
				change->action = EGRESS_CHANGE_MESSAGE;
				change->transactional = (flags & PGO_MESSAGE_TRANSACTIONAL) != 0;
				change->lsn = pq_getmsgint64(&in);
				change->prefix = pstrdup(pq_getmsgstring(&in));
				sz = pq_getmsgint(&in, 4);
				content = pq_getmsgbytes(&in, sz);
				change->content = palloc(sz + 1);
				memcpy(change->content, content, sz);
				change->content[sz] = '\0';
				change->content_len = sz;
				break;
			}
		case LOGICAL_REP_MSG_TYPE:
			{
				LogicalRepTyp typ;

				logicalrep_read_typ(&in, &typ);
				change->action = EGRESS_CHANGE_OTHER;
				break;
			}
		case LOGICAL_REP_MSG_ORIGIN:
			{
				XLogRecPtr	origin_lsn;

				(void) logicalrep_read_origin(&in, &origin_lsn);
				change->action = EGRESS_CHANGE_OTHER;
				break;
			}
		default:
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("pgoutput sent a message of unexpected type '%c'",
							action)));
	}
	pq_getmsgend(&in);
}
