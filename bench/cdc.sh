#!/usr/bin/env bash
# LOG_BASED change capture to files vs pg_recvlogical (wal2json format-version 2
# to /dev/null) and the in-server decoding ceiling (pg_logical_slot_peek_changes),
# all over the same WAL, measured in one run; then pgbench TPS while pg_egress
# consumes the WAL vs while pg_recvlogical does.
# Usage: bash bench/cdc.sh
#   BENCH_ROWS=...           rows inserted (default 1000000, in transactions of 100)
#   BENCH_DECODE_ROUNDS=...  rounds of pg_recvlogical, peek and pg_egress catch-up (default 2)
#   BENCH_TPS_SECONDS=...    length of each pgbench run (default 20)
#   BENCH_TPS_ROUNDS=...     pgbench rounds (none, pg_egress, pg_recvlogical; default 3)
#   BENCH_PGBENCH_SCALE=...  pgbench -i scale (default 10)
#   BENCH_TIMEOUT=...        seconds any single wait may take (default 300)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

rows=${BENCH_ROWS:-1000000}
rows=$((rows / 100 * 100))
[ "$rows" -ge 100 ] || { echo "BENCH_ROWS must be at least 100" >&2; exit 1; }
txns=$((rows / 100))
timeout=${BENCH_TIMEOUT:-300}
tps_seconds=${BENCH_TPS_SECONDS:-20}
tps_rounds=${BENCH_TPS_ROUNDS:-3}
decode_rounds=${BENCH_DECODE_ROUNDS:-2}
pgbench_scale=${BENCH_PGBENCH_SCALE:-10}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
egress_setup >/dev/null
egress_ensure_user
bench_start_cluster

# logical decoding for three consumers, and wal2json allowed as an output plugin
# slots: live, bench_catchN, bench_recvN, bench_peek, and temporary ones for initial syncs
slots=$((2 * decode_rounds + 6))
[ $slots -ge 10 ] || slots=10
conf="max_replication_slots = $slots
max_wal_senders = 10
max_worker_processes = $((decode_rounds + 8))"
if egress_as_user postgres --describe-config 2>/dev/null | grep '^output_plugin_libraries' >/dev/null; then
	conf+=$'\n'"output_plugin_libraries = 'pgoutput, test_decoding, wal2json'"
fi
grep -Eq '^local[[:space:]]+replication' "$BENCH_DIR/data/pg_hba.conf" ||
	echo "local replication all trust" >>"$BENCH_DIR/data/pg_hba.conf"
echo "$conf" | bench_reconfigure

# ---- helpers ---------------------------------------------------------------

q() { bench_psql -d bench -Atc "$1"; }

die() {
	echo "bench/cdc: $*" >&2
	bench_psql -d bench -c "SELECT name, state, rows_sent, confirmed_lsn, lag_bytes, worker_pid, last_error FROM egress_streams" >&2 || true
	bench_psql -d bench -c "SELECT slot_name, plugin, active, restart_lsn, confirmed_flush_lsn FROM pg_replication_slots" >&2 || true
	echo "--- last lines of the server log:" >&2
	tail -n 30 "$BENCH_DIR/server.log" >&2 || true
	exit 1
}

sub() { echo "$1 - $2" | bc -l; }
rate() { echo "$1 / $2" | bc -l | xargs printf '%.0f'; }

# Poll SQL until it returns t; a result starting with "e" is a failure.
wait_for() {
	local sql=$1 what=$2 deadline=$((SECONDS + timeout)) r
	while :; do
		r=$(q "$sql")
		[ "$r" = t ] && return 0
		case $r in e*) die "$what: ${r#e}" ;; esac
		[ $SECONDS -lt $deadline ] || die "$what: not done after ${timeout}s (last answer: '$r')"
		sleep 0.1
	done
}

wait_streaming() {
	local list=$1
	wait_for "SELECT CASE WHEN bool_or(state = 'error') THEN 'e' || string_agg(name || ': ' || coalesce(last_error, ''), '; ')
	                      WHEN count(*) > 0 AND bool_and(state = 'streaming') THEN 't' ELSE 'f' END
	            FROM egress_streams WHERE name IN ($list)" "streams $list did not reach the state streaming"
}

slot_of() { q "SELECT slot_name FROM egress.destination WHERE name = '$1'"; }

# A paused stream's worker has let go of the slot.
wait_slot_idle() {
	wait_for "SELECT coalesce(bool_and(NOT active), true) FROM pg_replication_slots WHERE slot_name = '$1'" \
		"replication slot $1 still in use"
}

# pg_egress's slot has confirmed everything up to LSN (it then has the data at the destination)
wait_slot_confirmed() {
	wait_for "SELECT CASE WHEN count(*) = 0 THEN 'eslot $1 is gone'
	                      WHEN bool_and(confirmed_flush_lsn >= '$2') THEN 't' ELSE 'f' END
	            FROM pg_replication_slots WHERE slot_name = '$1'" "slot $1 did not confirm $2"
}

# Poll until the slot of stream NAME has confirmed LSN: every transaction up to
# there is in acknowledged (fsync'ed, renamed) batches.  Sets seen_worker_at
# (when the stream first had a worker) and done_at.  (egress_streams.rows_sent
# is only reported: it is not reliable across worker session restarts.)
wait_delivered() {
	local name=$1 slot=$2 lsn=$3 deadline=$((SECONDS + timeout)) r ok pid state err
	seen_worker_at=
	while :; do
		r=$(q "SELECT coalesce((SELECT confirmed_flush_lsn >= '$lsn' FROM pg_replication_slots WHERE slot_name = '$slot'), false),
		              coalesce(worker_pid, 0), state, coalesce(last_error, '')
		         FROM egress_streams WHERE name = '$name'")
		IFS='|' read -r ok pid state err <<<"$r"
		[ -z "$seen_worker_at" ] && [ "$pid" != 0 ] && seen_worker_at=$(bench_now)
		if [ "$ok" = t ]; then
			done_at=$(bench_now)
			return 0
		fi
		[ "$state" = error ] && die "stream $name failed: $err"
		[ $SECONDS -lt $deadline ] ||
			die "stream $name: slot $slot did not confirm $lsn in ${timeout}s (state $state, last error: '$err')"
		sleep 0.05
	done
}

# when the last batch landed: the directory's modification time (a batch is
# renamed into place after its fsync; nothing is written there afterwards),
# bounded by the poll that saw the rows (done_at)
landed_at() {
	local m
	m=$(find "$1" -maxdepth 0 -printf '%T@\n')
	if [ "$(echo "$m > $done_at" | bc -l)" = 1 ]; then echo "$done_at"; else echo "$m"; fi
}
records_in() { find "$1" -type f -name '*.jsonl' -exec cat {} + | grep -c '"type":"RECORD"' || true; }

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

recvlogical_args=(-h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres -d bench
	-o format-version=2 -o include-lsn=1 -o include-timestamp=1)

# pg_recvlogical in the background; recv_pid is the process to stop
start_recvlogical() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u "$EGRESS_USER" -- env PATH="$PG_BINDIR:$PATH" pg_recvlogical "${recvlogical_args[@]}" "$@" 2>>"$recv_log" &
	else
		env PATH="$PG_BINDIR:$PATH" pg_recvlogical "${recvlogical_args[@]}" "$@" 2>>"$recv_log" &
	fi
	recv_pid=$!
}

stop_recvlogical() {
	local slot=$1
	kill -TERM "$recv_pid" 2>/dev/null || true
	wait "$recv_pid" 2>/dev/null || true
	recv_pid=
	# should it linger, end its walsender
	q "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '$slot' AND active" >/dev/null
	wait_slot_idle "$slot"
}
recv_pid=
recv_log="$BENCH_DIR/pg_recvlogical.log"
trap '[ -n "$recv_pid" ] && kill -TERM "$recv_pid" 2>/dev/null; bench_stop_cluster' EXIT

# ---- set-up: the empty bench table, the LOG_BASED stream 'live', per decoding
# round a wal2json slot 'bench_catchN' that a pg_egress stream takes over after
# the load (as from a Singer tap) and a baseline slot 'bench_recvN', and the
# slot 'bench_peek' -------------------------------------------------------------

out_live="$BENCH_DIR/out_live"
bench_create_table >/dev/null
bench_psql -d bench >/dev/null <<SQL
-- n rows of the bench shape, committed every 100 rows
CREATE PROCEDURE public.bench_load(n int) LANGUAGE plpgsql AS \$\$
BEGIN
	FOR i IN 0 .. n / 100 - 1 LOOP
		INSERT INTO public.bench SELECT $BENCH_ROW
		FROM generate_series(i * 100 + 1, i * 100 + 100) g;
		COMMIT;
	END LOOP;
END
\$\$;
CREATE EXTENSION pg_egress;
SELECT egress_add_destination('cdc_live', 'file://$out_live');
SELECT egress_add_stream('live', 'public.bench', 'LOG_BASED', 'cdc_live');
SQL
wait_streaming "'live'"
slot_live=$(slot_of cdc_live)
[ -n "$slot_live" ] || die "destination cdc_live has no replication slot"

# the slots the catch-up streams take over, and the baselines', from before the
# load (a paused stream is resynced when resumed: it cannot measure catching up)
for r in $(seq 1 "$decode_rounds"); do
	q "SELECT pg_create_logical_replication_slot('bench_catch$r', 'wal2json')" >/dev/null
	q "SELECT pg_create_logical_replication_slot('bench_recv$r', 'wal2json')" >/dev/null
done
q "SELECT pg_create_logical_replication_slot('bench_peek', 'wal2json')" >/dev/null

# ---- phase A: the load, pg_egress streaming it live ------------------------

echo "loading $rows rows in $txns transactions of 100 (synchronous_commit off), stream 'live' following..."
live_base=$(q "SELECT rows_sent FROM egress_streams WHERE name = 'live'")
lsn0=$(q "SELECT pg_current_wal_insert_lsn()")
t0=$(bench_now)
bench_psql -d bench -c "SET synchronous_commit = off" -c "CALL public.bench_load($rows)" >/dev/null
t_load_end=$(bench_now)
lsn1=$(q "SELECT pg_current_wal_insert_lsn()")
wal_bytes=$(q "SELECT pg_wal_lsn_diff('$lsn1', '$lsn0')")

wait_delivered live "$slot_live" "$lsn1"
t_live_done=$(landed_at "$out_live")
t_load=$(sub "$t_load_end" "$t0")
t_live=$(sub "$t_live_done" "$t0")
t_live_catchup=$(sub "$t_live_done" "$t_load_end")
n_live=$(records_in "$out_live")
[ "$n_live" = "$rows" ] || die "stream 'live' wrote $n_live RECORDs, expected $rows"
sent_live=$(q "SELECT rows_sent FROM egress_streams WHERE name = 'live'")

# ---- phases B and C: the baselines and pg_egress over the same WAL -------------

t_recv=()
t_peek=()
t_catchup=()
t_start=()
sent_catchup=()

# B: pg_recvlogical from its slot made before the load, up to the load's end
round_recv() {
	local t
	t=$(bench_now)
	start_recvlogical --slot "bench_recv$1" --start --no-loop --endpos="$lsn1" -f /dev/null
	wait "$recv_pid" || die "pg_recvlogical failed: $(cat "$recv_log")"
	recv_pid=
	t_recv+=("$(sub "$(bench_now)" "$t")")
}

# B: the in-server ceiling; peeking does not consume, so every round reads the same slot
round_peek() {
	local t n
	t=$(bench_now)
	n=$(q "SELECT count(*) FROM pg_logical_slot_peek_changes('bench_peek', '$lsn1', NULL,
		'format-version', '2', 'include-timestamp', '1', 'include-lsn', '1')")
	t_peek+=("$(sub "$(bench_now)" "$t")")
	[ "$n" -ge "$rows" ] || die "peek returned $n changes, fewer than $rows"
}

# C: a stream that takes over the slot made before the load at its start (option
# state, as from a Singer tap: no initial sync), from a standing start to its
# last batch; removed after (the adopted slot stays)
round_catchup() {
	local r=$1 t slot=bench_catch$1 out=$BENCH_DIR/out_catchup$1 n lsn
	lsn=$(q "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '$slot'")
	t=$(bench_now)
	q "SELECT egress_add_destination('cdc_catchup$r', 'file://$out', '{\"slot_name\": \"$slot\"}')" >/dev/null
	q "SELECT egress_add_stream('catchup$r', 'public.bench', 'LOG_BASED', 'cdc_catchup$r',
		options => '{\"state\": {\"lsn\": \"$lsn\"}}')" >/dev/null
	wait_delivered "catchup$r" "$slot" "$lsn1"
	t_catchup+=("$(sub "$(landed_at "$out")" "$t")")
	t_start+=("$(sub "${seen_worker_at:-$t}" "$t" | xargs printf '%.2f')")
	sent_catchup+=($(q "SELECT rows_sent FROM egress_streams WHERE name = 'catchup$r'"))
	q "SELECT egress_remove_stream('catchup$r')" >/dev/null
	wait_slot_idle "$slot"
	n=$(records_in "$out")
	[ "$n" = "$rows" ] || die "stream 'catchup$r' wrote $n RECORDs, expected $rows"
}

echo "over the same WAL, $decode_rounds rounds: pg_recvlogical, pg_logical_slot_peek_changes, pg_egress catch-up..."
for r in $(seq 1 "$decode_rounds"); do
	if [ $((r % 2)) = 1 ]; then
		round_recv "$r"
		round_peek
		round_catchup "$r"
	else
		round_catchup "$r"
		round_peek
		round_recv "$r"
	fi
done

rates() { for t in "$@"; do printf '%s ' "$(rate "$rows" "$t")"; done | sed 's/ $//'; }
m_recv_t=$(median "${t_recv[@]}")
m_peek_t=$(median "${t_peek[@]}")
m_catchup_t=$(median "${t_catchup[@]}")
decode_ratios=()
for i in "${!t_recv[@]}"; do
	decode_ratios+=("$(echo "${t_recv[$i]} / ${t_catchup[$i]}" | bc -l | xargs printf '%.2f')")
done

printf 'WAL of the load: %s MB; load took %.2f s; %s cores, load average at start %s, now %s\n' \
	"$((wal_bytes / 1024 / 1024))" "$t_load" "$(nproc)" "$load_start" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-44s %8.2f s %10s rows/s   (runs: %s)\n' "pg_recvlogical wal2json v2 to /dev/null" \
	"$m_recv_t" "$(rate "$rows" "$m_recv_t")" "$(rates "${t_recv[@]}")"
printf '%-44s %8.2f s %10s rows/s   (runs: %s)\n' "peek_changes count(*) (in-server ceiling)" \
	"$m_peek_t" "$(rate "$rows" "$m_peek_t")" "$(rates "${t_peek[@]}")"
printf '%-44s %8.2f s %10s rows/s   (runs: %s; worker up after %s s)\n' "pg_egress LOG_BASED catch-up to files" \
	"$m_catchup_t" "$(rate "$rows" "$m_catchup_t")" "$(rates "${t_catchup[@]}")" "${t_start[*]}"
printf 'ratio pg_egress/pg_recvlogical: %.2fx (target >= 1.5x; per round: %s)   pg_egress/ceiling: %.2fx\n' \
	"$(echo "$m_recv_t / $m_catchup_t" | bc -l)" "${decode_ratios[*]}" "$(echo "$m_peek_t / $m_catchup_t" | bc -l)"
printf '%-44s %8.2f s %10s rows/s   (%.2f s after the load ended)\n' "pg_egress live: load start to last batch" \
	"$t_live" "$(rate "$rows" "$t_live")" "$t_live_catchup"
if [ $((sent_live - live_base)) != "$rows" ] || printf '%s\n' "${sent_catchup[@]}" | grep -vx "$rows" >/dev/null; then
	echo "note: egress_streams.rows_sent says $((sent_live - live_base)) (live), ${sent_catchup[*]} (catch-up); the files hold $rows RECORDs each"
fi
printf 'output: %s in %s files (live), %s in %s files (catchup1)\n' \
	"$(du -sh "$out_live" | cut -f1)" "$(find "$out_live" -type f | wc -l)" \
	"$(du -sh "$BENCH_DIR/out_catchup1" | cut -f1)" "$(find "$BENCH_DIR/out_catchup1" -type f | wc -l)"

# ---- phase D: writers' TPS with pg_egress vs pg_recvlogical consuming ----------

echo "pgbench (scale $pgbench_scale, -c 2 -j 2, ${tps_seconds}s runs, $tps_rounds rounds): TPS with no consumer, pg_egress, pg_recvlogical..."
q "SELECT egress_remove_stream('live')" >/dev/null
for r in $(seq 1 "$decode_rounds"); do
	q "SELECT pg_drop_replication_slot('bench_catch$r')" >/dev/null
	q "SELECT pg_drop_replication_slot('bench_recv$r')" >/dev/null
done
q "SELECT pg_drop_replication_slot('bench_peek')" >/dev/null
q "DROP TABLE public.bench" >/dev/null
deadline=$((SECONDS + 30))
until [ "$(q "SELECT count(*) FROM pg_replication_slots")" = 0 ]; do
	if [ $SECONDS -ge $deadline ]; then
		echo "warning: slots still present 30 s after their streams were removed:" \
			"$(q "SELECT string_agg(slot_name, ', ') FROM pg_replication_slots")" >&2
		break
	fi
	sleep 0.2
done

egress_as_user pgbench -h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres -i -q -s "$pgbench_scale" bench >/dev/null 2>&1 ||
	die "pgbench -i failed"
t=$(bench_now)
q "SELECT egress_add_destination('cdc_tpcb', 'file://$BENCH_DIR/out_tpcb')" >/dev/null
q "SELECT egress_add_stream('tpcb', 'public.pgbench_accounts', 'LOG_BASED', 'cdc_tpcb')" >/dev/null
wait_streaming "'tpcb'"
t_tpcb_sync=$(sub "$(bench_now)" "$t")
slot_tpcb=$(slot_of cdc_tpcb)

run_pgbench() {
	local out tps
	q "CHECKPOINT" >/dev/null
	out=$(egress_as_user pgbench -h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres -n -T "$tps_seconds" -c 2 -j 2 bench 2>&1) ||
		die "pgbench failed: $out"
	tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -n 1)
	[ -n "$tps" ] || die "no tps in pgbench's output: $out"
	echo "$tps"
}

# seconds from now until the slot confirmed LSN (pg_egress) / the walsender sent it (pg_recvlogical)
catchup_egress() {
	local t
	t=$(bench_now)
	wait_slot_confirmed "$slot_tpcb" "$1"
	sub "$(bench_now)" "$t"
}
catchup_recv() {
	local t
	t=$(bench_now)
	wait_for "SELECT coalesce(bool_and(sent_lsn >= '$1'), false) FROM pg_stat_replication WHERE application_name = 'pg_recvlogical'" \
		"pg_recvlogical did not reach $1"
	sub "$(bench_now)" "$t"
}

# Each round runs pgbench with no consumer (the stream paused, its slot idle),
# with pg_egress consuming and with pg_recvlogical consuming; the order of the
# last two alternates between rounds.  Medians are reported.
run_none() {
	tps=$(run_pgbench)
	tps_none+=("$tps")
}
run_egress() {
	# resumed (which syncs it again: a new version) and caught up, before the run
	q "SELECT egress_resume_stream('tpcb')" >/dev/null
	wait_streaming "'tpcb'"
	catchup_egress "$(q "SELECT pg_current_wal_insert_lsn()")" >/dev/null
	tps=$(run_pgbench)
	lag=$(catchup_egress "$(q "SELECT pg_current_wal_insert_lsn()")")
	tps_egress+=("$tps")
	lag_egress+=("$lag")
	q "SELECT egress_pause_stream('tpcb')" >/dev/null
	wait_slot_idle "$slot_tpcb"
}
run_recv() {
	# on a fresh slot, continuously to /dev/null
	q "SELECT pg_create_logical_replication_slot('bench_tpcb_recv', 'wal2json')" >/dev/null
	start_recvlogical --slot bench_tpcb_recv --start --no-loop -f /dev/null
	wait_for "SELECT coalesce(bool_and(active), false) FROM pg_replication_slots WHERE slot_name = 'bench_tpcb_recv'" \
		"pg_recvlogical did not start ($(cat "$recv_log"))"
	tps=$(run_pgbench)
	lag=$(catchup_recv "$(q "SELECT pg_current_wal_insert_lsn()")")
	tps_recv+=("$tps")
	lag_recv+=("$lag")
	stop_recvlogical bench_tpcb_recv
	q "SELECT pg_drop_replication_slot('bench_tpcb_recv')" >/dev/null
}

tps_none=()
tps_egress=()
tps_recv=()
lag_egress=()
lag_recv=()
q "SELECT egress_pause_stream('tpcb')" >/dev/null
wait_slot_idle "$slot_tpcb"
for round in $(seq 1 "$tps_rounds"); do
	run_none
	if [ $((round % 2)) = 1 ]; then
		run_egress
		run_recv
	else
		run_recv
		run_egress
	fi
done
[ "$(q "SELECT state FROM egress_streams WHERE name = 'tpcb'")" = paused ] || die "stream 'tpcb' is not paused"

m_none=$(median "${tps_none[@]}")
m_egress=$(median "${tps_egress[@]}")
m_recv=$(median "${tps_recv[@]}")
printf 'initial sync of pgbench_accounts (%d rows) to streaming: %.2f s\n' $((pgbench_scale * 100000)) "$t_tpcb_sync"
printf '%-44s %10.1f   (runs: %s)\n' "pgbench TPS, no consumer" "$m_none" "${tps_none[*]}"
printf '%-44s %10.1f   (runs: %s; caught up %s s after each)\n' "pgbench TPS, pg_egress LOG_BASED consuming" \
	"$m_egress" "${tps_egress[*]}" "$(printf '%.2f ' "${lag_egress[@]}" | sed 's/ $//')"
printf '%-44s %10.1f   (runs: %s; caught up %s s after each)\n' "pgbench TPS, pg_recvlogical consuming" \
	"$m_recv" "${tps_recv[*]}" "$(printf '%.2f ' "${lag_recv[@]}" | sed 's/ $//')"
printf 'load average now: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
# per round too: the machine's background load drifts between rounds more than within one
round_ratios=()
for i in "${!tps_egress[@]}"; do
	round_ratios+=("$(echo "${tps_egress[$i]} / ${tps_recv[$i]}" | bc -l | xargs printf '%.3f')")
done
printf 'TPS ratio pg_egress/pg_recvlogical: %.3f (target >= 1.0; median of per-round ratios %.3f: %s)   pg_egress/no consumer: %.3f\n' \
	"$(echo "$m_egress / $m_recv" | bc -l)" "$(median "${round_ratios[@]}")" "${round_ratios[*]}" \
	"$(echo "$m_egress / $m_none" | bc -l)"
