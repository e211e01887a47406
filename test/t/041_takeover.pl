
# Taking over from a Singer tap (stream option "state"): a LOG_BASED stream
# resumes in the tap's wal2json slot exactly after the tap's "lsn" (no
# initial sync, nothing before it, nothing after it lost), an INCREMENTAL
# stream from its replication_key_value.  The tap's state is produced here
# in pipelinewise-tap-postgres's format: the changes are read from the
# slot with pg_logical_slot_peek_changes, and the slot is confirmed up to
# the state's lsn as the tap's feedback does.  Bad states: clean errors,
# nothing created.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('takeover', cdc => 1);
my $out = new_outdir($node);
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{CREATE TABLE t (id int PRIMARY KEY, v text)});
sql(q{SELECT pg_create_logical_replication_slot('tap_slot', 'wal2json')});

# what the tap read: transactions A and B
sql(q{INSERT INTO t SELECT i, 'a' || i FROM generate_series(1, 5) i});
sql(q{BEGIN; UPDATE t SET v = 'b2' WHERE id = 2; INSERT INTO t VALUES (6, 'b6'); COMMIT;});
my @changes = split /\n/, sql(q{SELECT lsn FROM pg_logical_slot_peek_changes('tap_slot', NULL, NULL)});
is(scalar(@changes), 2, 'the tap read two transactions');
my $tap_lsn = lsn_int($changes[-1]);
my %at_state = map { split /\|/ } split /\n/, sql(q{SELECT id, v FROM t});

# what happened after the tap's state: transaction C
sql(q{BEGIN; INSERT INTO t VALUES (7, 'c7'); DELETE FROM t WHERE id = 3; UPDATE t SET v = 'c1' WHERE id = 1; COMMIT;});

# the tap's feedback: the slot is confirmed up to its state
sql("SELECT pg_replication_slot_advance('tap_slot', '$changes[-1]')");
is(lsn_int(sql(q{SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'tap_slot'})),
	$tap_lsn, 'slot confirmed up to the state');

my $version = 1700000000000;
my $state = qq({"currently_syncing": null, "bookmarks": {"public-t": {"last_replication_method": "LOG_BASED", "lsn": $tap_lsn, "version": $version, "xmin": null}}});

add_destination($node, 'd', $out, '{"slot_name": "tap_slot"}');

# ---- bad states: clean errors, nothing created ---------------------------------
sql(q{CREATE TABLE other (id int PRIMARY KEY)});
my %bad = (
	'no bookmark for the table' =>
	  [ q{SELECT egress_add_stream('x', 'other', 'LOG_BASED', 'd', options => '{"state": {"bookmarks": {"public-t": {"lsn": 1}}}}')}, '22023' ],
	'no lsn' =>
	  [ q{SELECT egress_add_stream('x', 't', 'LOG_BASED', 'd', options => '{"state": {"version": 1}}')}, '22023' ],
	'lsn ahead of the WAL' =>
	  [ q{SELECT egress_add_stream('x', 't', 'LOG_BASED', 'd', options => '{"state": {"lsn": 999999999999999}}')}, '22023' ],
	'state for FULL_TABLE' =>
	  [ q{SELECT egress_add_stream('x', 't', 'FULL_TABLE', 'd', options => '{"state": {"lsn": 1}}')}, '22023' ],
	'state not an object' =>
	  [ q{SELECT egress_add_stream('x', 't', 'LOG_BASED', 'd', options => '{"state": 5}')}, '22023' ],
	'lsn before the slot' =>
	  [ "SELECT egress_add_stream('x', 't', 'LOG_BASED', 'd', options => '{\"state\": {\"lsn\": " . ($tap_lsn - 1) . "}}')", '55000' ],
);
foreach my $case (sort keys %bad)
{
	my ($st, $err) = sqlstate_of($node, $bad{$case}[0]);
	is($st, $bad{$case}[1], "bad state ($case): SQLSTATE $bad{$case}[1]") or diag $err;
	like($err, qr/HINT:.*latest state/, 'lsn before the slot: the hint says what to do')
	  if $case eq 'lsn before the slot';
}
add_destination($node, 'd_noslot', new_outdir($node), '{"slot_name": "no_such_slot"}');
my ($st, $err) = sqlstate_of($node,
	"SELECT egress_add_stream('x', 't', 'LOG_BASED', 'd_noslot', options => '{\"state\": {\"lsn\": $tap_lsn}}')");
is($st, '55000', 'bad state (the tap slot does not exist): SQLSTATE 55000') or diag $err;
is(sql('SELECT count(*) FROM egress.stream'), '0', 'bad states: no stream created');

# ---- LOG_BASED: resume exactly after the tap's lsn ------------------------------
sql("SELECT egress_add_stream('s', 't', 'LOG_BASED', 'd', options => " . sql_quote(qq({"state": $state})) . ')');
is(sql(q{SELECT state FROM egress.stream_state}), 'streaming', 'taken over: streaming at once, no initial sync');
poll_until('transaction C delivered', 120,
	sub { scalar(grep { $_->{type} eq 'RECORD' } map { @{ $_->{messages} } } cdc_batches($out)) >= 3 })
  or diag explain [ map { $_->{name} } read_batches($out) ];
is(scalar(sync_batches($out)), 0, 'no initial-sync batch');
my @recs = records_of(cdc_batches($out));
is_deeply([ map { [ $_->{record}{id}, defined $_->{record}{_sdc_deleted_at} ? 'D' : 'U' ] } @recs ],
	[ [ 7, 'U' ], [ 3, 'D' ], [ 1, 'U' ] ], 'exactly transaction C: nothing the tap had, nothing lost');
is(scalar(grep { $_->{version} != $version } @recs), 0, "records carry the tap's version");

sql(q{INSERT INTO t VALUES (8, 'd8')});
poll_until('later change delivered', 120, sub { scalar(records_of(cdc_batches($out))) >= 4 });

# the tap's table at its state, then our changes: the table now
my %mirror = %at_state;
foreach my $r (records_of(cdc_batches($out)))
{
	if (defined $r->{record}{_sdc_deleted_at}) { delete $mirror{ $r->{record}{id} }; }
	else { $mirror{ $r->{record}{id} } = $r->{record}{v}; }
}
my %now = map { split /\|/ } split /\n/, sql(q{SELECT id, v FROM t});
is_deeply(\%mirror, \%now, 'the tap\'s rows plus the handed-over changes equal the table');
my @states = messages_of_type('STATE', cdc_batches($out));
cmp_ok($states[-1]{value}{bookmarks}{'public-t'}{lsn}, '>', $tap_lsn, 'STATE lsn moves on from the tap\'s');
is(sql(q{SELECT slot_name FROM egress.destination WHERE name = 'd'}), 'tap_slot', 'the tap\'s slot is adopted');

# ---- INCREMENTAL: resume from replication_key_value ------------------------------
sql(q{CREATE TABLE inc (id int PRIMARY KEY, updated_at timestamptz NOT NULL)});
sql(q{INSERT INTO inc SELECT i, '2024-01-01 00:00:00+00'::timestamptz + i * interval '1 hour' FROM generate_series(1, 48) i});
my ($bst) = sqlstate_of($node,
	q{SELECT egress_add_stream('i', 'inc', 'INCREMENTAL', 'd', 'updated_at', '{"state": {"bookmarks": {"public-inc": {"replication_key": "id", "replication_key_value": 5}}}}')});
is($bst, '22023', 'state for another replication key: SQLSTATE 22023');
($bst) = sqlstate_of($node,
	q{SELECT egress_add_stream('i', 'inc', 'INCREMENTAL', 'd', 'updated_at', '{"state": {"replication_key_value": "not a time"}}')});
is($bst, '22007', 'replication_key_value not of the key type: SQLSTATE 22007');
sql(q{SELECT egress_add_stream('i', 'inc', 'INCREMENTAL', 'd', 'updated_at', '{"interval": 3600, "state": {"currently_syncing": null, "bookmarks": {"public-inc": {"last_replication_method": "INCREMENTAL", "replication_key": "updated_at", "replication_key_value": "2024-01-02T12:00:00+00:00", "version": 42}}}}')});
wait_stream_where($node, 'i', "state = 'synced' AND rows_sent > 0");
my @ib = read_batches($out, qr/^i-\d+-\d{13}-\d{6}\.jsonl$/);
my @irecs = records_of(@ib);
is_deeply([ map { $_->{record}{id} } @irecs ], [ 36 .. 48 ],
	'INCREMENTAL: from the tap\'s value on, that value included (as the tap would)');
is(scalar(grep { $_->{version} != 42 } @irecs), 0, 'the tap\'s version kept');
my @ist = messages_of_type('STATE', @ib);
is($ist[-1]{value}{bookmarks}{'public-inc'}{replication_key_value}, '2024-01-03T00:00:00+00:00',
	'STATE replication_key_value moves on');

# ---- egress_add_streams: one STATE for many tables ---------------------------------
sql(q{CREATE SCHEMA m});
sql(q{CREATE TABLE m.a (id int PRIMARY KEY, k int NOT NULL)});
sql(q{CREATE TABLE m.b (id int PRIMARY KEY, k int NOT NULL)});
sql(q{INSERT INTO m.a SELECT i, i FROM generate_series(1, 10) i});
sql(q{INSERT INTO m.b SELECT i, i FROM generate_series(1, 10) i});
is(sql(q{SELECT egress_add_streams('m.*', method => 'INCREMENTAL', destination => 'd', options => '{"replication_key": "k", "interval": 3600, "state": {"bookmarks": {"m-a": {"replication_key": "k", "replication_key_value": 7, "version": 5}, "m-zzz": {"lsn": 1}}}}')}),
	'{m_a,m_b}', 'a pattern with a STATE of many tables');
wait_stream_where($node, 'm_a', "state = 'synced' AND rows_sent = 4");
wait_stream_where($node, 'm_b', "state = 'synced' AND rows_sent = 10");
is_deeply([ map { $_->{record}{id} } records_of(read_batches($out, qr/^m_a-\d+-\d{13}-\d{6}\.jsonl$/)) ],
	[ 7 .. 10 ], 'the table with a bookmark resumes from it');
is_deeply([ map { $_->{record}{id} } records_of(read_batches($out, qr/^m_b-\d+-\d{13}-\d{6}\.jsonl$/)) ],
	[ 1 .. 10 ], 'the table without one starts from its first row');

done_testing();
