#!/usr/bin/env bash
# egress_export() vs COPY, measured in one run on the bench table:
#   to a file:  egress_export(..., 'file://...')  vs  COPY ... TO 'file'
#   to S3:      egress_export(..., 's3://...')    vs  COPY ... TO 'file'
#               followed by "aws s3 cp" of that file (awscli from Debian)
# The S3 side is the local S3 server of the tests (test/s3), on 127.0.0.1.
# Each measurement is the best of BENCH_RUNS (default 3) runs.
# Usage: bash bench/export.sh   (BENCH_ROWS=..., BENCH_RUNS=...)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

egress_setup >/dev/null
egress_ensure_user
if ! command -v aws >/dev/null 2>&1; then
	if [ "$(id -u)" -eq 0 ]; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends awscli >/dev/null
	else
		echo "bench/export.sh: awscli is needed for the baseline (apt-get install awscli)" >&2
		exit 1
	fi
fi

bench_start_cluster
rows=${BENCH_ROWS:-2000000}
runs=${BENCH_RUNS:-3}
echo "building the bench table ($rows rows)..."
bench_make_table >/dev/null
bench_psql -d bench -c "CREATE EXTENSION pg_egress" >/dev/null

# the local S3 server, owned by this script
s3dir=$(egress_scratch_dir pg_egress-bench-s3)
node test/s3/s3server.js "$s3dir/data" "$s3dir/ready.json" bench >"$s3dir/log" 2>&1 &
s3pid=$!
cleanup() {
	kill "$s3pid" 2>/dev/null || true
	wait "$s3pid" 2>/dev/null || true
	rm -rf "$s3dir"
	bench_stop_cluster
}
trap cleanup EXIT
for _ in $(seq 1 100); do [ -s "$s3dir/ready.json" ] && break; sleep 0.1; done
port=$(sed -e 's/.*"port":\([0-9]*\).*/\1/' "$s3dir/ready.json")
endpoint="http://127.0.0.1:$port"
bench_psql -d bench \
	-c "ALTER SYSTEM SET pg_egress.s3_endpoint = '$endpoint'" \
	-c "ALTER SYSTEM SET pg_egress.s3_access_key_id = 'S3RVER'" \
	-c "ALTER SYSTEM SET pg_egress.s3_secret_access_key = 'S3RVER'" \
	-c "SELECT pg_reload_conf()" >/dev/null

q="SELECT * FROM public.bench"
f="$BENCH_DIR/copy.csv"

best() {
	local b=""
	local t
	for _ in $(seq 1 "$runs"); do
		t=$(bench_time "$@")
		if [ -z "$b" ] || [ "$(echo "$t < $b" | bc -l)" = 1 ]; then b=$t; fi
	done
	echo "$b"
}

copy_file() { bench_psql -d bench -c "COPY ($q) TO '$f' (FORMAT csv)"; }
egress_file() { bench_psql -d bench -c "SELECT * FROM egress_export('$q', 'file://$BENCH_DIR/egress.csv', 'format csv')"; }
egress_s3() { bench_psql -d bench -c "SELECT * FROM egress_export('$q', 's3://bench/egress.csv', 'format csv')"; }
copy_then_upload() {
	copy_file
	AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_DEFAULT_REGION=us-east-1 \
		aws --endpoint-url "$endpoint" s3 cp --only-show-errors "$f" s3://bench/awscli.csv
}

t_copy=$(best copy_file)
t_efile=$(best egress_file)
t_es3=$(best egress_s3)
t_cup=$(best copy_then_upload)

cmp -s "$f" "$BENCH_DIR/egress.csv" || { echo "egress_export file differs from COPY's" >&2; exit 1; }
size=$(stat -c %s "$f")
s3size=$(stat -c %s "$s3dir/data/bench/egress.csv._S3rver_object")
[ "$size" = "$s3size" ] || { echo "S3 object has $s3size bytes, COPY wrote $size" >&2; exit 1; }

rate() { echo "$rows / $1" | bc -l | xargs printf '%.0f'; }
echo "bench table: $rows rows, CSV $((size / 1024 / 1024)) MB; best of $runs runs"
printf '%-46s %8.2f s %10s rows/s\n' "COPY (query) TO 'file' (FORMAT csv)" "$t_copy" "$(rate "$t_copy")"
printf '%-46s %8.2f s %10s rows/s\n' "egress_export to file:// (format csv)" "$t_efile" "$(rate "$t_efile")"
printf '%-46s %8.2f s %10s rows/s\n' "COPY TO 'file' + aws s3 cp (local S3)" "$t_cup" "$(rate "$t_cup")"
printf '%-46s %8.2f s %10s rows/s\n' "egress_export to s3:// (local S3)" "$t_es3" "$(rate "$t_es3")"
printf 'file: egress_export speed / COPY speed = %.2fx (target >= 0.95x)\n' "$(echo "$t_copy / $t_efile" | bc -l)"
printf 'S3:   egress_export speed / (COPY + aws s3 cp) speed = %.2fx (target > 1x)\n' "$(echo "$t_cup / $t_es3" | bc -l)"
