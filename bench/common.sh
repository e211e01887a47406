# Shared by the benchmarks: a throwaway cluster with pg_egress loaded.
# shellcheck shell=bash
. scripts/common.sh

bench_start_cluster() {
	BENCH_DIR=$(egress_scratch_dir pg_egress-bench)
	BENCH_PORT=${BENCH_PORT:-55441}
	egress_start_cluster "$BENCH_DIR" "$BENCH_PORT" <<CONF
shared_buffers = 512MB
max_wal_size = 8GB
checkpoint_timeout = 30min
pg_egress.database = 'bench'
pg_egress.naptime = '1s'
CONF
	trap bench_stop_cluster EXIT
	bench_psql -d postgres -c "CREATE DATABASE bench" >/dev/null
}

bench_stop_cluster() {
	egress_as_user pg_ctl -D "$BENCH_DIR/data" -m immediate stop >/dev/null 2>&1 || true
	rm -rf "$BENCH_DIR"
}

bench_psql() {
	egress_as_user psql -X -q -v ON_ERROR_STOP=1 -h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres "$@"
}

# seconds, as a decimal, taken by "$@"
bench_time() {
	local t0 t1
	t0=$(date +%s.%N)
	"$@" >/dev/null
	t1=$(date +%s.%N)
	echo "$t1 - $t0" | bc -l
}

# One row of the bench shape of the issues, made from the integer g.
BENCH_ROW="g, g % 1000, md5(g::text) || lpad(g::text, 8, '0'), (g % 100000) / 100.0,
	   timestamptz '2026-01-01 00:00+00' + g * interval '1 second', g % 2 = 0,
	   jsonb_build_object('a', g, 'b', 'x' || (g % 7), 'c', g % 3 = 0), gen_random_uuid()"

# The bench table, empty.
bench_create_table() {
	bench_psql -d bench <<SQL
CREATE TABLE public.bench (
	id bigint PRIMARY KEY,
	qty int NOT NULL,
	label text NOT NULL,
	amount numeric(12,2),
	created_at timestamptz NOT NULL,
	active boolean NOT NULL,
	attrs jsonb,
	ref uuid NOT NULL
);
SQL
}

# The bench table of the issues: 2,000,000 rows unless BENCH_ROWS says otherwise.
bench_make_table() {
	local rows=${BENCH_ROWS:-2000000}
	bench_create_table
	bench_psql -d bench <<SQL
INSERT INTO public.bench SELECT $BENCH_ROW FROM generate_series(1, $rows) g;
VACUUM ANALYZE public.bench;
SELECT count(*) FROM public.bench;
SQL
}

# Set-up shared by the table benchmarks: build, a cluster, the bench table
# ($rows rows).
bench_start_with_table() {
	egress_setup >/dev/null
	egress_ensure_user
	bench_start_cluster
	rows=${BENCH_ROWS:-2000000}
	echo "building the bench table ($rows rows)..."
	bench_make_table >/dev/null
}

# Append postgresql.conf lines (standard input) to the bench cluster and restart it.
bench_reconfigure() {
	cat >>"$BENCH_DIR/data/postgresql.conf"
	egress_as_user pg_ctl -D "$BENCH_DIR/data" -l "$BENCH_DIR/server.log" -w restart >/dev/null
}

# now, in seconds since the epoch, as a decimal
bench_now() {
	date +%s.%N
}
