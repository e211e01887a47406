/*-------------------------------------------------------------------------
 * pgconn.h
 *	  libpq connections of postgres:// destinations, from a background
 *	  worker or a backend: every wait (connect, query, COPY) sleeps on the
 *	  process latch and the socket, so that interrupts (SIGTERM, pause,
 *	  drop, query cancel) are served; nothing blocks in libpq.
 *
 * The model is libpqwalreceiver.c / contrib's libpq-be-fe-helpers.h.
 * Failures to reach or talk to the server are returned (false or NULL,
 * with a message that shows no secret), not raised: the sink decides
 * whether to retry.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_PGCONN_H
#define EGRESS_PGCONN_H

#include "libpq-fe.h"

#include "sink/sink_options.h"

/* Where a postgres destination loads: its location (user@host:port/dbname) and options. */
typedef struct EgressPgTarget
{
	char	   *host;			/* host name or address, or a socket directory (superusers) */
	char	   *port;			/* NULL: 5432 */
	char	   *dbname;
	char	   *user;
	const EgressSinkOptions *opts;	/* password, ssl*, connect_timeout_ms */
	bool		owner_superuser;	/* see EgressSink.owner_superuser */

	/*
	 * When set (postgres.c's open points it at EgressSink.owner_superuser,
	 * which callers set after opening the sink), read at each connection
	 * instead of owner_superuser.
	 */
	const bool *owner_superuser_at;
	const Oid  *owner_at;		/* when it points at a valid Oid: superuser_arg() at each connection */
} EgressPgTarget;

/*
 * Parses a location as stored in egress.destination.location for kind
 * postgres (postgres.c's parse_url made it).  ERROR if it is not one.
 */
extern EgressPgTarget *egress_pg_target(const char *location,
										const EgressSinkOptions *opts,
										bool owner_superuser);

/*
 * Connects (non-blocking, at most connect_timeout, waiting on the latch).
 * Non-superuser owners: only to an address pg_egress.allowed_destination_hosts
 * allows, and only if the server asked for the password (as postgres_fdw's
 * check_conn_params/PQconnectionUsedPassword).  Sets search_path to
 * pg_catalog on the target session and application_name to pg_egress.
 * NULL with *error set (palloc'd, no secrets) on failure.
 */
extern PGconn *egress_pgconn_connect(const EgressPgTarget *target, char **error);

/*
 * The same, and *refused says whether the failure is one that retrying
 * cannot cure without a change of the destination or of the target's
 * authentication (a non-superuser's destination without a password, a
 * host pg_egress.allowed_destination_hosts does not allow, a target that
 * did not ask for the password).  Wrong passwords and unreachable servers
 * are not "refused": the target's administrator may fix them.
 */
extern PGconn *egress_pgconn_connect_ex(const EgressPgTarget *target, char **error,
										bool *refused);

/*
 * Closes conn (PQfinish: never waits for the target).  Also the way to drop
 * a connection whose statement ran past its deadline.
 */
extern void egress_pgconn_close(PGconn *conn);

/*
 * The deadline of each later statement on conn (egress_pgconn_exec*):
 * connect sets it from the option "timeout" (default 30 minutes).  A
 * statement that runs past it fails with *error set like a broken
 * connection (retried by the callers); the connection is then unusable:
 * close it.
 */
extern void egress_pgconn_set_timeout(PGconn *conn, long timeout_ms);
extern char *egress_pg_sanitize(char *s);

/*
 * Percent-encoding of the parts of a stored location (user, host name,
 * dbname): everything but letters, digits and "-._~$" is %XX.  decode
 * sets *ok to false on a bad escape or %00.
 */
extern char *egress_pg_encode(const char *s);
extern char *egress_pg_decode(const char *s, size_t len, bool *ok);

/*
 * Sends sql (simple query protocol, may hold several statements) and
 * collects the results, waiting on the latch and the socket.  Returns the
 * last result (caller PQclear()s it) or, when the connection failed, NULL
 * with *error set.  A result with an error status is returned as is: the
 * caller classifies it (egress_pgconn_error()).  Of several results, the
 * first error result is returned if there is one.
 *
 * An ERROR raised while waiting (an interrupt) leaves the connection in
 * the middle of a query: the caller must close it (egress_pgconn_close)
 * rather than use it again.
 *
 * When the query reaches a COPY FROM STDIN, copy_data (copy_len bytes, in
 * COPY text format) is sent for it and the COPY is ended.
 */
extern PGresult *egress_pgconn_exec(PGconn *conn, const char *sql,
									const char *copy_data, size_t copy_len,
									char **error);

/* The same with parameters (extended protocol, text format, one statement). */
extern PGresult *egress_pgconn_exec_params(PGconn *conn, const char *sql,
										   int nparams, const char *const *values,
										   char **error);

/*
 * The message of a failed result or connection, for last_error and the log:
 * SQLSTATE, primary message, detail (never the password: libpq does not put
 * it into messages).
 */
extern char *egress_pgconn_error(PGconn *conn, const PGresult *res);

/*
 * Whether an error result is worth retrying: connection failures, serialization
 * failures, deadlocks, lock timeouts, too many connections, the server shutting
 * down, out of resources (class 08, 40, 53, 57P, 55P03).  Everything else
 * (a constraint, a type, permissions) is a rejection.
 */
extern bool egress_pgconn_retryable(const PGresult *res);

#endif							/* EGRESS_PGCONN_H */
