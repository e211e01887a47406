/*-------------------------------------------------------------------------
 * slot.h
 *	  Logical replication slots for LOG_BASED streams.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_SLOT_H
#define EGRESS_SLOT_H

#include "access/xlogdefs.h"

/*
 * Plugin names, egress_plugin_is_ours, egress_check_decoding_possible,
 * egress_slot_lookup, egress_free_slots: what the catalog needs too.
 */
#include "egress_slots.h"

/* Create a persistent slot for plugin (not acquired afterwards). */
extern void egress_slot_create(const char *name, const char *plugin);

/* What egress_slot_drop() did. */
typedef enum EgressSlotDropResult
{
	EGRESS_SLOT_DROPPED,		/* dropped */
	EGRESS_SLOT_ABSENT,			/* there was no slot of that name */
	EGRESS_SLOT_IN_USE,			/* another process holds it: try later */
	EGRESS_SLOT_NOT_OURS		/* another database's, or not a plugin of ours: left alone */
} EgressSlotDropResult;

/*
 * Drop a pg_egress slot (pgoutput or wal2json, this database) if it exists and nobody
 * uses it.  A slot of that name that is not a pg_egress slot is left alone
 * (EGRESS_SLOT_NOT_OURS, no message: the caller says what it means).
 */
extern EgressSlotDropResult egress_slot_drop(const char *name);

/* Is the slot, if it exists, one pg_egress may use (our plugins, this database)? */
extern bool egress_slot_is_ours(const char *name);

/*
 * WAL written since the slot's confirmed_flush_lsn: what its destination
 * has not acknowledged.  With idle_only, -1 when a process holds the slot.
 * -1 when the slot does not exist or keeps no WAL.
 */
extern int64 egress_slot_unacked_wal(const char *name, bool idle_only);

/* Does the slot exist but was invalidated (it keeps no WAL)? */
extern bool egress_slot_lost(const char *name);

/*
 * At the start of a REPEATABLE READ transaction, before anything took a
 * snapshot: make a short-lived slot and install its initial snapshot as the
 * transaction's.  Returns the consistent point: transactions whose commit
 * ends at or before it are in the snapshot, all later ones are not.
 */
extern XLogRecPtr egress_slot_snapshot(const char *tmpname);

#endif							/* EGRESS_SLOT_H */
