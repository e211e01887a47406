/*-------------------------------------------------------------------------
 * publication.h
 *	  The publication of a destination decoded with pgoutput.
 *
 * pg_egress owns one publication per such destination, named by
 * egress_publication_name().  Its tables are those of the destination's
 * LOG_BASED streams (with their column lists and row filters); the
 * egress_* functions that add, change or remove such streams bring it in
 * step in their own transaction.  Publications pg_egress did not create are
 * never touched.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_PUBLICATION_H
#define EGRESS_PUBLICATION_H

#include "postgres.h"

/* The publication's name for a destination, palloc'd. */
extern char *egress_publication_name(const char *destination);

/*
 * Create the destination's publication if it does not exist yet, and make
 * its tables those of the destination's LOG_BASED streams.  Caller is
 * inside egress_catalog_enter() (runs as the bootstrap superuser with the
 * search path pinned).  No-op for a destination decoded with wal2json.
 */
extern void egress_publication_sync(const char *destination);

/* Drop the destination's publication, if any (with the destination). */
extern void egress_publication_drop(const char *destination);

#endif							/* EGRESS_PUBLICATION_H */
