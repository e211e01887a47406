
# A LOG_BASED stream with option "filter" is never decoded from a wal2json
# slot: wal2json cannot filter rows.  egress_add_stream refuses the pair,
# but the destination's slot may turn out to be a wal2json slot later (one
# taken over in its place): the CDC worker stops the stream in state error
# with a clear message, and no row outside the filter is ever sent.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('cdc_wal2json_filter', cdc => 1);
my $out = new_outdir($node, 'wf');
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE TABLE t (id int PRIMARY KEY, region text);
ALTER TABLE t REPLICA IDENTITY FULL;
INSERT INTO t SELECT i, CASE WHEN i % 2 = 0 THEN 'eu' ELSE 'us-initial' END FROM generate_series(1, 10) i;
});
add_destination($node, 'd', $out);
sql(q{SELECT egress_add_stream('s', 't', 'LOG_BASED', 'd', options => '{"filter": "region = ''eu''"}')});
wait_stream_state($node, 's', 'streaming');

# the destination's slot is replaced by a wal2json slot of the same name
sql(q{SELECT egress_pause_stream('s')});
ok(poll_until('the CDC worker gone', undef, sub { !cdc_worker_pids($node) }), 'the CDC worker exits');
sql(q{SELECT pg_drop_replication_slot('pg_egress_d')});
sql(q{SELECT pg_create_logical_replication_slot('pg_egress_d', 'wal2json')});
sql(q{INSERT INTO t VALUES (100, 'eu'), (101, 'us-secret'); UPDATE t SET region = 'us-moved' WHERE id = 2});
sql(q{SELECT egress_resume_stream('s')});

wait_stream_state($node, 's', 'error');
my $row = stream_row($node, 's');
like($row->{last_error} // '', qr/option "filter".*wal2json/, 'the stream stops with a message naming the filter and wal2json')
  or diag explain $row;
ok($node->log_contains(qr/WARNING:  pg_egress stream "s" stopped: .*filter/), 'a WARNING says so');
my $all = join('', map { slurp_file("$out/$_") } grep { /\.jsonl$/ } list_dir($out));
unlike($all, qr/us-/, 'no row outside the filter was ever sent');
like($all, qr/"eu"/, 'rows of the filter were sent (initial sync)');

$node->stop;
done_testing();
