/*-------------------------------------------------------------------------
 * check.h
 *	  egress_check(): will streams work here?  And the checks of it that
 *	  egress_add_stream() makes too.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_CHECK_H
#define EGRESS_CHECK_H

#include "nodes/pg_list.h"

/* the checks egress_add_stream() makes of a relation (sqlfuncs.c) */
typedef enum EgressStreamCheck
{
	EGRESS_STREAM_CHECK_PRIVILEGES, /* SELECT on the table or columns, USAGE on its schema */
	EGRESS_STREAM_CHECK_ROW_SECURITY,	/* LOG_BASED: no policy applies to the owner */
	EGRESS_STREAM_CHECK_KEYED	/* LOG_BASED: updates and deletes say which row */
} EgressStreamCheck;

extern void egress_stream_check(EgressStreamCheck which, Oid relid, const char *qualified,
								Oid owner, List *columns);

/*
 * In egress_add_stream(), before anything is written: the cheap checks of
 * the stream's destination that egress_check() makes (a file destination's
 * directory writable by the server), as role, with the same messages.
 * Says nothing of a destination role may not use (the caller reports that).
 */
extern void egress_check_add_stream(const char *dest, Oid role);

#endif							/* EGRESS_CHECK_H */
