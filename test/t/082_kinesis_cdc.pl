
# LOG_BASED streams to Kinesis in "format": "pg_kinesis": every INSERT,
# UPDATE and DELETE is one record in the shape pg_kinesis documents (see
# docs/kinesis.md), read back with GetRecords and compared byte for byte
# ("time" aside, checked for its form): commit LSN of the transaction, old
# values of UPDATE/DELETE from the replica identity (FULL: every column,
# DEFAULT: the key), "t" the format_type name; the initial sync's rows come
# as INSERTs; no Singer message (SCHEMA, STATE) reaches the stream.
# Partition keys computed from the change equal the row's key (stream and
# key values), or the stream with "partition_key": "table"; and the Singer
# format keeps deriving the same keys for LOG_BASED changes.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use EgressTest;
use KinesisServer;

my $JSON = JSON::PP->new->utf8->canonical;

my $node = create_node('kinesis_cdc', cdc => 1);
my $k = KinesisServer->start($node->basedir . '/kinesis', 'pgk:1', 'pgkt:1', 'sing:2');
my $endpoint = $k->endpoint;
my ($akey, $secret) = ($k->access_key, $k->secret);
$node->append_conf('postgresql.conf', qq{
pg_egress.kinesis_endpoint = '$endpoint'
pg_egress.s3_access_key_id = '$akey'
pg_egress.s3_secret_access_key = '$secret'
});
$node->reload;

$node->safe_psql('postgres', q{
CREATE TABLE full_t (id int PRIMARY KEY, name text, amount numeric(10,2), flag boolean);
ALTER TABLE full_t REPLICA IDENTITY FULL;
CREATE TABLE def_t (id int PRIMARY KEY, v varchar(10));
INSERT INTO full_t VALUES (1, 'it''s <a>', 1.50, true);
INSERT INTO def_t VALUES (7, 'seven');
SELECT egress_add_destination('pgk', 'kinesis://pgk', '{"format": "pg_kinesis"}');
SELECT egress_add_destination('pgkt', 'kinesis://pgkt', '{"format": "pg_kinesis", "partition_key": "table"}');
SELECT egress_add_stream('full_t', 'full_t', 'LOG_BASED', 'pgk');
SELECT egress_add_stream('def_t', 'def_t', 'LOG_BASED', 'pgk');
SELECT egress_add_stream('full_t2', 'full_t', 'LOG_BASED', 'pgkt');
});
wait_stream_state($node, $_, 'streaming') foreach qw(full_t def_t full_t2);

$node->safe_psql('postgres', q{
INSERT INTO full_t VALUES (2, NULL, 3, false);
UPDATE full_t SET name = 'b' WHERE id = 1;
DELETE FROM full_t WHERE id = 2;
BEGIN;
UPDATE def_t SET v = 'sept' WHERE id = 7;
UPDATE def_t SET id = 8 WHERE id = 7;
DELETE FROM def_t WHERE id = 8;
COMMIT;
TRUNCATE def_t;
INSERT INTO def_t VALUES (9, 'nine');
});

sub pgk_records
{
	my ($stream, $n) = @_;
	my @r;
	poll_until("$n records in $stream", 120, sub {
		@r = @{ $k->records($stream) };
		return @r >= $n;
	});
	return @r;
}

# One shard: records in the order Kinesis accepted them.  The client keeps
# the order per partition key only (a record of another key may overtake
# one held back because its key repeated in the call), so sort by commit
# LSN (stable: a transaction's changes stay in their order).
sub lsn_num { my ($hi, $lo) = split m{/}, $_[0]; return hex($hi) * 2**32 + hex($lo); }
my @r = pgk_records('pgk', 9);
@r = map { $_->[1] } sort { $a->[0] <=> $b->[0] }
  map { [ lsn_num($JSON->decode($_->{data})->{lsn}), $_ ] } @r;
is(scalar @r, 9, 'pg_kinesis: one record per row of the initial syncs and per change, nothing else');

my (@lsn, @bad_time);
foreach my $r (@r)
{
	my $d = $r->{data};
	push @bad_time, $d unless $d =~ s/"time":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)"/"time":"T"/;
	push @lsn, $1 if $d =~ s/"lsn":"([0-9A-F]+\/[0-9A-F]+)"/"lsn":"L"/;
	$r->{shape} = $d;
}
is(scalar @bad_time, 0, 'pg_kinesis: "time" is RFC 3339 UTC to the second');
is(scalar @lsn, 9, 'pg_kinesis: every record has an "lsn"');

my %by_table;
push @{ $by_table{ $JSON->decode($_->{data})->{table} } }, $_ foreach @r;
my $full = join "\n", map { $_->{shape} } @{ $by_table{'public.full_t'} };
my $def = join "\n", map { $_->{shape} } @{ $by_table{'public.def_t'} };

my $full_expected = join "\n",
  '{"lsn":"L","time":"T","table":"public.full_t","operation":"INSERT","columns":{"amount":{"new":{"q":"false","t":"numeric","v":"1.50"}},"flag":{"new":{"q":"false","t":"boolean","v":"true"}},"id":{"new":{"q":"false","t":"integer","v":"1"}},"name":{"new":{"q":"true","t":"text","v":"it\'\'s \u003ca\u003e"}}}}',
  '{"lsn":"L","time":"T","table":"public.full_t","operation":"INSERT","columns":{"amount":{"new":{"q":"false","t":"numeric","v":"3.00"}},"flag":{"new":{"q":"false","t":"boolean","v":"false"}},"id":{"new":{"q":"false","t":"integer","v":"2"}},"name":{"new":{"q":"false","t":"text","v":"null"}}}}',
  '{"lsn":"L","time":"T","table":"public.full_t","operation":"UPDATE","columns":{"amount":{"new":{"q":"false","t":"numeric","v":"1.50"}},"flag":{"new":{"q":"false","t":"boolean","v":"true"}},"id":{"new":{"q":"false","t":"integer","v":"1"}},"name":{"new":{"q":"true","t":"text","v":"b"},"old":{"q":"true","t":"text","v":"it\'\'s \u003ca\u003e"}}}}',
  '{"lsn":"L","time":"T","table":"public.full_t","operation":"DELETE","columns":{"amount":{"old":{"q":"false","t":"numeric","v":"3.00"}},"flag":{"old":{"q":"false","t":"boolean","v":"false"}},"id":{"old":{"q":"false","t":"integer","v":"2"}}}}';
is($full, $full_expected,
	'pg_kinesis, REPLICA IDENTITY FULL: initial sync INSERT, INSERT, UPDATE with the old values that changed, DELETE with the old row');

my $def_expected = join "\n",
  '{"lsn":"L","time":"T","table":"public.def_t","operation":"INSERT","columns":{"id":{"new":{"q":"false","t":"integer","v":"7"}},"v":{"new":{"q":"true","t":"character varying","v":"seven"}}}}',
  '{"lsn":"L","time":"T","table":"public.def_t","operation":"UPDATE","columns":{"id":{"new":{"q":"false","t":"integer","v":"7"}},"v":{"new":{"q":"true","t":"character varying","v":"sept"}}}}',
  '{"lsn":"L","time":"T","table":"public.def_t","operation":"UPDATE","columns":{"id":{"new":{"q":"false","t":"integer","v":"8"},"old":{"q":"false","t":"integer","v":"7"}},"v":{"new":{"q":"true","t":"character varying","v":"sept"}}}}',
  '{"lsn":"L","time":"T","table":"public.def_t","operation":"DELETE","columns":{"id":{"old":{"q":"false","t":"integer","v":"8"}}}}',
  '{"lsn":"L","time":"T","table":"public.def_t","operation":"INSERT","columns":{"id":{"new":{"q":"false","t":"integer","v":"9"}},"v":{"new":{"q":"true","t":"character varying","v":"nine"}}}}';
is($def, $def_expected,
	'pg_kinesis, REPLICA IDENTITY DEFAULT: old key only when it changed, DELETE with the key, TRUNCATE not passed on');

# the three changes of def_t's transaction share its commit LSN
my @def_lsn = map { $JSON->decode($_->{data})->{lsn} } @{ $by_table{'public.def_t'} };
is($def_lsn[1], $def_lsn[2], 'pg_kinesis: "lsn" is the commit LSN of the transaction');
is($def_lsn[2], $def_lsn[3], 'pg_kinesis: ... for every change of it');
isnt($def_lsn[3], $def_lsn[4], 'pg_kinesis: a later transaction, another "lsn"');

# partition keys: the row's key
my @wrong;
foreach my $r (@r)
{
	my $m = $JSON->decode($r->{data});
	my $c = $m->{columns}{id};
	my $id = $m->{operation} eq 'DELETE' ? $c->{old}{v} : $c->{new}{v};
	(my $stream = $m->{table}) =~ s/\./-/;
	push @wrong, "$r->{key} vs $stream|$id" unless $r->{key} eq "$stream|$id";
}
is(scalar @wrong, 0, 'pg_kinesis: partition keys from the change are the stream and the row key')
  or diag explain \@wrong;

my @t = pgk_records('pgkt', 4);
is(scalar @t, 4, 'pg_kinesis, partition_key table: every record');
is(scalar(grep { $_->{key} ne 'public-full_t' } @t), 0,
	'pg_kinesis, partition_key table: the stream is the partition key');

# ---- Singer format: LOG_BASED keys still the row's key -----------------------
$node->safe_psql('postgres', q{
SELECT egress_add_destination('sing', 'kinesis://sing', '{}');
SELECT egress_add_stream('def_s', 'def_t', 'LOG_BASED', 'sing');
});
wait_stream_state($node, 'def_s', 'streaming');
$node->safe_psql('postgres', q{
INSERT INTO def_t SELECT g, 'x' FROM generate_series(100, 199) g;
UPDATE def_t SET v = 'y' WHERE id BETWEEN 100 AND 199;
DELETE FROM def_t WHERE id BETWEEN 100 AND 149;
});
my @s;
poll_until('Singer changes in Kinesis', 120, sub {
	@s = grep { $_->{msg}{type} eq 'RECORD' && $_->{msg}{record}{id} >= 100 }
	  map { $_->{msg} = JSON::PP->new->decode($_->{data}); $_ } @{ $k->records('sing') };
	return @s >= 250;
});
is(scalar @s, 250, 'Singer format: every change');
is(scalar(grep { $_->{key} ne "public-def_t|$_->{msg}{record}{id}" } @s), 0,
	'Singer format: LOG_BASED partition keys are the stream and the row key');
my @states = grep { $_->{msg}{type} eq 'STATE' } map { $_->{msg} = JSON::PP->new->decode($_->{data}); $_ } @{ $k->records('sing') };
ok(@states > 0 && !grep({ $_->{key} ne 'pg_egress.state' } @states),
	'Singer format: STATE messages have a key of their own');

$k->stop;
$node->stop;
done_testing();
