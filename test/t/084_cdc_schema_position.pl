
# A record is rendered and announced with the schema of its own position in
# the WAL, also when the worker read the live catalog between two decoding
# rounds after a later DDL had committed.
#
# The race 071 hit now and then (pgoutput only): after a round that decoded
# DDL of a stream's table, the worker checks the table in an ordinary
# transaction (stop_dropped_streams: does it still have a replica identity),
# which opens it and leaves a relcache entry of the catalog as it is NOW.
# When a transaction "change; ALTER TABLE; change" had committed by then but
# lay past the round's end, the next round decoded its first change with
# that entry: the record went out under the post-ALTER schema (a SCHEMA
# with the new type before it).  Here the window is held open for certain:
# a prepared transaction holds the row lock of the stream's catalog row, so
# the worker waits in the bookmark update at the end of the round that
# decoded the first DDL, and the second transaction commits meanwhile.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('schema_pos', cdc => 1, conf => "max_prepared_transactions = 2\n");
my $dir = new_outdir($node, 'out');

$node->safe_psql('postgres', q{
CREATE TABLE t (id integer PRIMARY KEY, c numeric(10,2), d text);
INSERT INTO t VALUES (0, 1.50, 'a'), (1, 2.50, 'b');
});
# every record its own batch: each round ends with a bookmark update
add_destination($node, 'dp', $dir, '{"batch_max_rows": 1}');
$node->safe_psql('postgres',
	q{SELECT egress_add_stream('dp_t', 't', method => 'LOG_BASED', destination => 'dp')});
wait_stream_state($node, 'dp_t', 'streaming');

my ($pid) = cdc_worker_pids($node);
ok($pid, "the CDC worker runs (pid " . ($pid // 'none') . ")");

# hold the stream's catalog row
$node->safe_psql('postgres', q{
BEGIN;
SELECT 1 FROM egress.stream_state s JOIN egress.stream d ON d.id OPERATOR(pg_catalog.=) s.stream_id
 WHERE d.name = 'dp_t' FOR UPDATE OF s;
PREPARE TRANSACTION 'hold_row';
});

# DDL of the table, decoded in a round that ends waiting for the row
$node->safe_psql('postgres',
	q{ALTER TABLE t ADD COLUMN e integer; UPDATE t SET d = 'x' WHERE id = 1});
ok( poll_until(
		'the worker waits for the row lock', 60,
		sub {
			$node->safe_psql('postgres',
				"SELECT count(*) FROM pg_stat_activity WHERE pid = $pid AND wait_event_type = 'Lock'")
			  eq '1';
		}),
	'the worker waits in the bookmark update after the round');

# committed while the worker waits: past the end of that round
$node->safe_psql('postgres',
	q{BEGIN; UPDATE t SET d = 'before' WHERE id = 0; ALTER TABLE t ALTER COLUMN c TYPE text; UPDATE t SET d = 'after' WHERE id = 1; COMMIT});
$node->safe_psql('postgres', q{ROLLBACK PREPARED 'hold_row'});

# the messages of the stream, in delivery order, with their text
my (@msgs, @lines);
poll_until(
	'the record of "after" is delivered', 60,
	sub {
		my @b = cdc_batches($dir, 'dp');
		@msgs = map { @{ $_->{messages} } } @b;
		@lines = map { @{ $_->{lines} } } @b;
		return scalar grep { $_->{type} eq 'RECORD' && ($_->{record}{d} // '') eq 'after' } @msgs;
	});

# the schema in force at each record, and the record's text
my ($schema, %at);
for my $i (0 .. $#msgs)
{
	my $m = $msgs[$i];
	next if ($m->{stream} // '') ne 'public-t';
	$schema = $m->{schema} if $m->{type} eq 'SCHEMA';
	$at{ $m->{record}{d} } = { schema => $schema, line => $lines[$i] }
	  if $m->{type} eq 'RECORD' && defined $m->{record}{d};
}
sub c_types
{
	my ($d) = @_;
	return 'no record' unless $at{$d};
	return join(',', @{ $at{$d}{schema}{properties}{c}{type} // [] });
}
is(c_types('before'), 'null,number',
	'the change before the ALTER goes out under the schema of its position (c numeric)');
like($at{before}{line} // '', qr/"c":1\.50?[,}]/, 'c of "before" rendered as a number');
is(c_types('after'), 'null,string', 'the change after the ALTER goes out under the new schema (c text)');
like($at{after}{line} // '', qr/"c":"2\.50"/, 'c of "after" rendered as text');

done_testing();
