/*-------------------------------------------------------------------------
 * fast_sync.c
 *	  FULL_TABLE streams with option fast_sync: the snapshot goes out as one
 *	  CSV export (COPY's bytes, streamed, multipart) to the stream's S3 or
 *	  file destination, and the stream's batch carries, instead of RECORDs,
 *	  one message pointing at it:
 *
 *	  fast_sync_format 'rds' (default): FAST_SYNC_RDS_S3_INFO, the message a
 *	  tap's RDS fast sync emits (type, stream, s3_bucket, s3_path, s3_region,
 *	  rows_uploaded, files_uploaded, bytes_uploaded, version, time_extracted,
 *	  replication_method);
 *	  'batch': a Singer SDK BATCH message (encoding {format, compression},
 *	  manifest of URIs).
 *
 * The export is written at <prefix>/<schema>-<table>/<YYYY-mm-dd-HHMMSS>_
 * <8 hex>.csv (format csv, no header; columns in the order of the SCHEMA
 * message), read in the sync's snapshot as the stream's owner.  The batch
 * (SCHEMA, ACTIVATE_VERSION, the message, ACTIVATE_VERSION, STATE) is
 * committed only after the export completed, so a reader never gets a
 * pointer to a missing or partial file.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/stat.h>

#include "common/file_perm.h"
#include "miscadmin.h"
#include "port.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "catalog/catalog.h"
#include "catalog/sqlfuncs.h"
#include "encode/singer.h"
#include "encode/singer_types.h"
#include "export/export.h"
#include "export/fast_sync.h"
#include "net/s3.h"

bool
egress_fast_sync_enabled(EgressStreamDef *def)
{
	bool		on = false;

	return egress_jsonb_get_bool(def->options, "fast_sync", &on) && on;
}

static void
append_json_string(StringInfo buf, const char *s)
{
	if (s == NULL)
		appendStringInfoString(buf, "null");
	else
		escape_json(buf, s);
}

void
egress_fast_sync_write(EgressStreamDef *def, EgressSink *sink,
					   EgressWorkerSlot *slot, int64 version,
					   EgressSnapshotResult *result)
{
	EgressSingerStream *st;
	char	   *format = egress_jsonb_get_string(def->options, "fast_sync_format");
	bool		batch_format = format != NULL && strcmp(format, "batch") == 0;
	char	   *nspname = get_namespace_name(get_rel_namespace(def->relid));
	char	   *relname = get_rel_name(def->relid);
	char	   *dirname;
	StringInfoData sql;
	StringInfoData relpath;		/* <schema>-<table>/<stamp>_<hex>.csv */
	StringInfoData buf;
	StringInfoData te;
	StringInfoData bookmark;
	char		stamp[32];
	uint32		rnd;
	pg_time_t	now;
	char	   *bucket = NULL;
	char	   *path;			/* key (s3) or file path */
	char	   *uri;
	const char *region = NULL;
	EgressExportResult r = {0};
	EgressOwnerSave owner_save;
	EgressBatchInfo info;
	char		batch_id[NAMEDATALEN * 2];

	if (strcmp(def->dest_kind, "s3") != 0 && strcmp(def->dest_kind, "file") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("fast_sync of stream \"%s\" needs an s3 or file destination", def->name)));

	/* the owner may still write there (rights may have been revoked) */
	egress_check_destination_use(def);
	egress_check_relation_access(def);
	st = egress_singer_stream_for_relation(def->relid, false, false);

	/* where: <prefix>/<schema>-<table>/<YYYY-mm-dd-HHMMSS>_<8 hex>.csv */
	now = (pg_time_t) time(NULL);
	pg_strftime(stamp, sizeof(stamp), "%Y-%m-%d-%H%M%S", pg_gmtime(&now));
	if (!pg_strong_random(&rnd, sizeof(rnd)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random file name")));
	/* a '/' in a name must not make another directory level */
	dirname = psprintf("%s-%s", nspname, relname);
	for (char *c = dirname; *c; c++)
		if (*c == '/')
			*c = '_';
	initStringInfo(&relpath);
	appendStringInfo(&relpath, "%s/%s_%08x.csv", dirname, stamp, rnd);
	if (strcmp(def->dest_kind, "s3") == 0)
	{
		const char *slash = strchr(def->dest_location, '/');

		bucket = slash ? pnstrdup(def->dest_location, slash - def->dest_location)
			: pstrdup(def->dest_location);
		path = slash ? psprintf("%s/%s", slash + 1, relpath.data) : pstrdup(relpath.data);
		uri = psprintf("s3://%s/%s", bucket, path);
		region = egress_s3_default_region();
	}
	else
	{
		char	   *dir = psprintf("%s/%s", def->dest_location, dirname);

		if (pg_mkdir_p(dir, pg_dir_create_mode) != 0 && errno != EEXIST)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not create directory \"%s\": %m", dir)));
		path = psprintf("%s/%s", def->dest_location, relpath.data);
		uri = psprintf("file://%s", path);
	}

	/* the stream's columns, in the order of its SCHEMA message */
	initStringInfo(&sql);
	appendStringInfoString(&sql, "SELECT ");
	for (int i = 0; i < st->ncolumns; i++)
		appendStringInfo(&sql, "%s%s", i > 0 ? ", " : "",
						 quote_identifier(st->columns[i].name));
	if (st->ncolumns == 0)
		appendStringInfoString(&sql, "1");
	appendStringInfo(&sql, " FROM %s", quote_qualified_identifier(nspname, relname));

	/*
	 * Read as the stream's owner, in the sync's snapshot, with search_path
	 * pinned: user code the read reaches (policies, views, functions) must
	 * not resolve names through the worker's default search_path.  An error
	 * aborts the transaction, which restores both.
	 */
	egress_become_owner(def->owner, &owner_save);
	egress_pin_search_path();
	egress_export_run(sql.data, uri, "format csv", NULL, &r);
	egress_restore_owner(&owner_save);

	/* the batch pointing at it */
	initStringInfo(&buf);
	initStringInfo(&te);
	initStringInfo(&bookmark);
	egress_append_time_extracted(&te, GetCurrentTimestamp());
	egress_singer_bookmark_full_table(&bookmark, version);

	info.prefix = def->name;
	sink->ops->cleanup(sink, def->name);
	sink->ops->begin_batch(sink, &info);
	egress_singer_schema(&buf, st);
	egress_singer_activate_version(&buf, st, version);
	if (!batch_format)
	{
		appendStringInfoString(&buf, "{\"type\":\"FAST_SYNC_RDS_S3_INFO\",\"stream\":");
		escape_json(&buf, st->stream_id);
		appendStringInfoString(&buf, ",\"s3_bucket\":");
		append_json_string(&buf, bucket);
		appendStringInfoString(&buf, ",\"s3_path\":");
		escape_json(&buf, path);
		appendStringInfoString(&buf, ",\"s3_region\":");
		append_json_string(&buf, region);
		appendStringInfo(&buf, ",\"rows_uploaded\":" UINT64_FORMAT ",\"files_uploaded\":" UINT64_FORMAT
						 ",\"bytes_uploaded\":" UINT64_FORMAT ",\"version\":" INT64_FORMAT
						 ",\"time_extracted\":%s,\"replication_method\":\"FULL_TABLE\"}\n",
						 r.rows, r.files, r.bytes, version, te.data);
	}
	else
	{
		appendStringInfoString(&buf, "{\"type\":\"BATCH\",\"stream\":");
		escape_json(&buf, st->stream_id);
		appendStringInfoString(&buf, ",\"encoding\":{\"format\":\"csv\",\"compression\":\"none\"},\"manifest\":[");
		for (uint64 i = 1; i <= r.files; i++)
		{
			if (i > 1)
				appendStringInfoChar(&buf, ',');
			if (i == 1)
				escape_json(&buf, uri);
			else
				escape_json(&buf, psprintf("%s_part" UINT64_FORMAT, uri, i));
		}
		appendStringInfoString(&buf, "]}\n");
	}
	egress_singer_activate_version(&buf, st, version);
	egress_singer_state_open(&buf, NULL);
	egress_singer_state_add(&buf, st->stream_id, bookmark.data, true);
	egress_singer_state_close(&buf);
	sink->ops->write(sink, buf.data, buf.len);
	snprintf(batch_id, sizeof(batch_id), "%s-" INT64_FORMAT "-%06d",
			 def->name, version, 1);
	sink->ops->commit_batch(sink, batch_id);

	result->rows = (int64) r.rows;
	result->bytes = (int64) r.bytes;
	result->batches = 1;
	if (slot)
	{
		slot->rows_sent = r.rows;
		slot->bytes_sent = r.bytes;
		slot->batches_sent = 1;
	}
}
