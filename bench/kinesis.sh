#!/usr/bin/env bash
# Kinesis destinations: LOG_BASED catch-up of BENCH_ROWS changes (100-row
# INSERT transactions into the bench table) to the local Kinesis server
# (test/kinesis/front.js, scripts/kinesis.sh) against the HTTP sink (a local
# receiver that discards bodies) on the same WAL: one destination per run,
# one stream each, streaming and then paused while the load is written;
# then each is enabled again alone (directly in the catalog, no resync: see
# bench/cdc.sh) and timed until its slot confirmed the load's end.
#
# Runs, all from one load, ratios from this one run:
#   web    HTTP sink, receiver discarding bodies
#   ack    Kinesis, front in --ack-only mode (SigV4 and the API limits
#          checked, well-formed answers, nothing stored): the target ratio
#          (>= 0.8x the HTTP rate) and records per PutRecords call (>= 450)
#   lat4   Kinesis, --ack-only --latency-ms BENCH_LATENCY (default 30, as
#          real Kinesis), default max_inflight (4)
#   lat1   the same with "max_inflight": 1: what calls in flight buy
#   kin    Kinesis, kinesalite behind the front (informational; kinesalite
#          is single-threaded: its own ceiling is measured first by
#          test/kinesis/ceiling.js, calls of 500 records sent straight to it)
# Usage: bash bench/kinesis.sh
#   BENCH_ROWS=...      changes (default 1000000, a multiple of 100)
#   BENCH_FORMAT=...    Kinesis format: singer (default) or pg_kinesis
#   BENCH_SHARDS=...    shards of the Kinesis stream (default 4)
#   BENCH_LATENCY=...   ms the front waits per call in the lat runs (30)
#   BENCH_RUNS=...      which runs (default "web ack lat4 lat1 kin")
#   BENCH_TIMEOUT=...   seconds any single wait may take (default 1800)
#   BENCH_PERF="ack ..." profile the worker of these runs (perf record -g)
#   BENCH_PERF_DIR=...  into DIR/NAME.data (default /tmp)
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
latency=${BENCH_LATENCY:-30}
runs=${BENCH_RUNS:-web ack lat4 lat1 kin}
has_run() { [[ " $runs " == *" $1 "* ]]; }

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
kmode() { node -e "fetch(process.argv[1], {method: 'POST'}).then((r) => r.text())" "http://127.0.0.1:$kport/__ctl/mode?$1" >/dev/null; }
kreset() { node -e "fetch(process.argv[1], {method: 'POST'}).then((r) => r.text())" "http://127.0.0.1:$kport/__ctl/reset" >/dev/null; }
kfield() { node -e "const s = JSON.parse(process.argv[1]); console.log(s[process.argv[2]] ?? 0)" "$1" "$2"; }
front_pid=$(sed 's/.*"pid":\([0-9]*\).*/\1/' "$kdir/ready.json")
kinesalite_port=$(sed 's/.*"kinesalite_port":\([0-9]*\).*/\1/' "$kdir/ready.json")

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
has_run ack && add_paused ack "kinesis://bench" "{\"format\": \"$format\"}"
has_run lat4 && add_paused lat4 "kinesis://bench" "{\"format\": \"$format\"}"
has_run lat1 && add_paused lat1 "kinesis://bench" "{\"format\": \"$format\", \"max_inflight\": 1}"
has_run kin && add_paused kin "kinesis://bench" "{\"format\": \"$format\"}"
has_run web && add_paused web "http://127.0.0.1:$hport/ingest" '{}'

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
	if [ -n "${BENCH_PERF:-}" ] && [[ " $BENCH_PERF " == *" $name "* ]]; then
		# profile this run's worker: perf record -g into $BENCH_PERF_DIR/NAME.data
		until [ "$(q "SELECT coalesce(worker_pid, 0) FROM egress_streams WHERE name = '$name'")" != 0 ]; do sleep 0.02; done
		perf record -g -q -o "${BENCH_PERF_DIR:-/tmp}/$name.data" \
			-p "$(q "SELECT worker_pid FROM egress_streams WHERE name = '$name'")" >/dev/null 2>&1 &
		perf_pid=$!
	fi
	wait_for "SELECT coalesce((SELECT confirmed_flush_lsn >= '$lsn' FROM pg_replication_slots WHERE slot_name = '$slot'), false)
	            OR (SELECT state = 'error' FROM egress_streams WHERE name = '$name')" "$name did not catch up"
	[ "$(q "SELECT state FROM egress_streams WHERE name = '$name'")" != error ] || die "$name failed"
	echo "$(sub "$(bench_now)" "$t")"
	if [ -n "${perf_pid:-}" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; perf_pid=; fi
	pid=$(q "SELECT coalesce(worker_pid, 0) FROM egress_streams WHERE name = '$name'")
	[ "$pid" = 0 ] || cpu=$(cpu_of "$pid")
	echo "$cpu"
	q "SELECT egress_pause_stream('$name')" >/dev/null
}

r() { echo "$rows / $1" | bc -l | xargs printf '%.0f'; }
declare -A secs cpu calls entries fcpu
run() {
	local name=$1 before after f0
	kreset
	before=$(kstate)
	# the server's CPU: the front for Kinesis runs, the receiver for web
	local server=$front_pid
	[ "$name" != web ] || server=$rcv_pid
	f0=$(cpu_of "$server")
	read -r secs[$name] cpu[$name] <<<"$(catch_up "$name" | tr '\n' ' ')"
	fcpu[$name]=$(sub "$(cpu_of "$server")" "$f0")
	after=$(kstate)
	calls[$name]=$(($(kfield "$after" put_calls) - $(kfield "$before" put_calls)))
	entries[$name]=$(($(kfield "$after" put_entries) - $(kfield "$before" put_entries)))
	maxconc[$name]=$(kfield "$after" max_concurrent_puts)
	conflicts[$name]=$(( $(kfield "$after" key_conflicts) + $(kfield "$after" keys_repeated_in_call) ))
}
declare -A maxconc conflicts
report() {
	local name=$1 what=$2
	printf '%-52s %8.2f s %8s rows/s  worker CPU %5.2f s  server CPU %5.2f s' "$what" "${secs[$name]}" \
		"$(r "${secs[$name]}")" "${cpu[$name]}" "${fcpu[$name]}"
	if [ "$name" != web ]; then
		printf '  %5.1f rec/call  %d in flight at most' \
			"$(echo "${entries[$name]} / (${calls[$name]} + (${calls[$name]} == 0))" | bc -l)" "${maxconc[$name]}"
		[ "${conflicts[$name]}" = 0 ] || printf '  ORDER FAULTS %d' "${conflicts[$name]}"
	fi
	echo
}
ratio() { echo "${secs[$2]} / ${secs[$1]}" | bc -l | xargs printf '%.2f'; }

if has_run web; then run web; fi
if has_run ack; then kmode "ack_only=1&latency_ms=0"; run ack; fi
if has_run lat4; then kmode "ack_only=1&latency_ms=$latency"; run lat4; fi
if has_run lat1; then kmode "ack_only=1&latency_ms=$latency"; run lat1; fi
if has_run kin; then
	kmode "ack_only=0&latency_ms=0"
	ceiling=$(node test/kinesis/ceiling.js "$kinesalite_port" bench 4 40)
	run kin
fi

echo "$rows changes, Kinesis format $format, $shards shards; one run, one load:"
has_run web && report web "HTTP sink (receiver discards)"
has_run ack && report ack "Kinesis, front --ack-only"
has_run lat4 && report lat4 "Kinesis, --ack-only --latency-ms $latency, 4 in flight"
has_run lat1 && report lat1 "Kinesis, --ack-only --latency-ms $latency, 1 in flight"
has_run kin && report kin "Kinesis, kinesalite behind the front"
if has_run web && has_run ack; then
	echo "Kinesis (ack-only front) / HTTP: $(ratio ack web)x the HTTP rate (target >= 0.8)"
	printf 'PutRecords: %d calls, %d records, %.1f records per call (target >= 450)\n' "${calls[ack]}" "${entries[ack]}" \
		"$(echo "${entries[ack]} / (${calls[ack]} + (${calls[ack]} == 0))" | bc -l)"
fi
if has_run lat4 && has_run lat1; then
	echo "with ${latency} ms per call: 4 calls in flight $(ratio lat4 lat1)x the rate of 1 in flight"
fi
if has_run kin; then
	echo "kinesalite alone (test/kinesis/ceiling.js, 4 calls of 500 records in flight): $ceiling"
	has_run web && echo "Kinesis (kinesalite) / HTTP: $(ratio kin web)x (informational: kinesalite's ceiling)"
fi
