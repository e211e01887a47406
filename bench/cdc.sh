#!/usr/bin/env bash
# LOG_BASED change capture: pg_egress against baselines measured in the same run.
#  (a) 1,000,000 inserts in transactions of 100, catch-up to files: pg_egress
#      (its destination's decoder, pgoutput by default, and wal2json on a tap's
#      slot taken over) vs pg_recvlogical + wal2json format-version 2 to
#      /dev/null and vs the in-server ceiling (pg_logical_slot_peek_changes with
#      wal2json, counted), all over the same WAL;
#  (e) over that WAL too: pgoutput's own cost, text vs binary values
#      (pg_logical_slot_peek_binary_changes on a pgoutput slot, counted);
#  (b) one watched table of 10 equally busy ones: pg_egress vs pg_recvlogical +
#      wal2json with add-tables for that table;
#  (c) UPDATE-heavy load on a table whose 10 kB TOASTed column is left
#      unchanged: rows/s vs pg_recvlogical, and the CDC worker's peak RssAnon
#      (the unchanged value is not in the WAL: wal2json leaves it out, while
#      pg_egress reads it again and writes every RECORD whole, 10 kB each);
#  (d) pgbench TPS while pg_egress consumes the WAL vs while pg_recvlogical does.
# Usage: bash bench/cdc.sh
#   BENCH_ROWS=...           rows inserted in (a) (default 1000000, in transactions of 100)
#   BENCH_DECODE_ROUNDS=...  rounds of (a), (e) and (b) (default 2)
#   BENCH_TEN_ROWS=...       rows inserted in (b), over the 10 tables (default BENCH_ROWS)
#   BENCH_TOAST_ROWS=...     rows of the TOAST table in (c) (default 10000)
#   BENCH_TOAST_UPDATES=...  rows updated in (c), 100 a transaction (default 200000)
#   BENCH_TPS_SECONDS=...    length of each pgbench run (default 20)
#   BENCH_TPS_ROUNDS=...     pgbench rounds (none, pg_egress, pg_recvlogical; default 3)
#   BENCH_PGBENCH_SCALE=...  pgbench -i scale (default 10)
#   BENCH_TIMEOUT=...        seconds any single wait may take (default 300)
#   BENCH_PHASES=...         which of a b c d to run (default "a b c d"; e runs with a)
#   BENCH_NO_SETUP=1         do not build and install (it was done, e.g. into a private
#                            install whose bin directory is first in PATH)
#
# How pg_egress catches up.  A stream of its own destination is added before
# the load and paused once streaming (its slot idle at the load's start); after
# the load it is enabled again directly in the catalog, and timed until its
# slot confirmed the load's end with every RECORD in the files.  (Not
# egress_resume_stream(): that syncs a paused LOG_BASED stream again, since the
# other streams of its destination may have moved the slot past changes it
# missed; these destinations have one stream each, so nothing was missed.)
# pgoutput needs the table in the destination's publication as of the WAL it
# decodes, so the stream cannot simply be added after the load.  Times are
# from the moment the stream had a worker again (the background worker's
# launch, up to pg_egress.naptime later, is reported apart).
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
ten_rows=${BENCH_TEN_ROWS:-$rows}
ten_rows=$((ten_rows / 1000 * 1000))
[ "$ten_rows" -ge 1000 ] || { echo "BENCH_TEN_ROWS must be at least 1000" >&2; exit 1; }
toast_rows=${BENCH_TOAST_ROWS:-10000}
toast_rows=$((toast_rows / 100 * 100))
[ "$toast_rows" -ge 100 ] || { echo "BENCH_TOAST_ROWS must be at least 100" >&2; exit 1; }
toast_updates=${BENCH_TOAST_UPDATES:-200000}
toast_updates=$((toast_updates / 100 * 100))
[ "$toast_updates" -ge 100 ] || { echo "BENCH_TOAST_UPDATES must be at least 100" >&2; exit 1; }
phases=" ${BENCH_PHASES:-a b c d} "
phase() { [[ $phases == *" $1 "* ]]; }

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
[ -n "${BENCH_NO_SETUP:-}" ] || egress_setup >/dev/null
egress_ensure_user
bench_start_cluster

# logical decoding for several consumers, and wal2json allowed as an output plugin
# slots: live, per round bench_catchN, bench_recvN, pg_egress_cdc_pgoN,
# pg_egress_cdc_tenN, bench_ten_recvN, and bench_peek, bench_pgo, the TOAST
# ones, and temporary ones for initial syncs
slots=$((5 * decode_rounds + 10))
[ $slots -ge 10 ] || slots=10
conf="max_replication_slots = $slots
max_wal_senders = 10
max_worker_processes = $((2 * decode_rounds + 10))"
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
# (when the stream first had a worker), done_at, and rss_first / rss_peak (kB
# of RssAnon of the stream's worker at the first poll that saw it / the most
# any poll saw).  (egress_streams.rows_sent is only reported: it is not
# reliable across worker session restarts.)
wait_delivered() {
	local name=$1 slot=$2 lsn=$3 deadline=$((SECONDS + timeout)) r ok pid state err kb
	seen_worker_at=
	rss_first=
	rss_peak=0
	while :; do
		r=$(q "SELECT coalesce((SELECT confirmed_flush_lsn >= '$lsn' FROM pg_replication_slots WHERE slot_name = '$slot'), false),
		              coalesce(worker_pid, 0), state, coalesce(last_error, '')
		         FROM egress_streams WHERE name = '$name'")
		IFS='|' read -r ok pid state err <<<"$r"
		[ -z "$seen_worker_at" ] && [ "$pid" != 0 ] && seen_worker_at=$(bench_now)
		if [ "$pid" != 0 ]; then
			kb=$(rss_anon "$pid")
			if [ -n "$kb" ]; then
				[ -n "$rss_first" ] || rss_first=$kb
				[ "$kb" -le "$rss_peak" ] || rss_peak=$kb
			fi
		fi
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

# kB of RssAnon of process PID (empty if it is gone)
rss_anon() { awk '/^RssAnon:/ {print $2}' "/proc/$1/status" 2>/dev/null || true; }

# A LOG_BASED stream NAME of a new destination DEST (file directory OUT,
# destination options OPTS) on RELATION, streaming, then paused with its slot
# idle: it catches up when enabled again (see the top of the file).
add_paused_stream() {
	local name=$1 dest=$2 out=$3 rel=$4 opts=${5:-"{}"}
	q "SELECT egress_add_destination('$dest', 'file://$out', '$opts')" >/dev/null
	q "SELECT egress_add_stream('$name', '$rel', 'LOG_BASED', '$dest')" >/dev/null
	wait_streaming "'$name'"
	q "SELECT egress_pause_stream('$name')" >/dev/null
	wait_slot_idle "$(slot_of "$dest")"
}

# Enable the paused stream NAME without a resync, and time it until its slot
# confirmed LSN; sets t_enable (s from enabling to the last batch), t_worker
# (s from its worker's start), up_after (s until the worker started), and the
# rss_* of wait_delivered.
catch_up() {
	local name=$1 dest=$2 out=$3 lsn=$4 t slot
	slot=$(slot_of "$dest")
	t=$(bench_now)
	q "UPDATE egress.stream SET enabled = true WHERE name = '$name'" >/dev/null
	wait_delivered "$name" "$slot" "$lsn"
	t_enable=$(sub "$(landed_at "$out")" "$t")
	t_worker=$(sub "$(landed_at "$out")" "${seen_worker_at:-$t}")
	up_after=$(sub "${seen_worker_at:-$t}" "$t" | xargs printf '%.2f')
	q "SELECT egress_pause_stream('$name')" >/dev/null
	wait_slot_idle "$slot"
}

# drop the slot, if it is there
drop_slot() { q "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$1'" >/dev/null; }

plugin_of() { q "SELECT plugin FROM pg_replication_slots WHERE slot_name = '$1'"; }

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

# ---- set-up ---------------------------------------------------------------------

# BENCH_ROW inside a format() string literal
row_in_format=${BENCH_ROW//\'/\'\'}
row_in_format=${row_in_format//%/%%}

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
-- n rows over the tables public.bench_t1 .. public.bench_t10 in turn, 100 a transaction
CREATE PROCEDURE public.bench_load_ten(n int) LANGUAGE plpgsql AS \$\$
BEGIN
	FOR i IN 0 .. n / 100 - 1 LOOP
		EXECUTE format('INSERT INTO public.bench_t%s SELECT $row_in_format FROM generate_series(\$1, \$2) g', i % 10 + 1)
		USING i * 100 + 1, i * 100 + 100;
		COMMIT;
	END LOOP;
END
\$\$;
-- n row updates of public.bench_toast (rows 1 .. m, in turn), 100 a transaction,
-- its TOASTed column unchanged
CREATE PROCEDURE public.bench_toast_update(n int, m int) LANGUAGE plpgsql AS \$\$
DECLARE
	lo int;
BEGIN
	FOR i IN 0 .. n / 100 - 1 LOOP
		lo := (i * 100) % m;
		UPDATE public.bench_toast t SET n = t.n + 1 WHERE t.id > lo AND t.id <= lo + 100;
		COMMIT;
	END LOOP;
END
\$\$;
CREATE EXTENSION pg_egress;
SQL

# ---- (a) and (e): 1,000,000 inserts, pg_egress catch-up vs the baselines ---------

phase_a() {
	local r
	# Set-up: the empty bench table, the LOG_BASED stream 'live'; per decoding
	# round a wal2json slot 'bench_catchN' that a pg_egress stream takes over
	# after the load (as from a Singer tap), a baseline slot 'bench_recvN' and
	# a paused stream 'pgoN' of pg_egress's own destination 'cdc_pgoN'; the
	# wal2json slot 'bench_peek', and for (e) the pgoutput slot 'bench_pgo' of
	# the publication bench_pub.
	out_live="$BENCH_DIR/out_live"
	bench_create_table >/dev/null
	q "SELECT egress_add_destination('cdc_live', 'file://$out_live')" >/dev/null
	q "SELECT egress_add_stream('live', 'public.bench', 'LOG_BASED', 'cdc_live')" >/dev/null
	wait_streaming "'live'"
	slot_live=$(slot_of cdc_live)
	[ -n "$slot_live" ] || die "destination cdc_live has no replication slot"
	for r in $(seq 1 "$decode_rounds"); do
		add_paused_stream "pgo$r" "cdc_pgo$r" "$BENCH_DIR/out_pgo$r" public.bench
	done
	pgo_plugin=$(plugin_of "$(slot_of cdc_pgo1)")
	for r in $(seq 1 "$decode_rounds"); do
		q "SELECT pg_create_logical_replication_slot('bench_catch$r', 'wal2json')" >/dev/null
		q "SELECT pg_create_logical_replication_slot('bench_recv$r', 'wal2json')" >/dev/null
	done
	q "SELECT pg_create_logical_replication_slot('bench_peek', 'wal2json')" >/dev/null
	q "CREATE PUBLICATION bench_pub FOR TABLE public.bench" >/dev/null
	q "SELECT pg_create_logical_replication_slot('bench_pgo', 'pgoutput')" >/dev/null

	# the load, pg_egress streaming it live
	echo "(a) loading $rows rows in $txns transactions of 100 (synchronous_commit off), stream 'live' following..."
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

	t_recv=()
	t_peek=()
	t_catchup=()
	t_start=()
	sent_catchup=()
	t_pgo=()
	t_pgo_all=()
	pgo_start=()
	pgo_rss=()
	t_text=()
	t_binary=()

	echo "over the same WAL, $decode_rounds rounds: pg_recvlogical, peek (wal2json; pgoutput text, binary), pg_egress catch-ups..."
	for r in $(seq 1 "$decode_rounds"); do
		if [ $((r % 2)) = 1 ]; then
			round_recv "$r"
			round_peek
			round_pgo_peek
			round_catchup "$r"
			round_pgo "$r"
		else
			round_pgo "$r"
			round_catchup "$r"
			round_pgo_peek
			round_peek
			round_recv "$r"
		fi
	done

	m_recv_t=$(median "${t_recv[@]}")
	m_peek_t=$(median "${t_peek[@]}")
	m_catchup_t=$(median "${t_catchup[@]}")
	m_pgo_t=$(median "${t_pgo[@]}")
	m_text_t=$(median "${t_text[@]}")
	m_binary_t=$(median "${t_binary[@]}")
	decode_ratios=()
	for i in "${!t_recv[@]}"; do
		decode_ratios+=("$(echo "${t_recv[$i]} / ${t_pgo[$i]}" | bc -l | xargs printf '%.2f')")
	done

	printf '(a) WAL of the load: %s MB; load took %.2f s; %s cores, load average at start %s, now %s\n' \
		"$((wal_bytes / 1024 / 1024))" "$t_load" "$(nproc)" "$load_start" "$(cut -d' ' -f1-3 /proc/loadavg)"
	printf '%-52s %8.2f s %10s rows/s   (runs: %s)\n' "pg_recvlogical wal2json v2 to /dev/null" \
		"$m_recv_t" "$(rate "$rows" "$m_recv_t")" "$(rates "$rows" "${t_recv[@]}")"
	printf '%-52s %8.2f s %10s rows/s   (runs: %s)\n' "peek_changes wal2json count(*) (in-server ceiling)" \
		"$m_peek_t" "$(rate "$rows" "$m_peek_t")" "$(rates "$rows" "${t_peek[@]}")"
	printf '%-52s %8.2f s %10s rows/s   (runs: %s; from enabling: %s s; worker up after %s s; RssAnon peak kB: %s)\n' \
		"pg_egress catch-up to files, $pgo_plugin decoder" \
		"$m_pgo_t" "$(rate "$rows" "$m_pgo_t")" "$(rates "$rows" "${t_pgo[@]}")" \
		"$(printf '%.2f ' "${t_pgo_all[@]}" | sed 's/ $//')" "${pgo_start[*]}" "${pgo_rss[*]}"
	printf '%-52s %8.2f s %10s rows/s   (runs: %s; from adding, worker up after %s s)\n' \
		"pg_egress catch-up to files, wal2json (tap's slot)" \
		"$m_catchup_t" "$(rate "$rows" "$m_catchup_t")" "$(rates "$rows" "${t_catchup[@]}")" "${t_start[*]}"
	printf 'ratio pg_egress(%s)/pg_recvlogical: %.2fx (target >= 1.5x; per round: %s)   pg_egress(%s)/ceiling: %.2fx   pg_egress(wal2json)/pg_recvlogical: %.2fx\n' \
		"$pgo_plugin" "$(echo "$m_recv_t / $m_pgo_t" | bc -l)" "${decode_ratios[*]}" \
		"$pgo_plugin" "$(echo "$m_peek_t / $m_pgo_t" | bc -l)" "$(echo "$m_recv_t / $m_catchup_t" | bc -l)"
	printf '%-52s %8.2f s %10s rows/s   (%.2f s after the load ended)\n' "pg_egress live: load start to last batch" \
		"$t_live" "$(rate "$rows" "$t_live")" "$t_live_catchup"
	if [ $((sent_live - live_base)) != "$rows" ] || printf '%s\n' "${sent_catchup[@]}" | grep -vx "$rows" >/dev/null; then
		echo "note: egress_streams.rows_sent says $((sent_live - live_base)) (live), ${sent_catchup[*]} (catch-up); the files hold $rows RECORDs each"
	fi
	printf 'output: %s in %s files (live), %s in %s files (pgo1)\n' \
		"$(du -sh "$out_live" | cut -f1)" "$(find "$out_live" -type f | wc -l)" \
		"$(du -sh "$BENCH_DIR/out_pgo1" | cut -f1)" "$(find "$BENCH_DIR/out_pgo1" -type f | wc -l)"
	printf '(e) %-48s %8.2f s %10s rows/s   (runs: %s)\n' "peek_binary_changes pgoutput, binary 'false'" \
		"$m_text_t" "$(rate "$rows" "$m_text_t")" "$(rates "$rows" "${t_text[@]}")"
	printf '(e) %-48s %8.2f s %10s rows/s   (runs: %s)\n' "peek_binary_changes pgoutput, binary 'true'" \
		"$m_binary_t" "$(rate "$rows" "$m_binary_t")" "$(rates "$rows" "${t_binary[@]}")"
	printf '(e) pgoutput cost text/binary: %.2fx   pg_egress(%s)/pgoutput text ceiling: %.2fx\n' \
		"$(echo "$m_text_t / $m_binary_t" | bc -l)" "$pgo_plugin" "$(echo "$m_text_t / $m_pgo_t" | bc -l)"

	# what phase (d) and the others do not need
	q "SELECT egress_remove_destination(name, true) FROM egress.destination" >/dev/null
	for r in $(seq 1 "$decode_rounds"); do
		drop_slot bench_catch$r
		drop_slot bench_recv$r
	done
	drop_slot bench_peek
	drop_slot bench_pgo
	q "DROP PUBLICATION bench_pub" >/dev/null
	q "DROP TABLE public.bench" >/dev/null
	rm -rf "$BENCH_DIR"/out_*
}

rates() { local n=$1; shift; for t in "$@"; do printf '%s ' "$(rate "$n" "$t")"; done | sed 's/ $//'; }

# pg_recvlogical from its slot made before the load, up to the load's end
round_recv() {
	local t
	t=$(bench_now)
	start_recvlogical --slot "bench_recv$1" --start --no-loop --endpos="$lsn1" -f /dev/null
	wait "$recv_pid" || die "pg_recvlogical failed: $(cat "$recv_log")"
	recv_pid=
	t_recv+=("$(sub "$(bench_now)" "$t")")
}

# the in-server ceiling; peeking does not consume, so every round reads the same slot
round_peek() {
	local t n
	t=$(bench_now)
	n=$(q "SELECT count(*) FROM pg_logical_slot_peek_changes('bench_peek', '$lsn1', NULL,
		'format-version', '2', 'include-timestamp', '1', 'include-lsn', '1')")
	t_peek+=("$(sub "$(bench_now)" "$t")")
	[ "$n" -ge "$rows" ] || die "peek returned $n changes, fewer than $rows"
}

# (e) pgoutput's own cost over the same WAL, text values and binary ones
round_pgo_peek() {
	local t n bin
	for bin in false true; do
		t=$(bench_now)
		n=$(q "SELECT count(*) FROM pg_logical_slot_peek_binary_changes('bench_pgo', '$lsn1', NULL,
			'proto_version', '1', 'publication_names', 'bench_pub', 'binary', '$bin')")
		[ "$n" -ge "$rows" ] || die "pgoutput peek (binary $bin) returned $n messages, fewer than $rows"
		if [ $bin = false ]; then t_text+=("$(sub "$(bench_now)" "$t")"); else t_binary+=("$(sub "$(bench_now)" "$t")"); fi
	done
}

# a stream that takes over the wal2json slot made before the load at its start
# (option state, as from a Singer tap: no initial sync), from a standing start
# to its last batch; removed after (the adopted slot stays)
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

# pg_egress's own destination (default decoder), paused during the load
round_pgo() {
	local r=$1 out=$BENCH_DIR/out_pgo$1 n
	catch_up "pgo$r" "cdc_pgo$r" "$out" "$lsn1"
	t_pgo+=("$t_worker")
	t_pgo_all+=("$t_enable")
	pgo_start+=("$up_after")
	pgo_rss+=("$rss_peak")
	n=$(records_in "$out")
	[ "$n" = "$rows" ] || die "stream 'pgo$r' wrote $n RECORDs, expected $rows"
}

# ---- (b) one watched table of 10 equally busy ones ---------------------------------

phase_b() {
	local r i t n lsn_b0 lsn_b1 out watched=$((ten_rows / 10))
	for i in $(seq 1 10); do
		q "CREATE TABLE public.bench_t$i (LIKE public.bench_shape INCLUDING ALL)" >/dev/null
	done
	for r in $(seq 1 "$decode_rounds"); do
		add_paused_stream "ten$r" "cdc_ten$r" "$BENCH_DIR/out_ten$r" public.bench_t1
		q "SELECT pg_create_logical_replication_slot('bench_ten_recv$r', 'wal2json')" >/dev/null
	done
	ten_plugin=$(plugin_of "$(slot_of cdc_ten1)")
	echo "(b) loading $ten_rows rows over 10 tables in transactions of 100 (each to one table, in turn); one table watched..."
	lsn_b0=$(q "SELECT pg_current_wal_insert_lsn()")
	t=$(bench_now)
	bench_psql -d bench -c "SET synchronous_commit = off" -c "CALL public.bench_load_ten($ten_rows)" >/dev/null
	t_ten_load=$(sub "$(bench_now)" "$t")
	lsn_b1=$(q "SELECT pg_current_wal_insert_lsn()")
	t_ten_recv=()
	t_ten=()
	t_ten_all=()
	ten_start=()
	ten_rss=()
	for r in $(seq 1 "$decode_rounds"); do
		if [ $((r % 2)) = 1 ]; then ten_recv "$r"; ten_egress "$r"; else ten_egress "$r"; ten_recv "$r"; fi
	done
	m_ten_recv=$(median "${t_ten_recv[@]}")
	m_ten=$(median "${t_ten[@]}")
	printf '(b) WAL of the load: %s MB; load took %.2f s; the watched table got %s rows\n' \
		"$(($(q "SELECT pg_wal_lsn_diff('$lsn_b1', '$lsn_b0')::bigint") / 1024 / 1024))" "$t_ten_load" "$watched"
	printf '%-52s %8.2f s %10s rows/s   (runs: %s)\n' "pg_recvlogical wal2json v2 add-tables to /dev/null" \
		"$m_ten_recv" "$(rate "$watched" "$m_ten_recv")" "$(rates "$watched" "${t_ten_recv[@]}")"
	printf '%-52s %8.2f s %10s rows/s   (runs: %s; from enabling: %s s; worker up after %s s; RssAnon peak kB: %s)\n' \
		"pg_egress catch-up to files, $ten_plugin decoder" \
		"$m_ten" "$(rate "$watched" "$m_ten")" "$(rates "$watched" "${t_ten[@]}")" \
		"$(printf '%.2f ' "${t_ten_all[@]}" | sed 's/ $//')" "${ten_start[*]}" "${ten_rss[*]}"
	printf '(b) ratio pg_egress(%s)/pg_recvlogical: %.2fx (WAL of all 10 tables read by both; rows/s counts the watched rows)\n' \
		"$ten_plugin" "$(echo "$m_ten_recv / $m_ten" | bc -l)"
	q "SELECT egress_remove_destination(name, true) FROM egress.destination" >/dev/null
	for r in $(seq 1 "$decode_rounds"); do
		drop_slot bench_ten_recv$r
	done
	for i in $(seq 1 10); do q "DROP TABLE public.bench_t$i" >/dev/null; done
	rm -rf "$BENCH_DIR"/out_*
}

ten_recv() {
	local t
	t=$(bench_now)
	start_recvlogical --slot "bench_ten_recv$1" --start --no-loop --endpos="$lsn_b1" -f /dev/null \
		-o add-tables=public.bench_t1
	wait "$recv_pid" || die "pg_recvlogical failed: $(cat "$recv_log")"
	recv_pid=
	t_ten_recv+=("$(sub "$(bench_now)" "$t")")
}

ten_egress() {
	local r=$1 out=$BENCH_DIR/out_ten$1 n
	catch_up "ten$r" "cdc_ten$r" "$out" "$lsn_b1"
	t_ten+=("$t_worker")
	t_ten_all+=("$t_enable")
	ten_start+=("$up_after")
	ten_rss+=("$rss_peak")
	n=$(records_in "$out")
	[ "$n" = $((ten_rows / 10)) ] || die "stream 'ten$r' wrote $n RECORDs, expected $((ten_rows / 10))"
}

# ---- (c) UPDATE-heavy, a 10 kB TOASTed column unchanged ------------------------------

phase_c() {
	local t n lsn_c0 lsn_c1 out=$BENCH_DIR/out_toast
	# STORAGE EXTERNAL: out of line and uncompressed, so the 10 kB are in the TOAST table
	bench_psql -d bench >/dev/null <<SQL
CREATE TABLE public.bench_toast (id int PRIMARY KEY, n int NOT NULL, big text NOT NULL);
ALTER TABLE public.bench_toast ALTER COLUMN big SET STORAGE EXTERNAL;
SQL
	q "SELECT egress_add_destination('cdc_toast', 'file://$out')" >/dev/null
	q "SELECT egress_add_stream('toast', 'public.bench_toast', 'LOG_BASED', 'cdc_toast')" >/dev/null
	wait_streaming "'toast'"
	toast_plugin=$(plugin_of "$(slot_of cdc_toast)")
	echo "(c) $toast_rows rows with a 10 kB TOASTed value (streamed live), then $toast_updates row updates leaving it unchanged..."
	q "INSERT INTO public.bench_toast SELECT g, 0, repeat(md5(g::text), 320) FROM generate_series(1, $toast_rows) g" >/dev/null
	wait_delivered toast "$(slot_of cdc_toast)" "$(q "SELECT pg_current_wal_insert_lsn()")"
	q "SELECT egress_pause_stream('toast')" >/dev/null
	wait_slot_idle "$(slot_of cdc_toast)"
	q "SELECT pg_create_logical_replication_slot('bench_toast_recv', 'wal2json')" >/dev/null
	lsn_c0=$(q "SELECT pg_current_wal_insert_lsn()")
	t=$(bench_now)
	bench_psql -d bench -c "SET synchronous_commit = off" -c "CALL public.bench_toast_update($toast_updates, $toast_rows)" >/dev/null
	t_toast_load=$(sub "$(bench_now)" "$t")
	lsn_c1=$(q "SELECT pg_current_wal_insert_lsn()")

	t=$(bench_now)
	start_recvlogical --slot bench_toast_recv --start --no-loop --endpos="$lsn_c1" -f /dev/null
	wait "$recv_pid" || die "pg_recvlogical failed: $(cat "$recv_log")"
	recv_pid=
	t_toast_recv=$(sub "$(bench_now)" "$t")

	catch_up toast cdc_toast "$out" "$lsn_c1"
	n=$(records_in "$out")
	[ "$n" = $((toast_rows + toast_updates)) ] ||
		die "stream 'toast' wrote $n RECORDs, expected $((toast_rows + toast_updates))"
	# every RECORD holds the 10 kB value, the updates' too
	n=$(find "$out" -type f -name '*.jsonl' -exec cat {} + | grep '"type":"RECORD"' | awk 'length > 10240' | wc -l)
	[ "$n" = $((toast_rows + toast_updates)) ] ||
		die "stream 'toast': $n RECORDs hold the 10 kB value, expected $((toast_rows + toast_updates))"
	printf '(c) updates took %.2f s; WAL %s\n' "$t_toast_load" \
		"$(q "SELECT pg_size_pretty(pg_wal_lsn_diff('$lsn_c1', '$lsn_c0'))")"
	printf '%-52s %8.2f s %10s rows/s\n' "pg_recvlogical wal2json v2 to /dev/null" \
		"$t_toast_recv" "$(rate "$toast_updates" "$t_toast_recv")"
	printf '%-52s %8.2f s %10s rows/s   (from enabling: %.2f s; worker up after %s s)\n' \
		"pg_egress catch-up to files, $toast_plugin decoder" \
		"$t_worker" "$(rate "$toast_updates" "$t_worker")" "$t_enable" "$up_after"
	printf '(c) ratio pg_egress(%s)/pg_recvlogical: %.2fx   CDC worker RssAnon: %s kB at its start, %s kB peak (+%s kB)\n' \
		"$toast_plugin" "$(echo "$t_toast_recv / $t_worker" | bc -l)" "$rss_first" "$rss_peak" "$((rss_peak - rss_first))"
	q "SELECT egress_remove_destination(name, true) FROM egress.destination" >/dev/null
	drop_slot bench_toast_recv
	q "DROP TABLE public.bench_toast" >/dev/null
	rm -rf "$out"
}

# the shape of the bench table, for the tables of (b)
bench_create_table >/dev/null
q "ALTER TABLE public.bench RENAME TO bench_shape" >/dev/null

phase a && phase_a
phase b && phase_b
phase c && phase_c
phase d || exit 0

# ---- (d): writers' TPS with pg_egress vs pg_recvlogical consuming ----------

echo "pgbench (scale $pgbench_scale, -c 2 -j 2, ${tps_seconds}s runs, $tps_rounds rounds): TPS with no consumer, pg_egress, pg_recvlogical..."
q "DROP TABLE public.bench_shape" >/dev/null
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
	drop_slot bench_tpcb_recv
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
