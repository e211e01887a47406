#!/usr/bin/env bash
# INCREMENTAL to files vs plain COPY of the same rows, measured in one run:
# the first run (every row), then a run after 1% of the rows changed (their
# replication key moved forward), each against
#   COPY (SELECT ... WHERE key > x ORDER BY key) TO 'file'
# as text and as row_to_json.
# Usage: bash bench/incremental.sh   (BENCH_ROWS=... for another size)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

bench_start_with_table
# the replication key: a timestamp, indexed with the primary key
bench_psql -d bench -c "ALTER TABLE public.bench ADD COLUMN updated_at timestamptz" \
	-c "UPDATE public.bench SET updated_at = created_at" \
	-c "ALTER TABLE public.bench ALTER updated_at SET NOT NULL" \
	-c "CREATE INDEX ON public.bench (updated_at, id)" \
	-c "VACUUM ANALYZE public.bench" >/dev/null
out="$BENCH_DIR/out"

copy_text() { # $1: lower bound of the key
	bench_psql -d bench -c "COPY (SELECT * FROM public.bench WHERE updated_at > '$1' ORDER BY updated_at, id) TO '$BENCH_DIR/copy.txt'"
}
copy_json() {
	bench_psql -d bench -c "COPY (SELECT row_to_json(t) FROM public.bench t WHERE updated_at > '$1' ORDER BY updated_at, id) TO '$BENCH_DIR/copy.json'"
}

# waits until the stream has sent $1 rows in all; prints the last run's seconds
wait_run() {
	local want=$1 row deadline=$((SECONDS + 900))
	while :; do
		row=$(bench_psql -d bench -Atc "SELECT state, rows_sent FROM egress_streams WHERE name = 'bench'")
		[ "$row" = "synced|$want" ] && break
		if [ "${row%%|*}" = error ] || [ $SECONDS -ge $deadline ]; then
			echo "run did not finish: $row" >&2
			bench_psql -d bench -c "SELECT * FROM egress_streams" >&2
			exit 1
		fi
		sleep 0.05
	done
	bench_psql -d bench -Atc "SELECT extract(epoch FROM sync_finished_at - sync_started_at) FROM egress_streams WHERE name = 'bench'"
}

# ---- first run: every row
t1_text=$(bench_time copy_text '-infinity')
t1_json=$(bench_time copy_json '-infinity')
bench_psql -d bench -c "CREATE EXTENSION pg_egress" \
	-c "SELECT egress_add_destination('bench_files', 'file://$out')" >/dev/null
bench_psql -d bench -c "SELECT egress_add_stream('bench', 'public.bench', 'INCREMENTAL', 'bench_files', 'updated_at', '{\"interval\": \"1 day\"}')" >/dev/null
t1_egress=$(wait_run "$rows")

# ---- 1% of the rows change
changed=$((rows / 100))
before=$(bench_psql -d bench -Atc "SELECT max(updated_at) FROM public.bench")
bench_psql -d bench -c "UPDATE public.bench SET qty = qty + 1, updated_at = '$before'::timestamptz + id * interval '1 microsecond' WHERE id % 100 = 0" \
	-c "VACUUM ANALYZE public.bench" >/dev/null
t2_text=$(bench_time copy_text "$before")
t2_json=$(bench_time copy_json "$before")
bench_psql -d bench -c "SELECT egress_sync_now('bench')" >/dev/null
t2_egress=$(wait_run $((rows + changed)))

rate() { echo "$1 / $2" | bc -l | xargs printf '%.0f'; }
report() { # label rows t_text t_json t_egress
	printf '%s (%d rows)\n' "$1" "$2"
	printf '  %-52s %8.3f s %10s rows/s\n' "COPY (SELECT * ... WHERE key > x ORDER BY key) TO file" "$3" "$(rate "$2" "$3")"
	printf '  %-52s %8.3f s %10s rows/s\n' "COPY (SELECT row_to_json(t) ... ORDER BY key) TO file" "$4" "$(rate "$2" "$4")"
	printf '  %-52s %8.3f s %10s rows/s\n' "pg_egress INCREMENTAL run to files" "$5" "$(rate "$2" "$5")"
	# speed ratios, as the other benchmarks print them: above 1 is faster
	printf '  speed pg_egress / text COPY: %.2fx   pg_egress / row_to_json COPY: %.2fx\n' \
		"$(echo "$3 / $5" | bc -l)" "$(echo "$4 / $5" | bc -l)"
}
report "first run" "$rows" "$t1_text" "$t1_json" "$t1_egress"
report "after 1% changed" "$changed" "$t2_text" "$t2_json" "$t2_egress"
printf 'output: %s in %s files\n' "$(du -sh "$out" | cut -f1)" "$(ls "$out" | wc -l)"
