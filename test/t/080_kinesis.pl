
# Kinesis destinations against kinesalite behind the test front, which
# verifies every SigV4 signature (service kinesis) and injects faults.
# FULL_TABLE streams in Singer format read back with GetRecords: one record
# per Singer line, partition keys by primary key, table or column; 5xx and
# throttled calls retried; a LOG_BASED stream under 30% random per-entry
# failures for a while keeps every change of every key, in order, and a
# kill -9 of its worker mid-batch loses none (duplicates allowed); an
# oversized row stops its stream (state error) with a message naming the
# row's key and the size; a wrong secret is a clean error in last_error and
# nothing is lost once it is fixed.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use EgressTest;
use KinesisServer;

my $JSON = JSON::PP->new->utf8->allow_bignum;
my $row;

my $node = create_node('kinesis', cdc => 1);
my $k = KinesisServer->start($node->basedir . '/kinesis',
	'rows:2', 'bytable:2', 'bycol:2', 'changes:4', 'big:1', 'sec:1', 'wide:2');
my $endpoint = $k->endpoint;
my ($akey, $secret) = ($k->access_key, $k->secret);
$node->append_conf('postgresql.conf', qq{
pg_egress.kinesis_endpoint = '$endpoint'
pg_egress.s3_access_key_id = '$akey'
pg_egress.s3_secret_access_key = '$secret'
});
$node->reload;

# ---- destination validation -----------------------------------------------
foreach my $bad (
	[ q{'kinesis://'}, '{}', 'no stream name' ],
	[ q{'kinesis://a/b'}, '{}', 'a slash in the stream name' ],
	[ q{'kinesis://s'}, '{"format": "csv"}', 'unknown format' ],
	[ q{'kinesis://s'}, '{"bogus": 1}', 'unknown option' ])
{
	my ($url, $opts, $desc) = @$bad;
	my ($ret, $out, $err) = $node->psql('postgres',
		"SELECT egress_add_destination('bad', $url, '$opts')");
	isnt($ret, 0, "egress_add_destination refuses: $desc");
}
$node->safe_psql('postgres', q{
CREATE ROLE plain LOGIN;
GRANT EXECUTE ON FUNCTION egress_add_destination(text, text, jsonb) TO plain;
});
my ($ret, $out, $err) = query_as($node, 'plain',
	q{SELECT egress_add_destination('nope', 'kinesis://rows', '{}')});
like($err, qr/permission denied to use S3 destinations|server's S3 credentials/,
	'a role that may not use the server AWS credentials cannot add a Kinesis destination');

# every record of a Kinesis stream, data decoded as a Singer message
sub singer_records
{
	my ($stream) = @_;
	my @r = @{ $k->records($stream) };
	foreach my $r (@r)
	{
		unlike($r->{data}, qr/\n/, 'one Singer line per record') if $r == $r[0];
		$r->{msg} = $JSON->decode($r->{data});
	}
	return @r;
}

# ---- FULL_TABLE, Singer, partition key primary_key; 5xx and throttling ---------
$node->safe_psql('postgres', q{
CREATE TABLE t (id int PRIMARY KEY, grp int NOT NULL, v text);
INSERT INTO t SELECT g, g % 7, 'v' || g FROM generate_series(1, 2500) g;
SELECT egress_add_destination('rows', 'kinesis://rows', '{"region": "eu-west-1"}');
SELECT egress_add_destination('bytable', 'kinesis://bytable', '{"partition_key": "table"}');
SELECT egress_add_destination('bycol', 'kinesis://bycol', '{"partition_key": "grp", "format": "singer"}');
});
is($node->safe_psql('postgres', q{SELECT kind || ' ' || location FROM egress.destination WHERE name = 'rows'}),
	'kinesis rows', 'a kinesis destination: kind and stream');

$k->fail(500, 2);
$k->throttle(3);
$node->safe_psql('postgres',
	q{SELECT egress_add_stream('t', 't', 'FULL_TABLE', 'rows', options => '{"batch_max_rows": 1000}')});
wait_stream_state($node, 't', 'synced');
my @recs = singer_records('rows');
my @rows = grep { $_->{msg}{type} eq 'RECORD' } @recs;
my @ids = sort { $a <=> $b } map { $_->{msg}{record}{id} } @rows;
is_deeply(\@ids, [ 1 .. 2500 ], 'every row exactly once, one Kinesis record each');
my @bad_keys = grep { $_->{key} ne "public-t|$_->{msg}{record}{id}" } @rows;
is(scalar @bad_keys, 0, 'RECORD partition key: stream and primary key values')
  or diag explain [ map { [ $_->{key}, $_->{data} ] } @bad_keys[ 0 .. 2 ] ];
my @schemas = grep { $_->{msg}{type} eq 'SCHEMA' } @recs;
ok(@schemas >= 1, 'SCHEMA messages sent');
is_deeply([ sort keys %{ { map { $_->{key} => 1 } @schemas } } ], ['public-t'],
	'SCHEMA partition key: the stream');
my @states = grep { $_->{msg}{type} eq 'STATE' } @recs;
ok(@states >= 1, 'STATE messages sent');
is_deeply([ sort keys %{ { map { $_->{key} => 1 } @states } } ], ['pg_egress.state'],
	'STATE messages have a partition key of their own');
my $st = $k->state;
is($st->{signature_failures}, 0, 'every request signed correctly');
is_deeply($st->{regions}, ['eu-west-1'], 'signed for the region of the destination');
is($st->{throttled_calls}, 3, 'three throttled calls retried');
ok($st->{faults_injected} >= 5, 'the 500s were injected and retried');
ok($st->{max_entries_per_call} <= 500, "at most 500 records per call ($st->{max_entries_per_call})");
ok($st->{max_entries_per_call} >= 400, "calls are filled ($st->{max_entries_per_call} records at most)");
diag sprintf('FULL_TABLE 2500 rows: %d PutRecords calls for %d entries', $st->{put_calls}, $st->{put_entries});

# ---- calls cut at 5 MiB ----------------------------------------------------
$k->reset;
$node->safe_psql('postgres', q{
CREATE TABLE wide (id int PRIMARY KEY, v text);
INSERT INTO wide SELECT g, repeat(chr(97 + g % 26), 200000) FROM generate_series(1, 60) g;
SELECT egress_add_destination('wide', 'kinesis://wide', '{}');
SELECT egress_add_stream('wide', 'wide', 'FULL_TABLE', 'wide');
});
wait_stream_state($node, 'wide', 'synced');
@ids = sort { $a <=> $b } map { $_->{msg}{record}{id} }
  grep { $_->{msg}{type} eq 'RECORD' } singer_records('wide');
is_deeply(\@ids, [ 1 .. 60 ], '60 rows of 200 kB: every row');
$st = $k->state;
ok($st->{max_data_bytes_per_call} <= 5 * 1024 * 1024,
	"no call over 5 MiB of data and keys ($st->{max_data_bytes_per_call})");
ok($st->{max_data_bytes_per_call} > 4 * 1024 * 1024,
	'calls filled up to the limit');
ok($st->{put_calls} >= 3, "12 MB of rows in several calls ($st->{put_calls})");

# ---- partition keys: table, column -----------------------------------------
$node->safe_psql('postgres', q{
SELECT egress_add_stream('t_table', 't', 'FULL_TABLE', 'bytable');
SELECT egress_add_stream('t_col', 't', 'FULL_TABLE', 'bycol');
});
wait_stream_state($node, 't_table', 'synced');
wait_stream_state($node, 't_col', 'synced');
@rows = grep { $_->{msg}{type} eq 'RECORD' } singer_records('bytable');
is(scalar @rows, 2500, 'partition_key table: every row');
is_deeply([ sort keys %{ { map { $_->{key} => 1 } @rows } } ], ['public-t'],
	'partition_key table: one key, the stream');
my %ord;
my $in_order = 1;
foreach my $r (@rows)
{
	$in_order = 0 if defined $ord{x} && $r->{msg}{record}{id} < $ord{x};
	$ord{x} = $r->{msg}{record}{id};
}
ok($in_order, 'partition_key table: the rows in table order on their shard');
@rows = grep { $_->{msg}{type} eq 'RECORD' } singer_records('bycol');
is(scalar @rows, 2500, 'partition_key column: every row');
my @wrong = grep { $_->{key} ne 'public-t|' . $_->{msg}{record}{grp} } @rows;
is(scalar @wrong, 0, 'partition_key column: the stream and the column value');
is(scalar keys %{ { map { $_->{key} => 1 } @rows } }, 7, 'partition_key column: one key per value');

# ---- LOG_BASED under 30% random per-entry failures ---------------------------
$node->safe_psql('postgres', q{
CREATE TABLE k (id int PRIMARY KEY, n int NOT NULL);
INSERT INTO k SELECT g, 0 FROM generate_series(1, 1000) g;
SELECT egress_add_destination('changes', 'kinesis://changes', '{}');
SELECT egress_add_stream('k', 'k', 'LOG_BASED', 'changes');
});
wait_stream_state($node, 'k', 'streaming');
$k->reset;
# on until every change is in (the whole catch-up runs under failures)
$k->partial(rate => 0.3, ms => 600000);
my $t0 = time;
# 20 rounds of one change per key: 20,000 changes to 1,000 keys
foreach my $round (1 .. 20)
{
	$node->safe_psql('postgres', 'UPDATE k SET n = n + 1');
}
my %seen;
my $all_in = poll_until(
	'every change in Kinesis',
	180,
	sub {
		my @r = grep { $_->{msg}{type} eq 'RECORD' } singer_records('changes');
		%seen = ();
		push @{ $seen{ $_->{msg}{record}{id} } }, $_->{msg}{record}{n} foreach @r;
		return 0 if keys %seen < 1000;
		return !grep { $_->[-1] != 20 } values %seen;
	});
ok($all_in, 'every change of every key arrived');
$st = $k->state;
$k->partial(ms => 0);
my $secs = time - $t0;
my $rate = $st->{put_entries} ? $st->{entries_failed} / $st->{put_entries} : 0;
ok($rate > 0.2 && $rate < 0.4, sprintf('about 30%% of the entries sent failed (%.1f%%)', 100 * $rate));
ok($st->{entries_failed} > 1000, "entries failed on purpose ($st->{entries_failed}) and were resent");
my ($lost, $disorder, $dups) = (0, 0, 0);
foreach my $id (1 .. 1000)
{
	my @n = grep { $_ > 0 } @{ $seen{$id} // [] };
	my @c;
	foreach my $v (@n)
	{
		if (@c && $c[-1] == $v) { $dups++; next; }
		$disorder++ if @c && $v < $c[-1];
		push @c, $v;
	}
	$lost++ unless join(',', @c) eq join(',', 1 .. 20);
}
is($disorder, 0, 'per key, the changes arrive in commit order');
is($lost, 0, 'no change lost');
diag "30% partial failures: $st->{entries_failed} entries failed and resent, $dups duplicates, "
  . "$st->{put_calls} calls for $st->{put_entries} entries, ${secs}s";
my @keys_wrong = grep { $_->{msg}{type} eq 'RECORD' && $_->{key} ne "public-k|$_->{msg}{record}{id}" }
  singer_records('changes');
is(scalar @keys_wrong, 0, 'LOG_BASED RECORD partition keys: stream and primary key');

# ---- kill -9 of the CDC worker mid-batch -------------------------------------
# Failures at 50% slow the delivery down; the worker is killed once part of
# the next changes is in.  What was not acknowledged is sent again: no change
# lost, each key's changes first seen in commit order, duplicates allowed.
$k->reset;
$k->partial(rate => 0.5, ms => 600000);
foreach my $round (21 .. 30)
{
	$node->safe_psql('postgres', 'UPDATE k SET n = n + 1');
}
my $some_in = poll_until('part of the next changes in Kinesis', 120, sub {
	return $k->state->{put_accepted} > 1000;
});
ok($some_in, 'the delivery of the next changes is under way');
my @pids = cdc_worker_pids($node);
is(scalar @pids, 1, 'one CDC worker');
ok(kill('KILL', $pids[0]), "sent SIGKILL to the CDC worker $pids[0]");
$all_in = poll_until(
	'every change in Kinesis after kill -9',
	240,
	sub {
		my @r = grep { $_->{msg}{type} eq 'RECORD' } singer_records('changes');
		%seen = ();
		push @{ $seen{ $_->{msg}{record}{id} } }, $_->{msg}{record}{n} foreach @r;
		return 0 if keys %seen < 1000;
		return !grep { $_->[-1] != 30 } values %seen;
	});
ok($all_in, 'after kill -9: every change of every key arrived');
$k->partial(ms => 0);
($lost, $disorder, $dups) = (0, 0, 0);
foreach my $id (1 .. 1000)
{
	my (%first, @order);
	foreach my $v (grep { $_ > 20 } @{ $seen{$id} // [] })
	{
		if ($first{$v}++) { $dups++; next; }
		$disorder++ if @order && $v < $order[-1];
		push @order, $v;
	}
	$lost++ unless join(',', @order) eq join(',', 21 .. 30);
}
is($lost, 0, 'after kill -9: no change lost');
is($disorder, 0, 'after kill -9: per key, changes first arrive in commit order');
diag "kill -9 mid-batch: $dups duplicates of changes sent again";

# ---- LOG_BASED with a wrong secret: last_error, then nothing dropped -------------
$node->append_conf('postgresql.conf', "pg_egress.s3_secret_access_key = 'not-the-secret'\n");
$node->reload;
$k->reset;
$node->safe_psql('postgres', 'UPDATE k SET n = n + 1 WHERE id <= 100');
wait_stream_where($node, 'k', q{last_error LIKE '%InvalidSignatureException%'}, 120,
	'LOG_BASED, wrong secret: Kinesis error in last_error');
$row = stream_row($node, 'k');
isnt($row->{state}, 'error', 'LOG_BASED, wrong secret: the stream keeps retrying');
unlike($row->{last_error}, qr/not-the-secret/, 'the secret is not shown');
$node->append_conf('postgresql.conf', "pg_egress.s3_secret_access_key = '$secret'\n");
$node->reload;
ok( poll_until(
		'the held changes in Kinesis once the secret is fixed',
		180,
		sub {
			my %last;
			$last{ $_->{msg}{record}{id} } = $_->{msg}{record}{n}
			  foreach grep { $_->{msg}{type} eq 'RECORD' } singer_records('changes');
			return !grep { ($last{$_} // 0) != 31 } 1 .. 100;
		}),
	'LOG_BASED: after the secret is fixed, the changes held back arrive');

# ---- oversize record -------------------------------------------------------
$node->safe_psql('postgres', q{
CREATE TABLE big (id int PRIMARY KEY, v text);
INSERT INTO big VALUES (1, 'small'), (2, repeat('x', 1100000)), (3, 'after');
SELECT egress_add_destination('big', 'kinesis://big', '{}');
SELECT egress_add_stream('big', 'big', 'FULL_TABLE', 'big');
});
wait_stream_state($node, 'big', 'error');
$row = stream_row($node, 'big');
like($row->{last_error}, qr/row \(id\)=\(2\) of stream "public-big" is too large for Kinesis stream "big": \d{7} bytes/,
	'the error names the row key and the size');
my @big = grep { $_->{msg}{type} eq 'RECORD' } singer_records('big');
ok(!grep({ $_->{msg}{record}{id} == 3 } @big), 'nothing after the oversized row was sent');

# ---- wrong secret ---------------------------------------------------------
$node->append_conf('postgresql.conf', "pg_egress.s3_secret_access_key = 'not-the-secret'\n");
$node->reload;
$k->reset;
$node->safe_psql('postgres', q{
CREATE TABLE s (id int PRIMARY KEY);
INSERT INTO s SELECT generate_series(1, 100);
SELECT egress_add_destination('sec', 'kinesis://sec', '{}');
SELECT egress_add_stream('s', 's', 'FULL_TABLE', 'sec');
});
wait_stream_state($node, 's', 'error');
$row = stream_row($node, 's');
like($row->{last_error}, qr/Kinesis stream "sec" refused PutRecords: HTTP status 400 InvalidSignatureException/,
	'wrong secret: a clean error in last_error');
unlike($row->{last_error}, qr/not-the-secret/, 'the secret is not shown');
ok($k->state->{signature_failures} > 0, 'the front refused the signature');
is(scalar @{ $k->records('sec') }, 0, 'nothing stored with a wrong signature');
$node->append_conf('postgresql.conf', "pg_egress.s3_secret_access_key = '$secret'\n");
$node->reload;
$node->safe_psql('postgres', q{SELECT egress_resume_stream('s')});
wait_stream_state($node, 's', 'synced');
@ids = sort { $a <=> $b } map { $_->{msg}{record}{id} }
  grep { $_->{msg}{type} eq 'RECORD' } singer_records('sec');
is_deeply(\@ids, [ 1 .. 100 ], 'after the secret is fixed: every row, nothing dropped');

$k->stop;
$node->stop;
done_testing();
