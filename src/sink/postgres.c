/*-------------------------------------------------------------------------
 * postgres.c
 *	  The postgres destination kind: postgres://user@host[:port]/dbname
 *	  (and postgresql://), batches applied to tables of another PostgreSQL
 *	  server (pg_apply.c) over libpq (net/pgconn.c).
 *
 * This file owns the kind: the URL grammar, the privileges a destination
 * needs (as postgres_fdw's: a role that is not a superuser must give a
 * password, may not name files of the server, and may reach only hosts
 * pg_egress.allowed_destination_hosts allows), opening the sink, and the
 * probe of egress_check().
 *
 * The password is an option ("password"), never part of the URL, so that
 * the location egress.destination stores, and every message showing it,
 * holds no secret.  The location is user@host:port/dbname, with the user,
 * a host name and the database name percent-encoded when they hold
 * characters other than letters, digits and "-._~$" (net/pgconn.h).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>

#include "miscadmin.h"
#include "utils/builtins.h"

#include "net/hosts.h"
#include "net/pgconn.h"
#include "pg_egress.h"
#include "sink/pg_apply.h"
#include "sink/sink.h"

static void bad_url(const char *detail, const char *hint) pg_attribute_noreturn();

static void
bad_url(const char *detail, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid PostgreSQL destination URL"),
			 errdetail("%s", detail),
			 hint ? errhint("%s", hint) : 0));
}

#define URL_FORM_HINT "Write it as postgres://user@host[:port]/dbname; give the password and other connection settings as options."

/* a host name as DNS spells it: letters, digits, '-', '.', '_' */
static bool
plain_host_name(const char *h)
{
	if (*h == '\0')
		return false;
	for (; *h; h++)
		if (!((*h >= 'a' && *h <= 'z') || (*h >= 'A' && *h <= 'Z') ||
			  (*h >= '0' && *h <= '9') || *h == '-' || *h == '.' || *h == '_'))
			return false;
	return true;
}

/*
 * postgres://user@host[:port]/dbname -> user@host:port/dbname.  Messages
 * never show the URL: it may carry a password in spite of the rule.
 */
static char *
postgres_parse_url(const char *url)
{
	const char *p;
	const char *auth;
	const char *auth_end;
	const char *at = NULL;
	const char *hp;
	const char *port_start = NULL;
	char	   *user;
	char	   *host;
	char	   *dbname;
	char	   *port = "5432";
	bool		ipv6 = false;
	bool		ok;

	if (strncmp(url, "postgres://", 11) == 0)
		p = url + 11;
	else if (strncmp(url, "postgresql://", 13) == 0)
		p = url + 13;
	else
		bad_url("The URL does not start with postgres:// or postgresql://.", URL_FORM_HINT);

	if (strchr(url, '?') != NULL)
		bad_url("The URL has a query string.",
				"Give connection settings such as sslmode as destination options, not in the URL.");
	if (strchr(url, '#') != NULL)
		bad_url("The URL has a fragment (#).", URL_FORM_HINT);
	for (const char *c = url; *c; c++)
		if ((unsigned char) *c <= ' ' || *c == 0x7f)
			bad_url("The URL contains a space or a control character.",
					"Percent-encode them (%20).");

	auth = p;
	auth_end = strchr(auth, '/');
	if (auth_end == NULL)
		auth_end = auth + strlen(auth);
	for (const char *c = auth; c < auth_end; c++)
		if (*c == '@')
			at = c;
	if (at == NULL || at == auth)
		bad_url("The URL has no user name.", URL_FORM_HINT);
	if (memchr(auth, ':', at - auth) != NULL)
		bad_url("The URL contains a password.",
				"Give the password in destination option \"password\", which is never shown.");
	user = egress_pg_decode(auth, at - auth, &ok);
	if (!ok)
		bad_url("The user name has an invalid percent-encoding.", NULL);

	hp = at + 1;
	if (*hp == '[')
	{
		const char *close = memchr(hp, ']', auth_end - hp);
		unsigned char buf[16];

		if (close == NULL)
			bad_url("An IPv6 address in the URL has no closing bracket.", URL_FORM_HINT);
		host = pnstrdup(hp + 1, close - hp - 1);
		if (inet_pton(AF_INET6, host, buf) != 1)
			bad_url("The host in brackets is not an IPv6 address.", URL_FORM_HINT);
		ipv6 = true;
		if (close + 1 < auth_end)
		{
			if (close[1] != ':')
				bad_url("The IPv6 address is followed by something other than a port.", URL_FORM_HINT);
			port_start = close + 2;
		}
	}
	else
	{
		const char *colon = memchr(hp, ':', auth_end - hp);
		const char *host_end = colon ? colon : auth_end;

		if (host_end == hp)
			bad_url("The URL has no host.", URL_FORM_HINT);
		host = egress_pg_decode(hp, host_end - hp, &ok);
		if (!ok)
			bad_url("The host has an invalid percent-encoding.", NULL);
		/* a socket directory (superusers only, checked by validate) or a name */
		if (host[0] != '/' && !plain_host_name(host))
			bad_url("The host is not a host name, an IPv4 address or an IPv6 address in brackets.",
					"Only one host can be given.");
		if (colon)
			port_start = colon + 1;
	}
	if (port_start != NULL)
	{
		size_t		len = auth_end - port_start;
		long		n = 0;

		if (len == 0 || len > 5 || strspn(port_start, "0123456789") < len)
			bad_url("The port is not a number from 1 to 65535.", NULL);
		port = pnstrdup(port_start, len);
		n = strtol(port, NULL, 10);
		if (n < 1 || n > 65535)
			bad_url("The port is not a number from 1 to 65535.", NULL);
		port = psprintf("%ld", n);	/* no leading zeros */
	}

	if (*auth_end != '/' || auth_end[1] == '\0')
		bad_url("The URL has no database name.", URL_FORM_HINT);
	dbname = egress_pg_decode(auth_end + 1, strlen(auth_end + 1), &ok);
	if (!ok)
		bad_url("The database name has an invalid percent-encoding.", NULL);
	if (strlen(dbname) >= NAMEDATALEN || strlen(user) >= NAMEDATALEN)
		bad_url("The user name or the database name is too long.", NULL);

	return psprintf("%s@%s%s%s:%s/%s",
					egress_pg_encode(user),
					ipv6 ? "[" : "", ipv6 ? host : egress_pg_encode(host), ipv6 ? "]" : "",
					port, egress_pg_encode(dbname));
}

/*
 * At egress_add_destination (and alter), as the owner: what a role that is
 * not a superuser may not do.  Option values are not shown.
 */
static void
postgres_validate(const char *location, const EgressSinkOptions *opts,
				  Oid owner, bool owner_superuser)
{
	EgressPgTarget *t = egress_pg_target(location, opts, owner_superuser);
	const char *const file_options[] = {"sslrootcert", "sslcert", "sslkey"};
	const char *const file_values[] = {opts->sslrootcert, opts->sslcert, opts->sslkey};

	if (owner_superuser)
		return;

	if (opts->password == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED),
				 errmsg("password is required"),
				 errdetail("Destinations of roles that are not superusers must authenticate to the target server with a password."),
				 errhint("Give it in destination option \"password\".")));
	for (int i = 0; i < lengthof(file_options); i++)
		if (file_values[i] != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to set destination option \"%s\"", file_options[i]),
					 errdetail("The option makes the server read a file of its own."),
					 errhint("Only superusers may set it.")));
	if (t->host[0] == '/')
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to use a socket directory as destination host"),
				 errdetail("A Unix-domain socket reaches servers of this machine, which may trust local connections."),
				 errhint("Only superusers may use one; other roles connect over TCP to a host pg_egress.allowed_destination_hosts allows.")));
	egress_check_host_allowed(t->host);
}

static void
postgres_open(EgressSink *sink)
{
	EgressPgTarget *target = egress_pg_target(sink->location, &sink->opts,
											  sink->owner_superuser);

	/* callers set owner_superuser after open: read it at each connection */
	target->owner_superuser_at = &sink->owner_superuser;
	target->owner_at = &sink->owner;
	sink->wants_positions = true;
	sink->ops = &egress_pg_apply_ops;
	sink->private_data = egress_pg_apply_create(sink, target);
}

/*
 * The message of a failed connection, as deliveries and egress_check()
 * show it.
 */
static void
report_connect_failure(EgressSink *sink, const char *error, bool refused)
{
	ereport(ERROR,
			(errcode(refused ? EGRESS_ERRCODE_REJECTED : ERRCODE_CONNECTION_FAILURE),
			 errmsg("could not connect to PostgreSQL destination %s: %s",
					sink->location, error)));
}

/*
 * egress_check(): connect as deliveries do, then see whether the user may
 * create what pg_apply.c creates: its state table goes to
 * default_target_schema or public (the schema, or the database when the
 * schema is still to be created).  Reads only.
 */
char *
egress_postgres_probe(EgressSink *sink)
{
	EgressPgTarget *target = egress_pg_target(sink->location, &sink->opts,
											  sink->owner_superuser);
	const char *schema = sink->opts.default_target_schema ?
		sink->opts.default_target_schema : "public";
	char	   *error = NULL;
	bool		refused = false;
	PGconn	   *volatile conn;
	char	   *volatile result = NULL;

	conn = egress_pgconn_connect_ex(target, &error, &refused);
	if (conn == NULL)
		report_connect_failure(sink, error, refused);
	/* a check answers quickly or says why not: the probe within connect_timeout */
	egress_pgconn_set_timeout(conn, sink->opts.connect_timeout_ms > 0 ?
							  sink->opts.connect_timeout_ms : 10000);

	PG_TRY();
	{
		const char *params[1] = {schema};
		PGresult   *res;
		const char *v = PQparameterStatus(conn, "server_version");
		const char *version = v ? egress_pg_sanitize(pstrdup(v)) : NULL;
		bool		schema_exists;
		bool		may_create;

		res = egress_pgconn_exec_params(conn,
										"SELECT n.oid IS NOT NULL, "
										"CASE WHEN n.oid IS NULL "
										"THEN pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE') "
										"ELSE pg_catalog.has_schema_privilege(n.oid, 'CREATE') "
										"OR (pg_catalog.has_schema_privilege(n.oid, 'USAGE') "
										"AND EXISTS (SELECT FROM pg_catalog.pg_class c "
										"WHERE c.relnamespace OPERATOR(pg_catalog.=) n.oid "
										"AND c.relname OPERATOR(pg_catalog.=) '_pg_egress_state' "
										"AND pg_catalog.has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE'))) END "
										"FROM (SELECT 1) AS one LEFT JOIN pg_catalog.pg_namespace n "
										"ON n.nspname OPERATOR(pg_catalog.=) $1",
										1, params, &error);
		if (res == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("could not query PostgreSQL destination %s: %s",
							sink->location, error)));
		if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
		{
			char	   *msg = egress_pgconn_error(conn, res);

			PQclear(res);
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("could not query PostgreSQL destination %s: %s",
							sink->location, msg)));
		}
		schema_exists = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
		may_create = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
		PQclear(res);
		if (!may_create)
			ereport(ERROR,
					(errcode(EGRESS_ERRCODE_REJECTED),
					 errmsg("PostgreSQL destination %s: permission denied to create tables in %s \"%s\"",
							sink->location,
							schema_exists ? "schema" : "the database, for schema",
							schema),
					 errhint(schema_exists ?
							 "Grant CREATE on the schema to the destination's user on the target server." :
							 "Grant CREATE on the database to the destination's user on the target server, or create the schema for it.")));
		result = psprintf("connected to PostgreSQL %s at %s; the user may create tables in %s \"%s\"",
						  version ? version : "(unknown version)", sink->location,
						  schema_exists ? "schema" : "the database, for schema", schema);
	}
	PG_FINALLY();
	{
		egress_pgconn_close(conn);
	}
	PG_END_TRY();
	return result;
}

const EgressSinkKind egress_postgres_sink_kind = {
	.name = "postgres",
	.schemes = {"postgres://", "postgresql://", NULL},
	.parse_url = postgres_parse_url,
	.validate = postgres_validate,
	.open = postgres_open,
};
