/*-------------------------------------------------------------------------
 * curl_wait.h
 *	  The one wait of pg_egress's libcurl clients (HTTP sink, S3 client):
 *	  on the sockets of a multi handle's transfers and on the process latch
 *	  at once, so a transfer is driven as soon as its socket is ready and an
 *	  interrupt (pg_cancel_backend, pg_terminate_backend, a worker's
 *	  SIGTERM) is served as soon as it arrives, with no polling slices.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_CURL_WAIT_H
#define EGRESS_CURL_WAIT_H

#include <curl/curl.h>

/*
 * Waits until a socket of multi's transfers is ready, libcurl's own timer
 * is due, max_ms has passed or the latch is set; then serves interrupts
 * (CHECK_FOR_INTERRUPTS may raise).  Exits the process if the postmaster
 * died.  The caller then calls curl_multi_perform.  Returns what libcurl
 * returned when it could not say what to wait for.
 */
extern CURLMcode egress_curl_wait(CURLM *multi, long max_ms);

/*
 * Called when the caller's transfers are over (before it returns to its
 * own loop): sets the latch again if a wait consumed a wake-up meant for
 * that loop.
 */
extern void egress_curl_wait_done(void);

/*
 * The same for error paths (PG_CATCH, exit callbacks): raises no error and
 * serves no interrupts; waits on the sockets only.
 */
extern CURLMcode egress_curl_wait_quiet(CURLM *multi, long max_ms);

#endif							/* EGRESS_CURL_WAIT_H */
