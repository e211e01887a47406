/* placeholder: see /work/wt/DESIGN15.md */
#include "postgres.h"

#include "sink/pg_apply.h"

const EgressSinkOps egress_pg_apply_ops;
