
# postgres:// destinations: a batch of changes (LOG_BASED, one stream)
# loads early while it is written.  The target's statement log shows which
# way a batch went: new keys stream straight into the table (a COPY into it
# under the savepoint pg_egress_chunk, no merge); a batch that meets keys
# the table has falls back to the staging table, whose merge is a statement
# of its own (the usual path sends CREATE + COPY + merge as one).  Batches
# with a key changed twice, deletes, and two streams (the usual path) end
# with the source's rows.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $src = create_node('src', cdc => 1,
	conf => "listen_addresses = '127.0.0.1'\nmax_worker_processes = 24\npg_egress.max_workers = 16\n");

# the target: role loader (password secret-pw), database wh it owns
my ($tgt) = create_target_node('tgt', password => 'secret-pw', dbname => 'wh', conf => "log_statement = 'all'");
my $port = $tgt->port;

sub tq
{
	my ($sql) = @_;
	return $tgt->safe_psql('wh', $sql);
}

$src->safe_psql('postgres', qq{
CREATE TABLE kv (id bigint PRIMARY KEY, v text, n integer);
CREATE TABLE tk (k text PRIMARY KEY, v text);
INSERT INTO kv SELECT i, 'v' || i, i FROM generate_series(1, 10) i;
INSERT INTO tk VALUES ('a', 'a0');
SELECT egress_add_destination('wh', 'postgres://loader\@127.0.0.1:$port/wh',
    '{"password": "secret-pw", "default_target_schema": "raw", "add_metadata_columns": true}');
SELECT egress_add_stream('kv', 'public.kv', 'LOG_BASED', 'wh');
SELECT egress_add_stream('tk', 'public.tk', 'LOG_BASED', 'wh');
});
wait_stream_state($src, 'kv', 'streaming');
wait_stream_state($src, 'tk', 'streaming');
ok(poll_until('initial sync', 60, sub { tq('SELECT count(*) FROM raw.kv') eq '10' && tq('SELECT count(*) FROM raw.tk') eq '1' }),
	'initial sync');

my $log = $tgt->logfile;
my $offset = -s $log;

sub kv_same
{
	my $want = $src->safe_psql('postgres', q{SELECT string_agg(id || ':' || v || ':' || n, ',' ORDER BY id) FROM kv});
	return tq(q{SELECT string_agg(id || ':' || v || ':' || n, ',' ORDER BY id) FROM raw.kv WHERE _sdc_deleted_at IS NULL}) eq $want;
}

# distinct keys, many rows (several chunks of COPY text sent early)
$src->safe_psql('postgres', q{
INSERT INTO kv SELECT i, repeat('x', 200) || i, i FROM generate_series(11, 5000) i;
});
ok(poll_until('distinct keys', 60, \&kv_same), 'distinct keys: the rows');
my $text = slurp_file($log, $offset);
like($text, qr/statement: SAVEPOINT pg_egress_chunk;\s+COPY raw\.kv \(/, 'new keys: streamed into the table');
unlike($text, qr/MERGE INTO|_pg_egress_stage/, 'new keys: no staging, no merge');

# a key changed several times in one batch, deletes, a delete then an insert
$offset = -s $log;
$src->safe_psql('postgres', q{
BEGIN;
UPDATE kv SET v = 'u1' WHERE id <= 100;
UPDATE kv SET v = 'u2', n = -n WHERE id <= 50;
DELETE FROM kv WHERE id BETWEEN 200 AND 299;
INSERT INTO kv VALUES (6000, 'new', 1);
DELETE FROM kv WHERE id = 300;
INSERT INTO kv VALUES (300, 'again', 3);
COMMIT;
INSERT INTO kv VALUES (6001, 'last', 1);
});
ok(poll_until('repeated keys', 60, sub { tq('SELECT count(*) FROM raw.kv WHERE id = 6001') eq '1' }), 'repeated keys: arrive');
ok(kv_same(), 'repeated keys: the last change of each key');
is(tq(q{SELECT count(*) FROM raw.kv WHERE _sdc_deleted_at IS NOT NULL}), '100', 'deletes: soft');
$text = slurp_file($log, $offset);
like($text, qr/statement: ROLLBACK TO SAVEPOINT pg_egress_chunk;/, 'repeated keys: the streamed rows met keys of the table');
like($text, qr/statement: (DELETE FROM _pg_egress_stage|MERGE INTO)/, 'repeated keys: merged, early');

# two streams in a batch: the usual path
$src->safe_psql('postgres', q{
BEGIN;
UPDATE kv SET v = 'both' WHERE id <= 20;
INSERT INTO tk SELECT 'k' || i, 'v' || i FROM generate_series(1, 100) i;
UPDATE tk SET v = 'a1' WHERE k = 'a';
COMMIT;
});
ok(poll_until('two streams', 60, sub { tq(q{SELECT count(*) FROM raw.tk}) eq '101' }), 'two streams: arrive');
ok(poll_until('two streams, kv', 60, \&kv_same), 'two streams: kv rows');
is(tq(q{SELECT v FROM raw.tk WHERE k = 'a'}), 'a1', 'two streams: tk rows');

# one stream again, text keys
$src->safe_psql('postgres', q{UPDATE tk SET v = 'z' || k});
ok(poll_until('text keys', 60, sub { tq(q{SELECT count(*) FROM raw.tk WHERE v LIKE 'z%'}) eq '101' }), 'text keys: rows');

is(stream_row($src, 'kv')->{last_error}, undef, 'kv: no error');
is(stream_row($src, 'tk')->{last_error}, undef, 'tk: no error');

done_testing();
