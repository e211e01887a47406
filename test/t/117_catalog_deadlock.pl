
# Lock order between the user functions and the CDC worker's catalog
# transaction (seen once in 093: "deadlock detected" in
# BEGIN; egress_pause_stream(); egress_resume_stream(); COMMIT).
#
# The user functions lock the egress.stream row FOR UPDATE, then update
# stream_state.  The worker's bookmark transaction updated the stream's
# stream_state row, then updated it again (last_success_at): the second
# UPDATE of a row the transaction itself wrote runs the foreign key check
# of stream_state.stream_id, FOR KEY SHARE on the egress.stream row, which
# waits for the user's FOR UPDATE while the user waits for the state row.
#
# Here the user session holds the stream row (an open transaction that
# paused the stream), a change is acknowledged, and the worker records it:
# it waits for the user.  Then the user resumes the stream and commits:
# no deadlock on either side, the worker goes on (same process), the
# stream is synced again and streams the later changes.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('catalog_deadlock', cdc => 1);
sub sql { return $node->safe_psql('postgres', $_[0]); }

my $out = new_outdir($node, 'dl');
add_destination($node, 'dl', $out);
sql(q{
CREATE TABLE t (id int PRIMARY KEY, v text);
INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 100) i;
});
sql(q{SELECT egress_add_stream('s', 't', 'LOG_BASED', 'dl')});
ok(wait_stream_state($node, 's', 'streaming', 120), 'the stream streams');
ok(wait_caught_up($node, 's'), 'the stream caught up');
my ($worker) = cdc_worker_pids($node);
ok(defined $worker, 'a CDC worker runs');

# the CDC worker waiting for a heavyweight lock
sub worker_waits
{
	return sql(qq{SELECT count(*) FROM pg_stat_activity
		WHERE pid = $worker AND wait_event_type = 'Lock'}) eq '1';
}

for my $round (1 .. 3)
{
	my $logpos = -s $node->logfile;
	my $ses = $node->background_psql('postgres', on_error_stop => 0);
	$ses->query_safe('BEGIN');
	$ses->query_safe(q{SELECT egress_pause_stream('s')});
	# a change the worker sends, is acknowledged for, and records
	sql("INSERT INTO t VALUES (1000 + $round, 'round $round')");
	ok(poll_until("round $round: the worker records the change and waits for the user's lock",
			60, \&worker_waits),
		"round $round: the worker waits for the stream row");
	$ses->query(q{SELECT egress_resume_stream('s')});
	my $err = $ses->{stderr};
	$ses->query('COMMIT');
	$err .= $ses->{stderr};
	$ses->quit;
	unlike($err, qr/deadlock/, "round $round: no deadlock in the user session");
	is($err, '', "round $round: the user transaction committed") or diag($err);
	ok(poll_until("round $round: the worker goes on", 30, sub { !worker_waits() }),
		"round $round: the worker no longer waits");
	unlike(substr(slurp_file($node->logfile), $logpos), qr/deadlock detected/,
		"round $round: no deadlock in the server log (the worker was not the victim either)");
	my ($now) = cdc_worker_pids($node);
	is($now // 'none', $worker, "round $round: the same CDC worker process");
	ok(wait_stream_state($node, 's', 'streaming', 120), "round $round: the stream streams again");
	sql("INSERT INTO t VALUES (2000 + $round, 'after $round')");
	ok(wait_caught_up($node, 's'), "round $round: caught up after the resume");
}

my $log = slurp_file($node->logfile);
unlike($log, qr/deadlock detected/, 'no deadlock in the server log');
compare_states(mirror($out, 'public-t', ['id']), table_state($node, 't', ['id']),
	'the destination equals the table');

$node->stop;
done_testing();
