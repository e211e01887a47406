#!/usr/bin/env bash
# make demo: install what is missing, build, start a throwaway cluster with
# pg_egress loaded, stream a sample table to a local directory, show the
# output and egress_streams, then stop the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh

egress_setup
egress_ensure_user

demo=$(egress_scratch_dir pg_egress-demo)
port=${DEMO_PORT:-55431}
data="$demo/data"
out="$demo/out"

stop_cluster() {
	egress_as_user pg_ctl -D "$data" -m fast stop >/dev/null 2>&1 || true
}
trap stop_cluster EXIT

egress_start_cluster "$demo" "$port" <<CONF
pg_egress.database = 'app'
pg_egress.naptime = '2s'
pg_egress.flush_interval = '200ms'
CONF

psql_demo() {
	egress_as_user psql -X -q -v ON_ERROR_STOP=1 -h "$demo" -p "$port" -U postgres "$@"
}

psql_demo -d postgres -c "CREATE DATABASE app"
psql_demo -d app <<SQL
CREATE EXTENSION pg_egress;
CREATE TABLE public.orders (
	id bigint PRIMARY KEY,
	customer text NOT NULL,
	amount numeric(12,2),
	placed_at timestamptz NOT NULL DEFAULT now(),
	tags text[],
	details jsonb
);
INSERT INTO public.orders
SELECT g, 'customer ' || g, g * 1.25, timestamptz '2026-11-01 12:00+00' + g * interval '1 minute',
	   ARRAY['web', 'promo'], jsonb_build_object('items', g % 5 + 1)
FROM generate_series(1, 1000) g;
SELECT egress_add_destination('local', 'file://$out');
SELECT egress_add_stream('orders', 'public.orders', method => 'FULL_TABLE', destination => 'local',
						 options => '{"batch_max_rows": 400}');
SQL

echo "Waiting for the stream to sync..."
deadline=$((SECONDS + 60))
until [ "$(psql_demo -d app -Atc "SELECT state FROM egress_streams WHERE name = 'orders'")" = synced ]; do
	if [ $SECONDS -ge $deadline ]; then
		echo "the stream did not sync within 60 s; server log:" >&2
		tail -n 30 "$demo/server.log" >&2
		exit 1
	fi
	sleep 0.2
done

echo
echo "Files written to $out:"
ls -l "$out"
first=$(ls "$out"/*.jsonl | head -n 1)
last=$(ls "$out"/*.jsonl | tail -n 1)
echo
echo "First lines of $(basename "$first"):"
head -n 4 "$first" | cut -c1-400
echo "..."
echo "Last lines of $(basename "$last"):"
tail -n 2 "$last" | cut -c1-400
echo

echo
echo "Now change data capture: a LOG_BASED stream of the same table, then some changes."
psql_demo -d app -c "SELECT egress_add_stream('orders_cdc', 'public.orders', method => 'LOG_BASED', destination => 'local')" >/dev/null
deadline=$((SECONDS + 60))
until [ "$(psql_demo -d app -Atc "SELECT state FROM egress_streams WHERE name = 'orders_cdc'")" = streaming ]; do
	if [ $SECONDS -ge $deadline ]; then
		echo "the LOG_BASED stream did not start within 60 s; server log:" >&2
		tail -n 30 "$demo/server.log" >&2
		exit 1
	fi
	sleep 0.2
done
psql_demo -d app <<SQL
INSERT INTO public.orders VALUES (1001, 'a new customer', 99.90, now(), ARRAY['app'], '{"items": 1}');
UPDATE public.orders SET amount = amount + 1 WHERE id = 1;
DELETE FROM public.orders WHERE id = 2;
SQL
target=$(psql_demo -d app -Atc "SELECT pg_current_wal_lsn()")
deadline=$((SECONDS + 60))
until [ "$(psql_demo -d app -Atc "SELECT confirmed_lsn >= '$target' FROM egress_streams WHERE name = 'orders_cdc'")" = t ]; do
	if [ $SECONDS -ge $deadline ]; then
		echo "the changes did not arrive within 60 s; server log:" >&2
		tail -n 30 "$demo/server.log" >&2
		exit 1
	fi
	sleep 0.2
done
changes=$(ls "$out"/local-*.jsonl | tail -n 1)
echo "Change batch $(basename "$changes"):"
cut -c1-300 "$changes"
echo
echo
echo "An export with COPY's own bytes (what aws_s3.query_export_to_s3 does, here to a file):"
psql_demo -d app -c "SELECT * FROM egress_export('SELECT id, customer, amount FROM public.orders WHERE id <= 3 ORDER BY id', 'file://$demo/orders.csv', 'format csv, header true')"
cat "$demo/orders.csv"
echo
echo "An INCREMENTAL stream by id: the rows after its bookmark, now and every interval."
psql_demo -d app -c "SELECT egress_add_stream('orders_inc', 'public.orders', method => 'INCREMENTAL', destination => 'local', replication_key => 'id')" >/dev/null
deadline=$((SECONDS + 60))
until [ "$(psql_demo -d app -Atc "SELECT state FROM egress_streams WHERE name = 'orders_inc' AND rows_sent > 0")" = synced ]; do
	if [ $SECONDS -ge $deadline ]; then
		echo "the INCREMENTAL run did not finish within 60 s; server log:" >&2
		tail -n 30 "$demo/server.log" >&2
		exit 1
	fi
	sleep 0.2
done
psql_demo -d app -Atc "SELECT 'bookmark: ' || bookmark::text FROM egress_streams WHERE name = 'orders_inc'"
echo
psql_demo -d app -c "SELECT name, method, state, rows_sent, batches_sent, confirmed_lsn, lag_bytes, last_error FROM egress_streams ORDER BY name"
psql_demo -d app -c "SELECT pid, backend_type FROM pg_stat_activity WHERE backend_type LIKE 'pg_egress%'"
echo "Demo done; the cluster is stopped and $demo can be removed."
