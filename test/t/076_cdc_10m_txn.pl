
# One transaction inserting 10,000,000 rows into a table that a LOG_BASED
# stream is streaming: exactly 10,000,000 RECORDs (each id once), batches of
# at most batch_max_rows (500,000) cut inside the transaction, and the CDC
# worker's RssAnon under 100 MB while it works: the reorder buffer spills the
# transaction to disk, and nothing of the worker grows with the transaction
# (test/lib/LargeTxn.pm).  The row is narrow (a bigint key and an int) so
# that the load takes well under two minutes.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;
use LargeTxn;

my $node = create_node('cdc_10m', cdc => 1,
	conf => "pg_egress.max_slot_lag = 0\nmax_wal_size = '4GB'\ncheckpoint_timeout = '30min'\n");
large_txn_test(
	node => $node,
	rows => 10_000_000,
	batch => 500_000,
	type => 'int',
	value_sql => '(i % 1000)::int',
	record_re => qr/"record"\s*:\s*\{\s*"id"\s*:\s*(\d+)\s*,\s*"v"\s*:\s*(\d+)\s*,/,
	value_ok => sub { $_[1] == $_[0] % 1000 },
	value_desc => 'v = id % 1000',
	deadline => 900);
$node->stop;
done_testing();
