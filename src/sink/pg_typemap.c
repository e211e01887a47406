/* placeholder: see /work/wt/DESIGN15.md */
#include "postgres.h"
