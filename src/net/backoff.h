/*-------------------------------------------------------------------------
 * backoff.h
 *	  The one retry back-off of pg_egress's network clients (HTTP sink,
 *	  S3 client): exponential from an initial delay, capped, half of each
 *	  delay random so that many workers retrying at once spread out, never
 *	  shorter than what the server asked for (Retry-After), and slept on
 *	  the process latch so that interrupts are served while waiting.
 *-------------------------------------------------------------------------
 */
#ifndef EGRESS_BACKOFF_H
#define EGRESS_BACKOFF_H

#include "datatype/timestamp.h"

typedef struct EgressBackoff
{
	long		initial_ms;		/* delay after the first failure (> 0) */
	long		max_ms;			/* cap of every delay */
	int			failures;		/* failed attempts so far */
} EgressBackoff;

static inline void
egress_backoff_init(EgressBackoff *b, long initial_ms, long max_ms)
{
	b->initial_ms = initial_ms > 0 ? initial_ms : 1;
	b->max_ms = max_ms > b->initial_ms ? max_ms : b->initial_ms;
	b->failures = 0;
}

/*
 * Where this process counts its retries, or NULL: every failure counted by
 * egress_backoff_next() or egress_backoff_after() is one retry to come.  A
 * worker points it at its shared entry (egress_streams.retries).
 */
extern volatile uint64 *egress_backoff_retries;

/*
 * Counts a failure and returns the delay before the next attempt: the
 * initial delay doubled per earlier failure, capped at max_ms, of which the
 * upper half is random; at least server_ms (capped at max_ms) when the
 * server said when to come back (server_ms >= 0).
 */
extern long egress_backoff_next(EgressBackoff *b, long server_ms);

/*
 * The delay after the failures-th failure in a row (failures >= 1), for
 * callers that count failures themselves (the CDC worker's error path).
 */
extern long egress_backoff_after(long initial_ms, long max_ms, int failures);

/*
 * Sleeps delay_ms on the latch, serving interrupts (CHECK_FOR_INTERRUPTS)
 * and postmaster death.  keep_going (optional) is asked when the sleep
 * starts and about every second: false ends the sleep at once and makes
 * the call return false (the caller gives up); true is returned once the
 * delay is over.
 */
extern bool egress_backoff_sleep(long delay_ms,
								 bool (*keep_going) (void *arg, TimestampTz since),
								 void *arg, TimestampTz since);

#endif							/* EGRESS_BACKOFF_H */
