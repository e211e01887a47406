#!/usr/bin/env bash
# Runs the TAP suites (test/t/*.pl, or the files given) against the
# installed pg_egress build.  Each suite makes its own clusters under
# $TESTDIR/tmp_check (default: the repository root).  initdb refuses root:
# run as an unprivileged user that can write the tree.
set -euo pipefail

if [ "$(id -u)" -eq 0 ]; then
	echo "run-tap.sh: initdb refuses to run as root; run as an unprivileged user, e.g. runuser -u <user> -- bash scripts/run-tap.sh" >&2
	exit 1
fi

root=$(cd "$(dirname "$0")/.." && pwd)
pgsrc=$(dirname "$(pg_config --pgxs)")/../..
export PATH="$(pg_config --bindir):$PATH"
export TESTDIR="${TESTDIR:-$root}"
export PG_REGRESS="${PG_REGRESS:-$pgsrc/src/test/regress/pg_regress}"

cd "$root"
[ $# -gt 0 ] || set -- test/t/*.pl
rm -rf "$TESTDIR/tmp_check"
exec prove --timer -I "$pgsrc/src/test/perl" -I test/lib "$@"
