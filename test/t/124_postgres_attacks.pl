# Attacks on postgres:// destinations (issue 15), as a role that is not a
# superuser (review H5).
#
# The source server also listens on 127.0.0.1 with trust authentication (the
# pg_hba.conf initdb -A trust writes) and pg_egress.allowed_destination_hosts
# allows 127.0.0.1 (create_node): a destination of a role that is not a
# superuser must never get into it, nor into a target whose pg_hba.conf
# trusts one role, whatever the URL says.  The password must not show
# anywhere another role (or the log) can see it.  A hostile target server
# (a few lines of Perl speaking the protocol) must not write into the
# source server's log or put bytes that are not valid in the database
# encoding into messages, nor receive the stored password when a member of
# the owner role (who cannot read it) moves the URL there.  A member of a
# destination's owner role must not move a destination that carries another
# member's stream, TLS settings included.  A LOG_BASED worker of a superuser's
# destination follows the rules of non-superusers once its owner is demoted.
# A target that stops answering is given up after the option "timeout" and
# retried.  libpq's fallback to the server user's ~/.postgresql/root.crt
# for verify-ca/verify-full without sslrootcert is documented (the
# administrator's trust store; docs/reference.md), and messages do not show
# the server user's home directory.
use strict;
use warnings;
use IO::Socket::INET;
use POSIX ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $PW = 'L0ader-pw-5e3d';		# the target's real password
my $WRONG = 'Wr0ng-pw-77aa';	# a wrong one
my $FAKE_PW = 'Fake-pw-c0de';	# given to the hostile server
my $FORGED = 'FORGED-5e3d';		# what the hostile server tries to log

# ---------------------------------------------------------------------------
# The source: also on 127.0.0.1, trusted there (initdb -A trust)
# ---------------------------------------------------------------------------
my $src = create_node('pgatk_src', cdc => 1, conf => "listen_addresses = '127.0.0.1'\n");
my $su = $src->safe_psql('postgres', 'SELECT current_user');
my $sport = $src->port;

sub sql { return $src->safe_psql('postgres', $_[0]); }

# query_as with the output of the last statement; dies on nothing
sub as
{
	my ($role, $q) = @_;
	my ($ret, $out, $err) = query_as($src, $role, $q);
	return ($ret, $out, $err);
}

# egress_check's "reachable" row of a destination, as a role: (ok, detail)
sub check_reach
{
	my ($role, $dest) = @_;
	my ($ret, $out, $err) = query_as($src, $role,
		"SELECT ok, detail FROM egress_check(" . sql_quote($dest) . ") "
		  . "WHERE \"check\" LIKE 'reachable%'");
	return ('error', $err) if $ret != 0;
	my ($ok, $detail) = split /\|/, $out, 2;
	return ($ok // '', $detail // '');
}

sql(qq{
CREATE ROLE mallory LOGIN IN ROLE egress_user;
GRANT EXECUTE ON FUNCTION egress_check(text, text) TO egress_user;
CREATE ROLE snoop LOGIN IN ROLE pg_read_all_data, pg_read_all_settings, pg_read_all_stats;
});

# ---------------------------------------------------------------------------
# The target: scram for everyone but "victim", whom it trusts
# ---------------------------------------------------------------------------
my $tgt = PostgreSQL::Test::Cluster->new('pgatk_tgt');
$tgt->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
$tgt->append_conf('postgresql.conf', qq{
listen_addresses = '127.0.0.1'
password_encryption = 'scram-sha-256'
log_statement = 'all'
log_connections = on
});
{
	my $hba = $tgt->data_dir . '/pg_hba.conf';
	open(my $fh, '<', $hba) or die;
	my $old = do { local $/; <$fh> };
	close $fh;
	write_file($hba, "host all victim 127.0.0.1/32 trust\n"
		  . "host all all 127.0.0.1/32 scram-sha-256\n$old");
}
$tgt->start;
my $tport = $tgt->port;
$tgt->safe_psql('postgres', qq{
SET password_encryption = 'scram-sha-256';
CREATE ROLE loader LOGIN PASSWORD '$PW';
CREATE ROLE victim LOGIN SUPERUSER;
CREATE DATABASE analytics OWNER loader;
});

# ---------------------------------------------------------------------------
# 1. The local server, trusted over TCP: never reached without a password
# ---------------------------------------------------------------------------
my $n = 0;
foreach my $host ('127.0.0.1', 'localhost', '127.1', '2130706433', '0x7f000001',
	'[::ffff:127.0.0.1]', '[::ffff:7f00:1]', '0.0.0.0', '0', '[::]', '[::1]',
	'localhost.', 'LOCALHOST')
{
	$n++;
	my $url = "postgres://$su\@$host:$sport/postgres";
	my ($ret, $out, $err) = as('mallory',
		"SELECT egress_add_destination('loc$n', " . sql_quote($url)
		  . ", '{\"password\": \"x\", \"connect_timeout\": \"3s\"}')");
	if ($ret != 0)
	{
		like($err, qr/not allowed|invalid PostgreSQL destination URL/,
			"local server via $host: refused at add");
		next;
	}
	my ($ok, $detail) = check_reach('mallory', "loc$n");
	is($ok, 'f', "local server via $host: egress_check does not connect");
	unlike($detail, qr/^connected/, "local server via $host: not connected ($detail)");
}

# a socket directory, spelled every way
foreach my $url ("postgres://$su\@%2Ftmp:$sport/postgres",
	"postgres://$su\@%2ftmp/postgres",
	"postgres://$su\@%40pg/postgres",
	"postgres://$su\@%2F/postgres")
{
	my ($ret, $out, $err) = as('mallory',
		"SELECT egress_add_destination('sock', " . sql_quote($url) . ", '{\"password\": \"x\"}')");
	isnt($ret, 0, "socket directory $url refused");
}

# ---------------------------------------------------------------------------
# 2. A target that trusts one role
# ---------------------------------------------------------------------------
as('mallory', "SELECT egress_add_destination('trusting', 'postgres://victim\@127.0.0.1:$tport/analytics', '{\"password\": \"x\"}')");
{
	my ($ok, $detail) = check_reach('mallory', 'trusting');
	is($ok, 'f', 'a target that does not ask for the password is refused');
	like($detail, qr/did not ask for the password/, '... saying why');
}
# with every sslmode (libpq retries without TLS for prefer/allow)
foreach my $mode ('disable', 'allow', 'prefer', 'require')
{
	as('mallory', "SELECT egress_alter_destination('trusting', options => '{\"sslmode\": \"$mode\"}')");
	my ($ok, $detail) = check_reach('mallory', 'trusting');
	is($ok, 'f', "trusting target, sslmode $mode: refused");
}

# ---------------------------------------------------------------------------
# 3. libpq options smuggled in the database or user name
# ---------------------------------------------------------------------------
foreach my $db ("host%3D%2Ftmp%20port%3D$sport%20dbname%3Dpostgres%20user%3D$su",
	"postgres%3A%2F%2F$su%40%2Ftmp%3A$sport%2Fpostgres",
	"analytics%20options%3D-csearch_path%3Dx",
	"service%3Dfoo",
	"analytics%3Fpassfile%3D%2Fetc%2Fpasswd")
{
	as('mallory', "SELECT egress_remove_destination('smuggle')");
	my ($ret, $out, $err) = as('mallory',
		"SELECT egress_add_destination('smuggle', 'postgres://loader\@127.0.0.1:$tport/$db', '{\"password\": \"$PW\"}')");
	if ($ret != 0)
	{
		pass("dbname $db refused at add");
		next;
	}
	my ($ok, $detail) = check_reach('mallory', 'smuggle');
	is($ok, 'f', "dbname $db: not expanded");
	like($detail, qr/database ".*" does not exist/, "dbname $db: taken as a name ($detail)");
}
foreach my $user ("loader%20dbname%3Dpostgres", "$su%20host%3D%2Ftmp")
{
	as('mallory', "SELECT egress_remove_destination('smuggle')");
	my ($ret, $out, $err) = as('mallory',
		"SELECT egress_add_destination('smuggle', 'postgres://$user\@127.0.0.1:$tport/analytics', '{\"password\": \"$PW\"}')");
	next if $ret != 0;
	my ($ok, $detail) = check_reach('mallory', 'smuggle');
	is($ok, 'f', "user $user: not expanded");
}
# options that are not options of the kind
foreach my $opt ('options', 'service', 'passfile', 'sslpassword', 'krbsrvname',
	'gssencmode', 'target_session_attrs', 'require_auth', 'hostaddr', 'host',
	'dbname', 'user', 'sslcrl', 'Password', 'PASSWORD')
{
	my ($ret, $out, $err) = as('mallory',
		"SELECT egress_add_destination('opt', 'postgres://loader\@127.0.0.1:$tport/analytics', "
		  . "'{\"password\": \"$PW\", \"$opt\": \"x\"}')");
	isnt($ret, 0, "option $opt refused");
}

# ---------------------------------------------------------------------------
# 4. The password: wrong, then right; never shown
# ---------------------------------------------------------------------------
my $log_from = -s $src->logfile;
my $tlog_from = -s $tgt->logfile;
sql("ALTER SYSTEM SET log_min_messages = debug2; ALTER SYSTEM SET log_error_verbosity = verbose; SELECT pg_reload_conf()");

as('mallory', "SELECT egress_add_destination('wh_bad', 'postgres://loader\@127.0.0.1:$tport/analytics', '{\"password\": \"$WRONG\", \"connect_timeout\": \"3s\"}')");
{
	my ($ok, $detail) = check_reach('mallory', 'wh_bad');
	is($ok, 'f', 'wrong password: refused');
	like($detail, qr/password authentication failed/, '... by the target');
	unlike($detail, qr/\Q$WRONG\E/, '... without the password');
}
sql(q{
CREATE TABLE public.t (id bigint PRIMARY KEY, v text);
INSERT INTO public.t SELECT g, 'v' || g FROM generate_series(1, 5) g;
GRANT SELECT ON public.t TO mallory;
});
# a delivery that fails: the worker logs why (at the first attempt)
as('mallory', "SELECT egress_add_stream('t_bad', 'public.t', 'FULL_TABLE', 'wh_bad')");
my $failure;
ok( poll_until('the failed delivery in the log', 60, sub {
			my $log = slurp_file($src->logfile, $log_from);
			($failure) = $log =~ /^(.*could not deliver batch t_bad.*)$/m;
			return defined $failure;
		}),
	'a delivery with the wrong password fails');
like($failure // '', qr/password authentication failed/, '... saying why');
unlike($failure // '', qr/\Q$WRONG\E/, '... without the password');
as('mallory', "SELECT egress_remove_stream('t_bad')");

# the right one: delivered
as('mallory', "SELECT egress_add_destination('wh', 'postgres://loader\@127.0.0.1:$tport/analytics', '{\"password\": \"$PW\", \"connect_timeout\": \"3s\"}')");
as('mallory', "SELECT egress_add_stream('t_wh', 'public.t', 'FULL_TABLE', 'wh')");
ok( poll_until('rows in the target', 90, sub {
			my ($r, $o) = $tgt->psql('analytics', 'SELECT count(*) FROM public.t');
			return $r == 0 && $o eq '5';
		}),
	'the stream is delivered with the right password');
{
	my ($ok, $detail) = check_reach('mallory', 'wh');
	is($ok, 't', 'egress_check connects');
	unlike($detail, qr/\Q$PW\E/, '... and does not show the password');
}

# where the password must not be
my $pw_re = "'" . substr($PW, 0, 5) . "' || '" . substr($PW, 5) . "'";
my $wrong_re = "'" . substr($WRONG, 0, 5) . "' || '" . substr($WRONG, 5) . "'";
is(sql("SELECT count(*) FROM egress_destinations WHERE options::text ~ ($pw_re) OR options::text ~ ($wrong_re)"), '0',
	'egress_destinations (superuser) masks it');
{
	my ($ret, $out, $err) = as('mallory', "SELECT options->>'password' FROM egress_destinations WHERE name = 'wh'");
	is($out, '***', 'egress_destinations (owner) masks it');
	($ret, $out, $err) = as('snoop', "SELECT count(*) FROM egress.destination WHERE options::text ~ ($pw_re)");
	ok($ret != 0 || $out eq '0', 'pg_read_all_data does not read egress.destination');
	($ret, $out, $err) = as('snoop', "SELECT count(*) FROM egress_destinations");
	ok($ret != 0 || $out eq '0', 'pg_read_all_data does not see the destination');
	($ret, $out, $err) = as('snoop', "SELECT count(*) FROM pg_stat_activity WHERE coalesce(query, '') ~ ($pw_re)");
	is($out, '0', 'pg_stat_activity of the source does not show it');
	($ret, $out, $err) = as('mallory', "SELECT string_agg(coalesce(detail, '') || coalesce(hint, ''), ' ') FROM egress_check()");
	unlike($out, qr/\Q$PW\E/, 'egress_check() does not show it');
}
is($tgt->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE coalesce(query, '') ~ ($pw_re)"),
	'0', 'pg_stat_activity of the target does not show it');
sql("ALTER SYSTEM RESET log_min_messages; ALTER SYSTEM RESET log_error_verbosity; SELECT pg_reload_conf()");
{
	my $log = slurp_file($src->logfile, $log_from);
	# the statements that carried it are the test's own (the test clusters
	# log every statement): other lines may not show it
	my @statements = grep { /\Q$PW\E|\Q$WRONG\E/ && !/statement: /i } split /\n/, $log;
	is(scalar(@statements), 0, 'the source log (debug2, verbose) does not show the password')
	  or diag join("\n", @statements[ 0 .. ($#statements < 5 ? $#statements : 5) ]);
	my $tlog = slurp_file($tgt->logfile, $tlog_from);
	my @t = grep { /\Q$PW\E/ && !/statement: /i } split /\n/, $tlog;
	is(scalar(@t), 0, 'the target log (log_statement = all) does not show it');
}

# ---------------------------------------------------------------------------
# 5. A member of the owner role moving another member's stream
# ---------------------------------------------------------------------------
sql(qq{
CREATE ROLE team IN ROLE egress_user;
CREATE ROLE sec LOGIN IN ROLE team;
CREATE ROLE intruder LOGIN IN ROLE team;
CREATE TABLE public.secret_t (id bigint PRIMARY KEY, ssn text);
GRANT SELECT ON public.secret_t TO sec;
});
as('sec', "SET ROLE team; SELECT egress_add_destination('team_wh', 'postgres://loader\@127.0.0.1:$tport/analytics', "
	  . "'{\"password\": \"$PW\", \"sslmode\": \"verify-full\", \"default_target_schema\": \"secure\"}')");
{
	my ($ret, $out, $err) = as('sec', "SELECT egress_add_stream('secret_s', 'public.secret_t', 'FULL_TABLE', 'team_wh')");
	is($ret, 0, 'a member adds a stream of a table only it may read') or diag $err;
}
foreach my $case (
	[ 'url' => "url => 'postgres://loader\@127.0.0.1:$sport/postgres'" ],
	[ 'default_target_schema' => "options => '{\"default_target_schema\": \"public\"}'" ],
	[ 'schema_mapping' => "options => '{\"schema_mapping\": {\"public\": \"open\"}}'" ],
	[ 'target_schema_privileges' => "options => '{\"target_schema_privileges\": [\"public\"]}'" ],
	[ 'sslmode (TLS downgrade)' => "options => '{\"sslmode\": \"disable\"}'" ],
	[ 'sslmode removed' => "options => '{\"sslmode\": null}'" ])
{
	my ($what, $arg) = @$case;
	my ($ret, $out, $err) = as('intruder', "SELECT egress_alter_destination('team_wh', $arg)");
	isnt($ret, 0, "another member may not change $what of a destination carrying the stream");
	like($err, qr/42501/, "... permission denied") if $ret != 0;
}

# ---------------------------------------------------------------------------
# 6. A hostile target server: notices and bytes of its choice
# ---------------------------------------------------------------------------
my $listen = IO::Socket::INET->new(
	LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 5, ReuseAddr => 1, Proto => 'tcp')
  or die "listen: $!";
my $fport = $listen->sockport;
my $captured = $src->basedir . '/fake_password';
my $fake = fork();
die "fork: $!" unless defined $fake;
if ($fake == 0)
{
	fake_server($listen, $captured);
	POSIX::_exit(0);
}
close $listen;

$log_from = -s $src->logfile;
as('mallory', "SELECT egress_add_destination('hostile', 'postgres://loader\@127.0.0.1:$fport/analytics', "
	  . "'{\"password\": \"$FAKE_PW\", \"sslmode\": \"disable\", \"connect_timeout\": \"3s\"}')");
{
	my ($ret, $out, $err) = query_as($src, 'mallory',
		"SELECT ok, encode(textsend(detail), 'hex') FROM egress_check('hostile') WHERE \"check\" LIKE 'reachable%'");
	my ($ok, $hex) = split /\|/, $out, 2;
	is($ok, 'f', 'hostile target: the session is not set up');
	my $bytes = pack('H*', $hex // '');
	ok(utf8::decode($bytes), 'hostile target: egress_check detail is valid UTF-8 (the database encoding)')
	  or diag "detail bytes: $hex";
}
# the log: the notice it sent at connection time must not start a line of
# its own (log forging), nor reach the log unmarked
ok( poll_until('the check is over', 10, sub { -s $src->logfile > $log_from }) || 1, 'log read');
{
	my $log = slurp_file($src->logfile, $log_from);
	unlike($log, qr/^\Q$FORGED\E/m, 'hostile target cannot write a line of its choice into the source log');
}

# a member of the owner role (who cannot read the password) moves the URL to
# its own server: the stored password must not follow the destination there
unlink $captured;
sql(qq{
CREATE ROLE crew IN ROLE egress_user;
CREATE ROLE deckhand LOGIN IN ROLE crew;
SET ROLE crew;
SELECT egress_add_destination('crew_wh', 'postgres://loader\@127.0.0.1:$tport/analytics', '{"password": "$PW", "sslmode": "disable"}');
});
{
	my ($ret, $out, $err) = as('deckhand', "SELECT options->>'password' FROM egress_destinations WHERE name = 'crew_wh'");
	is($out, '***', 'a member of the owner role does not see the password');
	($ret, $out, $err) = as('deckhand',
		"SELECT egress_alter_destination('crew_wh', url => 'postgres://loader\@127.0.0.1:$fport/analytics')");
	check_reach('deckhand', 'crew_wh') if $ret == 0;
	my $got = -e $captured ? slurp_file($captured) : '';
	$got =~ s/\0$//;
	isnt($got, $PW, 'moving the URL does not hand the stored password to the new host');
}
kill 'TERM', $fake;
waitpid($fake, 0);

# ---------------------------------------------------------------------------
# 6b. A target that stops answering (hung, or its host gone without a reset):
#     the worker must not wait forever holding the slot's WAL; the stream
#     shows it retrying: the option "timeout" (a statement's deadline)
#     gives up on the statement, closes the connection and retries.
# ---------------------------------------------------------------------------
{
	my $l2 = IO::Socket::INET->new(
		LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 5, ReuseAddr => 1, Proto => 'tcp')
	  or die "listen: $!";
	my $sport2 = $l2->sockport;
	my $silent = fork();
	die "fork: $!" unless defined $silent;
	if ($silent == 0)
	{
		fake_server($l2, $captured . '_silent', 'silent');
		POSIX::_exit(0);
	}
	close $l2;
	{
		my ($ret, $out, $err) = as('mallory',
			"SELECT egress_add_destination('silent', 'postgres://loader\@127.0.0.1:$sport2/analytics', "
			  . "'{\"password\": \"x\", \"sslmode\": \"disable\", \"timeout\": \"3s\"}')");
		is($ret, 0, 'a postgres destination takes a query timeout') or diag $err;
		my $noticed = 0;
		if ($ret == 0)
		{
			as('mallory', "SELECT egress_add_stream('t_silent', 'public.t', 'FULL_TABLE', 'silent')");
			$noticed = poll_until('the silent target noticed', 30, sub {
				slurp_file($src->logfile) =~
				  /could not deliver batch t_silent\S* to PostgreSQL destination \S+ \(attempt 1\): the target server did not answer within 3000 ms/;
			});
			as('mallory', "SELECT egress_remove_stream('t_silent')");
		}
		ok($noticed, 'a target that stops answering is noticed and retried');
	}
	kill 'TERM', $silent;
	waitpid($silent, 0);
}

# ---------------------------------------------------------------------------
# 7. verify-full without sslrootcert: no file of the server's OS user
# ---------------------------------------------------------------------------
SKIP:
{
	my $dir = $tgt->data_dir;
	system("openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -days 2 "
		  . "-keyout $dir/server.key -out $dir/server.crt >/dev/null 2>&1") == 0
	  or skip('no openssl', 3);
	chmod 0600, "$dir/server.key";
	$tgt->append_conf('postgresql.conf', "ssl = on\n");
	$tgt->restart;
	as('mallory', "SELECT egress_add_destination('tls', 'postgres://loader\@127.0.0.1:$tport/analytics', "
		  . "'{\"password\": \"$PW\", \"sslmode\": \"verify-full\"}')");
	my ($ok, $detail) = check_reach('mallory', 'tls');
	is($ok, 'f', 'verify-full without a CA: not connected');
	# libpq then uses the server's trust store (~/.postgresql/root.crt of
	# the operating system user, the administrator's: documented); the
	# message does not show where that user's home directory is
	my $home = (getpwuid($>))[7];
	unlike($detail, qr{\Q$home\E/\.postgresql},
		"the message does not show the server user's home directory ($detail)");
	like($detail, qr{~/\.postgresql/root\.crt}, 'the message names ~/.postgresql/root.crt');
}

# ---------------------------------------------------------------------------
# 8. A superuser's destination through the socket directory, trusted: once
#    its owner is no longer a superuser it connects no more
# ---------------------------------------------------------------------------
{
	my $sock = $src->host;
	(my $enc = $sock) =~ s{([^A-Za-z0-9._~-])}{sprintf('%%%02X', ord($1))}ge;
	sql("CREATE ROLE boss LOGIN SUPERUSER");
	my ($ret, $out, $err) = as('boss',
		"SELECT egress_add_destination('boss_sock', 'postgres://$su\@$enc:$sport/postgres', '{\"connect_timeout\": \"3s\"}')");
	is($ret, 0, 'a superuser may use the socket directory') or diag $err;
	my ($ok, $detail) = check_reach('boss', 'boss_sock');
	is($ok, 't', '... and egress_check connects through it') or diag $detail;
	sql("ALTER ROLE boss NOSUPERUSER; GRANT egress_user TO boss");
	($ok, $detail) = check_reach('boss', 'boss_sock');
	isnt($ok, 't', 'once not a superuser: no connection through the socket directory');
	($ok, $detail) = check_reach($su, 'boss_sock');
	isnt($ok, 't', '... not even when a superuser checks it');
}

# ---------------------------------------------------------------------------
# 9. A LOG_BASED worker of a superuser's socket destination: when the owner
#    stops being a superuser, its next connection follows the rules of
#    roles that are not superusers (no socket directory, a password)
# ---------------------------------------------------------------------------
{
	my $sock = $src->host;
	(my $enc = $sock) =~ s{([^A-Za-z0-9._~-])}{sprintf('%%%02X', ord($1))}ge;
	sql("CREATE DATABASE sink_db; CREATE ROLE boss2 LOGIN SUPERUSER");
	my ($ret, $out, $err) = as('boss2', qq{
CREATE TABLE public.cdc_t (id bigint PRIMARY KEY, v text);
SELECT egress_add_destination('boss_cdc', 'postgres://$su\@$enc:$sport/sink_db', '{"default_target_schema": "mirror"}');
SELECT egress_add_stream('cdc_s', 'public.cdc_t', 'LOG_BASED', 'boss_cdc');
});
	is($ret, 0, 'a superuser adds a LOG_BASED stream to a socket destination') or diag $err;
	ok( poll_until('the stream streams', 60, sub {
				sql("SELECT coalesce(state, '') FROM egress_streams WHERE name = 'cdc_s'") eq 'streaming';
			}),
		'... it streams');
	sql("INSERT INTO public.cdc_t VALUES (1, 'one')");
	my $count = sub {
		my ($r, $o) = $src->psql('sink_db', 'SELECT count(*) FROM mirror.cdc_t');
		return $r == 0 ? $o : -1;
	};
	ok(poll_until('row 1 in sink_db', 60, sub { $count->() eq '1' }), '... and applies through the socket');

	my $from = -s $src->logfile;
	sql("ALTER ROLE boss2 NOSUPERUSER; GRANT egress_user TO boss2");
	sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'sink_db' AND application_name = 'pg_egress'");
	sql("INSERT INTO public.cdc_t VALUES (2, 'two')");
	my $refused = 0;
	poll_until('row 2 applied, or the connection refused', 40, sub {
		$refused = slurp_file($src->logfile, $from) =~
		  /password is required for destinations of roles|socket directories are not allowed/;
		return $refused || $count->() eq '2';
	});
	is($count->(), '1', 'the demoted owner\'s worker does not connect through the socket again');
	ok($refused, '... it is refused as a non-superuser\'s destination');
}

$src->stop;
$tgt->stop;
done_testing();

# ---------------------------------------------------------------------------
# The hostile server: asks for the password in clear text (so that
# PQconnectionUsedPassword is true), sends a notice whose text holds a line
# of its own, a server_version with a byte that is not UTF-8, and answers
# every query with an error whose message is not UTF-8.
# ---------------------------------------------------------------------------
sub fake_server
{
	my ($listen, $captured, $mode) = @_;
	$mode //= 'hostile';
	local $SIG{TERM} = sub { POSIX::_exit(0) };
	while (my $c = $listen->accept)
	{
		binmode $c;
		eval { fake_session($c, $captured, $mode) };
		close $c;
	}
	return;
}

sub readn
{
	my ($c, $len) = @_;
	my $buf = '';
	while (length($buf) < $len)
	{
		my $got = sysread($c, $buf, $len - length($buf), length($buf));
		die "eof\n" unless $got;
	}
	return $buf;
}

sub pmsg { my ($t, $body) = @_; return $t . pack('N', length($body) + 4) . $body; }

sub fake_session
{
	my ($c, $captured, $mode) = @_;
	for (;;)
	{
		my $len = unpack('N', readn($c, 4));
		my $body = readn($c, $len - 4);
		my $code = unpack('N', $body);
		if ($code == 80877103 || $code == 80877104)    # SSL, GSS encryption
		{
			syswrite($c, 'N');
			next;
		}
		last;
	}
	syswrite($c, pmsg('R', pack('N', 3)));            # cleartext password
	my $t = readn($c, 1);
	my $len = unpack('N', readn($c, 4));
	my $pw = readn($c, $len - 4);
	if (open(my $fh, '>', $captured)) { print $fh $pw; close $fh; }
	syswrite($c, pmsg('R', pack('N', 0)));
	syswrite($c, pmsg('N', "SWARNING\0VWARNING\0C01000\0Mhello\n$FORGED LOG:  database system is shut down\0\0"))
	  if $mode eq 'hostile';
	syswrite($c, pmsg('S', $mode eq 'hostile' ? "server_version\x0015.0 \xff\xfe\0" : "server_version\x0015.0\0"));
	syswrite($c, pmsg('S', "client_encoding\0UTF8\0"));
	syswrite($c, pmsg('S', "standard_conforming_strings\0on\0"));
	syswrite($c, pmsg('K', pack('NN', 4242, 4242)));
	syswrite($c, pmsg('Z', 'I'));
	my $silent_answered = 0;
	for (;;)
	{
		my $type = readn($c, 1);
		my $l = unpack('N', readn($c, 4));
		readn($c, $l - 4) if $l > 4;
		last if $type eq 'X';
		if ($mode eq 'silent')
		{
			# the session's SETs are answered; then nothing, ever (a
			# server that hangs, or a connection whose peer is gone)
			next if $silent_answered++;
			syswrite($c, pmsg('C', "SET\0")) for 1 .. 4;
			syswrite($c, pmsg('Z', 'I'));
			next;
		}
		syswrite($c, pmsg('E', "SERROR\0VERROR\0CXX000\0Mbad \xff\xfe bytes\0\0"));
		syswrite($c, pmsg('Z', 'I'));
	}
	return;
}
