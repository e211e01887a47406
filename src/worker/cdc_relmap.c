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
 * Invalidation callbacks.  They run wherever invalidations are processed,
 * also in the middle of a catalog lookup of cdc_lookup_stream(): they only mark
 * things stale and never free memory that may be in use.  During decoding
 * they report the catalog changes of decoded transactions, so the stale
 * marks take effect from the first change committed after them.
 */
void
cdc_relcache_callback(Datum arg, Oid relid)
{
	if (cdc == NULL || cdc_own_invalidation)
		return;
	for (int i = 0; i < cdc->nstreams; i++)
		if (!OidIsValid(relid) || cdc->streams[i].def->relid == relid)
			cdc->streams[i].st_stale = cdc->streams[i].recheck =
				cdc->streams[i].privs_stale = true;
	/* a rename or a new partition changes where names lead */
	cdc->relmap_stale = true;
}

/* Schemas (USAGE), roles (superuser, BYPASSRLS) and memberships changed. */
void
cdc_syscache_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	if (cdc == NULL || cdc_own_invalidation)
		return;
	for (int i = 0; i < cdc->nstreams; i++)
		cdc->streams[i].privs_stale = true;
	if (cacheid == NAMESPACEOID)
		cdc->relmap_stale = true;	/* a renamed schema */
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
 * Runs inside decoding: catalog lookups see the catalog as of the change.
 * *relid is the decoded relation (a partition of the stream's table, or
 * the table itself).
 */
int
cdc_lookup_stream(const char *schema, const char *table, Oid *relidp)
{
	RelMapKey	key;
	RelMapEntry *e;
	bool		found;
	Oid			nsp;
	Oid			relid;
	int			stream;

	*relidp = InvalidOid;
	if (strlen(schema) >= NAMEDATALEN || strlen(table) >= NAMEDATALEN)
		return -1;				/* not a name PostgreSQL could have */

	/* nothing points into the map here: a stale one can go */
	if (cdc->relmap != NULL && cdc->relmap_stale)
	{
		hash_destroy(cdc->relmap);
		cdc->relmap = NULL;
	}
	if (cdc->relmap == NULL)
	{
		HASHCTL		hctl;

		hctl.keysize = sizeof(RelMapKey);
		hctl.entrysize = sizeof(RelMapEntry);
		hctl.hcxt = cdc->decodecxt;
		cdc->relmap = hash_create("pg_egress relation map", 64, &hctl,
								  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		cdc->relmap_stale = false;
	}
	memset(&key, 0, sizeof(key));
	namestrcpy(&key.schema, schema);
	namestrcpy(&key.table, table);
	e = hash_search(cdc->relmap, &key, HASH_FIND, NULL);
	if (e != NULL)
	{
		*relidp = e->relid;
		return e->stream;
	}

	/*
	 * Resolve first, enter afterwards: these lookups may process
	 * invalidations.  If one arrives meanwhile, the entry is entered all
	 * the same and the map is rebuilt at the next lookup.
	 */
	nsp = get_namespace_oid(schema, true);
	relid = OidIsValid(nsp) ? get_relname_relid(table, nsp) : InvalidOid;
	stream = OidIsValid(relid) ? stream_of_relid(relid) : -1;
	if (stream < 0 && OidIsValid(relid) && get_rel_relispartition(relid))
	{
		/* a partition: its rows belong to the partitioned table's stream */
		List	   *ancestors = get_partition_ancestors(relid);
		ListCell   *lc;

		foreach(lc, ancestors)
		{
			stream = stream_of_relid(lfirst_oid(lc));
			if (stream >= 0)
				break;
		}
		list_free(ancestors);
	}

	e = hash_search(cdc->relmap, &key, HASH_ENTER, &found);
	e->stream = stream;
	e->relid = relid;
	*relidp = relid;
	return stream;
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
		pg_attribute_aclcheck_all(def->relid, def->owner, ACL_SELECT, ACLMASK_ALL) != ACLCHECK_OK)
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

	if (!s->st_stale && s->st != NULL)
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
	s->st = egress_singer_stream_for_relation_nolock(s->def->relid, true, s->debug_lsn);
	MemoryContextSwitchTo(oldcxt);
	s->st_stale = false;

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
	if (s->sent_schema == NULL || strcmp(s->sent_schema, s->st->schema_json) != 0)
		s->schema_in_batch = false; /* a new SCHEMA before the next record */
}
