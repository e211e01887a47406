/* placeholder: see /work/wt/DESIGN15.md */
#include "postgres.h"

#include "sink/pg_apply.h"



/*
 * H1's stand-in until H2's apply engine lands (replace wholesale): the
 * sink opens and egress_check() probes; a delivery fails cleanly.
 */
static void
stub_close(EgressSink *sink)
{
}

static bool
stub_attempt(EgressSink *sink, const char *batch_id, EgressSinkFailure *failure)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("postgres destinations cannot load batches yet")));
	return false;
}

const EgressSinkOps egress_pg_apply_ops = {
	.commit_attempt = stub_attempt,
	.close = stub_close,
	.probe = egress_postgres_probe,
};

void *
egress_pg_apply_create(EgressSink *sink, EgressPgTarget *target)
{
	return target;
}
