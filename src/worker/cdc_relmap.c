/*-------------------------------------------------------------------------
 * cdc_relmap.c
 *	  CDC worker: where decoded changes lead.  Owns the relation map
 *	  (decoded relation -> stream), the invalidation callbacks that mark it
 *	  and the streams' descriptors stale, the owner's privilege re-check
 *	  (cdc_privilege_problem), cdc_stop_stream and the descriptor rebuild
 *	  (cdc_refresh_descriptor).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "worker/cdc_internal.h"

/* ---- relation map and DDL ------------------------------------------------ */

/*
 * Where a decoded relation leads: a stream index or -1.  Keyed by the
 * decoded relation's OID (pgoutput gives it; wal2json's names are resolved
 * to it first, see cdc_lookup_name), so a rename changes nothing here.  The
 * map lives as long as the decoding session (cdc_relmap_open/close); its
 * entries are never removed while it is in use: the invalidation callbacks
 * only mark them invalid and the next lookup resolves them again, the way
 * pgoutput's rel_sync_cache_relation_cb treats its RelationSyncCache.
 */
typedef struct RelMapEntry
{
	Oid			relid;			/* hash key: the decoded relation */
	bool		valid;			/* stream is up to date */
	bool		ispartition;	/* resolved through its ancestors */
	int			stream;			/* index into cdc->streams, or -1 */
} RelMapEntry;

/* entries with ispartition set (counted while the map is in use) */
static int	relmap_partitions = 0;

void
cdc_relmap_open(void)
{
	HASHCTL		hctl;

	Assert(cdc->relmap == NULL);
	hctl.keysize = sizeof(Oid);
	hctl.entrysize = sizeof(RelMapEntry);
	hctl.hcxt = cdc->decodecxt;
	cdc->relmap = hash_create("pg_egress relation map", 64, &hctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	relmap_partitions = 0;
}

/*
 * At the end of a decoding session (nothing points into the map then), or
 * on the error path, where the session context that holds it is reset
 * anyway (free = false).
 */
void
cdc_relmap_close(bool free)
{
	if (cdc->relmap != NULL && free)
		hash_destroy(cdc->relmap);
	cdc->relmap = NULL;
	relmap_partitions = 0;
}

/*
 * Invalidation callbacks.  They run wherever invalidations are processed,
 * also in the middle of a catalog lookup of cdc_lookup_relid(): they only
 * mark things stale and never free memory that may be in use.  During
 * decoding they report the catalog changes of decoded transactions, so the
 * stale marks take effect from the first change committed after them.
 */
void
cdc_relcache_callback(Datum arg, Oid relid)
{
	RelMapEntry *e;
	HASH_SEQ_STATUS seq;
	bool		known = false;

	if (cdc == NULL || cdc_own_invalidation)
		return;
	for (int i = 0; i < cdc->nstreams; i++)
		if (!OidIsValid(relid) || cdc->streams[i].def->relid == relid)
		{
			cdc->streams[i].st_stale = cdc->streams[i].recheck =
				cdc->streams[i].privs_stale = true;
			known = true;
		}
	if (OidIsValid(relid) && cdc->relmap != NULL)
	{
		e = hash_search(cdc->relmap, &relid, HASH_FIND, NULL);
		if (e != NULL)
		{
			e->valid = false;
			known = true;
			/* a leaf's DDL (its key dropped) concerns its ancestor's stream */
			if (e->ispartition && e->stream >= 0 && e->stream < cdc->nstreams)
				cdc->streams[e->stream].recheck = true;
		}
	}

	/*
	 * A relation not known here may be a partition of a streamed
	 * partitioned table that had no change decoded yet: its replica
	 * identity matters all the same (stop_dropped_streams checks every
	 * leaf).  No catalog lookup here, so those streams are checked.
	 */
	if (!known)
		for (int i = 0; i < cdc->nstreams; i++)
			if (cdc->streams[i].partitioned)
				cdc->streams[i].recheck = true;

	if (cdc->relmap == NULL)
		return;
	if (OidIsValid(relid) && relmap_partitions == 0)
		return;

	/*
	 * Everything, or every partition: ATTACH and DETACH PARTITION invalidate
	 * the partition and its parent, not the partitions below them, whose
	 * ancestors changed all the same.
	 */
	hash_seq_init(&seq, cdc->relmap);
	while ((e = hash_seq_search(&seq)) != NULL)
		if (!OidIsValid(relid) || e->ispartition)
			e->valid = false;
}

/* Schemas (USAGE), roles (superuser, BYPASSRLS) and memberships changed. */
void
cdc_syscache_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	if (cdc == NULL || cdc_own_invalidation)
		return;
	for (int i = 0; i < cdc->nstreams; i++)
		cdc->streams[i].privs_stale = true;
}

static int
stream_of_relid(Oid relid)
{
	for (int i = 0; i < cdc->nstreams; i++)
		if (cdc->streams[i].def->relid == relid && !cdc->streams[i].needs_sync)
			return i;
	return -1;
}

/*
 * The stream the decoded relation relid belongs to (its own table's, or for
 * a partition its nearest ancestor's that has a stream), or -1.  Runs inside
 * decoding: catalog lookups see the catalog as of the change.
 */
int
cdc_lookup_relid(Oid relid)
{
	RelMapEntry *e;
	bool		found;
	int			stream;
	bool		ispartition = false;

	if (!OidIsValid(relid))
		return -1;
	Assert(cdc->relmap != NULL);

	/*
	 * Enter first, then fill: the lookups below may process invalidations,
	 * and the callback must find the entry to mark it.  It is marked valid
	 * before them, so that one arriving meanwhile leaves it invalid and the
	 * next change resolves it again.
	 */
	e = hash_search(cdc->relmap, &relid, HASH_ENTER, &found);
	if (!found)
	{
		e->valid = false;
		e->ispartition = false;
		e->stream = -1;
	}
	if (e->valid)
		return e->stream;
	e->valid = true;

	stream = stream_of_relid(relid);
	if (stream < 0 && get_rel_relispartition(relid))
	{
		/* a partition: its rows belong to the partitioned table's stream */
		List	   *ancestors = get_partition_ancestors(relid);
		ListCell   *lc;

		ispartition = true;
		foreach(lc, ancestors)
		{
			stream = stream_of_relid(lfirst_oid(lc));
			if (stream >= 0)
				break;
		}
		list_free(ancestors);
	}

	/* the entry did not move: nothing is entered in the map meanwhile */
	if (ispartition != e->ispartition)
		relmap_partitions += ispartition ? 1 : -1;
	e->ispartition = ispartition;
	e->stream = stream;
	return stream;
}

/*
 * wal2json names the relation: the OID the names have as of the change,
 * or InvalidOid (a relation of another database cannot be decoded here; a
 * name PostgreSQL cannot have leads nowhere).
 */
Oid
cdc_lookup_name(const char *schema, const char *table)
{
	Oid			nsp;

	if (schema == NULL || table == NULL ||
		strlen(schema) >= NAMEDATALEN || strlen(table) >= NAMEDATALEN)
		return InvalidOid;
	nsp = get_namespace_oid(schema, true);
	return OidIsValid(nsp) ? get_relname_relid(table, nsp) : InvalidOid;
}

/*
 * What the stream's owner lacks to read the stream's table as it is now
 * (inside decoding: as of the change being decoded), or NULL.  The same
 * rules as egress_add_stream: USAGE on the schema, SELECT on the table or
 * on every column, and no row-level security that applies to the owner.
 * A table that is gone is left to stop_dropped_streams().  Result in
 * CurrentMemoryContext.
 */
char *
cdc_privilege_problem(EgressStreamDef *def)
{
	HeapTuple	tup;
	Oid			nsp;
	char	   *role;
	char	   *problem;

	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(def->relid));
	if (!HeapTupleIsValid(tup))
		return NULL;
	nsp = ((Form_pg_class) GETSTRUCT(tup))->relnamespace;
	ReleaseSysCache(tup);

	role = GetUserNameFromId(def->owner, true);
	if (role == NULL)
		return psprintf("the role that owns stream \"%s\" no longer exists", def->name);
	if (pg_namespace_aclcheck(nsp, def->owner, ACL_USAGE) != ACLCHECK_OK)
		return psprintf("permission denied for schema %s: role \"%s\" has no USAGE on it",
						get_namespace_name(nsp), role);
	if (pg_class_aclcheck(def->relid, def->owner, ACL_SELECT) != ACLCHECK_OK &&
		!egress_columns_readable(def))
		return psprintf(pg_attribute_aclcheck_all(def->relid, def->owner, ACL_SELECT, ACLMASK_ANY) == ACLCHECK_OK ?
						"permission denied for table %s: role \"%s\" may not read all of its columns" :
						"permission denied for table %s: role \"%s\" may not read it",
						def->relation, role);
	if (check_enable_rls(def->relid, def->owner, true) == RLS_ENABLED)
		return psprintf("row-level security of table %s applies to role \"%s\", the owner of stream \"%s\"",
						def->relation, role, def->name);
	/* and may still send it there (pg_write_server_files, S3, destination owner) */
	problem = egress_destination_use_problem(def->owner, def->dest_kind, def->dest_owner);
	if (problem != NULL)
		return psprintf("stream \"%s\" may no longer use destination \"%s\": %s",
						def->name, def->dest_name, problem);
	return NULL;
}

/*
 * The stream takes no more changes in this session; apply_stream_stops()
 * records why once decoding pauses, and the session starts over.
 */
void
cdc_stop_stream(CdcStream *s, CdcStopKind kind, const char *message)
{
	if (s->stop != CDC_STOP_NONE)
		return;
	s->stop = kind;
	s->stop_message = MemoryContextStrdup(cdc->decodecxt, message);
}

/* The stream's column layout as of the change being decoded. */
void
cdc_refresh_descriptor(CdcStream *s)
{
	Relation	rel;
	MemoryContext oldcxt;

	/*
	 * Outside decoding (a backfill chunk, the start of a backfill) only the
	 * live catalog can be read: a descriptor built there serves those
	 * records, and decoding builds its own again at its next change, as of
	 * that change (a DDL committed since must not reach changes decoded
	 * before it).
	 */
	if (!s->st_stale && s->st != NULL &&
		!(s->st_live && HistoricSnapshotActive()))
		return;
	rel = RelationIdGetRelation(s->def->relid);
	if (!RelationIsValid(rel))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation %s of stream \"%s\" no longer exists",
						s->def->relation, s->def->name)));
	RelationClose(rel);

	/*
	 * Each descriptor lives in a context of its own, freed when it is
	 * replaced; deferred rows still rendered with the old one keep it until
	 * they are resolved (it goes with the deferred rows' context).
	 */
	if (s->stcxt != NULL)
	{
		if (cdc->pending != NIL)
			MemoryContextSetParent(s->stcxt, cdc->pendcxt);
		else
			MemoryContextDelete(s->stcxt);
	}
	s->st = NULL;
	s->stcxt = AllocSetContextCreate(cdc->decodecxt, "pg_egress cdc descriptor",
									 ALLOCSET_SMALL_SIZES);
	oldcxt = MemoryContextSwitchTo(s->stcxt);
	s->st = egress_singer_stream_for_def(s->def, false, s->debug_lsn);
	MemoryContextSwitchTo(oldcxt);
	s->st_stale = false;
	s->st_live = !HistoricSnapshotActive();

	/*
	 * Values come as text and arrays are parsed again (egress_column_value_
	 * text).  Their elements are parsed with a type whose input function
	 * reaches no user code (egress_check_free_input_type): a domain's base
	 * type, since the values passed the domain's CHECK when they were
	 * written, and the CHECK is user code.  When there is none (a composite
	 * with a domain field, a range of a domain), rendering may reach user
	 * code: only then does it switch to the owner (see as_owner_begin; it
	 * costs a settings save and restore per change).
	 */
	s->user_code = false;
	for (int i = 0; i < s->st->ncolumns; i++)
	{
		EgressColumn *col = &s->st->columns[i];
		Oid			elem;

		if (col->kind != EGRESS_KIND_ARRAY || !col->has_infunc)
			continue;
		elem = egress_check_free_input_type(col->typioparam, NULL);
		if (OidIsValid(elem))
			col->typioparam = elem;
		else
		{
			col->typioparam = getBaseType(col->typioparam);
			s->user_code = true;
		}
	}
	/* a new SCHEMA before the next record also after a RENAME (a new stream id) */
	if (s->sent_schema == NULL || strcmp(s->sent_schema, s->st->schema_json) != 0 ||
		s->sent_stream_id == NULL || strcmp(s->sent_stream_id, s->st->stream_id) != 0)
		s->schema_in_batch = false; /* a new SCHEMA before the next record */
}
