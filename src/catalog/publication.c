/*-------------------------------------------------------------------------
 * publication.c
 *	  The publication of a destination decoded with pgoutput.
 *
 * STUB: to be written (see publication.h).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/publication.h"

char *
egress_publication_name(const char *destination)
{
	return psprintf("pg_egress_%s", destination);
}

void
egress_publication_sync(const char *destination)
{
}

void
egress_publication_drop(const char *destination)
{
}
