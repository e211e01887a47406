#!/usr/bin/env bash
# HTTP destinations: FULL_TABLE of the bench table to a local receiver that
# discards bodies (gzip off and on) vs to the file destination, measured in
# one run; then LOG_BASED latency from commit to receipt (p50/p99) at
# BENCH_RATE single-row transactions/s with a 50 ms flush interval.
# Usage: bash bench/http.sh
#   BENCH_ROWS=...      rows of the bench table (default 2000000)
#   BENCH_RATE=...      transactions/s of the latency run (default 1000)
#   BENCH_SECONDS=...   length of the latency run (default 30)
#   BENCH_TIMEOUT=...   seconds any single wait may take (default 900)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

rows=${BENCH_ROWS:-2000000}
rate=${BENCH_RATE:-1000}
seconds=${BENCH_SECONDS:-30}
timeout=${BENCH_TIMEOUT:-900}

egress_setup >/dev/null
egress_ensure_user
bench_start_cluster
conf="max_replication_slots = 10"
if egress_as_user postgres --describe-config 2>/dev/null | grep '^output_plugin_libraries' >/dev/null; then
	conf+=$'\n'"output_plugin_libraries = 'pgoutput, test_decoding, wal2json'"
fi
echo "$conf" | bench_reconfigure

q() { bench_psql -d bench -Atc "$1"; }

# receivers: one that discards bodies, one that keeps them (latency)
rcv_pids=()
start_receiver() {
	local dir=$1
	shift
	mkdir -p "$dir"
	node test/http/receiver.js --dir "$dir" "$@" >"$dir/stdout" 2>&1 &
	rcv_pids+=($!)
	for _ in $(seq 100); do [ -s "$dir/port" ] && break; sleep 0.1; done
	[ -s "$dir/port" ] || { echo "receiver did not start" >&2; exit 1; }
	cat "$dir/port"
}
cleanup() {
	for p in "${rcv_pids[@]}"; do kill "$p" 2>/dev/null || true; done
	bench_stop_cluster
}
trap cleanup EXIT

echo "building the bench table ($rows rows)..."
BENCH_ROWS=$rows bench_make_table >/dev/null
q "CREATE EXTENSION pg_egress" >/dev/null
discard_port=$(start_receiver "$BENCH_DIR/rcv_discard" --discard)

# one FULL_TABLE sync; prints its seconds
sync_once() {
	local name=$1 url=$2 opts=$3
	q "SELECT egress_add_destination('$name', '$url', '$opts')" >/dev/null
	q "SELECT egress_add_stream('$name', 'public.bench', 'FULL_TABLE', '$name')" >/dev/null
	local deadline=$((SECONDS + timeout)) state
	while :; do
		state=$(q "SELECT state FROM egress_streams WHERE name = '$name'")
		[ "$state" = synced ] && break
		if [ "$state" = error ] || [ $SECONDS -ge $deadline ]; then
			echo "sync $name did not finish:" >&2
			q "SELECT state, last_error FROM egress_streams WHERE name = '$name'" >&2
			exit 1
		fi
		sleep 0.05
	done
	local sent
	sent=$(q "SELECT rows_sent FROM egress_streams WHERE name = '$name'")
	[ "$sent" = "$rows" ] || { echo "$name: sent $sent rows, expected $rows" >&2; exit 1; }
	q "SELECT extract(epoch FROM sync_finished_at - sync_started_at) FROM egress_streams WHERE name = '$name'"
	q "SELECT egress_remove_stream('$name')" >/dev/null
}

t_file=$(sync_once bench_file "file://$BENCH_DIR/out" '{}')
rm -rf "$BENCH_DIR/out"
t_http=$(sync_once bench_http "http://127.0.0.1:$discard_port/ingest" '{}')
t_nostream=$(sync_once bench_nostream "http://127.0.0.1:$discard_port/ingest" '{"stream": false}')
t_gzip=$(sync_once bench_gzip "http://127.0.0.1:$discard_port/ingest" '{"gzip": true}')
stats=$(node -e "fetch(process.argv[1]).then((r) => r.text()).then(console.log)" "http://127.0.0.1:$discard_port/_stats")

r() { echo "$rows / $1" | bc -l | xargs printf '%.0f'; }
printf '%-40s %8.2f s %10s rows/s\n' "FULL_TABLE to files" "$t_file" "$(r "$t_file")"
printf '%-40s %8.2f s %10s rows/s  %.2fx the file rate\n' "FULL_TABLE to HTTP (receiver discards)" \
	"$t_http" "$(r "$t_http")" "$(echo "$t_file / $t_http" | bc -l)"
printf '%-40s %8.2f s %10s rows/s  %.2fx the file rate\n' "FULL_TABLE to HTTP, stream off" \
	"$t_nostream" "$(r "$t_nostream")" "$(echo "$t_file / $t_nostream" | bc -l)"
printf '%-40s %8.2f s %10s rows/s  %.2fx the file rate\n' "FULL_TABLE to HTTP, gzip" \
	"$t_gzip" "$(r "$t_gzip")" "$(echo "$t_file / $t_gzip" | bc -l)"
echo "receiver: $stats"

# ---- latency ------------------------------------------------------------------
lat_port=$(start_receiver "$BENCH_DIR/rcv_lat")
q "CREATE TABLE public.lat (id bigserial PRIMARY KEY, ts timestamptz NOT NULL)" >/dev/null
q "SELECT egress_add_destination('lat', 'http://127.0.0.1:$lat_port/ingest', '{\"flush_interval\": \"50ms\"}')" >/dev/null
q "SELECT egress_add_stream('lat', 'public.lat', 'LOG_BASED', 'lat')" >/dev/null
deadline=$((SECONDS + timeout))
until [ "$(q "SELECT state FROM egress_streams WHERE name = 'lat'")" = streaming ]; do
	[ $SECONDS -lt $deadline ] || { echo "lat stream did not start" >&2; exit 1; }
	sleep 0.1
done
script="$BENCH_DIR/lat.sql"
echo "INSERT INTO public.lat (ts) VALUES (clock_timestamp());" >"$script"
chmod 644 "$script"
egress_as_user pgbench -n -h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres -c 4 -j 2 -R "$rate" -T "$seconds" \
	-f "$script" bench 2>&1 | grep -E '^(tps|latency average|number of transactions actually)' || true
target=$(q "SELECT pg_current_wal_lsn()")
until [ "$(q "SELECT confirmed_lsn >= '$target' FROM egress_streams WHERE name = 'lat'")" = t ]; do
	[ $SECONDS -lt $deadline ] || { echo "lat stream did not catch up" >&2; exit 1; }
	sleep 0.1
done
inserted=$(q "SELECT count(*) FROM public.lat")
result=$(node bench/http_latency.js "$BENCH_DIR/rcv_lat/requests.jsonl" public-lat ts)
echo "CDC latency commit -> receipt at $rate txn/s, flush_interval 50ms: $result (rows inserted: $inserted)"
