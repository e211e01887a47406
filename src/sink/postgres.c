/* placeholder: see /work/wt/DESIGN15.md */
#include "postgres.h"

#include "sink/pg_apply.h"

const EgressSinkKind egress_postgres_sink_kind = {"postgres", {"postgres://", "postgresql://", NULL}, NULL, NULL, NULL};
