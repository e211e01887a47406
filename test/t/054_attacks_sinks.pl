# Attacks on sinks and the network, each failing on pg_egress 0.1:
#
# 1. Destinations of non-superusers may not point at loopback, link-local
#    (169.254.169.254, the cloud metadata address), private and other
#    special addresses unless pg_egress.allowed_destination_hosts lists
#    them: refused at egress_add_destination (literal addresses, and host
#    names by every address they resolve to), and refused again on the
#    connection (the address actually connected to: a DNS answer, or the
#    setting, may have changed since).  Superusers' destinations are not
#    limited.
# 2. URL paths carry tokens (webhooks): never in last_error nor in the
#    server log, not even when the receiver's answer echoes them.
# 3. A huge Retry-After saturates (no overflow to a tiny wait) and is capped
#    at retry_max_interval.
# 4. Temporary files are created exclusively: a symbolic link planted at the
#    name 0.1 would have used (export, file destination) is not followed.

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

# the default setting ('*'), not the suite's '*, 127.0.0.1'
my $node = create_node('attacks_sinks', cdc => 1,
	conf => "pg_egress.allowed_destination_hosts = '*'\n");
my $rcv = EgressHttp->start($node);
my $port = $rcv->port;

$node->safe_psql('postgres', q{
CREATE ROLE mallory LOGIN;
GRANT EXECUTE ON FUNCTION egress_add_destination(text, text, jsonb),
	egress_add_stream(text, regclass, text, text, text, jsonb),
	egress_resume_stream(text) TO mallory;
GRANT SELECT ON egress_streams TO mallory;
CREATE TABLE t (id int PRIMARY KEY, v text);
INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 5) g;
GRANT SELECT ON t TO mallory;
});

sub reqs { my ($path) = @_; return grep { $_->{path} eq $path } $rcv->requests; }

sub add_dest_as
{
	my ($role, $name, $url, $options) = @_;
	return query_as($node, $role,
		'SELECT egress_add_destination(' . sql_quote($name) . ', ' . sql_quote($url)
		  . (defined $options ? ', ' . sql_quote($options) : '') . ')');
}

sub set_allowed
{
	my ($value) = @_;
	$node->safe_psql('postgres',
		defined $value
		? 'ALTER SYSTEM SET pg_egress.allowed_destination_hosts = ' . sql_quote($value)
		: 'ALTER SYSTEM RESET pg_egress.allowed_destination_hosts');
	$node->reload;
	my $want = $value // '*';
	poll_until('the setting to be reloaded', 30,
		sub { $node->safe_psql('postgres', 'SHOW pg_egress.allowed_destination_hosts') eq $want });
	return;
}

# ---- 1. at egress_add_destination ---------------------------------------------------------------
is($node->safe_psql('postgres', 'SHOW pg_egress.allowed_destination_hosts'), '*',
	'the default is *');
my @refused = (
	[ "http://127.0.0.1:$port/ingest", qr/127\.0\.0\.1 is a loopback address/ ],
	[ 'http://169.254.169.254/latest/meta-data/', qr/169\.254\.169\.254 is a link-local address/ ],
	[ "http://[::1]:$port/x", qr/::1 is a loopback address/ ],
	[ "http://localhost:$port/x", qr/"localhost" resolves to (127\.0\.0\.1|::1), a loopback address/ ],
	[ 'http://10.1.2.3/x', qr/private/ ],
	[ 'http://172.20.0.1/x', qr/private/ ],
	[ 'http://192.168.1.1/x', qr/private/ ],
	[ 'http://[fd00:ec2::254]/x', qr/private/ ],
	[ 'http://[fe80::1]/x', qr/link-local/ ],
	[ "http://0.0.0.0:$port/x", qr/"this network"/ ],
	[ "http://[::ffff:127.0.0.1]:$port/x", qr/127\.0\.0\.1 is a loopback address/ ],
	[ "http://2130706433:$port/x", qr/127\.0\.0\.1 is a loopback address/ ],
	[ "http://0x7f.1:$port/x", qr/127\.0\.0\.1 is a loopback address/ ],
	[ "https://u:p\@127.1:$port/x", qr/127\.0\.0\.1 is a loopback address/ ],);
my $i = 0;
foreach my $case (@refused)
{
	my ($url, $why) = @$case;
	my ($ret, $out, $err) = add_dest_as('mallory', 'r' . $i++, $url);
	isnt($ret, 0, "a non-superuser cannot add a destination at $url");
	like($err, qr/42501: destination host "[^"]+" is not allowed/, "... 42501 naming the host")
	  or diag $err;
	like($err, $why, '... and why');
}
is($node->safe_psql('postgres', q{SELECT count(*) FROM egress.destination WHERE name ~ '^r\d+$'}),
	'0', 'none of them was added');
my ($ret, $out, $err) = add_dest_as('mallory', 'pub', 'https://203.0.113.9/hook');
is($ret, 0, 'a non-superuser adds a destination at a public address') or diag $err;
($ret, $out, $err) = add_dest_as('mallory', 'unresolved', 'https://no-such-host.invalid/hook');
is($ret, 0, '... and at a name that does not resolve now (checked when connecting)') or diag $err;

# the setting: superusers only, checked
($ret, $out, $err) = query_as($node, 'mallory', q{SET pg_egress.allowed_destination_hosts = '*, 127.0.0.1'});
isnt($ret, 0, 'a non-superuser cannot change the setting');
($ret, $out, $err) = $node->psql('postgres',
	q{ALTER SYSTEM SET pg_egress.allowed_destination_hosts = '*, not a host!'});
like($err, qr/invalid value for parameter "pg_egress.allowed_destination_hosts".*\n.*"not a host!" is not a host name/,
	'an invalid entry is refused');

# listed: an address, a range, a name
set_allowed('10.0.0.0/8, 127.0.0.1, localhost');
($ret, $out, $err) = add_dest_as('mallory', 'ok10', 'http://10.9.8.7/x');
is($ret, 0, 'a listed range is allowed') or diag $err;
($ret, $out, $err) = add_dest_as('mallory', 'okname', "http://localhost:$port/name");
is($ret, 0, 'a listed host name is allowed, whatever it resolves to') or diag $err;
($ret, $out, $err) = add_dest_as('mallory', 'nopub', 'https://203.0.113.9/hook');
isnt($ret, 0, 'without *, an unlisted public address is refused');
like($err, qr/203\.0\.113\.9 is not listed/, '... as not listed');
($ret, $out, $err) = add_dest_as('mallory', 'dm', "http://127.0.0.1:$port/m",
	'{"retry_initial_interval": "100ms", "retry_max_interval": "1s", "flush_interval": "100ms"}');
is($ret, 0, 'a listed address is allowed') or diag $err;

# ---- 1b. on the connection: the setting changed since (as a DNS answer may) ---------------------
set_allowed(undef);
($ret, $out, $err) = query_as($node, 'mallory', q{SELECT egress_add_stream('sm', 't', 'FULL_TABLE', 'dm')});
is($ret, 0, 'the non-superuser adds a stream to the destination') or diag $err;
wait_stream_state($node, 'sm', 'error');
my $row = stream_row($node, 'sm');
like($row->{last_error}, qr/may not be connected to: 127\.0\.0\.1 is a loopback address/,
	'the connection to 127.0.0.1 is refused: last_error says why');
is(scalar(reqs('/m')), 0, '... and the receiver got no request');
# a name allowed when added, no longer listed: its addresses are refused
($ret, $out, $err) = query_as($node, 'mallory', q{SELECT egress_add_stream('sn', 't', 'FULL_TABLE', 'okname')});
is($ret, 0, 'a stream to the destination named by localhost') or diag $err;
wait_stream_state($node, 'sn', 'error');
like(stream_row($node, 'sn')->{last_error},
	qr{HTTP destination http://localhost:\d+/\*\*\* may not be connected to: (127\.0\.0\.1|::1) is a loopback address},
	'a name resolving to a loopback address is refused on the connection');
is(scalar(reqs('/name')), 0, '... and the receiver got no request');

# allowed again: resume delivers
set_allowed('*, 127.0.0.1');
($ret, $out, $err) = query_as($node, 'mallory', q{SELECT egress_resume_stream('sm')});
is($ret, 0, 'resume') or diag $err;
ok(poll_until('the batch at /m', 60, sub { grep { $_->{status} eq '200' } reqs('/m') }),
	'once the setting allows it, the batch is delivered');
set_allowed(undef);

# a superuser's destination is not limited
$node->safe_psql('postgres',
	"SELECT egress_add_destination('dsu', 'http://127.0.0.1:$port/su', '{\"flush_interval\": \"100ms\"}')");
$node->safe_psql('postgres', q{SELECT egress_add_stream('ssu', 't', 'FULL_TABLE', 'dsu')});
ok(poll_until('the batch at /su', 60, sub { grep { $_->{status} eq '200' } reqs('/su') }),
	'a superuser\'s destination at 127.0.0.1 delivers under the default setting');

# ---- 2. tokens in URL paths ----------------------------------------------------------------------
# (the superuser's destinations below send to 127.0.0.1 whoever owns them)
set_allowed('*, 127.0.0.1');
my $token = 'XXXXSECRETpathTOKEN42';
$node->safe_psql('postgres', 'CREATE TABLE w (id int PRIMARY KEY); INSERT INTO w VALUES (1)');
$node->safe_psql('postgres', 'GRANT SELECT ON w TO mallory');
$rcv->fault('fail', 1, status => 404, body => "Cannot POST /services/T000/B000/$token (no such hook)");
$node->safe_psql('postgres',
	"SELECT egress_add_destination('dw', 'http://127.0.0.1:$port/services/T000/B000/$token', '{}')");
$node->safe_psql('postgres', q{SELECT egress_add_stream('sw', 'w', 'FULL_TABLE', 'dw')});
wait_stream_state($node, 'sw', 'error');
$row = stream_row($node, 'sw');
like($row->{last_error}, qr{HTTP destination http://127\.0\.0\.1:\d+/\*\*\* rejected batch .*HTTP status 404: Cannot POST \*\*\* \(no such hook\)},
	'a rejection shows scheme, host and port, the path masked, also where the answer echoes it');
unlike($row->{last_error}, qr/SECRETpath|T000|B000/, '... no piece of the path');
# a transport failure (connection refused), logged
$node->safe_psql('postgres',
	"SELECT egress_add_destination('dx', 'http://127.0.0.1:1/token/$token/x', '{\"retry_initial_interval\": \"100ms\"}')");
$node->safe_psql('postgres', q{CREATE TABLE x (id int PRIMARY KEY); INSERT INTO x VALUES (1)});
$node->safe_psql('postgres', q{SELECT egress_add_stream('sx', 'x', 'FULL_TABLE', 'dx')});
ok(poll_until('the failed delivery to be logged', 60,
		sub { slurp_file($node->logfile) =~ m{could not deliver batch \S+ to HTTP destination http://127\.0\.0\.1:1/\*\*\*} }),
	'a failed delivery is logged with the path masked');
my @leaks = grep { !/ statement: / && /SECRETpath/ } split /\n/, slurp_file($node->logfile);
is_deeply(\@leaks, [], 'the token is nowhere in the server log (statements aside)');
$node->safe_psql('postgres', q{SELECT egress_remove_destination('dx', cascade => true)});

# ---- 3. Retry-After overflow ----------------------------------------------------------------------
$node->safe_psql('postgres', 'CREATE TABLE ra (id int PRIMARY KEY); INSERT INTO ra VALUES (1)');
$node->safe_psql('postgres',
	"SELECT egress_add_destination('dra', 'http://127.0.0.1:$port/ra', "
	  . q{'{"retry_initial_interval": "100ms", "retry_max_interval": "3s"}')});
# 2^64 / 1000 seconds: times 1000 wraps to 384 ms in 0.1; then more than a long holds
$rcv->fault('fail', 1, status => 503, retry_after => '18446744073709552');
$rcv->fault('fail', 1, status => 503, retry_after => '99999999999999999999');
$node->safe_psql('postgres', q{SELECT egress_add_stream('sra', 'ra', 'FULL_TABLE', 'dra')});
ok(poll_until('the batch at /ra', 60, sub { grep { $_->{status} eq '200' } reqs('/ra') }),
	'the batch is delivered after the huge Retry-After answers');
my @ra = reqs('/ra');
ok(@ra >= 3 && $ra[2]{status} eq '200'
	  && $ra[0]{headers}{'x-egress-batch-id'} eq $ra[2]{headers}{'x-egress-batch-id'},
	'three tries of the batch: two 503s, then 200');
if (@ra >= 3)
{
	my $gap1 = $ra[1]{t} - $ra[0]{t};
	my $gap2 = $ra[2]{t} - $ra[1]{t};
	ok($gap1 >= 2900 && $gap1 < 10000, sprintf('Retry-After 18446744073709552: waited retry_max_interval (%.0f ms)', $gap1));
	ok($gap2 >= 2900 && $gap2 < 10000, sprintf('Retry-After 99999999999999999999: waited retry_max_interval (%.0f ms)', $gap2));
}

# ---- 4. symbolic links at temporary names ---------------------------------------------------------
my $dir = EgressTest::new_outdir($node, 'exp');
my $victim = $node->basedir . '/victim.txt';
EgressTest::write_file($victim, "precious\n");
# the export's temporary name in 0.1 was .<name>.<backend pid>.egress-tmp: plant
# the link from the exporting backend itself ($PPID of COPY's shell)
($ret, $out, $err) = $node->psql('postgres',
	"COPY (SELECT 1) TO PROGRAM 'ln -s $victim $dir/.out.csv.\$PPID.egress-tmp';\n"
	  . "SELECT rows_uploaded FROM egress_export('SELECT g FROM generate_series(1, 3) g', 'file://$dir/out.csv', 'format csv')");
is($ret, 0, 'the export succeeds') or diag $err;
is(slurp_file($victim), "precious\n", 'export: the file behind the planted link is untouched');
is(slurp_file("$dir/out.csv"), "1\n2\n3\n", 'export: the rows are in the export');
ok(!-l "$dir/out.csv", 'export: the export is a file, not the link');

# a file destination's CDC batches: 0.1 named them .~<destination>-<pid>-<n>.jsonl.tmp
my $fdir = EgressTest::new_outdir($node, 'fd');
add_destination($node, 'fd', $fdir);
$node->safe_psql('postgres', 'CREATE TABLE c (id int PRIMARY KEY)');
$node->safe_psql('postgres', q{SELECT egress_add_stream('sc', 'c', 'LOG_BASED', 'fd')});
wait_stream_state($node, 'sc', 'streaming');
my ($cdc_pid) = cdc_worker_pids($node);
ok($cdc_pid, 'the CDC worker runs');
symlink($victim, "$fdir/.~fd-$cdc_pid-$_.jsonl.tmp") or die "symlink: $!" for 1 .. 300;
$node->safe_psql('postgres', "INSERT INTO c VALUES ($_)") for 1 .. 5;
ok( poll_until(
		'the 5 rows in the destination', 60,
		sub { scalar(records_of(read_batches($fdir))) >= 5 }),
	'file destination: the changes are delivered');
is(slurp_file($victim), "precious\n", 'file destination: the file behind the planted links is untouched');
my @links_moved = grep { -l "$fdir/$_" && !/^\./ } list_dir($fdir);
is_deeply(\@links_moved, [], 'file destination: no batch is a planted link');

$rcv->stop;
done_testing();
