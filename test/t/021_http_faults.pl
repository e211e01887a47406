
# HTTP destinations when the endpoint fails.  Answers that may succeed later
# (503 and 429 with Retry-After, a hang until the timeout, a reset
# connection) are retried with the same batch id and the same body until
# acknowledged: after de-duplicating by batch id every record arrived
# exactly once and in order.  A rejection (400) puts the streams into state
# error with the status and an excerpt of the answer (secrets masked),
# until egress_resume_stream() or the destination's error_retry_interval;
# then everything is delivered.  FULL_TABLE and LOG_BASED.

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

my $node = create_node('http_faults', cdc => 1);
my $rcv = EgressHttp->start($node);

my $fast = q{"retry_initial_interval": "100ms", "retry_max_interval": "1s", "timeout": "2s"};

# requests of one path
sub reqs { my ($path) = @_; return grep { $_->{path} eq $path } $rcv->requests; }

# Every try of a batch id carried the same body; ids of failed tries were
# later acknowledged.  Returns the number of batch ids that needed retries.
sub check_retries
{
	my ($path, $label) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my (%body, %acked, @problems);
	foreach my $r (reqs($path))
	{
		my $id = $r->{headers}{'x-egress-batch-id'};
		push @problems, "request $r->{seq} without batch id" unless defined $id;
		next unless defined $id;
		if (exists $body{$id} && ($body{$id} // '') ne ($r->{body} // ''))
		{
			push @problems, "batch $id re-sent with another body";
		}
		$body{$id} //= $r->{body};
		$acked{$id} ||= ($r->{status} =~ /^2/) ? 1 : 0;
	}
	my @lost = grep { !$acked{$_} } sort keys %acked;
	is_deeply(\@problems, [], "$label: a retried batch keeps its id and body");
	is_deeply(\@lost, [], "$label: every batch id tried was acknowledged in the end");
	my %tries;
	$tries{ $_->{headers}{'x-egress-batch-id'} // '' }++ foreach reqs($path);
	return scalar grep { $tries{$_} > 1 } keys %tries;
}

sub ids_of
{
	my ($stream) = @_;
	return [ map { $_->{record}{id} } $rcv->records($stream) ];
}

$node->safe_psql('postgres', q{
CREATE TABLE f (id integer PRIMARY KEY, v text NOT NULL);
INSERT INTO f SELECT i, md5(i::text) FROM generate_series(1, 3000) i;
CREATE TABLE c (id integer PRIMARY KEY, v text NOT NULL);
});

# ---- FULL_TABLE: 503 x 3 with Retry-After, then 429 x 2, reset x 1, hang x 1 --------
$node->safe_psql('postgres',
	"SELECT egress_add_destination('hf', " . sql_quote($rcv->url('/f'))
	  . ", '{$fast, \"batch_max_rows\": 500}')");
$rcv->fault('fail', 3, status => 503, retry_after => 1);
$rcv->fault('fail', 2, status => 429);
$rcv->fault('reset', 1);
$rcv->fault('hang', 1);
my $t0 = time;
$node->safe_psql('postgres', q{SELECT egress_add_stream('sf', 'f', 'FULL_TABLE', 'hf')});
wait_stream_state($node, 'sf', 'synced');
my @f = reqs('/f');
my %seen_fault;
$seen_fault{ $_->{status} }++ foreach @f;
is($seen_fault{503}, 3, 'FULL_TABLE: three 503 answers were given');
is($seen_fault{429}, 2, 'FULL_TABLE: two 429 answers were given');
is($seen_fault{reset}, 1, 'FULL_TABLE: one connection reset');
is($seen_fault{hang}, 1, 'FULL_TABLE: one request hung');
ok(time - $t0 >= 3 + 2, 'FULL_TABLE: Retry-After (1 s x 3) and the 2 s timeout were waited for');
# the hung request's retry came after the timeout
{
	my ($hang) = grep { $_->{status} eq 'hang' } @f;
	my ($next) = grep { $_->{seq} > $hang->{seq} } @f;
	is($next->{headers}{'x-egress-batch-id'}, $hang->{headers}{'x-egress-batch-id'},
		'FULL_TABLE: the hung batch is sent again, same id');
	ok($next->{t} - $hang->{t} >= 1900, sprintf('FULL_TABLE: ... after the timeout (%.0f ms)', $next->{t} - $hang->{t}));
}
# the 503s: Retry-After honoured between tries of the same batch
{
	my @r = grep { $_->{status} eq '503' } @f;
	my ($after) = grep { $_->{seq} == $r[-1]{seq} + 1 } @f;
	ok($after->{t} - $r[-1]{t} >= 990, sprintf('FULL_TABLE: Retry-After: 1 honoured (%.0f ms)', $after->{t} - $r[-1]{t}));
}
ok(check_retries('/f', 'FULL_TABLE') >= 1, 'FULL_TABLE: some batches needed retries');
is_deeply(ids_of('public-f'), [ 1 .. 3000 ], 'FULL_TABLE: after de-duplication every row exactly once, in order');
is(stream_row($node, 'sf')->{last_error}, undef, 'FULL_TABLE: no error left once delivered');

# ---- FULL_TABLE, streamed batches (> 256 kB, chunked): 503, reset, hang ---------------
$node->safe_psql('postgres', q{
CREATE TABLE f2 (id integer PRIMARY KEY, v text NOT NULL);
INSERT INTO f2 SELECT i, repeat(md5(i::text), 20) FROM generate_series(1, 3000) i;
});
$node->safe_psql('postgres',
	"SELECT egress_add_destination('hf2', " . sql_quote($rcv->url('/f2'))
	  . ", '{$fast, \"batch_max_rows\": 1000}')");
$rcv->fault('fail', 2, status => 503);
$rcv->fault('reset', 1);
$rcv->fault('hang', 1);
$node->safe_psql('postgres', q{SELECT egress_add_stream('sf2', 'f2', 'FULL_TABLE', 'hf2')});
wait_stream_state($node, 'sf2', 'synced');
my @f2 = reqs('/f2');
ok((grep { ($_->{headers}{'transfer-encoding'} // '') eq 'chunked' } @f2) >= 1, 'streamed: first tries are chunked');
is(scalar(grep { $_->{status} ne '200' } @f2), 4, 'streamed: four failed tries');
ok(check_retries('/f2', 'FULL_TABLE streamed') >= 1, 'streamed: a batch was retried');
is_deeply(ids_of('public-f2'), [ 1 .. 3000 ], 'streamed: after de-duplication every row exactly once, in order');

# ---- LOG_BASED: 503 x 3 then recovery, with debug_lsn ---------------------------------
$node->safe_psql('postgres',
	"SELECT egress_add_destination('hc', " . sql_quote($rcv->url('/c'))
	  . ", '{$fast, \"flush_interval\": \"100ms\", \"error_retry_interval\": \"3s\"}')");
$node->safe_psql('postgres',
	q{SELECT egress_add_stream('sc', 'c', 'LOG_BASED', 'hc', options => '{"debug_lsn": true}')});
wait_stream_state($node, 'sc', 'streaming');
$rcv->fault('fail', 3, status => 503, retry_after => 0);
$node->safe_psql('postgres', "INSERT INTO c SELECT i, 'a' FROM generate_series(1, 50) i");
$node->safe_psql('postgres', "INSERT INTO c SELECT i, 'b' FROM generate_series(51, 100) i");
$node->safe_psql('postgres', "INSERT INTO c VALUES ($_, 'c')") foreach 101 .. 120;
wait_caught_up($node, 'sc');
ok(check_retries('/c', 'LOG_BASED') >= 1, 'LOG_BASED: a batch was retried');
is_deeply(ids_of('public-c'), [ 1 .. 120 ], 'LOG_BASED: after de-duplication every change exactly once, in order');
{
	my @lsns = map { $_->{record}{_sdc_lsn} } grep { exists $_->{record}{_sdc_lsn} } $rcv->records('public-c');
	my @sorted = sort { $a <=> $b } @lsns;
	is_deeply(\@lsns, \@sorted, 'LOG_BASED: commit LSNs never go back');
}

# ---- a slow answer within the timeout is no failure --------------------------------------
$rcv->fault('delay', 1, ms => 1000);
my $nbefore = () = reqs('/c');
$node->safe_psql('postgres', "INSERT INTO c VALUES (121, 'slow')");
wait_caught_up($node, 'sc');
{
	my @new = (reqs('/c'))[ $nbefore .. scalar(reqs('/c')) - 1 ];
	my ($slow) = grep { ($_->{fault} // '') eq 'delay' } @new;
	ok($slow && $slow->{status} eq '200', 'a delayed answer (1 s, timeout 2 s) is an acknowledgement');
	is(scalar(grep { $_->{headers}{'x-egress-batch-id'} eq $slow->{headers}{'x-egress-batch-id'} } reqs('/c')),
		1, '... and its batch is not sent again');
}

# ---- a rejection (400) of a LOG_BASED batch: error state, then resume -----------------
$rcv->fault('fail', 1, status => 400, body => 'echo');
$node->safe_psql('postgres', "INSERT INTO c SELECT i, 'd' FROM generate_series(122, 140) i");
wait_stream_state($node, 'sc', 'error');
my $row = stream_row($node, 'sc');
like($row->{last_error}, qr/rejected batch hc-[0-9A-F]{16}-[0-9A-F]{16}-\d+: HTTP status 400: \{/,
	'LOG_BASED 400: egress_streams shows the status and an excerpt of the answer');
# auto-retry after error_retry_interval (3 s): no resume needed
wait_stream_state($node, 'sc', 'streaming', 60);
wait_caught_up($node, 'sc');
my %m;
compare_states(mirror($rcv->to_dir($node->basedir . '/c1'), 'public-c', ['id'], \%m),
	table_state($node, 'c', ['id']), 'LOG_BASED after the rejection and error_retry_interval');

# ---- a rejection of a FULL_TABLE batch: error, resume, delivered ----------------------------
$rcv->fault('fail', 1, status => 422, body => 'schema mismatch: column v unknown');
$node->safe_psql('postgres', q{SELECT egress_resync_stream('sf')});
wait_stream_state($node, 'sf', 'error');
$row = stream_row($node, 'sf');
like($row->{last_error}, qr/HTTP status 422: schema mismatch: column v unknown/,
	'FULL_TABLE 422: egress_streams shows the status and the answer');
my $before = scalar grep { $_->{status} =~ /^2/ } reqs('/f');
$node->safe_psql('postgres', q{SELECT egress_resume_stream('sf')});
wait_stream_state($node, 'sf', 'synced');
my @after = grep { $_->{status} =~ /^2/ } reqs('/f');
ok(@after > $before, 'FULL_TABLE: delivered after egress_resume_stream');
my $v = stream_row($node, 'sf')->{version};
my @rec = grep { $_->{version} == $v } $rcv->records('public-f');
is_deeply([ map { $_->{record}{id} } @rec ], [ 1 .. 3000 ], 'FULL_TABLE: the resumed sync delivered every row once');

# ---- secrets: a non-superuser's destination ----------------------------------------------------
$node->safe_psql('postgres', q{
CREATE ROLE etl LOGIN;
GRANT EXECUTE ON FUNCTION egress_add_destination(text, text, jsonb),
	egress_add_stream(text, regclass, text, text, text, jsonb),
	egress_resume_stream(text) TO etl;
GRANT SELECT ON egress_streams TO etl;
GRANT EXECUTE ON FUNCTION egress_stream_activity() TO etl;
GRANT SELECT ON c TO etl;
});
my $secret_url = $rcv->url('/s');
$secret_url =~ s{^http://}{http://loader:pa55w0rd-xyz\@};
my ($ret, $out, $err) = query_as($node, 'etl',
	"SELECT egress_add_destination('hs', " . sql_quote($secret_url)
	  . q{, '{"headers": {"Authorization": "Bearer tok-S3CRET-42"}, "flush_interval": "100ms"}')});
is($ret, 0, 'a non-superuser adds an HTTP destination') or diag $err;
($ret, $out, $err) = query_as($node, 'etl', 'SELECT * FROM egress.destination');
isnt($ret, 0, 'a non-superuser cannot read egress.destination');
$rcv->fault('fail', 1, status => 401, body => 'echo');
($ret, $out, $err) = query_as($node, 'etl',
	q{SELECT egress_add_stream('ss', 'c', 'LOG_BASED', 'hs')});
is($ret, 0, 'the non-superuser adds a stream to it') or diag $err;
wait_stream_state($node, 'ss', 'error');
my ($echo) = grep { $_->{path} eq '/s' && $_->{status} eq '401' } $rcv->requests;
is($echo->{headers}{authorization}, 'Bearer tok-S3CRET-42', 'the receiver got the Authorization header');
($ret, $out, $err) = query_as($node, 'etl', 'SELECT row_to_json(s) FROM egress_streams s');
like($out, qr/HTTP status 401/, 'the non-superuser sees the rejection in egress_streams');
unlike($out, qr/S3CRET|pa55w0rd|loader:/, '... but no header value or URL credential (the answer echoed them)');
like($out, qr/\*\*\*/, '... the echoed secrets are masked');
my $log = slurp_file($node->logfile);
my @leaks = grep { !/ statement: / && /S3CRET|pa55w0rd|bG9hZGVyOnBhNTV3MHJkLXh5eg/ } split /\n/, $log;
is_deeply(\@leaks, [], 'no secret in the server log (statements aside: log_statement is the DBA\'s choice)');

# ---- secrets across the excerpt's cut, and short ones ------------------------------------------
# The answer holds a header value from byte 185 on, across the cut of the
# excerpt at 200 bytes, and a 3-character header value: both are masked.
$node->safe_psql('postgres', q{CREATE TABLE m (id int PRIMARY KEY); INSERT INTO m VALUES (1), (2)});
$node->safe_psql('postgres', q{SELECT egress_add_destination('hm', '} . $rcv->url('/m')
	  . q{', '{"headers": {"Authorization": "Bearer tok-L0NGSECRET-77", "X-Pin": "Q7z"}}')});
$rcv->fault('fail', 1, status => 403, body => ('x' x 185) . 'Bearer tok-L0NGSECRET-77 pin=Q7z');
$node->safe_psql('postgres', q{SELECT egress_add_stream('sm', 'm', 'FULL_TABLE', 'hm')});
wait_stream_state($node, 'sm', 'error');
my $merr = stream_row($node, 'sm')->{last_error};
like($merr, qr/HTTP status 403: x{185}\*\*\* pin=\*\*\*/, 'the excerpt masks a secret across its cut and a short one');
unlike($merr, qr/tok-|Q7z/, '... and shows no part of them');
@leaks = grep { !/ statement: / && /tok-L0N|Q7z/ } split /\n/, slurp_file($node->logfile);
is_deeply(\@leaks, [], '... nor does the server log');

$rcv->stop;
done_testing();
