#!/usr/bin/env bash
# make test: install what is missing, build, install, then run every suite
# (pg_regress, isolation specs and TAP) as an unprivileged user.  Exits
# non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh

egress_setup
egress_ensure_user

# The TAP suites of the HTTP, S3 and Kinesis sinks need Node: egress_setup
# installed it (as root) and the npm packages of the test servers.  Here a
# missing node fails the run instead of skipping those suites.
if ! command -v node >/dev/null 2>&1; then
	echo "make test: node not found; the TAP suites of the HTTP, S3 and Kinesis sinks need it (run scripts/install-deps.sh as root)" >&2
	exit 1
fi

# the suites write results and clusters next to the sources: give the test
# user a copy it owns
work=$(mktemp -d /tmp/pg_egress-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
tar --exclude=.git --exclude='*.o' --exclude='*.so' -cf - . | tar -C "$work" -xf -
if [ "$(id -u)" -eq 0 ]; then
	chown -R "$EGRESS_USER" "$work"
	chmod 755 "$work"
fi

passed=0
failed=0
run_suite() {
	local name=$1
	shift
	echo "== $name"
	if (cd "$work" && egress_as_user "$@"); then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		echo "== $name FAILED"
	fi
}

run_suite "pg_regress" bash -c 'make -s installcheck ISOLATION= || { cat regression.diffs 2>/dev/null | head -200; exit 1; }'
run_suite "isolation" bash -c 'make -s installcheck REGRESS= || { cat output_iso/regression.diffs 2>/dev/null | head -200; exit 1; }'
run_suite "TAP" env EGRESS_REQUIRE_NODE=1 make -s prove_installcheck

# keep the logs of a failed run where CI prints them
if [ "$failed" -gt 0 ]; then
	for f in "$work"/tmp_check/log/*.log "$work"/output_iso/log/postmaster.log; do
		[ -f "$f" ] || continue
		echo "---- $f (last 60 lines)"
		tail -n 60 "$f"
	done
fi

echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
