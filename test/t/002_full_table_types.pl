
# FULL_TABLE of a table with every type of the Singer contract
# (/work/shared/singer-format.md): file structure, SCHEMA, every RECORD
# against hand-written values, ACTIVATE_VERSION, STATE, and the same values
# from egress_preview_record().  Then again under session settings that
# change the server's text output (DateStyle, IntervalStyle,
# extra_float_digits, bytea_output): the contract's renderings must not move.

use strict;
use warnings;
use utf8;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('types');
my $out = new_outdir($node);

my @columns = every_type_table($node);

my $PLUS_INF = '9999-12-31T23:59:59.999+00:00';
my $MINUS_INF = '0001-01-01T00:00:00+00:00';

# Hand-written from the contract, not from the program's output.
my %null_row = map { $_ => undef } @columns;
my @expected = (
	{
		id => num(1),
		c_int2 => num(-32768),
		c_int4 => num(2147483647),
		c_int8 => num('-9223372036854775808'),
		c_num => num('1234567890.12'),
		c_numu => num('12345678901234.56789012345678901234567890'),
		c_real => num('1.1'),
		c_dbl => num('0.30000000000000004'),
		c_bool => TRUE,
		c_bit => TRUE,
		c_text => "caf\x{e9} \"q\" \\ back\nnew\ttab \x{1F600} /",
		c_vc => 'abc',
		c_ch => 'ab   ',
		c_uuid => 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
		c_inet => '192.168.0.1/24',
		c_enum => 'happy',
		c_date => '2024-01-15T00:00:00+00:00',
		c_ts => '2024-01-15T13:45:30.123456+00:00',
		c_tstz => '2024-01-15T11:45:30.500000+00:00',
		c_time => '13:45:30.123456',
		c_timetz => '11:45:30.654321',
		c_json => { a => [ num(1), num('2.5'), 'x' ], b => undef },
		c_jsonb => { k => { n => num('12345678901234567890.5') }, t => TRUE },
		c_hstore => { a => '1', b => undef, 'c d' => 'x"y' },
		c_intarr => [ num(1), undef, num(3) ],
		c_txtarr => [ [ 'a', 'b' ], [ 'c,d', undef ] ],
		c_intv => 'P1Y2M3DT4H5M6.5S',
		c_bytea => '\\x0102ff',
		c_point => '(1.5,-2)',
		c_dom => num(42),
		c_nn => 'required',
	},
	{
		id => num(2),
		c_int2 => num(32767),
		c_int4 => num(-2147483648),
		c_int8 => num('9223372036854775807'),
		c_num => undef,
		c_numu => undef,
		c_real => undef,
		c_dbl => undef,
		c_bool => FALSE,
		c_bit => FALSE,
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
		c_json => 'just a string',
		c_jsonb => [ num(1), 'two', undef ],
		c_hstore => {},
		c_intarr => [],
		c_txtarr => [],
		c_intv => 'PT2H30M',
		c_bytea => '\\x',
		c_point => '(0,0)',
		c_dom => num(1),
		c_nn => 'x',
	},
	{
		%null_row,
		id => num(3),
		c_int2 => num(0),
		c_int4 => num(0),
		c_int8 => num(0),
		c_num => num('-0.5'),
		c_numu => undef,
		c_real => undef,
		c_dbl => undef,
		c_bool => TRUE,
		c_date => $MINUS_INF,
		c_ts => $PLUS_INF,
		c_tstz => $MINUS_INF,
		c_json => num(42),
		c_jsonb => 's',
		c_nn => 'three',
	},
	{
		%null_row,
		id => num(4),
		c_numu => num('-0.000001'),
		c_real => num('-1.5e-10'),
		c_dbl => num('1e300'),
		c_date => $MINUS_INF,
		c_ts => $MINUS_INF,
		c_tstz => $MINUS_INF,
		c_nn => 'four',
	},
	{
		%null_row,
		id => num(5),
		c_date => $PLUS_INF,
		c_ts => $PLUS_INF,
		c_tstz => $PLUS_INF,
		c_nn => 'five',
	},
	{ %null_row, id => num(6), c_nn => 'only' },
);

# Exact JSON text where precision matters: [row index, column, regex].
my @raw_checks = (
	[ 0, 'c_int8', qr/^-9223372036854775808$/ ],
	[ 0, 'c_num', qr/^1234567890\.12$/ ],
	[ 0, 'c_numu', qr/^12345678901234\.56789012345678901234567890$/ ],
	[ 0, 'c_real', qr/^1\.1$/ ],
	[ 0, 'c_dbl', qr/^0\.30000000000000004$/ ],
	[ 1, 'c_int8', qr/^9223372036854775807$/ ],
	[ 1, 'c_num', qr/^null$/ ],
	[ 1, 'c_dbl', qr/^null$/ ],
	[ 2, 'c_num', qr/^-0\.50$/ ],
	[ 3, 'c_numu', qr/^-0\.000001000$/ ],
	[ 3, 'c_real', qr/^-1\.5[eE]-10$/ ],
	[ 3, 'c_dbl', qr/^1[eE]\+?300$/ ],
);

# Schemas: type lists compare as sets; "integer" and ["integer"] are equal.
my %INT4 = (minimum => num(-2147483648), maximum => num(2147483647));
my %expected_schema = (
	id => { type => ['integer'], %INT4 },
	c_int2 => { type => [ 'null', 'integer' ], minimum => num(-32768), maximum => num(32767) },
	c_int4 => { type => [ 'null', 'integer' ], %INT4 },
	c_int8 => {
		type => [ 'null', 'integer' ],
		minimum => num('-9223372036854775808'),
		maximum => num('9223372036854775807')
	},
	c_num => {
		type => [ 'null', 'number' ],
		exclusiveMinimum => num('-10000000000'),
		exclusiveMaximum => num('10000000000'),
		multipleOf => num('0.01')
	},
	c_numu => { type => [ 'null', 'number' ] },
	c_real => { type => [ 'null', 'number' ] },
	c_dbl => { type => [ 'null', 'number' ] },
	c_bool => { type => [ 'null', 'boolean' ] },
	c_bit => { type => [ 'null', 'boolean' ] },
	c_text => { type => [ 'null', 'string' ] },
	c_vc => { type => [ 'null', 'string' ], maxLength => num(10) },
	c_ch => { type => [ 'null', 'string' ], maxLength => num(5) },
	c_uuid => { type => [ 'null', 'string' ] },
	c_inet => { type => [ 'null', 'string' ] },
	c_enum => { type => [ 'null', 'string' ] },
	c_date => { type => [ 'null', 'string' ], format => 'date-time' },
	c_ts => { type => [ 'null', 'string' ], format => 'date-time' },
	c_tstz => { type => [ 'null', 'string' ], format => 'date-time' },
	c_time => { type => [ 'null', 'string' ], format => 'time' },
	c_timetz => { type => [ 'null', 'string' ], format => 'time' },
	c_json => { type => [ 'null', 'object', 'array' ] },
	c_jsonb => { type => [ 'null', 'object', 'array' ] },
	c_intv => { type => [ 'null', 'string' ] },
	c_bytea => { type => [ 'null', 'string' ] },
	c_point => { type => [ 'null', 'string' ] },
	c_dom => { type => [ 'null', 'integer' ], %INT4 },
	c_nn => { type => ['string'] },
);

sub type_set
{
	my ($t) = @_;
	return [ sort(ref $t eq 'ARRAY' ? @$t : ($t)) ];
}

sub norm_schema
{
	my ($s) = @_;
	return $s unless ref $s eq 'HASH';
	my %n = %$s;
	$n{type} = type_set($n{type}) if exists $n{type};
	return \%n;
}

sub check_schema
{
	my ($schema_msg, $label) = @_;
	is($schema_msg->{stream}, 'public-t', "$label: SCHEMA stream id");
	is_deeply($schema_msg->{key_properties}, ['id'], "$label: key_properties");
	is_deeply($schema_msg->{bookmark_properties}, [], "$label: bookmark_properties");
	my $schema = canon($schema_msg->{schema});
	is($schema->{type}, 'object', "$label: schema type object");
	my $props = $schema->{properties};
	is_deeply([ sort keys %$props ], [ sort @columns ], "$label: one property per column");
	foreach my $col (sort keys %expected_schema)
	{
		my $want = $expected_schema{$col};
		is_deeply(norm_schema($props->{$col}),
			{ %$want, type => type_set($want->{type}) },
			"$label: schema of $col");
	}
	is_deeply(type_set($props->{c_hstore}{type}), [ 'null', 'object' ], "$label: hstore is an object");
	foreach my $arr ([ 'c_intarr', 'integer' ], [ 'c_txtarr', 'string' ])
	{
		my ($col, $elem) = @$arr;
		is_deeply(type_set($props->{$col}{type}), [ 'array', 'null' ], "$label: $col is an array");
		ok((grep { $_ eq $elem } @{ type_set($props->{$col}{items}{type}) }),
			"$label: $col items are $elem");
	}
}

# Checks one complete sync (one file) of version $version; returns the
# decoded records.
sub check_sync
{
	my ($label, $version) = @_;
	my @batches = read_batches($out, qr/^types-\Q$version\E-/);
	is(scalar(@batches), 1, "$label: one file for 6 rows");
	is($batches[0]{name}, "types-$version-000001.jsonl", "$label: file name");
	is_deeply([ check_batch_file($batches[0]) ], [], "$label: a well-formed batch file");
	my @m = @{ $batches[0]{messages} };
	my @lines = @{ $batches[0]{lines} };

	is_deeply([ map { $_->{type} } @m ],
		[ 'SCHEMA', 'ACTIVATE_VERSION', ('RECORD') x 6, 'ACTIVATE_VERSION', 'STATE' ],
		"$label: SCHEMA, ACTIVATE_VERSION, 6 RECORDs, ACTIVATE_VERSION, STATE");
	check_schema($m[0], $label);

	foreach my $av ($m[1], $m[-2])
	{
		is_deeply([ sort keys %$av ], [qw(stream type version)], "$label: ACTIVATE_VERSION keys");
		is($av->{stream}, 'public-t', "$label: ACTIVATE_VERSION stream");
		is("$av->{version}", $version, "$label: ACTIVATE_VERSION version = egress_streams.version");
	}

	my @records = grep { $_->{type} eq 'RECORD' } @m;
	my @record_lines = grep { $m[$_]{type} eq 'RECORD' } 0 .. $#m;
	@record_lines = map { $lines[$_] } @record_lines;
	my @got;
	for my $i (0 .. $#records)
	{
		my $r = $records[$i];
		my $id = $i + 1;
		push @got, canon($r->{record});
		is($r->{stream}, 'public-t', "$label: RECORD $id stream");
		is("$r->{version}", $version, "$label: RECORD $id version");
		like($r->{time_extracted}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/,
			"$label: RECORD $id time_extracted");
		my ($rec_raw) = grep { $_->[0] eq 'record' } raw_pairs($record_lines[$i]);
		is_deeply([ map { $_->[0] } raw_pairs($rec_raw->[1]) ], \@columns,
			"$label: RECORD $id keys in column order");
		foreach my $col (@columns)
		{
			is_deeply($got[$i]{$col}, $expected[$i]{$col}, "$label: row $id $col")
			  or diag explain { got => $got[$i]{$col}, expected => $expected[$i]{$col} };
		}
	}
	foreach my $rc (@raw_checks)
	{
		my ($i, $col, $re) = @$rc;
		like(raw_record_value($record_lines[$i], $col), $re,
			"$label: row " . ($i + 1) . " $col exact JSON text");
	}

	is_deeply(
		canon($m[-1]),
		canon(
			{
				type => 'STATE',
				value => {
					currently_syncing => undef,
					bookmarks => {
						'public-t' => {
							last_replication_method => 'FULL_TABLE',
							version => 0 + $version,
							xmin => undef
						}
					}
				}
			}),
		"$label: STATE");

	# egress_preview_record renders the same values (one type map)
	my $preview = json_decode(
		$node->safe_psql('postgres',
			'SELECT json_agg(egress_preview_record(t) ORDER BY id) FROM t t'),
		'egress_preview_record');
	is(scalar(@$preview), 6, "$label: preview of 6 rows");
	for my $i (0 .. $#got)
	{
		is_deeply(canon($preview->[$i]), $got[$i], "$label: preview of row " . ($i + 1) . " equals the RECORD");
	}
	my $pschema = json_decode($node->safe_psql('postgres', q{SELECT egress_preview_schema('t')}),
		'egress_preview_schema');
	is_deeply(canon($pschema), canon($m[0]{schema}), "$label: egress_preview_schema equals the SCHEMA");

	is_deeply([ tmp_files($out) ], [], "$label: no temporary files left");
	return;
}

$node->safe_psql('postgres',
	'SELECT egress_add_destination(' . sql_quote('local') . ', ' . sql_quote(file_url($out)) . ')');
$node->safe_psql('postgres',
	q{SELECT egress_add_stream('types', 't', 'FULL_TABLE', 'local')});
wait_stream_state($node, 'types', 'synced');
my $row = stream_row($node, 'types');
ok(defined $row->{version} && $row->{version} =~ /^\d{13}$/, 'version is epoch ms')
  or diag explain $row;
check_sync('default settings', $row->{version});

# The same values whatever the database's output settings are.
$node->safe_psql(
	'postgres', q{
ALTER DATABASE postgres SET DateStyle = 'SQL, DMY';
ALTER DATABASE postgres SET IntervalStyle = 'sql_standard';
ALTER DATABASE postgres SET extra_float_digits = 0;
ALTER DATABASE postgres SET bytea_output = 'escape';
});
my $v1 = $row->{version};
$node->safe_psql('postgres', q{SELECT egress_resync_stream('types')});
wait_stream_where($node, 'types', "state = 'synced' AND version <> $v1");
$row = stream_row($node, 'types');
cmp_ok($row->{version}, '>', $v1, 'the resync has a later version');
check_sync('DateStyle SQL,DMY, IntervalStyle sql_standard, extra_float_digits 0, bytea_output escape',
	$row->{version});

$node->stop;
done_testing();
