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

# S3 that takes objects but refuses to delete them (a write-only bucket
# policy: PutObject allowed, DeleteObject denied).  The probe's test object
# stays behind: egress_check must not claim it deleted it, and must name it.
{
	my $srv = IO::Socket::INET->new(
		Listen => 16,
		LocalAddr => '127.0.0.1',
		LocalPort => 0,
		Proto => 'tcp',
		ReuseAddr => 1) or die "listen: $!";
	my $log = $node->basedir . '/fake_s3.log';
	my $child = fork();
	die "fork: $!" unless defined $child;
	if ($child == 0)
	{
		while (my $c = $srv->accept)
		{
			while (1)
			{
				my $line = <$c>;
				last unless defined $line;
				my ($method, $path) = split / /, $line;
				my $len = 0;
				while (my $h = <$c>)
				{
					last if $h =~ /^\r?\n$/;
					$len = $1 if $h =~ /^content-length:\s*(\d+)/i;
				}
				read($c, my $body, $len) if $len;
				open(my $fh, '>>', $log) or die;
				print $fh "$method $path\n";
				close $fh;
				my $resp;
				if ($method eq 'PUT')
				{
					$resp = "HTTP/1.1 200 OK\r\nETag: \"d41d8cd98f00b204e9800998ecf8427e\"\r\nContent-Length: 0\r\n\r\n";
				}
				else
				{
					my $doc = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>';
					$resp = "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: "
					  . length($doc) . "\r\n\r\n$doc";
				}
				print $c $resp;
				$c->flush;
			}
			close $c;
		}
		exit 0;
	}
	my $s3url = 'http://127.0.0.1:' . $srv->sockport;
	close $srv;
	$node->safe_psql('postgres', qq{ALTER SYSTEM SET pg_egress.s3_endpoint = '$s3url'});
	$node->reload;
	$node->safe_psql('postgres', q{SELECT egress_add_destination('wo_s3', 's3://wobucket/in')});
	my $detail;
	poll_until('fake S3 in use', 30, sub {
		$detail = $node->safe_psql('postgres',
			q{SELECT detail FROM egress_check('wo_s3') WHERE "check" = 'reachable (wo_s3)'});
		return -e $log;
	});
	my $reqs = slurp_file($log);
	like($reqs, qr{^PUT /wobucket/in/\.pg_egress_check-\d+\.tmp}m, 'write-only S3: the test object was written');
	like($reqs, qr{^DELETE /wobucket/in/\.pg_egress_check-\d+\.tmp}m, '... and its deletion refused');
	unlike($detail, qr/deleted from/, '... egress_check does not claim it was deleted')
	  or diag($detail);
	like($detail, qr{s3://wobucket/in/\.pg_egress_check-\d+\.tmp}, '... and names the object left behind')
	  or diag($detail);
	kill 'KILL', $child;
	waitpid($child, 0);
}

# Kinesis that answers after 3 seconds: an interrupt that is not a cancel
# (pg_log_backend_memory_contexts) arriving meanwhile must not turn the
# check into a failure ("Callback aborted").
{
	my $srv = IO::Socket::INET->new(
		Listen => 16,
		LocalAddr => '127.0.0.1',
		LocalPort => 0,
		Proto => 'tcp',
		ReuseAddr => 1) or die "listen: $!";
	my $kurl = 'http://127.0.0.1:' . $srv->sockport;
	my $child = fork();
	die "fork: $!" unless defined $child;
	if ($child == 0)
	{
		while (my $c = $srv->accept)
		{
			my $len = 0;
			my $line = <$c>;
			while (my $h = <$c>)
			{
				last if $h =~ /^\r?\n$/;
				$len = $1 if $h =~ /^content-length:\s*(\d+)/i;
			}
			read($c, my $body, $len) if $len;
			sleep 3;
			my $doc = '{"StreamDescriptionSummary":{"StreamName":"stream1","StreamStatus":"ACTIVE"}}';
			print $c "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: "
			  . length($doc) . "\r\nConnection: close\r\n\r\n$doc";
			close $c;
		}
		exit 0;
	}
	close $srv;
	$node->safe_psql('postgres', qq{ALTER SYSTEM SET pg_egress.kinesis_endpoint = '$kurl'});
	$node->reload;
	poll_until('new Kinesis endpoint', 30, sub {
		$node->safe_psql('postgres', 'SHOW pg_egress.kinesis_endpoint') eq $kurl;
	});
	my ($stdout, $stderr) = ('', '');
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-At', '-d', $node->connstr('postgres'), '-c',
		  q{SELECT 'probe-kin', ok, detail FROM egress_check('slow_kin') WHERE "check" LIKE 'reachable%'} ],
		'>', \$stdout, '2>', \$stderr,
		IPC::Run::timeout(120));
	my $pid;
	poll_until('Kinesis probe running', 30, sub {
		$pid = $node->safe_psql('postgres',
			"SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT ''probe-kin''%' AND state = 'active'");
		return $pid ne '';
	});
	$node->safe_psql('postgres', "SELECT pg_log_backend_memory_contexts($pid)");
	eval { $h->finish; };
	like($stdout, qr/^probe-kin\|t\|Kinesis stream "stream1" is ACTIVE/,
		'Kinesis: an interrupt that is not a cancel does not fail the probe')
	  or diag("out: $stdout; err: $stderr");
	kill 'KILL', $child;
	waitpid($child, 0);
}

# the backend is still usable afterwards
is($node->safe_psql('postgres', 'SELECT 1'), '1', 'server answers');
close($tarpit);
done_testing();
