
# egress_add_streams() with running workers: the streams a pattern adds
# sync (FULL_TABLE) and stream changes (LOG_BASED); with follow_new_tables
# a table created later gets a stream that sends its rows; a role that
# cannot read the egress catalog creates tables as before.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('patterns', cdc => 1);
my $out = new_outdir($node);
my $cdc_out = new_outdir($node);
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{CREATE SCHEMA shop});
sql(q{CREATE TABLE shop.orders (id int PRIMARY KEY, v text)});
sql(q{CREATE TABLE shop.order_lines (id int PRIMARY KEY, v text)});
sql(q{CREATE TABLE shop.notes (id int PRIMARY KEY, v text)});
sql(q{INSERT INTO shop.orders SELECT i, 'o' || i FROM generate_series(1, 30) i});
sql(q{INSERT INTO shop.order_lines SELECT i, 'l' || i FROM generate_series(1, 40) i});
add_destination($node, 'files', $out);
add_destination($node, 'cdc', $cdc_out);

is(sql(q{SELECT egress_add_streams('shop.order*', method => 'FULL_TABLE', destination => 'files')}),
	'{shop_order_lines,shop_orders}', 'two tables match');
wait_stream_state($node, 'shop_orders', 'synced');
wait_stream_state($node, 'shop_order_lines', 'synced');
is(scalar(records_of(sync_batches($out, 'shop_orders'))), 30, 'shop_orders synced: 30 records');
is(scalar(records_of(sync_batches($out, 'shop_order_lines'))), 40, 'shop_order_lines synced: 40 records');

# a second pattern over tables that already have streams: their names collide
my ($st, $err) = sqlstate_of($node, q{SELECT egress_add_streams('shop.*', method => 'LOG_BASED', destination => 'cdc')});
is($st, '42710', 'a second pattern over tables that already have streams: duplicate name, nothing added') or diag $err;
is(sql(q{SELECT count(*) FROM egress_streams WHERE method = 'LOG_BASED'}), '0', 'nothing half-added');

sql(q{CREATE SCHEMA live});
is(sql(q{SELECT egress_add_streams('live.*', method => 'LOG_BASED', destination => 'cdc',
	options => '{"follow_new_tables": true, "batch_max_rows": 5}')}), '{}', 'nothing yet in schema live');

# a role that cannot read the egress catalog creates a table the rule
# follows: the rule's owner is a member of it (a superuser's implicit rights
# do not count: another role's table is not followed, see 050)
sql(q{CREATE ROLE app LOGIN; GRANT CREATE, USAGE ON SCHEMA live TO app; GRANT app TO CURRENT_USER});
my ($ret, $stdout, $stderr) = query_as($node, 'app',
	q{CREATE TABLE live.events (id int PRIMARY KEY, v text); INSERT INTO live.events SELECT i, 'e' || i FROM generate_series(1, 12) i;});
is($ret, 0, 'a role without access to the egress catalog creates a followed table') or diag $stderr;
like($stderr, qr/added stream "live_events"/, 'the stream is announced');
is(sql(q{SELECT method FROM egress_streams WHERE name = 'live_events'}), 'LOG_BASED', 'stream live_events added');
wait_stream_state($node, 'live_events', 'streaming');
query_as($node, 'app', q{INSERT INTO live.events VALUES (13, 'after'); UPDATE live.events SET v = 'x' WHERE id = 1; DELETE FROM live.events WHERE id = 2});
poll_until('changes of the followed table delivered', 120,
	sub { scalar(grep { ($_->{stream} // '') eq 'live-events' } records_of(cdc_batches($cdc_out))) >= 3 });
my %mirror = %{ mirror($cdc_out, 'live-events', ['id']) };
my %table = map { my ($id, $v) = split /\|/; ($id => $v) } split /\n/, sql(q{SELECT id, v FROM live.events});
is_deeply({ map { ($_ => $mirror{$_}{v}) } keys %mirror }, \%table, 'the followed table arrives whole: initial rows and changes');

# a table the rule cannot stream: WARNING, the table is made
($ret, $stdout, $stderr) = query_as($node, 'app', q{CREATE TABLE live.unkeyed (x int)});
is($ret, 0, 'a table the rule cannot stream is created all the same');
like($stderr, qr/WARNING:.*could not add a stream for new table live\.unkeyed/, 'with a WARNING');
is(sql(q{SELECT count(*) FROM egress_streams WHERE relation = 'live.unkeyed'}), '0', 'and no stream');

# the rule removed: later tables are not followed
sql(q{SELECT egress_remove_stream_pattern(id) FROM egress_stream_patterns WHERE include = 'live.*'});
query_as($node, 'app', q{CREATE TABLE live.later (id int PRIMARY KEY)});
is(sql(q{SELECT count(*) FROM egress_streams WHERE relation = 'live.later'}), '0', 'rule removed: not followed');

done_testing();
