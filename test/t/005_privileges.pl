
# Least privilege: EXECUTE, SELECT on the relation (at add time and at every
# sync), pg_write_server_files for file destinations, ownership of
# destinations and streams; a stream that loses its rights or its table goes
# to state error without making the database worker crash-loop.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('privileges');
my $su_dir = new_outdir($node, 'su');
my $etl_dir = new_outdir($node, 'etl');
my $nob_dir = new_outdir($node, 'nobody');

$node->safe_psql(
	'postgres', q{
CREATE TABLE t1 (id integer PRIMARY KEY, v text);
INSERT INTO t1 SELECT i, 'v' || i FROM generate_series(1, 10) i;
CREATE TABLE t2 (id integer PRIMARY KEY);
INSERT INTO t2 SELECT generate_series(1, 5);
CREATE TABLE t3 (id integer PRIMARY KEY);
INSERT INTO t3 SELECT generate_series(1, 5);
CREATE TABLE t_secret (id integer PRIMARY KEY);
INSERT INTO t_secret VALUES (1);

CREATE ROLE etl LOGIN;
GRANT EXECUTE ON FUNCTION
	egress_add_destination(text, text, jsonb),
	egress_add_stream(text, regclass, text, text, text, jsonb),
	egress_remove_stream(text),
	egress_pause_stream(text),
	egress_resume_stream(text),
	egress_resync_stream(text)
TO etl;
GRANT SELECT ON egress_streams TO etl;
-- the view shows live figures through it; a view checks EXECUTE as its reader
GRANT EXECUTE ON FUNCTION egress_stream_activity() TO etl;
GRANT pg_write_server_files TO etl;

-- may add destinations but lacks pg_write_server_files, may not add streams
CREATE ROLE nobody_role LOGIN;
GRANT EXECUTE ON FUNCTION egress_add_destination(text, text, jsonb) TO nobody_role;
GRANT SELECT ON t1 TO nobody_role;
});
$node->safe_psql('postgres',
	'SELECT egress_add_destination(' . sql_quote('su_dest') . ', ' . sql_quote(file_url($su_dir)) . ')');

sub sqlstate_is
{
	my ($role, $sql, $state, $desc) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($ret, $out, $err) = query_as($node, $role, $sql);
	isnt($ret, 0, "$desc: fails");
	like($err, qr/ERROR:\s+$state:/, "$desc: SQLSTATE $state") or diag $err;
	return $err;
}

sub ok_as
{
	my ($role, $sql, $desc) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($ret, $out, $err) = query_as($node, $role, $sql);
	is($ret, 0, $desc) or diag $err;
	return $out;
}

sub count_of
{
	return $node->safe_psql('postgres', "SELECT count(*) FROM $_[0]");
}

sub attempts
{
	my ($stream) = @_;
	return $node->safe_psql('postgres',
		'SELECT st.attempts FROM egress.stream s JOIN egress.stream_state st ON st.stream_id = s.id WHERE s.name = '
		  . sql_quote($stream));
}

sub dbworker_pid
{
	my @pids = backend_pids($node, 'pg_egress worker');
	return @pids == 1 ? $pids[0] : "(@pids)";
}

# A barrier: another stream added and synced means the database worker went
# round its loop since the last change.
my $barrier = 0;
sub barrier
{
	$barrier++;
	$node->safe_psql('postgres',
		"SELECT egress_add_stream('good$barrier', 't2', 'FULL_TABLE', 'su_dest')");
	wait_stream_state($node, "good$barrier", 'synced');
}

# --- refusals at the SQL surface ---------------------------------------

my $err = sqlstate_is('nobody_role',
	q{SELECT egress_add_stream('x', 't1', 'FULL_TABLE', 'su_dest')},
	'42501', 'role without EXECUTE calls egress_add_stream');
like($err, qr/permission denied for function egress_add_stream/, 'permission denied for function');

sqlstate_is('nobody_role',
	'SELECT egress_add_destination(' . sql_quote('nob') . ', ' . sql_quote(file_url($nob_dir)) . ')',
	'42501', 'role without pg_write_server_files adds a file destination');
is(count_of('egress.destination'), '1', 'no destination was created');

ok_as('etl',
	'SELECT egress_add_destination(' . sql_quote('etl_dest') . ', ' . sql_quote(file_url($etl_dir)) . ')',
	'etl adds its own file destination');
is($node->safe_psql('postgres', q{SELECT owner FROM egress.destination WHERE name = 'etl_dest'}),
	'etl', 'etl owns etl_dest');

sqlstate_is('etl', q{SELECT egress_add_stream('secret', 't_secret', 'FULL_TABLE', 'etl_dest')},
	'42501', 'etl without SELECT on the table adds a stream');
is(count_of('egress.stream'), '0', 'nothing in egress.stream');
is(count_of('egress.stream_state'), '0', 'nothing in egress.stream_state');

$node->safe_psql('postgres', 'GRANT SELECT ON t1 TO etl');
sqlstate_is('etl', q{SELECT egress_add_stream('s_other', 't1', 'FULL_TABLE', 'su_dest')},
	'42501', "etl adds a stream on a superuser's destination");
is(count_of('egress.stream'), '0', 'still nothing in egress.stream');

# --- a stream of etl ---------------------------------------------------

ok_as('etl', q{SELECT egress_add_stream('s1', 't1', 'FULL_TABLE', 'etl_dest')},
	'etl with SELECT adds a stream on its destination');
wait_stream_state($node, 's1', 'synced');
is($node->safe_psql('postgres', q{SELECT owner FROM egress_streams WHERE name = 's1'}),
	'etl', 's1 is owned by etl');
is(scalar(records_of(read_batches($etl_dir))), 10, 's1 wrote the 10 rows');

# losing SELECT: checked again at the next sync
my $worker = dbworker_pid();
like($worker, qr/^\d+$/, 'one database worker');
$node->safe_psql('postgres', 'REVOKE SELECT ON t1 FROM etl');
ok_as('etl', q{SELECT egress_resync_stream('s1')}, 'etl resyncs s1');
wait_stream_state($node, 's1', 'error');
like(stream_row($node, 's1')->{last_error}, qr/permission denied/, 'last_error says permission denied');
my $attempts = attempts('s1');
barrier();
is(stream_row($node, 's1')->{state}, 'error', 's1 stays in error');
is(attempts('s1'), $attempts, 's1 was not retried on its own (attempts unchanged)');
is(dbworker_pid(), $worker, 'the database worker did not restart');

# given back: resume retries
$node->safe_psql('postgres', 'GRANT SELECT ON t1 TO etl');
ok_as('etl', q{SELECT egress_resume_stream('s1')}, 'etl resumes s1');
wait_stream_state($node, 's1', 'synced');
ok(!defined stream_row($node, 's1')->{last_error}, 'last_error cleared by the completed sync');

# --- a dropped table -----------------------------------------------------

$node->safe_psql('postgres', q{SELECT egress_add_stream('s3', 't3', 'FULL_TABLE', 'su_dest')});
wait_stream_state($node, 's3', 'synced');
$node->safe_psql('postgres', 'DROP TABLE t3');
$node->safe_psql('postgres', q{SELECT egress_resync_stream('s3')});
wait_stream_state($node, 's3', 'error');
my $last_error = stream_row($node, 's3')->{last_error} // '';
like($last_error, qr/t3/, 'last_error names the relation');
like($last_error, qr/no longer exists|does not exist/, 'last_error says it no longer exists');
$attempts = attempts('s3');
barrier();
is(stream_row($node, 's3')->{state}, 'error', 's3 stays in error');
is(attempts('s3'), $attempts, 's3 was not retried on its own (attempts unchanged)');
is(dbworker_pid(), $worker, 'the database worker still did not restart');

# --- other roles' streams ------------------------------------------------

is(ok_as('etl', 'SELECT string_agg(name, \',\' ORDER BY name) FROM egress_streams', 'etl reads egress_streams'),
	's1', 'etl sees only its own stream');
sqlstate_is('etl', 'SELECT count(*) FROM egress.stream', '42501', 'etl reads egress.stream directly');
sqlstate_is('etl', q{SELECT egress_pause_stream('good1')}, '42501', "etl pauses a superuser's stream");
sqlstate_is('etl', q{SELECT egress_resync_stream('good1')}, '42501', "etl resyncs a superuser's stream");
sqlstate_is('etl', q{SELECT egress_remove_stream('good1')}, '42501', "etl removes a superuser's stream");
is(stream_row($node, 'good1')->{state}, 'synced', "the superuser's stream is untouched");

# --- rights to the destination: checked again whenever a worker opens it --

my $team_dir = new_outdir($node, 'team');
$node->safe_psql('postgres', q{
CREATE ROLE team;
GRANT pg_write_server_files TO team;
GRANT EXECUTE ON FUNCTION egress_add_destination(text, text, jsonb) TO team;
GRANT team TO etl;
GRANT SELECT ON t2 TO etl;
});
ok_as('etl', 'SET ROLE team; SELECT egress_add_destination(' . sql_quote('team_dest') . ', '
	  . sql_quote(file_url($team_dir)) . ')', 'etl adds a destination as role team');
ok_as('etl', q{SELECT egress_add_stream('inc_team', 't2', 'INCREMENTAL', 'team_dest', 'id', '{"interval": "1 hour"}')},
	"etl, a member of team, adds an INCREMENTAL stream to team's destination");
wait_stream_where($node, 'inc_team', q{state = 'synced' AND rows_sent = 5}, 60, 'inc_team: first run');
my $team_batches = scalar(read_batches($team_dir));

# no longer a member of the destination's owner
$node->safe_psql('postgres', 'REVOKE team FROM etl');
$node->safe_psql('postgres', q{INSERT INTO t2 VALUES (6)});
$node->safe_psql('postgres', q{SELECT egress_resync_stream('inc_team')});
wait_stream_state($node, 'inc_team', 'error');
like(stream_row($node, 'inc_team')->{last_error} // '', qr/privileges of role "team"/,
	'INCREMENTAL: a stream owner no longer in the destination\'s owner role: error, last_error says why');
is(scalar(read_batches($team_dir)), $team_batches, 'nothing more was written to the destination');
$attempts = attempts('inc_team');
barrier();
is(stream_row($node, 'inc_team')->{state}, 'error', 'inc_team stays in error');
is(attempts('inc_team'), $attempts, 'inc_team was not retried on its own');
is(dbworker_pid(), $worker, 'the database worker did not restart');

# pg_write_server_files revoked: the workers write no more server files for etl
ok_as('etl', q{SELECT egress_add_stream('inc_etl', 't2', 'INCREMENTAL', 'etl_dest', 'id', '{"interval": "1 hour"}')},
	'etl adds an INCREMENTAL stream to its own file destination');
wait_stream_where($node, 'inc_etl', q{state = 'synced' AND rows_sent = 6}, 60, 'inc_etl: first run');
my $etl_batches = scalar(read_batches($etl_dir));
$node->safe_psql('postgres', 'REVOKE pg_write_server_files FROM etl');
$node->safe_psql('postgres', q{INSERT INTO t2 VALUES (7)});
ok_as('etl', q{SELECT egress_resync_stream('inc_etl')}, 'etl asks for a run');
wait_stream_state($node, 'inc_etl', 'error');
like(stream_row($node, 'inc_etl')->{last_error} // '', qr/pg_write_server_files/,
	'INCREMENTAL: an owner without pg_write_server_files: error, last_error names the role it lacks');
is(scalar(read_batches($etl_dir)), $etl_batches, 'no file was written for etl');
ok_as('etl', q{SELECT egress_resync_stream('s1')}, 'etl resyncs its FULL_TABLE stream');
wait_stream_state($node, 's1', 'error');
like(stream_row($node, 's1')->{last_error} // '', qr/pg_write_server_files/, 'FULL_TABLE: the same');
is(scalar(read_batches($etl_dir)), $etl_batches, 'still no file written for etl');
is(dbworker_pid(), $worker, 'the database worker still did not restart');

$node->stop;
done_testing();
