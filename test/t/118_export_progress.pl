
# egress_exports: running egress_export() calls with the planner's row
# estimate, rows and bytes done, progress and eta.
#
# Each export is held mid-way deterministically: its query calls gate(i),
# which waits for an advisory lock the test holds at given rows.
# - One process: the estimate is EXPLAIN's, rows_done the rows before the
#   gate, progress strictly between 0 and 1, the eta ahead.
# - parallel => 2: one row, the leader's, with the whole query's estimate
#   and the rows of both parts; also once the leader's own part is done and
#   it waits for the other.
# - Another role sees nothing (a member of pg_read_all_stats does), a plain
#   COPY is not an export, and the view is empty once the exports end.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use EgressTest;

my $node = create_node('exprog', conf => "pg_egress.max_workers = 4\n");

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE TABLE ex (i integer NOT NULL, v text NOT NULL);
INSERT INTO ex SELECT i, md5(i::text) FROM generate_series(1, 8000) i;
ANALYZE ex;
-- waits at the rows "stops" (by default one in each half of the table)
-- while the test holds advisory lock 118
CREATE FUNCTION gate(i integer, stops integer[] DEFAULT '{2000,6000}') RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
	IF i = ANY (stops) THEN
		PERFORM pg_advisory_lock_shared(118);
		PERFORM pg_advisory_unlock_shared(118);
	END IF;
	RETURN i;
END $$;
CREATE ROLE other LOGIN;
CREATE ROLE watcher LOGIN IN ROLE pg_read_all_stats;
});

my $query = 'SELECT i, gate(i), v FROM ex';
my $plan = sql("EXPLAIN (FORMAT JSON) $query");
my ($estimate) = $plan =~ /"Plan Rows": (\d+)/;
ok(defined $estimate && $estimate > 0, "the planner's estimate: $estimate");

# the lock, held by a session of its own until the test lets it go
my ($lo, $le) = ('', '');
my $locker = IPC::Run::start(
	[ 'psql', '-X', '-At', '-d', $node->connstr('postgres') . ' application_name=locker',
	  '-c', 'SELECT pg_advisory_lock(118), pg_sleep(600)' ],
	'>', \$lo, '2>', \$le);
ok( poll_until('the lock held', 60,
		sub { sql(q{SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 118 AND granted}) == 1 }),
	'the test holds the lock');

sub release
{
	sql(q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'locker'});
	$locker->finish;
}

my $dir = new_outdir($node, 'exp');
my %h;
my %out;
# 3: the leader's part (the first half) is not held, the other one is
my %q = (1 => $query, 2 => $query, 3 => q{SELECT i, gate(i, '{6000}'), v FROM ex});
for my $par (1, 2, 3)
{
	$out{$par} = '';
	my $call = "SELECT rows_uploaded FROM egress_export(" . sql_quote($q{$par})
	  . ", 'file://$dir/p$par.csv', 'format csv'" . ($par > 1 ? ', 2' : '') . ')';
	$h{$par} = IPC::Run::start(
		[ 'psql', '-X', '-At', '-d', $node->connstr('postgres') . " application_name=exporter$par", '-c', $call ],
		'>', \$out{$par}, '2>', \my $err);
}
# a plain COPY held at the same gate
my $copy = IPC::Run::start(
	[ 'psql', '-X', '-At', '-d', $node->connstr('postgres') . ' application_name=copier',
	  '-c', "COPY ($query) TO '/dev/null'" ],
	'>', \my $co, '2>', \my $ce);

# every process waits at its gate: the leaders of 1 and 2, the part
# workers of 2 and 3 and the COPY; 3's leader has written its part
my $waiting = q{SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 118 AND NOT granted};
ok(poll_until('five processes at the gate', 120, sub { sql($waiting) == 5 }),
	'the exports and the COPY wait mid-way')
  or diag sql('SELECT * FROM pg_stat_progress_copy');
ok( poll_until('the leader of 3 waits for its part', 60,
		sub { sql(q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'exporter3' AND backend_type = 'client backend' AND wait_event_type IS DISTINCT FROM 'Lock' AND wait_event IS NOT NULL}) == 1 }),
	'the leader of 3 waits for its other part');

is(sql('SELECT count(*) FROM pg_stat_progress_copy'), 6, 'six COPY commands, the leader of 3 still among them');
is( sql(q{SELECT c.command || ' ' || c.type || ' ' || (c.tuples_processed > 1999) || ' ' || (c.bytes_processed > 0)
  FROM pg_stat_progress_copy c JOIN pg_stat_activity a USING (pid)
 WHERE a.application_name = 'exporter3' AND a.backend_type = 'client backend'}),
	'COPY TO PIPE true true', "the waiting leader's entry keeps its COPY's figures");

# (part workers take their leader's settings, application_name included)
my $rows = sql(q{
SELECT string_agg(concat_ws('|', e.rows_total_estimate, e.rows_done, e.bytes_done > 0,
                            e.progress > 0 AND e.progress < 1,
                            round((e.rows_done::float8 / e.rows_total_estimate)::numeric, 6) = round(e.progress::numeric, 6),
                            e.eta > clock_timestamp(),
                            e.started_at <= clock_timestamp() AND e.started_at > clock_timestamp() - interval '10 min'),
                  ',' ORDER BY a.application_name)
  FROM egress_exports e JOIN pg_stat_activity a USING (pid)});
note "egress_exports: $rows";
my @r = split /,/, $rows;
is(scalar(@r), 3, 'three exports, the COPY not among them, the part worker summed under its leader')
  or diag $rows;
is($r[0], "$estimate|1999|t|t|t|t|t", 'one process: estimate, rows before the gate, progress, eta, start');

# parallel: the rows of both parts under the leader
my $parts = sql(q{
SELECT sum(c.tuples_processed)
  FROM pg_stat_progress_copy c JOIN pg_stat_activity a USING (pid)
 WHERE a.application_name = 'exporter2'});
my ($pest, $pdone, @rest) = split /\|/, ($r[1] // '');
is($pest, $estimate, "parallel: the whole query's estimate");
is($pdone, $parts, "parallel: rows_done is both parts' rows ($parts)");
cmp_ok($pdone, '>', 1999, 'parallel: the part worker has rows too');
is(join('|', @rest), 't|t|t|t|t', 'parallel: bytes, progress, eta, start');

# parallel, the leader's part done
$parts = sql(q{
SELECT sum(c.tuples_processed)
  FROM pg_stat_progress_copy c JOIN pg_stat_activity a USING (pid)
 WHERE a.application_name = 'exporter3'});
($pest, $pdone, @rest) = split /\|/, ($r[2] // '');
is($pest, $estimate, "parallel, leader waiting: the whole query's estimate");
is($pdone, $parts, "parallel, leader waiting: rows_done is both parts' rows ($parts)");
is(join('|', @rest), 't|t|t|t|t', 'parallel, leader waiting: bytes, progress, eta, start');

# visibility: PostgreSQL's own
my ($ret, $o, $e) = query_as($node, 'other', 'SELECT count(*) FROM egress_exports');
is("$ret|$o", '0|0', 'another role sees no export') or diag $e;
($ret, $o, $e) = query_as($node, 'watcher', 'SELECT count(*) FROM egress_exports');
is("$ret|$o", '0|3', 'a member of pg_read_all_stats sees them all') or diag $e;

release();
for my $par (1, 2, 3)
{
	$h{$par}->finish;
	is($out{$par}, "8000\n", "export $par: all rows");
}
$copy->finish;
is(sql('SELECT count(*) FROM egress_exports'), 0, 'no export left in the view');
is(sql('SELECT count(*) FROM pg_stat_progress_copy'), 0, 'no COPY left');

done_testing();
