
# Progress and lag in egress_streams (rows_total_estimate, progress, eta,
# lag_seconds, retries, last_success_at) and exports in
# pg_stat_progress_copy.
#
# - A FULL_TABLE sync to an HTTP receiver that answers each batch late:
#   mid-sync the estimate is the table's size, progress is rows sent /
#   estimate, strictly between 0 and 1, and the eta lies ahead; at the
#   end progress is 1, the eta gone, last_success_at persisted.
# - An INCREMENTAL run: the estimate is the plan's (the new rows only).
# - A LOG_BASED stream: lag_seconds is 0 when caught up; while the
#   receiver is down it is now minus the commit time of the first change
#   not delivered, grows, and falls back to 0 once the receiver is back;
#   retries counts the failed deliveries exactly (three 503s: 3).
# - egress_export, one process and parallel: pg_stat_progress_copy shows
#   the COPY of every process (rows, bytes) while it runs.
# - A role sees the figures of its own streams only.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time);
use EgressTest;
use EgressHttp;

BAIL_OUT('npm packages of test/http are not installed (scripts/common.sh egress_npm_ci)')
  unless EgressHttp::node_ready();

my $node = create_node('progress', cdc => 1, conf => "pg_egress.max_workers = 4\n");
my $rcv = EgressHttp->start($node);

sub sql { return $node->safe_psql('postgres', $_[0]); }

# one row of egress_streams as a hash, selected columns cast to text
sub row
{
	my ($stream) = @_;
	return stream_row($node, $stream) // {};
}

sql(q{
CREATE TABLE big (id integer PRIMARY KEY, v text NOT NULL);
INSERT INTO big SELECT i, md5(i::text) FROM generate_series(1, 20000) i;
ANALYZE big;
});

# ---- FULL_TABLE: progress and eta mid-sync -------------------------------------
# each batch of 500 rows is answered after 300 ms: 40 batches, about 12 s
$rcv->fault('delay', 1000, ms => 300);
sql("SELECT egress_add_destination('h', " . sql_quote($rcv->url('/full'))
	  . q{, '{"retry_initial_interval": "100ms", "retry_max_interval": "200ms", "flush_interval": "100ms"}')});
my $t0 = sql('SELECT now()');
sql(q{SELECT egress_add_stream('full', 'big', 'FULL_TABLE', 'h', options => '{"batch_max_rows": 500}')});

my $mid;
ok( poll_until(
		'a mid-sync row with progress between 0 and 1',
		60,
		sub {
			my $r = row('full');
			return 0 unless ($r->{state} // '') eq 'syncing' && defined $r->{progress};
			return 0 unless $r->{rows_sent} >= 2000 && $r->{rows_sent} <= 15000;
			$mid = $r;
			return 1;
		}),
	'FULL_TABLE: a row mid-sync');
$mid //= {};
# ANALYZE made the estimate the table's size
is($mid->{rows_total_estimate}, 20000, 'mid-sync: rows_total_estimate is the table\'s row count');
cmp_ok(abs(($mid->{progress} // -1) - $mid->{rows_sent} / 20000), '<', 1e-9,
	'mid-sync: progress = rows acknowledged / estimate');
cmp_ok($mid->{progress} // 0, '>', 0, 'mid-sync: progress > 0');
cmp_ok($mid->{progress} // 1, '<', 1, 'mid-sync: progress < 1');
ok(defined $mid->{eta}, 'mid-sync: an eta');
is( sql(q{SELECT eta > now() AND eta < now() + interval '10 minutes' AND last_success_at IS NOT NULL
            AND retries = 0 FROM egress_streams WHERE name = 'full' AND eta IS NOT NULL}) || 't',
	't', 'mid-sync: the eta lies ahead (within minutes), a batch was acknowledged, no retry');

# two failures during the sync (then slow answers again, so that it is
# still running): the worker's retries count them
$rcv->fault('clear');
$rcv->fault('fail', 2, status => 503);
$rcv->fault('delay', 1000, ms => 300);
wait_stream_where($node, 'full', 'retries = 2 AND state = \'syncing\'', 60,
	'FULL_TABLE: the sync\'s two retries show while it runs');
$rcv->fault('clear');

wait_stream_state($node, 'full', 'synced', 120);
my $end = row('full');
is($end->{progress}, 1, 'after the sync: progress 1');
ok(!defined $end->{eta}, 'after the sync: no eta');
is($end->{rows_sent}, 20000, 'after the sync: every row sent');
is(sql(qq{SELECT last_success_at >= '$t0' AND last_success_at <= now() FROM egress.stream_state st
            JOIN egress.stream s ON s.id = st.stream_id WHERE s.name = 'full'}),
	't', 'after the sync: stream_state.last_success_at persisted');
is(sql(q{SELECT last_success_at = (SELECT last_success_at FROM egress.stream_state st JOIN egress.stream s
            ON s.id = st.stream_id WHERE s.name = 'full') FROM egress_streams WHERE name = 'full'}),
	't', 'egress_streams shows the persisted last_success_at once the worker is gone');

# ---- a parallel FULL_TABLE sync: the parts' rows count as they are acknowledged -------
# the coordinator reads half of the table: progress between 0.6 and 0.95
# needs the other part's rows while it runs
my $n0 = scalar($rcv->records('public-big'));
$rcv->fault('clear');
$rcv->fault('delay', 1000, ms => 300);
sql(q{SELECT egress_add_stream('par', 'big', 'FULL_TABLE', 'h', options => '{"batch_max_rows": 500, "parallel": 2}')});
my $pmid;
ok( poll_until(
		'a parallel sync with progress between 0.6 and 0.95',
		90,
		sub {
			my $r = row('par');
			return 0 unless ($r->{state} // '') eq 'syncing' && defined $r->{progress};
			return 0 unless $r->{progress} >= 0.6 && $r->{progress} <= 0.95;
			$pmid = $r;
			$pmid->{received} = scalar($rcv->records('public-big')) - $n0;
			return 1;
		}),
	'parallel sync: progress counts every part\'s acknowledged rows while it runs');
$pmid //= {};
is($pmid->{rows_total_estimate}, 20000, 'parallel sync: rows_total_estimate is the table\'s');
cmp_ok(($pmid->{progress} // 1) * 20000, '<=', ($pmid->{received} // 0) + 0.5,
	'parallel sync: the rows counted were received by the destination');
$rcv->fault('clear');
wait_stream_state($node, 'par', 'synced', 120);
is(row('par')->{progress}, 1, 'parallel sync: progress 1 at the end');

# ---- INCREMENTAL: the plan's estimate of the new rows -----------------------------
sql(q{
CREATE TABLE inc (id integer PRIMARY KEY, ts integer NOT NULL);
CREATE INDEX ON inc (ts);
INSERT INTO inc SELECT i, i FROM generate_series(1, 1000) i;
ANALYZE inc;
});
$rcv->fault('clear');
sql(q{SELECT egress_add_stream('inc', 'inc', 'INCREMENTAL', 'h', replication_key => 'ts',
        options => '{"batch_max_rows": 100, "interval": "1 hour"}')});
wait_stream_state($node, 'inc', 'synced', 60);
is(row('inc')->{progress}, 1, 'INCREMENTAL: progress 1 after the first run');
# 3000 new rows; the run's query is "ts >= $1 AND (ts > $1 OR (ts = $1
# AND id > $2)) ORDER BY ts, id": its estimate is the planner's for that
sql(q{INSERT INTO inc SELECT i, i FROM generate_series(1001, 4000) i; ANALYZE inc;});
my $plan_rows;
my $explain = sql(q{EXPLAIN (FORMAT JSON) SELECT id, ts FROM inc
    WHERE ts >= 1000 AND (ts > 1000 OR (ts = 1000 AND id > 1000)) ORDER BY ts, id});
($plan_rows) = $explain =~ /"Plan Rows":\s*(\d+)/;
cmp_ok($plan_rows, '>', 1000, "the planner expects $plan_rows rows");
$rcv->fault('delay', 1000, ms => 300);
sql(q{SELECT egress_sync_now('inc')});
my $imid;
ok( poll_until(
		'an INCREMENTAL run mid-way',
		60,
		sub {
			my $r = row('inc');
			return 0 unless ($r->{state} // '') eq 'syncing' && defined $r->{rows_total_estimate};
			return 0 unless $r->{rows_sent} >= 1200 && $r->{rows_sent} - 1000 < 0.9 * $plan_rows;
			$imid = $r;
			return 1;
		}),
	'INCREMENTAL: a row mid-run');
$imid //= {};
is($imid->{rows_total_estimate}, $plan_rows, 'mid-run: rows_total_estimate is the plan\'s estimate of the run');
my $run_rows = $imid->{rows_sent} - 1000;
cmp_ok(abs(($imid->{progress} // -1) - $run_rows / $plan_rows), '<', 1e-9,
	'mid-run: progress counts the run\'s rows, not the earlier runs\'');
# the run outgrows the estimate: the estimate becomes the rows sent, progress
# stays below 1 until the run ends, and there is no eta
if ($plan_rows < 2900)
{
	wait_stream_where($node, 'inc',
		"state = 'syncing' AND rows_sent - 1000 > $plan_rows AND rows_total_estimate = rows_sent - 1000 "
		  . 'AND progress = 0.99 AND eta IS NULL',
		60, 'INCREMENTAL: past the estimate: estimate = rows sent, progress 0.99, no eta');
}
$rcv->fault('clear');
wait_stream_where($node, 'inc', q{state = 'synced' AND rows_sent = 4000}, 120, 'INCREMENTAL: run done');
is(row('inc')->{progress}, 1, 'INCREMENTAL: progress 1 after the run');

# ---- LOG_BASED: lag_seconds and retries ------------------------------------------
my $rcv2 = EgressHttp->start($node, name => 'cdc');
sql(q{CREATE TABLE c (id integer PRIMARY KEY, v text)});
sql("SELECT egress_add_destination('hc', " . sql_quote($rcv2->url('/c'))
	  . q{, '{"retry_initial_interval": "100ms", "retry_max_interval": "500ms", "flush_interval": "100ms"}')});
sql(q{SELECT egress_add_stream('c', 'c', 'LOG_BASED', 'hc')});
wait_stream_state($node, 'c', 'streaming', 60);
sql(q{INSERT INTO c VALUES (1, 'a')});
ok(poll_until('the first change delivered', 60, sub { scalar($rcv2->records('public-c')) == 1 }),
	'LOG_BASED: a change is delivered');
wait_stream_where($node, 'c', 'lag_seconds = 0 AND retries = 0 AND last_success_at IS NOT NULL',
	30, 'LOG_BASED: caught up: lag 0, no retry, a success');
is(row('c')->{progress}, 1, 'LOG_BASED: progress 1 once streaming');

# three failed deliveries, then success: retries = 3 exactly
$rcv2->fault('fail', 3, status => 503);
sql(q{INSERT INTO c VALUES (2, 'b')});
ok(poll_until('the second change delivered', 60, sub { scalar($rcv2->records('public-c')) == 2 }),
	'LOG_BASED: delivered after three 503s');
wait_stream_where($node, 'c', 'retries = 3', 30, 'LOG_BASED: retries = 3 after three failed deliveries');

# the receiver goes down: the lag is the age of the first change not delivered
my $before = sql(q{SELECT last_success_at FROM egress_streams WHERE name = 'c'});
$rcv2->stop;
my $commit = sql(q{INSERT INTO c VALUES (3, 'c') RETURNING extract(epoch FROM now())});
wait_stream_where($node, 'c', 'lag_seconds > 2', 60, 'LOG_BASED: lag grows while the destination is down');
my ($lag1, $at1) = split /\|/,
  sql(q{SELECT lag_seconds, extract(epoch FROM clock_timestamp()) FROM egress_streams WHERE name = 'c'});
# commit time >= the transaction's now(): lag <= at - now(); commit is
# within a second of now() on any machine
cmp_ok($lag1, '<=', $at1 - $commit + 0.01, 'lag_seconds is at most now minus the change\'s transaction start');
cmp_ok($lag1, '>=', $at1 - $commit - 1, 'lag_seconds is now minus the change\'s commit time');
# more changes meanwhile do not make it younger; it keeps growing
sql(q{INSERT INTO c VALUES (4, 'd')});
wait_stream_where($node, 'c', "lag_seconds > $lag1 + 2", 60, 'LOG_BASED: the lag keeps growing during the outage');
my ($lag2, $at2) = split /\|/,
  sql(q{SELECT lag_seconds, extract(epoch FROM clock_timestamp()) FROM egress_streams WHERE name = 'c'});
cmp_ok($lag2, '>=', $at2 - $commit - 1, 'still counted from the first change not delivered');
is(sql(qq{SELECT last_success_at = '$before' FROM egress_streams WHERE name = 'c'}), 't',
	'no success during the outage');
cmp_ok(row('c')->{retries}, '>', 3, 'the outage\'s retries are counted');
$rcv2->restart;
ok(poll_until('the changes after the outage delivered', 90, sub { scalar($rcv2->records('public-c')) == 4 }),
	'LOG_BASED: delivered after the outage');
wait_stream_where($node, 'c', qq{lag_seconds = 0 AND last_success_at > '$before'}, 30,
	'LOG_BASED: the lag falls back to 0 after the outage, a new success');
is(sql(q{SELECT st.last_success_at IS NOT NULL FROM egress.stream_state st JOIN egress.stream s
           ON s.id = st.stream_id WHERE s.name = 'c'}), 't', 'LOG_BASED: last_success_at persisted');

# ---- LOG_BASED chunked backfill: progress of the chunks acknowledged ----------------
# On the destination of stream c, whose last decoded change (row 4) is
# old: the backfill's batches are no changes, their lag counts from when
# they were read, not from that change's commit.
ok(poll_until('the last change of c to be 6 s old', 30, sub { time - $commit > 6 }),
	'the last decoded change is old');
sql(q{
CREATE TABLE bf (id integer PRIMARY KEY, v text NOT NULL);
INSERT INTO bf SELECT i, md5(i::text) FROM generate_series(1, 10000) i;
ANALYZE bf;
});
$rcv2->fault('clear');
$rcv2->fault('delay', 1000, ms => 300);
my $bf_added = time;
sql(q{SELECT egress_add_stream('bf', 'bf', 'LOG_BASED', 'hc', options => '{"chunk_rows": 500, "batch_max_rows": 500}')});
my $bmid;
ok( poll_until(
		'a backfill mid-way with an eta',
		90,
		sub {
			my $r = row('bf');
			return 0 unless ($r->{state} // '') eq 'syncing' && defined $r->{eta};
			return 0 unless $r->{backfill_rows} >= 1000 && $r->{backfill_rows} <= 8000;
			$bmid = $r;
			$bmid->{at} = time;
			return 1;
		}),
	'backfill: a row mid-way, with an eta');
$bmid //= {};
is($bmid->{rows_total_estimate}, 10000, 'backfill: rows_total_estimate is the table\'s');
# the live count is at least the persisted one, at most a chunk ahead
my $bdone = ($bmid->{progress} // -1) * 10000;
ok($bdone >= $bmid->{backfill_rows} - 0.5 && $bdone <= $bmid->{backfill_rows} + 500.5,
	"backfill: progress ($bmid->{progress}) is the rows acknowledged ($bmid->{backfill_rows}) / estimate");
cmp_ok($bmid->{lag_seconds} // 1e9, '<=', $bmid->{at} - $bf_added + 1,
	'backfill: the lag of its batches counts from when they were read, not from the last change');
$rcv2->fault('clear');
wait_stream_state($node, 'bf', 'streaming', 120);
is(row('bf')->{progress}, 1, 'backfill: progress 1 once streaming');
wait_stream_where($node, 'c', 'lag_seconds = 0', 30, 'caught up again after the backfill');

# ---- what another role sees -------------------------------------------------------
sql(q{
CREATE ROLE alice LOGIN;
GRANT SELECT ON egress_streams TO alice;
GRANT EXECUTE ON FUNCTION egress_stream_activity(), egress_stream_progress() TO alice;
});
my ($ret, $out, $err) = query_as($node, 'alice',
	q{SELECT count(*) FROM egress_streams; SELECT count(*) FROM egress_stream_progress();});
is($ret, 0, 'a role with the grants reads egress_streams') or diag $err;
like($out, qr/^0\n0$/, 'it sees neither the streams nor the live figures of other roles');

# ---- exports in pg_stat_progress_copy ---------------------------------------------
my $dir = new_outdir($node, 'exp');
sql(q{CREATE TABLE ex AS SELECT i FROM generate_series(1, 8000) i});
for my $par (1, 2)
{
	my ($o, $e) = ('', '');
	my $call = $par == 1
	  ? "SELECT rows_uploaded FROM egress_export('SELECT i, pg_sleep(0.001) FROM ex', 'file://$dir/s.txt', '')"
	  : "SELECT rows_uploaded FROM egress_export('SELECT i, pg_sleep(0.001) FROM ex', 'file://$dir/p.txt', '', 2)";
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-At', '-d', $node->connstr('postgres') . " application_name=exporter$par", '-c', $call ],
		'>', \$o, '2>', \$e);
	my $seen = '';
	ok( poll_until(
			"export (parallel $par) in pg_stat_progress_copy",
			60,
			sub {
				# every process of the export: the caller's backend (its
				# application_name) and its part workers
				$seen = $node->safe_psql('postgres', qq{
SELECT count(*) || ',' || bool_and(c.command = 'COPY TO' AND c.type = 'PIPE' AND c.tuples_processed > 0
                                   AND c.bytes_processed >= 2 * c.tuples_processed)
  FROM pg_stat_progress_copy c JOIN pg_stat_activity a USING (pid)
 WHERE a.application_name = 'exporter$par' OR a.backend_type = 'pg_egress part'});
				return $seen eq "$par,true";
			}),
		"export, parallel $par: every process's COPY shows rows and bytes while it runs")
	  or diag "last seen: $seen";
	# the count goes up
	my $n1 = sql(q{SELECT coalesce(sum(tuples_processed), 0) FROM pg_stat_progress_copy});
	ok(poll_until('more rows', 60,
			sub { my $n = sql(q{SELECT coalesce(sum(tuples_processed), 0) FROM pg_stat_progress_copy}); $n > $n1 || $n == 0 }),
		"export, parallel $par: the rows processed grow");
	$h->finish;
	is($o, "8000\n", "export, parallel $par: all rows exported") or diag $e;
	is(sql(q{SELECT count(*) FROM pg_stat_progress_copy}), 0, "export, parallel $par: no progress row left after it");
}

done_testing();
