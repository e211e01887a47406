/*-------------------------------------------------------------------------
 * catalog.h
 *	  Reading and writing the egress.* catalog.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_CATALOG_H
#define EGRESS_CATALOG_H

#include "executor/spi.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"

/* Saved caller context while SQL runs on the catalog (see catalog.c). */
typedef struct EgressCatalogGuard
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
} EgressCatalogGuard;

extern void egress_pin_search_path(void);

/*
 * The settings that decide how values print and how constants read
 * (TimeZone UTC, DateStyle ISO, IntervalStyle postgres, extra_float_digits
 * 1): for the whole session (workers), or saved at the current GUC nest
 * level (local, undone by AtEOXact_GUC).
 */
extern void egress_pin_value_settings(bool local);
extern void egress_catalog_enter(EgressCatalogGuard *guard);
extern void egress_catalog_exit(EgressCatalogGuard *guard);

/*
 * Running user code (a read, a filter's constants, a rendered change) as a
 * stream's owner: egress_become_owner opens a GUC nest level, sets "role"
 * to the owner when it can (so is_superuser and current_setting('role') are
 * the owner's, not those of the bootstrap superuser a worker logs in as),
 * then switches the user id under SECURITY_RESTRICTED_OPERATION.  Settings
 * the caller pins afterwards belong to that nest level.
 * egress_restore_owner undoes all of it, settings user code changed
 * included; an ERROR in between is undone by the (sub)transaction's abort.
 */
typedef struct EgressOwnerSave
{
	Oid			save_userid;
	int			save_sec;
	int			nestlevel;
	bool		role_set;
} EgressOwnerSave;

extern void egress_become_owner(Oid owner, EgressOwnerSave *save);
extern void egress_restore_owner(EgressOwnerSave *save);

/*
 * A background worker's catalog transaction: begin starts a transaction
 * with a snapshot and enters the guard, or returns false with nothing
 * started when the extension is not installed in this database; end leaves
 * the guard and commits.  invalidate first forgets catalog cache entries a
 * decoding session may have built from historic snapshots.
 */
extern bool egress_worker_catalog_begin(EgressCatalogGuard *guard, bool invalidate);
extern void egress_worker_catalog_end(EgressCatalogGuard *guard);
extern int	egress_catalog_exec(const char *sql, int nargs, Oid *argtypes,
								Datum *values, const char *nulls, bool read_only);

/* A stream with its destination, as a worker needs it. */
typedef struct EgressStreamDef
{
	int32		id;
	char	   *name;
	Oid			relid;
	char	   *relation;
	char	   *method;
	char	   *replication_key;
	char	   *format;
	Jsonb	   *options;
	Oid			owner;
	bool		enabled;
	List	   *columns;		/* option "columns": names (char *); NIL = all */
	char	   *filter;			/* option "filter" as given; NULL = none (see
								 * egress_filter_sql for the SQL to use) */
	char	   *dest_name;
	char	   *dest_kind;
	char	   *dest_location;
	Jsonb	   *dest_options;
	Oid			dest_owner;		/* the destination's owner */
	bool		dest_owner_superuser;	/* ... is a superuser */
	int64		prev_version;
} EgressStreamDef;

extern bool egress_extension_present(void);
extern EgressStreamDef *egress_load_stream(int32 stream_id, MemoryContext callercxt);
extern void egress_mark_syncing(int32 stream_id, int64 version);

/* option helpers */
extern bool egress_jsonb_get_int64(Jsonb *options, const char *key, int64 *result);
extern bool egress_jsonb_get_bool(Jsonb *options, const char *key, bool *result);
extern char *egress_jsonb_get_string(Jsonb *options, const char *key);

/* The primary-key column names of a relation, in key order; NIL without one. */
extern List *egress_primary_key_columns(Oid relid);

/* A new table version: epoch ms, always above the previous one. */
extern int64 egress_next_version(int64 prev_version);

#endif							/* EGRESS_CATALOG_H */
