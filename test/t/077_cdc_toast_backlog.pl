
# A backlog of UPDATEs that leave a large TOASTed column unchanged, under
# REPLICA IDENTITY DEFAULT: the WAL lacks the column, so every such row is
# deferred and read again by primary key after decoding.  The worker is held
# up (its bookmark update waits for a row lock the test holds) while the
# backlog is written, so that one decoding round finds all of it.  The
# deferred rows must stay bounded (they are resolved once they pass a limit,
# and each re-read row is freed before the next): the CDC worker's RssAnon
# stays under 64 MB, while the backlog's unchanged values add up to
# hundreds of MB.  Then more UPDATEs run while the worker reads rows again
# (their older versions are pruned meanwhile).  Last, one transaction
# updates every row and inserts 600,000 more: decoding cannot stop inside
# it, so what waits behind the deferred rows goes to a temporary file; the
# worker's RssAnon stays under 64 MB then too.  Every update arrives once,
# with the right values.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use Digest::MD5 qw(md5_hex);
use IPC::Run ();
use EgressTest;

my $ROWS = 3000;
my $UPDATES = 10;             # transactions, each updating every row
my $LATER = 30;               # ... and as many again while the worker decodes
my $INSERTS = 600_000;        # behind deferred rows in one transaction
my $BIG = 6000;               # bytes of the unchanged TOASTed value
my $LIMIT_KB = 64 * 1024;

my $node = create_node('cdc_toast', cdc => 1, conf => "pg_egress.max_slot_lag = 0\n");
my $out = new_outdir($node, 'toast');
my $log_start = -s $node->logfile;

# big: incompressible enough and stored out of line (STORAGE EXTERNAL)
$node->safe_psql(
	'postgres', qq{
CREATE TABLE tb (id int PRIMARY KEY, n int NOT NULL, big text NOT NULL);
ALTER TABLE tb ALTER big SET STORAGE EXTERNAL;
INSERT INTO tb SELECT i, 0,
  substr(repeat(md5(i::text) || md5((i + 1)::text), $BIG / 64 + 1), 1, $BIG)
  FROM generate_series(1, $ROWS) i;
CREATE TABLE release_flag (x int);
});
is($node->safe_psql('postgres', q{SELECT relreplident FROM pg_class WHERE oid = 'tb'::regclass}),
	'd', 'REPLICA IDENTITY DEFAULT');
ok($node->safe_psql('postgres',
		q{SELECT pg_total_relation_size(reltoastrelid) FROM pg_class WHERE oid = 'tb'::regclass}) > $ROWS * $BIG,
	'the big values are in the TOAST table');

add_destination($node, 'toast', $out);
$node->safe_psql('postgres',
	q{SELECT egress_add_stream('tb', 'tb', method => 'LOG_BASED', destination => 'toast')});
wait_stream_state($node, 'tb', 'streaming');
my ($pid) = cdc_worker_pids($node);
ok($pid, 'a CDC worker');

# Hold the stream's egress.stream_state row: the worker's next bookmark
# update waits for it, and decoding with it.
my $locker_script = q{
BEGIN;
SELECT 1 FROM egress.stream_state FOR UPDATE;
DO $$ BEGIN WHILE NOT EXISTS (SELECT 1 FROM release_flag) LOOP PERFORM pg_sleep(0.05); END LOOP; END $$;
COMMIT;
};
my ($lout, $lerr) = ('', '');
my $locker = IPC::Run::start(
	[ $node->installed_command('psql'), '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-c', $locker_script ],
	'<', '/dev/null', '>', \$lout, '2>', \$lerr);
ok(poll_until('the lock is held', 30,
		sub {
			$node->safe_psql('postgres',
				q{SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'stream_state' AND l.mode = 'RowShareLock' AND l.granted}) ne '0';
		}),
	'the test holds the stream_state rows');

# One change, so that the worker sends a batch and then waits for the lock.
$node->safe_psql('postgres', 'UPDATE tb SET n = 0 WHERE id = 1');
ok(poll_until('the CDC worker waits for the lock', 60,
		sub { $node->safe_psql('postgres', "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $pid") eq 'Lock' }),
	'the CDC worker is held up');

# The backlog: $UPDATES transactions, each updating n of every row.
$node->safe_psql('postgres', "UPDATE tb SET n = $_") foreach (1 .. $UPDATES);
my $target = lsn_int($node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()'));
my $unchanged_mb = $ROWS * $UPDATES * $BIG / (1024 * 1024);
diag sprintf('backlog: %d updated rows carrying %.0f MB of unchanged TOASTed values', $ROWS * $UPDATES, $unchanged_mb);

sub rss_anon_kb
{
	open(my $fh, '<', "/proc/$pid/status") or return undef;
	while (<$fh>) { return $1 if /^RssAnon:\s+(\d+) kB/; }
	return undef;
}
my $before = rss_anon_kb();

# Let it go; sample its memory until it has delivered the backlog.
$node->safe_psql('postgres', 'INSERT INTO release_flag VALUES (1)');
$locker->finish;
is($locker->result(0), 0, 'the lock was released') or diag $lerr;
my $max = $before;
my $t0 = time;
my $next_q = 0;
my $done = 0;
while (time < $t0 + 300)
{
	my $r = rss_anon_kb();
	last unless defined $r;
	$max = $r if $r > $max;
	if (time >= $next_q)
	{
		$next_q = time + 0.5;
		my ($via) = caught_up($node, 'tb', $target);
		if ($via)
		{
			$done = 1;
			last;
		}
	}
	usleep(100_000);
}
ok($done, 'the backlog was delivered');
diag sprintf('delivered in %.1f s; CDC worker RssAnon %d kB before, max %d kB', time - $t0, $before, $max);
ok(kill(0, $pid), 'the same CDC worker is still running');
cmp_ok($max, '<', $LIMIT_KB, "RssAnon of the CDC worker stayed under 64 MB (max $max kB)");

# Then more while the worker decodes (no hold-up): rows are read again
# while later UPDATEs of them run and prune their older versions.  One
# client: each transaction sets n of every row one higher.
my $pb = start_pgbench($node, 'toast_upd', "UPDATE tb SET n = n + 1;\n", '-c', '1', '-t', $LATER);
ok(finish_pgbench($pb), "$LATER more UPDATE transactions");
wait_caught_up($node, 'tb', 120);

# Last, one transaction: every row updated (deferred), then many INSERTs
# whose output must wait behind those rows.  Decoding cannot stop inside a
# transaction: past the limit, what waits goes to a temporary file.
my $t_one = time;
$node->safe_psql('postgres',
	"BEGIN; UPDATE tb SET n = n + 1; INSERT INTO tb SELECT i, 0, 'ab' FROM generate_series(100001, 100000 + $INSERTS) i; COMMIT;");
$target = lsn_int($node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()'));
my $max_one = $before;
$done = 0;
$next_q = 0;
while (time < $t_one + 300)
{
	my $r = rss_anon_kb();
	last unless defined $r;
	$max_one = $r if $r > $max_one;
	if (time >= $next_q)
	{
		$next_q = time + 0.5;
		my ($via) = caught_up($node, 'tb', $target);
		if ($via)
		{
			$done = 1;
			last;
		}
	}
	usleep(100_000);
}
ok($done, 'the one large transaction was delivered');
diag sprintf('one transaction of %d deferred rows and %d inserts: delivered in %.1f s, RssAnon max %d kB',
	$ROWS, $INSERTS, time - $t_one, $max_one);
cmp_ok($max_one, '<', $LIMIT_KB, "RssAnon of the CDC worker stayed under 64 MB during it (max $max_one kB)");

# Every (id, n) once, with the unchanged value of big as it is in the table.
my %want = map { my ($i, $h) = split /\|/; ($i => $h) }
  split /\n/, $node->safe_psql('postgres', 'SELECT id, md5(big) FROM tb');
my (%seen, $dups, $bad, $records, $inserted);
($dups, $bad, $records, $inserted) = (0, 0, 0, 0);
foreach my $name (grep { is_cdc_name($_) } list_dir($out))
{
	open(my $fh, '<:raw', "$out/$name") or die "could not open $out/$name: $!";
	while (my $line = <$fh>)
	{
		next unless $line =~ /"type"\s*:\s*"RECORD"/ && $line =~ /"stream"\s*:\s*"public-tb"/;
		if ($line =~ /"record"\s*:\s*\{\s*"id"\s*:\s*(\d+)\s*,\s*"n"\s*:\s*(\d+)\s*,\s*"big"\s*:\s*"([0-9a-f]*)"/)
		{
			my ($id, $n, $big) = ($1, $2, $3);
			if ($id > 100000)
			{
				$inserted++;
				$bad++ unless $n == 0 && $big eq 'ab';
				next;
			}
			next if $n == 0;    # the change that held the worker up
			$records++;
			$dups++ if $seen{"$id:$n"}++;
			$bad++ unless defined $want{$id} && md5_hex($big) eq $want{$id};
		}
		else
		{
			$bad++;
		}
	}
	close $fh;
}
is($records, $ROWS * ($UPDATES + $LATER + 1), 'every update delivered');
is($inserted, $INSERTS, 'every insert of the large transaction delivered');
is($dups, 0, 'none twice');
is($bad, 0, 'each with the unchanged TOASTed value');
my $missing = 0;
foreach my $id (1 .. $ROWS)
{
	foreach my $n (1 .. $UPDATES + $LATER + 1) { $missing++ unless $seen{"$id:$n"}; }
}
is($missing, 0, 'no (id, n) missing');

no_crash_since($node, $log_start, 'no server process crashed');
$node->stop;
done_testing();
