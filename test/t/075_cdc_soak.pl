
# Soak: a LOG_BASED stream to a file destination under a steady load of
# single-row transactions (~1,500/s from pgbench --rate), with batches cut
# every 100 ms (pg_egress.flush_interval), for two minutes.  After a 20 s
# warm-up the CDC worker's anonymous memory (RssAnon of /proc/<pid>/status)
# must not grow by 512 kB or more: per-batch or per-transaction memory that
# outlives its batch shows up here (about a thousand batches).
#
# The memory contexts of the worker are logged (pg_log_backend_memory_contexts)
# at the start and the end of the measured period; the contexts that grew are
# printed with diag, which points at the allocation that is kept.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use EgressTest;

my $RATE = 1500;
my $DURATION = 120;
my $WARMUP = 20;
my $LIMIT_KB = 512;

my $node = create_node(
	'cdc_soak',
	cdc => 1,
	conf => "pg_egress.flush_interval = '100ms'\nlog_min_messages = log\n");
my $out = new_outdir($node, 'soak');
my $log_start = -s $node->logfile;

$node->safe_psql('postgres',
	'CREATE TABLE soak (id bigserial PRIMARY KEY, v text NOT NULL, t timestamptz NOT NULL DEFAULT now())');
add_destination($node, 'soak', $out);
$node->safe_psql('postgres',
	q{SELECT egress_add_stream('soak', 'soak', method => 'LOG_BASED', destination => 'soak')});
wait_stream_state($node, 'soak', 'streaming');

my @pids = cdc_worker_pids($node);
is(scalar(@pids), 1, 'one CDC worker');
my $pid = $pids[0];

sub rss_anon_kb
{
	my ($p) = @_;
	open(my $fh, '<', "/proc/$p/status") or return undef;
	my $v;
	while (<$fh>)
	{
		if (/^RssAnon:\s+(\d+) kB/)
		{
			$v = $1;
			last;
		}
	}
	close $fh;
	return $v;
}

# The memory contexts of the worker as logged from a log offset on:
# name => [total bytes, number of contexts].
sub contexts_logged
{
	my ($offset) = @_;
	my ($ctx, $ok);
	poll_until(
		'the memory context dump in the server log',
		30,
		sub {
			my $log = slurp_file($node->logfile, $offset);
			return 0 unless $log =~ /\[$pid\][^\n]*Grand total/ || $log =~ /Grand total/;
			$ctx = {};
			foreach my $line (split /\n/, $log)
			{
				next unless $line =~ /level: \d+; ([^:]+(?:: [^;]*)?): (\d+) total in \d+ blocks;.*; (\d+) used/;
				my ($name, $total, $used) = ($1, $2, $3);
				$name =~ s/: .*$//;    # the identifier (a relation name...) varies
				$ctx->{$name}[0] += $total;
				$ctx->{$name}[1]++;
				$ctx->{$name}[2] += $used;
			}
			$ok = 1;
			return 1;
		});
	return $ok ? $ctx : {};
}

sub dump_contexts
{
	my $offset = -s $node->logfile;
	$node->safe_psql('postgres', "SELECT pg_log_backend_memory_contexts($pid)");
	return contexts_logged($offset);
}

# The load: one single-row INSERT per transaction at a fixed rate.
my $pb = start_pgbench($node, 'soak',
	"INSERT INTO soak (v) VALUES (md5(random()::text));\n",
	'-c', '4', '-j', '2', '--rate', $RATE, '-T', $DURATION);
my $t0 = time;

my ($base, $base_ctx, $max, @trace);
my $next_trace = $t0;
while ($pb->{h}->pumpable && time < $t0 + $DURATION + 60)
{
	eval { $pb->{h}->pump_nb };
	my $now = time;
	my $rss = rss_anon_kb($pid);
	last unless defined $rss;
	if (!defined $base && $now - $t0 >= $WARMUP)
	{
		$base = $rss;
		$base_ctx = dump_contexts();
		$rss = rss_anon_kb($pid);
		diag "after ${WARMUP} s of warm-up: RssAnon $base kB";
	}
	$max = $rss if defined $base && (!defined $max || $rss > $max);
	if ($now >= $next_trace)
	{
		push @trace, sprintf('%3d s %6d kB', $now - $t0, $rss);
		$next_trace += 10;
	}
	usleep(250_000);
}
ok(finish_pgbench($pb), 'pgbench ran to the end');
my $elapsed = time - $t0;
my ($tps) = ${ $pb->{out} } =~ /tps = ([\d.]+)/;
diag sprintf('pgbench: %s transactions/s over %.0f s', $tps // '?', $elapsed);

wait_caught_up($node, 'soak', 120);
my $final = rss_anon_kb($pid);
my $end_ctx = dump_contexts();
ok(kill(0, $pid), 'the same CDC worker is still running (no restart)');
ok(defined $base && defined $final, 'RssAnon sampled after the warm-up and at the end');
$base //= 0;
$final //= 0;
my $growth = $final - $base;
diag "CDC worker RssAnon over time: " . join('; ', @trace);
diag "RssAnon growth after the warm-up: $growth kB ($base kB -> $final kB, max $max kB)";

# Contexts that grew, largest growth first.
my %names = map { $_ => 1 } (keys %$base_ctx, keys %$end_ctx);
my @grew;
foreach my $n (keys %names)
{
	my $b = $base_ctx->{$n} // [ 0, 0, 0 ];
	my $e = $end_ctx->{$n} // [ 0, 0, 0 ];
	push @grew, [ $n, $e->[0] - $b->[0], $b, $e ]
	  if $e->[0] != $b->[0] || $e->[1] != $b->[1] || ($e->[2] // 0) != ($b->[2] // 0);
}
foreach my $g (sort { $b->[1] <=> $a->[1] } @grew)
{
	diag sprintf('context %-32s %+8d bytes total (%d in %d -> %d in %d), used %+d',
		$g->[0], $g->[1], $g->[2][0], $g->[2][1], $g->[3][0], $g->[3][1],
		($g->[3][2] // 0) - ($g->[2][2] // 0));
}

cmp_ok($growth, '<', $LIMIT_KB,
	"RssAnon of the CDC worker grew less than $LIMIT_KB kB after the warm-up (grew $growth kB)");

# Everything inserted was delivered, once.
my $rows = $node->safe_psql('postgres', 'SELECT count(*) FROM soak');
my ($records, $files) = count_records_raw($out, 'public-soak');
is($records, $rows, "every inserted row delivered once ($rows rows, $files change files)");
cmp_ok($files, '>', 300, 'batches were cut at the flush interval (hundreds of files)');

no_crash_since($node, $log_start, 'no server process crashed');
$node->stop;
done_testing();
