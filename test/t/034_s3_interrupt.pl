
# A worker whose S3 upload waits on a slow store (every PutObject held by
# the test server) sleeps on the transfer's socket and its latch: no CPU
# while it waits, and pg_terminate_backend ends it at once (gone within two
# seconds).  An export waiting the same way stops at pg_cancel_backend at
# once.  Once the store answers again the stream delivers everything.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time usleep);
use EgressTest;
use S3Server;

my $node = create_node('s3_interrupt', cdc => 1);
my $s3 = S3Server->start($node->basedir . '/s3', 'lake');
my $endpoint = $s3->endpoint;
$node->append_conf('postgresql.conf', qq{
pg_egress.s3_endpoint = '$endpoint'
pg_egress.s3_access_key_id = 'S3RVER'
pg_egress.s3_secret_access_key = 'S3RVER'
});
$node->reload;


# CPU (ms) used and wake-ups over two seconds; polling in 50 ms slices
# would wake the process 40 times
sub idle_check
{
	my ($pid, $label) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $hz = `getconf CLK_TCK` + 0 || 100;
	my ($c0, $w0) = (cpu_ticks($pid), wakeups($pid));
	usleep(2_000_000);
	my ($c1, $w1) = (cpu_ticks($pid), wakeups($pid));
	my $cpu = (defined $c0 && defined $c1) ? ($c1 - $c0) * 1000 / $hz : -1;
	my $woke = (defined $w0 && defined $w1) ? $w1 - $w0 : -1;
	diag sprintf('%s: %.0f ms of CPU and %d wake-ups while waiting 2 s on the store',
		$label, $cpu, $woke);
	ok($cpu >= 0 && $cpu <= 100, "$label: the waiting process uses no CPU ($cpu ms in 2 s)");
	ok($woke >= 0 && $woke <= 6, "$label: the waiting process sleeps until something happens ($woke wake-ups in 2 s)");
}

sub puts_seen { return $s3->state->{ops}{PutObject} // 0; }

$node->safe_psql('postgres', q{
CREATE TABLE t (id int PRIMARY KEY, v text);
INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g;
SELECT egress_add_destination('lake', 's3://lake/singer/');
});

# ---- a sync worker held by the store ---------------------------------------------------
# held 20 s: longer than the checks, short enough for the worker restarted
# meanwhile (whose upload is held too) to finish soon after
$s3->delay('PutObject', 20_000);
my $before = puts_seen();
$node->safe_psql('postgres', q{SELECT egress_add_stream('st', 't', 'FULL_TABLE', 'lake')});
ok(poll_until('a PutObject is held', 60, sub { puts_seen() > $before }),
	'sync: the upload reaches the store and is held');
my ($pid) = backend_pids($node, 'pg_egress sync');
ok(defined $pid, 'sync: the worker runs');
idle_check($pid, 'sync');
my $t0 = time;
is($node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)"), 't',
	'sync: pg_terminate_backend returns');
my $gone = poll_until("worker $pid exits", 10, sub { !kill(0, $pid) });
my $elapsed = time - $t0;
diag sprintf('sync: the worker was gone %.2f s after pg_terminate_backend', $elapsed);
ok($gone && $elapsed < 2.0, sprintf('sync: the worker is gone within 2 s (%.2f s)', $elapsed));

# ---- an export held by the store: cancel -------------------------------------------------
my ($in, $o, $e) = ('', '', '');
my $h = IPC::Run::start(
	[ 'psql', '-XAtq', '-d', $node->connstr('postgres') . ' application_name=exporter',
	  '-c', q{SELECT rows_uploaded FROM egress_export('SELECT * FROM t', 's3://lake/x/held.csv', 'format csv')} ],
	\$in, \$o, \$e);
$before = puts_seen();
ok(poll_until('the export PutObject is held', 60, sub { puts_seen() > $before }),
	'export: the upload reaches the store and is held');
my ($epid) = split /\n/, $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE application_name = 'exporter'});
idle_check($epid, 'export');
$t0 = time;
$node->safe_psql('postgres', "SELECT pg_cancel_backend($epid)");
$h->finish;
$elapsed = time - $t0;
like($e, qr/canceling statement due to user request/, 'export: the export is canceled');
diag sprintf('export: canceled %.2f s after pg_cancel_backend', $elapsed);
ok($elapsed < 2.0, sprintf('export: canceled within 2 s (%.2f s)', $elapsed));

# ---- the store answers again: everything arrives -------------------------------------------
$s3->delay('PutObject', 0);
wait_stream_state($node, 'st', 'synced', 120);
my @keys = grep { m{^singer/} } $s3->keys('lake');
ok(@keys >= 1, 'sync: the batch objects are stored once the store answers');

done_testing();
