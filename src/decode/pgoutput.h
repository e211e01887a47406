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

/*
 * The options pg_egress decodes with, as a List of DefElem for
 * CreateDecodingContext: protocol version 1, publication, messages on,
 * text values.
 */
extern List *egress_pgoutput_options(const char *publication);

/*
 * Parse one message of len bytes into *change; everything is allocated in
 * CurrentMemoryContext except the relation map (see below).  RELATION
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
