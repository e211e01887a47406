/*-------------------------------------------------------------------------
 * change.c
 *	  What both decoders share: the text of a decoded value.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "decode/change.h"
#include "decode/wal2json.h"

const char *
egress_change_value_text(const EgressChangeColumn *col, Oid basetypid)
{
	if (col->isnull || col->value == NULL)
		return NULL;
	if (col->raw_text)
		return col->value;
	return egress_wal2json_value_text(col, basetypid);
}
