
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

my $src = create_node('src', cdc => 1);

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

is($src->safe_psql('postgres', q{SELECT string_agg(name || ':' || coalesce(last_error, ''), ',') FROM egress_streams WHERE last_error IS NOT NULL}), '', 'no stream error');
done_testing();
