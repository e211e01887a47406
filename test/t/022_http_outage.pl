
# HTTP destinations under longer failures.  The endpoint is down for 35 s
# (connections refused) while pgbench writes continuously: egress_streams
# shows the stream retrying, nothing is acknowledged meanwhile, and after
# the endpoint returns the stream catches up with nothing lost (what a
# target would hold equals the table).  Then the CDC worker is killed with
# SIGKILL while the receiver holds a POST unanswered: after the crash
# restart the same batch id is sent again and acknowledged, each change
# arriving once after de-duplication by batch id.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use EgressTest;
use EgressHttp;

BAIL_OUT('npm packages of test/http are not installed (scripts/common.sh egress_npm_ci)')
  unless EgressHttp::node_ready();

# seconds: longer than the CDC worker's 30 s of retries of one batch, so
# that its giving up (error path, new session) is part of the outage
my $OUTAGE = 35;

my $node = create_node('http_outage', cdc => 1);
my $rcv = EgressHttp->start($node);
my $rcv2 = EgressHttp->start($node, name => 'healthy');

$node->safe_psql('postgres', q{
CREATE TABLE t (id integer PRIMARY KEY, v text NOT NULL, n integer NOT NULL DEFAULT 0);
INSERT INTO t SELECT i, md5(i::text), 0 FROM generate_series(1, 2000) i;
CREATE TABLE k (id integer PRIMARY KEY, v text NOT NULL);
CREATE TABLE g (id integer PRIMARY KEY);
});
# another destination, on a receiver that stays up
$node->safe_psql('postgres',
	"SELECT egress_add_destination('hg', " . sql_quote($rcv2->url('/g')) . q{, '{"flush_interval": "100ms"}')});
$node->safe_psql('postgres', q{SELECT egress_add_stream('sg', 'g', 'LOG_BASED', 'hg')});
wait_stream_state($node, 'sg', 'streaming');
$node->safe_psql('postgres',
	"SELECT egress_add_destination('ho', " . sql_quote($rcv->url('/o'))
	  . q{, '{"retry_initial_interval": "200ms", "retry_max_interval": "2s", "timeout": "5s", "flush_interval": "100ms"}')});
$node->safe_psql('postgres',
	q{SELECT egress_add_stream('so', 't', 'LOG_BASED', 'ho', options => '{"debug_lsn": true}')});
wait_stream_state($node, 'so', 'streaming');

my $script = <<'PGB';
\set a random(1, 3000)
\set b random(1, 2000)
\set c random(1, 2000)
INSERT INTO t (id, v, n) VALUES (:a, md5(random()::text), 1) ON CONFLICT (id) DO UPDATE SET v = excluded.v, n = t.n + 1;
UPDATE t SET v = md5(random()::text), n = n + 1 WHERE id = :b;
DELETE FROM t WHERE id = :c;
PGB
my $pb = start_pgbench($node, 'writer', $script, '-c', '2', '-T', $OUTAGE + 12, '-R', '100');
ok(poll_until('the writer to write', 60,
		sub { $node->safe_psql('postgres', 'SELECT count(*) FROM t WHERE n > 0') > 0 }),
	'the writer is writing');
ok(poll_until('batches to arrive', 60, sub { scalar(grep { $_->{status} eq '200' } $rcv->requests) > 0 }),
	'batches arrive before the outage');

# ---- the outage ---------------------------------------------------------------------------
$rcv->stop;
my $down_at = time;
my $acked_before = grep { $_->{status} eq '200' } $rcv->requests;
wait_stream_state($node, 'so', 'retrying', 30);
my $lsn_during = stream_row($node, 'so')->{confirmed_lsn};
# the other destination is not held up
$node->safe_psql('postgres', q{INSERT INTO g SELECT generate_series(1, 10)});
ok(poll_until('g to be delivered', 30, sub { scalar($rcv2->records('public-g')) == 10 }),
	'another destination delivers while this one is down');
# stay down for $OUTAGE s, checking that nothing is acknowledged meanwhile
poll_until('the outage to last', $OUTAGE + 5, sub { time - $down_at >= $OUTAGE });
is(stream_row($node, 'so')->{confirmed_lsn}, $lsn_during, 'nothing is acknowledged while the endpoint is down');
like(stream_row($node, 'so')->{state}, qr/^(retrying|error)$/, "the stream shows the failure after ${OUTAGE} s");
$rcv->restart;
ok(finish_pgbench($pb), 'pgbench completed');
wait_caught_up($node, 'so');
is(stream_row($node, 'so')->{state}, 'streaming', 'back to streaming');
my @after = grep { $_->{status} eq '200' } $rcv->requests;
ok(@after > $acked_before, 'batches delivered after the outage');
my %info;
compare_states(mirror($rcv->to_dir($node->basedir . '/o1'), 'public-t', ['id'], \%info),
	table_state($node, 't', ['id']), "after a ${OUTAGE} s outage under writes");
note "records: $info{records}, change records: $info{cdc_records}";

# ---- SIGKILL of the worker mid-POST ----------------------------------------------------------
# a destination that waits long for an answer: the kill comes first
$node->safe_psql('postgres',
	"SELECT egress_add_destination('hk', " . sql_quote($rcv->url('/k'))
	  . q{, '{"timeout": "120s", "flush_interval": "100ms"}')});
$node->safe_psql('postgres',
	q{SELECT egress_add_stream('sk', 'k', 'LOG_BASED', 'hk', options => '{"debug_lsn": true}')});
wait_stream_state($node, 'sk', 'streaming');
$rcv->fault('hang', 1);
my $nreq = () = $rcv->requests;
$node->safe_psql('postgres', q{INSERT INTO k SELECT i, 'k' || i FROM generate_series(1, 100) i});
my $hung;
ok(poll_until('a POST to hang', 60,
		sub { ($hung) = grep { $_->{status} eq 'hang' } $rcv->requests; defined $hung }),
	'the receiver holds a POST unanswered');
my $hung_id = $hung->{headers}{'x-egress-batch-id'};
my ($pid) = $node->safe_psql('postgres',
	q{SELECT a.pid FROM egress_stream_activity() a JOIN egress.stream s ON s.id = a.stream_id WHERE s.name = 'sk'});
ok($pid, "the CDC worker of hk runs (pid $pid)");
my $killed_at = time * 1000;
kill 'KILL', $pid;
ok(!grep({ $_->{seq} > $hung->{seq} && $_->{t} < $killed_at && ($_->{headers}{'x-egress-batch-id'} // '') eq $hung_id } $rcv->requests),
	'the batch was not sent again before the kill');
ok(poll_until('the batch to be sent again', 120,
		sub { grep { $_->{seq} > $hung->{seq} && $_->{t} > $killed_at && ($_->{headers}{'x-egress-batch-id'} // '') eq $hung_id && $_->{status} eq '200' } $rcv->requests }),
	"after SIGKILL the same batch id ($hung_id) is sent again and acknowledged");
server_up($node);
wait_caught_up($node, 'sk');
my @k = map { $_->{record}{id} } $rcv->records('public-k');
is_deeply(\@k, [ 1 .. 100 ], 'every change of k arrived once after de-duplication by batch id');
compare_states(mirror($rcv->to_dir($node->basedir . '/o2'), 'public-k', ['id'], \%info),
	table_state($node, 'k', ['id']), 'k after the crash');
$rcv->validate('outage and crash');

$rcv->stop;
$rcv2->stop;
done_testing();
