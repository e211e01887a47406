/*-------------------------------------------------------------------------
 * file.c
 *	  File destinations: one file per batch in a directory.
 *
 * A batch is written to a hidden temporary name, then durable_rename()
 * fsyncs it, renames it into place and fsyncs the directory, so a reader
 * listing the directory never sees half a file and a crash never leaves a
 * visible one.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <dirent.h>
#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "catalog/pg_authid.h"
#include "common/file_perm.h"
#include "common/pg_prng.h"
#include "common/username.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "port.h"
#include "storage/fd.h"
#include "storage/ipc.h"

#include "sink/sink.h"

#define FILE_SINK_BUFSIZE (1024 * 1024)

typedef struct FileSink
{
	char	   *dir;
	int			fd;				/* -1 when no batch is open */
	char		tmp_path[MAXPGPATH];
	char		final_path[MAXPGPATH];
	uint64		counter;		/* makes temporary names unique */
	mode_t		mode;			/* of the files written (option file_mode) */
	char	   *buf;
	size_t		buflen;
} FileSink;

/* The open temporary file, removed if the process exits mid-batch. */
static char exit_cleanup_path[MAXPGPATH];
static bool exit_cleanup_registered = false;

static void
file_sink_exit_cleanup(int code, Datum arg)
{
	if (exit_cleanup_path[0] != '\0')
		unlink(exit_cleanup_path);
}

static void
file_flush(FileSink *fs)
{
	size_t		off = 0;

	while (off < fs->buflen)
	{
		ssize_t		n = write(fs->fd, fs->buf + off, fs->buflen - off);

		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not write file \"%s\": %m", fs->tmp_path)));
		}
		off += n;
	}
	fs->buflen = 0;
}

static void
file_begin_batch(EgressSink *sink, const EgressBatchInfo *info)
{
	FileSink   *fs = sink->private_data;

	Assert(fs->fd < 0);
	if (pg_mkdir_p(fs->dir, pg_dir_create_mode) != 0 && errno != EEXIST)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create directory \"%s\": %m", fs->dir)));

	if (!exit_cleanup_registered)
	{
		before_shmem_exit(file_sink_exit_cleanup, (Datum) 0);
		exit_cleanup_registered = true;
	}

	/*
	 * The final name is known at commit; the temporary one is ours alone:
	 * created here (O_EXCL, never through a symbolic link), under a name
	 * with a random part, so that nobody who can write to the directory can
	 * have it written through a link planted in advance.  Not a transient
	 * file: a CDC batch outlives the transactions decoding runs in, and
	 * this sink closes it itself on every path.
	 */
	for (int attempt = 0;; attempt++)
	{
		snprintf(fs->tmp_path, MAXPGPATH, "%s/.%s-%d-" UINT64_FORMAT "-%08x.jsonl.tmp",
				 fs->dir, info->prefix, MyProcPid, ++fs->counter,
				 (unsigned int) pg_prng_uint32(&pg_global_prng_state));
		fs->fd = BasicOpenFile(fs->tmp_path,
							   O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | PG_BINARY);
		if (fs->fd >= 0)
			break;
		if (errno != EEXIST || attempt >= 10)
		{
			int			save_errno = errno;

			fs->tmp_path[0] = '\0';	/* not ours: never removed */
			errno = save_errno;

			/*
			 * The message is what last_error shows: name the OS user who
			 * needs the right, the server's, not a database role.
			 */
			if (save_errno == EACCES || save_errno == EPERM || save_errno == EROFS)
			{
				char	   *errstr;
				const char *osuser = get_user_name(&errstr);

				errno = save_errno;	/* for %m */

				ereport(ERROR,
						(errcode_for_file_access(),
						 errmsg("could not create a temporary file in \"%s\": %m (the server runs as OS user \"%s\", who needs write access there)",
								fs->dir, osuser ? osuser : "?")));
			}
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not create a temporary file in \"%s\": %m", fs->dir)));
		}
	}
	strlcpy(exit_cleanup_path, fs->tmp_path, MAXPGPATH);

	/*
	 * Created with the server's file mode (0600); option file_mode asks for
	 * another (0644: readable by others, as COPY TO writes): set on the
	 * descriptor, so the umask does not take bits away.
	 */
	if (fs->mode != pg_file_create_mode && fchmod(fs->fd, fs->mode) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not change the permissions of file \"%s\": %m", fs->tmp_path)));
	fs->buflen = 0;
}

static void
file_write(EgressSink *sink, const char *data, size_t len)
{
	FileSink   *fs = sink->private_data;

	if (fs->buflen + len > FILE_SINK_BUFSIZE)
		file_flush(fs);
	if (len > FILE_SINK_BUFSIZE)
	{
		/* larger than the buffer: write it through */
		char	   *save = fs->buf;

		fs->buf = (char *) data;
		fs->buflen = len;
		file_flush(fs);
		fs->buf = save;
		return;
	}
	memcpy(fs->buf + fs->buflen, data, len);
	fs->buflen += len;
}

static void
file_commit_batch(EgressSink *sink, const char *batch_id)
{
	FileSink   *fs = sink->private_data;

	snprintf(fs->final_path, MAXPGPATH, "%s/%s.jsonl", fs->dir, batch_id);
	file_flush(fs);
	if (close(fs->fd) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not close file \"%s\": %m", fs->tmp_path)));
	fs->fd = -1;
	/* fsyncs the file, renames it, fsyncs the directory */
	(void) durable_rename(fs->tmp_path, fs->final_path, ERROR);
	exit_cleanup_path[0] = '\0';
	fs->tmp_path[0] = '\0';
}

static void
file_abort_batch(EgressSink *sink)
{
	FileSink   *fs = sink->private_data;

	if (fs->fd >= 0)
	{
		close(fs->fd);
		fs->fd = -1;
	}
	if (fs->tmp_path[0] != '\0')
		unlink(fs->tmp_path);
	fs->tmp_path[0] = '\0';
	exit_cleanup_path[0] = '\0';
	fs->buflen = 0;
}

/* Remove temporary files an interrupted run under this prefix left behind. */
static void
file_cleanup(EgressSink *sink, const char *prefix_name)
{
	FileSink   *fs = sink->private_data;
	DIR		   *dir;
	struct dirent *de;
	char		prefix[MAXPGPATH];
	size_t		plen;

	snprintf(prefix, sizeof(prefix), ".%s-", prefix_name);
	plen = strlen(prefix);
	dir = AllocateDir(fs->dir);
	if (dir == NULL)
		return;					/* not created yet: nothing to clean */
	while ((de = ReadDirExtended(dir, fs->dir, LOG)) != NULL)
	{
		size_t		len = strlen(de->d_name);

		if (strncmp(de->d_name, prefix, plen) == 0 && len > 4 &&
			strcmp(de->d_name + len - 4, ".tmp") == 0)
		{
			char		path[MAXPGPATH];

			snprintf(path, sizeof(path), "%s/%s", fs->dir, de->d_name);
			if (unlink(path) != 0)
				ereport(LOG,
						(errcode_for_file_access(),
						 errmsg("could not remove file \"%s\": %m", path)));
		}
	}
	FreeDir(dir);
}

static void
file_close(EgressSink *sink)
{
	file_abort_batch(sink);
}

/* the operating system user the server runs as, for messages */
static char *
file_os_user(void)
{
	struct passwd *pw = getpwuid(geteuid());

	return pw ? pstrdup(pw->pw_name) : psprintf("with uid %u", (unsigned int) geteuid());
}

/*
 * Can the server write batches into dir: create files there, or create it
 * (begin_batch makes missing directories, as mkdir -p)?  Judged with the
 * rights of the server's operating system user, without changing
 * anything; ERROR naming that user when not.  Returns what was found.
 * Run at egress_add_destination (file_validate), egress_add_stream and
 * egress_check (file_probe), with the same messages.
 */
static char *
file_check_directory(const char *dir)
{
	char		path[MAXPGPATH];
	struct stat st;

	strlcpy(path, dir, sizeof(path));
	for (;;)
	{
		char	   *slash;

		if (stat(path, &st) == 0)
			break;
		if (errno != ENOENT && errno != ENOTDIR)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not access directory \"%s\" of file destination: %m", path)));
		slash = strrchr(path, '/');
		if (slash == NULL || slash == path)
		{
			strlcpy(path, "/", sizeof(path));
			if (stat(path, &st) != 0)
				ereport(ERROR,
						(errcode_for_file_access(),
						 errmsg("could not access directory \"/\": %m")));
			break;
		}
		*slash = '\0';
	}
	if (!S_ISDIR(st.st_mode))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 strcmp(path, dir) == 0 ?
				 errmsg("\"%s\" of file destination is not a directory", dir) :
				 errmsg("directory \"%s\" of file destination cannot be created: \"%s\" is not a directory",
						dir, path)));
	if (access(path, W_OK | X_OK) != 0)
	{
		int			save_errno = errno;
		char	   *user = file_os_user();

		errno = save_errno;
		ereport(ERROR,
				(errcode_for_file_access(),
				 strcmp(path, dir) == 0 ?
				 errmsg("directory \"%s\" of file destination is not writable by the server", dir) :
				 errmsg("directory \"%s\" of file destination cannot be created by the server", dir),
				 errdetail("The server runs as operating system user \"%s\", which may not create files in \"%s\": %m.",
						   user, path),
				 errhint("Give operating system user \"%s\" the right to write to \"%s\", or choose another directory.",
						 user, path)));
	}
	if (strcmp(path, dir) == 0)
		return psprintf("Directory \"%s\" is writable by operating system user \"%s\".",
						dir, file_os_user());
	return psprintf("Directory \"%s\" does not exist yet; operating system user \"%s\" may create it in \"%s\".",
					dir, file_os_user(), path);
}

static char *
file_probe(EgressSink *sink)
{
	FileSink   *fs = sink->private_data;

	return file_check_directory(fs->dir);
}

static const EgressSinkOps file_sink_ops = {
	.begin_batch = file_begin_batch,
	.write = file_write,
	.commit_batch = file_commit_batch,
	.abort_batch = file_abort_batch,
	.cleanup = file_cleanup,
	.close = file_close,
	.probe = file_probe,
};

/* file:///absolute/directory: the directory, without trailing '/' */
static char *
file_parse_url(const char *url)
{
	char	   *path = pstrdup(url + strlen("file://"));
	size_t		len = strlen(path);

	if (path[0] != '/')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("file destination must name an absolute directory"),
				 errhint("Write it as file:///absolute/directory.")));
	while (len > 1 && path[len - 1] == '/')
		path[--len] = '\0';
	return path;
}

/*
 * Option file_mode: octal permissions of the files written, as a string
 * ("0644").  Only read and write bits, and the server must keep reading
 * and writing its own files (0600 at least).
 */
static mode_t
file_parse_mode(const char *value)
{
	char	   *end;
	long		mode;

	if (value == NULL)
		return pg_file_create_mode;
	errno = 0;
	mode = strtol(value, &end, 8);
	if (value[0] < '0' || value[0] > '7' || *end != '\0' || errno != 0 ||
		strlen(value) > 4 || (mode & ~0666) != 0 || (mode & 0600) != 0600)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("destination option \"file_mode\" must be octal permissions from 0600 to 0666, as a string"),
				 errdetail("The value was \"%s\".", value),
				 errhint("Pass for example {\"file_mode\": \"0644\"} for files everyone may read, as COPY TO writes them.")));
	return (mode_t) mode;
}

static void
file_open(EgressSink *sink)
{
	FileSink   *fs = palloc0(sizeof(FileSink));
	fs->mode = file_parse_mode(sink->opts.file_mode);

	fs->dir = sink->location;
	fs->fd = -1;
	fs->buf = palloc(FILE_SINK_BUFSIZE);
	sink->ops = &file_sink_ops;
	sink->private_data = fs;
}

/*
 * Who may write files (pg_write_server_files) is the catalog's rule, checked
 * by egress_add_destination and by the workers; the sink validates
 * file_mode.  To a role that has that right, say now when the server cannot
 * write into the directory (a role without it learns nothing of the
 * server's files here: it is refused).
 */
static void
file_validate(const char *location, const EgressSinkOptions *opts, Oid owner,
			  bool owner_superuser)
{
	(void) file_parse_mode(opts->file_mode);
	if (owner_superuser || has_privs_of_role(owner, ROLE_PG_WRITE_SERVER_FILES))
		(void) file_check_directory(location);
}

const EgressSinkKind egress_file_sink_kind = {
	.name = "file",
	.schemes = {"file://", NULL},
	.parse_url = file_parse_url,
	.validate = file_validate,
	.open = file_open,
};
