#!/usr/bin/env bash
# Backfills (issue 13), measured in one run on one table:
#  (a) LOG_BASED initial sync to files: the chunked backfill (stream option
#      chunk_rows, default 50000) vs the one-transaction sync of 0.1
#      (chunk_rows 0); target ratio >= 0.9x;
#  (b) FULL_TABLE to files with the stream option "parallel": 2 vs 1;
#      target ratio >= 1.5x on 2 cores.
# Usage: bash bench/backfill.sh
#   BENCH_ROWS=...          rows of the bench table (default 5000000)
#   BENCH_ROUNDS=...        rounds of each measurement (default 2; the order of
#                           the two variants alternates between rounds)
#   BENCH_CHUNK_ROWS=...    chunk_rows of the chunked runs (default: the option's default)
#   BENCH_PHASES=...        which of a b to run (default "a b")
#   BENCH_TIMEOUT=...       seconds any single wait may take (default 900)
#   BENCH_NO_SETUP=1        do not build and install (it was done, e.g. into a private
#                           install whose bin directory is first in PATH)
#   BENCH_PORT=...          port of the throwaway cluster
#
# Times.  (a) From the server log: from "initial sync of ... started" to
# "initial sync finished" (0.1) and from "chunked backfill of ... started" to
# "chunked backfill of ... finished" (logged once the last chunk's batch was
# acknowledged); the wall-clock time from egress_add_stream to the state
# streaming (worker start included) is printed too.  Each run has a
# destination of its own (a new slot), removed afterwards.  (b) From
# egress_streams: sync_finished_at - sync_started_at, as bench/full_table.sh.
# Every run checks that all rows arrived (RECORD lines in the files).
#
# CPU.  (a) also prints the CPU seconds (user + system, /proc/<pid>/stat) of
# the destination's CDC worker, which does all the work of both variants (a
# new worker per run: each run has its own destination), and their ratio:
# on a shared machine the wall-clock ratio is noisy, the CPU ratio much less.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

export BENCH_ROWS=${BENCH_ROWS:-5000000}
rounds=${BENCH_ROUNDS:-2}
timeout=${BENCH_TIMEOUT:-900}
phases=" ${BENCH_PHASES:-a b} "
phase() { [[ $phases == *" $1 "* ]]; }

[ -n "${BENCH_NO_SETUP:-}" ] || egress_setup >/dev/null
egress_ensure_user
bench_start_cluster
echo "pg_egress.max_workers = 4
max_worker_processes = 16" | bench_reconfigure
rows=$BENCH_ROWS
echo "building the bench table ($rows rows)..."
bench_make_table >/dev/null
bench_psql -d bench -c "CREATE EXTENSION pg_egress" >/dev/null
log=$BENCH_DIR/server.log

q() { bench_psql -d bench -Atc "$1"; }

die() {
	echo "bench/backfill: $*" >&2
	bench_psql -d bench -c "SELECT name, method, state, version, rows_sent, last_error FROM egress_streams" >&2 || true
	echo "--- last lines of the server log:" >&2
	tail -n 30 "$log" >&2 || true
	exit 1
}

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
rate() { echo "$rows / $1" | bc -l | xargs printf '%.0f'; }
secs() { printf '%.2f ' "$@" | sed 's/ $//'; }

# Poll until stream NAME is in STATE; an error state fails.
wait_state() {
	local name=$1 want=$2 deadline=$((SECONDS + timeout)) r
	while :; do
		r=$(q "SELECT state || '|' || coalesce(last_error, '') FROM egress_streams WHERE name = '$name'")
		[ "${r%%|*}" = "$want" ] && return 0
		[ "${r%%|*}" = error ] && die "stream $name failed: ${r#*|}"
		[ $SECONDS -lt $deadline ] || die "stream $name not $want after ${timeout}s (state ${r%%|*})"
		sleep 0.05
	done
}

records_in() { find "$1" -type f -name '*.jsonl' -exec cat {} + | grep -c '"type":"RECORD"' || true; }

# seconds since the epoch of the first server log line after byte OFFSET matching RE
log_time() {
	local offset=$1 re=$2 line
	line=$(tail -c +"$((offset + 1))" "$log" | grep -m 1 -E "$re" || true)
	[ -n "$line" ] || return 1
	date -d "$(cut -d' ' -f1-3 <<<"$line")" +%s.%N
}

# ---- (a) chunked LOG_BASED initial sync vs 0.1's one transaction ----------------

# one LOG_BASED initial sync with chunk_rows CHUNKS ('' = the default);
# appends its log-measured seconds to the array named by $2
run_log_based() {
	local chunks=$1 n=$((++run)) name dest out opts offset tq t0 t1 ts te got cpu
	name=bf$n
	dest=bfd$n
	out=$BENCH_DIR/out_$n
	if [ -z "$chunks" ]; then opts='{}'; else opts="{\"chunk_rows\": $chunks}"; fi
	tq=$(bench_now)
	q "SELECT egress_add_destination('$dest', 'file://$out')" >/dev/null
	offset=$(stat -c %s "$log")
	t0=$(bench_now)
	q "SELECT egress_add_stream('$name', 'public.bench', 'LOG_BASED', '$dest', options => '$opts')" >/dev/null
	wait_state "$name" streaming
	t1=$(bench_now)
	cpu=$(worker_cpu "$tq")
	if [ "$chunks" = 0 ]; then
		ts=$(log_time "$offset" "stream \"$name\": initial sync of \S+ started") || die "$name: no start in the log"
		te=$(log_time "$offset" "stream \"$name\": initial sync finished") || die "$name: no end in the log"
	else
		ts=$(log_time "$offset" "stream \"$name\": chunked backfill of \S+ started") ||
			die "$name: no chunked backfill start in the log (chunk_rows ${chunks:-default})"
		te=$(log_time "$offset" "stream \"$name\": chunked backfill of \S+ finished") || die "$name: no end in the log"
	fi
	got=$(records_in "$out")
	[ "$got" = "$rows" ] || die "stream $name wrote $got RECORDs, expected $rows"
	extra=$(q "SELECT backfill_chunks FROM egress_streams WHERE name = '$name'" 2>/dev/null || echo '-')
	q "SELECT egress_remove_destination('$dest', true)" >/dev/null
	rm -rf "$out"
	local -n times=$2 walls=$3 cpus=$4
	times+=("$(echo "$te - $ts" | bc -l)")
	walls+=("$(echo "$t1 - $t0" | bc -l)")
	cpus+=("$cpu")
	printf '  %-28s %8.2f s  (%s rows/s; add -> streaming %.2f s; worker CPU %s s; chunks: %s)\n' \
		"chunk_rows ${chunks:-default}" "${times[-1]}" "$(rate "${times[-1]}")" "${walls[-1]}" "$cpu" "$extra"
}

# CPU seconds (user + system) used so far by the CDC worker started after
# epoch second T0 (the run's own destination's); "-" if it cannot be read
worker_cpu() {
	local pid tck
	pid=$(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_egress cdc' AND backend_start >= to_timestamp($1) ORDER BY backend_start LIMIT 1")
	tck=$(getconf CLK_TCK)
	if [ -n "$pid" ] && [ -r "/proc/$pid/stat" ]; then
		# fields 14 and 15 after the command name (which may hold spaces)
		sed 's/^.*) //' "/proc/$pid/stat" | awk -v t="$tck" '{printf "%.2f", ($12 + $13) / t}'
	else
		echo -
	fi
}

run=0
if phase a; then
	echo "(a) LOG_BASED initial sync of $rows rows to files, chunked (chunk_rows ${BENCH_CHUNK_ROWS:-default}) vs one transaction (chunk_rows 0), $rounds rounds..."
	t_chunk=() w_chunk=() c_chunk=() t_one=() w_one=() c_one=()
	for r in $(seq 1 "$rounds"); do
		if [ $((r % 2)) = 1 ]; then
			run_log_based "${BENCH_CHUNK_ROWS:-}" t_chunk w_chunk c_chunk
			run_log_based 0 t_one w_one c_one
		else
			run_log_based 0 t_one w_one c_one
			run_log_based "${BENCH_CHUNK_ROWS:-}" t_chunk w_chunk c_chunk
		fi
	done
	m_chunk=$(median "${t_chunk[@]}")
	m_one=$(median "${t_one[@]}")
	mc_chunk=-
	mc_one=-
	if [[ " ${c_chunk[*]} ${c_one[*]} " != *" - "* ]]; then
		mc_chunk=$(median "${c_chunk[@]}")
		mc_one=$(median "${c_one[@]}")
	fi
fi

# ---- (b) FULL_TABLE parallel 2 vs 1 ---------------------------------------------

# one FULL_TABLE sync with "parallel": P; appends its seconds to the array named by $2
run_full_table() {
	local p=$1 n=$((++run)) name dest out t0 t1 t got err
	name=ft$n
	dest=ftd$n
	out=$BENCH_DIR/out_$n
	q "SELECT egress_add_destination('$dest', 'file://$out')" >/dev/null
	t0=$(bench_now)
	if ! err=$(bench_psql -d bench -Atc "SELECT egress_add_stream('$name', 'public.bench', 'FULL_TABLE', '$dest', options => '{\"parallel\": $p}')" 2>&1 >/dev/null); then
		q "SELECT egress_remove_destination('$dest', true)" >/dev/null
		ft_err=$err
		return 1
	fi
	wait_state "$name" synced
	t1=$(bench_now)
	t=$(q "SELECT extract(epoch FROM sync_finished_at - sync_started_at) FROM egress_streams WHERE name = '$name'")
	got=$(records_in "$out")
	[ "$got" = "$rows" ] || die "stream $name wrote $got RECORDs, expected $rows"
	q "SELECT egress_remove_destination('$dest', true)" >/dev/null
	rm -rf "$out"
	local -n times=$2 walls=$3
	times+=("$t")
	walls+=("$(echo "$t1 - $t0" | bc -l)")
	printf '  %-28s %8.2f s  (%s rows/s; add -> synced %.2f s)\n' "parallel $p" "$t" "$(rate "$t")" "${walls[-1]}"
}

b_skipped=
if phase b; then
	echo "(b) FULL_TABLE of $rows rows to files, \"parallel\": 2 vs 1, $rounds rounds..."
	t_p1=() w_p1=() t_p2=() w_p2=()
	for r in $(seq 1 "$rounds"); do
		if [ $((r % 2)) = 1 ]; then order="1 2"; else order="2 1"; fi
		for p in $order; do
			if ! run_full_table "$p" "t_p$p" "w_p$p"; then
				b_skipped="the stream option \"parallel\" is not available in this build: $ft_err"
				break 2
			fi
		done
	done
	if [ -z "$b_skipped" ]; then
		m_p1=$(median "${t_p1[@]}")
		m_p2=$(median "${t_p2[@]}")
	fi
fi

# ---- summary --------------------------------------------------------------------

echo
echo "bench/backfill: $rows rows, $rounds rounds, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
if phase a; then
	printf '(a) LOG_BASED chunked:         %8.2f s %10s rows/s   (runs: %s)\n' "$m_chunk" "$(rate "$m_chunk")" "$(secs "${t_chunk[@]}")"
	printf '(a) LOG_BASED one transaction: %8.2f s %10s rows/s   (runs: %s)\n' "$m_one" "$(rate "$m_one")" "$(secs "${t_one[@]}")"
	printf '(a) ratio chunked/one-transaction rows/s: %.2fx (target >= 0.9x)\n' "$(echo "$m_one / $m_chunk" | bc -l)"
	if [ "$mc_chunk" != - ]; then
		printf '(a) CDC worker CPU: chunked %.2f s, one transaction %.2f s (runs: %s | %s); ratio one/chunked %.2fx\n' \
			"$mc_chunk" "$mc_one" "${c_chunk[*]}" "${c_one[*]}" "$(echo "$mc_one / $mc_chunk" | bc -l)"
	fi
fi
if phase b; then
	if [ -n "$b_skipped" ]; then
		echo "(b) skipped: $b_skipped"
	else
		printf '(b) FULL_TABLE parallel 2:     %8.2f s %10s rows/s   (runs: %s)\n' "$m_p2" "$(rate "$m_p2")" "$(secs "${t_p2[@]}")"
		printf '(b) FULL_TABLE parallel 1:     %8.2f s %10s rows/s   (runs: %s)\n' "$m_p1" "$(rate "$m_p1")" "$(secs "${t_p1[@]}")"
		printf '(b) ratio parallel 2/parallel 1 rows/s: %.2fx (target >= 1.5x)\n' "$(echo "$m_p1 / $m_p2" | bc -l)"
	fi
fi
