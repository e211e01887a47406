
# postgres:// destinations, the apply engine's smoke test: a second cluster
# as the target (127.0.0.1, a scram password role); a FULL_TABLE stream and
# a LOG_BASED stream (INSERT, UPDATE, DELETE soft, TRUNCATE) land in tables
# of the target with the rows of the source; _pg_egress_state records what
# was applied.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $src = create_node('src', cdc => 1,
	conf => "listen_addresses = '127.0.0.1'\nmax_worker_processes = 24\npg_egress.max_workers = 16\n");

my $tgt = PostgreSQL::Test::Cluster->new('tgt');
$tgt->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
$tgt->append_conf('postgresql.conf', qq{listen_addresses = '127.0.0.1'
password_encryption = 'scram-sha-256'});
$tgt->start;
$tgt->safe_psql('postgres', q{
CREATE ROLE loader LOGIN PASSWORD 'secret-pw';
CREATE DATABASE wh OWNER loader;
});
# test clusters trust local connections: the target must ask for the password
my $hba = $tgt->data_dir . '/pg_hba.conf';
my $h = slurp_file($hba);
open(my $fh, '>', $hba) or die;
print $fh "host all loader 127.0.0.1/32 scram-sha-256\n$h";
close $fh;
$tgt->reload;
my $port = $tgt->port;

sub tq
{
	my ($sql) = @_;
	return $tgt->safe_psql('wh', $sql);
}

$src->safe_psql('postgres', qq{
CREATE TABLE items (id integer PRIMARY KEY, name text, price numeric(10,2),
    tags text[], doc jsonb, at timestamptz, flag boolean);
INSERT INTO items SELECT i, 'n' || i, i * 1.5, ARRAY['a', 'b\tc'], '{"k": [1, 2]}',
    '2024-01-02 03:04:05.123456+00', i % 2 = 0 FROM generate_series(1, 1000) i;
INSERT INTO items VALUES (1001, E'quote '' back \\\\ nl \\n tab \\t', NULL, NULL, NULL, NULL, NULL);
CREATE TABLE ev (id bigint PRIMARY KEY, v text);
INSERT INTO ev SELECT i, 'v' || i FROM generate_series(1, 100) i;
SELECT egress_add_destination('wh', 'postgres://loader\@127.0.0.1:$port/wh',
    '{"password": "secret-pw", "default_target_schema": "raw", "add_metadata_columns": true}');
SELECT egress_add_stream('items', 'public.items', 'FULL_TABLE', 'wh');
});

wait_stream_where($src, 'items', q{state = 'synced' OR state = 'error' OR last_error IS NOT NULL}, 120);
my $row = stream_row($src, 'items');
is($row->{last_error}, undef, 'FULL_TABLE: no error');
is(tq('SELECT count(*) FROM raw.items'), '1001', 'FULL_TABLE: every row');
is( tq(q{SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s', id, name, price::numeric(10,2), tags, doc, to_char(at, 'YYYY-MM-DD HH24:MI:SS.US'), flag), ',' ORDER BY id) FROM raw.items}),
	$src->safe_psql('postgres', q{SET timezone = 'UTC'; SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s', id, name, price, to_jsonb(tags), doc, to_char(at, 'YYYY-MM-DD HH24:MI:SS.US'), flag), ',' ORDER BY id) FROM items}),
	'FULL_TABLE: the same values');
is( tq(q{SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'raw.items'::regclass AND attnum > 0}),
	'id integer, name character varying, price numeric, tags jsonb, doc jsonb, at timestamp without time zone, flag boolean, _sdc_extracted_at timestamp without time zone, _sdc_batched_at timestamp without time zone, _sdc_deleted_at timestamp without time zone',
	'FULL_TABLE: the column types');
is(tq(q{SELECT count(*) FROM raw.items WHERE _sdc_extracted_at IS NULL OR _sdc_batched_at IS NULL}), '0',
	'metadata columns filled');
like(tq(q{SELECT stream || ' ' || active_version || ' ' || (loading_version IS NULL)::int || ' ' || source FROM raw._pg_egress_state}),
	qr/^public-items \d{13} 1 \d+\/postgres$/, 'state row: active version, source');

# LOG_BASED
$src->safe_psql('postgres', q{SELECT egress_add_stream('ev', 'public.ev', 'LOG_BASED', 'wh')});
wait_stream_state($src, 'ev', 'streaming');
ok(poll_until('initial sync of ev', 60, sub { tq('SELECT count(*) FROM raw.ev') eq '100' }), 'LOG_BASED: initial sync');
$src->safe_psql('postgres', q{
INSERT INTO ev SELECT i, 'v' || i FROM generate_series(101, 200) i;
UPDATE ev SET v = 'upd' WHERE id <= 10;
DELETE FROM ev WHERE id BETWEEN 11 AND 20;
BEGIN; INSERT INTO ev VALUES (1000, 'x'); DELETE FROM ev WHERE id = 1000; COMMIT;
INSERT INTO ev VALUES (201, 'last');
});
ok(poll_until('changes of ev', 60, sub { tq(q{SELECT count(*) FROM raw.ev WHERE id = 201}) eq '1' }), 'LOG_BASED: changes arrive');
is(tq(q{SELECT count(*) FROM raw.ev}), '202', 'soft deletes keep the rows');
is(tq(q{SELECT count(*) FROM raw.ev WHERE _sdc_deleted_at IS NOT NULL}), '11', 'deleted rows have _sdc_deleted_at');
is(tq(q{SELECT v FROM raw.ev WHERE id = 15}), 'v15', 'a soft-deleted row keeps its columns');
is(tq(q{SELECT v FROM raw.ev WHERE id = 1000}), 'x', 'insert then delete in one batch keeps the inserted values');
is(tq(q{SELECT count(*) FROM raw.ev WHERE v = 'upd'}), '10', 'updates applied');
like(tq(q{SELECT position FROM raw._pg_egress_state WHERE stream = 'public-ev'}), qr/^[0-9A-F]{16}-\d{10}$/, 'state keeps the position');

$src->safe_psql('postgres', q{TRUNCATE ev; INSERT INTO ev VALUES (5000, 'after');});
ok(poll_until('truncate of ev', 60, sub { tq(q{SELECT count(*) FROM raw.ev WHERE id = 5000}) eq '1' }), 'TRUNCATE: later rows arrive');
is(tq(q{SELECT count(*) FROM raw.ev WHERE _sdc_deleted_at IS NULL}), '1', 'TRUNCATE soft-deletes the older rows');

# Schema evolution on a LOG_BASED stream: a new column, a type change
$src->safe_psql('postgres', q{
ALTER TABLE ev ADD COLUMN n integer;
INSERT INTO ev VALUES (5001, 'n', 7);
ALTER TABLE ev ALTER COLUMN n TYPE text;
INSERT INTO ev VALUES (5002, 'n2', 'seven');
});
ok(poll_until('evolution of ev', 60, sub { tq(q{SELECT count(*) FROM raw.ev WHERE id = 5002}) eq '1' }), 'evolution: rows arrive');
is(tq(q{SELECT n FROM raw.ev WHERE id = 5002}), 'seven', 'the changed column has the new type');
like(tq(q{SELECT string_agg(attname || ':' || format_type(atttypid, NULL), ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'raw.ev'::regclass AND attnum > 0 AND NOT attisdropped}),
	qr/^id:bigint,v:character varying,_sdc_deleted_at:timestamp without time zone,_sdc_extracted_at:timestamp without time zone,_sdc_batched_at:timestamp without time zone,n_\d{8}_\d{4}:integer,n:character varying$/,
	'the old column renamed aside, a new one added');
is(tq(q{SELECT count(*) FROM raw.ev WHERE id = 5001 AND n IS NULL}), '1', 'old values stay in the renamed column');

# a column dropped on the target by hand: the batch is tried again with the table checked again
tq(q{ALTER TABLE raw.ev DROP COLUMN v});
$src->safe_psql('postgres', q{INSERT INTO ev VALUES (6000, 'back', 'x')});
ok(poll_until('column re-added', 60, sub { tq(q{SELECT count(*) FROM raw.ev WHERE id = 6000}) eq '1' }), 'dropped column: the change arrives');
is(tq(q{SELECT v FROM raw.ev WHERE id = 6000}), 'back', 'dropped column: added again');

# FULL_TABLE again: a second version loads into a shadow table and replaces the rows
$src->safe_psql('postgres', q{DELETE FROM items WHERE id > 900; UPDATE items SET name = 'new' WHERE id = 1;
SELECT egress_resync_stream('items');});
ok(poll_until('resync of items', 60, sub { tq(q{SELECT count(*) FROM raw.items WHERE _sdc_deleted_at IS NOT NULL}) eq '101' }),
	'FULL_TABLE version 2: rows missing from it are soft-deleted');
is(tq(q{SELECT name FROM raw.items WHERE id = 1}), 'new', 'FULL_TABLE version 2: rows updated');
is(tq(q{SELECT count(*) FROM pg_class WHERE relname LIKE 'items__v%'}), '0', 'the shadow table is gone');

# hard_delete, a keyless table (refused, then appended), the same cluster
my $me = $src->safe_psql('postgres', 'SELECT current_user');
my $sport = $src->port;
$src->safe_psql('postgres', qq{
CREATE DATABASE other;
CREATE TABLE hd (id int PRIMARY KEY, v text);
INSERT INTO hd SELECT i, 'x' FROM generate_series(1, 10) i;
CREATE TABLE nokey (a int, b text);
INSERT INTO nokey VALUES (1, 'a'), (1, 'a');
SELECT egress_add_destination('hard', 'postgres://loader\@127.0.0.1:$port/wh',
    '{"password": "secret-pw", "default_target_schema": "hard", "hard_delete": true}');
SELECT egress_add_destination('same', 'postgres://$me\@127.0.0.1:$sport/other');
SELECT egress_add_destination('appends', 'postgres://loader\@127.0.0.1:$port/wh',
    '{"password": "secret-pw", "default_target_schema": "app", "primary_key_required": false}');
SELECT egress_add_stream('hd', 'public.hd', 'LOG_BASED', 'hard');
SELECT egress_add_stream('nokey', 'public.nokey', 'FULL_TABLE', 'wh');
SELECT egress_add_stream('nokey2', 'public.nokey', 'FULL_TABLE', 'appends');
});
wait_stream_state($src, 'hd', 'streaming');
$src->safe_psql('postgres', q{DELETE FROM hd WHERE id <= 3; UPDATE hd SET v = 'y' WHERE id = 10;});
ok(poll_until('hard deletes', 60, sub { tq(q{SELECT count(*) || ':' || count(*) FILTER (WHERE v = 'y') FROM hard.hd}) eq '7:1' }),
	'hard_delete: rows deleted');
wait_stream_state($src, 'nokey', 'error');
like(stream_row($src, 'nokey')->{last_error}, qr/has no primary key/, 'keyless table refused');
wait_stream_state($src, 'nokey2', 'synced');
is(tq(q{SELECT count(*) FROM app.nokey}), '2', 'keyless table appended when allowed');
$src->safe_psql('postgres', q{SELECT egress_add_stream('same', 'public.hd', 'FULL_TABLE', 'same')});
wait_stream_state($src, 'same', 'synced');
is($src->safe_psql('other', q{SELECT count(*) FROM public.hd}), '7', 'the same cluster, another database');

# parallelism 2: streams on two connections, applied concurrently
$src->safe_psql('postgres', qq{
CREATE TABLE p1 (id int PRIMARY KEY, v text);
CREATE TABLE p2 (id int PRIMARY KEY, v text);
CREATE TABLE p3 (id int PRIMARY KEY, v text);
SELECT egress_add_destination('par', 'postgres://loader\@127.0.0.1:$port/wh',
    '{"password": "secret-pw", "default_target_schema": "par", "parallelism": 2}');
SELECT egress_add_stream('p1', 'public.p1', 'LOG_BASED', 'par');
SELECT egress_add_stream('p2', 'public.p2', 'LOG_BASED', 'par');
SELECT egress_add_stream('p3', 'public.p3', 'LOG_BASED', 'par');
});
wait_stream_state($src, $_, 'streaming') for qw(p1 p2 p3);
$src->safe_psql('postgres', q{
BEGIN;
INSERT INTO p1 SELECT i, 'a' FROM generate_series(1, 5000) i;
INSERT INTO p2 SELECT i, 'b' FROM generate_series(1, 5000) i;
INSERT INTO p3 SELECT i, 'c' FROM generate_series(1, 5000) i;
COMMIT;
UPDATE p1 SET v = 'a2' WHERE id <= 100; DELETE FROM p2 WHERE id <= 100;
});
ok(poll_until('parallel streams', 60, sub {
	tq(q{SELECT (SELECT count(*) FROM par.p1 WHERE v = 'a2') || ',' || (SELECT count(*) FROM par.p2 WHERE _sdc_deleted_at IS NOT NULL) || ',' || (SELECT count(*) FROM par.p3)}) eq '100,100,5000' }),
	'parallelism 2: every stream applied');
is(tq(q{SELECT count(*) FROM par._pg_egress_state}), '3', 'parallelism 2: a state row per stream');

# validate_records on rows that fit their schema; a target error is a rejection
tq(q{CREATE SCHEMA chk AUTHORIZATION loader;});
$tgt->safe_psql('wh', q{SET ROLE loader; CREATE TABLE chk.hd (id integer PRIMARY KEY, v character varying CHECK (v <> 'y'));});
$src->safe_psql('postgres', qq{
SELECT egress_add_destination('val', 'postgres://loader\@127.0.0.1:$port/wh',
    '{"password": "secret-pw", "default_target_schema": "val", "validate_records": true}');
SELECT egress_add_stream('items_v', 'public.items', 'FULL_TABLE', 'val');
SELECT egress_add_destination('chk', 'postgres://loader\@127.0.0.1:$port/wh',
    '{"password": "secret-pw", "default_target_schema": "chk"}');
SELECT egress_add_stream('hd_chk', 'public.hd', 'FULL_TABLE', 'chk');
});
wait_stream_state($src, 'items_v', 'synced');
is(tq(q{SELECT count(*) FROM val.items}), $src->safe_psql('postgres', 'SELECT count(*) FROM items'), 'validate_records: valid rows load');
wait_stream_state($src, 'hd_chk', 'error');
like(stream_row($src, 'hd_chk')->{last_error}, qr/refused batch .*23514: new row for relation "hd" violates check constraint/,
	'a target error stops the stream with the target\'s message');
is(tq(q{SELECT count(*) FROM chk.hd}), '0', 'nothing of the refused batch stays');

# the every-type table, FULL_TABLE and LOG_BASED (its changes too)
every_type_table($src);
$src->safe_psql('postgres', qq{
SELECT egress_add_destination('et', 'postgres://loader\@127.0.0.1:$port/wh',
    '{"password": "secret-pw", "schema_mapping": {"public": {"target_schema": "et"}}}');
SELECT egress_add_stream('et', 'public.t', 'FULL_TABLE', 'et');
SELECT egress_add_destination('etl', 'postgres://loader\@127.0.0.1:$port/wh',
    '{"password": "secret-pw", "schema_mapping": {"public": "etl"}}');
SELECT egress_add_stream('etl', 'public.t', 'LOG_BASED', 'etl');
});
wait_stream_state($src, 'et', 'synced');
wait_stream_state($src, 'etl', 'streaming');
$src->safe_psql('postgres', q{INSERT INTO t SELECT id + 100, c_int2, c_int4, c_int8, c_num, c_numu, c_real, c_dbl, c_bool, c_bit, c_text, c_vc, c_ch, c_uuid, c_inet, c_enum, c_date, c_ts, c_tstz, c_time, c_timetz, c_json, c_jsonb, c_hstore, c_intarr, c_txtarr, c_intv, c_bytea, c_point, c_dom, c_nn FROM t});
ok(poll_until('every type, CDC', 60, sub { tq(q{SELECT count(*) FROM etl.t}) eq '12' }), 'every type: CDC rows');
is(tq(q{SELECT count(*) FROM et.t}), '6', 'every type: FULL_TABLE rows');
is(tq(q{SELECT c_text FROM et.t WHERE id = 1}), $src->safe_psql('postgres', q{SELECT c_text FROM t WHERE id = 1}), 'every type: text with escapes');
is(tq(q{SELECT string_agg(format('%s|%s|%s|%s|%s', c_num, c_jsonb, c_txtarr, c_hstore, c_json), ',' ORDER BY id) FROM etl.t WHERE id > 100}),
	tq(q{SELECT string_agg(format('%s|%s|%s|%s|%s', c_num, c_jsonb, c_txtarr, c_hstore, c_json), ',' ORDER BY id) FROM et.t}),
	'every type: CDC values equal FULL_TABLE values');

# INCREMENTAL: runs upsert by key
$src->safe_psql('postgres', q{
CREATE TABLE inc (id int PRIMARY KEY, v text, ts int NOT NULL);
INSERT INTO inc SELECT i, 'a', i FROM generate_series(1, 50) i;
SELECT egress_add_stream('inc', 'public.inc', 'INCREMENTAL', 'wh', replication_key => 'ts');
});
ok(poll_until('incremental run 1', 60, sub { tq(q{SELECT count(*) FROM pg_class WHERE relname = 'inc'}) eq '1' && tq(q{SELECT count(*) FROM raw.inc}) eq '50' }), 'INCREMENTAL: first run');
$src->safe_psql('postgres', q{UPDATE inc SET v = 'b', ts = 100 + id WHERE id <= 5; INSERT INTO inc VALUES (51, 'c', 200); SELECT egress_sync_now('inc');});
ok(poll_until('incremental run 2', 60, sub { tq(q{SELECT count(*) || ',' || count(*) FILTER (WHERE v = 'b') FROM raw.inc}) eq '51,5' }), 'INCREMENTAL: a later run upserts');

# A direct COPY that meets a key already there goes through staging, at
# once: a one-shot trigger (a sequence: not rolled back) on the target
# table inserts key 2 while the batch's COPY runs.
tq(q{CREATE SCHEMA dc AUTHORIZATION loader;});
$tgt->safe_psql('wh', q{SET ROLE loader;
CREATE TABLE dc.dct (id integer PRIMARY KEY, v character varying);
CREATE SEQUENCE dc.once;
CREATE FUNCTION dc.sneak() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.id = 1 AND pg_trigger_depth() = 1 AND nextval('dc.once') = 1 THEN
    INSERT INTO dc.dct VALUES (2, 'sneaked');
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER sneak BEFORE INSERT ON dc.dct FOR EACH ROW EXECUTE FUNCTION dc.sneak();
});
$src->safe_psql('postgres', qq{
CREATE TABLE dct (id int PRIMARY KEY, v text);
INSERT INTO dct SELECT i, 'v' || i FROM generate_series(1, 10) i;
SELECT egress_add_destination('dc', 'postgres://loader\@127.0.0.1:$port/wh',
    '{"password": "secret-pw", "default_target_schema": "dc"}');
SELECT egress_add_stream('dct', 'public.dct', 'FULL_TABLE', 'dc');
});
wait_stream_state($src, 'dct', 'synced');
is(tq(q{SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM dc.dct}),
	join(',', map { "$_:v$_" } 1 .. 10), 'direct COPY conflict: loaded through staging, rows as the source');
ok(tq(q{SELECT last_value FROM dc.once}) >= 2, 'direct COPY conflict: the batch was applied twice (the first rolled back)');

is($src->safe_psql('postgres', q{SELECT string_agg(name || ':' || coalesce(last_error, ''), ',') FROM egress_streams WHERE last_error IS NOT NULL AND name NOT IN ('nokey', 'hd_chk')}), '', 'no other stream error');
done_testing();
