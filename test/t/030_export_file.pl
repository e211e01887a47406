
# egress_export() to files: byte identity with psql's \copy (COPY TO STDOUT)
# for text, csv and binary on the every-type table and with RDS-style
# option strings; gzip; splitting at max_file_size with exact counts;
# progress in pg_stat_progress_copy; cancel and a query failing halfway
# leave nothing behind; privileges.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Uncompress::Gunzip qw(gunzip $GunzipError);
use IPC::Run;
use EgressTest;

my $node = create_node('export_file');
my $out = new_outdir($node);
every_type_table($node);

sub slurp
{
	my ($f) = @_;
	open(my $fh, '<:raw', $f) or die "$f: $!";
	my $c = do { local $/; <$fh> };
	close $fh;
	return $c;
}

# what psql's \copy (COPY ... TO STDOUT) writes
sub psql_copy
{
	my ($query, $options, $file) = @_;
	$node->safe_psql('postgres', "\\copy ($query) to '$file' with ($options)");
	return slurp($file);
}

sub export
{
	my ($query, $uri, $options) = @_;
	my $r = $node->safe_psql('postgres',
		    'SELECT rows_uploaded, files_uploaded, bytes_uploaded FROM egress_export('
		  . sql_quote($query) . ', '
		  . sql_quote($uri) . ', '
		  . sql_quote($options) . ')');
	return split /\|/, $r;
}

my $q = 'SELECT * FROM t ORDER BY id';
my $nrows = $node->safe_psql('postgres', 'SELECT count(*) FROM t');

# --- byte identity, every format, and RDS-style option strings
my %cases = (
	text => [ 'format text', 'format text' ],
	text_default => [ '', 'format text' ],
	csv => [ 'format csv', 'format csv' ],
	binary => [ 'format binary', 'format binary' ],
	csv_rds => [
		q{format csv, delimiter $$;$$, header true, null 'x', quote '''', force_quote *},
		q{format csv, delimiter ';', header true, null 'x', quote '''', force_quote *}
	],
	text_opts => [ q{delimiter '|', null '<null>', header}, q{delimiter '|', null '<null>', header} ],
	csv_encoding => [ q{format csv, encoding 'LATIN1', force_quote (c_text, c_vc)},
		q{format csv, encoding 'UTF8', force_quote (c_text, c_vc)} ],
);
foreach my $name (sort keys %cases)
{
	my ($opts, $copy_opts) = @{ $cases{$name} };
	my $query = $name eq 'csv_encoding' ? 'SELECT id, c_vc, c_text FROM t WHERE id = 2' : $q;
	my $want = psql_copy($query, $copy_opts, "$out/$name.psql");
	if ($name eq 'csv_encoding')
	{
		# no non-ASCII in that row: LATIN1 and UTF8 bytes agree
		unlike($want, qr/[\x80-\xff]/, 'encoding case is ASCII');
	}
	my ($rows, $files, $bytes) = export($query, "file://$out/$name.out", $opts);
	my $got = slurp("$out/$name.out");
	ok($got eq $want, "$name: identical to \\copy (" . length($want) . ' bytes)')
	  or diag "got:\n$got\nwant:\n$want";
	is_deeply([ $rows, $files, $bytes ],
		[ ($name eq 'csv_encoding' ? 1 : $nrows), 1, length($want) ],
		"$name: counts");
}

# session settings that change text output reach the export as they reach COPY
$node->safe_psql('postgres', q{ALTER DATABASE postgres SET DateStyle = 'SQL, DMY'});
{
	my $want = psql_copy($q, 'format csv', "$out/datestyle.psql");
	export($q, "file://$out/datestyle.out", 'format csv');
	ok(slurp("$out/datestyle.out") eq $want, 'DateStyle: identical to \\copy');
	like($want, qr{15/01/2024}, 'DateStyle took effect');
}
$node->safe_psql('postgres', q{ALTER DATABASE postgres RESET DateStyle});

# --- gzip
{
	my $want = psql_copy($q, 'format csv', "$out/gz.psql");
	my ($rows, $files, $bytes) = export($q, "file://$out/gz.csv.gz", 'format csv, compression gzip');
	my $gz = slurp("$out/gz.csv.gz");
	my $plain;
	gunzip(\$gz => \$plain) or die "gunzip: $GunzipError";
	ok($plain eq $want, 'gzip: decompresses to \\copy output');
	is_deeply([ $rows, $files, $bytes ], [ $nrows, 1, length($gz) ], 'gzip: counts');
}

# --- splitting at max_file_size
$node->safe_psql('postgres',
	q{CREATE TABLE big AS SELECT g AS id, repeat('x', g % 50) AS pad FROM generate_series(1, 5000) g});
my $bq = 'SELECT * FROM big ORDER BY id';
foreach my $fmt ('text', 'csv', 'binary')
{
	my $hdr = $fmt eq 'csv' ? ', header true' : '';
	my $want = psql_copy($bq, "format $fmt$hdr", "$out/split_$fmt.psql");
	my $max = 20000;
	my ($rows, $files, $bytes) =
	  export($bq, "file://$out/split_$fmt.out", "format $fmt$hdr, max_file_size $max");
	my @names = ("split_$fmt.out", map { "split_$fmt.out_part$_" } 2 .. $files);
	my @parts = map { slurp("$out/$_") } @names;
	my @on_disk = grep { /^split_\Q$fmt\E\.out/ } list_dir($out);
	is(scalar @on_disk, $files, "$fmt split: files_uploaded is the number of files");
	cmp_ok($files, '>', 3, "$fmt split: more than 3 parts ($files)");
	is($rows, 5000, "$fmt split: rows_uploaded");
	my $sum = 0;
	$sum += length $_ for @parts;
	is($bytes, $sum, "$fmt split: bytes_uploaded is the total size");
	ok(!(grep { length($_) > $max } @parts), "$fmt split: no part above max_file_size");
	my $joined;
	if ($fmt eq 'binary')
	{
		my $header = substr($want, 0, 19);
		ok(!(grep { substr($_, 0, 19) ne $header || substr($_, -2) ne "\xff\xff" } @parts),
			'binary split: every part has the header and the trailer');
		$joined = $header . join('', map { substr($_, 19, length($_) - 21) } @parts) . "\xff\xff";
	}
	elsif ($fmt eq 'csv')
	{
		my ($header) = $want =~ /\A([^\n]*\n)/;
		ok(!(grep { index($_, $header) != 0 } @parts), 'csv split: every part starts with the header');
		$joined = $header . join('', map { substr($_, length $header) } @parts);
	}
	else
	{
		ok(!(grep { !/\n\z/ } @parts), 'text split: parts end at a row end');
		$joined = join('', @parts);
	}
	ok($joined eq $want, "$fmt split: the parts make up COPY's output");
}

# gzip and splitting: every part a gzip stream of whole rows
{
	my $want = psql_copy($bq, 'format text', "$out/gzsplit.psql");
	my ($rows, $files, $bytes) =
	  export($bq, "file://$out/gzsplit.gz", 'max_file_size 20000, compression gzip');
	cmp_ok($files, '>', 3, "gzip split: $files parts");
	my ($joined, $sum) = ('', 0);
	foreach my $name ('gzsplit.gz', map { "gzsplit.gz_part$_" } 2 .. $files)
	{
		my $gz = slurp("$out/$name");
		$sum += length $gz;
		my $plain;
		gunzip(\$gz => \$plain) or die "gunzip $name: $GunzipError";
		ok(length($plain) <= 20000 && $plain =~ /\n\z/, "gzip split: $name holds whole rows within max_file_size");
		$joined .= $plain;
	}
	ok($joined eq $want, 'gzip split: the parts make up COPY\'s output');
	is_deeply([ $rows, $bytes ], [ 5000, $sum ], 'gzip split: counts');
}

# a query failing halfway: nothing left (no file, no temporary file)
{
	my $dir = new_outdir($node, 'fail');
	my ($ret, $o, $err) = $node->psql('postgres',
		"SELECT * FROM egress_export('SELECT g, 1 / (3000 - g) FROM generate_series(1, 5000) g', 'file://$dir/f.csv', 'format csv, max_file_size 5000')");
	isnt($ret, 0, 'failing query: error');
	like($err, qr/division by zero/, 'failing query: the query\'s error');
	is_deeply([ list_dir($dir) ], [], 'failing query: nothing left in the directory');
}

# --- progress while running, and cancel
{
	my $dir = new_outdir($node, 'cancel');
	my ($o, $e) = ('', '');
	my $h = IPC::Run::start(
		[
			'psql', '-X', '-d', $node->connstr('postgres') . ' application_name=exporter',
			'-c',
			"SELECT * FROM egress_export('SELECT g, pg_sleep(0.002) FROM generate_series(1, 100000) g', 'file://$dir/c.txt', '')"
		],
		'>', \$o, '2>', \$e);
	my $prog;
	ok( poll_until(
			'export progress in pg_stat_progress_copy',
			undef,
			sub {
				$prog = $node->safe_psql('postgres',
					q{SELECT c.command || ',' || c.type || ',' || (c.tuples_processed > 10) || ',' || (c.bytes_processed > 10)
					    FROM pg_stat_progress_copy c JOIN pg_stat_activity a USING (pid)
					   WHERE a.application_name = 'exporter'});
				return $prog eq 'COPY TO,PIPE,true,true';
			}),
		'rows and bytes so far are visible while exporting');
	my @tmp = list_dir($dir);
	is(scalar @tmp, 1, 'a hidden temporary file while exporting');
	like($tmp[0] // '', qr/^\.c\.txt\.\d+\.[0-9a-f]{8}\.egress-tmp$/, 'its name');
	$node->safe_psql('postgres',
		q{SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'exporter'});
	$h->finish;
	like($e, qr/canceling statement due to user request/, 'cancel: the export stops');
	is_deeply([ list_dir($dir) ], [], 'cancel: nothing left in the directory');
}

# notices raised by the query still reach the client; an export inside an
# export's query works
{
	$node->safe_psql('postgres', q{
CREATE FUNCTION noisy(i int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'row %', i; RETURN i; END $$});
	my ($ret, $o, $err) = $node->psql('postgres',
		"SELECT files_uploaded FROM egress_export('SELECT noisy(g) FROM generate_series(1, 3) g', 'file://$out/noisy.txt', '')");
	is($o, '1', 'noisy query: exported');
	like($err, qr/NOTICE:  row 1.*NOTICE:  row 3/s, 'noisy query: the notices reach the client');
	is(slurp("$out/noisy.txt"), "1\n2\n3\n", 'noisy query: the data does not');
	($ret, $o, $err) = $node->psql('postgres',
		"SELECT rows_uploaded FROM egress_export('SELECT * FROM egress_export(''SELECT noisy(42)'', ''file://$out/inner.txt'')', 'file://$out/outer.txt', 'format csv')");
	is($o, '1', 'nested export: outer counts');
	like($err, qr/NOTICE:  row 42/, 'nested export: a notice of the inner query reaches the client');
	is(slurp("$out/inner.txt"), "42\n", 'nested export: inner file');
	is(slurp("$out/outer.txt"), "1,1,3\n", 'nested export: outer file holds the inner result');
}

# pg_terminate_backend (FATAL: no error handling runs) leaves nothing either
{
	my $dir = new_outdir($node, 'terminate');
	my ($o, $e) = ('', '');
	my $h = IPC::Run::start(
		[
			'psql', '-X', '-d', $node->connstr('postgres') . ' application_name=terminated',
			'-c',
			"SELECT * FROM egress_export('SELECT g, pg_sleep(0.002) FROM generate_series(1, 100000) g', 'file://$dir/x.txt', '')"
		],
		'>', \$o, '2>', \$e);
	ok(poll_until('the temporary file', undef, sub { scalar list_dir($dir) }), 'terminate: export under way');
	$node->safe_psql('postgres',
		q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'terminated'});
	$h->finish;
	like($e, qr/terminating connection due to administrator command/, 'terminate: the backend exits');
	is_deeply([ list_dir($dir) ], [], 'terminate: nothing left in the directory');
}

# --- privileges: EXECUTE, and pg_write_server_files for files
$node->safe_psql('postgres', q{CREATE ROLE alice LOGIN; CREATE TABLE secret (x int); INSERT INTO secret VALUES (1)});
{
	my ($ret, $o, $err) = query_as($node, 'alice',
		"SELECT * FROM egress_export('SELECT 1', 'file://$out/alice1', '')");
	like($err, qr/42501: permission denied for function egress_export/, 'EXECUTE is granted explicitly');
	$node->safe_psql('postgres', 'GRANT EXECUTE ON FUNCTION egress_export(text, text, text) TO alice');
	($ret, $o, $err) = query_as($node, 'alice',
		"SELECT * FROM egress_export('SELECT 1', 'file://$out/alice1', '')");
	like($err, qr/42501: permission denied to export to a file/, 'files need pg_write_server_files');
	$node->safe_psql('postgres', 'GRANT pg_write_server_files TO alice');
	($ret, $o, $err) = query_as($node, 'alice',
		"SELECT * FROM egress_export('SELECT * FROM secret', 'file://$out/alice2', '')");
	like($err, qr/42501: permission denied for table secret/, 'the query runs with the caller\'s privileges');
	ok(!-e "$out/alice2", 'nothing written');
	($ret, $o, $err) = query_as($node, 'alice',
		"SELECT files_uploaded FROM egress_export('SELECT 1', 'file://$out/alice3', '')");
	is($o, '1', 'with both, the export runs');
}

$node->stop;
done_testing();
