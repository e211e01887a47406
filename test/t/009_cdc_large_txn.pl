
# One transaction inserting 1,000,000 rows (a 20-character text value each)
# into a table that a LOG_BASED stream is streaming: exactly 1,000,000
# RECORDs (each id once), batches of at most batch_max_rows (100,000), and
# the CDC worker's RssAnon under 100 MB while it works (test/lib/LargeTxn.pm;
# 076_cdc_10m_txn.pl is the 10,000,000-row variant).

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;
use LargeTxn;

my $node = create_node('cdc_large', cdc => 1);
large_txn_test(
	node => $node,
	rows => 1_000_000,
	batch => 100_000,
	type => 'text',
	value_sql => 'substr(md5(i::text), 1, 20)',
	record_re => qr/"record"\s*:\s*\{\s*"id"\s*:\s*(\d+)\s*,\s*"v"\s*:\s*"([0-9a-f]{20})"/,
	value_ok => sub { 1 },
	value_desc => 'v 20 hex characters',
	deadline => 240);
$node->stop;
done_testing();
