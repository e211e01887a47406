/*-------------------------------------------------------------------------
 * version.h
 *	  Which version of the extension's SQL objects (the catalog) a database
 *	  has: the library may be newer than the catalog until ALTER EXTENSION
 *	  pg_egress UPDATE runs (docs/upgrading.md).
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_VERSION_H
#define EGRESS_VERSION_H

/*
 * Catalog versions as numbers: "M.N" is M * 100 + N.  Compare with these,
 * never with the version text.
 */
#define EGRESS_CATALOG_0_1		1
#define EGRESS_CATALOG_0_2		2
/* the version of this library's install script (EGRESS_VERSION_STR) */
#define EGRESS_CATALOG_CURRENT	EGRESS_CATALOG_0_2

/*
 * The catalog version of the current database (pg_extension.extversion of
 * pg_egress, read with the catalog snapshot, as the parser resolves the
 * columns of a query): 0 when the extension is not installed; a version
 * that does not parse counts as EGRESS_CATALOG_CURRENT.  Needs a
 * transaction.  Cheap (one index probe): call it at each configuration
 * read rather than caching it, so ALTER EXTENSION UPDATE is seen without a
 * restart.
 */
extern int	egress_catalog_version(void);

/*
 * Does this database's catalog have what 0.2 added to egress.stream_state
 * (backfill_after, backfill_chunks, backfill_rows)?  Without them LOG_BASED
 * initial syncs run in one transaction, as in 0.1.
 */
extern bool egress_catalog_has_backfill(void);

/*
 * Says once per process (WARNING) that the catalog is older than the
 * library and what to run, and once (LOG) when it has been updated since.
 * Returns the catalog version.  Needs a transaction.
 */
extern int	egress_catalog_version_check(void);

#endif							/* EGRESS_VERSION_H */
