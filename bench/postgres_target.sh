#!/usr/bin/env bash
# postgres:// destinations (issue 15) against native logical replication,
# both loading the bench table (bench/common.sh) from a source cluster into
# a second local cluster (the target), measured one after the other in the
# same run:
#
#  FULL_TABLE  native: CREATE SUBSCRIPTION (copy_data) of an identical
#              table, timed from the CREATE to the table's state 's'/'r' in
#              pg_subscription_rel (the copy committed); pg_egress: a
#              FULL_TABLE stream to a postgres:// destination, timed from
#              egress_add_stream to the state 'synced' (the last batch
#              committed in the target; the worker's start included, as the
#              subscription's).  Time to first row: from the CREATE / the
#              add until a row of the table is visible in the target
#              (native copies in one transaction: its first row is its last).
#  CDC         BENCH_ROWS new rows INSERTed in transactions of BENCH_TXN_ROWS
#              rows (INSERT ... SELECT: one change per row; ids after the
#              table's), written while the subscription is disabled and the
#              LOG_BASED stream paused (both slots inactive, so both read the
#              same WAL afterwards); then each consumer alone is enabled
#              again.  Apply rate: from its slot becoming active (the
#              consumer connected and reads) until the last inserted row is
#              visible in its target table (each applies transactions in
#              commit order: the last row visible means every row is) - the
#              ratio's measure; catch-up: from the enable to the last row,
#              the consumer's start included (the subscription's launcher
#              waits wal_retrieve_retry_interval, 5 s by default, between
#              starts of a worker; pg_egress starts its worker within
#              pg_egress.naptime).  The LOG_BASED stream is enabled in the
#              catalog, without the resync that egress_resume_stream would
#              start (as bench/kinesis.sh).
#  first row   with both consumers live and idle: BENCH_SAMPLES single-row
#              INSERT commits; for each, the time from the commit (psql
#              returned) until the row is visible in each target; medians.
#
# Every phase checks the target's row count.  rows/s = BENCH_ROWS / seconds;
# the ratio is pg_egress's rate over native's (target >= 0.8).  The target
# tables differ as the type map says (pg_egress: bigint, character varying,
# jsonb, timestamptz...; native: the source's own DDL).  Both connect over
# TCP on 127.0.0.1: pg_egress to the target as role loader with a
# scram-sha-256 password, the subscription to the source as postgres.
#
# Usage: bash bench/postgres_target.sh
#   BENCH_ROWS=...        rows of the table, and changes (default 1000000)
#   BENCH_TXN_ROWS=...    rows per CDC transaction (default 1000)
#   BENCH_SAMPLES=...     single-row commits for the CDC time to first row (default 5)
#   BENCH_DEST_OPTS=...   more options of the postgres:// destinations, JSON
#                         members without braces, e.g. '"batch_size_rows": 50000'
#   BENCH_PHASES=...      which of "full cdc" to run (default both; cdc needs full)
#   BENCH_TIMEOUT=...     seconds any single wait may take (default 1800)
#   BENCH_PORT=...        port of the source cluster (target: BENCH_PORT + 1)
#   BENCH_TARGET_CONF=... more postgresql.conf lines for the target cluster
#                         (e.g. "log_min_duration_statement = 0")
#   BENCH_LOGS=DIR        copy both server logs to DIR at the end
#   BENCH_NO_SETUP=1      do not build and install (it was done, e.g. into a
#                         private install whose bin directory is first in PATH)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh

export BENCH_ROWS=${BENCH_ROWS:-1000000}
rows=$BENCH_ROWS
txn_rows=${BENCH_TXN_ROWS:-1000}
samples=${BENCH_SAMPLES:-5}
timeout=${BENCH_TIMEOUT:-1800}
phases=" ${BENCH_PHASES:-full cdc} "
phase() { [[ $phases == *" $1 "* ]]; }
dest_opts=${BENCH_DEST_OPTS:-}
[ -z "$dest_opts" ] || dest_opts=", $dest_opts"
password='bench-l0ader'

[ -n "${BENCH_NO_SETUP:-}" ] || egress_setup >/dev/null
egress_ensure_user
bench_start_cluster
cat <<CONF | bench_reconfigure
listen_addresses = '127.0.0.1'
max_replication_slots = 10
max_wal_senders = 10
pg_egress.max_workers = 4
max_worker_processes = 16
CONF
echo "building the bench table ($rows rows)..."
bench_make_table >/dev/null
q() { bench_psql -d bench -Atc "$1"; }
q "CREATE EXTENSION pg_egress" >/dev/null

# ---- the target cluster ---------------------------------------------------------
TGT_DIR=$(egress_scratch_dir pg_egress-bench-target)
TGT_PORT=$((BENCH_PORT + 1))
cleanup() {
	if [ -n "${BENCH_LOGS:-}" ]; then
		mkdir -p "$BENCH_LOGS"
		cp "$TGT_DIR/server.log" "$BENCH_LOGS/target.log" 2>/dev/null || true
		cp "$BENCH_DIR/server.log" "$BENCH_LOGS/source.log" 2>/dev/null || true
	fi
	egress_as_user pg_ctl -D "$TGT_DIR/data" -m immediate stop >/dev/null 2>&1 || true
	rm -rf "$TGT_DIR"
	bench_stop_cluster
}
trap cleanup EXIT
egress_as_user initdb -D "$TGT_DIR/data" -U postgres --auth=trust --encoding=UTF8 --locale=C >/dev/null
cat >>"$TGT_DIR/data/postgresql.conf" <<CONF
port = $TGT_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$TGT_DIR'
shared_buffers = 512MB
max_wal_size = 8GB
checkpoint_timeout = 30min
password_encryption = 'scram-sha-256'
max_logical_replication_workers = 4
${BENCH_TARGET_CONF:-}
CONF
{
	echo "host all loader 127.0.0.1/32 scram-sha-256"
	cat "$TGT_DIR/data/pg_hba.conf"
} >"$TGT_DIR/hba" && cp "$TGT_DIR/hba" "$TGT_DIR/data/pg_hba.conf"
egress_as_user pg_ctl -D "$TGT_DIR/data" -l "$TGT_DIR/server.log" -w start >/dev/null
tpsql() { egress_as_user psql -X -q -v ON_ERROR_STOP=1 -h "$TGT_DIR" -p "$TGT_PORT" -U postgres "$@"; }
t() { tpsql -d analytics -Atc "$1"; }
tpsql -d postgres -c "CREATE ROLE loader LOGIN PASSWORD '$password'" -c "CREATE DATABASE analytics OWNER loader" >/dev/null
# the native subscription's table: the source's own DDL
egress_as_user pg_dump -h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres -d bench --schema-only -t public.bench |
	tpsql -d analytics >/dev/null

log=$BENCH_DIR/server.log
die() {
	echo "bench/postgres_target: $*" >&2
	q "SELECT name, state, rows_sent, last_error FROM egress_streams" >&2 || true
	echo "--- last lines of the source log:" >&2
	tail -n 20 "$log" >&2 || true
	echo "--- last lines of the target log:" >&2
	tail -n 20 "$TGT_DIR/server.log" >&2 || true
	exit 1
}
sub() { echo "$1 - $2" | bc -l; }
rate() { echo "$rows / $1" | bc -l | xargs printf '%.0f'; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# polls SQL (on the target with t, or the source with q) until it prints t
wait_for() {
	local fn=$1 sql=$2 what=$3 deadline=$((SECONDS + timeout))
	until [ "$($fn "$sql" 2>/dev/null || true)" = t ]; do
		[ $SECONDS -lt $deadline ] || die "$what"
		[ "$(q "SELECT count(*) FROM egress_streams WHERE state = 'error'")" = 0 ] || die "a stream failed while waiting: $what"
		sleep 0.02
	done
}
# whether a row of id ID is visible in the target table REL (t or f, f if no table)
declare -A made
# whether the target table REL exists yet (remembered once it does)
exists_t() {
	[ -n "${made[$1]:-}" ] && return 0
	[ "$(t "SELECT to_regclass('$1') IS NOT NULL")" = t ] || return 1
	made[$1]=1
}
visible() { if exists_t "$1"; then t "SELECT EXISTS (SELECT 1 FROM $1 WHERE id = $2)"; else echo f; fi; }
any_row() { if exists_t "$1"; then t "SELECT EXISTS (SELECT 1 FROM $1)"; else echo f; fi; }
# polls until the row ID is visible in the target table REL
wait_visible() {
	local rel=$1 id=$2 what=$3 deadline=$((SECONDS + timeout))
	until [ "$(visible "$rel" "$id")" = t ]; do
		[ $SECONDS -lt $deadline ] || die "$what"
		[ "$(q "SELECT count(*) FROM egress_streams WHERE state = 'error'")" = 0 ] || die "a stream failed: $what"
		sleep 0.02
	done
}
slot_inactive() {
	wait_for q "SELECT coalesce(bool_and(NOT active), true) FROM pg_replication_slots WHERE slot_name = '$1'" "slot $1 still in use"
}

url="postgres://loader@127.0.0.1:$TGT_PORT/analytics"
q "SELECT egress_add_destination('wh', '$url', '{\"password\": \"$password\", \"default_target_schema\": \"ft\"$dest_opts}')" >/dev/null
q "SELECT egress_add_destination('whc', '$url', '{\"password\": \"$password\", \"default_target_schema\": \"cdc\"$dest_opts}')" >/dev/null
q "CREATE PUBLICATION pub_bench FOR TABLE public.bench" >/dev/null

declare -A secs ttfr
# ---- FULL_TABLE ------------------------------------------------------------------
if phase full; then
	echo "FULL_TABLE of $rows rows: native initial copy..."
	t0=$(bench_now)
	tpsql -d analytics -c "CREATE SUBSCRIPTION sub_bench CONNECTION 'host=127.0.0.1 port=$BENCH_PORT dbname=bench user=postgres' PUBLICATION pub_bench WITH (copy_data = true)" >/dev/null
	first=
	deadline=$((SECONDS + timeout))
	until [ "$(t "SELECT bool_and(srsubstate IN ('s', 'r')) FROM pg_subscription_rel")" = t ]; do
		[ -n "$first" ] || [ "$(any_row public.bench)" != t ] || first=$(bench_now)
		[ $SECONDS -lt $deadline ] || die "the native copy did not finish"
		sleep 0.02
	done
	t1=$(bench_now)
	[ -n "$first" ] || first=$t1
	secs[native_full]=$(sub "$t1" "$t0")
	ttfr[native_full]=$(sub "$first" "$t0")
	[ "$(t "SELECT count(*) FROM public.bench")" = "$rows" ] || die "native copy: not $rows rows in the target"

	echo "FULL_TABLE of $rows rows: pg_egress..."
	t0=$(bench_now)
	q "SELECT egress_add_stream('full', 'public.bench', 'FULL_TABLE', 'wh')" >/dev/null
	first=
	deadline=$((SECONDS + timeout))
	until [ "$(q "SELECT state FROM egress_streams WHERE name = 'full'")" = synced ]; do
		[ -n "$first" ] || [ "$(any_row ft.bench)" != t ] || first=$(bench_now)
		[ "$(q "SELECT state FROM egress_streams WHERE name = 'full'")" != error ] || die "the FULL_TABLE stream failed"
		[ $SECONDS -lt $deadline ] || die "the FULL_TABLE stream did not finish"
		sleep 0.02
	done
	t1=$(bench_now)
	[ -n "$first" ] || first=$t1
	secs[egress_full]=$(sub "$t1" "$t0")
	ttfr[egress_full]=$(sub "$first" "$t0")
	sync_only=$(q "SELECT extract(epoch FROM sync_finished_at - sync_started_at) FROM egress_streams WHERE name = 'full'")
	[ "$(t "SELECT count(*) FROM ft.bench")" = "$rows" ] || die "pg_egress FULL_TABLE: not $rows rows in the target"
fi

# ---- CDC ---------------------------------------------------------------------------
if phase cdc; then
	phase full || die "the cdc phase needs the full phase (the subscription)"
	echo "CDC: the LOG_BASED stream's initial sync..."
	t0=$(bench_now)
	q "SELECT egress_add_stream('cdc', 'public.bench', 'LOG_BASED', 'whc')" >/dev/null
	wait_for q "SELECT state = 'streaming' FROM egress_streams WHERE name = 'cdc'" "the LOG_BASED stream did not stream"
	init_secs=$(sub "$(bench_now)" "$t0")
	[ "$(t "SELECT count(*) FROM cdc.bench")" = "$rows" ] || die "LOG_BASED initial sync: not $rows rows in the target"
	egress_slot=$(q "SELECT slot_name FROM egress.destination WHERE name = 'whc'")
	# both consumers stopped, their slots inactive
	q "SELECT egress_pause_stream('cdc')" >/dev/null
	slot_inactive "$egress_slot"
	tpsql -d analytics -c "ALTER SUBSCRIPTION sub_bench DISABLE" >/dev/null
	slot_inactive sub_bench

	echo "CDC: loading $rows rows in transactions of $txn_rows..."
	bench_psql -d bench <<SQL >/dev/null
CREATE PROCEDURE bench_load(n bigint, per int) LANGUAGE plpgsql AS \$\$
DECLARE
	base bigint := (SELECT max(id) FROM public.bench);
BEGIN
	FOR s IN 0 .. (n + per - 1) / per - 1 LOOP
		INSERT INTO public.bench SELECT $BENCH_ROW
		  FROM generate_series(base + s * per + 1, base + least((s + 1) * per, n)) g;
		COMMIT;
	END LOOP;
END \$\$;
CALL bench_load($rows, $txn_rows);
SQL
	last_id=$(q "SELECT max(id) FROM public.bench")
	[ "$last_id" = $((2 * rows)) ] || die "the load did not write $rows rows"

	echo "CDC: native apply..."
	t0=$(bench_now)
	tpsql -d analytics -c "ALTER SUBSCRIPTION sub_bench ENABLE" >/dev/null
	wait_for q "SELECT coalesce(bool_or(active), false) FROM pg_replication_slots WHERE slot_name = 'sub_bench'" "native apply did not start"
	tf=$(bench_now)
	wait_visible public.bench "$last_id" "native apply did not catch up"
	t1=$(bench_now)
	secs[native_catchup]=$(sub "$t1" "$t0")
	secs[native_cdc]=$(sub "$t1" "$tf")
	[ "$(t "SELECT count(*) FROM public.bench")" = $((2 * rows)) ] || die "native apply: not $((2 * rows)) rows in the target"

	echo "CDC: pg_egress..."
	t0=$(bench_now)
	q "UPDATE egress.stream SET enabled = true WHERE name = 'cdc'" >/dev/null
	wait_for q "SELECT coalesce(bool_or(active), false) FROM pg_replication_slots WHERE slot_name = '$egress_slot'" "pg_egress did not start"
	tf=$(bench_now)
	wait_visible cdc.bench "$last_id" "pg_egress did not catch up"
	t1=$(bench_now)
	secs[egress_catchup]=$(sub "$t1" "$t0")
	secs[egress_cdc]=$(sub "$t1" "$tf")
	[ "$(q "SELECT state FROM egress_streams WHERE name = 'cdc'")" = streaming ] || die "the LOG_BASED stream was synced again"
	[ "$(t "SELECT count(*) FROM cdc.bench")" = $((2 * rows)) ] || die "pg_egress: not $((2 * rows)) rows in the target"

	echo "CDC: time to first row, $samples single-row commits..."
	n_ms=() e_ms=()
	for i in $(seq 1 "$samples"); do
		id=$((last_id + i))
		q "INSERT INTO public.bench SELECT $BENCH_ROW FROM (SELECT $id::bigint AS g) s" >/dev/null
		t0=$(bench_now)
		tn='' te=''
		deadline=$((SECONDS + 120))
		while [ -z "$tn" ] || [ -z "$te" ]; do
			[ -n "$tn" ] || [ "$(visible public.bench "$id")" != t ] || tn=$(bench_now)
			[ -n "$te" ] || [ "$(visible cdc.bench "$id")" != t ] || te=$(bench_now)
			sleep 0.01
			[ $SECONDS -lt $deadline ] || die "row $id did not arrive (native: ${tn:-no}, pg_egress: ${te:-no})"
		done
		n_ms+=("$(sub "$tn" "$t0")")
		e_ms+=("$(sub "$te" "$t0")")
	done
	ttfr[native_cdc]=$(median "${n_ms[@]}")
	ttfr[egress_cdc]=$(median "${e_ms[@]}")
fi

# ---- report ----------------------------------------------------------------------
ratio() { echo "${secs[$2]} / ${secs[$1]}" | bc -l | xargs printf '%.2f'; }
line() { printf '  %-34s %8.2f s %9s rows/s   first row after %6.3f s\n' "$1" "${secs[$2]}" "$(rate "${secs[$2]}")" "${ttfr[$2]}"; }
echo
echo "postgres:// destination vs native logical replication, $rows rows, one run:"
if phase full; then
	echo "FULL_TABLE ($rows rows):"
	line "native subscription, initial copy" native_full
	line "pg_egress FULL_TABLE stream" egress_full
	printf '  (pg_egress sync_started_at -> sync_finished_at %.2f s)\n' "$sync_only"
	echo "  pg_egress / native: $(ratio egress_full native_full)x (target >= 0.8)"
fi
if phase cdc; then
	echo "CDC ($rows INSERTed rows, transactions of $txn_rows, applied after the load):"
	echo "  apply: from the consumer's slot active to the last row visible in the target; catch-up: from the enable"
	printf '  %-34s apply %7.2f s %9s rows/s   catch-up %7.2f s %9s rows/s\n' "native subscription" \
		"${secs[native_cdc]}" "$(rate "${secs[native_cdc]}")" "${secs[native_catchup]}" "$(rate "${secs[native_catchup]}")"
	printf '  %-34s apply %7.2f s %9s rows/s   catch-up %7.2f s %9s rows/s\n' "pg_egress LOG_BASED stream" \
		"${secs[egress_cdc]}" "$(rate "${secs[egress_cdc]}")" "${secs[egress_catchup]}" "$(rate "${secs[egress_catchup]}")"
	echo "  pg_egress / native: apply rate $(ratio egress_cdc native_cdc)x (target >= 0.8), catch-up $(ratio egress_catchup native_catchup)x"
	printf '  time to first row (commit -> visible in the target, median of %d): native %.3f s, pg_egress %.3f s\n' \
		"$samples" "${ttfr[native_cdc]}" "${ttfr[egress_cdc]}"
	printf '  (the LOG_BASED stream'"'"'s initial sync of %d rows, add -> streaming: %.2f s)\n' "$rows" "$init_secs"
fi
