/*-------------------------------------------------------------------------
 * incremental.h
 *	  INCREMENTAL streams: runs of the rows after a bookmark.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_INCREMENTAL_H
#define EGRESS_INCREMENTAL_H

#include "nodes/pg_list.h"

/* egress_primary_key_columns: catalog/catalog.h */
extern PGDLLEXPORT void egress_incremental_main(Datum main_arg);

#endif							/* EGRESS_INCREMENTAL_H */
