/*-------------------------------------------------------------------------
 * wal2json.h
 *	  Parse the messages of wal2json's format-version 2.
 *
 * The CDC worker runs wal2json in-process and gets one message per change
 * (plus B/C per transaction) through the output plugin's write callback.
 * egress_wal2json_parse turns one such message into an EgressChange, and
 * egress_wal2json_value_text turns a column value back into the text that
 * the type's output function printed, for egress_column_value_text.
 *
 * The decoding session must print values the way egress_column_value_text
 * expects them (DateStyle ISO, IntervalStyle postgres, TimeZone UTC,
 * extra_float_digits 1, bytea_output hex): wal2json calls the output
 * functions in that session.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_DECODE_WAL2JSON_H
#define EGRESS_DECODE_WAL2JSON_H

#include "nodes/pg_list.h"

#include "decode/change.h"

/*
 * Parse one message of len bytes (need not be NUL-terminated) into *change.
 * Everything is allocated in CurrentMemoryContext.  Unknown keys are
 * ignored; malformed JSON, a missing or unknown "action" and badly typed
 * known fields are an ERROR.
 */
extern void egress_wal2json_parse(const char *data, int len,
								  EgressChange *change);

/* "16/B374D848" -> XLogRecPtr; ERROR if malformed. */
extern XLogRecPtr egress_parse_lsn(const char *text);

/*
 * The text the type's output function printed for a non-null column value
 * (NULL for a null one).  basetypid is the column's type with domains
 * stripped.  Booleans come as true/false and bytea without its "\x" (both
 * only when the column's declared type is boolean or bytea, not a domain
 * over them: the domain's values are plain strings); all else is returned
 * as it is.  The result may point into col.
 */
extern const char *egress_wal2json_value_text(const EgressChangeColumn *col,
											  Oid basetypid);

/*
 * The wal2json options pg_egress decodes with, as a List of DefElem for
 * CreateDecodingContext.  add_tables is wal2json's add-tables filter
 * ("schema.table,..." with wal2json's escaping), or NULL for all tables.
 */
extern List *egress_wal2json_options(const char *add_tables);

#endif							/* EGRESS_DECODE_WAL2JSON_H */
