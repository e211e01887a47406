
# Chunked initial syncs (backfills) of LOG_BASED streams to Kinesis, in both
# formats: the chunks' rows go out as records (pg_kinesis: INSERTs; Singer:
# RECORDs) with the partition key of the row's changes, interleaved with
# the changes made while the table is read.  Read back with GetRecords and
# replayed per partition key in the order Kinesis holds them, each stream
# must end equal to the table: a chunk row sent after a newer change of its
# key, or under another key than that change (so that Kinesis may reorder
# them), leaves an old value.  (No key changes: an UPDATE of the key goes
# under the new key, and replaying across keys needs an order Kinesis does
# not keep between partition keys.)

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use EgressTest;
use KinesisServer;

my $JSON = JSON::PP->new->utf8;

my $node = create_node('kinesis_backfill', cdc => 1);
my $k = KinesisServer->start($node->basedir . '/kinesis', 'bk:2', 'bs:2');
my ($endpoint, $akey, $secret) = ($k->endpoint, $k->access_key, $k->secret);
$node->append_conf('postgresql.conf', qq{
pg_egress.kinesis_endpoint = '$endpoint'
pg_egress.s3_access_key_id = '$akey'
pg_egress.s3_secret_access_key = '$secret'
});
$node->reload;

my $ROWS = 3000;
$node->safe_psql('postgres', qq{
CREATE TABLE kb (id int PRIMARY KEY, v text);
INSERT INTO kb SELECT g, 'v' || g FROM generate_series(1, $ROWS) g;
SELECT egress_add_destination('bk', 'kinesis://bk', '{"format": "pg_kinesis"}');
SELECT egress_add_destination('bs', 'kinesis://bs');
SELECT egress_add_stream('kb_p', 'kb', 'LOG_BASED', 'bk', NULL, '{"chunk_rows": 100}');
SELECT egress_add_stream('kb_s', 'kb', 'LOG_BASED', 'bs', NULL, '{"chunk_rows": 100}');
});

# changes while the backfills run: across the table, so that some fall
# before their chunk, some in its window, some after it
my $i = 0;
while (1)
{
	$i++;
	$node->safe_psql('postgres', qq{
UPDATE kb SET v = 'u$i' WHERE id % 97 = $i % 97;
DELETE FROM kb WHERE id = ($i * 37) % $ROWS + 1;
INSERT INTO kb VALUES ($ROWS + $i, 'n$i') ON CONFLICT (id) DO UPDATE SET v = 'c$i';
UPDATE kb SET v = v || '+' WHERE id = ($i * 53) % $ROWS + 1;
});
	my $done = $node->safe_psql('postgres',
		q{SELECT count(*) FROM egress_streams WHERE name IN ('kb_p', 'kb_s') AND state = 'streaming'});
	last if $done == 2 || $i >= 400;
}
note "$i rounds of changes during the backfills";
wait_stream_state($node, $_, 'streaming', 180) foreach qw(kb_p kb_s);
$node->safe_psql('postgres', q{UPDATE kb SET v = 'last' WHERE id = 2});
my $lsn = $node->safe_psql('postgres', 'SELECT pg_current_wal_lsn()');
ok(poll_until('both streams confirmed past the last change', 120, sub {
	$node->safe_psql('postgres', qq{SELECT bool_and(confirmed_lsn >= '$lsn') FROM egress_streams WHERE name IN ('kb_p', 'kb_s')}) eq 't'
}), 'both streams confirmed past the last change');
foreach my $s (qw(kb_p kb_s))
{
	my $chunks = $node->safe_psql('postgres', "SELECT backfill_chunks FROM egress_streams WHERE name = '$s'");
	cmp_ok($chunks, '>=', 20, "$s: read in chunks ($chunks)");
}

my %table = map { split /\|/, $_, 2 } split /\n/, $node->safe_psql('postgres', 'SELECT id, v FROM kb');

# records of a Kinesis stream, replayed per partition key in shard order
sub replay
{
	my ($stream, $apply) = @_;
	my %state;
	my @wrong_key;
	foreach my $r (@{ $k->records($stream) })
	{
		my $m = $JSON->decode($r->{data});
		$apply->($m, \%state, $r->{key}, \@wrong_key);
	}
	return (\%state, \@wrong_key);
}

my ($pgk, $pgk_wrong) = replay('bk', sub {
	my ($m, $st, $key, $wrong) = @_;
	my $c = $m->{columns};
	if ($m->{operation} eq 'DELETE')
	{
		push @$wrong, $key unless $key eq "public-kb|$c->{id}{old}{v}";
		delete $st->{ $c->{id}{old}{v} };
		return;
	}
	push @$wrong, $key unless $key eq "public-kb|$c->{id}{new}{v}";
	delete $st->{ $c->{id}{old}{v} } if $m->{operation} eq 'UPDATE' && defined $c->{id}{old};
	$st->{ $c->{id}{new}{v} } = $c->{v}{new}{v};
});
is(scalar @$pgk_wrong, 0, 'pg_kinesis: every record under its row\'s partition key');
is_deeply($pgk, \%table, 'pg_kinesis: the stream replayed per key equals the table');

my ($sing, $sing_wrong) = replay('bs', sub {
	my ($m, $st, $key, $wrong) = @_;
	return unless ($m->{type} // '') eq 'RECORD';
	my $r = $m->{record};
	push @$wrong, $key unless $key eq "public-kb|$r->{id}";
	if (defined $r->{_sdc_deleted_at}) { delete $st->{ $r->{id} }; return; }
	$st->{ $r->{id} } = $r->{v};
});
is(scalar @$sing_wrong, 0, 'Singer: every RECORD under its row\'s partition key');
is_deeply($sing, \%table, 'Singer: the stream replayed per key equals the table');

done_testing();
