/*-------------------------------------------------------------------------
 * fast_sync.h
 *	  FULL_TABLE fast sync: the snapshot as a CSV export plus one message.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_FAST_SYNC_H
#define EGRESS_FAST_SYNC_H

#include "worker/snapshot.h"

/* the stream has option fast_sync = true */
extern bool egress_fast_sync_enabled(EgressStreamDef *def);

/*
 * Inside the sync's transaction and snapshot: export def's relation and
 * commit one batch with SCHEMA, ACTIVATE_VERSION, FAST_SYNC_RDS_S3_INFO (or
 * BATCH), ACTIVATE_VERSION, STATE.
 */
extern void egress_fast_sync_write(EgressStreamDef *def, EgressSink *sink,
								   EgressWorkerSlot *slot, int64 version,
								   EgressSnapshotResult *result);

#endif							/* EGRESS_FAST_SYNC_H */
