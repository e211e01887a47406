/*-------------------------------------------------------------------------
 * pgoutput.h
 *	  Read the messages of core's pgoutput plugin (logical replication
 *	  protocol, replication/logicalproto.h) into EgressChanges.
 *
 * The CDC worker runs pgoutput in-process, as the walsender would for a
 * subscriber, and gets one protocol message per write callback.  RELATION
 * messages keep a map from relation OID to column names and replica
 * identity here; they precede a relation's first change in a decoding
 * session and follow every schema change.  Values come in text format,
 * printed by the output functions in the worker's own session (see
 * egress_pin_output_settings).
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_DECODE_PGOUTPUT_H
#define EGRESS_DECODE_PGOUTPUT_H

#include "nodes/pg_list.h"

#include "decode/change.h"

struct LogicalDecodingContext;

/*
 * The options pg_egress decodes with, as a List of DefElem for
 * CreateDecodingContext: protocol version 1, publication, messages on,
 * text values.
 */
extern List *egress_pgoutput_options(const char *publication);

/*
 * Call once on a decoding context of pgoutput, after CreateDecodingContext
 * and before decoding: wraps pgoutput's begin callback to note each
 * transaction's end LSN (the reorder buffer knows it before replaying), so
 * that a BEGIN comes back as wal2json's B does: lsn = the commit record's
 * start (final_lsn), nextlsn = its end.  Without it, nextlsn of a BEGIN is
 * InvalidXLogRecPtr (COMMIT always has both).
 *
 * Note for the worker: pgoutput sends neither BEGIN nor COMMIT for a
 * transaction with nothing published (wal2json sends B and C for every
 * one).  It calls the update_progress callback of the context instead
 * (OutputPluginUpdateProgress(ctx, skipped_xact = true) at the commit, with
 * lsn = the transaction's end), which is where the worker learns that such
 * a transaction is done.
 */
extern void egress_pgoutput_attach(struct LogicalDecodingContext *ctx);

/*
 * Parse one message of len bytes into *change; everything is allocated in
 * CurrentMemoryContext except the relation map (see below): the change
 * holds copies of the names, and values point into palloc'd copies.
 * B: lsn = final_lsn (start of the commit record), nextlsn = its end (see
 * egress_pgoutput_attach), timestamp, xid; C: lsn = commit LSN, nextlsn =
 * end of the commit record, timestamp.  I/U/D: relid, schema, table;
 * columns ('n' null, 'u' unchanged, 't' text with raw_text; 'b' is an
 * ERROR, text is asked for); identity of U/D from the old key ('K': the
 * replica identity columns only) or old row ('O': all columns).  T: nrelids
 * and relids.  M: lsn, transactional, prefix, content (NUL-terminated),
 * content_len.  RELATION
 * messages update the map and come back as EGRESS_CHANGE_RELATION;
 * messages the worker has no use for (TYPE, ORIGIN) as EGRESS_CHANGE_OTHER.
 * A change of a relation whose RELATION message was not seen, or an unknown
 * message type, is an ERROR.
 */
extern void egress_pgoutput_parse(const char *data, int len,
								  EgressChange *change);

/*
 * Forget every relation: at the start of each decoding session (pgoutput
 * sends RELATION again in a new one).  The map lives in a context of its
 * own under TopMemoryContext, reset here: it does not grow across sessions.
 */
extern void egress_pgoutput_reset(void);

#endif							/* EGRESS_DECODE_PGOUTPUT_H */
