# egress_check() against real servers: each check that needs a server's
# configuration or a destination server fails for its reason and passes.
# (Checks that need only SQL are in test/sql/check.sql.)
#
#   pg_egress.max_workers: more destinations with LOG_BASED streams than
#     it can serve beside one sync
#   wal_level, max_worker_processes, shared_preload_libraries: a second
#     server configured wrongly (wal_level replica, too few workers, a
#     preload change waiting for a restart)
#   max_replication_slots: every slot taken
#   output_plugin_libraries: a wal2json destination on a server that does
#     not allow wal2json
#   slot_wal: max_slot_wal_keep_size below pg_egress.max_slot_wal
#   reachable: HTTP (a test request the receiver does not store; a 401;
#     pg_egress.allowed_destination_hosts for a non-superuser's
#     destination), S3 (a test object written and deleted; a wrong
#     bucket), a file directory the server's OS user cannot write
#     (named), Kinesis (DescribeStreamSummary; a missing stream; a
#     wrong secret)
#   max_wal_senders: pg_egress needs none; always passes

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;
use EgressHttp;
use S3Server;
use KinesisServer;

BAIL_OUT('npm packages of test/http are not installed (scripts/common.sh egress_npm_ci)')
  unless EgressHttp::node_ready();

my $node = create_node('check', cdc => 1);
my $rcv = EgressHttp->start($node);
my $s3 = S3Server->start($node->basedir . '/s3', 'lake');
my $endpoint = $s3->endpoint;
$node->append_conf('postgresql.conf', qq{
pg_egress.s3_endpoint = '$endpoint'
pg_egress.s3_access_key_id = 'S3RVER'
pg_egress.s3_secret_access_key = 'S3RVER'
});
$node->reload;

# (ok, detail, hint) of one row of egress_check(dest, stream), as role
sub check_row
{
	my ($n, $name, $dest, $stream, $role) = @_;
	my $sql = ($role ? "SET ROLE $role; " : '')
	  . q{SELECT coalesce(ok::text, 'null') || E'\x1f' || coalesce(detail, '') || E'\x1f' || coalesce(hint, '')
	      FROM egress_check(}
	  . (defined $dest ? sql_quote($dest) : 'NULL') . ', '
	  . (defined $stream ? sql_quote($stream) : 'NULL')
	  . ') WHERE "check" = ' . sql_quote($name);
	my $out = $n->safe_psql('postgres', $sql);
	return ('missing', '', '') if $out eq '';
	return split /\x1f/, $out, 3;
}

sub reload_with
{
	my ($n, $sql) = @_;
	$n->safe_psql('postgres', $sql);
	$n->reload;
	# the settings of new sessions: poll until a fresh one sees it
	return;
}

# ---- a server configured wrongly ----
{
	my $bad = create_node('check_bad', conf => qq{
wal_level = replica
max_worker_processes = 4
});
	my ($ok, $detail, $hint) = check_row($bad, 'wal_level');
	is($ok, 'false', 'wal_level replica: fails');
	like($detail, qr/LOG_BASED streams need wal_level "logical": wal_level is "replica"/, '... saying so');
	like($hint, qr/wal_level = logical/, '... and what to set');
	my $bdir = new_outdir($bad, 'bad');
	add_destination($bad, 'bd', $bdir);
	my ($r, $o, $e) = $bad->psql('postgres',
		q{CREATE TABLE t (id int PRIMARY KEY); SELECT egress_add_stream('bs', 't', method => 'LOG_BASED', destination => 'bd')});
	like($e, qr/ERROR:  LOG_BASED streams need wal_level "logical"/, 'egress_add_stream refuses with the same message');
	$bad->safe_psql('postgres', q{SELECT egress_remove_destination('bd')});
	($ok, $detail, $hint) = check_row($bad, 'max_worker_processes');
	is($ok, 'false', 'max_worker_processes 4 with pg_egress.max_workers 4: fails');
	like($detail, qr/max_worker_processes \(4\) leaves too few background workers for pg_egress: it needs up to 7/,
		'... with the count');
	($ok) = check_row($bad, 'shared_preload_libraries');
	is($ok, 'true', 'shared_preload_libraries lists pg_egress: passes');
	$bad->safe_psql('postgres', q{ALTER SYSTEM SET shared_preload_libraries = ''});
	$bad->reload;
	poll_until('the preload change is pending', 30, sub {
		$bad->safe_psql('postgres',
			q{SELECT pending_restart FROM pg_settings WHERE name = 'shared_preload_libraries'}) eq 't';
	});
	($ok, $detail, $hint) = check_row($bad, 'shared_preload_libraries');
	is($ok, 'false', 'shared_preload_libraries changed, waiting for a restart: fails');
	like($hint, qr/still lists pg_egress before restarting/, '... with the hint');
	# changes nothing: no catalog row, no slot
	is($bad->safe_psql('postgres', q{SELECT (SELECT count(*) FROM egress.destination) + (SELECT count(*) FROM pg_replication_slots)}),
		'0', 'egress_check changed nothing');
	$bad->stop('fast');
}

my ($ok, $detail, $hint);
for my $c (qw(wal_level max_worker_processes pg_egress.max_workers shared_preload_libraries
	max_wal_senders max_replication_slots output_plugin_libraries))
{
	($ok, $detail) = check_row($node, $c);
	is($ok, 'true', "$c passes on a server set up for pg_egress") or diag $detail;
}

# ---- LOG_BASED streams: slots, output plugins, slot WAL ----
my $dir = new_outdir($node, 'out');
my $dirw = new_outdir($node, 'outw');
$node->safe_psql('postgres', q{
CREATE TABLE t (id int PRIMARY KEY, v text);
INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 10) g;
CREATE TABLE tw (id int PRIMARY KEY, v text);
});
add_destination($node, 'dl', $dir);
add_destination($node, 'dw', $dirw, '{"decoder": "wal2json"}');
$node->safe_psql('postgres', q{
SELECT egress_add_stream('sl', 't', method => 'LOG_BASED', destination => 'dl');
SELECT egress_add_stream('sw', 'tw', method => 'LOG_BASED', destination => 'dw');
});
wait_stream_state($node, 'sl', 'streaming');
wait_stream_state($node, 'sw', 'streaming');

($ok, $detail) = check_row($node, 'output_plugin_libraries', 'dw');
is($ok, 'true', 'output_plugin_libraries allows wal2json: passes');
like($detail, qr/pgoutput, wal2json/, '... naming both decoders');
reload_with($node, q{ALTER SYSTEM SET output_plugin_libraries = pgoutput, test_decoding});
poll_until('output_plugin_libraries reloaded', 30, sub {
	(check_row($node, 'output_plugin_libraries', 'dw'))[0] eq 'false';
});
($ok, $detail, $hint) = check_row($node, 'output_plugin_libraries', 'dw');
is($ok, 'false', 'a wal2json destination on a server that does not allow wal2json: fails');
like($detail, qr/decoding with wal2json needs it to be allowed as an output plugin/, '... with the message of egress_add_stream');
like($hint, qr/output_plugin_libraries = 'pgoutput, test_decoding, wal2json'/, '... and the line to write');
($ok) = check_row($node, 'output_plugin_libraries', 'dl');
is($ok, 'true', '... while a pgoutput destination passes');
{
	my ($r, $o, $e) = $node->psql('postgres',
		q{CREATE TABLE tw2 (id int PRIMARY KEY); SELECT egress_add_stream('sw2', 'tw2', method => 'LOG_BASED', destination => 'dw')});
	like($e, qr/ERROR:  decoding with wal2json needs it to be allowed as an output plugin/,
		'egress_add_stream refuses with the same message');
}
reload_with($node, q{ALTER SYSTEM RESET output_plugin_libraries});

# slot WAL against max_slot_wal_keep_size
($ok, $detail) = check_row($node, 'slot_wal (dl)', 'dl');
is($ok, 'true', 'slot_wal: max_slot_wal_keep_size unlimited, pg_egress.max_slot_wal set: passes') or diag $detail;
reload_with($node, q{ALTER SYSTEM SET max_slot_wal_keep_size = '64MB'});
poll_until('max_slot_wal_keep_size reloaded', 30, sub {
	(check_row($node, 'slot_wal (dl)', 'dl'))[0] eq 'false';
});
($ok, $detail, $hint) = check_row($node, 'slot_wal (dl)', 'dl');
like($detail, qr/max_slot_wal_keep_size \(64 MB\) would invalidate replication slot "pg_egress_dl" before pg_egress.max_slot_wal \(16384 MB\) acts/,
	'slot_wal: max_slot_wal_keep_size below pg_egress.max_slot_wal: fails');
reload_with($node, q{ALTER SYSTEM SET pg_egress.max_slot_wal = '32MB'});
poll_until('pg_egress.max_slot_wal reloaded', 30, sub {
	(check_row($node, 'slot_wal (dl)', 'dl'))[0] eq 'true';
});
($ok, $detail) = check_row($node, 'slot_wal (dl)', 'dl');
like($detail, qr/holds .* WAL; pg_egress.max_slot_wal \(32 MB\) acts before max_slot_wal_keep_size \(64 MB\)/,
	'... and passes once pg_egress.max_slot_wal is below it');
reload_with($node, q{ALTER SYSTEM RESET max_slot_wal_keep_size; ALTER SYSTEM RESET pg_egress.max_slot_wal});

# every replication slot taken
my $free = $node->safe_psql('postgres',
	q{SELECT current_setting('max_replication_slots')::int - count(*) FROM pg_replication_slots});
$node->safe_psql('postgres',
	"SELECT pg_create_physical_replication_slot('fill_' || g) FROM generate_series(1, $free) g");
($ok, $detail, $hint) = check_row($node, 'max_replication_slots', 'dl');
is($ok, 'false', 'max_replication_slots: none free for an initial sync: fails');
like($detail, qr/no free replication slot for a LOG_BASED stream of destination "dl": 1 free replication slots are needed, 0 are free/, '... saying so');
like($hint, qr/Raise max_replication_slots/, '... with the hint of egress_add_stream');
my ($r, $o, $e) = $node->psql('postgres',
	q{CREATE TABLE t2 (id int PRIMARY KEY); SELECT egress_add_stream('sl2', 't2', method => 'LOG_BASED', destination => 'dl')});
like($e, qr/ERROR:  no free replication slot for a LOG_BASED stream of destination "dl"\nDETAIL:  1 free replication slots are needed, 0 are free/,
	'egress_add_stream refuses with the same message');
$node->safe_psql('postgres',
	"SELECT pg_drop_replication_slot('fill_' || g) FROM generate_series(1, $free) g");
($ok) = check_row($node, 'max_replication_slots', 'dl');
is($ok, 'true', '... and passes once slots are free');

# pg_egress.max_workers (4): two destinations with LOG_BASED streams leave two for syncs
($ok, $detail) = check_row($node, 'pg_egress.max_workers');
like($detail, qr/leaves 2 for syncs beside the CDC workers of 2 destinations/, 'pg_egress.max_workers: passes');
for my $i (3, 4)
{
	my $d = new_outdir($node, "x$i");
	add_destination($node, "dx$i", $d);
	$node->safe_psql('postgres', "CREATE TABLE tx$i (id int PRIMARY KEY);
		SELECT egress_add_stream('sx$i', 'tx$i', method => 'LOG_BASED', destination => 'dx$i')");
}
($ok, $detail, $hint) = check_row($node, 'pg_egress.max_workers');
is($ok, 'false', 'pg_egress.max_workers: four destinations with LOG_BASED streams: fails');
like($detail, qr/pg_egress.max_workers \(4\) is too low for 4 destinations with LOG_BASED streams/, '... saying why');
like($hint, qr/at least 5/, '... and how many');
$node->safe_psql('postgres', q{SELECT egress_remove_stream('sx3'); SELECT egress_remove_stream('sx4')});

# ---- destinations reachable ----
# HTTP: a test request, acknowledged and not stored
$node->safe_psql('postgres', 'SELECT egress_add_destination(' . sql_quote('web') . ', '
	  . sql_quote($rcv->url('/ingest')) . q{, '{"headers": {"Authorization": "Bearer t0ken"}}')});
($ok, $detail) = check_row($node, 'reachable (web)', 'web');
is($ok, 'true', 'HTTP destination reachable: passes');
like($detail, qr/acknowledged a test request \(header X-Pg-Egress-Check: 1\)/, '... saying how');
my $stats = HTTP::Tiny->new->get($rcv->url('/_stats'));
like($stats->{content}, qr/"requests":0,.*"checks":1/, '... the receiver counted a check and stored nothing');
$rcv->fault('fail', 1, status => 401, body => 'no such token');
($ok, $detail, $hint) = check_row($node, 'reachable (web)', 'web');
is($ok, 'false', 'HTTP destination refusing the credentials: fails');
like($detail, qr/rejected batch pg_egress_check: HTTP status 401: no such token/, '... with the answer');
unlike($detail . $hint, qr/t0ken/, '... not showing the header');

# a non-superuser's destination: pg_egress.allowed_destination_hosts applies
$node->safe_psql('postgres', q{
CREATE ROLE etl LOGIN;
GRANT EXECUTE ON FUNCTION egress_check(text, text), egress_add_destination(text, text, jsonb) TO etl;
});
$node->safe_psql('postgres', 'SET ROLE etl; SELECT egress_add_destination(' . sql_quote('etlweb') . ', '
	  . sql_quote($rcv->url('/ingest')) . ')');
($ok) = check_row($node, 'reachable (etlweb)', 'etlweb', undef, 'etl');
is($ok, 'true', "a non-superuser's HTTP destination on an allowed host: passes");
reload_with($node, q{ALTER SYSTEM SET pg_egress.allowed_destination_hosts = '*'});
poll_until('allowed_destination_hosts reloaded', 30, sub {
	(check_row($node, 'reachable (etlweb)', 'etlweb', undef, 'etl'))[0] eq 'false';
});
($ok, $detail) = check_row($node, 'reachable (etlweb)', 'etlweb', undef, 'etl');
like($detail, qr/may not be connected to/, "... and fails once pg_egress.allowed_destination_hosts forbids it");
($ok) = check_row($node, 'reachable (web)', 'web');
is($ok, 'true', "... while a superuser's destination is not restricted");
reload_with($node, q{ALTER SYSTEM RESET pg_egress.allowed_destination_hosts});
# another role's destination is not probed, nor said to exist
($ok, $detail) = check_row($node, 'destination (web)', 'web', undef, 'etl');
like($detail, qr/destination "web" does not exist/, "another role's destination: not found");

# S3: a test object written and deleted
$node->safe_psql('postgres', q{
SELECT egress_add_destination('lake', 's3://lake/singer/');
SELECT egress_add_destination('nobucket', 's3://no-such-bucket/x');
});
($ok, $detail) = check_row($node, 'reachable (lake)', 'lake');
is($ok, 'true', 'S3 destination: passes') or diag $detail;
is(join(',', $s3->keys('lake')), '', '... and leaves no object');
($ok, $detail) = check_row($node, 'reachable (nobucket)', 'nobucket');
is($ok, 'false', 'S3 destination with a missing bucket: fails');
like($detail, qr/no-such-bucket/, '... naming the bucket');

# file: a directory the server's OS user cannot write
my $ro = new_outdir($node, 'ro');
add_destination($node, 'ro', $ro);
($ok) = check_row($node, 'reachable (ro)', 'ro');
is($ok, 'true', 'writable file directory: passes');
chmod(0500, $ro) or die "chmod: $!";
my $user = getpwuid($>);
($ok, $detail, $hint) = check_row($node, 'reachable (ro)', 'ro');
is($ok, 'false', 'unwritable file directory: fails');
like($detail, qr/directory "\Q$ro\E" of file destination is not writable by the server: The server runs as operating system user "\Q$user\E"/,
	'... naming the operating system user');
my ($ret, $out, $err) = $node->psql('postgres',
	q{SELECT egress_add_stream('sro', 't', method => 'FULL_TABLE', destination => 'ro')});
like($err, qr/directory "\Q$ro\E" of file destination is not writable by the server/, 'egress_add_stream refuses with the same message');
($ret, $out, $err) = $node->psql('postgres',
	'SELECT egress_add_destination(' . sql_quote('ro2') . ', ' . sql_quote(file_url("$ro/sub")) . ')');
like($err, qr/DETAIL:  The server runs as operating system user "\Q$user\E", which may not create files in "\Q$ro\E"/,
	'egress_add_destination too');
chmod(0700, $ro);

# Kinesis: DescribeStreamSummary with the server's credentials
my $kin = KinesisServer->start($node->basedir . '/kinesis', 'stream1');
my ($kend, $kkey, $ksecret) = ($kin->endpoint, $kin->access_key, $kin->secret);
reload_with($node, qq{
ALTER SYSTEM SET pg_egress.kinesis_endpoint = '$kend';
ALTER SYSTEM SET pg_egress.s3_access_key_id = '$kkey';
ALTER SYSTEM SET pg_egress.s3_secret_access_key = '$ksecret';
});
$node->safe_psql('postgres', q{
SELECT egress_add_destination('kin', 'kinesis://stream1');
SELECT egress_add_destination('kinmissing', 'kinesis://no-such-stream');
});
poll_until('Kinesis settings reloaded', 30, sub {
	(check_row($node, 'reachable (kin)', 'kin'))[0] eq 'true';
});
($ok, $detail) = check_row($node, 'reachable (kin)', 'kin');
like($detail, qr/Kinesis stream "stream1" is ACTIVE/, 'Kinesis stream: passes');
($ok, $detail) = check_row($node, 'reachable (kinmissing)', 'kinmissing');
is($ok, 'false', 'a missing Kinesis stream: fails');
like($detail, qr/ResourceNotFoundException/, '... with the answer');
reload_with($node, q{ALTER SYSTEM SET pg_egress.s3_secret_access_key = 'wrong-secret'});
poll_until('wrong secret reloaded', 30, sub {
	(check_row($node, 'reachable (kin)', 'kin'))[0] eq 'false';
});
($ok, $detail) = check_row($node, 'reachable (kin)', 'kin');
like($detail, qr/HTTP status 400: .*InvalidSignatureException/, 'a wrong secret: fails');
unlike($detail, qr/wrong-secret/, '... without showing it');

done_testing();
