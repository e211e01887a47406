
# FULL_TABLE fast_sync: the snapshot goes out as one CSV export (COPY's
# bytes) to the stream's S3 or file destination, and the stream's batch
# carries FAST_SYNC_RDS_S3_INFO (or, with fast_sync_format 'batch', a
# Singer SDK BATCH message) instead of RECORDs.

use strict;
use warnings;
use File::Copy;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;
use S3Server;

my $node = create_node('fast_sync');
my $s3 = S3Server->start($node->basedir . '/s3', 'lake');
my $endpoint = $s3->endpoint;
$node->append_conf('postgresql.conf', qq{
pg_egress.s3_endpoint = '$endpoint'
pg_egress.s3_region = 'eu-west-1'
pg_egress.s3_access_key_id = 'S3RVER'
pg_egress.s3_secret_access_key = 'S3RVER'
});
$node->reload;
my $out = new_outdir($node);

$node->safe_psql('postgres', qq{
CREATE TABLE t (id int PRIMARY KEY, v text, n numeric, ts timestamptz);
INSERT INTO t SELECT g, 'v,"' || g, g / 7.0, '2026-01-01 00:00+00'::timestamptz + g * interval '1 minute'
  FROM generate_series(1, 3000) g;
SELECT egress_add_destination('lake', 's3://lake/fs');
SELECT egress_add_destination('local', 'file://$out');
});

sub copy_csv
{
	my $file = "$out/../copy.csv";
	$node->safe_psql('postgres', "\\copy (SELECT id, v, n, ts FROM t) to '$file' with (format csv)");
	open(my $fh, '<:raw', $file) or die;
	my $c = do { local $/; <$fh> };
	close $fh;
	return $c;
}

sub messages
{
	my ($batch) = @_;
	return map { $_->{type} } @{ $batch->{messages} };
}

# --- S3, RDS message
$node->safe_psql('postgres',
	q{SELECT egress_add_stream('fs', 't', 'FULL_TABLE', 'lake', options => '{"fast_sync": true}')});
wait_stream_state($node, 'fs', 'synced');
{
	my @jsonl = grep { m{^fs/[^/]*\.jsonl$} } $s3->keys('lake');
	is(scalar @jsonl, 1, 'one batch object');
	my $dir = new_outdir($node, 'fetched');
	(my $name = $jsonl[0]) =~ s{.*/}{};
	copy($s3->data_dir . "/lake/$jsonl[0]._S3rver_object", "$dir/$name") or die;
	my ($b) = read_batches($dir);
	is_deeply([ messages($b) ],
		[ 'SCHEMA', 'ACTIVATE_VERSION', 'FAST_SYNC_RDS_S3_INFO', 'ACTIVATE_VERSION', 'STATE' ],
		'SCHEMA, ACTIVATE_VERSION, FAST_SYNC_RDS_S3_INFO, ACTIVATE_VERSION, STATE; no RECORD');
	my ($info) = grep { $_->{type} eq 'FAST_SYNC_RDS_S3_INFO' } @{ $b->{messages} };
	is($info->{stream}, 'public-t', 'stream');
	is($info->{s3_bucket}, 'lake', 's3_bucket');
	is($info->{s3_region}, 'eu-west-1', 's3_region');
	like($info->{s3_path}, qr{^fs/public-t/\d{4}-\d\d-\d\d-\d{6}_[0-9a-f]{8}\.csv$}, "s3_path $info->{s3_path}");
	is($info->{replication_method}, 'FULL_TABLE', 'replication_method');
	is($info->{rows_uploaded}, 3000, 'rows_uploaded');
	is($info->{files_uploaded}, 1, 'files_uploaded');
	my $want = copy_csv();
	is($info->{bytes_uploaded}, length($want), 'bytes_uploaded');
	ok(($s3->object('lake', $info->{s3_path}) // '') eq $want, 'the CSV object is COPY\'s output');
	my ($av) = grep { $_->{type} eq 'ACTIVATE_VERSION' } @{ $b->{messages} };
	is($info->{version}, $av->{version}, 'version as in ACTIVATE_VERSION');
	like($info->{time_extracted}, qr/^\d{4}-\d\d-\d\dT/, 'time_extracted');
	is($node->safe_psql('postgres', q{SELECT rows_sent FROM egress_streams WHERE name = 'fs'}), '3000', 'egress_streams rows_sent');
	is_deeply($s3->state->{open}, [], 'no multipart upload left open');
}

# --- file destination, BATCH message
$node->safe_psql('postgres',
	q{SELECT egress_add_stream('fb', 't', 'FULL_TABLE', 'local', options => '{"fast_sync": true, "fast_sync_format": "batch"}')});
wait_stream_state($node, 'fb', 'synced');
{
	my ($b) = grep { $_->{name} =~ /^fb-/ } read_batches($out);
	is_deeply([ messages($b) ],
		[ 'SCHEMA', 'ACTIVATE_VERSION', 'BATCH', 'ACTIVATE_VERSION', 'STATE' ],
		'file destination: SCHEMA, ACTIVATE_VERSION, BATCH, ACTIVATE_VERSION, STATE');
	my ($m) = grep { $_->{type} eq 'BATCH' } @{ $b->{messages} };
	is_deeply($m->{encoding}, { format => 'csv', compression => 'none' }, 'BATCH encoding');
	is(scalar @{ $m->{manifest} }, 1, 'BATCH manifest: one URI');
	like($m->{manifest}[0], qr{^file://\Q$out\E/public-t/[^/]+\.csv$}, 'BATCH manifest URI');
	(my $path = $m->{manifest}[0]) =~ s{^file://}{};
	open(my $fh, '<:raw', $path) or die "$path: $!";
	my $got = do { local $/; <$fh> };
	close $fh;
	ok($got eq copy_csv(), 'the CSV file is COPY\'s output');
}

# a '/' in a table name does not make another directory level
$node->safe_psql('postgres', q{
CREATE TABLE "../x/y" (id int);
INSERT INTO "../x/y" VALUES (1), (2);
SELECT egress_add_stream('slash', '"../x/y"', 'FULL_TABLE', 'local', options => '{"fast_sync": true, "fast_sync_format": "batch"}');
});
wait_stream_state($node, 'slash', 'synced');
{
	my ($b) = grep { $_->{name} =~ /^slash-/ } read_batches($out);
	my ($m) = grep { $_->{type} eq 'BATCH' } @{ $b->{messages} };
	like($m->{manifest}[0], qr{^file://\Q$out\E/public-\.\._x_y/[^/]+\.csv$}, "slashes replaced: $m->{manifest}[0]");
}

# --- bad option values are refused
my ($ret, $o, $e) = $node->psql('postgres',
	q{SELECT egress_add_stream('bad', 't', 'FULL_TABLE', 'lake', options => '{"fast_sync_format": "parquet"}')});
like($e, qr/"fast_sync_format" must be "rds" or "batch"/, 'fast_sync_format is checked');

$node->stop;
$s3->stop;
done_testing();
