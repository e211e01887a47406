#!/usr/bin/env bash
# Runs the worker paths (launcher, database worker, sync worker, file, HTTP and PostgreSQL sinks,
# type map over every type) of the installed build under valgrind memcheck
# and lists the reports that involve pg_egress code.
# Usage (as the unprivileged user, after make install): bash scripts/valgrind-smoke.sh
set -euo pipefail
B=$(pg_config --bindir)
dir=$(mktemp -d /tmp/pg_egress-vg.XXXXXX)
port=${VG_PORT:-55461}
mkdir -p "$dir/vglogs"
"$B/initdb" -D "$dir/data" -U postgres --auth=trust >/dev/null
cat >>"$dir/data/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$dir'
shared_preload_libraries = 'pg_egress'
wal_level = logical
pg_egress.naptime = '1s'
pg_egress.flush_interval = '200ms'
pg_egress.max_workers = 10
max_worker_processes = 20
CONF
if "$B/postgres" --describe-config 2>/dev/null | grep '^output_plugin_libraries' >/dev/null; then
	echo "output_plugin_libraries = 'pgoutput, test_decoding, wal2json'" >>"$dir/data/postgresql.conf"
fi
supp=$(cd "$(dirname "$0")/.." && pwd)/test/valgrind.supp
valgrind --quiet --trace-children=yes --leak-check=no --num-callers=20 --suppressions="$supp" \
	--log-file="$dir/vglogs/vg.%p.log" "$B/postgres" -D "$dir/data" >"$dir/server.log" 2>&1 &
P=("$B/psql" -X -q -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1)
for _ in $(seq 1 240); do "$B/pg_isready" -h "$dir" -p "$port" -U postgres -q && break; sleep 0.5; done
"${P[@]}" <<SQL
CREATE EXTENSION pg_egress;
CREATE EXTENSION hstore;
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE t (id int PRIMARY KEY, a int2, b int8, n numeric(12,2), nu numeric, r real, d float8,
	bo bool, bi bit(1), tx text, vc varchar(10), ch char(5), u uuid, e mood, dt date, ts timestamp,
	tz timestamptz, tm time, ttz timetz, j json, jb jsonb, h hstore, ia int[], ta text[],
	iv interval, by bytea, p point);
INSERT INTO t SELECT g, g, g * 1000, g / 3.0, 'NaN', 'Infinity', g / 7.0, g % 2 = 0, B'1',
	'x"\\' || g, 'v', 'c', gen_random_uuid(), 'sad', '2024-01-01'::date + g, 'infinity', now(),
	'12:00', '12:00+02', '{"a": [1, 2]}', '{"b": null}', 'a=>1,b=>NULL', ARRAY[1, NULL, 3],
	ARRAY[['a', 'b'], ['c', 'd']], '1 day 2 hours', '\\x00ff', '(1,2)'
FROM generate_series(1, 2000) g;
SELECT egress_add_destination('local', 'file://$dir/out');
SELECT egress_add_stream('t', 't', 'FULL_TABLE', 'local', options => '{"batch_max_rows": 300}');
SQL
wait_synced() {
	for _ in $(seq 1 600); do
		[ "$("${P[@]}" -Atc "SELECT state || coalesce(worker_pid::text, '') FROM egress_streams")" = synced ] && return 0
		sleep 0.5
	done
	return 1
}
wait_synced
"${P[@]}" -c "SELECT egress_resync_stream('t')" >/dev/null
wait_synced
# an INCREMENTAL stream: two runs, the second from the first one's bookmark
"${P[@]}" -c "SELECT egress_add_stream('i', 't', 'INCREMENTAL', 'local', replication_key => 'b', options => '{\"batch_max_rows\": 300, \"interval\": 3600}')" >/dev/null
wait_inc() {
	for _ in $(seq 1 600); do
		[ "$("${P[@]}" -Atc "SELECT state || ':' || rows_sent FROM egress_streams WHERE name = 'i'")" = "synced:$1" ] && return 0
		sleep 0.5
	done
	return 1
}
wait_inc 2000
"${P[@]}" -c "UPDATE t SET b = b + 10000000 WHERE id <= 100" -c "SELECT egress_sync_now('i')" >/dev/null
wait_inc 2100
# the CDC paths: initial sync, changes, TOAST re-read, DDL, truncate
"${P[@]}" <<SQL
CREATE TABLE c (id int PRIMARY KEY, v text, big text);
ALTER TABLE c ALTER big SET STORAGE EXTERNAL;
INSERT INTO c SELECT g, 'v' || g, repeat(md5(g::text), 100) FROM generate_series(1, 200) g;
SELECT egress_add_stream('c', 'c', 'LOG_BASED', 'local', options => '{"debug_lsn": true}');
-- the other decoder, and a column list with a row filter (pgoutput)
SELECT egress_add_destination('localw', 'file://$dir/outw', '{"decoder": "wal2json"}');
SELECT egress_add_stream('cw', 'c', 'LOG_BASED', 'localw');
SELECT egress_add_destination('localf', 'file://$dir/outf');
SELECT egress_add_stream('cf', 'c', 'LOG_BASED', 'localf', options => '{"columns": ["id", "big"], "filter": "id % 2 = 0"}');
SQL
for _ in $(seq 1 600); do
	[ "$("${P[@]}" -Atc "SELECT string_agg(state, ',' ORDER BY name) FROM egress_streams WHERE name IN ('c', 'cw', 'cf')")" = streaming,streaming,streaming ] && break
	sleep 0.5
done
"${P[@]}" <<SQL
UPDATE c SET v = 'u' WHERE id <= 50;
DELETE FROM c WHERE id > 150;
UPDATE c SET id = id + 1000 WHERE id = 60;
ALTER TABLE c ADD COLUMN extra int;
INSERT INTO c SELECT g, 'n', 'b', g FROM generate_series(300, 400) g;
TRUNCATE c;
INSERT INTO c VALUES (1, 'again', 'x', 1);
SQL
target=$("${P[@]}" -Atc "SELECT pg_current_wal_lsn()")
for _ in $(seq 1 600); do
	[ "$("${P[@]}" -Atc "SELECT bool_and(confirmed_lsn >= '$target') FROM egress_streams WHERE name IN ('c', 'cw', 'cf')")" = t ] && break
	sleep 0.5
done
# a chunked LOG_BASED backfill (watermarks, window, chunk buffer spilled to
# a file by a small logical_decoding_work_mem) with changes while it runs,
# a resync of it, a parallel FULL_TABLE sync and a parallel export
"${P[@]}" <<SQL
SET logical_decoding_work_mem = '64kB';
ALTER SYSTEM SET logical_decoding_work_mem = '64kB';
SELECT pg_reload_conf();
CREATE TABLE bf (id int PRIMARY KEY, v text, big text);
INSERT INTO bf SELECT g, 'v' || g, repeat(md5(g::text), 20) FROM generate_series(1, 3000) g;
SELECT egress_add_stream('bf', 'bf', 'LOG_BASED', 'local', options => '{"chunk_rows": 200}');
SELECT egress_add_stream('tpar', 't', 'FULL_TABLE', 'local', options => '{"parallel": 2}');
SQL
for i in $(seq 1 20); do
	"${P[@]}" -c "UPDATE bf SET v = 'w$i' WHERE id % 97 = $i; DELETE FROM bf WHERE id = $((i * 131)); INSERT INTO bf VALUES ($((5000 + i)), 'n', 'b')" >/dev/null
done
for _ in $(seq 1 600); do
	[ "$("${P[@]}" -Atc "SELECT string_agg(state, ',' ORDER BY name) FROM egress_streams WHERE name IN ('bf', 'tpar')")" = streaming,synced ] && break
	sleep 0.5
done
"${P[@]}" -c "SELECT egress_resync_stream('bf')" >/dev/null
for _ in $(seq 1 600); do
	[ "$("${P[@]}" -Atc "SELECT state = 'streaming' AND backfill_chunks > 1 FROM egress_streams WHERE name = 'bf'")" = t ] && break
	sleep 0.5
done
"${P[@]}" -c "SELECT * FROM egress_export('SELECT * FROM t', 'file://$dir/export.txt', '', parallel => 2)" >/dev/null
"${P[@]}" -c "ALTER SYSTEM RESET logical_decoding_work_mem" -c "SELECT pg_reload_conf()" >/dev/null
# the HTTP sink (test receiver from test/http): gzip, headers, retries after
# 503, a rejection (400), a FULL_TABLE and a LOG_BASED stream
root=$(cd "$(dirname "$0")/.." && pwd)
if command -v node >/dev/null 2>&1; then
	node "$root/test/http/receiver.js" --dir "$dir/rcv" >"$dir/rcv.log" 2>&1 &
	rcv_pid=$!
	for _ in $(seq 1 100); do [ -s "$dir/rcv/port" ] && break; sleep 0.1; done
	rport=$(cat "$dir/rcv/port")
	control() {
		node -e 'fetch(process.argv[1], {method: "POST", body: process.argv[2]}).then((r) => r.text())' \
			"http://127.0.0.1:$rport/_control" "$1"
	}
	control '{"action": "fail", "count": 2, "status": 503}'
	"${P[@]}" <<SQL
SELECT egress_add_destination('web', 'http://u:p4ss@127.0.0.1:$rport/x',
	'{"gzip": true, "retry_initial_interval": "100ms", "timeout": "20s", "headers": {"Authorization": "Bearer x"}, "flush_interval": "100ms"}');
SELECT egress_add_stream('th', 't', 'FULL_TABLE', 'web', options => '{"batch_max_rows": 1500}');
SELECT egress_add_stream('ch', 'c', 'LOG_BASED', 'web');
-- no gzip, one large batch: sent while it is written (chunked)
SELECT egress_add_destination('webp', 'http://127.0.0.1:$rport/p', '{"batch_max_rows": 2000}');
SELECT egress_add_stream('tp', 't', 'FULL_TABLE', 'webp');
SQL
	for _ in $(seq 1 600); do
		[ "$("${P[@]}" -Atc "SELECT string_agg(state, ',' ORDER BY name) FROM egress_streams WHERE name IN ('th', 'ch', 'tp')")" = streaming,synced,synced ] && break
		sleep 0.5
	done
	control '{"action": "fail", "count": 1, "status": 400, "body": "echo"}'
	"${P[@]}" -c "INSERT INTO c SELECT g, 'h', 'h' FROM generate_series(2000, 2100) g"
	for _ in $(seq 1 600); do
		[ "$("${P[@]}" -Atc "SELECT state FROM egress_streams WHERE name = 'ch'")" = error ] && break
		sleep 0.5
	done
	"${P[@]}" -c "SELECT egress_resume_stream('ch')" >/dev/null
	for _ in $(seq 1 600); do
		[ "$("${P[@]}" -Atc "SELECT state FROM egress_streams WHERE name = 'ch'")" = streaming ] && break
		sleep 0.5
	done
	echo "HTTP requests received: $(wc -l <"$dir/rcv/requests.jsonl")"
fi
# the postgres sink (another database of this cluster, through the socket
# directory: a superuser's destination): FULL_TABLE over every type, two
# connections, metadata columns; a LOG_BASED stream with updates, deletes
# and a TRUNCATE
"${P[@]}" -c "CREATE DATABASE analytics" >/dev/null
sockhost=$(printf '%s' "$dir" | sed 's|/|%2F|g')
"${P[@]}" <<SQL
SELECT egress_add_destination('wh', 'postgres://postgres@$sockhost:$port/analytics',
	'{"add_metadata_columns": true, "parallelism": 2, "batch_size_rows": 700}');
SELECT egress_add_stream('tpg', 't', 'FULL_TABLE', 'wh');
SELECT egress_add_stream('cpg', 'c', 'LOG_BASED', 'wh');
SQL
for _ in $(seq 1 600); do
	[ "$("${P[@]}" -Atc "SELECT string_agg(state, ',' ORDER BY name) FROM egress_streams WHERE name IN ('cpg', 'tpg')")" = streaming,synced ] && break
	sleep 0.5
done
"${P[@]}" <<SQL
UPDATE c SET v = 'pg' WHERE id <= 10;
DELETE FROM c WHERE id = 1;
INSERT INTO c SELECT g, 'p' FROM generate_series(200001, 200500) g;
TRUNCATE c;
INSERT INTO c VALUES (7, 'after truncate');
-- batches cut by batch_size_rows: streamed into the table, chunks, an
-- update meeting a key (the merge), COMMITs acknowledged while decoding
BEGIN;
INSERT INTO c SELECT g, repeat('q', 300) FROM generate_series(300001, 303000) g;
UPDATE c SET v = 'again' WHERE id BETWEEN 300001 AND 300100;
DELETE FROM c WHERE id BETWEEN 300101 AND 300110;
INSERT INTO c SELECT g, repeat('r', 300) FROM generate_series(303001, 304000) g;
COMMIT;
SQL
target=$("${P[@]}" -Atc "SELECT pg_current_wal_lsn()")
for _ in $(seq 1 600); do
	[ "$("${P[@]}" -Atc "SELECT confirmed_lsn >= '$target' FROM egress_streams WHERE name = 'cpg'")" = t ] && break
	sleep 0.5
done
echo "postgres sink: $("${P[@]}" -d analytics -Atc "SELECT count(*) FROM public.t") rows of t, $("${P[@]}" -d analytics -Atc "SELECT count(*) FROM public.c WHERE _sdc_deleted_at IS NULL") live rows of c"
# 0.2's operations: the checks (probes of every destination), alters the
# CDC worker picks up, the progress and lag figures
"${P[@]}" -c "SELECT count(*) FROM egress_check()" >/dev/null
"${P[@]}" <<SQL
SELECT egress_alter_stream('c', '{"batch_max_rows": 500}');
SELECT egress_alter_destination('localf', options => '{"flush_interval": "1 second"}');
INSERT INTO c SELECT g, repeat('y', 100) FROM generate_series(100001, 101000) g;
SQL
target=$("${P[@]}" -Atc "SELECT pg_current_wal_lsn()")
for _ in $(seq 1 240); do
	[ "$("${P[@]}" -Atc "SELECT bool_and(confirmed_lsn >= '$target') FROM egress_streams WHERE name IN ('c', 'cf')")" = t ] && break
	sleep 0.5
done
"${P[@]}" -c "SELECT name, state, rows_sent, batches_sent, confirmed_lsn, progress, lag_seconds, retries, last_success_at IS NOT NULL AS succeeded, last_error FROM egress_streams"
"${P[@]}" -c "SELECT egress_preview_record(t) FROM t" >/dev/null
"$B/pg_ctl" -D "$dir/data" -m fast stop -w -t 300 >/dev/null
[ -z "${rcv_pid:-}" ] || kill "$rcv_pid"
# any report left (known PostgreSQL false positives are suppressed) that runs through pg_egress code
found=0
for f in "$dir"/vglogs/*.log; do
	if grep -q "^==[0-9]*== [A-Z]" "$f" && grep -q "egress_\|singer\|sink\|pg_egress.so\|curl\|libpq" "$f"; then
		echo "== $f"
		cat "$f"
		found=1
	fi
done
echo "valgrind logs in $dir/vglogs; reports involving pg_egress: $found"
[ "$found" -eq 0 ]
