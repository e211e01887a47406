/*-------------------------------------------------------------------------
 * pg_typemap.h
 *	  postgres destinations: Singer JSON schema -> PostgreSQL column type,
 *	  and JSON value -> COPY text, in one place (pipelinewise-target-postgres's
 *	  map; docs/postgres_target.md).  Owned by pg_apply's author.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_PG_TYPEMAP_H
#define EGRESS_PG_TYPEMAP_H

#endif							/* EGRESS_PG_TYPEMAP_H */
