/*-------------------------------------------------------------------------
 * export.c
 *	  egress_export(): a query's result, as COPY writes it, to a file or an
 *	  S3 object, streamed, split at max_file_size.
 *
 * The bytes are COPY's own: PostgreSQL 15's COPY TO cannot write to a
 * callback, so the export runs COPY (query) TO STDOUT through BeginCopyTo /
 * DoCopyTo with the backend's protocol output (PqCommMethods) pointed at
 * this file for the duration.  Every CopyData message (one per row, plus
 * the header line and the binary trailer) is handed to the destination;
 * CopyOutResponse and CopyDone are swallowed; anything else (notices) goes
 * to the client as before.  The client sees none of the COPY protocol.
 * Progress comes from COPY itself: pg_stat_progress_copy shows the rows and
 * bytes so far (type PIPE).
 *
 * Nothing is visible before the end: files are written under a hidden
 * temporary name and renamed once everything succeeded, S3 objects appear
 * only when their upload is completed.  On any error (the query failing,
 * the destination failing, a cancel or statement_timeout) temporary files
 * are removed, multipart uploads aborted, and parts already completed are
 * deleted again.
 *
 * Splitting: a part is closed before a row that would take it past
 * max_file_size (a part holds at least one row).  Parts are named name,
 * name_part2, name_part3, ...  Every part can be loaded on its own with
 * the same options: the CSV/text header line is repeated, and in binary
 * format every part has the file header and the trailer.  Without a split
 * the output is exactly COPY's.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "common/pg_prng.h"
#include "commands/copy.h"
#include "commands/defrem.h"
#include "commands/progress.h"
#include "funcapi.h"
#include "libpq/libpq.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/parsenodes.h"
#include "optimizer/optimizer.h"
#include "parser/analyze.h"
#include "parser/parser.h"
#include "pgstat.h"
#include "parser/parse_node.h"
#include "storage/bufmgr.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "export/export.h"
#include "export/parallel.h"
#include "pg_egress.h"

/* RDS's default: about 6 GB */
#define EXPORT_DEFAULT_MAX_FILE_SIZE	INT64CONST(6000000000)
#define BINARY_HEADER_LEN	19
#define FILE_BUFFER_SIZE	(1024 * 1024)
#define GZIP_CHUNK			(256 * 1024)

/*
 * Progress parameters of the COPY command an export runs that COPY itself
 * leaves alone (PROGRESS_COPY_* use 0-5); the egress_exports view reads
 * them from pg_stat_get_progress_info('COPY') as param11-param14.
 */
#define EXPORT_PROGRESS_ROWS_ESTIMATE	10	/* planner's rows of the whole query */
#define EXPORT_PROGRESS_STARTED_AT		11	/* microseconds since 1970-01-01 */
#define EXPORT_PROGRESS_LEADER_PID		12	/* part worker: its leader; else 0 */
#define EXPORT_PROGRESS_MARK			13	/* EXPORT_PROGRESS_MAGIC */
/* tells an export's COPY from a plain COPY (egress_exports shows only these) */
#define EXPORT_PROGRESS_MAGIC			INT64CONST(1162301011)

typedef struct ExportPart
{
	char	   *name;			/* path, or S3 key */
	char	   *tmp_path;		/* files: where it is written */
	FILE	   *file;
	char	   *filebuf;
	EgressS3Upload *s3;
	uint64		bytes;			/* written to the destination */
	bool		done;			/* renamed / completed */
} ExportPart;

typedef struct ExportState
{
	MemoryContext cxt;
	bool		is_s3;
	char	   *path;			/* file: the target path */
	EgressS3Target target;		/* s3: bucket, key, credentials */
	int64		max_file_size;
	int64		rows_estimate;	/* the query's, for egress_exports */
	bool		gzip;
	bool		binary;
	bool		header;

	List	   *parts;			/* ExportPart *, in order */
	ExportPart *cur;
	uint64		cur_in;			/* bytes given to the current part */
	uint64		cur_msgs;		/* rows (and header) in the current part */
	uint64		nmsgs;
	char	   *header_line;	/* csv/text header, to repeat */
	int			header_len;
	char		binary_header[BINARY_HEADER_LEN];

	z_stream	zs;
	bool		zs_active;
	char	   *zbuf;
} ExportState;

static ExportState *active_export = NULL;

/*
 * File exports under way, for the exit callback: a FATAL exit runs no
 * PG_CATCH, and its temporary files must go too.  (S3 uploads are aborted
 * by net/s3.c's own exit callback.)
 */
static List *running_exports = NIL;
static bool exit_callback_registered = false;
static const PQcommMethods *saved_comm = NULL;
static bool saved_forward = false;

/* ---------------------------------------------------------------------
 * Arguments
 * ---------------------------------------------------------------------
 */

/* the raw parse of "COPY x TO STDOUT WITH (<options>)" */
static pg_noinline List *
parse_option_list(const char *options)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	char	   *sql = psprintf("COPY pg_egress_export TO STDOUT WITH (%s)", options);
	List	   *raw = NIL;

	PG_TRY();
	{
		raw = raw_parser(sql, RAW_PARSE_DEFAULT);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("invalid export options \"%s\"", options),
				 errdetail("The options are COPY's option list without parentheses, as in 'format csv, header true': %s.",
						   edata->message)));
	}
	PG_END_TRY();
	return raw;
}

/*
 * Parses the RDS-style option string, COPY's option list without the
 * parentheses, by handing "COPY x TO STDOUT WITH (<options>)" to the raw
 * parser and keeping its option list.  Takes out our own options.
 */
static pg_noinline List *
parse_options(const char *options, ExportState *st)
{
	List	   *raw;
	RawStmt    *rs;
	CopyStmt   *cs;
	List	   *copy_opts = NIL;
	ListCell   *lc;
	bool		seen_size = false;
	bool		seen_comp = false;
	CopyFormatOptions fmt;
	const char *p;

	st->max_file_size = EXPORT_DEFAULT_MAX_FILE_SIZE;
	for (p = options; *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'; p++)
		;
	if (*p == '\0')
		return NIL;

	raw = parse_option_list(options);

	if (list_length(raw) != 1 ||
		!IsA((rs = linitial_node(RawStmt, raw))->stmt, CopyStmt) ||
		(cs = (CopyStmt *) rs->stmt)->is_from || cs->filename != NULL ||
		cs->whereClause != NULL || cs->attlist != NIL || cs->query != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("invalid export options \"%s\"", options),
				 errdetail("The options are COPY's option list without parentheses, as in 'format csv, header true'.")));

	foreach(lc, cs->options)
	{
		DefElem    *d = lfirst_node(DefElem, lc);

		if (strcmp(d->defname, "max_file_size") == 0)
		{
			if (seen_size)
				errorConflictingDefElem(d, NULL);
			seen_size = true;
			st->max_file_size = defGetInt64(d);
			if (st->max_file_size <= 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("max_file_size must be a positive number of bytes")));
		}
		else if (strcmp(d->defname, "compression") == 0)
		{
			char	   *c = defGetString(d);

			if (seen_comp)
				errorConflictingDefElem(d, NULL);
			seen_comp = true;
			if (pg_strcasecmp(c, "gzip") == 0)
				st->gzip = true;
			else if (pg_strcasecmp(c, "none") == 0)
				st->gzip = false;
			else
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("unrecognized compression \"%s\"", c),
						 errhint("Valid values are \"gzip\" and \"none\".")));
		}
		else if (strcmp(d->defname, "freeze") == 0)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("COPY FREEZE only available using COPY FROM")));
		else
			copy_opts = lappend(copy_opts, d);
	}

	/* COPY's own check: unknown, conflicting, FROM-only options */
	memset(&fmt, 0, sizeof(fmt));
	ProcessCopyOptions(NULL, &fmt, false, copy_opts);
	st->binary = fmt.binary;
	st->header = fmt.header_line != COPY_HEADER_FALSE;
	return copy_opts;
}

/* the query must be one SELECT, VALUES or TABLE without writable CTEs */
static pg_noinline List *
parse_query_text(const char *query)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	List	   *raw = NIL;

	PG_TRY();
	{
		raw = raw_parser(query, RAW_PARSE_DEFAULT);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/* the error position would point into the outer statement */
		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		ereport(ERROR,
				(errcode(edata->sqlerrcode),
				 errmsg("invalid export query: %s", edata->message),
				 edata->cursorpos > 0 ?
				 errdetail("At character %d of the query.", edata->cursorpos) : 0));
	}
	PG_END_TRY();
	return raw;
}

static RawStmt *
parse_query(const char *query)
{
	List	   *raw = parse_query_text(query);
	RawStmt    *rs;
	SelectStmt *sel;

	if (list_length(raw) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an export query must be exactly one statement")));
	rs = linitial_node(RawStmt, raw);
	if (!IsA(rs->stmt, SelectStmt))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("an export query must be a SELECT, VALUES or TABLE statement")));
	sel = (SelectStmt *) rs->stmt;
	if (sel->intoClause != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("an export query cannot use SELECT INTO")));
	if (sel->withClause != NULL)
	{
		ListCell   *lc;

		foreach(lc, sel->withClause->ctes)
		{
			CommonTableExpr *cte = lfirst_node(CommonTableExpr, lc);

			if (!IsA(cte->ctequery, SelectStmt))
				ereport(ERROR,
						(errcode(ERRCODE_WRONG_OBJECT_TYPE),
						 errmsg("an export query cannot contain data-modifying statements in WITH")));
		}
	}
	return rs;
}

static void
parse_uri(const char *uri, ExportState *st)
{
	if (strncmp(uri, "s3://", 5) == 0)
	{
		st->is_s3 = true;
		egress_s3_parse_uri(uri, &st->target.bucket, &st->target.key);
	}
	else if (strncmp(uri, "file://", 7) == 0)
	{
		const char *path = uri + 7;

		if (path[0] != '/' || path[1] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid file URI \"%s\"", uri),
					 errdetail("A file URI has the form file:///absolute/path.")));
		if (path[strlen(path) - 1] == '/')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid file URI \"%s\"", uri),
					 errdetail("The URI names a directory, not a file.")));
		st->path = pstrdup(path);
	}
	else
	{
		const char *colon = strstr(uri, "://");

		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 colon ? errmsg("unsupported export URI scheme \"%.*s\"", (int) (colon - uri), uri)
				 : errmsg("invalid export URI \"%s\"", uri),
				 errdetail("An export URI starts with file:/// or s3://.")));
	}
}

/* ---------------------------------------------------------------------
 * Parts
 * ---------------------------------------------------------------------
 */

static char *
part_name(const char *base, int n)
{
	return n == 1 ? pstrdup(base) : psprintf("%s_part%d", base, n);
}

static void
part_open(ExportState *st)
{
	MemoryContext old = MemoryContextSwitchTo(st->cxt);
	ExportPart *part = palloc0(sizeof(ExportPart));
	int			n = list_length(st->parts) + 1;

	/* in the list before anything can fail, so that errors clean it up */
	st->parts = lappend(st->parts, part);
	st->cur = part;
	st->cur_in = 0;
	st->cur_msgs = 0;
	if (st->is_s3)
	{
		EgressS3Target t = st->target;

		part->name = part_name(st->target.key, n);
		t.key = part->name;
		part->s3 = egress_s3_upload_begin(&t);
	}
	else
	{
		char	   *slash;
		char	   *dir;

		part->name = part_name(st->path, n);
		slash = strrchr(part->name, '/');
		dir = pnstrdup(part->name, slash - part->name);

		/*
		 * Created here ("x": O_EXCL, which never follows a symbolic link),
		 * under a name with a random part: whoever can write to the
		 * directory cannot have the export written through a link planted
		 * at a predictable name.
		 */
		for (int attempt = 0;; attempt++)
		{
			part->tmp_path = psprintf("%s/.%s.%d.%08x.egress-tmp", dir[0] ? dir : "",
									  slash + 1, MyProcPid,
									  (unsigned int) pg_prng_uint32(&pg_global_prng_state));
			part->file = AllocateFile(part->tmp_path, "wx");
			if (part->file != NULL)
				break;
			if (errno != EEXIST || attempt >= 10)
			{
				int			save_errno = errno;

				part->tmp_path = NULL;	/* nothing of ours to remove */
				errno = save_errno;
				ereport(ERROR,
						(errcode_for_file_access(),
						 errmsg("could not create file \"%s\" for export: %m",
								part->name)));
			}
		}
		part->filebuf = palloc(FILE_BUFFER_SIZE);
		setvbuf(part->file, part->filebuf, _IOFBF, FILE_BUFFER_SIZE);
	}
	if (st->gzip)
	{
		memset(&st->zs, 0, sizeof(st->zs));
		if (deflateInit2(&st->zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16,
						 8, Z_DEFAULT_STRATEGY) != Z_OK)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not initialize gzip compression")));
		st->zs_active = true;
		if (st->zbuf == NULL)
			st->zbuf = palloc(GZIP_CHUNK);
	}
	MemoryContextSwitchTo(old);
}

/* raw bytes to the part's destination */
static void
part_emit(ExportState *st, const char *data, size_t len)
{
	ExportPart *part = st->cur;

	if (len == 0)
		return;
	if (part->s3)
		egress_s3_upload_write(part->s3, data, len);
	else if (fwrite(data, 1, len, part->file) != len)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not write file \"%s\" for export: %m", part->name)));
	part->bytes += len;
}

static void
deflate_run(ExportState *st, int flush)
{
	int			rc;

	do
	{
		st->zs.next_out = (Bytef *) st->zbuf;
		st->zs.avail_out = GZIP_CHUNK;
		rc = deflate(&st->zs, flush);
		if (rc == Z_STREAM_ERROR)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("gzip compression failed")));
		part_emit(st, st->zbuf, GZIP_CHUNK - st->zs.avail_out);
	} while (st->zs.avail_out == 0 || (flush == Z_FINISH && rc != Z_STREAM_END));
}

/* COPY's bytes into the current part, compressed if asked */
static void
part_write(ExportState *st, const char *data, size_t len)
{
	st->cur_in += len;
	if (!st->gzip)
	{
		part_emit(st, data, len);
		return;
	}
	st->zs.next_in = (Bytef *) data;
	st->zs.avail_in = len;
	deflate_run(st, Z_NO_FLUSH);
}

/* all bytes of the current part given: flush, send; not yet visible */
static void
part_seal(ExportState *st)
{
	ExportPart *part = st->cur;

	if (st->zs_active)
	{
		deflate_run(st, Z_FINISH);
		deflateEnd(&st->zs);
		st->zs_active = false;
	}
	if (part->s3)
		egress_s3_upload_seal(part->s3);
	else
	{
		if (fflush(part->file) != 0 || pg_fsync(fileno(part->file)) != 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not write file \"%s\" for export: %m", part->name)));
		if (FreeFile(part->file) != 0)
		{
			part->file = NULL;
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not close file \"%s\" for export: %m", part->name)));
		}
		part->file = NULL;
	}
	st->cur = NULL;
}

static void
part_publish(ExportPart *part)
{
	if (part->s3)
	{
		egress_s3_upload_complete(part->s3);
		part->bytes = egress_s3_upload_bytes(part->s3);
	}
	else
	{
		if (durable_rename(part->tmp_path, part->name, ERROR) != 0)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not rename file \"%s\" to \"%s\": %m",
							part->tmp_path, part->name)));
	}
	part->done = true;
}

/* error path: remove everything; raises no error */
static void
export_discard(ExportState *st)
{
	ListCell   *lc;

	if (st->zs_active)
	{
		deflateEnd(&st->zs);
		st->zs_active = false;
	}
	foreach(lc, st->parts)
	{
		ExportPart *part = lfirst(lc);

		if (part->s3)
		{
			if (part->done)
				egress_s3_delete_object(part->s3);
			egress_s3_upload_abort(part->s3);
			part->s3 = NULL;
		}
		else
		{
			if (part->file)
			{
				FreeFile(part->file);
				part->file = NULL;
			}
			if (part->done)
				(void) unlink(part->name);
			else if (part->tmp_path)
				(void) unlink(part->tmp_path);
		}
	}
}

static void
export_exit_cleanup(int code, Datum arg)
{
	ListCell   *lc;

	foreach(lc, running_exports)
	{
		ExportState *st = lfirst(lc);
		ListCell   *lc2;

		foreach(lc2, st->parts)
		{
			ExportPart *part = lfirst(lc2);

			if (part->s3 != NULL)
				continue;
			if (part->done)
				(void) unlink(part->name);
			else if (part->tmp_path)
				(void) unlink(part->tmp_path);
		}
	}
}

/* ---------------------------------------------------------------------
 * Receiving COPY's output
 * ---------------------------------------------------------------------
 */

static void
export_data(ExportState *st, const char *s, size_t len)
{
	bool		is_header = false;

	st->nmsgs++;
	if (st->nmsgs == 1)
	{
		if (st->binary && len >= BINARY_HEADER_LEN)
			memcpy(st->binary_header, s, BINARY_HEADER_LEN);
		else if (st->header)
		{
			MemoryContext old = MemoryContextSwitchTo(st->cxt);

			st->header_line = palloc(len);
			memcpy(st->header_line, s, len);
			st->header_len = len;
			is_header = true;
			MemoryContextSwitchTo(old);
		}
	}

	/* binary trailer: belongs to the last part */
	if (st->binary && len == 2 && (unsigned char) s[0] == 0xff &&
		(unsigned char) s[1] == 0xff)
	{
		part_write(st, s, len);
		return;
	}

	if (!is_header && st->cur_msgs > (st->header_line ? 1 : 0) &&
		st->cur_in + len > (uint64) st->max_file_size)
	{
		/* close this part and start the next one */
		if (st->binary)
			part_write(st, "\377\377", 2);
		part_seal(st);
		part_open(st);
		if (st->binary)
			part_write(st, st->binary_header, BINARY_HEADER_LEN);
		else if (st->header_line)
		{
			part_write(st, st->header_line, st->header_len);
			st->cur_msgs++;
		}
		/* the first row message carried the header in binary: skip it */
	}
	part_write(st, s, len);
	st->cur_msgs++;
}

static int
export_putmessage(char msgtype, const char *s, size_t len)
{
	if (msgtype == 'd')
		export_data(active_export, s, len);
	else if (msgtype == 'H' || msgtype == 'c')
		 /* CopyOutResponse, CopyDone: the client must not see them */ ;
	else if (saved_forward)
		return saved_comm->putmessage(msgtype, s, len);
	return 0;
}

static void
export_putmessage_noblock(char msgtype, const char *s, size_t len)
{
	(void) export_putmessage(msgtype, s, len);
}

static void
export_comm_reset(void)
{
	saved_comm->comm_reset();
}

static int
export_flush(void)
{
	return saved_forward ? saved_comm->flush() : 0;
}

static int
export_flush_if_writable(void)
{
	return saved_forward ? saved_comm->flush_if_writable() : 0;
}

static bool
export_is_send_pending(void)
{
	return saved_forward ? saved_comm->is_send_pending() : false;
}

static const PQcommMethods ExportCommMethods = {
	.comm_reset = export_comm_reset,
	.flush = export_flush,
	.flush_if_writable = export_flush_if_writable,
	.is_send_pending = export_is_send_pending,
	.putmessage = export_putmessage,
	.putmessage_noblock = export_putmessage_noblock,
};

/* ---------------------------------------------------------------------
 * Entry points
 * ---------------------------------------------------------------------
 */

/* ---------------------------------------------------------------------
 * Splitting a query into TID ranges (parallel exports)
 * ---------------------------------------------------------------------
 */

/* a part's blocks: [lo, hi), hi InvalidBlockNumber: to the end */
typedef struct ExportRange
{
	BlockNumber lo;
	BlockNumber hi;
} ExportRange;

static void
not_splittable(int nparts, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("the export query cannot be split into %d parts: %s", nparts, what),
			 errdetail("A parallel export reads one table in ranges of blocks: the query must read exactly one table (or materialized view), without ORDER BY, LIMIT, OFFSET, DISTINCT, GROUP BY, aggregates, window functions, set operations, WITH, subqueries, FOR UPDATE or volatile set-returning functions."),
			 errhint("Use parallel => 1.")));
}

/*
 * Can the query be read in TID ranges, each part on its own, so that the
 * parts together give exactly its rows?  Checked on the analysed tree (the
 * raw one cannot tell a table from a view); returns the table and the
 * name that qualifies its columns in the query.
 */
static Oid
check_splittable(RawStmt *rs, const char *query, int nparts, char **refname)
{
	SelectStmt *sel = (SelectStmt *) rs->stmt;
	Query	   *q;
	RangeTblEntry *rte;
	RangeVar   *rv;
	char		relkind;

	q = parse_analyze_fixedparams(copyObject(rs), query, NULL, 0, NULL);
	if (q->commandType != CMD_SELECT || q->utilityStmt != NULL)
		not_splittable(nparts, "it is not a plain SELECT");
	if (q->setOperations != NULL)
		not_splittable(nparts, "it has set operations");
	if (q->cteList != NIL)
		not_splittable(nparts, "it has WITH queries");
	if (q->hasAggs || q->groupClause != NIL || q->groupingSets != NIL ||
		q->havingQual != NULL)
		not_splittable(nparts, "it aggregates");
	if (q->hasWindowFuncs)
		not_splittable(nparts, "it has window functions");
	if (q->distinctClause != NIL)
		not_splittable(nparts, "it has DISTINCT");
	if (q->sortClause != NIL)
		not_splittable(nparts, "it has ORDER BY");
	if (q->limitCount != NULL || q->limitOffset != NULL)
		not_splittable(nparts, "it has LIMIT or OFFSET");
	if (q->rowMarks != NIL)
		not_splittable(nparts, "it locks rows");
	if (q->hasSubLinks)
		not_splittable(nparts, "it has subqueries");
	if (q->hasTargetSRFs && contain_volatile_functions((Node *) q->targetList))
		not_splittable(nparts, "it has volatile set-returning functions");
	if (list_length(q->rtable) != 1 || q->jointree == NULL ||
		list_length(q->jointree->fromlist) != 1 ||
		!IsA(linitial(q->jointree->fromlist), RangeTblRef))
		not_splittable(nparts, "it does not read exactly one table");
	rte = linitial_node(RangeTblEntry, q->rtable);
	if (rte->rtekind != RTE_RELATION)
		not_splittable(nparts, "it does not read exactly one table");
	relkind = get_rel_relkind(rte->relid);
	if (relkind != RELKIND_RELATION && relkind != RELKIND_MATVIEW)
		not_splittable(nparts, "it reads a view, a foreign table or a partitioned table");
	if (rte->tablesample != NULL)
		not_splittable(nparts, "it has TABLESAMPLE");
	if (get_rel_persistence(rte->relid) == RELPERSISTENCE_TEMP)
		not_splittable(nparts, "it reads a temporary table, which other sessions cannot read");
	if (rte->inh && has_subclass(rte->relid))
		not_splittable(nparts, "the table has inheritance children (name it with ONLY)");

	/* the raw tree is the one the parts extend */
	if (sel->fromClause == NIL || list_length(sel->fromClause) != 1 ||
		!IsA(linitial(sel->fromClause), RangeVar))
		not_splittable(nparts, "it does not read exactly one table");
	rv = linitial_node(RangeVar, sel->fromClause);
	if (refname)
		*refname = pstrdup(rv->alias ? rv->alias->aliasname : rv->relname);
	return rte->relid;
}

/* <refname>.ctid OPERATOR(pg_catalog.<op>) '(<block>,0)'::pg_catalog.tid */
static Node *
ctid_compare(const char *refname, const char *op, BlockNumber block, int location)
{
	ColumnRef  *col = makeNode(ColumnRef);
	A_Const    *c = makeNode(A_Const);
	TypeCast   *tc = makeNode(TypeCast);

	col->fields = list_make2(makeString(pstrdup(refname)), makeString("ctid"));
	col->location = location;
	c->val.sval.type = T_String;
	c->val.sval.sval = psprintf("(%u,0)", block);
	c->location = location;
	tc->arg = (Node *) c;
	tc->typeName = SystemTypeName("tid");
	tc->location = location;
	return (Node *) makeA_Expr(AEXPR_OP,
							   list_make2(makeString("pg_catalog"), makeString(pstrdup(op))),
							   (Node *) col, (Node *) tc, location);
}

/*
 * The query restricted to the part's blocks: its WHERE clause AND the
 * TID range, which the planner runs as a TID Range Scan.
 */
static void
restrict_to_range(RawStmt *rs, const char *query, const ExportRange *range)
{
	SelectStmt *sel = (SelectStmt *) rs->stmt;
	char	   *refname;
	Node	   *cond;

	(void) check_splittable(rs, query, 2, &refname);
	cond = ctid_compare(refname, ">=", range->lo, -1);
	if (range->hi != InvalidBlockNumber)
		cond = (Node *) makeBoolExpr(AND_EXPR,
									 list_make2(cond, ctid_compare(refname, "<", range->hi, -1)),
									 -1);
	if (sel->whereClause)
		sel->whereClause = (Node *) makeBoolExpr(AND_EXPR,
												 list_make2(sel->whereClause, cond), -1);
	else
		sel->whereClause = cond;
}

typedef void (*ExportBeforePublish) (void *arg, int nfiles);

/*
 * What an export's COPY command reports besides COPY's own figures (the
 * EXPORT_PROGRESS_* parameters).
 */
typedef struct ExportProgress
{
	int64		rows_estimate;	/* of the whole query; 0 in a part worker;
								 * -1: export_run plans the query for it */
	TimestampTz started_at;
	int			leader_pid;		/* part worker: its leader's; else 0 */
} ExportProgress;

static void export_run(const char *query, const char *uri, const char *options,
					   const EgressS3Target *s3, EgressExportResult *result,
					   const ExportRange *range, const ExportProgress *progress,
					   ExportBeforePublish before_publish, void *arg);

/*
 * The planner's row estimate for the query, as EXPLAIN shows it on the top
 * plan node.  Planned apart from COPY's own plan, which BeginCopyTo keeps to
 * itself; the same parse analysis, so an error here is COPY's error.
 */
static int64
plan_rows_estimate(RawStmt *rs, const char *query)
{
	List	   *stmts;
	PlannedStmt *plan;

	stmts = pg_analyze_and_rewrite_fixedparams(copyObject(rs), query, NULL, 0, NULL);
	/* a rule that makes the query several is COPY's error to report */
	if (list_length(stmts) != 1)
		return 0;
	plan = pg_plan_query(linitial_node(Query, stmts), query,
						 CURSOR_OPT_PARALLEL_OK, NULL);
	return (int64) rint(plan->planTree->plan_rows);
}

/* the EXPORT_PROGRESS_* parameters of the COPY command this backend runs */
static void
report_export_progress(const ExportProgress *progress, int64 rows_estimate)
{
	const int	index[] = {
		EXPORT_PROGRESS_ROWS_ESTIMATE,
		EXPORT_PROGRESS_STARTED_AT,
		EXPORT_PROGRESS_LEADER_PID,
		EXPORT_PROGRESS_MARK
	};
	int64		val[4];

	val[0] = rows_estimate;
	/* since the Unix epoch: to_timestamp() in the view */
	val[1] = progress->started_at +
		(POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;
	val[2] = progress->leader_pid;
	val[3] = EXPORT_PROGRESS_MAGIC;
	pgstat_progress_update_multi_param(4, index, val);
}

void
egress_export_run(const char *query, const char *uri, const char *options,
				  const EgressS3Target *s3, EgressExportResult *result)
{
	ExportProgress progress = {0};

	progress.started_at = GetCurrentTimestamp();
	/* planned where COPY would first see it: after the checks */
	progress.rows_estimate = -1;
	export_run(query, uri, options, s3, result, NULL, &progress, NULL, NULL);
}

/*
 * One export run.  range: only those blocks of the query's one table.
 * progress: what its COPY command reports besides COPY's figures.
 * before_publish: called when every part was written and sealed, before
 * any becomes visible; its error discards them.
 */
static void
export_run(const char *query, const char *uri, const char *options,
		   const EgressS3Target *s3, EgressExportResult *result,
		   const ExportRange *range, const ExportProgress *progress,
		   ExportBeforePublish before_publish, void *arg)
{
	MemoryContext cxt;
	MemoryContext oldcxt;
	ExportState *volatile st;
	List	   *copy_opts;
	RawStmt    *rs;
	ExportState *prev_active = active_export;
	const PQcommMethods *prev_comm = PqCommMethods;
	bool		prev_forward = saved_forward;
	const PQcommMethods *prev_saved = saved_comm;
	CommandDest prev_dest = whereToSendOutput;

	cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_egress export",
								ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(cxt);
	st = palloc0(sizeof(ExportState));
	st->cxt = cxt;
	if (s3)
	{
		st->target.region = s3->region;
		st->target.access_key = s3->access_key;
		st->target.secret_key = s3->secret_key;
		st->target.session_token = s3->session_token;
		st->target.kms_key = s3->kms_key;
	}
	/* everything is checked before anything is written */
	parse_uri(uri, st);
	copy_opts = parse_options(options ? options : "", st);
	rs = parse_query(query);
	if (range)
		restrict_to_range(rs, query, range);
	st->rows_estimate = progress->rows_estimate;

	if (!exit_callback_registered)
	{
		before_shmem_exit(export_exit_cleanup, (Datum) 0);
		exit_callback_registered = true;
	}
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		running_exports = lcons(st, running_exports);
		MemoryContextSwitchTo(old);
	}

	PG_TRY();
	{
		ParseState *pstate;
		CopyToState cstate;
		int64		copy_params[EXPORT_PROGRESS_ROWS_ESTIMATE] = {0};

		part_open(st);

		if (st->rows_estimate < 0)
			st->rows_estimate = plan_rows_estimate(rs, query);

		pstate = make_parsestate(NULL);
		pstate->p_sourcetext = query;

		/*
		 * COPY's output goes to the export's protocol methods while it
		 * runs; the caller's are back afterwards, whether COPY ends or
		 * fails.
		 */
		PG_TRY();
		{
			active_export = st;
			/* an export inside an export's query keeps the real methods */
			if (PqCommMethods != &ExportCommMethods)
			{
				saved_comm = PqCommMethods;
				saved_forward = (prev_dest == DestRemote);
			}
			PqCommMethods = &ExportCommMethods;
			/* COPY TO STDOUT writes to the protocol only when DestRemote */
			whereToSendOutput = DestRemote;

			cstate = BeginCopyTo(pstate, NULL, rs, InvalidOid, NULL, false, NIL,
								 copy_opts);
			/* BeginCopyTo started the command, DoCopyTo adds to it */
			report_export_progress(progress, st->rows_estimate);
			result->rows = DoCopyTo(cstate);
			/* COPY's figures, for the leader to go on showing them */
			if (MyBEEntry)
				memcpy(copy_params, (const void *) MyBEEntry->st_progress_param,
					   sizeof(copy_params));
			EndCopyTo(cstate);
		}
		PG_FINALLY();
		{
			PqCommMethods = prev_comm;
			whereToSendOutput = prev_dest;
			active_export = prev_active;
			saved_comm = prev_saved;
			saved_forward = prev_forward;
		}
		PG_END_TRY();

		part_seal(st);
		if (before_publish && progress->leader_pid == 0)
		{
			int			index[EXPORT_PROGRESS_ROWS_ESTIMATE];

			/*
			 * A parallel export's leader waits for its other parts: its
			 * export goes on, and so does the command egress_exports sums
			 * them under, with the figures its COPY ended with.
			 */
			pgstat_progress_start_command(PROGRESS_COMMAND_COPY, InvalidOid);
			for (int i = 0; i < EXPORT_PROGRESS_ROWS_ESTIMATE; i++)
				index[i] = i;
			pgstat_progress_update_multi_param(EXPORT_PROGRESS_ROWS_ESTIMATE,
											   index, copy_params);
			report_export_progress(progress, st->rows_estimate);
			before_publish(arg, list_length(st->parts));
			pgstat_progress_end_command();
		}
		else if (before_publish)
			before_publish(arg, list_length(st->parts));
		{
			ListCell   *lc;

			result->files = 0;
			result->bytes = 0;
			foreach(lc, st->parts)
			{
				ExportPart *part = lfirst(lc);

				part_publish(part);
				result->files++;
				result->bytes += part->bytes;
			}
		}
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/*
		 * The error is taken off the stack first: discarding the parts
		 * deletes S3 objects already completed, network requests that may
		 * fail themselves.
		 */
		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		/* no longer running, even if the error is caught */
		pgstat_progress_end_command();
		export_discard(st);
		running_exports = list_delete_ptr(running_exports, st);
		ReThrowError(edata);
	}
	PG_END_TRY();

	running_exports = list_delete_ptr(running_exports, st);

	/* release curl handles */
	{
		ListCell   *lc;

		foreach(lc, st->parts)
		{
			ExportPart *part = lfirst(lc);

			if (part->s3)
				egress_s3_upload_abort(part->s3);
		}
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(cxt);
}

static Datum
export_result_datum(FunctionCallInfo fcinfo, EgressExportResult *r)
{
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);
	values[0] = Int64GetDatum((int64) r->rows);
	values[1] = Int64GetDatum((int64) r->files);
	values[2] = Int64GetDatum((int64) r->bytes);
	return HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls));
}

static char *
text_arg(FunctionCallInfo fcinfo, int n)
{
	if (PG_NARGS() <= n || PG_ARGISNULL(n))
		return NULL;
	return text_to_cstring(PG_GETARG_TEXT_PP(n));
}

PG_FUNCTION_INFO_V1(egress_export);

/* egress_export(query text, uri text, options text DEFAULT '') */
Datum
egress_export(PG_FUNCTION_ARGS)
{
	EgressExportResult r = {0};
	char	   *query = text_arg(fcinfo, 0);
	char	   *uri = text_arg(fcinfo, 1);

	if (query == NULL || uri == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("query and uri must not be null")));
	/* as for COPY TO 'file' (workers check this when a destination is added) */
	if (strncmp(uri, "file:", 5) == 0 &&
		!has_privs_of_role(GetUserId(), ROLE_PG_WRITE_SERVER_FILES))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to export to a file"),
				 errdetail("Only roles with privileges of the \"%s\" role may export to a file.",
						   "pg_write_server_files")));
	egress_export_run(query, uri, text_arg(fcinfo, 2), NULL, &r);
	PG_RETURN_DATUM(export_result_datum(fcinfo, &r));
}

/* ---------------------------------------------------------------------
 * Parallel exports
 * ---------------------------------------------------------------------
 */

typedef struct ParallelExportWait
{
	EgressParallel *par;
	uint64		rows;
	uint64		bytes;
	uint64		files;
} ParallelExportWait;

static void
wait_for_parts(void *arg, int nfiles)
{
	ParallelExportWait *w = arg;

	egress_parallel_wait(w->par, &w->rows, &w->bytes, &w->files);
}

/* best effort, raises nothing */
static pg_noinline void
delete_s3_quietly(const char *name, const EgressS3Target *s3)
{
	EgressS3Target t = {0};
	MemoryContext oldcxt = CurrentMemoryContext;

	if (s3)
		t = *s3;
	PG_TRY();
	{
		EgressS3Upload *up;

		egress_s3_parse_uri(name, &t.bucket, &t.key);
		up = egress_s3_upload_begin(&t);
		egress_s3_delete_object(up);
		egress_s3_upload_abort(up);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		FlushErrorState();
	}
	PG_END_TRY();
}

/* the files or objects of parts that finished, after a later failure */
static void
remove_finished_parts(EgressParallel *par, int nparts, const char *uri,
					  const EgressS3Target *s3)
{
	for (int k = 2; k <= nparts; k++)
	{
		EgressPartStatus *ps = egress_parallel_status(par, k);
		char	   *base = psprintf("%s_part%d", uri, k);

		if (!ps->publishing)
			continue;
		for (uint64 j = 1; j <= ps->batches; j++)
		{
			char	   *name = part_name(base, (int) j);

			if (strncmp(name, "file://", 7) == 0)
				(void) unlink(name + 7);
			else
				delete_s3_quietly(name, s3);
		}
	}
}

/*
 * egress_export with parallel => nparts > 1: part 1 in this backend, parts
 * 2..n in part workers, all in this transaction's snapshot.  Part k is
 * written to <uri>_part<k>; parts 2..n are published as they finish, part
 * 1 last, only once every other part has finished: until then the set has
 * no first part and does not look complete, and on any failure the parts
 * already published are removed again.
 */
static void
export_parallel(const char *query, const char *uri, const char *options,
				const EgressS3Target *s3, int nparts, EgressExportResult *result)
{
	ExportState check;
	RawStmt    *rs;
	Oid			relid;
	Relation	rel;
	BlockNumber nblocks;
	const char *strings[EGRESS_PSTR_COUNT] = {0};
	ParallelExportWait w = {0};
	ExportRange range;
	ExportProgress progress = {0};
	MemoryContext oldcxt = CurrentMemoryContext;

	progress.started_at = GetCurrentTimestamp();
	if (nparts > egress_max_workers)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("parallel => %d is more than pg_egress.max_workers (%d)",
						nparts, egress_max_workers),
				 errdetail("Every part of a parallel export but the first is a pg_egress worker."),
				 errhint("Use at most %d, or raise pg_egress.max_workers.", egress_max_workers)));

	/* everything is checked before anything is written */
	memset(&check, 0, sizeof(check));
	parse_uri(uri, &check);
	(void) parse_options(options ? options : "", &check);
	rs = parse_query(query);
	relid = check_splittable(rs, query, nparts, NULL);
	if (TransactionIdIsValid(GetTopTransactionIdIfAny()))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("a parallel export cannot run in a transaction that has written to the database"),
				 errdetail("Its parts read this transaction's snapshot in other sessions, which do not see its uncommitted changes."),
				 errhint("Commit first, or use parallel => 1.")));

	/* every row of the snapshot lies below this size; the last part is open */
	rel = table_open(relid, AccessShareLock);
	nblocks = RelationGetNumberOfBlocks(rel);
	table_close(rel, NoLock);

	strings[EGRESS_PSTR_QUERY] = query;
	strings[EGRESS_PSTR_URI] = uri;
	strings[EGRESS_PSTR_OPTIONS] = options;
	if (s3)
	{
		strings[EGRESS_PSTR_REGION] = s3->region;
		strings[EGRESS_PSTR_ACCESS_KEY] = s3->access_key;
		strings[EGRESS_PSTR_SECRET_KEY] = s3->secret_key;
		strings[EGRESS_PSTR_TOKEN] = s3->session_token;
		strings[EGRESS_PSTR_KMS_KEY] = s3->kms_key;
	}
	/* the whole query's estimate: the leader's row in egress_exports */
	progress.rows_estimate = plan_rows_estimate(rs, query);

	w.par = egress_parallel_begin(EGRESS_PARALLEL_EXPORT, nparts, nblocks, 0, 0,
								  GetUserId(), strings);
	PG_TRY();
	{
		egress_part_range(nblocks, nparts, 1, &range.lo, &range.hi);
		export_run(query, psprintf("%s_part1", uri), options, s3, result, &range,
				   &progress, wait_for_parts, &w);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		egress_parallel_end(w.par);
		remove_finished_parts(w.par, nparts, uri, s3);
		ReThrowError(edata);
	}
	PG_END_TRY();
	egress_parallel_end(w.par);
	result->rows += w.rows;
	result->bytes += w.bytes;
	result->files += w.files;
}

/*
 * A part is about to publish nfiles files: from now on the coordinator
 * removes them if the export fails, whatever becomes of this part.
 */
static void
part_publishing(void *arg, int nfiles)
{
	EgressPartStatus *status = arg;

	status->batches = nfiles;
	pg_write_barrier();
	status->publishing = true;
}

/*
 * export_part
 *		Part worker "part" of a parallel export: the caller's session again
 *		(settings, role, current user and security context, snapshot), its
 *		blocks of the query's table to <uri>_part<part>.
 */
static void
export_part(EgressParallelShared *sh, int part, EgressPartStatus *status)
{
#define PSTR(i) (sh->str_off[i] ? (const char *) sh + sh->str_off[i] : NULL)
	EgressExportResult r = {0};
	EgressS3Target t = {0};
	ExportRange range;
	ExportProgress progress = {0};

	/* DateStyle, TimeZone, extra_float_digits, search_path, role, ... */
	StartTransactionCommand();
	RestoreGUCState((char *) sh + sh->guc_off);
	CommitTransactionCommand();

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	XactIsoLevel = XACT_REPEATABLE_READ;
	/* before anything takes a snapshot: SET TRANSACTION SNAPSHOT */
	ImportSnapshot(sh->snapshot);
	PushActiveSnapshot(GetTransactionSnapshot());
	SetUserIdAndSecContext(sh->current_user, sh->sec_context);
	pgstat_report_activity(STATE_RUNNING, PSTR(EGRESS_PSTR_QUERY));

	t.region = (char *) PSTR(EGRESS_PSTR_REGION);
	t.access_key = (char *) PSTR(EGRESS_PSTR_ACCESS_KEY);
	t.secret_key = (char *) PSTR(EGRESS_PSTR_SECRET_KEY);
	t.session_token = (char *) PSTR(EGRESS_PSTR_TOKEN);
	t.kms_key = (char *) PSTR(EGRESS_PSTR_KMS_KEY);
	egress_part_range(sh->nblocks, sh->nparts, part, &range.lo, &range.hi);
	/* egress_exports adds this part's rows to its leader's */
	progress.started_at = GetCurrentTimestamp();
	progress.leader_pid = sh->coordinator;
	export_run(PSTR(EGRESS_PSTR_QUERY),
			   psprintf("%s_part%d", PSTR(EGRESS_PSTR_URI), part),
			   PSTR(EGRESS_PSTR_OPTIONS), &t, &r, &range, &progress,
			   part_publishing, status);
	status->rows = r.rows;
	status->bytes = r.bytes;
	status->batches = r.files;

	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
#undef PSTR
}

/* a part worker of a parallel export (parallel.c) */
void
egress_export_part_main(Datum main_arg)
{
	egress_part_worker_run(main_arg, export_part);
}

PG_FUNCTION_INFO_V1(egress_export_parallel);

/* egress_export(query text, uri text, options text, parallel integer) */
Datum
egress_export_parallel(PG_FUNCTION_ARGS)
{
	EgressExportResult r = {0};
	char	   *query = text_arg(fcinfo, 0);
	char	   *uri = text_arg(fcinfo, 1);
	int			nparts;

	if (query == NULL || uri == NULL || PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("query, uri and parallel must not be null")));
	nparts = PG_GETARG_INT32(3);
	if (nparts < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("parallel must be at least 1")));
	if (strncmp(uri, "file:", 5) == 0 &&
		!has_privs_of_role(GetUserId(), ROLE_PG_WRITE_SERVER_FILES))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to export to a file"),
				 errdetail("Only roles with privileges of the \"%s\" role may export to a file.",
						   "pg_write_server_files")));
	if (nparts == 1)
		egress_export_run(query, uri, text_arg(fcinfo, 2), NULL, &r);
	else
		export_parallel(query, uri, text_arg(fcinfo, 2), NULL, nparts, &r);
	PG_RETURN_DATUM(export_result_datum(fcinfo, &r));
}

PG_FUNCTION_INFO_V1(egress_export_s3);

/*
 * egress_export_s3(query, bucket, file_path, region, options, kms_key,
 *					access_key, secret_key, session_token): the aws_s3
 * extension's entry point.
 */
Datum
egress_export_s3(PG_FUNCTION_ARGS)
{
	EgressExportResult r = {0};
	EgressS3Target t = {0};
	char	   *query = text_arg(fcinfo, 0);
	char	   *bucket = text_arg(fcinfo, 1);
	char	   *path = text_arg(fcinfo, 2);
	char	   *uri;

	if (query == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("query must not be null")));
	if (bucket == NULL || bucket[0] == '\0' || path == NULL || path[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("bucket and file_path must be given")));
	t.region = text_arg(fcinfo, 3);
	t.kms_key = text_arg(fcinfo, 5);
	t.access_key = text_arg(fcinfo, 6);
	t.secret_key = text_arg(fcinfo, 7);
	t.session_token = text_arg(fcinfo, 8);
	if (strchr(bucket, '/') != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid S3 bucket name \"%s\"", bucket)));
	uri = psprintf("s3://%s/%s", bucket, path);
	egress_export_run(query, uri, text_arg(fcinfo, 4), &t, &r);
	PG_RETURN_DATUM(export_result_datum(fcinfo, &r));
}
