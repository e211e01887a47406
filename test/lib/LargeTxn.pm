# The test of one large transaction on a LOG_BASED stream, shared by
# 009_cdc_large_txn.pl (1,000,000 wide rows) and 076_cdc_10m_txn.pl
# (10,000,000 narrow rows): exactly N RECORDs (each id once), batches of at
# most batch_max_rows cut inside the transaction, and the CDC worker's
# memory bounded while it works (RssAnon of /proc/<pid>/status under
# 100 MB, sampled every 100 ms).  Counts use a regex on the raw lines:
# decoding millions of lines with JSON::PP would take minutes.
package LargeTxn;

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use IPC::Run ();
use EgressTest;
use Exporter 'import';
our @EXPORT = qw(large_txn_test);

sub status_kb
{
	my ($p) = @_;
	open(my $fh, '<', "/proc/$p/status") or return ();
	my %s;
	while (<$fh>)
	{
		$s{$1} = $2 if /^(RssAnon|VmRSS|VmHWM|RssFile|RssShmem):\s+(\d+) kB/;
	}
	close $fh;
	return %s;
}

# Arguments: node, rows, batch, type (of column v), value_sql (v from i),
# record_re (captures id and v), value_ok (id, v -> bool), value_desc,
# deadline (seconds).
sub large_txn_test
{
	my (%a) = @_;
	my ($node, $N, $BATCH) = @a{qw(node rows batch)};
	my $LIMIT_KB = 100 * 1024;
	(my $NS = $N) =~ s/(\d)(?=(\d{3})+$)/$1,/g;

	my $out = new_outdir($node, 'cdc');
	my $log_start = -s $node->logfile;

	$node->safe_psql('postgres', "CREATE TABLE big (id bigint PRIMARY KEY, v $a{type} NOT NULL)");
	add_destination($node, 'cdc', $out);
	$node->safe_psql('postgres',
		qq{SELECT egress_add_stream('big', 'big', method => 'LOG_BASED', destination => 'cdc', options => '{"batch_max_rows": $BATCH}')}
	);
	wait_stream_state($node, 'big', 'streaming');

	my @pids = cdc_worker_pids($node);
	is(scalar(@pids), 1, 'one CDC worker');
	my $pid = $pids[0];

	my %base = status_kb($pid);
	diag "CDC worker $pid before: " . join(', ', map { "$_ $base{$_} kB" } sort keys %base);

	# The INSERT runs in the background: the worker decodes its WAL (into the
	# reorder buffer) while it is written, so sampling starts now.
	my $t0 = time;
	my ($ins_out, $ins_err) = ('', '');
	my $ins = IPC::Run::start(
		[
			$node->installed_command('psql'), '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-c',
			"INSERT INTO big SELECT i, $a{value_sql} FROM generate_series(1, $N) i"
		],
		'<', '/dev/null', '>', \$ins_out, '2>', \$ins_err);

	# Sample memory every 100 ms until the INSERT committed and the stream has
	# confirmed it; ask the server every ~0.5 s.
	my (%max, $samples, $last_row, $target, $target_int, $t1);
	my $next_q = 0;
	my $done = 0;
	my $deadline = time + $a{deadline};
	while (time < $deadline)
	{
		my %s = status_kb($pid);
		if (%s)
		{
			$samples++;
			foreach my $k (keys %s) { $max{$k} = $s{$k} if !defined $max{$k} || $s{$k} > $max{$k}; }
		}
		eval { $ins->pump_nb } if !defined $target && $ins->pumpable;
		if (!defined $target && !$ins->pumpable)
		{
			$ins->finish;
			is($ins->result(0), 0, "the $NS-row INSERT committed") or diag $ins_err;
			diag sprintf('the INSERT took %.1f s', time - $t0);
			$t1 = time;
			$target = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
			$target_int = lsn_int($target);
		}
		if (defined $target && time >= $next_q)
		{
			$next_q = time + 0.5;
			my ($via, $row) = caught_up($node, 'big', $target_int);
			$last_row = $row if $row;
			if (defined $via)
			{
				diag "caught up via $via";
				$done = 1;
				last;
			}
		}
		usleep(100_000);
	}
	$target //= '(the INSERT did not finish)';
	ok($done, "the stream confirmed the INSERT (up to $target)")
	  or diag 'last egress_streams row: ' . join(', ', map { "$_=" . ($last_row->{$_} // 'null') } sort keys %{ $last_row // {} });
	diag sprintf('caught up %.1f s after the commit; %d samples', time - ($t1 // $t0), $samples // 0);
	diag "CDC worker $pid maxima while working: " . join(', ', map { "$_ $max{$_} kB" } sort keys %max);
	ok(kill(0, $pid), 'the same CDC worker is still running (no crash, no restart)');
	ok(defined $max{RssAnon}, 'RssAnon sampled');
	cmp_ok($max{RssAnon} // 0, '<', $LIMIT_KB, "RssAnon of the CDC worker stayed under 100 MB (max $max{RssAnon} kB)");

	ok(poll_until('no temporary files', 30, sub { !tmp_files($out) }), 'no temporary files remain');
	my $tc = time;

	# One pass over the change files: RECORD lines of public-big per file, and
	# each id exactly once (a bit vector; ids found by a regex on the raw line).
	my ($records, $files, $maxfile, $bits, $dups, $bad) = (0, 0, 0, '', 0, 0);
	foreach my $name (grep { is_cdc_name($_) } list_dir($out))
	{
		open(my $fh, '<:raw', "$out/$name") or die "could not open $out/$name: $!";
		my $c = 0;
		while (my $line = <$fh>)
		{
			next unless $line =~ /"type"\s*:\s*"RECORD"/ && $line =~ /"stream"\s*:\s*"public-big"/;
			$c++;
			if ($line =~ $a{record_re} && $a{value_ok}->($1, $2))
			{
				$dups++ if vec($bits, $1, 1);
				vec($bits, $1, 1) = 1;
			}
			else { $bad++; }
		}
		close $fh;
		$files++;
		$records += $c;
		$maxfile = $c if $c > $maxfile;
	}
	is($records, $N, "exactly $NS RECORDs of public-big in the change files");
	cmp_ok($maxfile, '<=', $BATCH, "no change file holds more than batch_max_rows records (max $maxfile, $files files)");
	cmp_ok($files, '>=', $N / $BATCH, "the transaction was cut into batches ($files files)");
	is($bad, 0, "every RECORD starts with \"id\" and \"v\" ($a{value_desc})");
	is($dups, 0, 'no id twice');
	my $missing = 0;
	foreach my $i (1 .. $N) { $missing++ unless vec($bits, $i, 1); }
	is($missing, 0, "every id 1..$NS present");
	diag sprintf('counting took %.1f s', time - $tc);

	no_crash_since($node, $log_start, 'no server process crashed');
}

1;
