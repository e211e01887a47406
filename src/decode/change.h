/*-------------------------------------------------------------------------
 * change.h
 *	  One decoded message, whatever the output plugin: what the CDC worker
 *	  renders.
 *
 * Both decoders (decode/pgoutput.c, decode/wal2json.c) fill an EgressChange
 * from one message of their plugin, so that the worker renders the same
 * Singer output for the same change whichever decoded it.  Values are the
 * text the type's output function printed (pgoutput: as is; wal2json: as
 * JSON, see egress_change_value_text).
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_DECODE_CHANGE_H
#define EGRESS_DECODE_CHANGE_H

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"

typedef enum EgressChangeAction
{
	EGRESS_CHANGE_BEGIN,		/* "B" */
	EGRESS_CHANGE_COMMIT,		/* "C" */
	EGRESS_CHANGE_INSERT,		/* "I" */
	EGRESS_CHANGE_UPDATE,		/* "U" */
	EGRESS_CHANGE_DELETE,		/* "D" */
	EGRESS_CHANGE_TRUNCATE,		/* "T" */
	EGRESS_CHANGE_MESSAGE,		/* "M" (pg_logical_emit_message) */
	EGRESS_CHANGE_RELATION,		/* pgoutput "R": a relation's columns (relid) */
	EGRESS_CHANGE_OTHER			/* nothing for the worker (pgoutput "Y", "O") */
} EgressChangeAction;

typedef struct EgressChangeColumn
{
	char	   *name;
	char	   *value;			/* the value's text (see raw_text); NULL when
								 * null or unchanged */
	bool		isnull;
	bool		unchanged;		/* pgoutput 'u': an unchanged TOASTed value
								 * that is not in the WAL (wal2json leaves
								 * such a column out instead) */
	bool		raw_text;		/* value is exactly what the output function
								 * printed (pgoutput); else wal2json's JSON
								 * form (see egress_change_value_text) */
	bool		quoted;			/* wal2json: value was a JSON string */
	bool		plain;			/* wal2json: ... without escape sequences, so
								 * that escape_json(value) is value in quotes */
} EgressChangeColumn;

typedef struct EgressChange
{
	EgressChangeAction action;
	XLogRecPtr	lsn;			/* B/C: start of the commit record; M: the
								 * message's LSN */
	XLogRecPtr	nextlsn;		/* B/C: end of the commit record
								 * (InvalidXLogRecPtr if absent) */
	TimestampTz timestamp;		/* commit time (0 if absent or null) */
	bool		has_timestamp;
	TransactionId xid;			/* InvalidTransactionId if absent */

	/*
	 * The relation of I/U/D (and, for wal2json, of T): pgoutput gives its
	 * OID (relid) with the names of the RELATION message; wal2json gives
	 * names only (relid InvalidOid).  NULL/InvalidOid for B/C/M.
	 */
	Oid			relid;
	char	   *schema;
	char	   *table;

	/* T from pgoutput: every truncated relation in one message */
	int			nrelids;
	Oid		   *relids;

	/*
	 * The new row of I/U, in table column order.  wal2json leaves out
	 * unchanged TOASTed values of an UPDATE (the column is missing);
	 * pgoutput marks them unchanged.
	 */
	int			ncolumns;
	EgressChangeColumn *columns;

	/*
	 * The replica identity of U/D (the old key, or the whole old row with
	 * REPLICA IDENTITY FULL), in table column order.  pgoutput sends no old
	 * key for an UPDATE that did not change it: nidentity is 0.
	 */
	int			nidentity;
	EgressChangeColumn *identity;

	/* "M" only */
	bool		transactional;
	char	   *prefix;
	char	   *content;
	int			content_len;
} EgressChange;

/*
 * The text the type's output function printed for a non-null column value
 * (NULL for a null one).  basetypid is the column's type with domains
 * stripped.  For wal2json's values, booleans come as true/false and bytea
 * without its "\x" (both only when the column's declared type is boolean or
 * bytea, not a domain over them: the domain's values are plain strings); all
 * else is returned as it is.  The result may point into col.
 */
extern const char *egress_change_value_text(const EgressChangeColumn *col,
											Oid basetypid);

#endif							/* EGRESS_DECODE_CHANGE_H */
