
# egress_export() and aws_s3.query_export_to_s3() to a local S3 server
# that verifies SigV4 (test/s3): byte identity for every format, multipart
# with more than 3 parts, a 503 on one part then success, splitting,
# abort on cancel, on statement_timeout and on a query failing halfway (no
# object, no open upload), credentials from settings, the environment, the
# shared credentials file and the call, wrong and missing credentials.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use EgressTest;
use S3Server;

my $node = create_node('export_s3');
my $s3 = S3Server->start($node->basedir . '/s3', 'lake', 'other');
my $endpoint = $s3->endpoint;

# credentials from the superuser-only settings
$node->append_conf('postgresql.conf', qq{
pg_egress.s3_endpoint = '$endpoint'
pg_egress.s3_region = 'us-east-1'
pg_egress.s3_access_key_id = 'S3RVER'
pg_egress.s3_secret_access_key = 'S3RVER'
});
$node->reload;
every_type_table($node);
my $out = new_outdir($node);

sub psql_copy
{
	my ($query, $options) = @_;
	my $file = "$out/copy.tmp";
	$node->safe_psql('postgres', "\\copy ($query) to '$file' with ($options)");
	open(my $fh, '<:raw', $file) or die "$file: $!";
	my $c = do { local $/; <$fh> };
	close $fh;
	return $c;
}

sub export
{
	my ($query, $uri, $options, $pre) = @_;
	return $node->psql('postgres',
		    ($pre // '')
		  . "\\set VERBOSITY verbose\n"
		  . 'SELECT rows_uploaded, files_uploaded, bytes_uploaded FROM egress_export('
		  . sql_quote($query) . ', '
		  . sql_quote($uri) . ', '
		  . sql_quote($options) . ')');
}

sub no_open_uploads
{
	my ($what) = @_;
	my $st = $s3->state;
	is_deeply($st->{open}, [], "$what: no multipart upload left open")
	  or diag explain $st;
	return $st;
}

my $q = 'SELECT * FROM t ORDER BY id';
my $nrows = $node->safe_psql('postgres', 'SELECT count(*) FROM t');

# --- byte identity, single PUT
foreach my $fmt ('text', 'csv', 'binary')
{
	my $opts = $fmt eq 'csv' ? 'format csv, header true' : "format $fmt";
	my $want = psql_copy($q, $opts);
	my ($ret, $o, $e) = export($q, "s3://lake/types/t.$fmt", $opts);
	is($ret, 0, "$fmt: export succeeds") or diag $e;
	is($o, "$nrows|1|" . length($want), "$fmt: counts");
	ok(($s3->object('lake', "types/t.$fmt") // '') eq $want, "$fmt: object identical to \\copy");
}
is($s3->state->{ops}{PutObject}, 3, 'small objects: one PUT each');
is($s3->state->{ops}{CreateMultipartUpload}, undef, 'small objects: no multipart upload');

# an empty result is an empty object
{
	my ($ret, $o) = export('SELECT 1 WHERE false', 's3://lake/empty.txt', '');
	is($o, '0|1|0', 'empty result: counts');
	is($s3->object('lake', 'empty.txt'), '', 'empty result: empty object');
}

# --- multipart with more than 3 parts (5 MiB parts, ~23 MB)
$node->safe_psql('postgres',
	q{CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 1 + g % 3) AS pad FROM generate_series(1, 250000) g});
my $bq = 'SELECT * FROM big ORDER BY id';
my $big = psql_copy($bq, 'format csv');
my $nparts = int((length($big) + 5 * 1024 * 1024 - 1) / (5 * 1024 * 1024));
cmp_ok($nparts, '>', 3, "the big export needs $nparts parts");
{
	my $before = $s3->state;
	my ($ret, $o, $e) = export($bq, 's3://lake/big/all.csv', 'format csv', "SET pg_egress.s3_part_size = '5MB';\n");
	is($ret, 0, 'multipart: export succeeds') or diag $e;
	is($o, '250000|1|' . length($big), 'multipart: counts');
	ok(($s3->object('lake', 'big/all.csv') // '') eq $big, 'multipart: object identical to \\copy');
	my $st = no_open_uploads('multipart');
	is($st->{ops}{UploadPart} - ($before->{ops}{UploadPart} // 0), $nparts, "multipart: $nparts parts uploaded");
	is(scalar @{ $st->{completed} }, 1, 'multipart: one upload completed');
}

# --- a 503 (SlowDown) on one part, then success
{
	$s3->fail('UploadPart', 2, 503);
	my $before = $s3->state;
	my ($ret, $o, $e) = export($bq, 's3://lake/big/retried.csv', 'format csv', "SET pg_egress.s3_part_size = '5MB';\n");
	is($ret, 0, '503 on a part: export succeeds') or diag $e;
	ok(($s3->object('lake', 'big/retried.csv') // '') eq $big, '503 on a part: object identical');
	my $st = no_open_uploads('503 on a part');
	is($st->{faults_injected}, 1, '503 on a part: the fault was injected');
	is($st->{ops}{UploadPart} - $before->{ops}{UploadPart}, $nparts + 1, '503 on a part: that part was sent again');
}
# ... and on a single PUT (500)
{
	$s3->fail('PutObject', 1, 500);
	my ($ret, $o, $e) = export($q, 's3://lake/types/retried.txt', '');
	is($ret, 0, '500 on a PUT: export succeeds') or diag $e;
	ok(($s3->object('lake', 'types/retried.txt') // '') eq psql_copy($q, 'format text'), '500 on a PUT: object identical');
}

# --- splitting at max_file_size
{
	my $max = 5 * 1024 * 1024;
	my ($ret, $o, $e) = export($bq, 's3://lake/split/b.csv', "format csv, max_file_size $max",
		"SET pg_egress.s3_part_size = '5MB';\n");
	is($ret, 0, 'split: export succeeds') or diag $e;
	my ($rows, $files, $bytes) = split /\|/, $o;
	my @keys = $s3->keys('lake');
	my @split = grep { m{^split/} } @keys;
	is_deeply(\@split, [ 'split/b.csv', map { "split/b.csv_part$_" } 2 .. $files ], "split: keys ($files parts)");
	cmp_ok($files, '>=', 4, 'split: at least 4 files');
	my @objs = map { $s3->object('lake', $_) } ('split/b.csv', map { "split/b.csv_part$_" } 2 .. $files);
	ok(!(grep { length($_) > $max } @objs), 'split: no object above max_file_size');
	ok(join('', @objs) eq $big, 'split: the objects make up COPY\'s output');
	is($rows, 250000, 'split: rows_uploaded');
	is($bytes, length($big), 'split: bytes_uploaded');
	no_open_uploads('split');
}

# --- abort: cancel, statement_timeout, a query failing halfway
sub start_export
{
	my ($sql) = @_;
	my ($o, $e) = ('', '');
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-d', $node->connstr('postgres') . ' application_name=exporter', '-c', $sql ],
		'>', \$o, '2>', \$e);
	return ($h, \$o, \$e);
}

{
	my $before = $s3->state;
	$s3->delay('UploadPart', 1500);
	my ($h, $o, $e) = start_export(
		"SET pg_egress.s3_part_size = '5MB'; SELECT * FROM egress_export('$bq', 's3://lake/abort/cancel.csv', 'format csv')");
	ok( poll_until(
			'a part upload under way',
			undef,
			sub { ($s3->state->{ops}{UploadPart} // 0) > ($before->{ops}{UploadPart} // 0) }),
		'cancel: upload under way');
	$node->safe_psql('postgres',
		q{SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'exporter'});
	$h->finish;
	$s3->delay('UploadPart', 0);
	like($$e, qr/canceling statement due to user request/, 'cancel: the export stops');
	ok(!defined $s3->object('lake', 'abort/cancel.csv'), 'cancel: no object');
	my $st = no_open_uploads('cancel');
	is(scalar @{ $st->{aborted} }, scalar @{ $before->{aborted} } + 1, 'cancel: the upload was aborted');
}

{
	my $before = $s3->state;
	$s3->delay('UploadPart', 1500);
	my ($h, $o, $e) = start_export(
		"SET pg_egress.s3_part_size = '5MB'; SELECT * FROM egress_export('$bq', 's3://lake/abort/terminate.csv', 'format csv')");
	ok( poll_until(
			'a part upload under way',
			undef,
			sub { ($s3->state->{ops}{UploadPart} // 0) > ($before->{ops}{UploadPart} // 0) }),
		'terminate: upload under way');
	$node->safe_psql('postgres',
		q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'exporter'});
	$h->finish;
	$s3->delay('UploadPart', 0);
	like($$e, qr/terminating connection due to administrator command/, 'terminate: the backend exits');
	ok(!defined $s3->object('lake', 'abort/terminate.csv'), 'terminate: no object');
	my $st = no_open_uploads('terminate');
	is(scalar @{ $st->{aborted} }, scalar @{ $before->{aborted} } + 1, 'terminate: the upload was aborted');
}

{
	my $before = $s3->state;
	$s3->delay('UploadPart', 3000);
	my ($ret, $o, $e) = export($bq, 's3://lake/abort/timeout.csv', 'format csv',
		"SET pg_egress.s3_part_size = '5MB';\nSET statement_timeout = '2s';\n");
	$s3->delay('UploadPart', 0);
	like($e, qr/canceling statement due to statement timeout/, 'statement_timeout: the export stops');
	ok(!defined $s3->object('lake', 'abort/timeout.csv'), 'statement_timeout: no object');
	my $st = no_open_uploads('statement_timeout');
	is(scalar @{ $st->{aborted} }, scalar @{ $before->{aborted} } + 1, 'statement_timeout: the upload was aborted');
}

{
	my $before = $s3->state;
	my ($ret, $o, $e) = export(
		'SELECT id, pad, 1 / (200000 - id) FROM big',
		's3://lake/abort/failing.csv', 'format csv', "SET pg_egress.s3_part_size = '5MB';\n");
	like($e, qr/division by zero/, 'failing query: its error');
	ok(!defined $s3->object('lake', 'abort/failing.csv'), 'failing query: no object');
	my $st = no_open_uploads('failing query');
	cmp_ok($st->{ops}{UploadPart}, '>', $before->{ops}{UploadPart}, 'failing query: parts had been sent');
	is(scalar @{ $st->{aborted} }, scalar @{ $before->{aborted} } + 1, 'failing query: the upload was aborted');
}

# a failure after some split objects were completed removes them again
{
	my ($ret, $o, $e) = export(
		'SELECT id, pad, 1 / (200000 - id) FROM big',
		's3://lake/abort/splitfail.csv', 'format csv, max_file_size 1000000');
	like($e, qr/division by zero/, 'failing split: its error');
	is_deeply([ grep { m{^abort/} } $s3->keys('lake') ], [], 'failing split: no object at all');
	no_open_uploads('failing split');
}

# --- errors from S3 name bucket, key and status, never the secret
{
	my ($ret, $o, $e) = export($q, 's3://nosuchbucket/k.txt', '');
	like($e, qr{s3://nosuchbucket/k\.txt.*HTTP status 404}, 'missing bucket: bucket, key, status');
}
$node->safe_psql('postgres', 'CREATE EXTENSION aws_s3');
{
	my ($ret, $o, $e) = $node->psql('postgres',
		q{SELECT * FROM aws_s3.query_export_to_s3('SELECT 1', aws_commons.create_s3_uri('lake', 'bad/creds.txt', 'us-east-1'),
			credentials := aws_commons.create_aws_credentials('S3RVER', 'Sekr1tValue', NULL))});
	like($e, qr{could not upload S3 object "s3://lake/bad/creds\.txt": HTTP status 403}, 'wrong secret: 403 naming bucket and key');
	unlike($e, qr/Sekr1tValue/, 'wrong secret: the secret is not shown');
	ok(!defined $s3->object('lake', 'bad/creds.txt'), 'wrong secret: no object');
}

# --- the RDS calls, as an RDS client issues them, in a database without pg_egress
$node->safe_psql('postgres', 'CREATE DATABASE rds');
$node->safe_psql('rds', 'CREATE EXTENSION aws_s3 CASCADE; CREATE TABLE sample_table AS SELECT * FROM generate_series(1, 10) AS g(n)');
{
	my $r = $node->safe_psql('rds', q{
SELECT * FROM aws_s3.query_export_to_s3('SELECT * FROM sample_table', aws_commons.create_s3_uri('lake', 'rds/sample-filepath', 'us-east-1'));
SELECT * FROM aws_s3.query_export_to_s3('select * from sample_table', aws_commons.create_s3_uri('lake', 'rds/sample.csv', 'us-east-1'), options :='format csv, delimiter $$:$$');
});
	is($r, "10|1|21\n10|1|21", 'RDS: s3_info signature, default options and options :=');
	is($s3->object('lake', 'rds/sample-filepath'), join('', map { "$_\n" } 1 .. 10), 'RDS: text object');
	$r = $node->safe_psql('rds', q{
SELECT * FROM aws_s3.query_export_to_s3('SELECT n, n * 2 FROM sample_table WHERE n < 3', 'lake', 'rds/bucket-form.csv', 'us-east-1', options :='format csv, HEADER true');
SELECT rows_uploaded, files_uploaded, bytes_uploaded FROM aws_s3.query_export_to_s3('SELECT 1', 'lake', 'rds/kms.txt', kms_key := 'arn:aws:kms:us-east-1:111122223333:key/test');
});
	is($r, "2|1|19\n1|1|2", 'RDS: bucket/file_path/region signature, kms_key');
	is($s3->object('lake', 'rds/bucket-form.csv'), "n,?column?\n1,2\n2,4\n", 'RDS: csv object');
	$r = $node->safe_psql('rds', q{
SELECT * FROM aws_s3.query_export_to_s3('SELECT 42', aws_commons.create_s3_uri('lake', 'rds/token.txt', 'us-east-1'),
	credentials := aws_commons.create_aws_credentials('S3RVER', 'S3RVER', 'a-session-token'))});
	is($r, '1|1|3', 'RDS: explicit credentials with a session token (signed header)');
	is_deeply($s3->state->{session_tokens}, ['a-session-token'], 'the session token is sent (x-amz-security-token)');
}

# --- credentials from the environment and the shared credentials file
$node->safe_psql('postgres', q{ALTER SYSTEM SET pg_egress.s3_access_key_id = ''; ALTER SYSTEM SET pg_egress.s3_secret_access_key = ''});
$node->stop;
{
	local $ENV{AWS_SHARED_CREDENTIALS_FILE} = $node->basedir . '/no-such-credentials';
	local $ENV{AWS_ACCESS_KEY_ID};
	local $ENV{AWS_SECRET_ACCESS_KEY};
	$node->start;
	my ($ret, $o, $e) = export('SELECT 1', 's3://lake/nocreds.txt', '');
	like($e, qr/55000: no AWS credentials for S3 object "s3:\/\/lake\/nocreds\.txt"/, 'no credentials: clean error');
	$node->stop;
}
{
	local $ENV{AWS_ACCESS_KEY_ID} = 'S3RVER';
	local $ENV{AWS_SECRET_ACCESS_KEY} = 'S3RVER';
	$node->start;
	my ($ret, $o, $e) = export('SELECT 1', 's3://lake/env.txt', '');
	is($o, '1|1|2', 'credentials from the server environment') or diag $e;
	$node->stop;
}
{
	my $cf = $node->basedir . '/aws-credentials';
	open(my $fh, '>', $cf) or die;
	print $fh "[default]\naws_access_key_id = nope\naws_secret_access_key = nope\n\n[egress]\naws_access_key_id = S3RVER\naws_secret_access_key = S3RVER\n";
	close $fh;
	local $ENV{AWS_SHARED_CREDENTIALS_FILE} = $cf;
	local $ENV{AWS_PROFILE} = 'egress';
	local $ENV{AWS_ACCESS_KEY_ID};
	local $ENV{AWS_SECRET_ACCESS_KEY};
	$node->start;
	my ($ret, $o, $e) = export('SELECT 1', 's3://lake/file.txt', '');
	is($o, '1|1|2', 'credentials from a profile of the shared credentials file') or diag $e;
	$node->stop;
}

$s3->stop;
done_testing();
