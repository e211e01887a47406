
# Stream options "columns" and "filter": FULL_TABLE, INCREMENTAL, the
# LOG_BASED initial sync and LOG_BASED changes (pgoutput: the publication's
# column list and row filter; wal2json: the renderer's column list) send
# only the columns listed and the rows of the filter.  The streams belong
# to a role that may read only some columns (but the pgoutput LOG_BASED
# one, which needs the table owner's privileges): a PII column is never
# read, never rendered, never in any file.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('columns_filter', cdc => 1);
my $out = new_outdir($node, 'cf');
my $outw = new_outdir($node, 'cfw');
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE TABLE people (id int PRIMARY KEY, name text, email text, ssn text, region text, score int);
INSERT INTO people SELECT i, 'name ' || i, 'user' || i || '@example.com', 'SSN-SECRET-' || i,
	CASE WHEN i % 2 = 0 THEN 'eu' ELSE 'us' END, i * 10 FROM generate_series(1, 40) i;
CREATE TABLE people_w (id int PRIMARY KEY, name text, ssn text);
INSERT INTO people_w SELECT i, 'name ' || i, 'SSN-SECRET-' || i FROM generate_series(1, 5) i;
CREATE ROLE etl LOGIN;
GRANT pg_write_server_files TO etl;
GRANT EXECUTE ON FUNCTION egress_add_destination(text, text, jsonb),
	egress_add_stream(text, regclass, text, text, text, jsonb), egress_remove_stream(text) TO etl;
GRANT SELECT ON egress_streams TO etl;
GRANT EXECUTE ON FUNCTION egress_stream_activity() TO etl;
GRANT CREATE ON DATABASE postgres TO etl;
GRANT SELECT (id, name, region, score) ON people TO etl;
GRANT SELECT (id, name) ON people_w TO etl;
});

sub as_etl
{
	my ($q) = @_;
	my ($ret, $o, $err) = query_as($node, 'etl', $q);
	is($ret, 0, "as etl: $q") or diag $err;
	return $o;
}

as_etl(q{SELECT egress_add_destination('d', } . sql_quote(file_url($out)) . ')');
as_etl(q{SELECT egress_add_destination('w', } . sql_quote(file_url($outw)) . q{, '{"decoder": "wal2json"}')});

# the role may not read ssn: neither list it nor filter on it
my ($ret, $o, $err) = query_as($node, 'etl',
	q{SELECT egress_add_stream('x', 'people', 'FULL_TABLE', 'd', options => '{"columns": ["id", "ssn"]}')});
like($err, qr/42501/, 'a column the owner may not read cannot be listed');
($ret, $o, $err) = query_as($node, 'etl',
	q{SELECT egress_add_stream('x', 'people', 'FULL_TABLE', 'd', options => '{"columns": ["id"], "filter": "ssn LIKE ''S%''"}')});
like($err, qr/42501/, 'a column the owner may not read cannot be filtered on');

as_etl(q{SELECT egress_add_stream('ft', 'people', 'FULL_TABLE', 'd',
	options => '{"columns": ["id", "name", "region"], "filter": "region = ''eu''"}')});
as_etl(q{SELECT egress_add_stream('inc', 'people', 'INCREMENTAL', 'd', 'id',
	'{"columns": ["id", "name", "region", "score"], "filter": "region = ''eu'' AND score >= 100", "interval": "1 hour"}')});
# With pgoutput, a column list and row filter go into the destination's
# publication, where they bind the table's owner (replica identity, DDL of
# the listed columns): like PostgreSQL for publications, pg_egress requires
# the table owner's privileges, which etl lacks.  The owner (here the
# superuser) adds the stream to etl's destination.
($ret, $o, $err) = query_as($node, 'etl',
	q{SELECT egress_add_stream('lb', 'people', 'LOG_BASED', 'd',
	options => '{"columns": ["id", "name", "region"], "filter": "id % 2 = 0"}')});
like($err, qr/42501: permission denied to use stream options "columns" or "filter"/,
	'a LOG_BASED stream with columns/filter of a table its owner does not own is refused');
like($err, qr/HINT:  Ask the table's owner to add the stream/, '... with a hint to ask the table\'s owner');
sql(q{SELECT egress_add_stream('lb', 'people', 'LOG_BASED', 'd',
	options => '{"columns": ["id", "name", "region"], "filter": "id % 2 = 0"}')});
as_etl(q{SELECT egress_add_stream('lbw', 'people_w', 'LOG_BASED', 'w',
	options => '{"columns": ["id", "name"]}')});
is(sql(q{SELECT string_agg(tablename || ' ' || attnames::text || ' ' || coalesce(rowfilter, '-'), '; ')
		 FROM pg_publication_tables WHERE pubname = 'pg_egress_d'}),
	'people {id,name,region} ((id % 2) = 0)', 'the publication of d holds people with its column list and row filter');

wait_stream_state($node, 'ft', 'synced');
wait_stream_state($node, 'inc', 'synced');
wait_stream_state($node, 'lb', 'streaming');
wait_stream_state($node, 'lbw', 'streaming');

sub keys_of { return join(',', sort keys %{ $_[0] }); }

sub check_snapshot
{
	my ($what, $re, $cols, $ids) = @_;
	my @b = read_batches($out, $re);
	ok(@b > 0, "$what: batch files written");
	my @schema = messages_of_type('SCHEMA', @b);
	ok(@schema > 0, "$what: SCHEMA sent");
	foreach my $s (@schema)
	{
		is(join(',', sort grep { !/^_sdc_/ } keys %{ $s->{schema}{properties} }), $cols,
			"$what: SCHEMA lists only the stream's columns");
	}
	my @rec = map { $_->{record} } records_of(@b);
	my %bad = map { keys_of($_) => 1 } grep { join(',', sort grep { !/^_sdc_/ } keys %$_) ne $cols } @rec;
	is(join(' | ', sort keys %bad), '', "$what: RECORDs hold only the stream's columns");
	is(join(',', sort { $a <=> $b } map { $_->{id} } @rec), join(',', @$ids),
		"$what: only the rows of the filter");
	return;
}

my @even = grep { $_ % 2 == 0 } 1 .. 40;
check_snapshot('FULL_TABLE', qr/^ft-\d+-\d{6}\.jsonl$/, 'id,name,region', \@even);
check_snapshot('INCREMENTAL', qr/^inc-\d+-\d+-\d{6}\.jsonl$/, 'id,name,region,score',
	[ grep { $_ >= 10 } @even ]);
check_snapshot('LOG_BASED initial sync', qr/^lb-\d+-\d{6}\.jsonl$/, 'id,name,region', \@even);

# ---- changes ----------------------------------------------------------------
sql(q{
INSERT INTO people SELECT i, 'name ' || i, 'user' || i || '@example.com', 'SSN-SECRET-' || i,
	CASE WHEN i % 2 = 0 THEN 'eu' ELSE 'us' END, i * 10 FROM generate_series(41, 49) i;
UPDATE people SET name = 'renamed ' || id WHERE id IN (2, 3);
UPDATE people SET ssn = 'SSN-SECRET-changed-' || id, email = 'x@example.com' WHERE id IN (6, 7);
DELETE FROM people WHERE id IN (4, 5);
INSERT INTO people VALUES (50, 'last', 'last@example.com', 'SSN-SECRET-50', 'eu', 500);
INSERT INTO people_w VALUES (6, 'name 6', 'SSN-SECRET-w6');
UPDATE people_w SET ssn = 'SSN-SECRET-w1b', name = 'changed' WHERE id = 1;
});

my @changes;
ok( poll_until(
		'the change of id 50 arrives', undef,
		sub {
			@changes = map { $_->{record} } records_of(cdc_batches($out, 'd'));
			return scalar grep { $_->{id} == 50 } @changes;
		}),
	'LOG_BASED changes arrive');
# (a delete carries the key only)
my %bad = map { keys_of($_) => 1 }
  grep { join(',', sort grep { !/^_sdc_/ } keys %$_) ne (defined $_->{_sdc_deleted_at} ? 'id' : 'id,name,region') }
  @changes;
is(join(' | ', sort keys %bad), '', 'LOG_BASED changes: only the stream\'s columns');
is(join(',', map { $_->{id} } @changes), '42,44,46,48,2,6,4,50',
	'LOG_BASED changes: only rows of the filter, in commit order');
is(scalar(grep { $_->{id} == 4 && defined $_->{_sdc_deleted_at} } @changes), 1,
	'a delete of a filtered row is sent');
is((grep { $_->{id} == 2 } @changes)[0]{name}, 'renamed 2', 'an update is sent with the listed columns');

my @wchanges;
ok( poll_until(
		'the wal2json destination sends its changes', undef,
		sub {
			@wchanges = map { $_->{record} } records_of(cdc_batches($outw, 'w'));
			return scalar grep { $_->{id} == 1 } @wchanges;
		}),
	'LOG_BASED changes of the wal2json destination arrive');
%bad = map { keys_of($_) => 1 } grep { join(',', sort grep { !/^_sdc_/ } keys %$_) ne 'id,name' } @wchanges;
is(join(' | ', sort keys %bad), '', 'wal2json: changes hold only the stream\'s columns');

# the PII never reaches a file, whatever the method
foreach my $dir ($out, $outw)
{
	my @hits;
	foreach my $name (list_dir($dir))
	{
		open(my $fh, '<:raw', "$dir/$name") or die "could not open $dir/$name: $!";
		local $/;
		my $text = <$fh>;
		close $fh;
		push @hits, $name if $text =~ /SSN-SECRET|\@example\.com/;
	}
	is(join(' ', @hits), '', "no file in $dir holds ssn or email values");
}

# removing the stream takes the table out of the publication
sql(q{SELECT egress_remove_stream('lb')});
is(sql(q{SELECT count(*) FROM pg_publication_tables WHERE pubname = 'pg_egress_d'}), '0',
	'the publication follows egress_remove_stream');

# ---- two transactions changing one destination's streams at once --------------
# SET TABLE replaces the publication's tables with those a transaction sees:
# the calls take turns, or (REPEATABLE READ) fail, never drop another's table.
sql(q{CREATE TABLE c1 (id int PRIMARY KEY); CREATE TABLE c2 (id int PRIMARY KEY);
	  CREATE TABLE c3 (id int PRIMARY KEY); CREATE TABLE c4 (id int PRIMARY KEY)});
add_destination($node, 'dc', new_outdir($node, 'cfc'));
my $ta = $node->background_psql('postgres', on_error_stop => 0);
$ta->query_safe('BEGIN');
$ta->query_safe(q{SELECT egress_add_stream('cc1', 'c1', 'LOG_BASED', 'dc')});
my $tb = $node->background_psql('postgres');
$tb->query_until(qr/started/, qq{\\echo started\nSELECT egress_add_stream('cc2', 'c2', 'LOG_BASED', 'dc');\n});
ok( poll_until(
		'the second call waits for the first', 30,
		sub {
			sql(q{SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'
				  AND query LIKE '%cc2%'}) eq '1';
		}),
	'a second LOG_BASED stream of the destination waits for the first transaction');
$ta->query_safe('COMMIT');
$tb->query_safe('SELECT 1');
is(sql(q{SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_publication_tables WHERE pubname = 'pg_egress_dc'}),
	'c1,c2', 'both tables are in the publication');

$ta->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
$ta->query_safe('SELECT count(*) FROM egress.stream');
sql(q{SELECT egress_add_stream('cc3', 'c3', 'LOG_BASED', 'dc')});
$ta->query(q{SELECT egress_add_stream('cc4', 'c4', 'LOG_BASED', 'dc')});
like($ta->{stderr}, qr/could not serialize access/, 'under REPEATABLE READ the later call fails instead');
$ta->{stderr} = '';
$ta->query_safe('COMMIT');    # (a ROLLBACK after the error)
is(sql(q{SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_publication_tables WHERE pubname = 'pg_egress_dc'}),
	'c1,c2,c3', 'and no table was dropped from the publication');
$ta->quit;
$tb->quit;

$node->stop;
done_testing();
