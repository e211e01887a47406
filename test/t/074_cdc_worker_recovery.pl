
# The CDC worker's sessions: (A) a destination whose location changes gets a
# new sink at the next session (changes go to the new place, none to the
# old); (B) a pgoutput slot of a removed destination (listed in
# egress.dropped_slot) is not taken over by a destination added again under
# that name: it was created before the destination's publication existed,
# so pgoutput could not decode it; a new slot is created and the stream
# streams (the database worker, which also drops listed slots, usually
# drops it first: then the CDC worker's own replacement path is not taken,
# the end state is the same); (C) a destination that fails while changes are being decoded
# (inside the decoding's transaction) sends the worker through its error
# path: the same process goes on once the destination works again, nothing
# is lost, and the server log shows no leaked resources; (D) partitions
# with pgoutput: one attached mid-stream leads to the partitioned table's
# stream, one detached no longer does, and a TRUNCATE of the partitioned
# table (one pgoutput TRUNCATE listing it and its partitions) is one
# ACTIVATE_VERSION, not a resync.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('cdc_recovery', cdc => 1);
my $log_start = -s $node->logfile;
my $sql = sub { return $node->safe_psql('postgres', $_[0]); };

$sql->(q{
CREATE TABLE a (id integer PRIMARY KEY, v text);
CREATE TABLE a2 (id integer PRIMARY KEY);
CREATE TABLE b (id integer PRIMARY KEY, v text);
CREATE TABLE c (id integer PRIMARY KEY, v text);
CREATE TABLE other (id integer);
});

# ids of the RECORDs of a stream (not deletions) in the change files of a dir
sub change_ids
{
	my ($dir, $stream) = @_;
	my @ids = sort { $a <=> $b } map { $_->{record}{id} }
	  grep { $_->{stream} eq $stream && !defined $_->{record}{_sdc_deleted_at} }
	  records_of(cdc_batches($dir));
	return @ids;    # a count in scalar context
}

# ---------------------------------------------------------------------------
# A. the sink follows the destination's location
# ---------------------------------------------------------------------------
my $dir1 = new_outdir($node, 'a1');
my $dir2 = new_outdir($node, 'a2');
add_destination($node, 'da', $dir1);
$sql->(q{SELECT egress_add_stream('sa', 'a', method => 'LOG_BASED', destination => 'da')});
wait_stream_state($node, 'sa', 'streaming', 60);
$sql->(q{INSERT INTO a SELECT i, 'one' FROM generate_series(1, 5) i});
ok(poll_until('rows 1-5 in the first directory', 60, sub { scalar(change_ids($dir1, 'public-a')) == 5 }),
	'A: changes go to the first location');

# a superuser moves the destination; the next egress_* call makes the
# worker read its configuration again
$sql->(q{UPDATE egress.destination SET location = } . sql_quote($dir2) . q{ WHERE name = 'da'});
$sql->(q{SELECT egress_add_stream('sa2', 'a2', method => 'LOG_BASED', destination => 'da')});
wait_stream_state($node, 'sa2', 'streaming', 60);
$sql->(q{INSERT INTO a SELECT i, 'two' FROM generate_series(6, 10) i});
ok(poll_until('rows 6-10 in the second directory', 60, sub { scalar(change_ids($dir2, 'public-a')) == 5 }),
	'A: after the location changed, changes go to the new location');
is(join(',', change_ids($dir2, 'public-a')), '6,7,8,9,10', 'A: the new location has the later rows');
is(join(',', change_ids($dir1, 'public-a')), '1,2,3,4,5', 'A: the old location got nothing more');
like(slurp_file($node->logfile, $log_start), qr/destination "da" changed: its sink is opened again/,
	'A: the worker says it opened the sink again');

# ---------------------------------------------------------------------------
# B. a pgoutput slot of a removed destination is replaced, not adopted
# ---------------------------------------------------------------------------
# The slot exists before the destination's publication, and a transaction
# commits in between: pgoutput would fail on it ("publication ... does not
# exist") if the slot were decoded.
$sql->(q{SELECT pg_create_logical_replication_slot('pg_egress_db', 'pgoutput')});
$sql->(q{INSERT INTO other VALUES (1)});
$sql->(q{INSERT INTO egress.dropped_slot VALUES ('pg_egress_db')});
my $dirb = new_outdir($node, 'b');
add_destination($node, 'db', $dirb);
$sql->(q{INSERT INTO b VALUES (1, 'before')});
$sql->(q{SELECT egress_add_stream('sb', 'b', method => 'LOG_BASED', destination => 'db')});
wait_stream_state($node, 'sb', 'streaming', 60);
$sql->(q{INSERT INTO b VALUES (2, 'after'); INSERT INTO other VALUES (2)});
ok(poll_until('row 2 of b delivered', 60, sub { scalar(change_ids($dirb, 'public-b')) == 1 }),
	'B: the stream of the re-added destination delivers changes');
is($sql->(q{SELECT plugin FROM pg_replication_slots WHERE slot_name = 'pg_egress_db'}), 'pgoutput',
	'B: the destination decodes a pgoutput slot');
is($sql->(q{SELECT count(*) FROM egress.dropped_slot WHERE slot_name = 'pg_egress_db'}), '0',
	'B: the slot name is no longer listed as dropped');
is($sql->(q{SELECT slot_owned FROM egress.destination WHERE name = 'db'}), 't',
	'B: the slot is the destination\'s own');
unlike(slurp_file($node->logfile, $log_start), qr/publication "pg_egress_db" does not exist/,
	'B: the old slot was never decoded');

# ---------------------------------------------------------------------------
# C. a destination failing in the middle of decoding
# ---------------------------------------------------------------------------
my $dirc = new_outdir($node, 'c');
add_destination($node, 'dc', $dirc);
$sql->(q{SELECT egress_add_stream('sc', 'c', method => 'LOG_BASED', destination => 'dc')});
wait_stream_state($node, 'sc', 'streaming', 60);
my $pid_of = sub {
	return $sql->(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_egress cdc' }
		  . q{AND pid IN (SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'pg_egress_dc')});
};
my $pid;
ok(poll_until('the worker of dc holds its slot', 60, sub { $pid = $pid_of->(); $pid ne '' }),
	'C: the CDC worker of dc holds its slot');

my $log_c = -s $node->logfile;
chmod 0500, $dirc or die "chmod: $!";
# one transaction larger than a batch: the batch is written inside decoding
$sql->(q{INSERT INTO c SELECT i, repeat('x', 100) FROM generate_series(1, 3000) i});
ok(poll_until('the failure is shown', 60,
		sub { $sql->(q{SELECT coalesce(last_error, '') FROM egress_streams WHERE name = 'sc'}) ne '' }),
	'C: the failing destination is shown on the stream');
chmod 0700, $dirc or die "chmod: $!";
$sql->(q{INSERT INTO c VALUES (3001, 'last')});
ok(poll_until('all rows of c delivered', 120, sub { my @ids = change_ids($dirc, 'public-c'); @ids >= 3001 }),
	'C: once the destination works again, every change arrives');
my %seen = map { $_ => 1 } change_ids($dirc, 'public-c');
is(scalar(keys %seen), 3001, 'C: no change is missing');
ok(poll_until('the same worker holds the slot', 30, sub { $pid_of->() eq $pid }),
	'C: the same CDC worker went on (no crash, no restart)');
my $log = slurp_file($node->logfile, $log_c);
unlike($log, qr/leaked|was not released|not closed|server process .* was terminated/,
	'C: no leaked resources, no crash in the log');
like($log, qr/Permission denied/, 'C: the failure is in the log');

# ---------------------------------------------------------------------------
# D. partitions: ATTACH / DETACH mid-stream, TRUNCATE of the whole table
# ---------------------------------------------------------------------------
$sql->(q{
CREATE TABLE p (id integer, k integer, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (100);
CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (100) TO (200);
CREATE TABLE p3 (id integer, k integer, PRIMARY KEY (id, k));
INSERT INTO p VALUES (1, 1), (2, 150);
});
my $dird = new_outdir($node, 'd');
add_destination($node, 'dd', $dird);
$sql->(q{SELECT egress_add_stream('sp', 'p', method => 'LOG_BASED', destination => 'dd')});
wait_stream_state($node, 'sp', 'streaming', 60);
my $v1 = '' . stream_row($node, 'sp')->{version};
$sql->(q{ALTER TABLE p ATTACH PARTITION p3 FOR VALUES FROM (200) TO (300)});
$sql->(q{INSERT INTO p VALUES (3, 250); INSERT INTO p VALUES (4, 50)});
$sql->(q{ALTER TABLE p DETACH PARTITION p2});
$sql->(q{INSERT INTO p2 VALUES (5, 160); INSERT INTO p VALUES (6, 60)});
ok(poll_until('rows 3, 4, 6 of p delivered', 60, sub { scalar(change_ids($dird, 'public-p')) >= 3 }),
	'D: changes of p arrive');
is(join(',', change_ids($dird, 'public-p')), '3,4,6',
	'D: a partition attached mid-stream leads to the stream, a detached one no longer does');

$sql->(q{TRUNCATE p});
$sql->(q{INSERT INTO p VALUES (7, 70)});
ok(poll_until('row 7 of p delivered', 60, sub { scalar(change_ids($dird, 'public-p')) >= 4 }),
	'D: changes after the TRUNCATE arrive');
my @av = grep { ($_->{type} // '') eq 'ACTIVATE_VERSION' && ($_->{stream} // '') eq 'public-p' }
  map { @{ $_->{messages} } } cdc_batches($dird);
is(scalar(@av), 1, 'D: one ACTIVATE_VERSION for the TRUNCATE of the partitioned table');
my $row = stream_row($node, 'sp');
is($row->{state}, 'streaming', 'D: the stream is still streaming');
is(scalar(sync_batches($dird, 'sp')), 1, 'D: no new initial sync (no resync for the partitions in the same TRUNCATE)');

done_testing();
