/*-------------------------------------------------------------------------
 * version.c
 *	  Catalog version detection (see version.h).
 *
 * The 0.2 library serves a database whose catalog is still 0.1 (the
 * extension was created or kept at 0.1 and ALTER EXTENSION pg_egress
 * UPDATE has not run yet): the code that reads or writes an object that
 * 0.1 lacks asks here first and does what 0.1 did instead.  The version is
 * read from pg_extension each time, not cached, so that the update is seen
 * at the next configuration read of every worker, without a restart.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"

#include "catalog/version.h"
#include "pg_egress.h"

/* what this process said last: 0 nothing, else the version it warned of */
static int	warned_version = 0;

/* "M.N" as M * 100 + N; -1 when it is not of that form */
static int
parse_version(const char *text)
{
	int			major;
	int			minor;
	char		extra;

	if (sscanf(text, "%d.%d%c", &major, &minor, &extra) != 2 ||
		major < 0 || minor < 0 || minor > 99 || major > 20000)
		return -1;
	return major * 100 + minor;
}

int
egress_catalog_version(void)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	int			version = 0;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("pg_egress"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		version = isnull ? -1 : parse_version(TextDatumGetCString(d));
		if (version < 0)
			version = EGRESS_CATALOG_CURRENT;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return version;
}

bool
egress_catalog_has_backfill(void)
{
	return egress_catalog_version() >= EGRESS_CATALOG_0_2;
}

int
egress_catalog_version_check(void)
{
	int			version = egress_catalog_version();

	if (version != 0 && version < EGRESS_CATALOG_CURRENT)
	{
		if (warned_version != version)
			ereport(WARNING,
					(errmsg("pg_egress: the extension's objects in database \"%s\" are at version %d.%d, older than the library (%s)",
							get_database_name(MyDatabaseId), version / 100, version % 100,
							EGRESS_VERSION_STR),
					 errdetail("Streams are served as that version did: LOG_BASED initial syncs run in one transaction, not in chunks."),
					 errhint("Run ALTER EXTENSION pg_egress UPDATE in that database.")));
		warned_version = version;
	}
	else if (warned_version != 0 && version != 0)
	{
		ereport(LOG,
				(errmsg("pg_egress: the extension's objects in database \"%s\" are now at the library's version (%s)",
						get_database_name(MyDatabaseId), EGRESS_VERSION_STR)));
		warned_version = 0;
	}
	return version;
}
