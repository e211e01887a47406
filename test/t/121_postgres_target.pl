
# postgres:// destinations (issue 15): streams applied to tables of a second
# PostgreSQL 15 cluster (and of another database of the source cluster
# itself), checked in the target against docs/postgres_target.md:
#
#  - every type of the every-type table (002/008), FULL_TABLE and LOG_BASED:
#    the target column types of the documented map and each value;
#  - FULL_TABLE versions: a second run replaces the contents (rows deleted
#    at the source are deleted with hard_delete, get _sdc_deleted_at
#    without it when the column exists, are deleted when it does not);
#  - INCREMENTAL runs (upserts by key);
#  - LOG_BASED INSERT / UPDATE (also of the key) / DELETE / TRUNCATE, with
#    soft and hard deletes, several changes of one key in one transaction;
#  - add_metadata_columns (_sdc_extracted_at, _sdc_batched_at,
#    _sdc_deleted_at);
#  - ALTER TABLE on the source while streaming: a column added (ADD COLUMN
#    in the target), a column's type changed (the old column renamed aside
#    as <col>_<yyyymmdd_hhmm>, a new one added), a type change that maps to
#    the same target type (nothing renamed);
#  - a table without a primary key: refused with primary_key_required
#    (default; a clean last_error, no table made) and appended with false;
#  - parallelism 2 with four streams (two connections, both used);
#  - loading into another database of the source cluster (same path: TCP,
#    password);
#  - schema_mapping and target_schema_privileges (a role can SELECT, another
#    cannot);
#  - the _pg_egress_state rows (source = <system identifier>/<database>).
#
# Every wait is a poll with a deadline.

use strict;
use warnings;
use utf8;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

# ---------------------------------------------------------------------------
# The documented type map (docs/postgres_target.md)
# ---------------------------------------------------------------------------

# format date-time
my $TS = 'timestamp without time zone';
my $TSTZ = $TS eq 'timestamp with time zone';
# text output of a date-time value loaded from the contract's UTC text, in a
# UTC session
sub ts { return $TSTZ ? "$_[0]+00" : $_[0]; }
my $NUMBER = 'numeric';
# integer: by the schema's maximum (smallint / integer / bigint)
my $INT2 = 'smallint';
my $INT4 = 'integer';
my $INT8 = 'bigint';
my $STRING = 'character varying';
my $TIME = 'time without time zone';
my $JSONB = 'jsonb';

my %target_type = (
	id => $INT4,
	c_int2 => $INT2,
	c_int4 => $INT4,
	c_int8 => $INT8,
	c_num => $NUMBER,
	c_numu => $NUMBER,
	c_real => $NUMBER,
	c_dbl => $NUMBER,
	c_bool => 'boolean',
	c_bit => 'boolean',
	c_text => $STRING,
	c_vc => $STRING,
	c_ch => $STRING,
	c_uuid => $STRING,
	c_inet => $STRING,
	c_enum => $STRING,
	c_date => $TS,
	c_ts => $TS,
	c_tstz => $TS,
	c_time => $TIME,
	c_timetz => $TIME,
	c_json => $JSONB,
	c_jsonb => $JSONB,
	c_hstore => $JSONB,
	c_intarr => $JSONB,
	c_txtarr => $JSONB,
	c_intv => $STRING,
	c_bytea => $STRING,
	c_point => $STRING,
	c_dom => $INT4,
	c_nn => $STRING,
);
my @json_columns = qw(c_json c_jsonb c_hstore c_intarr c_txtarr);

# The every-type rows as the target's text output of each column (UTC),
# hand-written from the contract's values (002) and the type map; JSON
# columns apart, compared by value.
my $PLUS_INF = ts('9999-12-31 23:59:59.999');
my $MINUS_INF = ts('0001-01-01 00:00:00');
my @scalar_columns = grep { my $c = $_; !grep { $_ eq $c } @json_columns } keys %target_type;
my %null_row = map { $_ => undef } @scalar_columns;
my %expected = (
	1 => {
		id => '1',
		c_int2 => '-32768',
		c_int4 => '2147483647',
		c_int8 => '-9223372036854775808',
		c_num => '1234567890.12',
		c_numu => '12345678901234.56789012345678901234567890',
		c_real => '1.1',
		c_dbl => '0.30000000000000004',
		c_bool => 'true',
		c_bit => 'true',
		c_text => "caf\x{e9} \"q\" \\ back\nnew\ttab \x{1F600} /",
		c_vc => 'abc',
		c_ch => 'ab   ',
		c_uuid => 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
		c_inet => '192.168.0.1/24',
		c_enum => 'happy',
		c_date => ts('2024-01-15 00:00:00'),
		c_ts => ts('2024-01-15 13:45:30.123456'),
		c_tstz => ts('2024-01-15 11:45:30.5'),
		c_time => '13:45:30.123456',
		c_timetz => '11:45:30.654321',
		c_intv => 'P1Y2M3DT4H5M6.5S',
		c_bytea => '\\x0102ff',
		c_point => '(1.5,-2)',
		c_dom => '42',
		c_nn => 'required',
	},
	2 => {
		id => '2',
		c_int2 => '32767',
		c_int4 => '-2147483648',
		c_int8 => '9223372036854775807',
		c_num => undef,
		c_numu => undef,
		c_real => undef,
		c_dbl => undef,
		c_bool => 'false',
		c_bit => 'false',
		c_text => '',
		c_vc => 'ten chars!',
		c_ch => 'abcde',
		c_uuid => '00000000-0000-0000-0000-000000000000',
		c_inet => '::1',
		c_enum => 'sad',
		c_date => $PLUS_INF,
		c_ts => $MINUS_INF,
		c_tstz => $PLUS_INF,
		c_time => '08:00:00',
		c_timetz => '02:30:00',
		c_intv => 'PT2H30M',
		c_bytea => '\\x',
		c_point => '(0,0)',
		c_dom => '1',
		c_nn => 'x',
	},
	3 => {
		%null_row,
		id => '3',
		c_int2 => '0',
		c_int4 => '0',
		c_int8 => '0',
		c_num => '-0.50',
		c_bool => 'true',
		c_date => $MINUS_INF,
		c_ts => $PLUS_INF,
		c_tstz => $MINUS_INF,
		c_nn => 'three',
	},
	4 => {
		%null_row,
		id => '4',
		c_numu => '-0.000001000',
		c_real => '-0.00000000015',
		c_dbl => '1' . ('0' x 300),
		c_date => $MINUS_INF,
		c_ts => $MINUS_INF,
		c_tstz => $MINUS_INF,
		c_nn => 'four',
	},
	5 => {
		%null_row,
		id => '5',
		c_date => $PLUS_INF,
		c_ts => $PLUS_INF,
		c_tstz => $PLUS_INF,
		c_nn => 'five',
	},
	6 => { %null_row, id => '6', c_nn => 'only' },
);
my %expected_json = (
	1 => {
		c_json => { a => [ num(1), num('2.5'), 'x' ], b => undef },
		c_jsonb => { k => { n => num('12345678901234567890.5') }, t => TRUE },
		c_hstore => { a => '1', b => undef, 'c d' => 'x"y' },
		c_intarr => [ num(1), undef, num(3) ],
		c_txtarr => [ [ 'a', 'b' ], [ 'c,d', undef ] ],
	},
	2 => {
		c_json => 'just a string',
		c_jsonb => [ num(1), 'two', undef ],
		c_hstore => {},
		c_intarr => [],
		c_txtarr => [],
	},
	3 => { c_json => num(42), c_jsonb => 's' },
);

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

my $T = 180;    # seconds any single wait may take

sub src_sql { my ($n, $sql) = @_; return $n->safe_psql('postgres', $sql); }

# SQL value of a target query (UTC), dying on failure
sub tq
{
	my ($node, $sql, %o) = @_;
	my ($ret, $out, $err) = target_psql($node, $sql, %o);
	if ($ret != 0)
	{
		diag "target query failed: $sql\n$err";
		return '<query failed>';
	}
	return $out;
}

# the value of a target query, or undef when it fails (no table yet)
sub tq_maybe
{
	my ($node, $sql, %o) = @_;
	my ($ret, $out) = target_psql($node, $sql, %o);
	return $ret == 0 ? $out : undef;
}

# waits until target_rows(...) equals the expected text, then one test
sub target_rows_are
{
	my ($node, $relation, $expected, $desc, %o) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $got;
	poll_until("$desc ($relation)", $T, sub {
		$got = target_rows($node, $relation, %o);
		return defined $got && $got eq $expected;
	});
	return is($got, $expected, $desc);
}

# compares every-type rows read from the target with %expected/%expected_json
# (ids $id + $offset for expected row $id); one test per row
sub check_type_rows
{
	my ($rows, $label, $offset, @ids) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	foreach my $id (@ids)
	{
		my $got = $rows->{ $id + $offset };
		if (!$got)
		{
			fail("$label: row " . ($id + $offset) . ' is in the target');
			next;
		}
		my @bad;
		my %exp = (%{ $expected{$id} }, id => $id + $offset);
		foreach my $c (sort keys %exp)
		{
			my ($g, $e) = ($got->{$c}, $exp{$c});
			push @bad, "$c: got " . (defined $g ? "'$g'" : 'NULL') . ', expected ' . (defined $e ? "'$e'" : 'NULL')
			  unless (!defined $g && !defined $e) || (defined $g && defined $e && $g eq $e);
		}
		foreach my $c (@json_columns)
		{
			my $e = $expected_json{$id}{$c};
			my $g = defined $got->{$c} ? canon(json_decode($got->{$c}, "$label $c")) : undef;
			push @bad, "$c: got " . ($got->{$c} // 'NULL') . ', expected ' . (defined $e ? encode_json_canon($e) : 'NULL')
			  unless _same_canon($g, $e);
		}
		ok(!@bad, "$label: row " . ($id + $offset) . ' has the documented values') or diag join("\n", @bad);
	}
}

sub encode_json_canon { return JSON::PP->new->canonical->allow_nonref->encode($_[0]); }

sub _same_canon
{
	my ($x, $y) = @_;
	return encode_json_canon($x) eq encode_json_canon($y);
}

# "name type" list of a table's non-_sdc_ columns, and its _sdc_ columns sorted
sub split_columns
{
	my @cols = @_;
	return ([ grep { !/^_sdc_/ } @cols ], [ sort grep { /^_sdc_/ } @cols ]);
}

sub pk_of
{
	my ($node, $rel, %o) = @_;
	return tq($node, qq{SELECT coalesce(string_agg(pg_get_constraintdef(oid), ';'), '') FROM pg_constraint
 WHERE conrelid = '$rel'::regclass AND contype = 'p'}, %o);
}

# ---------------------------------------------------------------------------
# The source cluster, the target cluster, destinations, tables, streams
# ---------------------------------------------------------------------------

my $src = create_node('source', cdc => 1, conf => q{
listen_addresses = '127.0.0.1'
pg_egress.max_workers = 10
max_worker_processes = 24
max_connections = 50
max_replication_slots = 12
});
my ($tgt, $url) = create_target_node('target');
my $sysid = src_sql($src, 'SELECT system_identifier FROM pg_control_system()');

my @type_columns = every_type_table($src);

src_sql($src, q{
CREATE TABLE marks (name text);
CREATE TABLE ft (id int PRIMARY KEY, v text);
INSERT INTO ft SELECT g, 'v' || g FROM generate_series(1, 5) g;
CREATE TABLE inc (id int PRIMARY KEY, k int NOT NULL, v text);
INSERT INTO inc VALUES (1, 1, 'a'), (2, 2, 'b'), (3, 3, 'c');
CREATE TABLE lb (id int PRIMARY KEY, v text, n int);
INSERT INTO lb VALUES (1, 'a', 1), (2, 'b', 2), (3, 'c', 3);
CREATE TABLE ev (id int PRIMARY KEY, a int, b text);
INSERT INTO ev VALUES (1, 10, 'one');
CREATE TABLE nk (a int, b text);
INSERT INTO nk VALUES (1, 'x'), (2, 'y'), (2, 'y');
CREATE TABLE nkl (a int, b text);
ALTER TABLE nkl REPLICA IDENTITY FULL;
INSERT INTO nkl VALUES (1, 'x');
CREATE TABLE sm (id int PRIMARY KEY, v text);
INSERT INTO sm VALUES (1, 'same1'), (2, 'same2');
CREATE TABLE mp (id int PRIMARY KEY, v text);
INSERT INTO mp VALUES (1, 'm1'), (2, 'm2');
});
src_sql($src, "CREATE TABLE p$_ (id int PRIMARY KEY, v text); INSERT INTO p$_ SELECT g, 'p$_-' || g FROM generate_series(1, 3) g;")
  foreach 1 .. 4;

# target roles: reader gets SELECT through target_schema_privileges, outsider does not
tq($tgt, q{CREATE ROLE reader LOGIN; CREATE ROLE outsider LOGIN;}, dbname => 'postgres');
# a second target database for the parallel destination (its connections counted alone)
my ($url_par) = target_access($tgt, dbname => 'par');
# the source cluster itself, database samedb, over TCP with the password
my ($url_same) = target_access($src, dbname => 'samedb');

my $true = JSON::PP::true;
my $false = JSON::PP::false;
add_pg_destination($src, 'plain', $url, {});
add_pg_destination($src, 'meta', $url,
	{ add_metadata_columns => $true, default_target_schema => 'meta' });
add_pg_destination($src, 'hard', $url, { hard_delete => $true, default_target_schema => 'hard' });
add_pg_destination($src, 'app', $url,
	{ primary_key_required => $false, default_target_schema => 'app' });
add_pg_destination($src, 'par', $url_par, { parallelism => 2 });
add_pg_destination($src, 'same', $url_same, {});
add_pg_destination($src, 'map', $url,
	{
		schema_mapping => { public => { target_schema => 'mapped' } },
		target_schema_privileges => ['reader'],
		default_target_schema => 'mapdef'
	});
# schema_mapping's other form: a plain string value
add_pg_destination($src, 'map2', $url, { schema_mapping => { public => 'mapped2' } });

# the password is nowhere to be seen in the catalog views
my $dests = src_sql($src, 'SELECT string_agg(d::text, E\'\n\') FROM egress_destinations d');
unlike($dests, qr/\Q$EgressTest::TARGET_PASSWORD\E/, 'egress_destinations does not show the password');
like($dests, qr/loader\@127\.0\.0\.1:\d+\/analytics/, 'egress_destinations shows user@host:port/dbname');

# from here on no statement of the test carries the password (log_statement
# = all logged the destinations' options and ALTER ROLE above)
my $log_offset = -s $src->logfile;

sub add_stream
{
	my ($name, $rel, $method, $dest, $extra) = @_;
	src_sql($src, "SELECT egress_add_stream('$name', '$rel', '$method', '$dest'" . ($extra // '') . ')');
}
add_stream('types_ft', 't', 'FULL_TABLE', 'plain');
add_stream('types_cdc', 't', 'LOG_BASED', 'meta');
add_stream('ft_plain', 'ft', 'FULL_TABLE', 'plain');
add_stream('ft_soft', 'ft', 'FULL_TABLE', 'meta');
add_stream('ft_hard', 'ft', 'FULL_TABLE', 'hard');
add_stream('inc', 'inc', 'INCREMENTAL', 'meta', q{, 'k', '{"interval": "1 hour"}'});
add_stream('lb_soft', 'lb', 'LOG_BASED', 'meta');
add_stream('lb_hard', 'lb', 'LOG_BASED', 'hard');
add_stream('ev', 'ev', 'LOG_BASED', 'meta');
add_stream('nk_refused', 'nk', 'FULL_TABLE', 'plain');
add_stream('nk_app', 'nk', 'FULL_TABLE', 'app');
add_stream('nkl_app', 'nkl', 'LOG_BASED', 'app');
add_stream("p$_", "p$_", 'LOG_BASED', 'par') foreach 1 .. 4;
add_stream('sm', 'sm', 'LOG_BASED', 'same');
add_stream('mp', 'mp', 'FULL_TABLE', 'map');
add_stream('mp2', 'mp', 'FULL_TABLE', 'map2');

wait_stream_state($src, $_, 'synced', $T) foreach qw(types_ft ft_plain ft_soft ft_hard inc nk_app mp mp2);
wait_stream_state($src, $_, 'streaming', $T) foreach qw(types_cdc lb_soft lb_hard ev nkl_app p1 p2 p3 p4 sm);

# ---------------------------------------------------------------------------
# Every type, FULL_TABLE: public.t through destination "plain"
# ---------------------------------------------------------------------------

{
	my @cols = target_columns($tgt, 'public', 't');
	is_deeply(\@cols, [ map { "$_ $target_type{$_}" } @type_columns ],
		'FULL_TABLE every-type table: target columns in source order with the documented types, no _sdc_ columns')
	  or diag join("\n", @cols);
	is(pk_of($tgt, 'public.t'), 'PRIMARY KEY (id)', 'FULL_TABLE: the key is the target primary key');
	my $rows = target_values($tgt, 'public.t', key => 'id') // {};
	is(scalar keys %$rows, 6, 'FULL_TABLE every-type table: six rows');
	check_type_rows($rows, 'FULL_TABLE', 0, 1 .. 6);
	is(tq($tgt, q{SELECT count(*) FROM public.t WHERE c_text = '' AND id = 2}), '1',
		'an empty string stays an empty string (not NULL)');
}

# ---------------------------------------------------------------------------
# Every type, LOG_BASED: meta.t through destination "meta": the initial sync
# (1..6) and the same values again as changes (101..106), then a delete
# ---------------------------------------------------------------------------

{
	my @nonid = @type_columns[ 1 .. $#type_columns ];
	my $collist = join(', ', @nonid);
	src_sql($src, "INSERT INTO t (id, $collist) SELECT id + 100, $collist FROM t WHERE id <= 6");
	poll_until('the six changes are in meta.t', $T, sub {
		(tq_maybe($tgt, 'SELECT count(*) FROM meta.t WHERE id > 100') // '') eq '6';
	});
	my ($plain, $sdc) = split_columns(target_columns($tgt, 'meta', 't'));
	is_deeply($plain, [ map { "$_ $target_type{$_}" } @type_columns ],
		'LOG_BASED every-type table: target columns in source order with the documented types')
	  or diag join("\n", @$plain);
	is_deeply($sdc, [ "_sdc_batched_at $TS", "_sdc_deleted_at $TS", "_sdc_extracted_at $TS" ],
		'LOG_BASED with add_metadata_columns: _sdc_batched_at, _sdc_deleted_at, _sdc_extracted_at')
	  or diag join("\n", @$sdc);
	my $rows = target_values($tgt, 'meta.t', key => 'id') // {};
	is(scalar keys %$rows, 12, 'LOG_BASED every-type table: twelve rows');
	check_type_rows($rows, 'LOG_BASED initial sync', 0, 1 .. 6);
	check_type_rows($rows, 'LOG_BASED changes', 100, 1 .. 6);
	is(tq($tgt, q{SELECT count(*) FROM meta.t WHERE _sdc_deleted_at IS NULL AND _sdc_extracted_at IS NOT NULL AND _sdc_batched_at IS NOT NULL}),
		'12', 'LOG_BASED every-type table: metadata set, nothing deleted');

	# a soft delete keeps the row's columns (the DELETE record carries only the key)
	src_sql($src, q{BEGIN; DELETE FROM t WHERE id = 106; INSERT INTO marks VALUES ('del106'); COMMIT;});
	my ($commit) = utc_commit_time($src, 'marks', q{name = 'del106'});
	poll_until('row 106 soft-deleted', $T, sub {
		(tq_maybe($tgt, 'SELECT count(*) FROM meta.t WHERE id = 106 AND _sdc_deleted_at IS NOT NULL') // '') eq '1';
	});
	$rows = target_values($tgt, 'meta.t', key => 'id') // {};
	check_type_rows($rows, 'LOG_BASED soft-deleted row keeps its columns', 100, 6);
	is(tq($tgt, 'SELECT count(*) FROM meta.t WHERE _sdc_deleted_at IS NOT NULL'), '1',
		'only the deleted row has _sdc_deleted_at');
	is(tq($tgt, qq{SELECT _sdc_deleted_at = '$commit'::$TS FROM meta.t WHERE id = 106}), 't',
		"the soft-deleted row's _sdc_deleted_at is the DELETE's commit time ($commit)");
}

# ---------------------------------------------------------------------------
# FULL_TABLE versions: a second run replaces the contents
# ---------------------------------------------------------------------------

{
	my $first = join("\n", map { "$_|v$_" } 1 .. 5);
	is(target_rows($tgt, 'public.ft'), $first, 'FULL_TABLE first run: public.ft (no metadata columns)');
	is(target_rows($tgt, 'meta.ft'), $first, 'FULL_TABLE first run: meta.ft');
	is(target_rows($tgt, 'hard.ft'), $first, 'FULL_TABLE first run: hard.ft');
	my (undef, $sdc) = split_columns(target_columns($tgt, 'public', 'ft'));
	is_deeply($sdc, [], 'no add_metadata_columns, FULL_TABLE: no _sdc_ column');
	(undef, $sdc) = split_columns(target_columns($tgt, 'meta', 'ft'));
	is_deeply($sdc, [ "_sdc_batched_at $TS", "_sdc_deleted_at $TS", "_sdc_extracted_at $TS" ],
		'add_metadata_columns, FULL_TABLE: the three _sdc_ columns');
	(undef, $sdc) = split_columns(target_columns($tgt, 'hard', 'ft'));
	is_deeply($sdc, [], 'hard_delete without add_metadata_columns: no _sdc_ column');
	is(tq($tgt, 'SELECT count(*) FROM meta.ft WHERE _sdc_extracted_at IS NOT NULL AND _sdc_batched_at IS NOT NULL AND _sdc_deleted_at IS NULL'),
		'5', 'meta.ft: _sdc_extracted_at and _sdc_batched_at set, _sdc_deleted_at null');
	my $batched1 = tq($tgt, q{SELECT _sdc_batched_at FROM meta.ft WHERE id = 2});

	my %v1 = map { $_ => stream_row($src, $_)->{version} } qw(ft_plain ft_soft ft_hard);
	src_sql($src, q{DELETE FROM ft WHERE id IN (4, 5); UPDATE ft SET v = 'one2' WHERE id = 1; INSERT INTO ft VALUES (6, 'v6');});
	src_sql($src, "SELECT egress_sync_now('$_')") foreach qw(ft_plain ft_soft ft_hard);
	wait_stream_where($src, $_, "state = 'synced' AND version > $v1{$_}", $T, "$_: a second version synced")
	  foreach qw(ft_plain ft_soft ft_hard);

	my $second = "1|one2\n2|v2\n3|v3\n6|v6";
	is(target_rows($tgt, 'hard.ft'), $second, 'FULL_TABLE second version, hard_delete: rows gone from the source are deleted');
	is(target_rows($tgt, 'public.ft'), $second,
		'FULL_TABLE second version, soft delete without a _sdc_deleted_at column: rows gone are deleted');
	is(target_rows($tgt, 'meta.ft'), "1|one2\n2|v2\n3|v3\n4|v4\n5|v5\n6|v6",
		'FULL_TABLE second version, soft delete: every row kept');
	is(target_rows($tgt, 'meta.ft', columns => ['id'], where => '_sdc_deleted_at IS NOT NULL'), "4\n5",
		'FULL_TABLE second version, soft delete: the rows gone from the source have _sdc_deleted_at');
	my $v2 = stream_row($src, 'ft_soft')->{version};
	is(target_rows($tgt, 'meta.ft', columns => ['id'],
			where => "_sdc_deleted_at = 'epoch'::timestamp + $v2 * interval '1 millisecond'"), "4\n5",
		"FULL_TABLE soft delete: _sdc_deleted_at is the new version's time (version $v2, epoch ms)");
	is(tq($tgt, qq{SELECT _sdc_batched_at > '$batched1' FROM meta.ft WHERE id = 2}), 't',
		'FULL_TABLE second version: _sdc_batched_at of a row sent again moved on');
	is(tq($tgt, q{SELECT count(*) FROM pg_class WHERE relname LIKE 'ft\_\_v%'}), '0',
		'no shadow table of a version is left behind');
}

# ---------------------------------------------------------------------------
# INCREMENTAL: upserts by key
# ---------------------------------------------------------------------------

{
	is(target_rows($tgt, 'meta.inc'), "1|1|a\n2|2|b\n3|3|c", 'INCREMENTAL first run');
	src_sql($src, q{UPDATE inc SET k = 10, v = 'b2' WHERE id = 2; INSERT INTO inc VALUES (4, 11, 'd'); DELETE FROM inc WHERE id = 3;});
	src_sql($src, q{SELECT egress_sync_now('inc')});
	target_rows_are($tgt, 'meta.inc', "1|1|a\n2|10|b2\n3|3|c\n4|11|d",
		'INCREMENTAL second run: the changed row updated, the new one inserted, the deleted one (unseen) kept');
	is(tq($tgt, 'SELECT count(*) FROM meta.inc WHERE _sdc_deleted_at IS NULL'), '4', 'INCREMENTAL: nothing marked deleted');
	is(pk_of($tgt, 'meta.inc'), 'PRIMARY KEY (id)', 'INCREMENTAL: the key is the target primary key');
}

# ---------------------------------------------------------------------------
# LOG_BASED INSERT / UPDATE / DELETE / TRUNCATE, soft (meta) and hard (hard)
# ---------------------------------------------------------------------------

{
	is(target_rows($tgt, 'meta.lb'), "1|a|1\n2|b|2\n3|c|3", 'LOG_BASED initial sync (soft)');
	is(target_rows($tgt, 'hard.lb'), "1|a|1\n2|b|2\n3|c|3", 'LOG_BASED initial sync (hard)');
	src_sql($src, q{INSERT INTO lb VALUES (4, 'd', 4), (5, 'e', 5)});
	src_sql($src, q{UPDATE lb SET v = 'b2', n = 20 WHERE id = 2});
	src_sql($src, q{BEGIN; DELETE FROM lb WHERE id = 3; INSERT INTO marks VALUES ('del3'); COMMIT;});
	my ($del3) = utc_commit_time($src, 'marks', q{name = 'del3'});
	src_sql($src, q{UPDATE lb SET id = 40 WHERE id = 4});
	# several changes of keys in one transaction: the last of each wins
	src_sql($src, q{BEGIN; INSERT INTO lb VALUES (6, 'f', 6); UPDATE lb SET v = 'f2' WHERE id = 6;
DELETE FROM lb WHERE id = 5; INSERT INTO lb VALUES (5, 'e2', 50); COMMIT;});

	target_rows_are($tgt, 'hard.lb', join("\n", sort('1|a|1', '2|b2|20', '40|d|4', '5|e2|50', '6|f2|6')),
		'LOG_BASED hard_delete: inserts, updates, a key update, deletes applied');
	target_rows_are($tgt, 'meta.lb', join("\n", sort('1|a|1', '2|b2|20', '3|c|3', '4|d|4', '40|d|4', '5|e2|50', '6|f2|6')),
		'LOG_BASED soft delete: deleted rows kept with their columns');
	is(target_rows($tgt, 'meta.lb', columns => ['id'], where => '_sdc_deleted_at IS NOT NULL'), "3\n4",
		'LOG_BASED soft delete: the deleted key and the old key of a key update have _sdc_deleted_at');
	is(tq($tgt, qq{SELECT _sdc_deleted_at = '$del3'::$TS FROM meta.lb WHERE id = 3}), 't',
		"LOG_BASED soft delete: _sdc_deleted_at is the DELETE's commit time ($del3)");
	my (undef, $sdc) = split_columns(target_columns($tgt, 'hard', 'lb'));
	is_deeply($sdc, ["_sdc_deleted_at $TS"],
		'LOG_BASED without add_metadata_columns: only the declared _sdc_deleted_at column');
	is(tq($tgt, 'SELECT count(*) FROM hard.lb WHERE _sdc_deleted_at IS NOT NULL'), '0',
		'hard_delete: no row carries _sdc_deleted_at');

	# TRUNCATE: a new version with no rows
	my $vlb = stream_row($src, 'lb_soft')->{version};
	src_sql($src, q{TRUNCATE lb});
	src_sql($src, q{INSERT INTO lb VALUES (7, 'g', 7)});
	target_rows_are($tgt, 'hard.lb', '7|g|7', 'LOG_BASED TRUNCATE, hard_delete: the old rows are deleted');
	poll_until('meta.lb: TRUNCATE applied', $T, sub {
		(tq_maybe($tgt, 'SELECT count(*) FROM meta.lb WHERE _sdc_deleted_at IS NULL') // '') eq '1';
	});
	is(target_rows($tgt, 'meta.lb', columns => ['id'], where => '_sdc_deleted_at IS NULL'), '7',
		'LOG_BASED TRUNCATE, soft delete: only the row inserted after it is live');
	is(target_rows($tgt, 'meta.lb', columns => ['id'], where => '_sdc_deleted_at IS NOT NULL'),
		join("\n", sort qw(1 2 3 4 40 5 6)), 'LOG_BASED TRUNCATE, soft delete: every older row has _sdc_deleted_at');
	wait_stream_where($src, 'lb_soft', "version > $vlb", $T, 'lb_soft: the TRUNCATE gave a new version');
	my $vt = stream_row($src, 'lb_soft')->{version};
	is(target_rows($tgt, 'meta.lb', columns => ['id'],
			where => "_sdc_deleted_at = 'epoch'::timestamp + $vt * interval '1 millisecond'"),
		join("\n", sort qw(1 2 40 5 6)),
		"LOG_BASED TRUNCATE, soft delete: the live rows got the TRUNCATE version's time (version $vt)");
	is(tq($tgt, qq{SELECT _sdc_deleted_at = '$del3'::$TS FROM meta.lb WHERE id = 3}), 't',
		'LOG_BASED TRUNCATE, soft delete: a row deleted before keeps its own _sdc_deleted_at');
	is(tq($tgt, 'SELECT count(*) FROM meta.lb WHERE _sdc_extracted_at IS NULL OR _sdc_batched_at IS NULL'), '0',
		'meta.lb: _sdc_extracted_at and _sdc_batched_at set on every row');
}

# ---------------------------------------------------------------------------
# Schema evolution while streaming
# ---------------------------------------------------------------------------

{
	src_sql($src, q{INSERT INTO ev VALUES (2, 20, 'two')});
	target_rows_are($tgt, 'meta.ev', "1|10|one\n2|20|two", 'evolution: before any DDL');

	src_sql($src, q{ALTER TABLE ev ADD COLUMN c text});
	src_sql($src, q{INSERT INTO ev VALUES (3, 30, 'three', 'c3')});
	target_rows_are($tgt, 'meta.ev', "1|10|one|<null>\n2|20|two|<null>\n3|30|three|c3",
		'evolution: a column added at the source is added in the target, with its values');
	my ($plain) = split_columns(target_columns($tgt, 'meta', 'ev'));
	is_deeply($plain, [ "id $INT4", "a $INT4", "b $STRING", "c $STRING" ], 'evolution: column c added');

	# integer -> text: integer -> character varying in the target: renamed aside;
	# text -> varchar(50): character varying both: nothing renamed
	src_sql($src, q{ALTER TABLE ev ALTER COLUMN a TYPE text USING a::text, ALTER COLUMN b TYPE varchar(50)});
	src_sql($src, q{INSERT INTO ev VALUES (4, 'forty', 'four', 'c4')});
	poll_until('row 4 in meta.ev', $T, sub {
		(tq_maybe($tgt, 'SELECT count(*) FROM meta.ev WHERE id = 4') // '') eq '1';
	});
	($plain) = split_columns(target_columns($tgt, 'meta', 'ev'));
	my @renamed = grep { /^a_\d{8}_\d{4} \Q$INT4\E$/ } @$plain;
	is(scalar @renamed, 1, 'evolution: the old column a (integer) is renamed aside as a_<yyyymmdd_hhmm>')
	  or diag join("\n", @$plain);
	ok((grep { $_ eq "a $STRING" } @$plain), 'evolution: a new column a of the new type')
	  or diag join("\n", @$plain);
	is(scalar(grep { /^b_/ } @$plain), 0, 'evolution: a type change that maps to the same target type renames nothing');
	my ($old) = map { /^(\S+)/ } @renamed;
	$old //= 'a_missing';
	is(target_rows($tgt, 'meta.ev', columns => [ 'id', $old, 'a', 'b', 'c' ]),
		"1|10|<null>|one|<null>\n2|20|<null>|two|<null>\n3|30|<null>|three|c3\n4|<null>|forty|four|c4",
		'evolution: old values stay in the renamed column, new ones go to the new column');
	my $log = slurp_file($src->logfile);
	like($log, qr/ALTER TABLE[^\n]*ev[^\n]*ADD COLUMN/i, 'evolution: the ADD COLUMN is logged');
	like($log, qr/ALTER TABLE[^\n]*ev[^\n]*RENAME/i, 'evolution: the rename is logged');
}

# ---------------------------------------------------------------------------
# A table without a primary key
# ---------------------------------------------------------------------------

{
	wait_stream_state($src, 'nk_refused', 'error', $T);
	my $row = stream_row($src, 'nk_refused');
	like($row->{last_error} // '', qr/\bpublic\.nk\b.*has no primary key/,
		'primary_key_required: last_error names the table and says it has no primary key');
	unlike($row->{last_error} // '', qr/\n/, 'last_error is one line');
	note 'last_error: ' . ($row->{last_error} // '(none)');
	unlike($row->{last_error} // '', qr/\Q$EgressTest::TARGET_PASSWORD\E/, 'last_error does not show the password');
	is(tq($tgt, q{SELECT count(*) FROM pg_class WHERE relname = 'nk' AND relnamespace = 'public'::regnamespace}), '0',
		'primary_key_required: no target table was made');

	is(target_rows($tgt, 'app.nk'), "1|x\n2|y\n2|y", 'primary_key_required false: the rows appended, duplicates kept');
	is(pk_of($tgt, 'app.nk'), '', 'primary_key_required false: no primary key in the target');
	src_sql($src, q{INSERT INTO nkl VALUES (1, 'x'), (3, 'z')});
	target_rows_are($tgt, 'app.nkl', "1|x\n1|x\n3|z", 'keyless LOG_BASED, primary_key_required false: inserts appended');
}

# ---------------------------------------------------------------------------
# parallelism 2: four streams on two connections
# ---------------------------------------------------------------------------

{
	my $conns = sub {
		tq_maybe($tgt, q{SELECT count(*) FROM pg_stat_activity WHERE datname = 'par' AND usename = 'loader'},
			dbname => 'postgres') // -1;
	};
	foreach my $n (1 .. 4)
	{
		is(target_rows($tgt, "public.p$n", dbname => 'par'), join("\n", map { "$_|p$n-$_" } 1 .. 3), "parallelism 2: p$n initial sync");
	}
	my $max = 0;
	my $t0 = tq($tgt, 'SELECT clock_timestamp()', dbname => 'postgres');
	# one transaction touching every stream (one batch with all four), then one per stream
	src_sql($src, join('', map { "INSERT INTO p$_ SELECT g, 'p$_-' || g FROM generate_series(4, 100) g;" } 1 .. 4));
	src_sql($src, "UPDATE p$_ SET v = v || '!' WHERE id = 1") foreach 1 .. 4;
	foreach my $n (1 .. 4)
	{
		target_rows_are($tgt, "public.p$n",
			join("\n", sort("1|p$n-1!", map { "$_|p$n-$_" } 2 .. 100)), "parallelism 2: p$n changes applied", dbname => 'par');
		my $c = $conns->();
		$max = $c if $c > $max;
	}
	ok(poll_until('two connections to database par', 60, sub { my $c = $conns->(); $max = $c if $c > $max; $c == 2; }),
		'parallelism 2: the destination holds two connections to the target');
	ok($max <= 2, "parallelism 2: never more than two connections (saw $max)");
	# both connections did work for the batch with the four streams: each
	# went through a statement after the changes were made
	is(tq($tgt, qq{SELECT count(*) FROM pg_stat_activity WHERE datname = 'par' AND usename = 'loader'
   AND state_change > '$t0'}, dbname => 'postgres'), '2', 'parallelism 2: both connections applied streams');
}

# ---------------------------------------------------------------------------
# The same cluster, another database
# ---------------------------------------------------------------------------

{
	is(target_rows($src, 'public.sm', dbname => 'samedb'), "1|same1\n2|same2", 'same cluster: initial sync into database samedb');
	src_sql($src, q{INSERT INTO sm VALUES (3, 'same3'); UPDATE sm SET v = 'same1b' WHERE id = 1});
	target_rows_are($src, 'public.sm', "1|same1b\n2|same2\n3|same3", 'same cluster: changes applied', dbname => 'samedb');
	is(tq($src, q{SELECT tableowner FROM pg_tables WHERE schemaname = 'public' AND tablename = 'sm'}, dbname => 'samedb'),
		'loader', 'same cluster: the table was made by the destination user (through the same connection path)');
}

# ---------------------------------------------------------------------------
# schema_mapping and target_schema_privileges
# ---------------------------------------------------------------------------

{
	is(target_rows($tgt, 'mapped.mp'), "1|m1\n2|m2", 'schema_mapping: public goes to schema mapped');
	is(tq($tgt, q{SELECT string_agg(relnamespace::regnamespace::text, ',' ORDER BY relnamespace::regnamespace::text) FROM pg_class WHERE relname = 'mp'}),
		'mapped,mapped2', 'schema_mapping: not in default_target_schema nor public');
	is(target_rows($tgt, 'mapped2.mp'), "1|m1\n2|m2", 'schema_mapping with a plain string value: public goes to schema mapped2');
	my ($ret, $out, $err) = $tgt->psql('analytics', 'SELECT v FROM mapped.mp ORDER BY id', extra_params => [ '-U', 'reader' ]);
	is("$ret|$out", "0|m1\nm2", 'target_schema_privileges: reader may read the table') or diag $err;
	($ret, $out, $err) = $tgt->psql('analytics', 'SELECT v FROM mapped.mp ORDER BY id', extra_params => [ '-U', 'outsider' ]);
	like($err, qr/permission denied/, 'a role not named in target_schema_privileges may not');
}

# ---------------------------------------------------------------------------
# _pg_egress_state: a row per (source, target table, stream) in the
# destination's default_target_schema (else public); the target table as
# quote_ident() writes its parts (quoted only where needed)
# ---------------------------------------------------------------------------

{
	my $state = sub {
		my ($schema) = @_;
		my $out = tq($tgt, qq{SELECT source || ' ' || destination || ' ' || stream FROM "$schema"._pg_egress_state ORDER BY destination, stream});
		return [ split /\n/, $out ];
	};
	my $s = "$sysid/postgres";
	is_deeply($state->('meta'),
		[ map { "$s meta.$_ public-$_" } sort qw(ev ft inc lb t) ],
		'meta._pg_egress_state: one row per stream of destination meta (source <system identifier>/<database>)');
	is_deeply($state->('hard'), [ map { "$s hard.$_ public-$_" } qw(ft lb) ], 'hard._pg_egress_state');
	is_deeply($state->('public'), [ "$s mapped2.mp public-mp", map { "$s public.$_ public-$_" } qw(ft t) ],
		'no default_target_schema: _pg_egress_state in public, for destinations plain and map2 (the refused keyless stream left no row)');
	is_deeply($state->('mapdef'), ["$s mapped.mp public-mp"],
		'with schema_mapping: _pg_egress_state in default_target_schema');
	my $v = stream_row($src, 'lb_soft')->{version};
	is(tq($tgt, q{SELECT position ~ '^[0-9A-F]{16}-[0-9]{10}$' AND active_version = } . $v
		  . q{ FROM meta._pg_egress_state WHERE stream = 'public-lb'}), 't',
		'the state row of a LOG_BASED stream: a position, the active version');
}

# nothing crashed, no stream of a keyed table failed
is(src_sql($src, q{SELECT string_agg(name || ': ' || coalesce(last_error, ''), '; ') FROM egress_streams
 WHERE state IN ('error', 'retrying') AND name <> 'nk_refused'}), '', 'no other stream failed or retries');
unlike(slurp_file($src->logfile), qr/terminated by signal|server process .* was terminated/, 'no backend crashed');
unlike(slurp_file($src->logfile, $log_offset), qr/\Q$EgressTest::TARGET_PASSWORD\E/,
	'the password is not in the source log (after the statements that set it)');

$src->stop;
$tgt->stop;
done_testing();
