#!/usr/bin/env bash
# Runs the export paths (egress_export to files and to the local S3 server:
# every format, gzip, splitting, multipart, errors halfway, aws_s3) of the
# installed build in a backend under valgrind memcheck and lists the
# reports that involve pg_egress code.
# Usage (as the unprivileged user, after make install, with test/s3's
# node_modules installed): bash scripts/valgrind-export.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
B=$(pg_config --bindir)
dir=$(mktemp -d /tmp/pg_egress-vgx.XXXXXX)
port=${VG_PORT:-55462}
mkdir -p "$dir/vglogs" "$dir/out" "$dir/s3"

node "$root/test/s3/s3server.js" "$dir/s3/data" "$dir/s3/ready.json" lake >"$dir/s3/log" 2>&1 &
s3pid=$!
for _ in $(seq 1 100); do [ -s "$dir/s3/ready.json" ] && break; sleep 0.1; done
s3port=$(sed -e 's/.*"port":\([0-9]*\).*/\1/' "$dir/s3/ready.json")

"$B/initdb" -D "$dir/data" -U postgres --auth=trust >/dev/null
cat >>"$dir/data/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$dir'
shared_preload_libraries = 'pg_egress'
pg_egress.s3_endpoint = 'http://127.0.0.1:$s3port'
pg_egress.s3_access_key_id = 'S3RVER'
pg_egress.s3_secret_access_key = 'S3RVER'
CONF
supp=$root/test/valgrind.supp
valgrind --quiet --trace-children=yes --leak-check=no --num-callers=20 --suppressions="$supp" \
	--log-file="$dir/vglogs/vg.%p.log" "$B/postgres" -D "$dir/data" >"$dir/server.log" 2>&1 &
P=("$B/psql" -X -q -h "$dir" -p "$port" -U postgres -d postgres)
for _ in $(seq 1 240); do "$B/pg_isready" -h "$dir" -p "$port" -U postgres -q && break; sleep 0.5; done
"${P[@]}" <<SQL
CREATE EXTENSION pg_egress;
CREATE EXTENSION aws_s3;
CREATE TABLE t AS SELECT g AS id, md5(g::text) AS h, g / 3.0 AS n, now() AS ts, ARRAY[g, NULL] AS a
  FROM generate_series(1, 20000) g;
SELECT * FROM egress_export('SELECT * FROM t', 'file://$dir/out/t.txt');
SELECT * FROM egress_export('SELECT * FROM t', 'file://$dir/out/t.csv', 'format csv, header true, force_quote *');
SELECT * FROM egress_export('SELECT * FROM t', 'file://$dir/out/t.bin', 'format binary, max_file_size 100000');
SELECT * FROM egress_export('SELECT * FROM t', 'file://$dir/out/t.gz', 'format csv, compression gzip, max_file_size 300000');
SELECT * FROM egress_export('SELECT id, 1 / (15000 - id) FROM t', 'file://$dir/out/fail.csv', 'format csv');
SELECT * FROM egress_export('SELECT * FROM t', 's3://lake/t.csv', 'format csv');
SET pg_egress.s3_part_size = '5MB';
SELECT * FROM egress_export('SELECT t.*, repeat(h, 10) FROM t, generate_series(1, 3)', 's3://lake/big.csv', 'format csv');
SELECT * FROM egress_export('SELECT t.*, repeat(h, 10), 1 / (19000 - id) FROM t, generate_series(1, 3)', 's3://lake/fail.csv', 'format csv');
SELECT * FROM egress_export('SELECT t.*, repeat(h, 10) FROM t, generate_series(1, 3)', 's3://lake/split.csv', 'format csv, max_file_size 4000000');
SELECT * FROM aws_s3.query_export_to_s3('SELECT * FROM t', aws_commons.create_s3_uri('lake', 'rds.csv', 'us-east-1'), options := 'format csv');
SELECT * FROM aws_s3.query_export_to_s3('SELECT 1', 'lake', 'bad.csv', credentials := aws_commons.create_aws_credentials('S3RVER', 'wrong', NULL));
SQL
"$B/pg_ctl" -D "$dir/data" -m fast stop >/dev/null
kill "$s3pid" 2>/dev/null || true
wait "$s3pid" 2>/dev/null || true
echo "valgrind logs: $dir/vglogs"
# reports (not the empty logs of processes without findings) that involve pg_egress
found=0
for f in "$dir"/vglogs/*.log; do
	if grep -q 'pg_egress' "$f"; then
		found=1
		echo "== $f"
		cat "$f"
	fi
done
[ "$found" -eq 0 ] && echo "no valgrind reports involving pg_egress"
