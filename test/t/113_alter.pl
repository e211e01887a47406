# egress_alter_destination / egress_alter_stream reach the workers:
# - a LOG_BASED destination moved to another directory keeps its slot, its
#   stream's version and bookmark: the changes after the alter land in the
#   new directory, those before in the old one, none lost, none twice, no
#   new initial sync;
# - a LOG_BASED stream's batch_max_rows changed while it streams cuts the
#   next batches by the new limit;
# - an INCREMENTAL stream's interval changed from an hour to 0.2 s runs it
#   again without egress_sync_now;
# - an alter refused (another role, a forbidden host, a changed kind) or
#   rolled back changes nothing the workers see;
# - an HTTP destination's URL and token rotated while its LOG_BASED stream
#   streams: every batch after the alter goes to the new URL with the new
#   token, none of them with the old; the tokens appear in no server log.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;
use EgressHttp;

BAIL_OUT('npm packages of test/http are not installed (scripts/common.sh egress_npm_ci)')
  unless EgressHttp::node_ready();

my $node = create_node('alter', cdc => 1);
my $dir_a = new_outdir($node, 'a');
my $dir_b = new_outdir($node, 'b');
my $dir_c = new_outdir($node, 'c');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE TABLE t (id integer PRIMARY KEY, v text NOT NULL);
INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 100) i;
CREATE TABLE inc (id integer PRIMARY KEY, at integer NOT NULL);
INSERT INTO inc SELECT i, i FROM generate_series(1, 10) i;
CREATE ROLE intruder LOGIN IN ROLE egress_user, pg_write_server_files;
});
add_destination($node, 'd', $dir_a, '{"flush_interval": "100 ms"}');
sql(q{SELECT egress_add_stream('s', 't', 'LOG_BASED', 'd', options => '{"batch_max_rows": 1000}')});
wait_stream_state($node, 's', 'streaming');

# ids of the RECORDs in a directory's files (initial sync and changes)
sub record_ids
{
	my ($dir) = @_;
	my @ids = map { $_->{record}{id} } records_of(read_batches($dir));
	return sort { $a <=> $b } @ids;
}

sql(q{INSERT INTO t SELECT i, 'v' || i FROM generate_series(101, 200) i});
wait_caught_up($node, 's');
my $before = stream_row($node, 's');
my $slot_name = $before->{slot_name};
ok(defined slot_row($node, $slot_name), "slot $slot_name exists");
my @sync_a = sync_batches($dir_a, 's');
ok(@sync_a > 0, 'the initial sync went to the first directory');

# ---- refused or rolled back: nothing changes ------------------------------
my ($ret, $out, $err) = query_as($node, 'intruder',
	"SELECT egress_alter_destination('d', url => 'file://$dir_c')");
like($err, qr/42501: permission denied for destination "d"/, 'another role may not move the destination');
($ret, $out, $err) = query_as($node, 'intruder',
	q{SELECT egress_alter_stream('s', '{"batch_max_rows": 1}')});
like($err, qr/42501: permission denied for stream "s"/, 'another role may not alter the stream');
($ret, $out, $err) = $node->psql('postgres',
	q{SELECT egress_alter_destination('d', url => 'http://127.0.0.1:9/')});
like($err, qr/cannot change the kind of destination "d" from file to http/, 'kind change refused');
($ret, $out, $err) = $node->psql('postgres',
	q{SELECT egress_alter_destination('d', options => '{"slot_name": "other"}')});
like($err, qr/destination option "slot_name" of destination "d" cannot be changed/, 'slot change refused');
sql("BEGIN; SELECT egress_alter_destination('d', url => 'file://$dir_c'); ROLLBACK;");
sql(q{INSERT INTO t SELECT i, 'v' || i FROM generate_series(201, 210) i});
wait_caught_up($node, 's');
is(scalar(my @none = record_ids($dir_c)), 0, 'a rolled-back alter sent nothing to its directory');

# ---- the destination moves: slot, version and bookmark stay ---------------
# the changes committed right after the alter (one session, two
# transactions: before the worker can wake up) go to the new place too
sql("SELECT egress_alter_destination('d', url => 'file://$dir_b');
	INSERT INTO t SELECT i, 'v' || i FROM generate_series(211, 300) i;");
wait_caught_up($node, 's');
my $after = stream_row($node, 's');
is($after->{version}, $before->{version}, 'same table version after the alter (no resync)');
is($after->{slot_name}, $slot_name, 'same slot after the alter');
is($node->safe_psql('postgres', 'SELECT count(*) FROM pg_replication_slots'), '1', 'no other slot');
ok(lsn_int($after->{confirmed_lsn}) > lsn_int($before->{confirmed_lsn}), 'the bookmark moved on from where it was');
is(scalar(sync_batches($dir_b)), 0, 'no initial sync in the new directory');
is(scalar(sync_batches($dir_a, 's')), scalar(@sync_a), 'no new initial sync in the old one');

my @a = record_ids($dir_a);
my @b = record_ids($dir_b);
is_deeply(\@b, [ 211 .. 300 ], 'changes after the alter, each once, in the new directory');
is_deeply(\@a, [ 1 .. 210 ], 'everything before it, each once, in the old one');

# ---- a stream option changed while streaming ------------------------------
sql(q{SELECT egress_alter_stream('s', '{"batch_max_rows": 7}');
	INSERT INTO t SELECT i, 'v' || i FROM generate_series(301, 350) i;});
wait_caught_up($node, 's');
my @new = grep {
	grep { $_->{record}{id} > 300 } records_of($_)
} cdc_batches($dir_b);
ok(@new >= 8, 'the 50 new rows came in at least 8 batches (' . scalar(@new) . ')');
my @sizes = map { scalar(records_of($_)) } @new;
ok(!(grep { $_ > 7 } @sizes), 'no batch over the new batch_max_rows (' . join(',', @sizes) . ')');
is_deeply([ record_ids($dir_b) ], [ 211 .. 350 ], 'all rows once after the option change');
is(stream_row($node, 's')->{version}, $before->{version}, 'still the same version');

# ---- INCREMENTAL: a new interval is picked up -----------------------------
add_destination($node, 'di', $dir_c);
sql(q{SELECT egress_add_stream('i', 'inc', 'INCREMENTAL', 'di', 'at', '{"interval": 3600}')});
wait_stream_where($node, 'i', q{state = 'synced' AND rows_sent = 10});
sql(q{INSERT INTO inc SELECT i, i FROM generate_series(11, 15) i});
sql(q{SELECT egress_alter_stream('i', '{"interval": "200 ms"}')});
wait_stream_where($node, 'i', q{rows_sent = 15}, 60, 'the INCREMENTAL stream ran again at its new interval');
is_deeply([ record_ids($dir_c) ], [ 1 .. 15 ], 'INCREMENTAL rows, each once');

# ---- the views a pipeline owner reads -------------------------------------
is($node->safe_psql('postgres', q{SELECT location FROM egress_destinations WHERE name = 'd'}),
	$dir_b, 'egress_destinations shows the new location');
($ret, $out, $err) = query_as($node, 'intruder', q{SELECT count(*) FROM egress_destinations});
is($out, '0', 'another role sees none of the destinations');

# ---- HTTP: URL and token rotated while streaming --------------------------
my $rcv = EgressHttp->start($node);
sql(q{
CREATE TABLE h (id integer PRIMARY KEY);
INSERT INTO h SELECT generate_series(1, 20);
GRANT SELECT, INSERT ON h TO intruder;
});
# owned by a role that is not a superuser: the alter is checked as it
my ($hret, $hout, $herr) = query_as($node, 'intruder',
	'SELECT egress_add_destination(\'hd\', ' . sql_quote($rcv->url('/one'))
	  . q{, '{"flush_interval": "100ms", "headers": {"Authorization": "Bearer old-S3CRET-1"}}');
	  SELECT egress_add_stream('hs', 'h', 'LOG_BASED', 'hd');});
is($herr, '', 'a non-superuser adds an HTTP destination and a LOG_BASED stream');
wait_stream_state($node, 'hs', 'streaming');
sql(q{INSERT INTO h SELECT generate_series(21, 40)});
wait_caught_up($node, 'hs');
my $version = stream_row($node, 'hs')->{version};

# a host the owner may not send to: refused, also for a superuser, nothing changes
($hret, $hout, $herr) = query_as($node, 'intruder',
	q{SELECT egress_alter_destination('hd', url => 'http://169.254.169.254/latest/meta-data')});
like($herr, qr/42501: destination host "169.254.169.254" is not allowed/, 'the owner may not point it at the metadata address');
($hret, $hout, $herr) = $node->psql('postgres',
	q{SELECT egress_alter_destination('hd', url => 'http://169.254.169.254/latest/meta-data')});
like($herr, qr/destination host "169.254.169.254" is not allowed/, 'nor may a superuser, for a destination of that owner');

($hret, $hout, $herr) = query_as($node, 'intruder',
	q{SELECT egress_alter_destination('hd', url => } . sql_quote($rcv->url('/two'))
	  . q{, options => '{"headers": {"Authorization": "Bearer new-S3CRET-2"}}');
	  INSERT INTO h SELECT generate_series(41, 60);});
is($herr, '', 'the owner rotates URL and token, and rows follow at once');
wait_caught_up($node, 'hs');
my @one = grep { $_->{path} eq '/one' } $rcv->requests;
my @two = grep { $_->{path} eq '/two' } $rcv->requests;
ok(@two > 0, 'batches arrive at the new URL');
ok(!grep({ ($_->{headers}{authorization} // '') ne 'Bearer old-S3CRET-1' } @one), 'the old URL got the old token only');
ok(!grep({ ($_->{headers}{authorization} // '') ne 'Bearer new-S3CRET-2' } @two), 'the new URL gets the new token only');
my @ids;
foreach my $b (grep { $_->{status} =~ /^2/ } @two)
{
	push @ids, map { $_->{record}{id} } grep { $_->{type} eq 'RECORD' }
	  map { JSON::PP->new->decode($_) } split /\n/, $b->{body};
}
is_deeply([ sort { $a <=> $b } @ids ], [ 41 .. 60 ], 'every change after the alter at the new URL, once');
is(stream_row($node, 'hs')->{version}, $version, 'no resync');
# the test clusters log every statement (log_statement = all), secrets
# included, as docs/reference.md warns: no other line may show them
my @leaks = grep { /S3CRET/ && !/ LOG:  statement: / } split /\n/, slurp_file($node->logfile);
is_deeply(\@leaks, [], 'no token in the server log but the logged statements');

done_testing();
