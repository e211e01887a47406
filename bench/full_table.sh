#!/usr/bin/env bash
# FULL_TABLE to files vs COPY row_to_json and COPY csv, measured in one run.
# Usage: bash bench/full_table.sh   (BENCH_ROWS=... for another size)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

bench_start_with_table
out="$BENCH_DIR/out"

t_json=$(bench_time bench_psql -d bench -c "COPY (SELECT row_to_json(t) FROM public.bench t) TO '$BENCH_DIR/rowjson.json'")
t_csv=$(bench_time bench_psql -d bench -c "COPY public.bench TO '$BENCH_DIR/bench.csv' (FORMAT csv)")

bench_psql -d bench -c "CREATE EXTENSION pg_egress" \
	-c "SELECT egress_add_destination('bench_files', 'file://$out')" >/dev/null
bench_psql -d bench -c "SELECT egress_add_stream('bench', 'public.bench', 'FULL_TABLE', 'bench_files')" >/dev/null

# sample the sync worker's memory while it runs
max_rss=0
max_anon=0
deadline=$((SECONDS + 600))
while :; do
	row=$(bench_psql -d bench -Atc "SELECT state, coalesce(worker_pid, 0) FROM egress_streams WHERE name = 'bench'")
	state=${row%%|*}
	pid=${row##*|}
	if [ "$pid" != 0 ] && [ -r "/proc/$pid/status" ]; then
		rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
		anon=$(awk '/^RssAnon/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
		[ "${rss:-0}" -gt "$max_rss" ] && max_rss=$rss
		[ "${anon:-0}" -gt "$max_anon" ] && max_anon=$anon
	fi
	[ "$state" = synced ] && break
	if [ "$state" = error ] || [ $SECONDS -ge $deadline ]; then
		echo "sync did not finish: $row" >&2
		bench_psql -d bench -c "SELECT * FROM egress_streams" >&2
		exit 1
	fi
	sleep 0.05
done
t_egress=$(bench_psql -d bench -Atc "SELECT extract(epoch FROM sync_finished_at - sync_started_at) FROM egress_streams WHERE name = 'bench'")
sent=$(bench_psql -d bench -Atc "SELECT rows_sent FROM egress_streams WHERE name = 'bench'")
[ "$sent" = "$rows" ] || { echo "sent $sent rows, expected $rows" >&2; exit 1; }

rate() { echo "$rows / $1" | bc -l | xargs printf '%.0f'; }
printf '%-38s %8.2f s %10s rows/s\n' "COPY (SELECT row_to_json(t)) TO file" "$t_json" "$(rate "$t_json")"
printf '%-38s %8.2f s %10s rows/s\n' "COPY t TO file (FORMAT csv)" "$t_csv" "$(rate "$t_csv")"
printf '%-38s %8.2f s %10s rows/s\n' "pg_egress FULL_TABLE to files" "$t_egress" "$(rate "$t_egress")"
printf 'ratio vs row_to_json COPY: %.2fx   ratio vs csv COPY: %.2fx\n' \
	"$(echo "$t_json / $t_egress" | bc -l)" "$(echo "$t_csv / $t_egress" | bc -l)"
printf 'sync worker peak RSS sampled: %d MB (of which private/anon: %d MB)\n' $((max_rss / 1024)) $((max_anon / 1024))
printf 'output: %s in %s files\n' "$(du -sh "$out" | cut -f1)" "$(ls "$out" | wc -l)"
