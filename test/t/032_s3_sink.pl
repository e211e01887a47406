
# S3 destinations for streams: a FULL_TABLE sync writes one object per
# batch, <prefix>/<batch id>.jsonl, complete Singer files; a 503 on one PUT
# is retried; a LOG_BASED stream delivers its changes as objects too, and
# an S3 outage is retried (by the sinks' one retry loop), not a rejection;
# a wrong secret is a rejection (state error until resumed); a
# missing bucket puts the stream in error with a message that names bucket,
# key and status, and leaves no object.

use strict;
use warnings;
use File::Copy;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;
use S3Server;

my $node = create_node('s3_sink', cdc => 1);
my $s3 = S3Server->start($node->basedir . '/s3', 'lake');
my $endpoint = $s3->endpoint;
$node->append_conf('postgresql.conf', qq{
pg_egress.s3_endpoint = '$endpoint'
pg_egress.s3_access_key_id = 'S3RVER'
pg_egress.s3_secret_access_key = 'S3RVER'
});
$node->reload;

$node->safe_psql('postgres', q{
CREATE TABLE t (id int PRIMARY KEY, v text);
INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 2500) g;
SELECT egress_add_destination('lake', 's3://lake/singer/');
SELECT egress_add_destination('nobucket', 's3://no-such-bucket/x');
});
is($node->safe_psql('postgres', q{SELECT kind || ' ' || location FROM egress.destination WHERE name = 'lake'}),
	's3 lake/singer', 'an s3 destination: bucket and prefix');

# the objects under a prefix, copied to a directory read_batches() reads
sub fetch_batches
{
	my ($prefix) = @_;
	my $dir = new_outdir($node, 'fetched');
	foreach my $key (grep { m{^\Q$prefix\E/} } $s3->keys('lake'))
	{
		(my $name = $key) =~ s{.*/}{};
		copy($s3->data_dir . "/lake/$key._S3rver_object", "$dir/$name") or die "copy $key: $!";
	}
	return read_batches($dir);
}

# a 503 on the second PUT: retried, the sync completes
$s3->fail('PutObject', 2, 503);
$node->safe_psql('postgres',
	q{SELECT egress_add_stream('t', 't', 'FULL_TABLE', 'lake', options => '{"batch_max_rows": 1000}')});
wait_stream_state($node, 't', 'synced');
my @batches = fetch_batches('singer');
is(scalar @batches, 3, 'one object per batch');
like($_->{name}, qr/^t-.*\.jsonl$/, "object named by the batch id: $_->{name}") for @batches;
my @problems = map { check_batch_file($_) } @batches;
is_deeply(\@problems, [], 'every object is a complete Singer batch');
my @ids = sort { $a <=> $b } map { $_->{record}{id} } records_of(@batches);
is_deeply(\@ids, [ 1 .. 2500 ], 'every row exactly once');
is($s3->state->{faults_injected}, 1, 'the 503 was injected and retried');

# LOG_BASED to S3: the initial sync and then the changes, as objects
$node->safe_psql('postgres', q{
CREATE TABLE c (id int PRIMARY KEY, v text);
INSERT INTO c SELECT g, 'c' || g FROM generate_series(1, 10) g;
SELECT egress_add_destination('cdc', 's3://lake/cdc');
SELECT egress_add_stream('c', 'c', 'LOG_BASED', 'cdc');
});
wait_stream_state($node, 'c', 'streaming');
$node->safe_psql('postgres', q{
INSERT INTO c SELECT g, 'c' || g FROM generate_series(11, 20) g;
DELETE FROM c WHERE id <= 5;
});
my @cdc;
ok( poll_until(
		'the changes in S3 objects',
		undef,
		sub {
			@cdc = records_of(fetch_batches('cdc'));
			return (grep { defined $_->{record}{_sdc_deleted_at} } @cdc) == 5;
		}),
	'LOG_BASED: changes delivered as S3 objects');
my %live;
foreach my $r (@cdc)
{
	if (defined $r->{record}{_sdc_deleted_at}) { delete $live{ $r->{record}{id} }; }
	else { $live{ $r->{record}{id} } = 1; }
}
is_deeply([ sort { $a <=> $b } keys %live ], [ 6 .. 20 ], 'LOG_BASED: replaying the objects gives the table');

# an S3 outage longer than the upload's own retries (six 503s in a row) is
# no rejection: the worker retries, the streams never go to state error
$s3->fail('PutObject', $_, 503) for 1 .. 6;
my $faults_before = $s3->state->{faults_injected};
$node->safe_psql('postgres', q{INSERT INTO c VALUES (21, 'c21')});
ok( poll_until(
		'the change after the outage in S3',
		undef,
		sub { return grep { $_->{record}{id} == 21 } records_of(fetch_batches('cdc')); }),
	'LOG_BASED: a change sent during a 503 outage is delivered');
is($s3->state->{faults_injected} - $faults_before, 6, 'all six 503s were injected');
# the S3 sink makes one attempt per request; the sinks' one retry loop
# (egress_sink_commit_with_retries) retries the batch
like(slurp_file($node->logfile), qr{could not deliver batch \S+ to S3 destination lake/cdc \(attempt 1\): .*HTTP status 503},
	'LOG_BASED: the 503s were retried by the sinks\' retry loop');

# a wrong secret (403 SignatureDoesNotMatch) is a rejection, not an outage:
# the stream stops in state error at once, with a clean message and no
# secret; once the secret is right again, egress_resume_stream() delivers
# what was held back
$node->safe_psql('postgres', q{ALTER SYSTEM SET pg_egress.s3_secret_access_key = 'Wr0ngSekr1t'});
$node->reload;
$node->safe_psql('postgres', q{INSERT INTO c VALUES (22, 'c22')});
wait_stream_state($node, 'c', 'error', 60);
my $werr = $node->safe_psql('postgres', q{SELECT last_error FROM egress_streams WHERE name = 'c'});
like($werr, qr{s3://lake/cdc/.*HTTP status 403}, 'wrong secret: last_error names the object and the status');
unlike($werr, qr/Wr0ngSekr1t|S3RVER/, 'wrong secret: no secret in the error');
$node->safe_psql('postgres', q{ALTER SYSTEM RESET pg_egress.s3_secret_access_key});
$node->reload;
$node->safe_psql('postgres', q{SELECT egress_resume_stream('c')});
ok( poll_until(
		'the change held back by the wrong secret in S3',
		undef,
		sub { return grep { $_->{record}{id} == 22 } records_of(fetch_batches('cdc')); }),
	'wrong secret: delivered after the fix and egress_resume_stream');
is($node->safe_psql('postgres', q{SELECT state FROM egress_streams WHERE name = 'c'}),
	'streaming', 'an S3 outage does not stop the LOG_BASED stream');

# a missing bucket: error state naming bucket, key and status; no object
$node->safe_psql('postgres',
	q{SELECT egress_add_stream('t2', 't', 'FULL_TABLE', 'nobucket')});
wait_stream_state($node, 't2', 'error');
my $err = $node->safe_psql('postgres', q{SELECT last_error FROM egress_streams WHERE name = 't2'});
like($err, qr{s3://no-such-bucket/x/t2-.*\.jsonl.*HTTP status 404}, 'last_error names bucket, key and status');
unlike($err, qr/S3RVER/, 'no secret in the error');

$node->stop;
$s3->stop;
done_testing();
