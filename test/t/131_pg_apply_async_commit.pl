
# postgres:// destinations: the COMMIT of a batch of changes acknowledged
# while the next batch is decoded (commit_batch_start; found by an attack
# review of the change):
#   part 1: batches cut by batch_max_rows inside decoding, each the first
#     after a schema change (the early load checked the table: its column
#     types were in the batch's memory, freed before the COMMIT's answer was
#     read): no worker crash, the target equals the source.
#   part 2: a chunked backfill's progress is recorded only for chunks whose
#     batch the target acknowledged: a kill -9 after the catalog recorded
#     progress loses no row of the backfill.
#   part 3: a COMMIT the target refuses (a deferred constraint trigger)
#     stops the stream (rejected) on the asynchronous path as on the
#     synchronous one, instead of being retried for ever.

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
INSERT INTO kv SELECT i, 'v' || i, i FROM generate_series(1, 10) i;
SELECT egress_add_destination('wh', 'postgres://loader\@127.0.0.1:$port/wh',
    '{"password": "secret-pw", "default_target_schema": "raw", "add_metadata_columns": true}');
SELECT egress_add_stream('kv', 'public.kv', 'LOG_BASED', 'wh', options => '{"batch_max_rows": 1000}');
});
wait_stream_state($src, 'kv', 'streaming');
ok(poll_until('initial sync', 60, sub { tq('SELECT count(*) FROM raw.kv') eq '10' }), 'initial sync');

sub kv_same
{
	my $want = $src->safe_psql('postgres', q{SELECT string_agg(id || ':' || v || ':' || n || ':' || coalesce(w::text, '-'), ',' ORDER BY id) FROM kv});
	my $got = tq(q{SELECT string_agg(id || ':' || v || ':' || n || ':' || coalesce(w::text, '-'), ',' ORDER BY id) FROM raw.kv WHERE _sdc_deleted_at IS NULL});
	return $got eq $want;
}

my $slog = $src->logfile;
my $soff = -s $slog;
for my $round (1 .. 4)
{
	# a schema change: the next batch's early load checks the table (pending)
	$src->safe_psql('postgres', "ALTER TABLE kv ADD COLUMN IF NOT EXISTS w$round integer");
	$src->safe_psql('postgres', "ALTER TABLE kv ADD COLUMN IF NOT EXISTS w integer") if $round == 1;
	my $lo = 1000 + $round * 10000;
	my $hi = $lo + 5500;
	$src->safe_psql('postgres', qq{
INSERT INTO kv (id, v, n, w) SELECT i, repeat('y', 100) || i, i, $round FROM generate_series($lo, $hi) i;
});
	ok(poll_until("round $round", 90, sub { tq("SELECT count(*) FROM raw.kv WHERE id BETWEEN $lo AND $hi") eq ($hi - $lo + 1) }),
		"round $round: rows arrive");
}
ok(kv_same(), 'target equals source');
my $stext = slurp_file($slog, $soff);
unlike($stext, qr/terminated by signal|was terminated|server process .* exited/, 'no worker crash');
unlike($stext, qr/did not acknowledge/, 'no unacknowledged batch');
my $tlog = slurp_file($tgt->logfile);
my $n_commit = () = $tlog =~ /statement: COMMIT/g;
note("target COMMITs: $n_commit");
note(join("\n", grep { /ERROR|signal|acknowledge|WARNING/ } split /\n/, $stext));
is(stream_row($src, 'kv')->{last_error}, undef, 'kv: no error');


# ---------------------------------------------------------------------------
# Part 2: a chunked backfill's progress vs acknowledgements.  Batch N
# (changes of stream a only) is committed asynchronously while the
# backfill's chunk of stream b goes into the open batch N+1; the chunk must
# not count as acknowledged before N+1 is: a kill -9 then would resume the
# backfill after rows that never arrived.  (It holds: a chunk's batch is
# committed synchronously before its progress is noted.)
# ---------------------------------------------------------------------------
{
my $s2 = create_node('s2', cdc => 1,
	conf => "listen_addresses = '127.0.0.1'\nmax_worker_processes = 24\npg_egress.max_workers = 16\npg_egress.flush_interval = 15000\nrestart_after_crash = on\n");
$s2->safe_psql('postgres', qq{
CREATE TABLE a (id bigint PRIMARY KEY, v text);
CREATE TABLE b (id int PRIMARY KEY, v text);
INSERT INTO a VALUES (1, 'a1');
INSERT INTO b SELECT i, 'b ' || i FROM generate_series(1, 300) i;
});
$tgt->safe_psql('postgres', q{CREATE DATABASE wh2 OWNER loader;});
sub t2 { return $tgt->safe_psql('wh2', $_[0]); }
sub s2 { return $s2->safe_psql('postgres', $_[0]); }
s2(qq{
SELECT egress_add_destination('wh2', 'postgres://loader\@127.0.0.1:$port/wh2',
    '{"password": "secret-pw", "default_target_schema": "raw"}');
SELECT egress_add_stream('a', 'public.a', 'LOG_BASED', 'wh2', options => '{"batch_max_rows": 1000}');
});
wait_stream_state($s2, 'a', 'streaming');
ok(poll_until('a synced', 60, sub { t2(q{SELECT count(*) FROM pg_tables WHERE tablename = 'a'}) eq '1' && t2('SELECT count(*) FROM raw.a') eq '1' }), 'part 2: a synced');

# the backfill of b: its first chunk held (a writer, then a lock queued)
my $x = $s2->background_psql('postgres');
$x->query_safe("BEGIN; UPDATE b SET v = v WHERE id = -1");
s2(q{SELECT egress_add_stream('b', 'public.b', 'LOG_BASED', 'wh2', options => '{"chunk_rows": 100, "batch_max_rows": 1000}')});
ok(poll_until('worker waits for the writer of b', 60, sub {
	s2(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_egress cdc' AND query LIKE '%waiting for 1 transactions writing %b'}) eq '1' }),
	'part 2: the first chunk waits for a writer');
# the batch with b's ACTIVATE_VERSION reaches the target first (flush interval)
ok(poll_until('b activate delivered', 60, sub { t2(q{SELECT count(*) FROM pg_tables WHERE tablename = 'b'}) eq '1' }),
	'part 2: b table on the target');
my $y = $s2->background_psql('postgres');
$y->query_until(qr/go/, "BEGIN;\n\\echo go\nLOCK TABLE b IN ACCESS EXCLUSIVE MODE;\n");
ok(poll_until('lock of b queued', 30, sub {
	s2(q{SELECT count(*) FROM pg_locks WHERE relation = 'b'::regclass AND mode = 'AccessExclusiveLock' AND NOT granted}) eq '1' }),
	'part 2: a session queues for the lock of b');
$x->query_safe('COMMIT');
ok(poll_until('worker waits for the lock of b', 60, sub {
	s2(q{SELECT count(*) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
		WHERE a.backend_type = 'pg_egress cdc' AND NOT l.granted AND l.locktype = 'relation' AND l.relation = 'b'::regclass}) eq '1' }),
	'part 2: the chunk read waits');
# 1200 changes of a before H: batch N (1000 rows of a) committed asynchronously, N+1 open
s2(q{INSERT INTO a SELECT i, 'x' || i FROM generate_series(2, 1201) i});
$y->query_safe('COMMIT');
$x->quit;
$y->quit;
my $seen = 0;
ok(poll_until('b progress recorded', 30, sub {
	my $r = s2(q{SELECT backfill_rows FROM egress.stream_state s JOIN egress.stream t ON t.id = s.stream_id WHERE t.name = 'b'});
	$seen = $r if $r ne '' && $r > 0;
	return $seen > 0;
}), 'part 2: the catalog records progress of b');
my $on_target = t2('SELECT count(*) FROM raw.b');
note("catalog backfill_rows $seen, rows of b on the target $on_target");
cmp_ok($on_target, '>=', $seen, 'part 2: the progress recorded is on the target (else a crash loses it)');
# a crash now
my $pid = s2(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_egress cdc'});
kill 'KILL', $pid if $pid;
ok(poll_until('b streaming again', 120, sub {
	my $r = eval { s2(q{SELECT s.state FROM egress.stream_state s JOIN egress.stream t ON t.id = s.stream_id WHERE t.name = 'b'}) } // '';
	return $r eq 'streaming';
}), 'part 2: b streaming after the crash');
ok(poll_until('b complete', 60, sub { t2('SELECT count(*) FROM raw.b') eq '300' }),
	'part 2: all 300 rows of b on the target') or note('rows of b on the target: ' . t2('SELECT count(*) FROM raw.b') . ' missing: ' . t2(q{SELECT string_agg(i::text, ',') FROM generate_series(1, 300) i WHERE NOT EXISTS (SELECT 1 FROM raw.b WHERE id = i)}));
}

# ---------------------------------------------------------------------------
# Part 3: a COMMIT the target refuses (a deferred constraint trigger).  The
# synchronous path (txn_commit -> txn_check) rejects the batch: the streams
# stop (EGRESS_ERRCODE_REJECTED).  The asynchronous path (commit_collect,
# pga_commit_check) must do the same, not take the answer for a lost
# connection ("outcome unknown") and retry for ever.
# ---------------------------------------------------------------------------
my $s3 = create_node('s3', cdc => 1,
	conf => "listen_addresses = '127.0.0.1'\nmax_worker_processes = 24\npg_egress.max_workers = 16\n");
sub s3 { return $s3->safe_psql('postgres', $_[0]); }
s3(qq{
CREATE TABLE cs (id bigint PRIMARY KEY, v text);
CREATE TABLE cb (id bigint PRIMARY KEY, v text);
INSERT INTO cs VALUES (1, 'ok');
INSERT INTO cb VALUES (1, 'ok');
SELECT egress_add_destination('dsmall', 'postgres://loader\@127.0.0.1:$port/wh',
    '{"password": "secret-pw", "default_target_schema": "raw3"}');
SELECT egress_add_destination('dbig', 'postgres://loader\@127.0.0.1:$port/wh',
    '{"password": "secret-pw", "default_target_schema": "raw4"}');
SELECT egress_add_stream('cs', 'public.cs', 'LOG_BASED', 'dsmall');
SELECT egress_add_stream('cb', 'public.cb', 'LOG_BASED', 'dbig', options => '{"batch_max_rows": 1000}');
});
wait_stream_state($s3, 'cs', 'streaming');
wait_stream_state($s3, 'cb', 'streaming');
ok(poll_until('cs, cb synced', 60, sub { tq('SELECT count(*) FROM raw3.cs') eq '1' && tq('SELECT count(*) FROM raw4.cb') eq '1' }),
	'part 3: synced');
$tgt->safe_psql('wh', q{
CREATE FUNCTION public.no_bad() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN IF NEW.v = 'bad' THEN RAISE EXCEPTION 'bad row %', NEW.id; END IF; RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER no_bad AFTER INSERT OR UPDATE ON raw3.cs DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION public.no_bad();
CREATE CONSTRAINT TRIGGER no_bad AFTER INSERT OR UPDATE ON raw4.cb DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION public.no_bad();
});
my $off3 = -s $s3->logfile;
# one row: the batch goes at the flush interval, synchronously
s3(q{INSERT INTO cs VALUES (2, 'bad')});
ok(poll_until('cs rejected', 60, sub { (stream_row($s3, 'cs')->{last_error} // '') =~ /refused/ }),
	'part 3: the synchronous COMMIT refused: the stream stops (rejected)');
# 1201 rows in one transaction: the first 1000 committed asynchronously
s3(q{INSERT INTO cb SELECT i, CASE WHEN i = 500 THEN 'bad' ELSE 'ok' END FROM generate_series(2, 1202) i});
my $rejected = poll_until('cb rejected', 40, sub { (stream_row($s3, 'cb')->{last_error} // '') =~ /refused/ });
my $l3 = slurp_file($s3->logfile, $off3);
my $unack = () = $l3 =~ /did not acknowledge batch/g;
note("cb: last_error " . (stream_row($s3, 'cb')->{last_error} // 'none') . "; 'did not acknowledge' $unack times");
ok($rejected, 'part 3: the asynchronous COMMIT refused the same way: the stream stops (rejected)');

done_testing();
