#!/usr/bin/env bash
# Kinesis destinations: LOG_BASED catch-up of BENCH_ROWS changes (100-row
# INSERT transactions into the bench table) to the local Kinesis server
# (kinesalite behind test/kinesis/front.js, scripts/kinesis.sh) against the
# HTTP sink (a local receiver that discards bodies) on the same WAL: two
# destinations, one stream each, streaming and then paused while the load
# is written; then each is enabled again alone (directly in the catalog, no
# resync: see bench/cdc.sh) and timed until its slot confirmed the load's
# end.  Reports rows/s of both, their ratio (target >= 0.8), and the
# average records per PutRecords call (target >= 450 with small rows), from
# the front's counters.
# Usage: bash bench/kinesis.sh
#   BENCH_ROWS=...      changes (default 1000000, a multiple of 100)
#   BENCH_FORMAT=...    Kinesis format: singer (default) or pg_kinesis
#   BENCH_SHARDS=...    shards of the Kinesis stream (default 4)
#   BENCH_TIMEOUT=...   seconds any single wait may take (default 1800)
#   BENCH_NO_SETUP=1    do not build and install (done, e.g. into a private
#                       install whose bin directory is first in PATH)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

rows=${BENCH_ROWS:-1000000}
rows=$((rows / 100 * 100))
[ "$rows" -ge 100 ] || { echo "BENCH_ROWS must be at least 100" >&2; exit 1; }
txns=$((rows / 100))
format=${BENCH_FORMAT:-singer}
shards=${BENCH_SHARDS:-4}
timeout=${BENCH_TIMEOUT:-1800}

[ -n "${BENCH_NO_SETUP:-}" ] || egress_setup >/dev/null
egress_ensure_user
bench_start_cluster
conf="max_replication_slots = 10"
if egress_as_user postgres --describe-config 2>/dev/null | grep '^output_plugin_libraries' >/dev/null; then
	conf+=$'\n'"output_plugin_libraries = 'pgoutput, test_decoding, wal2json'"
fi
echo "$conf" | bench_reconfigure

q() { bench_psql -d bench -Atc "$1"; }
sub() { echo "$1 - $2" | bc -l; }

kdir="$BENCH_DIR/kinesis"
rcv_pid=
cleanup() {
	[ -z "$rcv_pid" ] || kill "$rcv_pid" 2>/dev/null || true
	scripts/kinesis.sh stop "$kdir" || true
	bench_stop_cluster
}
trap cleanup EXIT

die() {
	echo "bench/kinesis: $*" >&2
	bench_psql -d bench -c "SELECT name, state, rows_sent, confirmed_lsn, worker_pid, last_error FROM egress_streams" >&2 || true
	tail -n 30 "$BENCH_DIR/server.log" >&2 || true
	exit 1
}

wait_for() {
	local sql=$1 what=$2 deadline=$((SECONDS + timeout))
	until [ "$(q "$sql")" = t ]; do
		[ $SECONDS -lt $deadline ] || die "$what"
		sleep 0.05
	done
}

# the local Kinesis server, its key pair the server's AWS credentials
endpoint=$(scripts/kinesis.sh start "$kdir" "bench:$shards")
kport=${endpoint##*:}
cat <<CONF | bench_reconfigure
pg_egress.kinesis_endpoint = '$endpoint'
pg_egress.s3_access_key_id = 'AKIDKINESIS'
pg_egress.s3_secret_access_key = 'kinesis-secret'
CONF
kstate() { node -e "fetch(process.argv[1]).then((r) => r.text()).then(console.log)" "http://127.0.0.1:$kport/__ctl/state"; }
kfield() { node -e "const s = JSON.parse(process.argv[1]); console.log(s[process.argv[2]] ?? 0)" "$1" "$2"; }

# the HTTP receiver, discarding bodies
mkdir -p "$BENCH_DIR/rcv"
node test/http/receiver.js --dir "$BENCH_DIR/rcv" --discard >"$BENCH_DIR/rcv/stdout" 2>&1 &
rcv_pid=$!
for _ in $(seq 100); do [ -s "$BENCH_DIR/rcv/port" ] && break; sleep 0.1; done
[ -s "$BENCH_DIR/rcv/port" ] || die "receiver did not start"
hport=$(cat "$BENCH_DIR/rcv/port")

bench_create_table >/dev/null
q "CREATE EXTENSION pg_egress" >/dev/null

slot_of() { q "SELECT slot_name FROM egress.destination WHERE name = '$1'"; }
add_paused() {
	local name=$1 url=$2 opts=$3
	q "SELECT egress_add_destination('$name', '$url', '$opts')" >/dev/null
	q "SELECT egress_add_stream('$name', 'public.bench', 'LOG_BASED', '$name')" >/dev/null
	wait_for "SELECT state = 'streaming' FROM egress_streams WHERE name = '$name'" "$name did not stream"
	q "SELECT egress_pause_stream('$name')" >/dev/null
	wait_for "SELECT coalesce(bool_and(NOT active), true) FROM pg_replication_slots WHERE slot_name = '$(slot_of "$name")'" \
		"slot of $name still in use"
}
add_paused kin "kinesis://bench" "{\"format\": \"$format\"}"
add_paused web "http://127.0.0.1:$hport/ingest" '{}'

echo "loading $rows rows in $txns transactions of 100..."
bench_psql -d bench <<SQL >/dev/null
CREATE PROCEDURE bench_load(n int) LANGUAGE plpgsql AS \$\$
BEGIN
	FOR t IN 0 .. n / 100 - 1 LOOP
		INSERT INTO public.bench SELECT $BENCH_ROW FROM generate_series(t * 100 + 1, t * 100 + 100) g;
		COMMIT;
	END LOOP;
END \$\$;
CALL bench_load($rows);
SQL
[ "$(q "SELECT count(*) FROM public.bench")" = "$rows" ] || die "the load did not write $rows rows"
lsn=$(q "SELECT pg_current_wal_insert_lsn()")

# CPU seconds (user + system) of process PID so far
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# enable NAME again, time it until its slot confirmed $lsn; prints seconds,
# then the CPU seconds its worker used meanwhile
catch_up() {
	local name=$1 slot t pid cpu=0
	slot=$(slot_of "$name")
	t=$(bench_now)
	q "UPDATE egress.stream SET enabled = true WHERE name = '$name'" >/dev/null
	wait_for "SELECT coalesce((SELECT confirmed_flush_lsn >= '$lsn' FROM pg_replication_slots WHERE slot_name = '$slot'), false)
	            OR (SELECT state = 'error' FROM egress_streams WHERE name = '$name')" "$name did not catch up"
	[ "$(q "SELECT state FROM egress_streams WHERE name = '$name'")" != error ] || die "$name failed"
	echo "$(sub "$(bench_now)" "$t")"
	pid=$(q "SELECT coalesce(worker_pid, 0) FROM egress_streams WHERE name = '$name'")
	[ "$pid" = 0 ] || cpu=$(cpu_of "$pid")
	echo "$cpu"
	q "SELECT egress_pause_stream('$name')" >/dev/null
}

before=$(kstate)
read -r t_kin cpu_kin <<<"$(catch_up kin | tr '\n' ' ')"
after=$(kstate)
read -r t_web cpu_web <<<"$(catch_up web | tr '\n' ' ')"

calls=$(($(kfield "$after" put_calls) - $(kfield "$before" put_calls)))
entries=$(($(kfield "$after" put_entries) - $(kfield "$before" put_entries)))
r() { echo "$rows / $1" | bc -l | xargs printf '%.0f'; }
printf '%-44s %8.2f s %10s rows/s  worker CPU %.2f s\n' "LOG_BASED catch-up to HTTP (discarding)" \
	"$t_web" "$(r "$t_web")" "$cpu_web"
printf '%-44s %8.2f s %10s rows/s  worker CPU %.2f s  %.2fx the HTTP rate\n' "LOG_BASED catch-up to Kinesis ($format)" \
	"$t_kin" "$(r "$t_kin")" "$cpu_kin" "$(echo "$t_web / $t_kin" | bc -l)"
printf 'PutRecords: %d calls, %d records, %.1f records per call\n' "$calls" "$entries" \
	"$(echo "$entries / ($calls + ($calls == 0))" | bc -l)"
