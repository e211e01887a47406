
# egress_export(query, uri, options, parallel => N): part files
# <uri>_part1..N whose concatenation is byte for byte what COPY writes (no
# header; rows in physical order), to files and to the local S3 server;
# the caller's output settings (DateStyle, TimeZone, extra_float_digits,
# bytea_output) and role apply in every part; row level security shows an
# unprivileged caller's parts exactly what parallel 1 shows it; exactly one
# snapshot (rows committed by a concurrent writer after the run started are
# in no part, made deterministic with an advisory lock the query waits
# for); queries that cannot be split, parallel beyond max_workers and a
# transaction that has written are refused cleanly; a part worker
# terminated mid-run fails the export and leaves no file behind.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;
use S3Server;

my $node = create_node('parallel_export', conf => "pg_egress.max_workers = 3\n");
my $s3 = S3Server->start($node->basedir . '/s3', 'lake');
my $endpoint = $s3->endpoint;
$node->append_conf('postgresql.conf', qq{
pg_egress.s3_endpoint = '$endpoint'
pg_egress.s3_region = 'us-east-1'
pg_egress.s3_access_key_id = 'S3RVER'
pg_egress.s3_secret_access_key = 'S3RVER'
});
$node->reload;
my $out = new_outdir($node, 'pexp');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub slurp
{
	my ($file) = @_;
	open(my $fh, '<:raw', $file) or return undef;
	my $c = do { local $/; <$fh> };
	close $fh;
	return $c;
}

# COPY's bytes in a session with the settings of $pre
sub psql_copy
{
	my ($query, $options, $pre, $user) = @_;
	my $file = "$out/copy.tmp";
	unlink $file;
	$node->safe_psql('postgres', ($pre // '') . "\n\\copy ($query) to '$file' with ($options)",
		defined $user ? (extra_params => [ '-U', $user ]) : ());
	return slurp($file);
}

# egress_export(...) in a session with the settings of $pre: (ret, stdout, stderr)
sub export
{
	my ($query, $uri, $options, $n, $pre, $user) = @_;
	return $node->psql('postgres',
		    ($pre // '')
		  . "\n\\set VERBOSITY verbose\n"
		  . 'SELECT rows_uploaded, files_uploaded, bytes_uploaded FROM egress_export('
		  . sql_quote($query) . ', '
		  . sql_quote($uri) . ', '
		  . sql_quote($options)
		  . (defined $n ? ", parallel => $n" : '') . ')',
		defined $user ? (extra_params => [ '-U', $user ]) : ());
}

sub parts_concat
{
	my ($base, $n) = @_;
	my $c = '';
	for my $k (1 .. $n)
	{
		my $p = slurp("${base}_part$k");
		return undef unless defined $p;
		$c .= $p;
	}
	return $c;
}

sql(q{
CREATE TABLE e (id integer PRIMARY KEY, ts timestamptz, d date, f float8, b bytea,
				iv interval, payload text);
INSERT INTO e SELECT i, '2026-01-01 00:00:00+00'::timestamptz + i * interval '37 minutes',
	'2026-01-01'::date + i % 400, i / 7.0, pg_catalog.decode(md5(i::text), 'hex'),
	i * interval '1 second', repeat(md5(i::text), 1 + i % 3)
  FROM generate_series(1, 20000) i;
});
my $q = 'SELECT * FROM e';

# ---- byte identity with COPY: file and S3 ------------------------------------
my $copy = psql_copy($q, 'format text');
my ($ret, $stdout, $stderr) = export($q, "file://$out/e1.txt", '', 1);
is($ret, 0, 'parallel 1 export') or diag $stderr;
is(slurp("$out/e1.txt"), $copy, 'parallel 1: one file, COPY\'s bytes');
($ret, $stdout, $stderr) = export($q, "file://$out/e2.txt", '', 2);
is($ret, 0, 'parallel 2 export') or diag $stderr;
like($stdout, qr/^20000\|2\|/, 'parallel 2: 20,000 rows in 2 files');
ok(!-e "$out/e2.txt", 'parallel 2: no file under the bare name');
ok(length(slurp("$out/e2.txt_part1") // '') > 0 && length(slurp("$out/e2.txt_part2") // '') > 0,
	'parallel 2: both parts have rows');
is(parts_concat("$out/e2.txt", 2), $copy, 'parallel 2: part1 . part2 is COPY\'s bytes');
($ret, $stdout, $stderr) = export($q, "file://$out/e3.txt", '', 3);
is(parts_concat("$out/e3.txt", 3), $copy, 'parallel 3: part1 . part2 . part3 is COPY\'s bytes');
like(sql(qq{EXPLAIN SELECT * FROM e WHERE e.ctid OPERATOR(pg_catalog.>=) '(10,0)'::tid AND e.ctid OPERATOR(pg_catalog.<) '(20,0)'::tid}),
	qr/Tid Range Scan/, 'a part reads with a TID Range Scan');

my $csv = psql_copy($q, 'format csv');
($ret, $stdout, $stderr) = export($q, 's3://lake/e.csv', 'format csv', 2);
is($ret, 0, 'parallel 2 export to S3') or diag $stderr;
is_deeply([ $s3->keys('lake') ], [ 'e.csv_part1', 'e.csv_part2' ], 'S3: objects e.csv_part1, e.csv_part2');
is(($s3->object('lake', 'e.csv_part1') // '') . ($s3->object('lake', 'e.csv_part2') // ''), $csv,
	'S3: their concatenation is COPY\'s bytes');
is_deeply($s3->state->{open}, [], 'S3: no multipart upload left open');

# ---- the caller's output settings in every part --------------------------------
my $pre = q{SET DateStyle = 'SQL, DMY'; SET TimeZone = 'Asia/Tokyo'; SET extra_float_digits = 0;
SET bytea_output = 'escape'; SET IntervalStyle = 'postgres_verbose';};
my $copy_settings = psql_copy($q, 'format text', $pre);
isnt($copy_settings, $copy, 'the settings change COPY\'s bytes');
($ret, $stdout, $stderr) = export($q, "file://$out/s.txt", '', 2, $pre);
is($ret, 0, 'parallel 2 export with session settings') or diag $stderr;
is(parts_concat("$out/s.txt", 2), $copy_settings, 'parallel 2: the parts are COPY\'s bytes in the caller\'s settings');

# ---- what cannot be split, and the limits: clean errors ------------------------
sql(q{CREATE TABLE o (id integer); CREATE VIEW ev AS SELECT * FROM e;});
foreach my $bad (
	[ 'SELECT * FROM e ORDER BY id', 'ORDER BY' ],
	[ 'SELECT * FROM e LIMIT 5', 'LIMIT' ],
	[ 'SELECT count(*) FROM e', 'aggregates' ],
	[ 'SELECT DISTINCT d FROM e', 'DISTINCT' ],
	[ 'SELECT e.id FROM e JOIN o ON o.id = e.id', 'one table' ],
	[ 'SELECT id FROM e UNION ALL SELECT id FROM o', 'set operations' ],
	[ 'SELECT * FROM ev', 'view' ],
	[ 'SELECT id, row_number() OVER () FROM e', 'window' ],
	[ 'SELECT 1', 'one table' ],
	[ 'SELECT * FROM e TABLESAMPLE SYSTEM (50)', 'TABLESAMPLE' ],
	[ 'SELECT * FROM e WHERE id IN (SELECT id FROM o)', 'subqueries' ],
	[ 'SELECT * FROM e FOR SHARE', 'locks rows' ],
	[ 'SELECT id, generate_series(1, (random() * 3)::int) FROM e', 'volatile set-returning' ])
{
	($ret, $stdout, $stderr) = export($bad->[0], "file://$out/bad.txt", '', 2);
	like($stderr, qr/0A000: the export query cannot be split into 2 parts: .*\Q$bad->[1]\E.*HINT:  Use parallel => 1\./s,
		"not split: $bad->[0]");
}
($ret, $stdout, $stderr) = export('SELECT * FROM tt', "file://$out/bad.txt", '', 2,
	'CREATE TEMP TABLE tt AS SELECT 1 AS x;');
like($stderr, qr/0A000: the export query cannot be split into 2 parts: it reads a temporary table/,
	'not split: a temporary table');
($ret, $stdout, $stderr) = export($q, "file://$out/bad.txt", '', 2, 'BEGIN; SAVEPOINT s;');
like($stderr, qr/0A000: parallel => 2 cannot run inside a subtransaction.*HINT:  Use parallel => 1/s,
	'refused inside a subtransaction');
($ret, $stdout, $stderr) = export($q, "file://$out/bad.txt", '', 4);
like($stderr, qr/53400: parallel => 4 is more than pg_egress.max_workers \(3\).*HINT:  Use at most 3/s,
	'parallel beyond pg_egress.max_workers: 53400 with a hint');
($ret, $stdout, $stderr) = export($q, "file://$out/bad.txt", '', 0);
like($stderr, qr/22023: parallel must be at least 1/, 'parallel 0 is refused');
($ret, $stdout, $stderr) = export($q, "file://$out/bad.txt", '', 2, 'BEGIN; INSERT INTO o VALUES (1);');
like($stderr, qr/0A000: a parallel export cannot run in a transaction that has written/,
	'a transaction that has written is refused');
is(scalar(grep { /^bad/ } list_dir($out)), 0, 'no file of the refused exports');

# ---- exactly one snapshot -----------------------------------------------------
# Every part's query waits in gate() for advisory lock 4242 after taking its
# snapshot; meanwhile another session inserts, updates and deletes.
sql(q{CREATE FUNCTION public.gate() RETURNS boolean LANGUAGE sql VOLATILE
	AS $$ SELECT true FROM pg_catalog.pg_advisory_xact_lock_shared(4242) $$;});
my $gq = 'SELECT * FROM e WHERE public.gate()';
my $holder = $node->background_psql('postgres');
$holder->query_safe('SELECT pg_advisory_lock(4242)');
my $bg = $node->background_psql('postgres', on_error_stop => 0);
$bg->query_until(qr/started/,
	"\\echo started\nSELECT rows_uploaded FROM egress_export(" . sql_quote($gq) . ", 'file://$out/g.txt', '', parallel => 3);\n");
ok( poll_until(
		'the three parts wait for the gate', 60,
		sub { sql(q{SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted}) eq '3' }),
	'part 1 (the caller), parts 2 and 3 have their snapshot and wait');
# two of pg_egress.max_workers (3) are taken by its parts
($ret, $stdout, $stderr) = export($q, "file://$out/busy.txt", '', 3);
like($stderr, qr/53400: parallel => 3 cannot be honoured now: 2 of pg_egress.max_workers \(3\) are busy.*HINT:  Retry later/s,
	'another parallel 3 export meanwhile: 53400, cannot be honoured');
ok(!(grep { /^busy/ } list_dir($out)), '... and wrote nothing');
sql(q{INSERT INTO e (id, payload) SELECT i, 'new' FROM generate_series(20001, 20100) i;
	  UPDATE e SET payload = 'changed' WHERE id <= 100;
	  DELETE FROM e WHERE id BETWEEN 101 AND 200;});
$holder->query_safe('SELECT pg_advisory_unlock(4242)');
my ($res) = $bg->query('SELECT 1');
like($res, qr/^20000$/m, 'the export wrote 20,000 rows');
is(parts_concat("$out/g.txt", 3), $copy, 'the parts are exactly the snapshot before the writer\'s commit');

# ---- a part worker terminated mid-run ----------------------------------------
$holder->query_safe('SELECT pg_advisory_lock(4242)');
$bg->{stderr} = '';
$bg->query_until(qr/started/,
	"\\echo started\nSELECT rows_uploaded FROM egress_export(" . sql_quote($gq) . ", 'file://$out/k.txt', '', parallel => 2);\n");
my $part_pid;
ok( poll_until(
		'part 2 waits', 60,
		sub {
			$part_pid = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_egress part'});
			$part_pid ne ''
			  && sql(qq{SELECT count(*) FROM pg_locks WHERE pid = $part_pid AND locktype = 'advisory' AND NOT granted}) eq '1';
		}),
	'part 2 runs and waits');
sql("SELECT pg_terminate_backend($part_pid)");
$holder->query_safe('SELECT pg_advisory_unlock(4242)');
$bg->query('SELECT 1');
like($bg->{stderr}, qr/part 2 of 2 ended without finishing/, 'the export fails: part 2 ended without finishing');
is(scalar(grep { /k\.txt/ } list_dir($out)), 0, 'no part file and no temporary file of the failed export');

# ---- part 2 finished and published, then part 1 fails: part 2 is removed -------
# gate2() waits only for the first rows (block 0: part 1's); part 2 ends and
# publishes its object, then the caller is cancelled while part 1 waits.
sql(q{CREATE FUNCTION public.gate2(i integer) RETURNS boolean LANGUAGE sql VOLATILE
	AS $$ SELECT CASE WHEN i > 10 THEN true ELSE (SELECT true FROM pg_catalog.pg_advisory_xact_lock_shared(4242)) END $$;
	  CREATE TABLE c AS SELECT i AS id, md5(i::text) AS payload FROM generate_series(1, 20000) i;});
$holder->query_safe('SELECT pg_advisory_lock(4242)');
$bg->{stderr} = '';
my $caller = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_until(qr/started/,
	"\\echo started\nSELECT rows_uploaded FROM egress_export('SELECT * FROM c WHERE public.gate2(id)', 's3://lake/c.csv', 'format csv', parallel => 2);\n");
ok(poll_until('part 2 published its object', 60, sub { grep { $_ eq 'c.csv_part2' } $s3->keys('lake') }),
	'part 2 finished and published c.csv_part2 while part 1 waits');
ok(!(grep { $_ eq 'c.csv_part1' } $s3->keys('lake')), 'part 1 is not published yet: the set does not look complete');
sql("SELECT pg_cancel_backend($caller)");
$bg->query('SELECT 1');
like($bg->{stderr}, qr/canceling statement due to user request/, 'the export was cancelled');
is(scalar(grep { /^c\.csv/ } $s3->keys('lake')), 0, 'no object of the cancelled export is left');
is_deeply($s3->state->{open}, [], 'no multipart upload left open');
$holder->query_safe('SELECT pg_advisory_unlock(4242)');
$holder->quit;
$bg->quit;

# ---- an unprivileged caller: row level security, role ---------------------------
sql(q{
CREATE ROLE alice LOGIN;
CREATE ROLE bob LOGIN;
GRANT pg_write_server_files TO alice;
GRANT EXECUTE ON FUNCTION egress_export(text, text, text), egress_export(text, text, text, integer) TO alice;
CREATE TABLE r (id integer, who name, payload text);
INSERT INTO r SELECT i, CASE WHEN i % 3 = 0 THEN 'alice' ELSE 'bob' END, md5(i::text) FROM generate_series(1, 30000) i;
ALTER TABLE r ENABLE ROW LEVEL SECURITY;
CREATE POLICY mine ON r USING (who = current_user);
GRANT SELECT ON r TO alice, bob;
});
my $rq = 'SELECT * FROM r';
my $alice_copy = psql_copy($rq, 'format text', '', 'alice');
is(scalar(() = $alice_copy =~ /\n/g), 10000, 'alice sees 10,000 rows through the policy');
($ret, $stdout, $stderr) = export($rq, "file://$out/r1.txt", '', 1, '', 'alice');
is($ret, 0, 'alice: parallel 1') or diag $stderr;
($ret, $stdout, $stderr) = export($rq, "file://$out/r2.txt", '', 2, '', 'alice');
is($ret, 0, 'alice: parallel 2') or diag $stderr;
is(parts_concat("$out/r2.txt", 2), slurp("$out/r1.txt"), 'alice: the parts show exactly what parallel 1 shows her');
is(slurp("$out/r1.txt"), $alice_copy, '... which is her COPY');
($ret, $stdout, $stderr) = export($rq, "file://$out/r3.txt", '', 2, 'SET ROLE alice;');
is($ret, 0, 'a superuser after SET ROLE alice: parallel 2') or diag $stderr;
is(parts_concat("$out/r3.txt", 2), $alice_copy, '... the parts read as alice');

is(sql(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_egress part'}), '0', 'no part worker left');

$node->stop;
done_testing();
