
# Kinesis: several PutRecords calls in flight (destination option
# max_inflight, default 4).  The front answers every call after 20 ms, so
# calls really overlap, and fails 30% of the entries at random, throttles
# and fails whole calls meanwhile.  20,000 changes to 1,000 keys, read back
# with GetRecords: nothing lost, every key's changes in commit order, no
# duplicate (nothing acknowledged is sent again).  The front also checks
# the client's ordering rule directly: no partition key in two calls in
# flight at once (key_conflicts), nor twice in one call.  A client that
# sent a later change of a key while an earlier one is in flight would
# show in key_conflicts and, when the earlier entry fails and is resent
# after the later one was stored, as a key out of order.
# max_inflight 1 keeps one call at a time; bad values are refused.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use EgressTest;
use KinesisServer;

my $JSON = JSON::PP->new->utf8;

my $node = create_node('kinflight', cdc => 1);
my $k = KinesisServer->start($node->basedir . '/kinesis', 'changes:4', 'single:2');
my $endpoint = $k->endpoint;
my ($akey, $secret) = ($k->access_key, $k->secret);
$node->append_conf('postgresql.conf', qq{
pg_egress.kinesis_endpoint = '$endpoint'
pg_egress.s3_access_key_id = '$akey'
pg_egress.s3_secret_access_key = '$secret'
});
$node->reload;

# ---- option validation ------------------------------------------------------
foreach my $bad ('0', '65', '"4"', '-1', '1.5')
{
	my ($ret, $out, $err) = $node->psql('postgres',
		qq{SELECT egress_add_destination('bad', 'kinesis://s', '{"max_inflight": $bad}')});
	isnt($ret, 0, "max_inflight $bad refused");
	like($err, qr/max_inflight/, "max_inflight $bad: the error names the option");
}
my ($ret, $out, $err) = $node->psql('postgres',
	q{SELECT egress_add_destination('bad', 'http://127.0.0.1:1/x', '{"max_inflight": 2}')});
isnt($ret, 0, 'max_inflight is a Kinesis option only');

# every RECORD of a Kinesis stream: id -> [n, ...] in stream order (per shard)
sub changes_of
{
	my ($stream) = @_;
	my %seen;
	foreach my $r (@{ $k->records($stream) })
	{
		my $m = $JSON->decode($r->{data});
		next unless $m->{type} eq 'RECORD';
		die "key $r->{key} of id $m->{record}{id}"
		  unless $r->{key} eq "public-k|$m->{record}{id}" || $r->{key} eq "public-k1|$m->{record}{id}";
		push @{ $seen{ $m->{record}{id} } }, $m->{record}{n};
	}
	return %seen;
}

# ---- 4 calls in flight under faults ------------------------------------------
$node->safe_psql('postgres', q{
CREATE TABLE k (id int PRIMARY KEY, n int NOT NULL);
INSERT INTO k SELECT g, 0 FROM generate_series(1, 1000) g;
SELECT egress_add_destination('changes', 'kinesis://changes', '{}');
SELECT egress_add_stream('k', 'k', 'LOG_BASED', 'changes');
});
wait_stream_state($node, 'k', 'streaming');
$k->reset;
$k->mode(latency_ms => 20);
$k->partial(rate => 0.3, ms => 600000);
$k->throttle(3);
$k->fail(500, 2);
my $t0 = time;
# 20 rounds of one change per key: 20,000 changes to 1,000 keys
$node->safe_psql('postgres', 'UPDATE k SET n = n + 1') foreach 1 .. 20;
my %seen;
my $all_in = poll_until(
	'every change in Kinesis',
	240,
	sub {
		%seen = changes_of('changes');
		return 0 if keys %seen < 1000;
		return !grep { $_->[-1] != 20 } values %seen;
	});
ok($all_in, 'every change of every key arrived');
my $st = $k->state;
$k->partial(ms => 0);
my ($lost, $disorder, $dups) = (0, 0, 0);
foreach my $id (1 .. 1000)
{
	my @n = grep { $_ > 0 } @{ $seen{$id} // [] };
	my %first;
	my @c;
	foreach my $v (@n)
	{
		if ($first{$v}++) { $dups++; next; }
		$disorder++ if @c && $v < $c[-1];
		push @c, $v;
	}
	$lost++ unless join(',', @c) eq join(',', 1 .. 20);
}
is($disorder, 0, 'per key, the changes are stored in commit order');
is($lost, 0, 'no change lost');
is($dups, 0, 'no duplicates: only failed entries were sent again');
is($st->{key_conflicts}, 0, 'no partition key in two calls in flight at once');
is($st->{keys_repeated_in_call}, 0, 'no partition key twice in one call');
ok($st->{max_concurrent_puts} > 1,
	"PutRecords calls overlapped ($st->{max_concurrent_puts} in flight at most)");
ok($st->{max_concurrent_puts} <= 4, 'at most max_inflight (4) calls in flight');
ok($st->{entries_failed} > 1000, "entries failed on purpose ($st->{entries_failed}) and were resent");
is($st->{throttled_calls}, 3, 'three throttled calls retried');
is($st->{signature_failures}, 0, 'every request signed correctly');
diag sprintf('4 in flight, 20 ms per call, 30%% partial failures: %d calls for %d entries, '
	  . '%d failed entries resent, %d calls in flight at most, %ds',
	$st->{put_calls}, $st->{put_entries}, $st->{entries_failed}, $st->{max_concurrent_puts}, time - $t0);

# ---- max_inflight 1 ---------------------------------------------------------------
$node->safe_psql('postgres', q{
CREATE TABLE k1 (id int PRIMARY KEY, n int NOT NULL);
INSERT INTO k1 SELECT g, 0 FROM generate_series(1, 1000) g;
SELECT egress_add_destination('single', 'kinesis://single', '{"max_inflight": 1}');
SELECT egress_add_stream('k1', 'k1', 'LOG_BASED', 'single');
});
wait_stream_state($node, 'k1', 'streaming');
$k->reset;
$node->safe_psql('postgres', 'UPDATE k1 SET n = n + 1') foreach 1 .. 3;
ok( poll_until(
		'max_inflight 1: every change in Kinesis',
		120,
		sub {
			my %s = changes_of('single');
			return keys %s == 1000 && !grep { $_->[-1] != 3 } values %s;
		}),
	'max_inflight 1: every change arrived');
$st = $k->state;
is($st->{max_concurrent_puts}, 1, 'max_inflight 1: one call at a time');
ok($st->{put_calls} >= 6, "max_inflight 1: several calls ($st->{put_calls})");

# ---- rows read again for unchanged TOAST values keep their partition key -----
# An UPDATE that leaves a TOASTed value unchanged is held back and its row
# read again; the RECORDs held behind it and the row itself reach the sink
# with the keys the CDC worker computed (the value's text), not keys parsed
# back from the Singer lines (a timestamptz key is printed differently in
# JSON): every change of a row has one partition key.
$node->safe_psql('postgres', q{
CREATE TABLE tz (ts timestamptz PRIMARY KEY, big text, n int NOT NULL);
ALTER TABLE tz ALTER big SET STORAGE EXTERNAL;
INSERT INTO tz SELECT timestamptz '2026-01-01 00:00+00' + g * interval '1 hour', repeat(md5(g::text), 400), 0
  FROM generate_series(1, 3) g;
CREATE TABLE other (id int PRIMARY KEY, n int NOT NULL);
INSERT INTO other VALUES (1, 0);
SELECT egress_add_destination('toast', 'kinesis://single', '{}');
SELECT egress_add_stream('tz', 'public.tz', 'LOG_BASED', 'toast');
SELECT egress_add_stream('other', 'public.other', 'LOG_BASED', 'toast');
});
wait_stream_state($node, 'tz', 'streaming');
wait_stream_state($node, 'other', 'streaming');
$node->safe_psql('postgres', q{
BEGIN;
UPDATE tz SET n = n + 1;
UPDATE other SET n = n + 1;
UPDATE tz SET n = n + 1;
INSERT INTO tz VALUES (timestamptz '2026-02-01 00:00+00', 'small', 7);
COMMIT;
UPDATE tz SET n = n + 1;
});
my %keys_of;
ok( poll_until(
		'the TOAST rows read again in Kinesis',
		120,
		sub {
			%keys_of = ();
			my $last = 0;
			foreach my $r (@{ $k->records('single') })
			{
				my $m = $JSON->decode($r->{data});
				next unless $m->{type} eq 'RECORD' && $m->{stream} eq 'public-tz';
				$keys_of{ $m->{record}{ts} }{ $r->{key} }++;
				$last++ if $m->{record}{n} == 3;
			}
			return $last == 3;
		}),
	'rows read again for unchanged TOAST values arrived');
is(scalar keys %keys_of, 4, 'four rows');
my @split = grep { keys %{ $keys_of{$_} } != 1 } keys %keys_of;
is(scalar @split, 0, 'every change of a row has one partition key, read again or not')
  or diag explain \%keys_of;
my @json_keys = grep { /T\d\d:/ } map { keys %$_ } values %keys_of;
is(scalar @json_keys, 0, 'keys from the values, not parsed from the Singer lines')
  or diag explain \@json_keys;

$k->stop;
$node->stop;
done_testing();
