
# kill -9 of a sync worker in the middle of a FULL_TABLE sync.  Made
# deterministic without sleeps: the stream reads a view whose row 50,000
# waits for an advisory lock the test session holds.  The crash restarts
# everything (which also ends the test session and frees the lock); the
# stream then syncs completely under a new version.  At every point every
# visible *.jsonl file is complete.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('crash');
my $out = new_outdir($node);

$node->safe_psql(
	'postgres', q{
CREATE TABLE t (id integer PRIMARY KEY, payload text NOT NULL);
INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 100000) i;
CREATE FUNCTION gate(id int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
	IF id = 50000 THEN
		PERFORM pg_advisory_lock_shared(4242);
		PERFORM pg_advisory_unlock_shared(4242);
	END IF;
	RETURN id;
END
$$;
CREATE VIEW v AS SELECT t.*, gate(t.id) AS g FROM t ORDER BY id;
});
$node->safe_psql('postgres',
	'SELECT egress_add_destination(' . sql_quote('local') . ', ' . sql_quote(file_url($out)) . ')');

# Every complete file seen so far, by name; problems found at any point.
my (%seen, @problems);
sub scan_files
{
	my @batches = eval { read_batches($out) };
	if ($@)
	{
		push @problems, "unreadable file: $@";
		return ();
	}
	foreach my $b (@batches)
	{
		next if $seen{ $b->{name} }++;
		push @problems, check_batch_file($b);
	}
	return @batches;
}

my $gate = $node->background_psql('postgres');
$gate->query_safe('SELECT pg_advisory_lock(4242)');

$node->safe_psql('postgres',
	q{SELECT egress_add_stream('s', 'v', 'FULL_TABLE', 'local', options => '{"batch_max_rows": 1000}')});

my ($pid, $old_v, $nfiles);
my $reached = poll_until(
	'a running sync worker and at least 40 complete files',
	undef,
	sub {
		my @b = scan_files();
		my $row = stream_row($node, 's');
		return 0 unless $row && defined $row->{worker_pid} && @b >= 40;
		($pid, $old_v, $nfiles) = ($row->{worker_pid}, $row->{version}, scalar @b);
		return 1;
	});
ok($reached, "sync stopped at the gate with $nfiles files, worker $pid, version $old_v")
  or diag explain stream_row($node, 's');
if (!$reached)
{
	eval { $gate->quit; };
	$node->stop;
	done_testing();
	exit;
}
is(stream_row($node, 's')->{state}, 'syncing', 'the stream is syncing');
is($node->safe_psql('postgres', "SELECT backend_type FROM pg_stat_activity WHERE pid = $pid"),
	'pg_egress sync', 'the sync worker shows in pg_stat_activity as pg_egress sync');
is_deeply([ grep { !/^s-\Q$old_v\E-\d{6}\.jsonl$/ } map { $_->{name} } scan_files() ],
	[], "every file so far is of version $old_v");

my $log_offset = -s $node->logfile;
ok(kill('KILL', $pid), "sent SIGKILL to sync worker $pid");

my $synced = poll_until(
	'the stream to be synced under a new version',
	undef,
	sub {
		scan_files();
		my $row = stream_row($node, 's');
		return $row && $row->{state} eq 'synced' && "$row->{version}" ne "$old_v";
	});
ok($synced, 'after the crash the stream syncs under a new version')
  or diag explain stream_row($node, 's');
my @all = scan_files();
is_deeply(\@problems, [], 'every file visible at any point was complete');
ok($node->log_contains(qr/\(PID $pid\) was terminated by signal 9/, $log_offset),
	'the postmaster saw the sync worker die of signal 9');

my $new_v = stream_row($node, 's')->{version};
cmp_ok($new_v, '>', $old_v, 'the new version is later');
is_deeply([ tmp_files($out) ], [], 'no temporary files remain');
ok(!(grep { !-e "$out/$_" } keys %seen), 'no complete file disappeared');

# the new version: a complete sync
my @new = grep { $_->{name} =~ /^s-\Q$new_v\E-/ } @all;
is_deeply([ map { $_->{name} } @new ],
	[ map { sprintf('s-%s-%06d.jsonl', $new_v, $_) } 1 .. 100 ],
	'new version: 100 files numbered 000001..000100');
my (%ids, $dups, $records, $bad_g);
foreach my $r (records_of(@new))
{
	$records++;
	$dups++ if $ids{ $r->{record}{id} }++;
	$bad_g++ if $r->{record}{g} != $r->{record}{id};
}
is($records, 100000, 'new version: 100,000 RECORDs');
ok(!$dups, 'new version: no id twice');
is(scalar(grep { !$ids{$_} } 1 .. 100000), 0, 'new version: ids 1..100000 all present');
ok(!$bad_g, 'new version: g = id');
is_deeply([ map { $_->{type} } @{ $new[-1]{messages} }[ -2, -1 ] ], [ 'ACTIVATE_VERSION', 'STATE' ],
	'new version: ends with ACTIVATE_VERSION, STATE');
is($new[-1]{messages}[-1]{value}{currently_syncing}, undef,
	'new version: the last STATE has currently_syncing null');

# the interrupted version: complete files, contiguous, rows in order
my @old = grep { $_->{name} =~ /^s-\Q$old_v\E-/ } @all;
cmp_ok(scalar(@old), '>=', $nfiles, 'old version: the files completed before the crash stay');
is_deeply([ map { $_->{name} } @old ],
	[ map { sprintf('s-%s-%06d.jsonl', $old_v, $_) } 1 .. scalar(@old) ],
	'old version: files numbered from 000001 without gaps');
is_deeply([ map { $_->{record}{id} } records_of(@old) ], [ 1 .. 1000 * scalar(@old) ],
	'old version: ids 1..N in order, 1000 per file');
is(scalar(@all), scalar(@old) + scalar(@new), 'no other files');

my $row = stream_row($node, 's');
is($row->{rows_sent}, 100000, 'egress_streams: rows_sent');
is($row->{batches_sent}, 100, 'egress_streams: batches_sent');
ok(!defined $row->{worker_pid}, 'egress_streams: worker_pid NULL');

# The gate session died in the crash; quitting it may report that.
eval { $gate->quit; };

$node->stop;
done_testing();
