# egress_check() against destinations that never answer (reviewer r2):
# a probe must give up when the statement is cancelled (statement_timeout,
# pg_cancel_backend) instead of holding the caller's backend until its own
# timeouts run out, for each kind that sends a request (HTTP, S3, Kinesis).
# The "server" is a listening socket that is never accepted from: the
# kernel completes the connection, nothing is ever read or answered.
use strict;
use warnings;
use IO::Socket::INET;
use IPC::Run;
use Time::HiRes qw(time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('check_attacks');
my $tarpit = IO::Socket::INET->new(
	Listen => 16,
	LocalAddr => '127.0.0.1',
	LocalPort => 0,
	Proto => 'tcp',
	ReuseAddr => 1) or die "listen: $!";
my $port = $tarpit->sockport;
my $url = "http://127.0.0.1:$port";

$node->safe_psql('postgres', qq{
ALTER SYSTEM SET pg_egress.s3_endpoint = '$url';
ALTER SYSTEM SET pg_egress.kinesis_endpoint = '$url';
ALTER SYSTEM SET pg_egress.s3_access_key_id = 'AKIDEXAMPLE';
ALTER SYSTEM SET pg_egress.s3_secret_access_key = 'wJalrXUtnFEMI';
});
$node->reload;
$node->safe_psql('postgres', qq{
SELECT egress_add_destination('slow_http', '$url/in', '{"timeout": "10min", "connect_timeout": "10min"}');
SELECT egress_add_destination('slow_s3', 's3://bucket/prefix');
SELECT egress_add_destination('slow_kin', 'kinesis://stream1');
});

# statement_timeout: the check is cancelled within seconds
for my $dest (qw(slow_http slow_s3 slow_kin))
{
	my $t0 = time;
	my ($ret, $out, $err) = $node->psql('postgres',
		"SET statement_timeout = '2s'; SELECT ok, detail FROM egress_check('$dest') WHERE \"check\" LIKE 'reachable%'",
		timeout => 120);
	my $took = time - $t0;
	like($err, qr/canceling statement due to statement timeout/,
		"$dest: statement_timeout cancels the probe")
	  or diag("took ${took}s; out: $out; err: $err");
	cmp_ok($took, '<', 15, "$dest: ... within seconds (${took}s)");
}

# pg_cancel_backend from another session
for my $dest (qw(slow_http slow_s3 slow_kin))
{
	my ($stdout, $stderr) = ('', '');
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-d', $node->connstr('postgres'), '-c',
		  "SELECT 'probe-$dest', ok FROM egress_check('$dest') WHERE \"check\" LIKE 'reachable%'" ],
		'>', \$stdout, '2>', \$stderr,
		IPC::Run::timeout(120));
	my $pid;
	poll_until("$dest: probe running", 30, sub {
		$pid = $node->safe_psql('postgres',
			"SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT ''probe-$dest''%' AND state = 'active'");
		return $pid ne '';
	});
	my $t0 = time;
	$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
	eval { $h->finish; };
	my $took = time - $t0;
	like($stderr, qr/canceling statement due to user request/, "$dest: pg_cancel_backend cancels the probe")
	  or diag("took ${took}s; out: $stdout; err: $stderr");
	cmp_ok($took, '<', 15, "$dest: ... within seconds (${took}s)");
}

# the backend is still usable afterwards
is($node->safe_psql('postgres', 'SELECT 1'), '1', 'server answers');
close($tarpit);
done_testing();
