/*-------------------------------------------------------------------------
 * hosts.c
 *	  pg_egress.allowed_destination_hosts: the hosts a destination whose
 *	  owner is not a superuser may send to.
 *
 * The setting is a comma-separated list of entries:
 *	  *					any address that is not special (below)
 *	  203.0.113.7		an IPv4 or IPv6 address ([::1] or ::1)
 *	  10.1.0.0/16		a CIDR range
 *	  hooks.example		a host name, as written in the URL (trusted
 *						whatever it resolves to)
 *	  .example.com		a domain: every name ending in ".example.com"
 *						(also written *.example.com)
 * Special addresses -- loopback (127.0.0.0/8, ::1), link-local
 * (169.254.0.0/16, where clouds answer metadata requests, fe80::/10),
 * private (10/8, 172.16/12, 192.168/16, fc00::/7, fec0::/10), shared
 * (100.64/10), "this network" (0.0.0.0/8, ::), benchmarking (198.18/15),
 * 192.0.0/24, multicast and reserved (224/3, ff00::/8) -- are reached only
 * through an entry that names them (an address, a range, or the URL's host
 * name).  IPv4-mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::/96) addresses
 * are judged as the IPv4 address they carry.  The default, "*", lets such
 * roles send anywhere but to special addresses; an empty list lets them
 * send nowhere.
 *
 * egress_address_allowed() runs inside libcurl callbacks: it neither
 * allocates nor raises errors.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>

#include <curl/curl.h>

#include "miscadmin.h"

#include "net/hosts.h"

char	   *egress_allowed_destination_hosts = NULL;

#define HOSTS_ENTRY_MAX 256

typedef struct HostAddr
{
	int			family;			/* AF_INET (4 bytes used) or AF_INET6 */
	unsigned char a[16];
} HostAddr;

typedef enum EntryKind
{
	ENTRY_ANY,
	ENTRY_NET,
	ENTRY_NAME,
	ENTRY_DOMAIN
} EntryKind;

typedef struct HostEntry
{
	EntryKind	kind;
	HostAddr	net;			/* ENTRY_NET */
	int			bits;			/* ENTRY_NET */
	char		name[HOSTS_ENTRY_MAX];	/* ENTRY_NAME, ENTRY_DOMAIN: no dots
										 * at either end */
} HostEntry;

typedef struct SpecialRange
{
	int			family;
	unsigned char net[16];
	int			bits;
	const char *what;
} SpecialRange;

static const SpecialRange special_ranges[] = {
	{AF_INET, {0, 0, 0, 0}, 8, "\"this network\""},
	{AF_INET, {10, 0, 0, 0}, 8, "private"},
	{AF_INET, {100, 64, 0, 0}, 10, "shared (carrier-grade NAT)"},
	{AF_INET, {127, 0, 0, 0}, 8, "loopback"},
	{AF_INET, {169, 254, 0, 0}, 16, "link-local"},
	{AF_INET, {172, 16, 0, 0}, 12, "private"},
	{AF_INET, {192, 0, 0, 0}, 24, "special-purpose"},
	{AF_INET, {192, 168, 0, 0}, 16, "private"},
	{AF_INET, {198, 18, 0, 0}, 15, "benchmarking"},
	{AF_INET, {224, 0, 0, 0}, 3, "multicast or reserved"},
	{AF_INET6, {0}, 128, "unspecified"},
	{AF_INET6, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 128, "loopback"},
	{AF_INET6, {0xfc}, 7, "private (unique local)"},
	{AF_INET6, {0xfe, 0x80}, 10, "link-local"},
	{AF_INET6, {0xfe, 0xc0}, 10, "site-local"},
	{AF_INET6, {0xff}, 8, "multicast"},
};

static bool
prefix_match(const unsigned char *a, const unsigned char *net, int bits)
{
	int			bytes = bits / 8;
	int			rest = bits % 8;

	if (memcmp(a, net, bytes) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((a[bytes] ^ net[bytes]) & (0xff << (8 - rest)) & 0xff) == 0;
}

/* IPv4-mapped and NAT64 IPv6 addresses as the IPv4 address they carry */
static void
addr_normalize(HostAddr *h)
{
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};

	if (h->family == AF_INET6 &&
		(memcmp(h->a, mapped, 12) == 0 || memcmp(h->a, nat64, 12) == 0))
	{
		memmove(h->a, h->a + 12, 4);
		memset(h->a + 4, 0, 12);
		h->family = AF_INET;
	}
}

static bool
addr_from_sockaddr(const struct sockaddr *sa, HostAddr *h)
{
	memset(h, 0, sizeof(*h));
	if (sa->sa_family == AF_INET)
	{
		h->family = AF_INET;
		memcpy(h->a, &((const struct sockaddr_in *) sa)->sin_addr, 4);
	}
	else if (sa->sa_family == AF_INET6)
	{
		h->family = AF_INET6;
		memcpy(h->a, &((const struct sockaddr_in6 *) sa)->sin6_addr, 16);
	}
	else
		return false;
	addr_normalize(h);
	return true;
}

/* an address literal (IPv6 possibly in brackets); false if none */
static bool
addr_from_text(const char *text, HostAddr *h)
{
	char		buf[INET6_ADDRSTRLEN + 2];
	size_t		len = strlen(text);

	memset(h, 0, sizeof(*h));
	if (len >= 2 && text[0] == '[' && text[len - 1] == ']')
	{
		text++;
		len -= 2;
	}
	if (len >= sizeof(buf))
		return false;
	memcpy(buf, text, len);
	buf[len] = '\0';
	if (inet_pton(AF_INET, buf, h->a) == 1)
		h->family = AF_INET;
	else if (inet_pton(AF_INET6, buf, h->a) == 1)
		h->family = AF_INET6;
	else
		return false;
	addr_normalize(h);
	return true;
}

static const char *
special_kind(const HostAddr *h)
{
	for (int i = 0; i < lengthof(special_ranges); i++)
	{
		const SpecialRange *r = &special_ranges[i];

		if (r->family == h->family && prefix_match(h->a, r->net, r->bits))
			return r->what;
	}
	return NULL;
}

static void
addr_to_text(const HostAddr *h, char *out, size_t outlen)
{
	if (inet_ntop(h->family, h->a, out, outlen) == NULL)
		strlcpy(out, "(unknown address)", outlen);
}

/*
 * Parses one entry of len bytes; false if it is none of the accepted
 * forms.
 */
static bool
parse_entry(const char *tok, size_t len, HostEntry *e)
{
	char		buf[HOSTS_ENTRY_MAX];
	char	   *slash;
	const char *name;

	memset(e, 0, sizeof(*e));
	if (len == 0 || len >= sizeof(buf))
		return false;
	memcpy(buf, tok, len);
	buf[len] = '\0';

	if (strcmp(buf, "*") == 0)
	{
		e->kind = ENTRY_ANY;
		return true;
	}
	if ((slash = strchr(buf, '/')) != NULL)
	{
		char	   *end;
		long		bits;
		bool		was_v6;

		*slash = '\0';
		if (!addr_from_text(buf, &e->net))
			return false;
		was_v6 = strchr(buf, ':') != NULL;
		errno = 0;
		bits = strtol(slash + 1, &end, 10);
		if (end == slash + 1 || *end != '\0' || errno != 0 || bits < 0 ||
			bits > (was_v6 ? 128 : 32))
			return false;
		/* a mapped or NAT64 range became IPv4: its length too */
		if (was_v6 && e->net.family == AF_INET)
		{
			if (bits < 96)
				return false;
			bits -= 96;
		}
		e->kind = ENTRY_NET;
		e->bits = (int) bits;
		return true;
	}
	if (addr_from_text(buf, &e->net))
	{
		e->kind = ENTRY_NET;
		e->bits = e->net.family == AF_INET ? 32 : 128;
		return true;
	}

	/* a host name, or a domain: ".example.com" or "*.example.com" */
	name = buf;
	e->kind = ENTRY_NAME;
	if (strncmp(name, "*.", 2) == 0)
	{
		e->kind = ENTRY_DOMAIN;
		name += 2;
	}
	else if (name[0] == '.')
	{
		e->kind = ENTRY_DOMAIN;
		name += 1;
	}
	len = strlen(name);
	if (len > 0 && name[len - 1] == '.')
		len--;
	if (len == 0 || name[0] == '.')
		return false;
	for (size_t i = 0; i < len; i++)
	{
		char		c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'))
			return false;
	}
	memcpy(e->name, name, len);
	e->name[len] = '\0';
	return true;
}

/*
 * The next entry of a comma-separated list at *p: [*start, *end) without the
 * white space around it; false at the end of the list.
 */
static bool
next_entry(const char **p, const char **start, const char **end)
{
	while (**p == ' ' || **p == '\t' || **p == ',')
		(*p)++;
	if (**p == '\0')
		return false;
	*start = *p;
	while (**p != '\0' && **p != ',')
		(*p)++;
	*end = *p;
	while (*end > *start && ((*end)[-1] == ' ' || (*end)[-1] == '\t'))
		(*end)--;
	return true;
}

/*
 * Calls fn for every entry of list, until it returns true; returns whether
 * one did.  Entries that do not parse are skipped (the check hook refused
 * them before they could be set).
 */
static bool
for_each_entry(const char *list, bool (*fn) (const HostEntry *e, void *arg), void *arg)
{
	const char *p = list ? list : "";
	const char *start;
	const char *end;
	HostEntry	e;

	while (next_entry(&p, &start, &end))
		if (parse_entry(start, end - start, &e) && fn(&e, arg))
			return true;
	return false;
}

typedef struct NameMatch
{
	const char *host;
	size_t		len;			/* without a trailing dot */
} NameMatch;

static bool
name_entry_matches(const HostEntry *e, void *arg)
{
	NameMatch  *m = arg;
	size_t		elen = strlen(e->name);

	if (e->kind == ENTRY_NAME)
		return elen == m->len && pg_strncasecmp(m->host, e->name, elen) == 0;
	if (e->kind == ENTRY_DOMAIN)
		return m->len > elen + 1 && m->host[m->len - elen - 1] == '.' &&
			pg_strncasecmp(m->host + m->len - elen, e->name, elen) == 0;
	return false;
}

/* is the host name (not an address) listed by name or domain? */
static bool
host_name_listed(const char *host)
{
	NameMatch	m;
	HostAddr	h;

	if (host == NULL || host[0] == '\0' || addr_from_text(host, &h))
		return false;
	m.host = host;
	m.len = strlen(host);
	if (m.len > 0 && host[m.len - 1] == '.')
		m.len--;
	return for_each_entry(egress_allowed_destination_hosts, name_entry_matches, &m);
}

typedef struct AddrMatch
{
	const HostAddr *addr;
	bool		any;
} AddrMatch;

static bool
addr_entry_matches(const HostEntry *e, void *arg)
{
	AddrMatch  *m = arg;

	if (e->kind == ENTRY_ANY)
		m->any = true;
	else if (e->kind == ENTRY_NET && e->net.family == m->addr->family &&
			 prefix_match(m->addr->a, e->net.a, e->bits))
		return true;
	return false;
}

/*
 * Is the address allowed for a URL naming url_host?  If not, *kind is the
 * kind of special address it is, or NULL when it is merely not listed.
 */
static bool
addr_check(const char *url_host, const HostAddr *h, const char **kind)
{
	AddrMatch	m;

	*kind = NULL;
	if (host_name_listed(url_host))
		return true;
	m.addr = h;
	m.any = false;
	if (for_each_entry(egress_allowed_destination_hosts, addr_entry_matches, &m))
		return true;
	*kind = special_kind(h);
	return m.any && *kind == NULL;
}

static bool
addr_allowed(const char *url_host, const HostAddr *h, char *why, size_t whylen)
{
	const char *kind;
	char		text[INET6_ADDRSTRLEN];

	if (addr_check(url_host, h, &kind))
		return true;
	addr_to_text(h, text, sizeof(text));
	if (kind != NULL)
		snprintf(why, whylen, "%s is a %s address", text, kind);
	else
		snprintf(why, whylen, "%s is not listed", text);
	return false;
}

bool
egress_address_allowed(const char *url_host, const struct sockaddr *addr,
					   char *why, size_t whylen)
{
	HostAddr	h;

	if (!addr_from_sockaddr(addr, &h))
	{
		snprintf(why, whylen, "address family %d is not allowed", (int) addr->sa_family);
		return false;
	}
	return addr_allowed(url_host, &h, why, whylen);
}

bool
egress_check_allowed_hosts(char **newval, void **extra, GucSource source)
{
	const char *p = *newval ? *newval : "";
	const char *start;
	const char *end;
	HostEntry	e;

	while (next_entry(&p, &start, &end))
		if (!parse_entry(start, end - start, &e))
		{
			GUC_check_errdetail("\"%.*s\" is not a host name, a domain (.example.com), an IP address, a CIDR range or *.",
								(int) (end - start), start);
			return false;
		}
	return true;
}

char *
egress_url_host(const char *url)
{
	CURLU	   *u = curl_url();
	char	   *host = NULL;
	char	   *result = NULL;

	if (u == NULL)
		return NULL;
	if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
		curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host != NULL)
	{
		size_t		len = strlen(host);

		if (len >= 2 && host[0] == '[' && host[len - 1] == ']')
			result = pnstrdup(host + 1, len - 2);
		else
			result = pstrdup(host);
	}
	if (host)
		curl_free(host);
	curl_url_cleanup(u);
	return result;
}

static void
refuse_host(const char *host, const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("destination host \"%s\" is not allowed", host),
			 errdetail("%s; pg_egress.allowed_destination_hosts does not allow it for destinations of roles that are not superusers.",
					   why),
			 errhint("A superuser can list the host, its address or its network in pg_egress.allowed_destination_hosts.")));
}

void
egress_check_destination_host(const char *kind, const char *location)
{
	char	   *host;

	if (strcmp(kind, "http") != 0 || superuser())
		return;
	host = egress_url_host(location);
	if (host == NULL)
		return;					/* the URL was validated before */
	egress_check_host_allowed(host);
}

void
egress_check_host_allowed(const char *host)
{
	HostAddr	h;
	char		why[256];
	struct addrinfo hints;
	struct addrinfo *res = NULL;
	int			rc;

	if (addr_from_text(host, &h))
	{
		if (!addr_allowed(host, &h, why, sizeof(why)))
			refuse_host(host, why);
		return;
	}
	if (host_name_listed(host))
		return;

	/*
	 * Every address the name has now must be allowed.  A name that does not
	 * resolve now is not refused: the address connected to is checked on
	 * every connection anyway.
	 */
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(host, NULL, &hints, &res);
	if (rc != 0)
		return;
	for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next)
	{
		const char *what;
		char		text[INET6_ADDRSTRLEN];

		if (!addr_from_sockaddr(ai->ai_addr, &h))
			continue;			/* getaddrinfo gave IPv4 and IPv6 only */
		if (addr_check(host, &h, &what))
			continue;
		addr_to_text(&h, text, sizeof(text));
		if (what != NULL)
			snprintf(why, sizeof(why), "\"%s\" resolves to %s, a %s address",
					 host, text, what);
		else
			snprintf(why, sizeof(why), "\"%s\" resolves to %s, which is not listed",
					 host, text);
		freeaddrinfo(res);
		refuse_host(host, why);
	}
	freeaddrinfo(res);
}
