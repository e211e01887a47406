/*-------------------------------------------------------------------------
 * curl_wait.c
 *	  Waiting on libcurl's sockets and the latch together (curl_wait.h).
 *
 * libcurl says which sockets it waits for (curl_multi_fdset) and when it
 * wants to be called anyway (curl_multi_timeout); both go into one
 * WaitEventSet with the process latch and postmaster death.  The set lives
 * for one wait: libcurl opens and closes sockets between calls.  It holds
 * a kernel descriptor (epoll), so it is freed on every path, errors
 * included, before interrupts are served.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/select.h>

#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/wait_event.h"

#include "net/curl_wait.h"

/* egress_curl_wait reset a latch that was set: see egress_curl_wait_done */
static bool latch_consumed = false;

/* how long libcurl may wait, given the caller's limit */
static long
wait_ms(CURLM *multi, long max_ms, CURLMcode *mc)
{
	long		curl_ms = -1;

	*mc = curl_multi_timeout(multi, &curl_ms);
	if (*mc != CURLM_OK)
		return 0;
	if (curl_ms >= 0 && curl_ms < max_ms)
		return curl_ms;
	return max_ms;
}

/* one wait on the latch and the sockets in the sets, up to fd maxfd */
static int
count_sockets(fd_set *rd, fd_set *wr, fd_set *ex, int maxfd)
{
	int			n = 0;

	for (int fd = 0; fd <= maxfd; fd++)
		if (FD_ISSET(fd, rd) || FD_ISSET(fd, wr) || FD_ISSET(fd, ex))
			n++;
	return n;
}

static void
fill_and_wait(WaitEventSet *set, fd_set *rd, fd_set *wr, fd_set *ex,
			  int maxfd, long timeout)
{
	WaitEvent	ev;

	AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (int fd = 0; fd <= maxfd; fd++)
	{
		uint32		events = 0;

		/* an exceptional condition shows as readable */
		if (FD_ISSET(fd, rd) || FD_ISSET(fd, ex))
			events |= WL_SOCKET_READABLE;
		if (FD_ISSET(fd, wr))
			events |= WL_SOCKET_WRITEABLE;
		if (events != 0)
			AddWaitEventToSet(set, events, fd, NULL, NULL);
	}
	(void) WaitEventSetWait(set, timeout, &ev, 1, PG_WAIT_EXTENSION);
}

/* one wait on the latch and the sockets in the sets, up to fd maxfd */
static void
wait_sockets(fd_set *rd, fd_set *wr, fd_set *ex, int maxfd, long timeout)
{
	WaitEventSet *set;

	set = CreateWaitEventSet(CurrentMemoryContext,
							 count_sockets(rd, wr, ex, maxfd) + 2);
	PG_TRY();
	{
		fill_and_wait(set, rd, wr, ex, maxfd, timeout);
	}
	PG_FINALLY();
	{
		FreeWaitEventSet(set);
	}
	PG_END_TRY();
}

CURLMcode
egress_curl_wait(CURLM *multi, long max_ms)
{
	fd_set		rd;
	fd_set		wr;
	fd_set		ex;
	int			maxfd = -1;
	long		timeout;
	CURLMcode	mc;

	FD_ZERO(&rd);
	FD_ZERO(&wr);
	FD_ZERO(&ex);
	mc = curl_multi_fdset(multi, &rd, &wr, &ex, &maxfd);
	if (mc != CURLM_OK)
		return mc;
	timeout = wait_ms(multi, max_ms, &mc);
	if (mc != CURLM_OK)
		return mc;

	if (timeout > 0 && maxfd < 0)
	{
		/*
		 * No socket to wait on (a name being resolved, a connection about
		 * to be made): libcurl's timer says when to call it again.
		 */
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, PG_WAIT_EXTENSION);
	}
	else if (timeout > 0)
		wait_sockets(&rd, &wr, &ex, maxfd, timeout);
	/*
	 * A latch set for someone else (a wake-up the caller's main loop waits
	 * for) is consumed here so the next wait does not return at once; it is
	 * set again by egress_curl_wait_done() when the transfers are over.
	 */
	if (MyLatch->is_set)
	{
		ResetLatch(MyLatch);
		latch_consumed = true;
	}
	CHECK_FOR_INTERRUPTS();
	return CURLM_OK;
}

void
egress_curl_wait_done(void)
{
	if (latch_consumed)
	{
		latch_consumed = false;
		SetLatch(MyLatch);
	}
}

CURLMcode
egress_curl_wait_quiet(CURLM *multi, long max_ms)
{
	int			numfds;

	return curl_multi_poll(multi, NULL, 0, (int) max_ms, &numfds);
}
