/*-------------------------------------------------------------------------
 * sqlfuncs.h
 *	  The egress_* administration functions, for callers in C.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_SQLFUNCS_H
#define EGRESS_SQLFUNCS_H

#include "utils/jsonb.h"

#include "catalog/catalog.h"

extern void egress_add_stream_internal(const char *name, Oid relid, const char *method,
									   const char *dest, const char *replication_key,
									   Jsonb *options, bool state_missing_ok);
extern char *egress_destination_use_problem(Oid role, const char *kind, Oid dest_owner);
extern void egress_check_destination_use(EgressStreamDef *def);
extern void egress_validate_stream_options(Jsonb *options);
extern void egress_check_parallel_option(int64 nparallel, char relkind,
										 const char *subject);

#endif							/* EGRESS_SQLFUNCS_H */
