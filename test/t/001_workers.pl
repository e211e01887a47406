
# The launcher and the database worker: present after start, after a
# restart, after a crash of the database worker (kill -9, crash recovery),
# follow pg_egress.database on reload, and stop cleanly.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('workers');

# Waits until exactly one launcher and one database worker (connected to
# $db) run, and returns their pids.
sub wait_workers
{
	my ($db, $what) = @_;
	my ($launcher, $worker);
	my $ok = poll_until(
		"launcher and database worker on $db ($what)",
		undef,
		sub {
			my ($ret, $out) = $node->psql('postgres',
				q{SELECT string_agg(backend_type || ':' || coalesce(datname, '-') || ':' || pid, ',' ORDER BY backend_type)
				    FROM pg_stat_activity WHERE backend_type IN ('pg_egress launcher', 'pg_egress worker')});
			return 0 if $ret != 0;
			if ($out =~ /^pg_egress launcher:[^:]*:(\d+),pg_egress worker:\Q$db\E:(\d+)$/)
			{
				($launcher, $worker) = ($1, $2);
				return 1;
			}
			return 0;
		});
	ok($ok, "launcher and database worker (on $db) run $what");
	return ($launcher, $worker);
}

# after start
my ($launcher, $worker) = wait_workers('postgres', 'after start');

# after a restart
$node->restart;
my ($launcher2, $worker2) = wait_workers('postgres', 'after restart');
isnt($worker2, $worker, 'the database worker is a new process after restart');

# kill -9 of the database worker: the postmaster does crash recovery and
# everything comes back
my $log_offset = -s $node->logfile;
ok(kill('KILL', $worker2), "sent SIGKILL to the database worker $worker2");
my $back = poll_until(
	'the killed database worker to be replaced',
	undef,
	sub {
		my @pids = backend_pids($node, 'pg_egress worker');
		return @pids == 1 && $pids[0] != $worker2;
	});
ok($back, 'a new database worker runs after kill -9 and crash recovery');
my ($launcher3, $worker3) = wait_workers('postgres', 'after kill -9 of the database worker');
isnt($worker3, $worker2, 'the database worker is a new process after the crash');
ok( $node->log_contains(qr/\(PID $worker2\) was terminated by signal 9/, $log_offset),
	'the postmaster saw the database worker die of signal 9');
is($node->safe_psql('postgres', 'SELECT count(*) FROM egress.stream'),
	'0', 'the catalog answers after crash recovery');

# pg_egress.database moves the database worker on reload
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other', 'CREATE EXTENSION pg_egress');
$node->safe_psql('postgres', q{ALTER SYSTEM SET pg_egress.database = 'other'});
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
my ($launcher4, $worker4) = wait_workers('other', "after pg_egress.database = 'other' and reload");
is($launcher4, $launcher3, 'the launcher was not restarted by the reload');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_egress worker' AND datname = 'postgres'}),
	'0',
	'no database worker remains on postgres');

# and back
$node->safe_psql('postgres', 'ALTER SYSTEM RESET pg_egress.database');
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
wait_workers('postgres', 'after resetting pg_egress.database');

# clean stop
$log_offset = -s $node->logfile;
ok($node->stop('fast', fail_ok => 1), 'the node stops cleanly');
my $log = slurp_file($node->logfile, $log_offset);
like($log, qr/database system is shut down/, 'shutdown completed');
unlike($log,
	qr/PANIC|terminated by signal|terminating any other active server processes|was terminated by exception/,
	'no crash during the clean stop');

done_testing();
