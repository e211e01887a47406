# postgres:// destinations: the connection and its security (issue 15).
#
# A second PostgreSQL cluster is the target, listening on 127.0.0.1 with
# scram-sha-256 for database wh and trust for database trustdb.
#
#   - wrong password: egress_check fails saying so; a stream shows the
#     failure in last_error and is retried; egress_alter_destination with
#     the right password lets it through (when the apply engine is built)
#   - unreachable port: egress_check and last_error say so
#   - roles that are not superusers: a password is required; a target that
#     does not ask for it (trust) is refused after connecting, before
#     anything is sent (PQconnectionUsedPassword); the server's own
#     PGPASSWORD / PGPASSFILE never stand in for a wrong password
#   - egress_check reports the server version and whether the user may
#     create tables, and fails when it may not
#   - the password is never in egress_destinations, egress_check output,
#     last_error or the server log

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $PW = 'Ld-s3cr3t-pw-4711';
my $WRONG = 'Wr0ng-pw-0815';

# ---- the target cluster ----
my $tgt = PostgreSQL::Test::Cluster->new('pgtarget');
$tgt->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
$tgt->append_conf('postgresql.conf', qq{
listen_addresses = '127.0.0.1'
password_encryption = 'scram-sha-256'
log_connections = on
# the test's own statements carry the password (CREATE ROLE)
log_statement = none
});
# local admin connections of the test stay trusted; TCP: scram, but trust
# for trustdb (a server that lets anyone in)
open my $hba, '>', $tgt->data_dir . '/pg_hba.conf' or die $!;
print $hba "local all all trust\n";
print $hba "host trustdb all 127.0.0.1/32 trust\n";
print $hba "host all all 127.0.0.1/32 scram-sha-256\n";
close $hba;
$tgt->start;
my $tport = $tgt->port;
$tgt->safe_psql('postgres', qq{
CREATE ROLE loader LOGIN PASSWORD '$PW';
CREATE DATABASE wh OWNER loader;
CREATE DATABASE trustdb OWNER loader;
});
$tgt->safe_psql('wh', q{CREATE SCHEMA locked; REVOKE ALL ON SCHEMA locked FROM PUBLIC;});

# ---- the source ----
# the test's own statements carry passwords: not logged (those that fail
# are, with their text: they carry the password "x")
my $src = create_node('pgsource', cdc => 1, conf => "log_statement = none\n");
$src->safe_psql('postgres', q{
CREATE ROLE mallory LOGIN IN ROLE egress_user;
CREATE TABLE t (id int PRIMARY KEY, v text);
INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 5) g;
GRANT SELECT ON t TO mallory;
});

sub url { my ($db, $port) = @_; return "postgres://loader\@127.0.0.1:" . ($port // $tport) . "/$db"; }

sub add_dest
{
	my ($role, $name, $url, $options) = @_;
	my $sql = 'SELECT egress_add_destination(' . sql_quote($name) . ', ' . sql_quote($url)
	  . (defined $options ? ', ' . sql_quote($options) : '') . ')';
	return $role ? query_as($src, $role, $sql) : $src->psql('postgres', $sql);
}

# (ok, detail) of egress_check's reachable row of a destination, as role
sub reachable
{
	my ($dest, $role) = @_;
	my $sql = ($role ? "SET ROLE $role; " : '')
	  . q{SELECT ok::text || E'\x1f' || coalesce(detail, '') FROM egress_check(}
	  . sql_quote($dest) . q{) WHERE "check" = } . sql_quote("reachable ($dest)");
	my $out = $src->safe_psql('postgres', $sql);
	return ('missing', '') if $out eq '';
	return split /\x1f/, $out, 2;
}

sub no_secret
{
	my ($text, $what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	unlike($text // '', qr/\Q$PW\E|\Q$WRONG\E/, "$what shows no password");
}

# ---- superuser destination: wrong password, then the right one ----
my ($ret, $out, $err) = add_dest(undef, 'wh', url('wh'),
	qq{{"password": "$WRONG", "connect_timeout": "3s", "flush_interval": "200ms"}});
is($ret, 0, 'a postgres destination is added') or diag $err;
is($src->safe_psql('postgres', q{SELECT location FROM egress_destinations WHERE name = 'wh'}),
	"loader\@127.0.0.1:$tport/wh", 'its location is user@host:port/dbname');
my ($ok, $detail) = reachable('wh');
is($ok, 'false', 'egress_check: the wrong password fails');
like($detail, qr{^could not connect to PostgreSQL destination loader\@127\.0\.0\.1:\d+/wh: .*password authentication failed for user "loader"},
	'... saying so');
no_secret($detail, 'egress_check');

$src->safe_psql('postgres', qq{SELECT egress_alter_destination('wh', options => '{"password": "$PW"}')});
($ok, $detail) = reachable('wh');
is($ok, 'true', 'egress_check: the right password connects') or diag $detail;
like($detail, qr{^connected to PostgreSQL 15\.\d+[^;]* at loader\@127\.0\.0\.1:\d+/wh; the user may create tables in schema "public"},
	'... saying where, the version, and what it may create');
no_secret($detail, 'egress_check');
no_secret($src->safe_psql('postgres', q{SELECT row_to_json(d)::text FROM egress_destinations d}),
	'egress_destinations');
is($src->safe_psql('postgres', q{SELECT options->>'password' FROM egress_destinations WHERE name = 'wh'}),
	'***', '... which shows the password as ***');

# a schema the user may not create tables in
$src->safe_psql('postgres', q{SELECT egress_alter_destination('wh', options => '{"default_target_schema": "locked"}')});
($ok, $detail) = reachable('wh');
is($ok, 'false', 'egress_check: a schema without CREATE fails');
like($detail, qr{permission denied to create tables in schema "locked"}, '... naming it');
$src->safe_psql('postgres', q{SELECT egress_alter_destination('wh', options => '{"default_target_schema": "raw_app"}')});
($ok, $detail) = reachable('wh');
is($ok, 'true', 'a schema still to be created: the database CREATE privilege counts') or diag $detail;
like($detail, qr{may create tables in the database, for schema "raw_app"}, '... saying so');
$src->safe_psql('postgres', q{SELECT egress_alter_destination('wh', options => '{"default_target_schema": null}')});

# ---- unreachable: nobody listens ----
my $dead = PostgreSQL::Test::Cluster::get_free_port();
($ret, $out, $err) = add_dest(undef, 'dead', url('wh', $dead), qq{{"password": "$PW", "connect_timeout": "2s"}});
is($ret, 0, 'a destination at a port nobody listens on') or diag $err;
($ok, $detail) = reachable('dead');
is($ok, 'false', 'egress_check: unreachable');
like($detail, qr{could not connect to PostgreSQL destination loader\@127\.0\.0\.1:$dead/wh: .*Connection refused},
	'... connection refused');
no_secret($detail, 'egress_check');

# ---- roles that are not superusers ----
($ret, $out, $err) = add_dest('mallory', 'm_nopw', url('wh'));
isnt($ret, 0, 'a non-superuser destination without a password is refused');
like($err, qr/password is required/, '... password is required');
($ret, $out, $err) = add_dest('mallory', 'm_key', url('wh'),
	q{{"password": "x", "sslkey": "/etc/ssl/private/ssl-cert-snakeoil.key"}});
like($err, qr/permission denied to set destination option "sslkey"/, 'a non-superuser cannot name a key file');
($ret, $out, $err) = add_dest('mallory', 'm_sock', 'postgres://loader@' . '%2Ftmp' . '/wh', q{{"password": "x"}});
like($err, qr/permission denied to use a socket directory/, 'nor a socket directory');

# trust: the server lets the connection in without the password
($ret, $out, $err) = add_dest('mallory', 'm_trust', url('trustdb'), qq{{"password": "$PW"}});
is($ret, 0, 'a non-superuser destination at a trust database is added (its authentication is not known then)')
  or diag $err;
($ok, $detail) = query_reachable_as_mallory('m_trust');
is($ok, 'false', 'egress_check: a target that did not ask for the password is refused');
like($detail, qr/did not ask for the password/, '... saying so');
no_secret($detail, 'egress_check');
# the same for a superuser's destination is fine: anything libpq accepts
($ret, $out, $err) = add_dest(undef, 's_trust', url('trustdb'));
($ok, $detail) = reachable('s_trust');
is($ok, 'true', "a superuser's destination may use trust") or diag $detail;

sub query_reachable_as_mallory
{
	my ($dest) = @_;
	my ($r, $o, $e) = query_as($src, 'mallory',
		q{SELECT ok::text || E'\x1f' || coalesce(detail, '') FROM egress_check(} . sql_quote($dest)
		  . q{) WHERE "check" = } . sql_quote("reachable ($dest)"));
	return ('error', $e) if $r != 0;
	return split /\x1f/, $o, 2;
}

# the server's own PGPASSWORD and password file never stand in for a
# non-superuser's password
my $passfile = $src->basedir . '/pgpass';
open my $pf, '>', $passfile or die $!;
print $pf "*:*:*:loader:$PW\n";
close $pf;
chmod 0600, $passfile;
{
	local $ENV{PGPASSFILE} = $passfile;
	local $ENV{PGPASSWORD} = $PW;
	$src->restart;
}
($ret, $out, $err) = add_dest('mallory', 'm_wrong', url('wh'), qq{{"password": "$WRONG"}});
is($ret, 0, 'a non-superuser destination with a wrong password') or diag $err;
($ok, $detail) = query_reachable_as_mallory('m_wrong');
is($ok, 'false', "egress_check: the server's PGPASSWORD and password file do not help it");
like($detail, qr/password authentication failed/, '... the wrong password is used');
($ret, $out, $err) = add_dest('mallory', 'm_ok', url('wh'), qq{{"password": "$PW"}});
($ok, $detail) = query_reachable_as_mallory('m_ok');
is($ok, 'true', 'with the right password it connects') or diag $detail;
# a superuser's destination without a password: libpq's defaults apply
($ret, $out, $err) = add_dest(undef, 's_nopw', url('wh'));
($ok, $detail) = reachable('s_nopw');
is($ok, 'true', "a superuser's destination may rely on the server's password file") or diag $detail;

# ---- a stream: the failure shown, retried, fixed by alter ----
$src->safe_psql('postgres', q{SELECT egress_alter_destination('m_wrong', options => '{"flush_interval": "200ms"}')});
($ret, $out, $err) = query_as($src, 'mallory', q{SELECT egress_add_stream('st', 't', 'LOG_BASED', 'm_wrong')});
is($ret, 0, 'a stream to the destination with the wrong password') or diag $err;
wait_stream_state($src, 'st', 'retrying', 60);
ok(poll_until('the failure in the log', 30, sub {
	slurp_file($src->logfile) =~ /could not deliver batch \S+ to PostgreSQL destination loader\@127\.0\.0\.1:$tport\/wh \(attempt 1\): .*password authentication failed for user "loader"; retrying/;
}), 'the server log says why the batch is retried');
no_secret(stream_row($src, 'st')->{last_error}, 'last_error');
is($tgt->safe_psql('wh', q{SELECT count(*) FROM pg_class WHERE relname = 't'}), '0', 'nothing reached the target');
# (an initial sync retries its batch until it is delivered, with the
# settings it started with: egress_alter_destination alone does not reach
# it, pausing and resuming the stream does.  The stream stays retrying
# here; the flow is shown with another destination.)

# ---- a destination that works: rows flow ----
$src->safe_psql('postgres', q{SELECT egress_alter_destination('m_ok', options => '{"flush_interval": "200ms", "batch_size_rows": 2}')});
($ret, $out, $err) = query_as($src, 'mallory', q{SELECT egress_add_stream('sf', 't', 'LOG_BASED', 'm_ok')});
is($ret, 0, 'a stream to the destination with the right password') or diag $err;
ok(poll_until('rows in the target', 90, sub {
	my ($r, $o) = $tgt->psql('wh', 'SELECT count(*) FROM public.t');
	return $r == 0 && $o eq '5';
}), 'the rows arrive in the target') or diag explain stream_row($src, 'sf');
cmp_ok(stream_row($src, 'sf')->{batches_sent}, '>=', 3, 'in batches of batch_size_rows (2) rows');
$src->safe_psql('postgres', q{INSERT INTO t VALUES (6, 'v6')});
ok(poll_until('the change in the target', 60, sub {
	my ($r, $o) = $tgt->psql('wh', 'SELECT count(*) FROM public.t');
	return $r == 0 && $o eq '6';
}), 'and the changes after them');

# the password changes on the target: changes are retried, last_error says
# why; the new password given, they flow again
$tgt->safe_psql('postgres', q{SET log_statement = none; ALTER ROLE loader PASSWORD 'rotated-9931'});
$tgt->safe_psql('postgres', q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pg_egress'});
$src->safe_psql('postgres', q{INSERT INTO t VALUES (7, 'v7')});
wait_stream_where($src, 'sf', q{last_error ~ 'password authentication failed for user "loader"'}, 90,
	'a rotated password: last_error says the password was refused');
no_secret(stream_row($src, 'sf')->{last_error}, 'last_error');
($ret, $out, $err) = query_as($src, 'mallory',
	q{SELECT egress_alter_destination('m_ok', options => '{"password": "rotated-9931"}')});
is($ret, 0, 'the owner gives the new password') or diag $err;
query_as($src, 'mallory', q{SELECT egress_resume_stream('sf')})
  if (stream_row($src, 'sf')->{state} // '') eq 'error';
ok(poll_until('the change after the rotation', 90, sub {
	my ($r, $o) = $tgt->psql('wh', 'SELECT count(*) FROM public.t');
	return $r == 0 && $o eq '7';
}), 'the change made meanwhile arrives') or diag explain stream_row($src, 'sf');
unlike(slurp_file($src->logfile), qr/rotated-9931/, 'the new password is not in the server log');

# a refused connection (the target did not ask for the password) stops the
# stream: retrying cannot cure it
($ret, $out, $err) = query_as($src, 'mallory', q{SELECT egress_add_stream('strust', 't', 'LOG_BASED', 'm_trust')});
is($ret, 0, 'a stream to the trust database') or diag $err;
wait_stream_where($src, 'strust', q{state = 'error' AND last_error ~ 'did not ask for the password'}, 60,
	'a target that lets the connection in without the password: the stream stops, saying why');
is($tgt->safe_psql('trustdb', q{SELECT count(*) FROM pg_class WHERE relname IN ('t', '_pg_egress_state')}), '0',
	'... and nothing was created there');

# unreachable: the target stops; the stream retries and says so
$tgt->stop;
$src->safe_psql('postgres', q{INSERT INTO t VALUES (8, 'v8')});
wait_stream_where($src, 'sf', q{last_error ~ 'Connection refused'}, 90,
	'the target down: last_error says the connection was refused');
$tgt->start;
ok(poll_until('the change after the outage', 90, sub {
	my ($r, $o) = $tgt->psql('wh', 'SELECT count(*) FROM public.t');
	return $r == 0 && $o eq '8';
}), 'the target back: the change arrives') or diag explain stream_row($src, 'sf');

# ---- the password is nowhere ----
no_secret($src->safe_psql('postgres', q{SELECT string_agg(coalesce(detail, '') || coalesce(hint, ''), ' ') FROM egress_check()}),
	'egress_check()');
no_secret($src->safe_psql('postgres', q{SELECT string_agg(coalesce(last_error, ''), ' ') FROM egress_streams}),
	'egress_streams');
no_secret($src->safe_psql('postgres', q{SELECT string_agg(options::text, ' ') FROM egress_destinations}),
	'egress_destinations');
my $log = slurp_file($src->logfile);
no_secret($log, 'the source server log');
no_secret(slurp_file($tgt->logfile), 'the target server log');
like(slurp_file($tgt->logfile), qr/application_name=pg_egress/, 'the target sees application_name pg_egress');

$src->stop;
$tgt->stop;
done_testing();
