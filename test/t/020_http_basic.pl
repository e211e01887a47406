
# HTTP destinations, the happy path: a FULL_TABLE stream of the every-type
# table (gzip on) and a LOG_BASED stream (gzip off) to the test receiver.
# One POST = one batch with the headers of the contract (Content-Type,
# Content-Encoding, X-Egress-Batch-Id, X-Egress-Stream, User-Agent, the
# user's headers); every message valid against the Singer shapes and every
# RECORD against its SCHEMA (ajv); what a target would hold (mirror) equals
# the tables; the connection is kept alive between batches.  Also the
# option validation of egress_add_destination.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;
use EgressHttp;

BAIL_OUT('npm packages of test/http are not installed (scripts/common.sh egress_npm_ci)')
  unless EgressHttp::node_ready();

my $node = create_node('http_basic', cdc => 1);
my $rcv = EgressHttp->start($node);

# ---- option validation ------------------------------------------------------
my @bad = (
	[ q{'http://'}, '{}', '22023', 'URL without a host' ],
	[ q{'http://h/x'}, '{"gzip": "yes"}', '22023', 'gzip not a boolean' ],
	[ q{'http://h/x'}, '{"timeout": 0}', '22023', 'timeout of zero seconds' ],
	[ q{'http://h/x'}, '{"timeout": "30 fortnights"}', '22023', 'timeout with an unknown unit' ],
	[ q{'http://h/x'}, '{"headers": ["a"]}', '22023', 'headers not an object' ],
	[ q{'http://h/x'}, '{"headers": {"Authorization": 5}}', '22023', 'header value not a string' ],
	[ q{'http://h/x'}, '{"headers": {"Bad Name": "x"}}', '22023', 'invalid header name' ],
	[ q{'http://h/x'}, '{"headers": {"X-Egress-Batch-Id": "x"}}', '22023', 'a header pg_egress sets' ],
	[ q{'http://h/x'}, '{"headers": {"A": "x\ny"}}', '22023', 'header value with a line break' ],
	[ q{'http://h/x'}, '{"gzip_level": 10}', '22023', 'gzip_level out of range' ],
	[ q{'http://h/x'}, '{"bogus": 1}', '22023', 'unknown option' ],
	[ q{'http://h/x'}, '{"batch_max_rows": 0}', '22023', 'batch_max_rows not positive' ],
);
foreach my $b (@bad)
{
	my ($url, $opts, $state, $desc) = @$b;
	my ($st, $err) = sqlstate_of($node, "SELECT egress_add_destination('bad', $url, '$opts')");
	is($st, $state, "egress_add_destination refuses: $desc");
}
unlike(
	(sqlstate_of($node,
		q{SELECT egress_add_destination('bad', 'http://h/x', '{"headers": {"Authorization": "Bearer s3cr3t-t0ken\u0001"}}')}))[1],
	qr/s3cr3t/, 'a refused header value is not shown in the error');
is($node->safe_psql('postgres', q{SELECT count(*) FROM egress.destination WHERE name = 'bad'}),
	'0', 'refused destinations leave no row');

# ---- FULL_TABLE, gzip ------------------------------------------------------------
every_type_table($node);
$node->safe_psql('postgres', q{
CREATE TABLE big (id integer PRIMARY KEY, v text NOT NULL, ts timestamptz NOT NULL, n numeric(10,2));
INSERT INTO big SELECT i, repeat(md5(i::text), 3), '2024-01-01 00:00:00+00'::timestamptz + i * interval '1 min', i / 7.0
  FROM generate_series(1, 5000) i;
});
$node->safe_psql('postgres',
	'SELECT egress_add_destination(\'hz\', ' . sql_quote($rcv->url('/gz'))
	  . q{, '{"gzip": true, "timeout": "20s", "batch_max_rows": 700, "headers": {"Authorization": "Bearer tok-123456", "X-Tenant": "acme"}}')});
$node->safe_psql('postgres', q{SELECT egress_add_stream('ft_ev', 't', 'FULL_TABLE', 'hz')});
$node->safe_psql('postgres', q{SELECT egress_add_stream('ft_big', 'big', 'FULL_TABLE', 'hz')});
wait_stream_state($node, 'ft_ev', 'synced');
wait_stream_state($node, 'ft_big', 'synced');

my @gz = grep { $_->{path} eq '/gz' } $rcv->requests;
ok(@gz >= 9, 'FULL_TABLE: batches cut by the destination\'s batch_max_rows (700): ' . scalar(@gz) . ' POSTs');
my @bad_headers;
foreach my $r (@gz)
{
	my $h = $r->{headers};
	push @bad_headers, "$r->{seq}: content-type" unless ($h->{'content-type'} // '') eq 'application/x-ndjson';
	push @bad_headers, "$r->{seq}: content-encoding" unless ($h->{'content-encoding'} // '') eq 'gzip';
	push @bad_headers, "$r->{seq}: user-agent" unless ($h->{'user-agent'} // '') =~ m{^pg_egress/\d};
	push @bad_headers, "$r->{seq}: authorization" unless ($h->{authorization} // '') eq 'Bearer tok-123456';
	push @bad_headers, "$r->{seq}: x-tenant" unless ($h->{'x-tenant'} // '') eq 'acme';
	push @bad_headers, "$r->{seq}: batch id" unless ($h->{'x-egress-batch-id'} // '') =~ /^ft_(ev|big)-\d+-\d{6}$/;
	push @bad_headers, "$r->{seq}: stream" unless ($h->{'x-egress-stream'} // '') =~ /^ft_(ev|big)$/;
	push @bad_headers, "$r->{seq}: not decoded" if defined $r->{decode_error};
	push @bad_headers, "$r->{seq}: not compressed" unless $r->{bytes} < length($r->{body} // '');
}
is_deeply(\@bad_headers, [], 'FULL_TABLE: every POST has the contract\'s headers and a gzip body');

my $tmp = $rcv->to_dir($node->basedir . '/as_files');
my %info;
compare_states(mirror($tmp, 'public-big', ['id'], \%info), table_state($node, 'big', ['id']), 'FULL_TABLE big');
is($info{records}, 5000, 'FULL_TABLE big: every row exactly once');
compare_states(mirror($tmp, 'public-t', ['id'], \%info), table_state($node, 't', ['id']), 'FULL_TABLE every type');

# ---- FULL_TABLE, no gzip: batches larger than 256 kB are sent while written ----------
$node->safe_psql('postgres',
	'SELECT egress_add_destination(\'hp\', ' . sql_quote($rcv->url('/plain')) . q{, '{"batch_max_rows": 2000}')});
$node->safe_psql('postgres', q{SELECT egress_add_stream('ft_plain', 'big', 'FULL_TABLE', 'hp')});
wait_stream_state($node, 'ft_plain', 'synced');
my @plain = grep { $_->{path} eq '/plain' } $rcv->requests;
is(scalar(@plain), 3, 'FULL_TABLE without gzip: 3 POSTs of up to 2000 rows');
ok((grep { ($_->{headers}{'transfer-encoding'} // '') eq 'chunked' } @plain) >= 2,
	'large batches are streamed (chunked) while they are written');
compare_states(mirror($rcv->to_dir($node->basedir . '/as_files_plain'), 'public-big', ['id'], \%info),
	table_state($node, 'big', ['id']), 'FULL_TABLE big, streamed');

# A streamed batch sits paused while its rows are produced: 2 s of pauses
# here (a view that sleeps 0.1 s every 100 rows), over the 1 s "timeout",
# which counts from the end of the batch: no timeout, one POST.
$node->safe_psql('postgres', q{
CREATE VIEW slow AS SELECT id, v || CASE WHEN id % 100 = 0 THEN pg_sleep(0.1)::text ELSE '' END AS v
  FROM big WHERE id <= 3000;
});
$node->safe_psql('postgres',
	'SELECT egress_add_destination(\'hslow\', ' . sql_quote($rcv->url('/slow'))
	  . q{, '{"batch_max_rows": 3000, "batch_max_bytes": 100000000, "timeout": "1s"}')});
$node->safe_psql('postgres', q{SELECT egress_add_stream('ft_slow', 'slow', 'FULL_TABLE', 'hslow')});
wait_stream_state($node, 'ft_slow', 'synced');
my @slow = grep { $_->{path} eq '/slow' } $rcv->requests;
is(scalar(@slow), 1, 'a slowly written streamed batch: one POST');
is($slow[0]{headers}{'transfer-encoding'} // '', 'chunked', '... streamed');
is($slow[0]{status}, 200, '... acknowledged');
my @timeouts = grep { m{/slow \(attempt} } split /\n/, slurp_file($node->logfile);
is_deeply(\@timeouts, [], '... without a failed attempt (the pauses do not count in "timeout")');

# ---- LOG_BASED, no gzip ------------------------------------------------------------
$node->safe_psql('postgres', q{
CREATE TABLE c (id integer PRIMARY KEY, v text, ts timestamptz DEFAULT now());
INSERT INTO c SELECT i, 'v' || i FROM generate_series(1, 100) i;
});
$node->safe_psql('postgres',
	'SELECT egress_add_destination(\'hc\', ' . sql_quote($rcv->url('/cdc')) . q{, '{"flush_interval": "100ms"}')});
$node->safe_psql('postgres',
	q{SELECT egress_add_stream('lb', 'c', 'LOG_BASED', 'hc', options => '{"debug_lsn": true}')});
wait_stream_state($node, 'lb', 'streaming');
$node->safe_psql('postgres', q{
INSERT INTO c SELECT i, 'n' || i FROM generate_series(101, 300) i;
UPDATE c SET v = 'u' || id WHERE id % 3 = 0;
DELETE FROM c WHERE id % 5 = 0;
BEGIN; UPDATE c SET id = id + 1000 WHERE id = 7; INSERT INTO c VALUES (5000, 'x'); COMMIT;
});
wait_caught_up($node, 'lb');
my @cdc = grep { $_->{path} eq '/cdc' } $rcv->requests;
ok(!grep({ defined $_->{headers}{'content-encoding'} } @cdc), 'LOG_BASED: no Content-Encoding without gzip');
ok(!grep({ ($_->{headers}{'x-egress-batch-id'} // '') !~ /^(lb-\d+-\d{6}|hc-[0-9A-F]{16}-[0-9A-F]{16}-\d{10})$/ } @cdc),
	'LOG_BASED: batch ids name the stream or destination and positions');
my $tmp2 = $rcv->to_dir($node->basedir . '/as_files2');
compare_states(mirror($tmp2, 'public-c', ['id'], \%info), table_state($node, 'c', ['id']), 'LOG_BASED');
ok($info{cdc_records} > 0, "LOG_BASED: changes arrived as change batches ($info{cdc_records} records)");

# ---- the receiver's view of it all -----------------------------------------------
$rcv->validate('all batches');
my @conns = map { $_->{headers}{connection} // '' } $rcv->requests;
ok(!grep({ lc($_) eq 'close' } @conns), 'no request asks to close its connection (keep-alive)');

$rcv->stop;
done_testing();
