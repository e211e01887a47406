
# Nothing lost across crashes of a LOG_BASED stream: under continuous
# writes, kill -9 of the CDC worker, then an immediate stop and start of
# the server, each in the middle of the change stream.  After the writer
# finishes and the stream caught up, what a Singer target would hold equals
# the table.  Every change RECORD carries its commit LSN (debug_lsn), and
# re-sent records (same key, same commit LSN) are few: at most the
# unacknowledged batches (batch_max_rows 500).

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run ();
use EgressTest;

my $node = create_node('cdc_crash', cdc => 1);
my $out = new_outdir($node, 'cdc');
my $BATCH = 500;

$node->safe_psql(
	'postgres', q{
CREATE TABLE t (id integer PRIMARY KEY, v text NOT NULL, n integer NOT NULL DEFAULT 0);
INSERT INTO t SELECT i, md5(i::text), 0 FROM generate_series(1, 5000) i;
});
add_destination($node, 'cdc', $out);
$node->safe_psql('postgres',
	qq{SELECT egress_add_stream('s', 't', method => 'LOG_BASED', destination => 'cdc', options => '{"debug_lsn": true, "batch_max_rows": $BATCH}')}
);
wait_stream_state($node, 's', 'streaming');

# The writer: short bounded pgbench runs in a loop, so that it carries on
# after the crashes (which end its connections), until told to stop.
# Every statement is its own transaction: one change per transaction.
my $script_file = write_file($node->basedir . '/writer.pgbench', <<'PGB');
\set a random(1, 8000)
\set b random(1, 5000)
\set c random(1, 5000)
INSERT INTO t (id, v, n) VALUES (:a, md5(random()::text), 1) ON CONFLICT (id) DO UPDATE SET v = excluded.v, n = t.n + 1;
UPDATE t SET v = md5(random()::text), n = n + 1 WHERE id = :b;
DELETE FROM t WHERE id = :c;
PGB
my $stop = $node->basedir . '/stop_writer';
my $wlog = $node->basedir . '/writer.log';
my $pgbench = $node->installed_command('pgbench');
my $loop = qq{
runs=0; ok=0
for i in \$(seq 1 300); do
	[ -e '$stop' ] && break
	runs=\$((runs + 1))
	if '$pgbench' -n -f '$script_file' -c 2 -t 100 -R 400 "\$1" >>'$wlog' 2>&1; then ok=\$((ok + 1)); else sleep 0.3; fi
done
echo "runs=\$runs ok=\$ok" >>'$wlog'
};
my $writer = IPC::Run::start([ 'bash', '-c', $loop, 'writer', $node->connstr('postgres') ],
	'<', '/dev/null', '>', '/dev/null', '2>', '/dev/null');

sub ncdc
{
	return scalar(grep { is_cdc_name($_) } list_dir($out));
}

sub wait_files
{
	my ($n, $what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $base = ncdc();
	ok(poll_until("$n new change files ($what)", undef, sub { ncdc() >= $base + $n }),
		"$what: $n more change files written under the writes");
}

wait_files(5, 'before the crashes');

# Crash while a batch is being written: wait until a temporary file exists.
sub batch_open
{
	my ($what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	ok(poll_until("an open batch ($what)", 30, sub { scalar(tmp_files($out)) > 0 }),
		"$what: a batch is open (temporary file present)");
}

# kill -9 of the CDC worker
my @pids = cdc_worker_pids($node);
is(scalar(@pids), 1, 'one CDC worker') or diag "pids: @pids";
my $pid = $pids[0];
my $log_offset = -s $node->logfile;
batch_open('kill -9');
ok(kill('KILL', $pid), "sent SIGKILL to the CDC worker $pid");
ok( poll_until(
		'a new CDC worker', undef,
		sub {
			my @p = cdc_worker_pids($node);
			return @p == 1 && $p[0] != $pid;
		}),
	'a new CDC worker runs after kill -9');
ok($node->log_contains(qr/\(PID $pid\) was terminated by signal 9/, $log_offset),
	'the postmaster saw the CDC worker die of signal 9');
wait_files(5, 'after kill -9 of the CDC worker');

# immediate stop and start of the server
batch_open('immediate stop');
$node->stop('immediate');
$node->start;
wait_files(5, 'after an immediate stop and start');

# stop the writer, catch up
write_file($stop, '');
eval { $writer->finish; };
diag 'writer: ' . (slurp_file($wlog) =~ /(runs=\d+ ok=\d+)/ ? $1 : '?');
wait_caught_up($node, 's');
is(stream_row_wait($node, 's')->{state}, 'streaming', 'the stream is streaming');

ok(poll_until('no temporary files', 30, sub { !tmp_files($out) }), 'no temporary files remain')
  or diag 'temporary files: ' . join(' ', tmp_files($out));

my %info;
compare_states(mirror($out, 'public-t', ['id'], \%info), table_state($node, 't', ['id']), 'after the crashes');
diag 'mirror: ' . join(', ', map { "$_=" . ($info{$_} // 'undef') } sort keys %info);

my @cdc = cdc_batches($out);
my @problems = map { check_cdc_batch($_) } @cdc;
is_deeply([ @problems[ 0 .. ($#problems < 19 ? $#problems : 19) ] ], [],
	'every change file is complete and well formed (' . scalar(@cdc) . ' files)');

# commit LSNs and duplicates
my (%seen, $dups, @no_lsn, %dup_files, @name_problems);
foreach my $b (@cdc)
{
	my ($min, $max);
	foreach my $r (records_of($b))
	{
		next unless $r->{stream} eq 'public-t';
		my $lsn = $r->{record}{_sdc_lsn};
		if (!defined $lsn || ref $lsn || $lsn !~ /^\d+$/)
		{
			push @no_lsn, $b->{name};
			next;
		}
		$min = $lsn if !defined $min || $lsn < $min;
		$max = $lsn if !defined $max || $lsn > $max;
		if ($seen{"$r->{record}{id}/$lsn"}++)
		{
			$dups++;
			$dup_files{ $b->{name} }++;
		}
	}
	next unless defined $min;
	my ($first, $last) = cdc_name_lsns($b->{name});
	push @name_problems, "$b->{name}: commit LSNs $min..$max"
	  unless $first == $min && $last == $max;
}
is(scalar(@no_lsn), 0, 'every change RECORD carries a decimal _sdc_lsn')
  or diag 'in ' . join(' ', @no_lsn[ 0 .. ($#no_lsn < 9 ? $#no_lsn : 9) ]);
$dups //= 0;
cmp_ok($dups, '<', 2 * $BATCH, "re-sent (key, commit LSN) pairs are fewer than 2 x batch_max_rows ($dups)");
diag 're-sent records by file: ' . join(', ', map { "$_: $dup_files{$_}" } sort keys %dup_files) if %dup_files;
is_deeply([ @name_problems[ 0 .. ($#name_problems < 9 ? $#name_problems : 9) ] ], [],
	'file names give the first and last commit LSN of their records');

$node->stop;
done_testing();
