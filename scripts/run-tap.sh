#!/usr/bin/env bash
# Runs the TAP suites (test/t/*.pl, or the files given) against the
# installed pg_egress build (make prove_installcheck).  Each suite makes its
# own clusters under $TESTDIR/tmp_check (default: the repository root).
# PG_CONFIG picks the installation, PROVE_FLAGS adds prove switches.
# Suites that need Node (the test HTTP, S3 and Kinesis servers) are skipped
# with the reason when node is absent, unless EGRESS_REQUIRE_NODE=1 (make
# test), which makes that a failure.  initdb refuses root: run as an
# unprivileged user that can write the tree.
set -euo pipefail

if [ "$(id -u)" -eq 0 ]; then
	echo "run-tap.sh: initdb refuses to run as root; run as an unprivileged user, e.g. runuser -u <user> -- bash scripts/run-tap.sh" >&2
	exit 1
fi

root=$(cd "$(dirname "$0")/.." && pwd)
pg_config=${PG_CONFIG:-pg_config}
pgsrc=$(dirname "$("$pg_config" --pgxs)")/../..
export PATH="$("$pg_config" --bindir):$PATH"
export TESTDIR="${TESTDIR:-$root}"
export PG_REGRESS="${PG_REGRESS:-$pgsrc/src/test/regress/pg_regress}"

cd "$root"
rm -rf "$TESTDIR/tmp_check"
# shellcheck disable=SC2206 # PROVE_FLAGS is a list of switches
prove_cmd=(prove --timer ${PROVE_FLAGS:-} -I "$pgsrc/src/test/perl" -I test/lib)
[ $# -eq 0 ] || exec "${prove_cmd[@]}" "$@"

# The whole suite: two files at a time (each makes its own clusters and
# servers on free ports), the longest first so that the two lanes end
# together.  Files that measure how fast the
# workers react to an interrupt or a timer run alone afterwards, so that a
# loaded machine cannot make them fail.
jobs=${EGRESS_TAP_JOBS:-2}
alone=(test/t/023_http_interrupt.pl test/t/034_s3_interrupt.pl test/t/105_heartbeat.pl)
long=(test/t/075_cdc_soak.pl test/t/093_review3_operator.pl test/t/100_backfill_chunks.pl
	test/t/080_kinesis.pl test/t/076_cdc_10m_txn.pl test/t/101_backfill_load.pl)
together=("${long[@]}")
for f in test/t/*.pl; do
	case " ${alone[*]} ${long[*]} " in *" $f "*) ;; *) together+=("$f") ;; esac
done
rc=0
"${prove_cmd[@]}" -j"$jobs" "${together[@]}" || rc=1
"${prove_cmd[@]}" "${alone[@]}" || rc=1
exit $rc
