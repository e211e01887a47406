# Review: removing a shared destination with cascade => true under another
# role's stream added after the remover's REPEATABLE READ snapshot.
#
# A destination of a team role; a member (sec) adds a stream of a table the
# other members may not read.  Another member (mallory) must not remove the
# destination with its streams: that would delete sec's stream and its state.
# Suspected: under REPEATABLE READ, with mallory's snapshot taken before
# sec's stream was added, egress_remove_destination()'s check of the
# streams' owners (read with the transaction's snapshot) misses the stream.
# It does, but the remove still fails and nothing is lost:
#  - FULL_TABLE (the add locks the destination FOR SHARE): the DELETE of the
#    streams, with the same snapshot, misses the stream too, and the DELETE
#    of the destination fails on stream_destination_fkey, whose check looks
#    for new referencing rows with the latest snapshot;
#  - LOG_BASED (the add updates the destination's row): locking the row
#    fails with a serialization failure.
# Either way sec's stream and the destination stay.  READ COMMITTED gets
# the permission error.  An add that comes while the remover holds the
# destination's row waits for it and then finds no destination.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('remove_dest_rr');
my $dir_team = new_outdir($node, 'team');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE ROLE team IN ROLE egress_user, pg_write_server_files;
CREATE ROLE sec LOGIN IN ROLE team;
CREATE ROLE mallory LOGIN IN ROLE team;
CREATE TABLE secret_t (id integer PRIMARY KEY, ssn text NOT NULL);
INSERT INTO secret_t VALUES (1, '078-05-1120');
GRANT SELECT ON secret_t TO sec;
});
sql("SET ROLE team; SELECT egress_add_destination('team_dir', "
	  . sql_quote(file_url($dir_team)) . ")");

my $remove = "SELECT egress_remove_destination('team_dir', true)";
foreach my $method ('FULL_TABLE', 'LOG_BASED')
{
	# mallory's snapshot first, then sec's stream, then mallory's remove
	my $mallory = $node->background_psql('postgres', on_error_stop => 0);
	$mallory->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
	$mallory->query_safe('SET ROLE mallory');
	is($mallory->query_safe('SELECT count(*) FROM egress_destinations'),
		'1', "$method: mallory sees the team destination (snapshot taken)");
	sql(qq{SET ROLE sec;
SELECT egress_add_stream('sec_s', 'public.secret_t', '$method', 'team_dir')});
	$mallory->query($remove);
	my $err = $mallory->{stderr};
	like($err,
		qr/permission denied to remove destination "team_dir" with its streams|violates foreign key constraint "stream_destination_fkey"|could not serialize access due to concurrent update/,
		"$method: REPEATABLE READ: the member cannot remove the destination with a stream added after its snapshot");
	note "$method: REPEATABLE READ remove: $err";
	unlike($err, qr/sec_s/, "$method: the other role's stream is not named");
	$mallory->query('COMMIT');
	$mallory->quit;
	is(sql("SELECT count(*) FROM egress.stream WHERE name = 'sec_s'"),
		'1', "$method: sec's stream is still there");
	is(sql("SELECT count(*) FROM egress.destination WHERE name = 'team_dir'"),
		'1', "$method: so is the destination");

	# READ COMMITTED, the plain case
	my ($r, $o, $e) = query_as($node, 'mallory', $remove);
	isnt($r, 0, "$method: READ COMMITTED: refused too");
	like($e, qr/permission denied to remove destination "team_dir" with its streams/,
		"$method: with the message");

	sql("SET ROLE sec; SELECT egress_remove_stream('sec_s')");
}

# the remover holds the destination's row: an add waits, then finds nothing
my $mallory = $node->background_psql('postgres', on_error_stop => 0);
$mallory->query_safe('BEGIN');
$mallory->query_safe('SET ROLE mallory');
$mallory->query_safe($remove);
my $sec = $node->background_psql('postgres', on_error_stop => 0);
$sec->query_safe('SET ROLE sec');
$sec->query_until(qr/started/, q{\echo started
SELECT egress_add_stream('sec_s', 'public.secret_t', 'FULL_TABLE', 'team_dir');
\echo done
});
ok( $node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM pg_stat_activity "
		  . "WHERE wait_event_type = 'Lock' AND query LIKE '%egress_add_stream%'"),
	'the add waits for the remover');
$mallory->query_safe('COMMIT');
$mallory->quit;
$sec->query('SELECT 1');
like($sec->{stderr}, qr/destination "team_dir" does not exist/,
	'then finds the destination gone');
$sec->quit;
is(sql("SELECT count(*) FROM egress.stream"), '0', 'no stream was added');

$node->stop;
done_testing();
