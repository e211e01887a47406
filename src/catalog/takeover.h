/*-------------------------------------------------------------------------
 * takeover.h
 *	  Starting a stream from a Singer tap's STATE (stream option "state").
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_TAKEOVER_H
#define EGRESS_TAKEOVER_H

#include "access/xlogdefs.h"
#include "utils/jsonb.h"

typedef struct EgressTakeover
{
	bool		log_based;
	XLogRecPtr	lsn;			/* LOG_BASED: changes after this */
	char	   *key_value;		/* INCREMENTAL: replication_key_value, as text */
	char	   *key_value_json; /* ... as the tap wrote it */
	int64		version;		/* the tap's, else a new one */
} EgressTakeover;

/*
 * Reads the tap's bookmark of relid from "state"; ERROR when it is not
 * usable.  With missing_ok, false when the state has no bookmark for it.
 */
extern bool egress_takeover_parse(Jsonb *state, Oid relid, const char *method,
								  const char *replication_key, bool missing_ok,
								  EgressTakeover *out);
extern void egress_takeover_check_slot(EgressTakeover *t, const char *slot_name);
extern char *egress_takeover_bookmark(EgressTakeover *t, const char *replication_key);

/* A new destination's decoder, given the slot it would take over. */
extern const char *egress_takeover_decoder(const char *destination,
										   const char *slot_name,
										   const char *requested);

#endif							/* EGRESS_TAKEOVER_H */
