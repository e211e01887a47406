
# Runtime UX, as a first-time user meets it (issue 14):
#
# 1. pg_egress.database names a database that does not exist: one WARNING
#    saying what to do, then quiet retries (no FATAL every naptime); the
#    worker starts once the database is created.
# 2. CREATE EXTENSION and egress_add_stream in a database the workers do
#    not serve: a WARNING each, and the stream's last_error says why it
#    waits; moving pg_egress.database there runs it and clears last_error.
# 3. FULL_TABLE streams with option "interval": a new version each run;
#    the interval is validated as INCREMENTAL's; LOG_BASED refuses it.
# 4. Destination option file_mode: files 0600 by default, 0644 on request;
#    a bad mode is refused.
# 5. State "retrying" while a batch is being sent again: FULL_TABLE syncs
#    and INCREMENTAL runs to HTTP, S3 and Kinesis destinations that do not
#    answer; a LOG_BASED initial sync to a failing HTTP receiver; LOG_BASED
#    changes to a file destination that cannot be written.  Back to
#    synced/streaming once the destination works again.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../lib";

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use EgressTest;
use EgressHttp;

my $dead_port = PostgreSQL::Test::Cluster::get_free_port();

my $node = create_node(
	'ux',
	extension => 0,
	cdc => 1,
	conf => qq{
pg_egress.database = 'app'
pg_egress.naptime = '1s'
pg_egress.s3_endpoint = 'http://127.0.0.1:$dead_port'
pg_egress.s3_region = 'us-east-1'
pg_egress.s3_access_key_id = 'AKIDEXAMPLE'
pg_egress.s3_secret_access_key = 'secret'
pg_egress.kinesis_endpoint = 'http://127.0.0.1:$dead_port'
});

# ---------------------------------------------------------------------------
# 1. a pg_egress.database that does not exist
# ---------------------------------------------------------------------------

my $missing_re = qr/WARNING:  pg_egress\.database "app" does not exist: pg_egress serves no database/;
ok($node->wait_for_log($missing_re, 0), 'missing pg_egress.database: a WARNING');
my $log = slurp_file($node->logfile);
like($log, qr/HINT:  Set pg_egress\.database to the database where CREATE EXTENSION pg_egress was run and reload/,
	'... with a hint saying what to do');

# The launcher looks again every naptime (1s): after several, still one
# message and no FATAL from a worker trying to connect.
my $t0 = time;
poll_until('four naptimes', 30, sub { time - $t0 > 4 });
$log = slurp_file($node->logfile);
my @warnings = $log =~ /$missing_re/g;
is(scalar @warnings, 1, 'missing pg_egress.database: said once, not at every naptime');
unlike($log, qr/FATAL:  database "app" does not exist/, 'no FATAL every naptime');

my $offset = -s $node->logfile;
$node->safe_psql('postgres', 'CREATE DATABASE app');
ok($node->wait_for_log(qr/pg_egress worker started for database "app"/, $offset),
	'the database created: its worker starts without a restart');
ok($node->log_contains(qr/pg_egress\.database "app" can be served now/, $offset),
	'... and the launcher says so');

# ---------------------------------------------------------------------------
# 2. the extension in a database the workers do not serve
# ---------------------------------------------------------------------------

my ($ret, $out, $err) = $node->psql('postgres', 'CREATE EXTENSION pg_egress');
is($ret, 0, 'CREATE EXTENSION in an unserved database succeeds');
like($err, qr/WARNING:  pg_egress serves database "app", not "postgres": streams added here will not run/,
	'... with a WARNING naming both databases');
like($err, qr/HINT:  Set pg_egress\.database = 'postgres' in postgresql\.conf and reload/,
	'... and a hint');

my $out_other = new_outdir($node, 'other');
$node->safe_psql('postgres', q{CREATE TABLE t (id int PRIMARY KEY, v text);
	INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 5) g;});
$node->safe_psql('postgres', 'SELECT egress_add_destination(' . sql_quote('other') . ', ' . sql_quote(file_url($out_other)) . ')');
($ret, $out, $err) = $node->psql('postgres',
	q{SELECT egress_add_stream('t_other', 't', 'FULL_TABLE', 'other')});
is($ret, 0, 'egress_add_stream in an unserved database succeeds');
like($err, qr/WARNING:  stream "t_other" will not run: pg_egress serves database "app", not "postgres"/,
	'... with a WARNING');
like(
	$node->safe_psql('postgres', q{SELECT state || ': ' || last_error FROM egress_streams WHERE name = 't_other'}),
	qr/^pending: no pg_egress worker serves database "postgres": pg_egress\.database is "app"/,
	'... and last_error says why the stream waits');

# the extension in the served database: no warning
($ret, $out, $err) = $node->psql('app', 'CREATE EXTENSION pg_egress');
is($ret, 0, 'CREATE EXTENSION in the served database');
unlike($err, qr/WARNING/, '... without a warning');

# ---------------------------------------------------------------------------
# 3. FULL_TABLE interval
# ---------------------------------------------------------------------------

my $out_ft = new_outdir($node, 'ft');
$node->safe_psql('app', q{CREATE TABLE t (id int PRIMARY KEY, v text);
	INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 3) g;});
$node->safe_psql('app', 'SELECT egress_add_destination(' . sql_quote('ft') . ', ' . sql_quote(file_url($out_ft)) . ')');

($ret, $out, $err) = $node->psql('app',
	q{SELECT egress_add_stream('bad', 't', 'FULL_TABLE', 'ft', options => '{"interval": "10 milliseconds"}')});
like($err, qr/stream option "interval" must be a number of seconds or an interval from 100 milliseconds to 366 days/,
	'FULL_TABLE interval validated as INCREMENTAL\'s');
($ret, $out, $err) = $node->psql('app',
	q{SELECT egress_add_stream('bad', 't', 'LOG_BASED', 'ft', options => '{"interval": "1 minute"}')});
like($err, qr/stream option "interval" is only valid for INCREMENTAL and FULL_TABLE streams/,
	'LOG_BASED streams refuse interval');
($ret, $out, $err) = $node->psql('app',
	q{SELECT egress_add_stream('bad', 't', 'FULL_TABLE', 'ft', options => '{"limit": 10}')});
like($err, qr/stream option "limit" is only valid for INCREMENTAL streams/, 'FULL_TABLE streams refuse limit');

($ret, $out, $err) = $node->psql('app',
	q{SELECT egress_add_stream('ft', 't', 'FULL_TABLE', 'ft', options => '{"interval": "1 second"}')});
is($ret, 0, 'a FULL_TABLE stream with an interval is accepted') or diag $err;

# a run, then (a row added) another run: a new version with the new row
my $versions = sub {
	my %v;
	for my $f (list_dir($out_ft))
	{
		$v{$1} = 1 if $f =~ /^ft-(\d+)-\d+\.jsonl$/;
	}
	my @sorted = sort { $a <=> $b } keys %v;
	return @sorted;
};
ok(poll_until('first FULL_TABLE run', 60, sub { my @x = $versions->(); @x >= 1 }), 'first run written');
$node->safe_psql('app', q{INSERT INTO t VALUES (4, 'v4')});
ok(poll_until('a later run with the new row', 60, sub {
	my @v = $versions->();
	return 0 if @v < 2;
	my @recs = records_of(read_batches($out_ft, qr/^ft-$v[-1]-/));
	return scalar(@recs) == 4;
}), 'the stream runs again on its interval: a new version with every row');
my @v = $versions->();
cmp_ok($v[-1], '>', $v[0], 'each run has a new version');

# ---------------------------------------------------------------------------
# 4. file_mode
# ---------------------------------------------------------------------------

my $out_default = new_outdir($node, 'mode_default');
my $out_644 = new_outdir($node, 'mode_644');
($ret, $out, $err) = $node->psql('app',
	'SELECT egress_add_destination(' . sql_quote('m_bad') . ', ' . sql_quote(file_url($out_644))
	  . q{, '{"file_mode": "0777"}')});
like($err, qr/destination option "file_mode" must be octal permissions from 0600 to 0666/,
	'file_mode 0777 refused');
($ret, $out, $err) = $node->psql('app',
	'SELECT egress_add_destination(' . sql_quote('m_bad') . ', ' . sql_quote(file_url($out_644))
	  . q{, '{"file_mode": "0400"}')});
like($err, qr/destination option "file_mode" must be octal permissions/, 'file_mode 0400 refused');
$node->safe_psql('app', 'SELECT egress_add_destination(' . sql_quote('m_default') . ', ' . sql_quote(file_url($out_default)) . ')');
$node->safe_psql('app', 'SELECT egress_add_destination(' . sql_quote('m_644') . ', ' . sql_quote(file_url($out_644))
	  . q{, '{"file_mode": "0644"}')});
$node->safe_psql('app', q{SELECT egress_add_stream('md', 't', 'FULL_TABLE', 'm_default');
	SELECT egress_add_stream('m6', 't', 'FULL_TABLE', 'm_644');});
wait_stream_state_in($node, 'app', 'md', 'synced');
wait_stream_state_in($node, 'app', 'm6', 'synced');
my @fd = grep { /\.jsonl$/ } list_dir($out_default);
my @f6 = grep { /\.jsonl$/ } list_dir($out_644);
ok(@fd && @f6, 'both destinations written');
is(sprintf('%04o', (stat "$out_default/$fd[0]")[2] & 07777), '0600', 'default file mode 0600');
is(sprintf('%04o', (stat "$out_644/$f6[0]")[2] & 07777), '0644', 'file_mode 0644 honoured');

# ---------------------------------------------------------------------------
# 5. retrying
# ---------------------------------------------------------------------------

$node->safe_psql('app', qq{
	SELECT egress_add_destination('dead_http', 'http://127.0.0.1:$dead_port/ingest',
		'{"retry_initial_interval": "100ms", "retry_max_interval": "500ms"}');
	SELECT egress_add_destination('dead_s3', 's3://bucket/prefix');
	SELECT egress_add_destination('dead_kinesis', 'kinesis://dead');
	SELECT egress_add_stream('r_http', 't', 'FULL_TABLE', 'dead_http');
	SELECT egress_add_stream('r_inc', 't', 'INCREMENTAL', 'dead_http', 'id');
	SELECT egress_add_stream('r_s3', 't', 'FULL_TABLE', 'dead_s3');
	SELECT egress_add_stream('r_kinesis', 't', 'FULL_TABLE', 'dead_kinesis');
});
for my $s (qw(r_http r_inc r_s3 r_kinesis))
{
	wait_stream_state_in($node, 'app', $s, 'retrying', 120);
}
$node->safe_psql('app', q{SELECT egress_remove_stream(s) FROM unnest(ARRAY['r_http', 'r_inc', 'r_s3', 'r_kinesis']) s});

# an HTTP receiver that fails, then works
my $recv = EgressHttp->start($node);
$recv->fault('fail', 1000000, status => 503);
$node->safe_psql('app', 'SELECT egress_add_destination(' . sql_quote('recv') . ', ' . sql_quote($recv->url)
	  . q{, '{"retry_initial_interval": "100ms", "retry_max_interval": "500ms"}')});
$node->safe_psql('app', q{
	SELECT egress_add_stream('h_full', 't', 'FULL_TABLE', 'recv');
	SELECT egress_add_stream('h_inc', 't', 'INCREMENTAL', 'recv', 'id');
	SELECT egress_add_stream('h_cdc', 't', 'LOG_BASED', 'recv');
});
wait_stream_state_in($node, 'app', $_, 'retrying', 120) for qw(h_full h_inc h_cdc);
$recv->fault('clear');
wait_stream_state_in($node, 'app', 'h_full', 'synced', 120);
wait_stream_state_in($node, 'app', 'h_inc', 'synced', 120);
wait_stream_state_in($node, 'app', 'h_cdc', 'streaming', 120);
$node->safe_psql('app', q{SELECT egress_remove_stream(s) FROM unnest(ARRAY['h_full', 'h_inc', 'h_cdc']) s});
$recv->stop;

# LOG_BASED to a file destination that cannot be written for a while
my $out_cdc = new_outdir($node, 'cdc');
$node->safe_psql('app', 'SELECT egress_add_destination(' . sql_quote('fcdc') . ', ' . sql_quote(file_url($out_cdc)) . ')');
$node->safe_psql('app', q{SELECT egress_add_stream('f_cdc', 't', 'LOG_BASED', 'fcdc')});
wait_stream_state_in($node, 'app', 'f_cdc', 'streaming', 120);
chmod 0500, $out_cdc or die "chmod: $!";
$node->safe_psql('app', q{INSERT INTO t VALUES (100, 'while unwritable')});
wait_stream_state_in($node, 'app', 'f_cdc', 'retrying', 120);
like($node->safe_psql('app', q{SELECT last_error FROM egress_streams WHERE name = 'f_cdc'}),
	qr/Permission denied \(the server runs as OS user "\Q${\ scalar getpwuid($<)}\E", who needs write access there\)/,
	'... last_error says why and names the OS user');
chmod 0700, $out_cdc or die "chmod: $!";
wait_stream_state_in($node, 'app', 'f_cdc', 'streaming', 120);
ok(poll_until('the change written', 60, sub {
	grep { $_->{record}{id} == 100 } records_of(read_batches($out_cdc, qr/^fcdc-/)) }),
	'the change is written once the directory is writable');

$node->stop;
done_testing();

# wait_stream_state in another database than postgres
sub wait_stream_state_in
{
	my ($node, $db, $stream, $state, $timeout) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $sql = 'SELECT state FROM egress_streams WHERE name = ' . sql_quote($stream);
	my $last = '';
	my $ok = poll_until("stream $stream reaches $state", $timeout // 120, sub {
		my ($r, $o) = $node->psql($db, $sql);
		$last = $o;
		return $r == 0 && $o eq $state;
	});
	ok($ok, "stream $stream reaches state $state") or diag "last state: $last; "
	  . $node->safe_psql($db, "SELECT row_to_json(s) FROM egress_streams s WHERE name = " . sql_quote($stream));
	return $ok;
}
