/*-------------------------------------------------------------------------
 * hosts.h
 *	  Which hosts a destination whose owner is not a superuser may send to:
 *	  pg_egress.allowed_destination_hosts, checked when the destination is
 *	  added (its host name or address) and again on every connection (the
 *	  address actually connected to: DNS answers can change).
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_HOSTS_H
#define EGRESS_HOSTS_H

#include <sys/socket.h>

#include "utils/guc.h"

/* the GUC (defined in guc.c) */
extern char *egress_allowed_destination_hosts;
extern bool egress_check_allowed_hosts(char **newval, void **extra,
									   GucSource source);

/*
 * At egress_add_destination, as the calling role (the destination's
 * owner): ERROR unless a superuser calls, or the destination's host is
 * allowed.  Host names are resolved; every address must be allowed.
 * Only HTTP destinations name a host: S3 destinations send to
 * pg_egress.s3_endpoint, which only a superuser sets.
 */
extern void egress_check_destination_host(const char *kind, const char *location);

/*
 * The host part of egress_check_destination_host, for any kind (postgres
 * destinations call it for owners that are not superusers): ERROR unless
 * host (a name or an address, without brackets) and every address it
 * resolves to now are allowed.
 */
extern void egress_check_host_allowed(const char *host);

/*
 * At connect time: may a destination whose owner is not a superuser, whose
 * URL names url_host, connect to addr?  false with a reason in why (no
 * secrets: the host and the address only).
 */
extern bool egress_address_allowed(const char *url_host, const struct sockaddr *addr,
								   char *why, size_t whylen);

/* the host of an http(s) URL, without brackets; NULL if none */
extern char *egress_url_host(const char *url);

#endif							/* EGRESS_HOSTS_H */
