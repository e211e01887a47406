/*-------------------------------------------------------------------------
 * publication.h
 *	  The publication of a destination decoded with pgoutput, and the
 *	  column lists and row filters of streams (options "columns" and
 *	  "filter") that go into it and into every read of a stream.
 *
 * pg_egress owns one publication per pgoutput destination, named by
 * egress_publication_name().  It is created by egress_add_destination()
 * (which refuses when a publication of that name already exists), owned by
 * the bootstrap superuser, and dropped by egress_remove_destination().  A
 * publication is pg_egress's when its name is that of a pgoutput
 * destination and the bootstrap superuser owns it; any other is never
 * touched.  Its tables are those of the destination's LOG_BASED streams
 * (with their column lists and row filters); the egress_* functions that
 * add or remove such streams bring it in step in their own transaction.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_PUBLICATION_H
#define EGRESS_PUBLICATION_H

#include "postgres.h"

#include "nodes/bitmapset.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"

/*
 * The decoder of a destination, from its options: "pgoutput" (the default)
 * or "wal2json" (option "decoder", set explicitly or because the
 * destination took over a tap's wal2json slot).  A static string.
 */
extern const char *egress_destination_decoder(Jsonb *dest_options);

/* The publication's name for a destination, palloc'd. */
extern char *egress_publication_name(const char *destination);

/*
 * Create the publication of a new pgoutput destination; ERROR when a
 * publication of that name exists.  Caller is inside egress_catalog_enter().
 */
extern void egress_publication_create(const char *destination);

/*
 * Make the destination's publication hold the tables of its LOG_BASED
 * streams (any state), with their column lists and row filters; create it
 * first if it does not exist (destinations made before publications).
 * ERROR when a publication of that name exists that pg_egress did not
 * create.  Caller is inside egress_catalog_enter() (runs as the bootstrap
 * superuser with the search path pinned).  No-op for a destination decoded
 * with wal2json, or one that no longer exists.
 */
extern void egress_publication_sync(const char *destination);

/*
 * Whether PostgreSQL lets UPDATE and DELETE of the table through while it
 * is in a publication that publishes them: REPLICA IDENTITY FULL, or an
 * identity index (primary key under DEFAULT, the chosen index under USING
 * INDEX); for a partitioned table, every leaf partition so.
 * egress_publication_sync() leaves a table without one out of the
 * publication.  Takes AccessShareLock on the table (and its partitions);
 * needs a transaction.
 */
extern bool egress_table_has_replica_identity(Oid relid);

/*
 * Drop the destination's publication, if it exists and is pg_egress's.
 * Caller is inside egress_catalog_enter(), before the destination's row is
 * deleted.
 */
extern void egress_publication_drop(const char *destination);

/* Stream option "columns" as a List of palloc'd names; NIL when absent. */
extern List *egress_stream_columns(Jsonb *options);

/* Stream option "filter", palloc'd; NULL when absent. */
extern char *egress_stream_filter(Jsonb *options);

/*
 * Check a stream's filter and return it as SQL text that can be put inside
 * parentheses: one boolean expression over the relation's columns, made of
 * columns, constants, built-in operators, types and collations and
 * immutable built-in functions (what a PostgreSQL 15 publication's row
 * filter may hold), whose columns the owner may read.  Parsed and checked
 * as the owner, under a security-restricted operation, with the search
 * path pinned; the text returned is the expression deparsed from its parse
 * tree, never the text given.  attnos (when not NULL) gets the columns it
 * uses, offset by FirstLowInvalidHeapAttributeNumber as pull_varattnos()
 * gives them.
 */
extern char *egress_filter_sql(Oid relid, const char *filter, Oid owner,
							   Bitmapset **attnos);

#endif							/* EGRESS_PUBLICATION_H */
