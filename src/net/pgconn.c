/*-------------------------------------------------------------------------
 * pgconn.c
 *	  libpq connections of postgres:// destinations.
 *
 * Everything runs libpq in non-blocking mode and waits on the process
 * latch and the connection's socket (WaitLatchOrSocket, WL_EXIT_ON_PM_DEATH,
 * wait event PG_WAIT_EXTENSION), calling CHECK_FOR_INTERRUPTS between
 * waits: a slow or dead target never keeps a worker from serving SIGTERM,
 * a pause or a query cancel.
 *
 * Security, for destinations whose owner is not a superuser (the model is
 * postgres_fdw's check_conn_params and PQconnectionUsedPassword):
 *	- a password must be given (it always is explicitly: libpq then never
 *	  reads a password file), and the server must have asked for it: a
 *	  target that lets the connection in without one (trust, peer, ident,
 *	  a certificate) could be the local server, reached with the rights of
 *	  the operating system user the server runs as;
 *	- the host is resolved here and the connection pinned (hostaddr) to an
 *	  address pg_egress.allowed_destination_hosts allows, keeping host= so
 *	  that sslmode=verify-full still checks the name; socket directories are
 *	  refused;
 *	- every libpq option that could make libpq use a file or a credential
 *	  of the server's operating system user is given explicitly: passfile
 *	  (a file that does not exist), sslcert and sslkey (likewise: no client
 *	  certificate from ~/.postgresql), gssencmode=disable (no Kerberos
 *	  credentials of the server).  Options given explicitly win over the
 *	  server's PG* environment and service file; no connection string is
 *	  expanded (expand_dbname is false), so a database name cannot carry
 *	  options.
 *
 * Messages never show the password: libpq does not put it into its
 * messages, and nothing here adds it.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <netdb.h>
#include <sys/socket.h>
#include <arpa/inet.h>

#include "mb/pg_wchar.h"
#include "access/xact.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "net/hosts.h"
#include "net/pgconn.h"

/* libpq keywords a connection is made with, and the terminator */
#define PGCONN_MAX_KEYWORDS 32
#define PGCONN_DEFAULT_CONNECT_TIMEOUT_MS	10000
#define PGCONN_DEFAULT_STATEMENT_TIMEOUT_MS	(30L * 60 * 1000)

/*
 * TCP keepalives and TCP_USER_TIMEOUT: a target whose host is gone (no
 * reset ever comes) is noticed by the kernel within about a minute, even
 * while a statement runs; a live server answering the probes is never cut
 * short, however long its statement takes.  A server that is up but hangs
 * is caught by the statement deadline (option "timeout").
 */
#define PGCONN_KEEPALIVES_IDLE		"30"
#define PGCONN_KEEPALIVES_INTERVAL	"10"
#define PGCONN_KEEPALIVES_COUNT		"3"
#define PGCONN_TCP_USER_TIMEOUT		"60000"
#define PGCONN_COPY_CHUNK	(64 * 1024)

/*
 * Given to libpq instead of the server user's files: a path that cannot
 * exist (a file below /dev/null), which libpq treats as "no such file"
 * without a warning.
 */
#define PGCONN_NO_FILE		"/dev/null/pg_egress-none"

/* settings for the target session: unambiguous text input and output */
#define PGCONN_SESSION_SQL \
	"SET search_path = pg_catalog; SET datestyle = ISO; " \
	"SET intervalstyle = postgres; SET extra_float_digits = 3"

/*
 * The statement deadline of each open connection (option "timeout"), kept
 * here so that the callers' signatures need not carry it.  Entries live in
 * TopMemoryContext and go at egress_pgconn_close.
 */
typedef struct PgConnTimeout
{
	PGconn	   *conn;
	long		timeout_ms;
} PgConnTimeout;

static List *pgconn_timeouts = NIL;

static bool pgconn_wait(PGconn *conn, int io_flags, TimestampTz deadline);
static char *pgconn_message(const char *msg);
static bool pgconn_flush(PGconn *conn, TimestampTz deadline, char **error);
static PGresult *pgconn_collect(PGconn *conn, const char *copy_data,
								size_t copy_len, TimestampTz deadline,
								char **error);
static PGresult *pgconn_exec_until(PGconn *conn, const char *sql,
								   const char *copy_data, size_t copy_len,
								   TimestampTz deadline, char **error);

/* ---------------------------------------------------------------------
 * Locations
 * ---------------------------------------------------------------------
 */

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

char *
egress_pg_decode(const char *s, size_t len, bool *ok)
{
	char	   *out = palloc(len + 1);
	size_t		n = 0;

	*ok = true;
	for (size_t i = 0; i < len; i++)
	{
		if (s[i] == '%')
		{
			int			hi = (i + 2 < len) ? hexval(s[i + 1]) : -1;
			int			lo = hi >= 0 ? hexval(s[i + 2]) : -1;

			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
			{
				*ok = false;
				break;
			}
			out[n++] = (char) (hi * 16 + lo);
			i += 2;
		}
		else
			out[n++] = s[i];
	}
	out[n] = '\0';
	return out;
}

char *
egress_pg_encode(const char *s)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (const unsigned char *p = (const unsigned char *) s; *p; p++)
	{
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			(*p >= '0' && *p <= '9') || *p == '-' || *p == '.' ||
			*p == '_' || *p == '~' || *p == '$')
			appendStringInfoChar(&buf, (char) *p);
		else
			appendStringInfo(&buf, "%%%02X", *p);
	}
	return buf.data;
}

/*
 * A location is what postgres.c's parse_url stores:
 *	  <user>@<host>:<port>/<dbname>
 * user, dbname and a host that is not an IPv6 address are percent-encoded
 * (egress_pg_encode), an IPv6 address is in brackets.
 */
EgressPgTarget *
egress_pg_target(const char *location, const EgressSinkOptions *opts,
				 bool owner_superuser)
{
	EgressPgTarget *t = palloc0(sizeof(EgressPgTarget));
	const char *at = strchr(location, '@');
	const char *h;
	const char *hend;
	const char *p;
	const char *slash;
	bool		ok1,
				ok2,
				ok3 = true;

	if (at == NULL || at == location)
		goto bad;
	h = at + 1;
	if (*h == '[')
	{
		hend = strchr(h, ']');
		if (hend == NULL)
			goto bad;
		t->host = pnstrdup(h + 1, hend - h - 1);
		p = hend + 1;
	}
	else
	{
		hend = h + strcspn(h, ":/");
		t->host = egress_pg_decode(h, hend - h, &ok3);
		p = hend;
	}
	if (*p != ':')
		goto bad;
	p++;
	slash = strchr(p, '/');
	if (slash == NULL || slash == p || slash[1] == '\0')
		goto bad;
	t->port = pnstrdup(p, slash - p);
	t->user = egress_pg_decode(location, at - location, &ok1);
	t->dbname = egress_pg_decode(slash + 1, strlen(slash + 1), &ok2);
	if (!ok1 || !ok2 || !ok3 || t->host[0] == '\0' ||
		strspn(t->port, "0123456789") != strlen(t->port))
		goto bad;
	t->opts = opts;
	t->owner_superuser = owner_superuser;
	return t;

bad:
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid postgres destination location"),
			 errdetail("A location of kind postgres is user@host:port/dbname.")));
	return NULL;				/* keep the compiler quiet */
}

/* ---------------------------------------------------------------------
 * Waiting
 * ---------------------------------------------------------------------
 */

/*
 * Waits until the socket is ready for io_flags (WL_SOCKET_*), serving
 * interrupts.  false once deadline (0: none) has passed.
 */
static bool
pgconn_wait(PGconn *conn, int io_flags, TimestampTz deadline)
{
	for (;;)
	{
		long		timeout = -1;
		int			events = WL_EXIT_ON_PM_DEATH | WL_LATCH_SET | io_flags;
		int			rc;

		CHECK_FOR_INTERRUPTS();
		if (deadline != 0)
		{
			TimestampTz now = GetCurrentTimestamp();

			if (now >= deadline)
				return false;
			timeout = (long) ((deadline - now + 999) / 1000);
			events |= WL_TIMEOUT;
		}
		rc = WaitLatchOrSocket(MyLatch, events, PQsocket(conn), timeout,
							   PG_WAIT_EXTENSION);
		if (rc & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
		if (rc & io_flags)
			return true;
	}
}

/*
 * libpq names the files it looks for in the server user's home directory
 * (~/.postgresql/root.crt when sslmode is verify-ca or verify-full and no
 * sslrootcert is given): messages say "~/.postgresql/..." instead, so that
 * the server's file system layout is not shown to the destination's owner.
 * In place: the text between the opening quote and "/.postgresql/" becomes
 * "~".
 */
static void
pgconn_hide_home(StringInfo buf)
{
	const char *dir = "/.postgresql/";
	const char *s = buf->data;
	const char *p;
	StringInfoData out;

	if (strstr(s, dir) == NULL)
		return;
	initStringInfo(&out);
	while ((p = strstr(s, dir)) != NULL)
	{
		const char *q = p;

		while (q > s && q[-1] != '"' && q[-1] != ' ')
			q--;
		appendBinaryStringInfo(&out, s, q - s);
		appendStringInfoChar(&out, '~');
		appendStringInfoString(&out, dir);
		s = p + strlen(dir);
	}
	appendStringInfoString(&out, s);
	pfree(buf->data);
	*buf = out;
}

/* libpq's message as one line (white space runs made one space), palloc'd */
static char *
pgconn_message(const char *msg)
{
	StringInfoData buf;
	bool		space = false;

	initStringInfo(&buf);
	for (const char *p = msg ? msg : ""; *p; p++)
	{
		if (*p == '\n' || *p == '\r' || *p == '\t' || *p == ' ')
			space = true;
		else
		{
			if (space && buf.len > 0)
				appendStringInfoChar(&buf, ' ');
			space = false;
			appendStringInfoChar(&buf, *p);
		}
	}
	if (buf.len == 0)
		return pstrdup("connection to the target server failed");
	pgconn_hide_home(&buf);
	return egress_pg_sanitize(buf.data);
}

/*
 * Text from the target server made safe for messages and the catalog:
 * bytes that are not valid in the database encoding and control characters
 * become '?'.  In place; returns s.
 */
char *
egress_pg_sanitize(char *s)
{
	int			enc = GetDatabaseEncoding();
	char	   *p = s;
	int			left = strlen(s);

	while (left > 0)
	{
		int			l;

		if ((unsigned char) *p < 0x20 || *p == 0x7f)
		{
			*p++ = '?';
			left--;
			continue;
		}
		l = pg_encoding_verifymbchar(enc, p, left);
		if (l <= 0)
		{
			*p++ = '?';
			left--;
			continue;
		}
		p += l;
		left -= l;
	}
	return s;
}

/* ---------------------------------------------------------------------
 * Connecting
 * ---------------------------------------------------------------------
 */

/*
 * Notices and warnings of the target session: libpq's default prints them
 * on stderr, i.e. into this server's log, where a target (its triggers,
 * its DDL chatter) could write at will.  Shown at DEBUG1 only, one line,
 * cut short.
 */
static void
pgconn_notice_receiver(void *arg, const PGresult *res)
{
	char	   *msg = pgconn_message(PQresultErrorMessage(res));

	if (strlen(msg) > 300)
		msg[300] = '\0';
	ereport(DEBUG1,
			(errmsg_internal("PostgreSQL destination: %s", msg)));
}

/*
 * For owners that are not superusers: the first address host resolves to
 * that pg_egress.allowed_destination_hosts allows, as text, or NULL with
 * *error set.
 */
static char *
pgconn_pin_address(const EgressPgTarget *target, char **error, bool *refused)
{
	struct addrinfo hints;
	struct addrinfo *res = NULL;
	char		why[256] = "";
	int			rc;
	char	   *result = NULL;

	if (target->host[0] == '/' || target->host[0] == '@')
	{
		*error = psprintf("socket directories are not allowed as the host of destinations of roles that are not superusers");
		*refused = true;
		return NULL;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(target->host, target->port, &hints, &res);
	if (rc != 0)
	{
		/* perhaps for a while only: retried */
		*error = psprintf("could not resolve host \"%s\": %s",
						  target->host, gai_strerror(rc));
		return NULL;
	}
	for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next)
	{
		char		text[INET6_ADDRSTRLEN];
		const void *a;

		if (ai->ai_family == AF_INET)
			a = &((struct sockaddr_in *) ai->ai_addr)->sin_addr;
		else if (ai->ai_family == AF_INET6)
			a = &((struct sockaddr_in6 *) ai->ai_addr)->sin6_addr;
		else
			continue;
		if (!egress_address_allowed(target->host, ai->ai_addr, why, sizeof(why)))
			continue;
		if (inet_ntop(ai->ai_family, a, text, sizeof(text)) == NULL)
			continue;
		result = pstrdup(text);
		break;
	}
	freeaddrinfo(res);
	*refused = (result == NULL);
	if (result == NULL)
		*error = psprintf("destination host \"%s\" is not allowed: %s; pg_egress.allowed_destination_hosts does not allow it for destinations of roles that are not superusers",
						  target->host, why[0] ? why : "it has no address");
	return result;
}

PGconn *
egress_pgconn_connect(const EgressPgTarget *target, char **error)
{
	bool		refused;

	return egress_pgconn_connect_ex(target, error, &refused);
}

/* one libpq keyword of a connection; an unset (NULL) value is left out */
static void
conn_kw(const char **keys, const char **vals, int *n, const char *key,
		const char *val)
{
	if (val == NULL)
		return;
	Assert(*n < PGCONN_MAX_KEYWORDS - 1);
	keys[*n] = key;
	vals[*n] = val;
	(*n)++;
}

PGconn *
egress_pgconn_connect_ex(const EgressPgTarget *target, char **error,
						 bool *refused)
{
	const EgressSinkOptions *opts = target->opts;
	bool		owner_superuser = target->owner_superuser_at ?
		*target->owner_superuser_at : target->owner_superuser;
	const char *keys[PGCONN_MAX_KEYWORDS];
	const char *vals[PGCONN_MAX_KEYWORDS];
	int			n = 0;
	char	   *hostaddr = NULL;
	char		timeout_s[32];
	long		timeout_ms;
	TimestampTz deadline;
	PGconn	   *volatile conn = NULL;

	*error = NULL;
	*refused = false;

	/* the owner's status now, not when the worker's session began */
	if (target->owner_at != NULL && OidIsValid(*target->owner_at))
	{
		MemoryContext oldcxt = CurrentMemoryContext;
		bool		in_xact = IsTransactionState();

		if (!in_xact)
		{
			SetCurrentStatementStartTimestamp();
			StartTransactionCommand();
		}
		owner_superuser = superuser_arg(*target->owner_at);
		if (!in_xact)
			CommitTransactionCommand();
		MemoryContextSwitchTo(oldcxt);
	}

	if (!owner_superuser)
	{
		/* checked at add time too; checked again in case the owner lost superuser */
		if (opts == NULL || opts->password == NULL || opts->password[0] == '\0')
		{
			*error = pstrdup("a password is required for destinations of roles that are not superusers");
			*refused = true;
			return NULL;
		}
		if ((opts->sslcert || opts->sslkey || opts->sslrootcert))
		{
			*error = pstrdup("options \"sslcert\", \"sslkey\" and \"sslrootcert\" are allowed only for destinations of superusers");
			*refused = true;
			return NULL;
		}
		hostaddr = pgconn_pin_address(target, error, refused);
		if (hostaddr == NULL)
			return NULL;
	}

	timeout_ms = (opts && opts->connect_timeout_ms > 0) ?
		opts->connect_timeout_ms : PGCONN_DEFAULT_CONNECT_TIMEOUT_MS;
	/* libpq's own timer (seconds, at least 2) as a backstop to ours */
	snprintf(timeout_s, sizeof(timeout_s), "%ld", Max(2, (timeout_ms + 999) / 1000));

	conn_kw(keys, vals, &n, "host", target->host);
	conn_kw(keys, vals, &n, "hostaddr", hostaddr);
	conn_kw(keys, vals, &n, "port", target->port ? target->port : "5432");
	conn_kw(keys, vals, &n, "dbname", target->dbname);
	conn_kw(keys, vals, &n, "user", target->user);
	if (opts && opts->password && opts->password[0] != '\0')
		conn_kw(keys, vals, &n, "password", opts->password);
	conn_kw(keys, vals, &n, "sslmode", opts ? opts->sslmode : NULL);
	conn_kw(keys, vals, &n, "sslrootcert", opts ? opts->sslrootcert : NULL);
	conn_kw(keys, vals, &n, "connect_timeout", timeout_s);
	conn_kw(keys, vals, &n, "application_name", "pg_egress");
	conn_kw(keys, vals, &n, "keepalives", "1");
	conn_kw(keys, vals, &n, "keepalives_idle", PGCONN_KEEPALIVES_IDLE);
	conn_kw(keys, vals, &n, "keepalives_interval", PGCONN_KEEPALIVES_INTERVAL);
	conn_kw(keys, vals, &n, "keepalives_count", PGCONN_KEEPALIVES_COUNT);
	conn_kw(keys, vals, &n, "tcp_user_timeout", PGCONN_TCP_USER_TIMEOUT);
	conn_kw(keys, vals, &n, "client_encoding", GetDatabaseEncodingName());
	if (owner_superuser)
	{
		conn_kw(keys, vals, &n, "sslcert", opts ? opts->sslcert : NULL);
		conn_kw(keys, vals, &n, "sslkey", opts ? opts->sslkey : NULL);
	}
	else
	{
		/* nothing of the server's operating system user (see the top) */
		conn_kw(keys, vals, &n, "passfile", PGCONN_NO_FILE);
		conn_kw(keys, vals, &n, "sslcert", PGCONN_NO_FILE);
		conn_kw(keys, vals, &n, "sslkey", PGCONN_NO_FILE);
		conn_kw(keys, vals, &n, "gssencmode", "disable");
	}
	keys[n] = NULL;
	vals[n] = NULL;

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);

	conn = PQconnectStartParams(keys, vals, false);
	if (conn == NULL)
	{
		*error = pstrdup("out of memory connecting to the target server");
		return NULL;
	}
	if (PQstatus(conn) == CONNECTION_BAD)
	{
		*error = pgconn_message(PQerrorMessage(conn));
		PQfinish(conn);
		return NULL;
	}
	PQsetNoticeReceiver(conn, pgconn_notice_receiver, (void *) target->host);

	PG_TRY();
	{
		/* PQconnectPoll's contract: wait for write-ready first */
		PostgresPollingStatusType status = PGRES_POLLING_WRITING;

		while (status != PGRES_POLLING_OK && status != PGRES_POLLING_FAILED)
		{
			int			io = (status == PGRES_POLLING_READING) ?
				WL_SOCKET_READABLE : WL_SOCKET_WRITEABLE;

			if (!pgconn_wait(conn, io, deadline))
			{
				*error = psprintf("timeout connecting to the target server \"%s\" port %s after %ld ms",
								  target->host, target->port ? target->port : "5432",
								  timeout_ms);
				break;
			}
			status = PQconnectPoll(conn);
		}
	}
	PG_CATCH();
	{
		PQfinish(conn);
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (*error == NULL && PQstatus(conn) != CONNECTION_OK)
		*error = pgconn_message(PQerrorMessage(conn));
	if (*error != NULL)
	{
		PQfinish(conn);
		return NULL;
	}

	/* before anything is sent: did the server want the password? */
	if (!owner_superuser && !PQconnectionUsedPassword(conn))
	{
		PQfinish(conn);
		*error = psprintf("the target server \"%s\" did not ask for the password: destinations of roles that are not superusers must authenticate with a password",
						  target->host);
		*refused = true;
		return NULL;
	}

	PQsetNoticeReceiver(conn, pgconn_notice_receiver, NULL);
	if (PQsetnonblocking(conn, 1) != 0)
	{
		*error = pgconn_message(PQerrorMessage(conn));
		PQfinish(conn);
		return NULL;
	}

	egress_pgconn_set_timeout(conn, timeout_ms);
	PG_TRY();
	{
		PGresult   *res;

		/* the session's settings: within what is left of connect_timeout */
		res = pgconn_exec_until(conn, PGCONN_SESSION_SQL, NULL, 0,
								deadline, error);
		if (res != NULL && PQresultStatus(res) != PGRES_COMMAND_OK)
			*error = psprintf("could not set up the target session: %s",
							  egress_pgconn_error(conn, res));
		if (res)
			PQclear(res);
	}
	PG_CATCH();
	{
		egress_pgconn_close(conn);
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (*error != NULL)
	{
		egress_pgconn_close(conn);
		return NULL;
	}
	egress_pgconn_set_timeout(conn, (opts && opts->statement_timeout_ms > 0) ?
							  opts->statement_timeout_ms :
							  PGCONN_DEFAULT_STATEMENT_TIMEOUT_MS);
	return conn;
}

void
egress_pgconn_set_timeout(PGconn *conn, long timeout_ms)
{
	ListCell   *lc;
	PgConnTimeout *e;
	MemoryContext oldcxt;

	foreach(lc, pgconn_timeouts)
	{
		e = lfirst(lc);
		if (e->conn == conn)
		{
			e->timeout_ms = timeout_ms;
			return;
		}
	}
	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	e = palloc(sizeof(PgConnTimeout));
	e->conn = conn;
	e->timeout_ms = timeout_ms;
	pgconn_timeouts = lappend(pgconn_timeouts, e);
	MemoryContextSwitchTo(oldcxt);
}

/* the statement timeout set for conn (egress_pgconn_set_timeout), or the default */
static long
pgconn_timeout_ms(PGconn *conn)
{
	ListCell   *lc;

	foreach(lc, pgconn_timeouts)
	{
		PgConnTimeout *e = lfirst(lc);

		if (e->conn == conn)
			return e->timeout_ms;
	}
	return PGCONN_DEFAULT_STATEMENT_TIMEOUT_MS;
}

/* the deadline of a statement started now on conn */
static TimestampTz
pgconn_statement_deadline(PGconn *conn)
{
	return TimestampTzPlusMilliseconds(GetCurrentTimestamp(), pgconn_timeout_ms(conn));
}

/* *error for a statement whose deadline passed */
static char *
pgconn_timeout_error(PGconn *conn)
{
	return psprintf("the target server did not answer within %ld ms: connection closed",
					pgconn_timeout_ms(conn));
}

void
egress_pgconn_close(PGconn *conn)
{
	ListCell   *lc;

	if (conn == NULL)
		return;
	foreach(lc, pgconn_timeouts)
	{
		PgConnTimeout *e = lfirst(lc);

		if (e->conn == conn)
		{
			pgconn_timeouts = foreach_delete_current(pgconn_timeouts, lc);
			pfree(e);
			break;
		}
	}

	/*
	 * PQfinish only queues a Terminate message on a non-blocking connection
	 * and closes the socket: it never waits for a target that does not
	 * answer (PQcancel would, for its own connection).
	 */
	PQfinish(conn);
}

/* ---------------------------------------------------------------------
 * Queries
 * ---------------------------------------------------------------------
 */

/*
 * sends what libpq has buffered; false with *error when the connection broke
 * or deadline passed
 */
static bool
pgconn_flush(PGconn *conn, TimestampTz deadline, char **error)
{
	for (;;)
	{
		int			rc = PQflush(conn);

		if (rc == 0)
			return true;
		if (rc < 0)
		{
			*error = pgconn_message(PQerrorMessage(conn));
			return false;
		}
		/* the server may wait for us to read before it reads more */
		if (!pgconn_wait(conn, WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE, deadline))
		{
			*error = pgconn_timeout_error(conn);
			return false;
		}
		if (PQconsumeInput(conn) == 0)
		{
			*error = pgconn_message(PQerrorMessage(conn));
			return false;
		}
	}
}

/* sends a COPY's data and ends it; false with *error when the connection broke */
static bool
pgconn_copy_in(PGconn *conn, const char *data, size_t len,
			   TimestampTz deadline, char **error)
{
	size_t		off = 0;

	while (data != NULL && off < len)
	{
		int			chunk = (int) Min(len - off, (size_t) PGCONN_COPY_CHUNK);
		int			rc = PQputCopyData(conn, data + off, chunk);

		if (rc < 0)
		{
			*error = pgconn_message(PQerrorMessage(conn));
			return false;
		}
		if (rc == 0)
		{
			/* libpq's buffer is full: let it drain */
			if (!pgconn_wait(conn, WL_SOCKET_WRITEABLE | WL_SOCKET_READABLE, deadline))
			{
				*error = pgconn_timeout_error(conn);
				return false;
			}
			if (PQconsumeInput(conn) == 0 || PQflush(conn) < 0)
			{
				*error = pgconn_message(PQerrorMessage(conn));
				return false;
			}
			continue;
		}
		off += chunk;
		if (PQflush(conn) < 0)
		{
			*error = pgconn_message(PQerrorMessage(conn));
			return false;
		}
	}
	for (;;)
	{
		int			rc = PQputCopyEnd(conn, NULL);

		if (rc < 0)
		{
			*error = pgconn_message(PQerrorMessage(conn));
			return false;
		}
		if (rc == 1)
			break;
		if (!pgconn_wait(conn, WL_SOCKET_WRITEABLE, deadline))
		{
			*error = pgconn_timeout_error(conn);
			return false;
		}
	}
	return pgconn_flush(conn, deadline, error);
}

/*
 * Collects the results of the query sent: the first error result if there
 * is one, else the last result.  NULL with *error when the connection broke.
 */
static PGresult *
pgconn_collect(PGconn *conn, const char *copy_data, size_t copy_len,
			   TimestampTz deadline, char **error)
{
	PGresult   *volatile kept = NULL;

	PG_TRY();
	{
		for (;;)
		{
			PGresult   *res;

			while (PQisBusy(conn))
			{
				if (!pgconn_wait(conn, WL_SOCKET_READABLE, deadline))
				{
					*error = pgconn_timeout_error(conn);
					break;
				}
				if (PQconsumeInput(conn) == 0)
				{
					*error = pgconn_message(PQerrorMessage(conn));
					break;
				}
			}
			if (*error != NULL)
				break;
			res = PQgetResult(conn);
			if (res == NULL)
				break;
			switch (PQresultStatus(res))
			{
				case PGRES_COPY_IN:
					PQclear(res);
					if (!pgconn_copy_in(conn, copy_data, copy_len, deadline, error))
						break;
					continue;
				case PGRES_COPY_OUT:
				case PGRES_COPY_BOTH:
					/* not used by pg_egress: end it */
					PQclear(res);
					*error = pstrdup("unexpected COPY TO on the target connection");
					break;
				case PGRES_FATAL_ERROR:
				case PGRES_BAD_RESPONSE:
				case PGRES_NONFATAL_ERROR:
					if (kept != NULL && PQresultStatus(kept) == PGRES_FATAL_ERROR)
						PQclear(res);
					else
					{
						if (kept)
							PQclear(kept);
						kept = res;
					}
					continue;
				default:
					if (kept != NULL && PQresultStatus(kept) == PGRES_FATAL_ERROR)
						PQclear(res);
					else
					{
						if (kept)
							PQclear(kept);
						kept = res;
					}
					continue;
			}
			break;				/* after an error set in the switch */
		}
	}
	PG_CATCH();
	{
		if (kept)
			PQclear(kept);
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (*error != NULL)
	{
		if (kept)
			PQclear(kept);
		return NULL;
	}
	if (kept == NULL)
		*error = pstrdup("the target server sent no result");
	return kept;
}

PGresult *
egress_pgconn_exec(PGconn *conn, const char *sql,
				   const char *copy_data, size_t copy_len, char **error)
{
	return pgconn_exec_until(conn, sql, copy_data, copy_len,
							 pgconn_statement_deadline(conn), error);
}

static PGresult *
pgconn_exec_until(PGconn *conn, const char *sql,
				  const char *copy_data, size_t copy_len,
				  TimestampTz deadline, char **error)
{
	*error = NULL;
	if (PQstatus(conn) != CONNECTION_OK)
	{
		*error = pgconn_message(PQerrorMessage(conn));
		return NULL;
	}
	if (!PQsendQuery(conn, sql))
	{
		*error = pgconn_message(PQerrorMessage(conn));
		return NULL;
	}
	if (!pgconn_flush(conn, deadline, error))
		return NULL;
	return pgconn_collect(conn, copy_data, copy_len, deadline, error);
}

PGresult *
egress_pgconn_exec_params(PGconn *conn, const char *sql,
						  int nparams, const char *const *values,
						  char **error)
{
	TimestampTz deadline = pgconn_statement_deadline(conn);

	*error = NULL;
	if (PQstatus(conn) != CONNECTION_OK)
	{
		*error = pgconn_message(PQerrorMessage(conn));
		return NULL;
	}
	if (!PQsendQueryParams(conn, sql, nparams, NULL, values, NULL, NULL, 0))
	{
		*error = pgconn_message(PQerrorMessage(conn));
		return NULL;
	}
	if (!pgconn_flush(conn, deadline, error))
		return NULL;
	return pgconn_collect(conn, NULL, 0, deadline, error);
}

/* ---------------------------------------------------------------------
 * Errors
 * ---------------------------------------------------------------------
 */

char *
egress_pgconn_error(PGconn *conn, const PGresult *res)
{
	const char *state;
	const char *primary;
	const char *detail;
	StringInfoData buf;

	if (res == NULL)
		return pgconn_message(conn ? PQerrorMessage(conn) : NULL);

	state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
	if (primary == NULL)
	{
		const char *m = PQresultErrorMessage(res);

		if ((m == NULL || m[0] == '\0') && conn != NULL)
			m = PQerrorMessage(conn);
		return pgconn_message(m);
	}
	initStringInfo(&buf);
	if (state)
		appendStringInfo(&buf, "%s: ", state);
	appendStringInfoString(&buf, primary);
	if (detail)
		appendStringInfo(&buf, " (%s)", detail);
	return pgconn_message(buf.data);
}

bool
egress_pgconn_retryable(const PGresult *res)
{
	const char *state;

	if (res == NULL)
		return true;
	if (PQresultStatus(res) != PGRES_FATAL_ERROR &&
		PQresultStatus(res) != PGRES_BAD_RESPONSE)
		return false;
	state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	/* an error libpq made itself (connection lost): no SQLSTATE */
	if (state == NULL || strlen(state) != 5)
		return true;
	if (strncmp(state, "08", 2) == 0 ||	/* connection exception */
		strncmp(state, "40", 2) == 0 ||	/* serialization, deadlock */
		strncmp(state, "53", 2) == 0 ||	/* insufficient resources */
		strncmp(state, "57P", 3) == 0 ||	/* shutdown, cannot connect now */
		strcmp(state, "55P03") == 0 ||	/* lock not available */
		strcmp(state, "57014") == 0)	/* query canceled (statement_timeout) */
		return true;
	return false;
}
