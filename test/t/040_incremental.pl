
# INCREMENTAL streams: rows in (key, primary key) order; many rows sharing
# one key value across batch and run boundaries (batch_max_rows, limit) are
# neither lost nor sent twice; egress_sync_now; updates that move a key
# forward; a key that goes backwards is missed (documented); NULL keys (sent
# first by the first run, not seen afterwards); rows inserted
# while runs go on; the "interval" option; resync; bad input.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('incremental');
my $out = new_outdir($node);
sub sql { return $node->safe_psql('postgres', $_[0]); }

# Batch files of an INCREMENTAL stream: <stream>-<version>-<run>-<6 digits>.jsonl
sub inc_batches
{
	my ($stream) = @_;
	my @b = read_batches($out, qr/^\Q$stream\E-\d+-\d{13}-\d{6}\.jsonl$/);
	my @sorted = sort { $a->{name} cmp $b->{name} } @b;
	return @sorted;    # a count in scalar context
}

sub inc_records
{
	my ($stream) = @_;
	return map { $_->{record} } records_of(inc_batches($stream));
}

# The last STATE bookmark of the stream's last batch.
sub last_bookmark
{
	my ($stream, $sid) = @_;
	my @b = inc_batches($stream);
	my @st = messages_of_type('STATE', $b[-1]);
	return $st[-1]{value}{bookmarks}{$sid};
}

sql(q{SELECT egress_add_destination('d', } . sql_quote(file_url($out)) . ')');

# ---- bad input: clean errors, nothing created -------------------------------
sql(q{CREATE TABLE t (id int PRIMARY KEY, k int, v text, f float8, b bool)});
sql(q{CREATE TABLE nopk (k int, v text)});
my %bad = (
	'unknown column' => [ q{SELECT egress_add_stream('x', 't', 'INCREMENTAL', 'd', 'nosuch')}, '42703' ],
	'float key' => [ q{SELECT egress_add_stream('x', 't', 'INCREMENTAL', 'd', 'f')}, '42804' ],
	'boolean key' => [ q{SELECT egress_add_stream('x', 't', 'INCREMENTAL', 'd', 'b')}, '42804' ],
	'system column' => [ q{SELECT egress_add_stream('x', 't', 'INCREMENTAL', 'd', 'ctid')}, '42703' ],
	'no key' => [ q{SELECT egress_add_stream('x', 't', 'INCREMENTAL', 'd')}, '22023' ],
	'no primary key' => [ q{SELECT egress_add_stream('x', 'nopk', 'INCREMENTAL', 'd', 'k')}, '55000' ],
	'key for FULL_TABLE' => [ q{SELECT egress_add_stream('x', 't', 'FULL_TABLE', 'd', 'k')}, '22023' ],
	'limit for FULL_TABLE' => [ q{SELECT egress_add_stream('x', 't', 'FULL_TABLE', 'd', options => '{"limit": 5}')}, '22023' ],
	'bad interval' => [ q{SELECT egress_add_stream('x', 't', 'INCREMENTAL', 'd', 'k', '{"interval": "-1 minute"}')}, '22023' ],
	'zero interval' => [ q{SELECT egress_add_stream('x', 't', 'INCREMENTAL', 'd', 'k', '{"interval": 0}')}, '22023' ],
	'bad limit' => [ q{SELECT egress_add_stream('x', 't', 'INCREMENTAL', 'd', 'k', '{"limit": 0}')}, '22023' ],
	'keys differ' => [ q{SELECT egress_add_stream('x', 't', 'INCREMENTAL', 'd', 'k', '{"replication_key": "v"}')}, '22023' ],
);
foreach my $case (sort keys %bad)
{
	my ($state, $err) = sqlstate_of($node, $bad{$case}[0]);
	is($state, $bad{$case}[1], "bad input ($case): SQLSTATE $bad{$case}[1]") or diag $err;
}
is(sql('SELECT count(*) FROM egress_streams'), '0', 'bad input: no stream created');
is(sql('SELECT count(*) FROM egress.stream_state'), '0', 'bad input: no state row created');

# ---- many rows sharing one key value, across batches and runs ---------------
# k = 3 for ids 11..13, k = 5 for ids 1..10, k = 7 for ids 14..20
sql(q{INSERT INTO t (id, k, v) SELECT i, CASE WHEN i <= 10 THEN 5 WHEN i <= 13 THEN 3 ELSE 7 END, 'r' || i
	  FROM generate_series(1, 20) i});
sql(q{SELECT egress_add_stream('inc', 't', 'INCREMENTAL', 'd', 'k',
	  '{"batch_max_rows": 4, "limit": 6, "interval": "1 hour"}')});

my @order = ((11, 12, 13), (1 .. 10), (14 .. 20));    # by (k, id)
my $sent = 0;
foreach my $run (1 .. 4)
{
	my $expect = $sent + 6 > 20 ? 20 : $sent + 6;
	sql(q{SELECT egress_sync_now('inc')}) if $run > 1;
	wait_stream_where($node, 'inc', "state = 'synced' AND rows_sent = $expect", undef,
		"run $run: $expect rows sent in all");
	my @ids = map { $_->{id} } inc_records('inc');
	is_deeply(\@ids, [ @order[ 0 .. $expect - 1 ] ], "run $run: rows in (key, id) order, none twice, none lost");
	$sent = $expect;
	# a row with a NULL key inserted after the first run: behind the bookmark
	sql(q{INSERT INTO t (id, k, v) VALUES (21, NULL, 'null key')}) if $run == 1;
}
my @b = inc_batches('inc');
is(scalar(@b), 7, 'batches of at most 4 rows, runs of at most 6: 7 batches');
is(scalar(grep { !defined $_->{id} || $_->{id} == 21 } inc_records('inc')), 0,
	'a row with a NULL key inserted after the first run is not sent (documented)');
is_deeply([ map { scalar(records_of($_)) } @b ], [ 4, 2, 4, 2, 4, 2, 2 ], 'batch sizes');
my ($schema) = messages_of_type('SCHEMA', $b[0]);
is_deeply($schema->{bookmark_properties}, ['k'], 'SCHEMA bookmark_properties is the replication key');
is_deeply($schema->{key_properties}, ['id'], 'SCHEMA key_properties');
is(scalar(messages_of_type('ACTIVATE_VERSION', @b)), 0, 'no ACTIVATE_VERSION for INCREMENTAL');
my $bm = last_bookmark('inc', 'public-t');
is($bm->{last_replication_method}, 'INCREMENTAL', 'bookmark: last_replication_method');
is($bm->{replication_key}, 'k', 'bookmark: replication_key');
is($bm->{replication_key_value}, 7, 'bookmark: replication_key_value');
is_deeply($bm->{pg_egress_position}, { key => '7', pk => ['20'] }, 'bookmark: exact position');
my %versions = map { $_->{version} => 1 } map { messages_of_type('RECORD', $_) } @b;
is(scalar(keys %versions), 1, 'one version over all runs');
my @mid = messages_of_type('STATE', $b[0]);
is($mid[-1]{value}{bookmarks}{'public-t'}{replication_key_value}, 5,
	'the first batch ends inside the k = 5 rows: STATE says 5');
is(sql(q{SELECT bookmark->'pg_egress_position'->>'key' FROM egress_streams WHERE name = 'inc'}),
	'7', 'egress_streams.bookmark holds the position');

# nothing new: a run sends nothing
sql(q{SELECT egress_sync_now('inc')});
wait_stream_where($node, 'inc', "state = 'synced' AND sync_finished_at > now() - interval '1 minute' AND rows_sent = 20");
poll_until('run done', 60, sub { sql(q{SELECT state FROM egress.stream_state}) eq 'synced' });
is(scalar(inc_batches('inc')), 7, 'a run with nothing new writes no batch');

# ---- changes between runs -----------------------------------------------------
# more rows at the boundary value (k = 7, ids after 20), a key moved forward,
# and a key that goes backwards (missed until a resync)
sql(q{INSERT INTO t (id, k, v) VALUES (22, 7, 'same key, later id'), (23, 8, 'new')});
sql(q{UPDATE t SET k = 9, v = 'moved' WHERE id = 1});
sql(q{INSERT INTO t (id, k, v) VALUES (24, 2, 'behind')});
sql(q{SELECT egress_sync_now('inc')});
wait_stream_where($node, 'inc', "state = 'synced' AND rows_sent = 23");
my @recs = inc_records('inc');
is_deeply([ map { $_->{id} } @recs[ 20 .. $#recs ] ], [ 22, 23, 1 ],
	'after the bookmark: the later row with the boundary key, the new row, the moved row');
is($recs[-1]{v}, 'moved', 'the moved row carries its new values');
ok(!grep({ $_->{id} == 24 } @recs), 'a row whose key is behind the bookmark is not sent (documented)');

# ---- resync: everything again, new version ------------------------------------
my $old_version = $recs[0]{version} // (messages_of_type('RECORD', $b[0]))[0]{version};
sql(q{SELECT egress_resync_stream('inc')});
wait_stream_where($node, 'inc', "state = 'synced' AND rows_sent >= 29");
my @all = map { messages_of_type('RECORD', $_) } inc_batches('inc');
my @newv = grep { $_->{version} != $all[0]{version} } @all;
is_deeply([ map { $_->{record}{id} } @newv ], [ 21, 24, 11, 12, 13, 2 ],
	'resync: a new version, from the start (limit 6): the NULL-key row first, the row behind included');

# ---- NULL keys: the first run sends them first; later ones are not seen ---------
# ids 1..5 have a NULL key, 6..9 keys 1..4; the first run is cut by "limit"
# among the NULL keys, so the second run resumes inside them.
sql(q{CREATE TABLE nk (id int PRIMARY KEY, k timestamptz)});
sql(q{INSERT INTO nk SELECT i, CASE WHEN i > 5 THEN timestamptz '2024-01-01 00:00+00' + (i - 5) * interval '1 hour' END
	  FROM generate_series(1, 9) i});
sql(q{SELECT egress_add_stream('nk', 'nk', 'INCREMENTAL', 'd', 'k', '{"limit": 3, "batch_max_rows": 2, "interval": "1 hour"}')});
wait_stream_where($node, 'nk', "state = 'synced' AND rows_sent = 3", undef, 'NULL keys: the first run sends 3 rows');
is_deeply([ map { $_->{id} } inc_records('nk') ], [ 1, 2, 3 ], 'the first run: NULL keys first, by primary key');
my $nkbm = last_bookmark('nk', 'public-nk');
ok(exists $nkbm->{replication_key_value} && !defined $nkbm->{replication_key_value},
	'a run that ends among the NULL keys: replication_key_value null');
is_deeply($nkbm->{pg_egress_position}, { key => undef, pk => ['3'] }, '... and the exact position (NULL key, id 3)');
sql(q{SELECT egress_sync_now('nk')});
wait_stream_where($node, 'nk', "state = 'synced' AND rows_sent = 6");
sql(q{SELECT egress_sync_now('nk')});
wait_stream_where($node, 'nk', "state = 'synced' AND rows_sent = 9");
is_deeply([ map { $_->{id} } inc_records('nk') ], [ 1 .. 9 ],
	'the next runs: the rest of the NULL keys, then the keys in order; none twice');
sql(q{INSERT INTO nk VALUES (10, NULL), (11, '2025-01-01 00:00+00')});
sql(q{SELECT egress_sync_now('nk')});
wait_stream_where($node, 'nk', "state = 'synced' AND rows_sent = 10");
poll_until('the run is over', 60, sub { sql(q{SELECT state FROM egress_streams WHERE name = 'nk'}) eq 'synced' });
is_deeply([ map { $_->{id} } inc_records('nk') ], [ 1 .. 9, 11 ],
	'after the first run a new NULL-key row is not sent (documented), a new key is');

# ---- interval and rows inserted while runs go on ------------------------------
sql(q{CREATE TABLE ev (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp(), note text)});
sql(q{SELECT egress_add_stream('ev', 'ev', 'INCREMENTAL', 'd', 'id',
	  '{"interval": 0.2, "batch_max_rows": 7}')});
my $pb = start_pgbench($node, 'ev_insert',
	"INSERT INTO ev (note) SELECT 'n' || g FROM generate_series(1, 3) g;\n",
	'-c', '2', '-t', '300');
ok(finish_pgbench($pb), 'pgbench inserted rows while the stream ran');
wait_stream_where($node, 'ev', 'rows_sent = 1800', undef, 'every inserted row sent, by the interval alone');
my @ev = inc_records('ev');
my %seen;
$seen{ $_->{id} }++ foreach @ev;
is(scalar(@ev), 1800, '1800 records');
is(scalar(grep { $seen{$_} != 1 } keys %seen), 0, 'no row sent twice');
my @evids = map { $_->{id} } @ev;
is_deeply(\@evids, [ sort { $a <=> $b } @evids ], 'in key order');
cmp_ok(scalar(inc_batches('ev')), '>', 1, 'several batches');

# ---- egress_sync_now on other methods; timestamps as keys -----------------------
sql(q{SELECT egress_add_stream('full', 't', 'FULL_TABLE', 'd')});
wait_stream_state($node, 'full', 'synced');
sql(q{SELECT egress_sync_now('full')});
poll_until('FULL_TABLE resynced', 60,
	sub { scalar(read_batches($out, qr/^full-\d+-\d{6}\.jsonl$/)) >= 2 && sql(q{SELECT state FROM egress_streams WHERE name = 'full'}) eq 'synced' });
my %fv = map { $_->{name} =~ /^full-(\d+)-/; ($1 => 1) } read_batches($out, qr/^full-\d+-\d{6}\.jsonl$/);
is(scalar(keys %fv), 2, 'egress_sync_now of a FULL_TABLE stream: a new sync');
my ($st) = sqlstate_of($node, q{SELECT egress_sync_now('nosuch')});
is($st, '42704', 'egress_sync_now of an unknown stream');

sql(q{CREATE TABLE ts (id int, sub text, at timestamptz NOT NULL, PRIMARY KEY (id, sub))});
sql(q{INSERT INTO ts SELECT i % 3, 's' || i, '2024-01-15 10:00:00+00'::timestamptz + (i / 4) * interval '1 us' FROM generate_series(1, 40) i});
sql(q{SELECT egress_add_stream('ts', 'ts', 'INCREMENTAL', 'd', 'at', '{"batch_max_rows": 3, "limit": 5, "interval": 0.1}')});
wait_stream_where($node, 'ts', 'rows_sent = 40');
my @ts = inc_records('ts');
is(scalar(@ts), 40, 'timestamptz key, two-column primary key, microsecond ties: 40 records');
my %tsseen = map { ("$_->{id}/$_->{sub}" => 1) } @ts;
is(scalar(keys %tsseen), 40, 'timestamptz key: no row twice');
is(last_bookmark('ts', 'public-ts')->{replication_key_value}, '2024-01-15T10:00:00.000010+00:00',
	'timestamptz key: replication_key_value as in RECORDs');

# ---- every key type: shared values, small batches and runs ------------------------
my %keys = (
	numeric => q{round((i / 3)::numeric / 7, 3)},
	text => q{'k' || lpad((i / 3)::text, 3, '0')},
	varchar => q{('v' || (i / 4))::varchar(10)},
	date => q{date '2024-02-27' + (i / 5)},
	timestamp => q{timestamp '2024-01-01 00:00' + (i / 3) * interval '1.5 seconds'},
	bigint => q{(i / 6)::bigint},
	smallint => q{(i % 5)::smallint},
);
foreach my $type (sort keys %keys)
{
	sql("CREATE TABLE k_$type (id int PRIMARY KEY, k $type)");
	sql("INSERT INTO k_$type SELECT i, $keys{$type} FROM generate_series(1, 30) i");
	sql("SELECT egress_add_stream('k_$type', 'k_$type', 'INCREMENTAL', 'd', 'k', '{\"batch_max_rows\": 2, \"limit\": 4, \"interval\": 0.1}')");
}
foreach my $type (sort keys %keys)
{
	wait_stream_where($node, "k_$type", 'rows_sent = 30', undef, "$type key: all 30 rows sent");
	my @got = map { $_->{id} } inc_records("k_$type");
	my @want = split /\n/, sql("SELECT id FROM k_$type ORDER BY k, id");
	is_deeply(\@got, \@want, "$type key: in (key, id) order, each row once");
}

# ---- orderings of other schemas: a citext primary key, a domain key -------------
# The WHERE that resumes a run compares with the operators of each column's
# default ordering, as ORDER BY does: citext's own (case-insensitive), not
# text's; a domain's base type.
sql(q{CREATE EXTENSION citext});
sql(q{CREATE DOMAIN posint AS int CHECK (VALUE > 0)});
sql(q{CREATE TABLE ci (code citext PRIMARY KEY, k posint NOT NULL)});
sql(q{INSERT INTO ci SELECT c, 1 + i / 8 FROM (SELECT i, CASE WHEN i % 2 = 0 THEN upper(chr(97 + i % 26)) ELSE chr(97 + i % 26) END || i AS c
	  FROM generate_series(1, 40) i) s});
sql(q{SELECT egress_add_stream('ci', 'ci', 'INCREMENTAL', 'd', 'k', '{"batch_max_rows": 2, "limit": 3, "interval": 0.1}')});
wait_stream_where($node, 'ci', 'rows_sent = 40', undef, 'citext primary key, domain key: all 40 rows sent');
my @ci = map { $_->{code} } inc_records('ci');
is_deeply(\@ci, [ split /\n/, sql(q{SELECT code FROM ci ORDER BY k, code}) ],
	'citext primary key, domain key: in (key, code) order as ORDER BY sorts, each row once');

# ---- a primary key of an array of a domain; one with a domain in a composite --
# The bookmark's values are parsed without running the domain's CHECK (user
# code): an array of a domain as the array of its base type, which orders
# the same (here citext's case-insensitive ordering).  A composite with a
# domain field has no such twin: refused when the stream is added, and a
# run after the key's type changed to one fails with a clear error.
sql(q{CREATE DOMAIN cidom AS citext CHECK (VALUE <> '')});
sql(q{CREATE TABLE arrk (id cidom[] PRIMARY KEY, k int NOT NULL)});
sql(q{INSERT INTO arrk SELECT ARRAY[CASE WHEN i % 2 = 0 THEN upper(chr(97 + i % 26)) ELSE chr(97 + i % 26) END, i::text]::cidom[], 1 + i / 8
	  FROM generate_series(1, 40) i});
sql(q{SELECT egress_add_stream('arrk', 'arrk', 'INCREMENTAL', 'd', 'k', '{"batch_max_rows": 2, "limit": 3, "interval": 0.1}')});
wait_stream_where($node, 'arrk', 'rows_sent = 40', undef, 'array-of-domain primary key: all 40 rows sent');
is_deeply([ map { join ',', @{ $_->{id} } } inc_records('arrk') ],
	[ split /\n/, sql(q{SELECT array_to_string(id, ',') FROM arrk ORDER BY k, id}) ],
	'array-of-domain primary key: in (key, id) order as ORDER BY sorts, each row once');

sql(q{CREATE TYPE cipair AS (a int, b cidom)});
sql(q{CREATE TABLE compk (id cipair PRIMARY KEY, k int NOT NULL)});
my ($ret, $stdout, $stderr) = $node->psql('postgres',
	q{SELECT egress_add_stream('compk', 'compk', 'INCREMENTAL', 'd', 'k')});
isnt($ret, 0, 'composite primary key with a domain field: refused');
like($stderr, qr/0A000|cannot be read back safely/, 'composite primary key with a domain field: feature not supported');
like($stderr, qr/column "id" has type cipair/, 'composite primary key with a domain field: the error names column and type');

sql(q{CREATE TABLE compk2 (id int PRIMARY KEY, k int NOT NULL)});
sql(q{INSERT INTO compk2 VALUES (1, 1)});
sql(q{SELECT egress_add_stream('compk2', 'compk2', 'INCREMENTAL', 'd', 'k', '{"interval": "1 hour"}')});
wait_stream_where($node, 'compk2', "state = 'synced' AND rows_sent = 1", undef, 'compk2: first run');
sql(q{ALTER TABLE compk2 ALTER COLUMN id TYPE cipair USING ROW(id, 'x')::cipair});
sql(q{SELECT egress_sync_now('compk2')});
wait_stream_where($node, 'compk2', "state = 'error' AND last_error IS NOT NULL", undef, 'compk2: the run after the key type changed fails');
like(sql(q{SELECT last_error FROM egress_streams WHERE name = 'compk2'}),
	qr/cannot resume by column "id"/, 'compk2: last_error says the key cannot be read back');

done_testing();
