
# FULL_TABLE of 100,000 rows cut into batches of 10,000: file names and
# structure, every id exactly once, the figures in egress_streams; then
# resync (a new version, a second complete set), pause/resume of a synced
# stream, and remove (files stay, the stream goes).

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('volume');
my $out = new_outdir($node, 'vol');
my $other = new_outdir($node, 'barrier');

$node->safe_psql(
	'postgres', q{
CREATE TABLE t (id integer PRIMARY KEY, payload text NOT NULL);
INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 100000) i;
CREATE TABLE small (id integer PRIMARY KEY);
INSERT INTO small SELECT generate_series(1, 3);
});
$node->safe_psql('postgres',
	'SELECT egress_add_destination(' . sql_quote('vol') . ', ' . sql_quote(file_url($out)) . ')');
$node->safe_psql('postgres',
	'SELECT egress_add_destination(' . sql_quote('other') . ', ' . sql_quote(file_url($other)) . ')');

# Checks one complete sync of stream vol, version $v: 10 files of 10,000.
sub check_version
{
	my ($label, $v) = @_;
	my @batches = read_batches($out, qr/^vol-\Q$v\E-/);
	is_deeply([ map { $_->{name} } @batches ],
		[ map { sprintf('vol-%s-%06d.jsonl', $v, $_) } 1 .. 10 ],
		"$label: files vol-$v-000001.jsonl .. -000010.jsonl");

	my @problems = map { check_batch_file($_) } @batches;
	is_deeply(\@problems, [], "$label: every file starts with SCHEMA and ends with STATE");

	my (@per_file, @syncing, %seen, @dups, $records, $bad_version);
	foreach my $b (@batches)
	{
		my @recs = records_of($b);
		push @per_file, scalar @recs;
		push @syncing, $b->{messages}[-1]{value}{currently_syncing} // 'null';
		foreach my $r (@recs)
		{
			my $id = $r->{record}{id};
			push @dups, $id if $seen{$id}++;
			$bad_version++ if "$r->{version}" ne $v;
			$records++;
		}
	}
	is($records, 100000, "$label: 100,000 RECORDs");
	is_deeply(\@per_file, [ (10000) x 10 ], "$label: 10,000 RECORDs per file");
	is(scalar(@dups), 0, "$label: no id twice") or diag "duplicates: @dups[0 .. ($#dups < 9 ? $#dups : 9)]";
	is(scalar(grep { !$seen{$_} } 1 .. 100000), 0, "$label: every id 1..100000 present");
	is(scalar(keys %seen), 100000, "$label: no other ids");
	ok(!$bad_version, "$label: every RECORD carries version $v");
	is_deeply(\@syncing, [ ('public-t') x 9, 'null' ],
		"$label: currently_syncing public-t in all but the last STATE, null in the last");

	my @av = map { [ $_->{name}, $_->{messages} ] } @batches;
	is_deeply([ map { $_->{type} } @{ $av[0][1] }[ 0, 1 ] ], [ 'SCHEMA', 'ACTIVATE_VERSION' ],
		"$label: first file: SCHEMA, ACTIVATE_VERSION");
	is_deeply([ map { $_->{type} } @{ $av[-1][1] }[ -2, -1 ] ], [ 'ACTIVATE_VERSION', 'STATE' ],
		"$label: last file ends with ACTIVATE_VERSION, STATE");
	is(scalar(messages_of_type('ACTIVATE_VERSION', @batches)), 2, "$label: two ACTIVATE_VERSIONs");
	is_deeply(
		[ map { "$_->{version}" } messages_of_type('ACTIVATE_VERSION', @batches) ],
		[ $v, $v ], "$label: ACTIVATE_VERSION version");
	is_deeply(canon($batches[-1]{messages}[-1]{value}{bookmarks}),
		canon({ 'public-t' => { last_replication_method => 'FULL_TABLE', version => 0 + $v, xmin => undef } }),
		"$label: final bookmark");
	is(scalar(messages_of_type('SCHEMA', @batches)), 10, "$label: one SCHEMA per file");

	my $row = stream_row($node, 'vol');
	is($row->{state}, 'synced', "$label: state synced");
	is("$row->{version}", $v, "$label: egress_streams.version");
	is($row->{rows_sent}, 100000, "$label: rows_sent");
	is($row->{batches_sent}, 10, "$label: batches_sent");
	ok($row->{bytes_sent} > 0, "$label: bytes_sent");
	ok(!defined $row->{worker_pid}, "$label: worker_pid NULL");
	ok(!defined $row->{last_error}, "$label: no last_error");
	my $bm = canon($row->{bookmark});
	$bm = $bm->{bookmarks}{'public-t'} if ref $bm eq 'HASH' && $bm->{bookmarks};
	is_deeply($bm,
		canon({ last_replication_method => 'FULL_TABLE', version => 0 + $v, xmin => undef }),
		"$label: egress_streams.bookmark");
	is_deeply([ tmp_files($out) ], [], "$label: no temporary files");
	return;
}

# A barrier: a stream on another destination added and synced after a change
# to vol means the database worker has seen that change.
my $barrier = 0;
sub barrier
{
	$barrier++;
	$node->safe_psql('postgres',
		"SELECT egress_add_stream('barrier$barrier', 'small', 'FULL_TABLE', 'other')");
	wait_stream_state($node, "barrier$barrier", 'synced');
}

$node->safe_psql('postgres',
	q{SELECT egress_add_stream('vol', 't', 'FULL_TABLE', 'vol', options => '{"batch_max_rows": 10000}')});
wait_stream_state($node, 'vol', 'synced');
my $v1 = stream_row($node, 'vol')->{version};
check_version('first sync', $v1);

# resync: a new version, a second complete set of files, the first kept
$node->safe_psql('postgres', q{SELECT egress_resync_stream('vol')});
wait_stream_where($node, 'vol', "state = 'synced' AND version <> $v1");
my $v2 = stream_row($node, 'vol')->{version};
cmp_ok($v2, '>', $v1, 'resync: a later version');
check_version('resync', $v2);
is(scalar(read_batches($out, qr/^vol-\Q$v1\E-/)), 10, 'resync: the first version\'s files stay');

# pause and resume of a synced stream: no new sync
my @files_before = list_dir($out);
$node->safe_psql('postgres', q{SELECT egress_pause_stream('vol')});
is(stream_row($node, 'vol')->{state}, 'paused', 'pause: state paused');
barrier();
my $row = stream_row($node, 'vol');
is($row->{state}, 'paused', 'pause: still paused');
is("$row->{version}", $v2, 'pause: version unchanged');
is_deeply([ list_dir($out) ], \@files_before, 'pause: no files written');

$node->safe_psql('postgres', q{SELECT egress_resume_stream('vol')});
wait_stream_state($node, 'vol', 'synced');
barrier();
$row = stream_row($node, 'vol');
is($row->{state}, 'synced', 'resume: synced');
is("$row->{version}", $v2, 'resume: a synced stream is not synced again');
is($row->{rows_sent}, 100000, 'resume: rows_sent kept');
is_deeply([ list_dir($out) ], \@files_before, 'resume: no files written');

# remove: the files stay, the stream goes
$node->safe_psql('postgres', q{SELECT egress_remove_stream('vol')});
is($node->safe_psql('postgres', q{SELECT count(*) FROM egress_streams WHERE name = 'vol'}),
	'0', 'remove: gone from egress_streams');
is($node->safe_psql('postgres', q{SELECT count(*) FROM egress.stream WHERE name = 'vol'}),
	'0', 'remove: gone from egress.stream');
barrier();
is_deeply([ list_dir($out) ], \@files_before, 'remove: the files stay');
is(scalar(read_batches($out)), 20, 'remove: 20 complete files');

$node->stop;
done_testing();
