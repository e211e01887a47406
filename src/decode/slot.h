/*-------------------------------------------------------------------------
 * slot.h
 *	  Logical replication slots for LOG_BASED streams.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_SLOT_H
#define EGRESS_SLOT_H

#include "access/xlogdefs.h"

#define EGRESS_PLUGIN "wal2json"

/* ERROR (with the setting to change) unless this server can decode with wal2json. */
extern void egress_check_decoding_possible(void);

/* Does the slot exist?  If so, its plugin and database. */
extern bool egress_slot_lookup(const char *name, char **plugin, Oid *dboid);

/* Create a persistent wal2json slot (not acquired afterwards). */
extern void egress_slot_create(const char *name);

/*
 * Drop a pg_egress slot (wal2json, this database) if it exists and nobody
 * uses it; false if it is in use.  A slot of that name that is not a
 * pg_egress slot is left alone (true, with a WARNING).
 */
extern bool egress_slot_drop(const char *name);

/* WAL held by a slot nobody holds; -1 when absent, held or without WAL. */
extern int64 egress_slot_idle_lag(const char *name);

/* Does the slot exist but was invalidated (it keeps no WAL)? */
extern bool egress_slot_lost(const char *name);

/*
 * At the start of a REPEATABLE READ transaction, before anything took a
 * snapshot: make a short-lived slot and install its initial snapshot as the
 * transaction's.  Returns the consistent point: transactions whose commit
 * ends at or before it are in the snapshot, all later ones are not.
 */
extern XLogRecPtr egress_slot_snapshot(const char *tmpname);

/* Free replication slots (not counting ours). */
extern int	egress_free_slots(void);

#endif							/* EGRESS_SLOT_H */
