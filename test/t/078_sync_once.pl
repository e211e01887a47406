
# A FULL_TABLE stream is synced once.  The database worker used to read the
# catalog and only then look at which of its workers had exited: a sync
# worker that finished in between (state synced, then exit) looked like a
# stream still syncing with no worker, and a second sync of it was started
# (every row sent twice; 042 and 072 showed it now and then).  This test
# forces that order: the database worker is held just after it read the
# streams (a lock on egress.dropped_slot, which it reads next in the same
# catalog transaction) while the sync worker finishes and exits.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('sync_once');
my $out = new_outdir($node, 'once');
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE TABLE t (id int PRIMARY KEY, v text);
INSERT INTO t SELECT i, 'row ' || i FROM generate_series(1, 50) i;
CREATE TABLE other (id int PRIMARY KEY);
CREATE FUNCTION gate(id int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_advisory_lock_shared(4242);
	PERFORM pg_advisory_unlock_shared(4242);
	RETURN id;
END $$;
CREATE VIEW v AS SELECT t.*, gate(t.id) AS g FROM t;
});
add_destination($node, 'd', $out);
sql(q{SELECT egress_add_stream('other', 'other', 'FULL_TABLE', 'd')});
wait_stream_state($node, 'other', 'synced');

# the sync worker of s is held after its claim, reading v (its gate)
my $gate = $node->background_psql('postgres');
$gate->query_safe('SELECT pg_advisory_lock(4242)');
my $log_offset = -s $node->logfile;
sql(q{SELECT egress_add_stream('s', 'v', 'FULL_TABLE', 'd')});
ok(poll_until('the sync of s claimed and waiting at the gate', undef, sub {
	sql(q{SELECT count(*) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
		WHERE a.backend_type = 'pg_egress sync' AND NOT l.granted
		AND l.locktype = 'advisory'}) eq '1';
}), 'the sync waits at the gate');

# the database worker is held after its read of the streams (s: syncing)
my $catlock = $node->background_psql('postgres');
$catlock->query_safe('BEGIN; LOCK TABLE egress.dropped_slot IN ACCESS EXCLUSIVE MODE');
sql(q{SELECT egress_pause_stream('other')});	# wakes it
ok(poll_until('the database worker waiting after its read of the streams', undef, sub {
	sql(q{SELECT count(*) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
		WHERE a.backend_type = 'pg_egress worker' AND NOT l.granted
		AND l.relation = 'egress.dropped_slot'::regclass}) eq '1';
}), 'the database worker waits after its read of the streams');

# the sync finishes and its worker exits while the database worker waits
$gate->query_safe('SELECT pg_advisory_unlock(4242)');
wait_stream_state($node, 's', 'synced');
ok(poll_until('the sync worker gone', undef, sub {
	sql(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_egress sync'}) eq '0';
}), 'the sync worker has exited');
$catlock->query_safe('COMMIT');

# several rounds of the database worker later: one sync only
sql(q{SELECT egress_resume_stream('other')});
wait_stream_state($node, 'other', 'synced');
for my $i (1 .. 3)
{
	sql(q{SELECT egress_pause_stream('other')});
	sql(q{SELECT egress_resume_stream('other')});
}
sleep(3);	# naptime is 1 s: a second sync would have started by now
my $log = slurp_file($node->logfile, $log_offset);
my @started = ($log =~ /stream "s": FULL_TABLE sync of \S+ started/g);
is(scalar(@started), 1, 'the FULL_TABLE stream was synced once') or diag $log;
is(stream_row($node, 's')->{rows_sent}, 50, 'its 50 rows were sent once');

$gate->quit;
$catlock->quit;
$node->stop;
done_testing();
