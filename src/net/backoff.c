/*-------------------------------------------------------------------------
 * backoff.c
 *	  Retry delays of the network clients (see backoff.h).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/pg_prng.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "net/backoff.h"

volatile uint64 *egress_backoff_retries = NULL;

long
egress_backoff_next(EgressBackoff *b, long server_ms)
{
	long		base;
	long		delay;

	b->failures++;
	if (egress_backoff_retries != NULL)
		(*egress_backoff_retries)++;
	/* initial_ms << 20 still fits a long; later shifts only cap */
	base = b->initial_ms << Min(b->failures - 1, 20);
	base = Min(base, b->max_ms);
	/* half fixed, half random: retries of many workers spread out */
	delay = base / 2 +
		(long) pg_prng_uint64_range(&pg_global_prng_state, 0, base / 2 + 1);
	if (server_ms >= 0)
		delay = Max(delay, Min(server_ms, b->max_ms));
	return delay;
}

long
egress_backoff_after(long initial_ms, long max_ms, int failures)
{
	EgressBackoff b;

	egress_backoff_init(&b, initial_ms, max_ms);
	b.failures = Max(failures, 1) - 1;
	return egress_backoff_next(&b, -1); /* counts the retry */
}

bool
egress_backoff_sleep(long delay_ms,
					 bool (*keep_going) (void *arg, TimestampTz since),
					 void *arg, TimestampTz since)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay_ms);

	for (;;)
	{
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);

		CHECK_FOR_INTERRUPTS();
		if (keep_going && !keep_going(arg, since))
			return false;
		if (left <= 0)
			return true;
		/* woken early by the latch: interrupts are served at the top */
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(left, 1000L), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
