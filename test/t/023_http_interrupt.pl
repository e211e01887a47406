
# A worker waiting on a slow HTTP receiver (a request the receiver never
# answers, under a long timeout) sleeps on the transfer's socket and its
# latch: it uses no CPU while it waits, and pg_terminate_backend ends it at
# once (the process is gone within two seconds), for a FULL_TABLE sync
# worker and for a CDC worker.  After the receiver answers again, every row
# arrives.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use EgressTest;
use EgressHttp;

BAIL_OUT('npm packages of test/http are not installed (scripts/common.sh egress_npm_ci)')
  unless EgressHttp::node_ready();

my $node = create_node('http_interrupt', cdc => 1);
my $rcv = EgressHttp->start($node);


sub hung_requests { return scalar grep { ($_->{status} // '') eq 'hang' } $rcv->requests; }

# Waits for the worker of $type to hang on the receiver, checks it sleeps,
# terminates it and checks it is gone promptly.
sub check_interrupt
{
	my ($type, $label, $hung_before) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;

	ok(poll_until("$label: a request hangs", 60, sub { hung_requests() > $hung_before }),
		"$label: the worker's request hangs at the receiver");
	my ($pid) = backend_pids($node, $type);
	ok(defined $pid, "$label: the worker runs");
	return unless defined $pid;

	# waiting, not polling: (almost) no CPU over two seconds
	my $hz = `getconf CLK_TCK` + 0 || 100;
	my ($c0, $w0) = (cpu_ticks($pid), wakeups($pid));
	usleep(2_000_000);
	my ($c1, $w1) = (cpu_ticks($pid), wakeups($pid));
	my $cpu_ms = (defined $c0 && defined $c1) ? ($c1 - $c0) * 1000 / $hz : -1;
	my $woke = (defined $w0 && defined $w1) ? $w1 - $w0 : -1;
	diag sprintf('%s: %.0f ms of CPU and %d wake-ups while waiting 2 s on the receiver',
		$label, $cpu_ms, $woke);
	ok($cpu_ms >= 0 && $cpu_ms <= 100, "$label: the waiting worker uses no CPU ($cpu_ms ms in 2 s)");
	# polling in 100 ms slices would wake it 20 times
	ok($woke >= 0 && $woke <= 6, "$label: the waiting worker sleeps until something happens ($woke wake-ups in 2 s)");
	is($node->safe_psql('postgres', "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $pid"),
		'Extension', "$label: the worker waits in an extension wait event");

	my $t0 = time;
	is($node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)"), 't',
		"$label: pg_terminate_backend returns");
	my $gone = poll_until("$label: worker $pid exits", 10, sub { !kill(0, $pid) });
	my $elapsed = time - $t0;
	diag sprintf('%s: the worker was gone %.2f s after pg_terminate_backend', $label, $elapsed);
	ok($gone && $elapsed < 2.0, sprintf('%s: the worker is gone within 2 s (%.2f s)', $label, $elapsed));
}

$node->safe_psql('postgres', q{
CREATE TABLE f (id integer PRIMARY KEY, v text NOT NULL);
INSERT INTO f SELECT i, md5(i::text) FROM generate_series(1, 100) i;
CREATE TABLE c (id integer PRIMARY KEY, v text NOT NULL);
});

my $slow = q{"timeout": "10min", "retry_initial_interval": "100ms", "retry_max_interval": "1s"};

# ---- FULL_TABLE sync worker -------------------------------------------------------
$node->safe_psql('postgres',
	"SELECT egress_add_destination('hf', " . sql_quote($rcv->url('/f')) . ", '{$slow}')");
$rcv->fault('hang', 1);
$node->safe_psql('postgres', q{SELECT egress_add_stream('sf', 'f', 'FULL_TABLE', 'hf')});
check_interrupt('pg_egress sync', 'FULL_TABLE', 0);
# the stream is run again by a new worker, which delivers everything
wait_stream_state($node, 'sf', 'synced', 120);
is_deeply([ sort { $a <=> $b } map { $_->{record}{id} } $rcv->records('public-f') ], [ 1 .. 100 ],
	'FULL_TABLE: every row arrives after the interruption');

# ---- CDC worker ---------------------------------------------------------------------
$node->safe_psql('postgres',
	"SELECT egress_add_destination('hc', " . sql_quote($rcv->url('/c')) . ", '{$slow}')");
$node->safe_psql('postgres', q{SELECT egress_add_stream('sc', 'c', 'LOG_BASED', 'hc')});
wait_stream_state($node, 'sc', 'streaming', 120);
my $before = hung_requests();
$rcv->fault('hang', 1);
$node->safe_psql('postgres', q{INSERT INTO c SELECT i, 'x' FROM generate_series(1, 50) i});
check_interrupt('pg_egress cdc', 'LOG_BASED', $before);
ok(poll_until('LOG_BASED: every change arrives after the restart', 120,
		sub { my %ids = map { $_->{record}{id} => 1 } $rcv->records('public-c'); scalar(keys %ids) == 50 }),
	'LOG_BASED: every change arrives after the interruption');

# the receiver still holds the hung request: end it here, not at global
# destruction (where its harness may already be gone and it would outlive
# the test)
$rcv->stop;
done_testing();
