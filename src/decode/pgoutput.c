/*-------------------------------------------------------------------------
 * pgoutput.c
 *	  Read the messages of core's pgoutput plugin into EgressChanges.
 *
 * STUB: to be written (see pgoutput.h).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "decode/pgoutput.h"

List *
egress_pgoutput_options(const char *publication)
{
	elog(ERROR, "pg_egress: the pgoutput decoder is not written yet");
	return NIL;
}

void
egress_pgoutput_parse(const char *data, int len, EgressChange *change)
{
	elog(ERROR, "pg_egress: the pgoutput decoder is not written yet");
}

void
egress_pgoutput_reset(void)
{
}
