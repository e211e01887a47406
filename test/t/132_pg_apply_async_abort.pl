
# postgres:// destinations: a COMMIT acknowledged while the next batch is
# decoded, and what happens around it (found by a second attack review):
#   part 1: an ERROR in the CDC worker while the COMMIT is under way (a
#     cancel while the worker waits for a COMMIT a deferred trigger on the
#     target makes slow), the first batch after a schema change: the
#     stream's pending schema and its column types must not outlive the
#     COMMIT given up (they did: a worker crash, the source restarted).
#   part 2: the sink's memory does not grow with each asynchronous COMMIT.
#   part 3: the streamed/chunked paths under mixed batches (a schema change
#     inside a streamed batch, updates, deletes, re-inserts, a TRUNCATE,
#     hard and soft deletes, parallelism 2 with validate_records) and a
#     kill -9 of the worker in a large transaction: each target equals the
#     source.
#   part 4: the target's backend killed while the COMMIT is under way: the
#     batch is sent again, nothing is lost.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $src = create_node('src', cdc => 1,
	conf => "listen_addresses = '127.0.0.1'\nmax_worker_processes = 24\npg_egress.max_workers = 16\nrestart_after_crash = on\n");

# the target: role loader (password secret-pw), database wh it owns
my ($tgt) = create_target_node('tgt', password => 'secret-pw', dbname => 'wh');
my $port = $tgt->port;
sub tq { return $tgt->safe_psql('wh', $_[0]); }
sub sq { return $src->safe_psql('postgres', $_[0]); }

sq(qq{
CREATE TABLE kv (id bigint PRIMARY KEY, v text, n integer);
INSERT INTO kv SELECT i, 'v' || i, i FROM generate_series(1, 10) i;
SELECT egress_add_destination('wh', 'postgres://loader\@127.0.0.1:$port/wh',
    '{"password": "secret-pw", "default_target_schema": "raw"}');
SELECT egress_add_stream('kv', 'public.kv', 'LOG_BASED', 'wh', options => '{"batch_max_rows": 1000}');
});
wait_stream_state($src, 'kv', 'streaming');
ok(poll_until('initial sync', 60, sub { tq('SELECT count(*) FROM raw.kv') eq '10' }), 'initial sync');

# a COMMIT that sleeps once per transaction while raw.flag has a row
$tgt->safe_psql('wh', q{
CREATE TABLE public.flag (x int);
GRANT SELECT ON public.flag TO loader;
CREATE FUNCTION public.slow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM public.flag) AND
     current_setting('h5.slept', true) IS DISTINCT FROM 'y' THEN
    PERFORM set_config('h5.slept', 'y', true);
    PERFORM pg_sleep(6);
  END IF;
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER slow AFTER INSERT OR UPDATE ON raw.kv DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION public.slow();
INSERT INTO public.flag VALUES (1);
});

sub kv_same
{
	my $want = sq(q{SELECT string_agg(id || ':' || v || ':' || n || ':' || coalesce(w::text, '-'), ',' ORDER BY id) FROM kv});
	my $got = tq(q{SELECT string_agg(id || ':' || v || ':' || n || ':' || coalesce(w::text, '-'), ',' ORDER BY id) FROM raw.kv});
	return $got eq $want;
}

my $slog = $src->logfile;
my $soff = -s $slog;
# a schema change: the batch's early load checks the table (st->pending set,
# commit_types copied), then 1500 rows: 1000 committed asynchronously
sq(q{ALTER TABLE kv ADD COLUMN w integer});
sq(q{INSERT INTO kv (id, v, n, w) SELECT i, 'x' || i, i, 1 FROM generate_series(1000, 2499) i});
ok(poll_until('target COMMIT sleeping', 60, sub {
	tq(q{SELECT count(*) FROM pg_stat_activity WHERE usename = 'loader' AND query = 'COMMIT' AND wait_event = 'PgSleep'}) eq '1' }),
	'the asynchronous COMMIT is under way (sleeping)');
my $wpid = sq(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_egress cdc'});
ok(sq("SELECT pg_cancel_backend($wpid)") eq 't', 'worker cancelled while its COMMIT is under way');
tq('DELETE FROM public.flag');
ok(poll_until('rows arrive', 90, sub { tq('SELECT count(*) FROM raw.kv WHERE id BETWEEN 1000 AND 2499') eq '1500' }),
	'all rows arrive');
# more batches of the stream, in the same sink (the same ApplyStream)
for my $r (1 .. 3)
{
	my $lo = 10000 * $r;
	sq(qq{INSERT INTO kv (id, v, n, w) SELECT i, 'y' || i, i, $r FROM generate_series($lo, $lo + 1499) i});
	sq(qq{UPDATE kv SET v = v || 'u' WHERE id BETWEEN 1000 AND 1100});
	ok(poll_until("round $r", 90, sub { kv_same() }), "round $r: target equals source");
}
my $stext = slurp_file($slog, $soff);
note(join("\n", grep { /ERROR|signal|acknowledge|WARNING|cancel/ } split /\n/, $stext));
like($stext, qr/canceling statement due to user request/, 'the worker got the cancel');
unlike($stext, qr/terminated by signal|was terminated|server process .* exited/, 'no worker crash');
is(stream_row($src, 'kv')->{last_error}, undef, 'kv: no error');

# ---------------------------------------------------------------------------
# Part 2: the sink context grows by one batch id per asynchronous COMMIT
# ---------------------------------------------------------------------------
sub sink_bytes
{
	my $pid = sq(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_egress cdc'});
	my $off = -s $slog;
	sq("SELECT pg_log_backend_memory_contexts($pid)");
	my $line;
	poll_until('memory logged', 30, sub {
		my $t = slurp_file($slog, $off);
		($line) = $t =~ /(pg_egress postgres sink: \d+ total[^\n]*)/;
		return defined $line;
	});
	note($line // 'no line');
	my ($total) = ($line // '') =~ /: (\d+) total/;
	my ($free) = ($line // '') =~ /(\d+) free/;
	return ($total // 0) - ($free // 0);
}
my $before = sink_bytes();
for my $r (1 .. 40)
{
	my $lo = 100000 + 2000 * $r;
	sq(qq{INSERT INTO kv (id, v, n, w) SELECT i, 'z', i, 0 FROM generate_series($lo, $lo + 1099) i});
}
ok(poll_until('part 2 rows', 120, sub { kv_same() }), 'part 2: target equals source');
my $after = sink_bytes();
note("sink context used bytes: before $before, after $after");
cmp_ok($after - $before, '<', 1024, 'part 2: the sink context does not grow with each asynchronous COMMIT');

# ---------------------------------------------------------------------------
# Part 3: the stream/chunk state machine under mixed batches (a schema change
# inside a streamed batch, updates and deletes, re-inserts, a TRUNCATE,
# hard and soft deletes, parallelism 2 with validate_records), then a kill -9
# of the worker in the middle of a large transaction (batches sent again):
# each target equals the source.
# ---------------------------------------------------------------------------
sq(qq{
CREATE TABLE m (id int PRIMARY KEY, v text);
SELECT egress_add_destination('dh', 'postgres://loader\@127.0.0.1:$port/wh',
    '{"password": "secret-pw", "default_target_schema": "rawh", "hard_delete": true}');
SELECT egress_add_destination('ds', 'postgres://loader\@127.0.0.1:$port/wh',
    '{"password": "secret-pw", "default_target_schema": "raws", "add_metadata_columns": true}');
SELECT egress_add_destination('dp', 'postgres://loader\@127.0.0.1:$port/wh',
    '{"password": "secret-pw", "default_target_schema": "rawp", "parallelism": 2, "validate_records": true, "hard_delete": true}');
SELECT egress_add_stream('mh', 'public.m', 'LOG_BASED', 'dh', options => '{"batch_max_rows": 400}');
SELECT egress_add_stream('ms', 'public.m', 'LOG_BASED', 'ds', options => '{"batch_max_rows": 400}');
SELECT egress_add_stream('mp', 'public.m', 'LOG_BASED', 'dp', options => '{"batch_max_rows": 400}');
});
wait_stream_state($src, $_, 'streaming') for qw(mh ms mp);

sub m_same
{
	my ($schema, $soft) = @_;
	my $want = sq(q{SELECT coalesce(string_agg(id || ':' || v || ':' || coalesce(x::text, '-'), ',' ORDER BY id), '') FROM m});
	my $where = $soft ? 'WHERE _sdc_deleted_at IS NULL' : '';
	my $got = eval { tq(qq{SELECT coalesce(string_agg(id || ':' || v || ':' || coalesce(x::text, '-'), ',' ORDER BY id), '') FROM $schema.m $where}) } // 'none';
	return $got eq $want;
}
sub all_same { return m_same('rawh', 0) && m_same('raws', 1) && m_same('rawp', 0); }

my $m_off = -s $slog;
sq(q{INSERT INTO m SELECT i, 'a' || i FROM generate_series(1, 1000) i});
sq(q{
BEGIN;
INSERT INTO m SELECT i, 'b' || i FROM generate_series(1001, 1300) i;
ALTER TABLE m ADD COLUMN x int;
INSERT INTO m SELECT i, 'c' || i, i FROM generate_series(1301, 1600) i;
UPDATE m SET v = v || 'u' WHERE id BETWEEN 1 AND 50;
DELETE FROM m WHERE id BETWEEN 51 AND 60;
INSERT INTO m VALUES (51, 'again', 51), (52, 'again', 52);
UPDATE m SET x = 7 WHERE id BETWEEN 1290 AND 1310;
COMMIT;
});
ok(poll_until('part 3: mixed batch', 90, sub { all_same() }), 'part 3: schema change, updates, deletes, re-inserts in one batch');
sq(q{
BEGIN;
INSERT INTO m SELECT i, 'd' || i, 0 FROM generate_series(3000, 3500) i;
TRUNCATE m;
INSERT INTO m SELECT i, 'e' || i, 1 FROM generate_series(5000, 5500) i;
COMMIT;
});
ok(poll_until('part 3: truncate', 90, sub { all_same() }), 'part 3: a TRUNCATE inside a batch');
sq(q{
BEGIN;
INSERT INTO m SELECT i, 'f' || i, 2 FROM generate_series(6000, 6400) i;
DELETE FROM m WHERE id BETWEEN 6000 AND 6100;
UPDATE m SET v = 'g' WHERE id BETWEEN 6101 AND 6200;
INSERT INTO m SELECT i, 'h' || i, 3 FROM generate_series(6000, 6050) i;
COMMIT;
});
ok(poll_until('part 3: deletes then inserts', 90, sub { all_same() }), 'part 3: deletes, updates, re-inserts');

# a large transaction, the worker killed while it is applied
sq(q{INSERT INTO m SELECT i, 'k' || i, 4 FROM generate_series(100000, 160000) i});
poll_until('some of it applied', 30, sub { tq('SELECT count(*) FROM rawh.m WHERE id >= 100000') > 2000 });
my $kpid = sq(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_egress cdc' LIMIT 1});
kill 'KILL', $kpid if $kpid;
ok(poll_until('part 3: after a crash', 180, sub { eval { all_same() } }), 'part 3: after kill -9, each target equals the source')
	or note('rawh ' . tq('SELECT count(*) FROM rawh.m') . ' raws ' . tq('SELECT count(*) FROM raws.m WHERE _sdc_deleted_at IS NULL') . ' rawp ' . tq('SELECT count(*) FROM rawp.m') . ' src ' . sq('SELECT count(*) FROM m'));
for my $st (qw(mh ms mp))
{
	is(stream_row($src, $st)->{last_error}, undef, "part 3: $st no error");
}
my $m_text = slurp_file($slog, $m_off);
note(join("\n", grep { /ERROR|acknowledge|WARNING/ } split /\n/, $m_text));

# ---------------------------------------------------------------------------
# Part 4: the target's backend killed while the asynchronous COMMIT is under
# way (rolled back): the batch is sent again, nothing is lost.
# ---------------------------------------------------------------------------
ok(poll_until('kv worker up', 60, sub { eval { kv_same() } }), 'part 4: kv caught up');
tq('INSERT INTO public.flag VALUES (1)');
my $p4_off = -s $slog;
sq(q{INSERT INTO kv (id, v, n, w) SELECT i, 'p4' || i, i, 4 FROM generate_series(500000, 501499) i});
ok(poll_until('part 4: COMMIT sleeping', 60, sub {
	tq(q{SELECT count(*) FROM pg_stat_activity WHERE usename = 'loader' AND query = 'COMMIT' AND wait_event = 'PgSleep'}) eq '1' }),
	'part 4: the asynchronous COMMIT is under way');
tq(q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'loader' AND query = 'COMMIT' AND wait_event = 'PgSleep'});
tq('DELETE FROM public.flag');
ok(poll_until('part 4: rows arrive', 90, sub { eval { kv_same() } }), 'part 4: after the lost COMMIT, target equals source');
my $p4 = slurp_file($slog, $p4_off);
like($p4, qr/did not acknowledge batch/, 'part 4: the lost COMMIT was seen');
unlike($p4, qr/terminated by signal/, 'part 4: no worker crash');
is(stream_row($src, 'kv')->{last_error}, undef, 'part 4: kv no error');

done_testing();
