
# One type map for the snapshot and the change stream: a table with every
# type of the Singer contract (the rows of 002_full_table_types.pl) is
# added as a LOG_BASED stream; after it streams, the same values are
# inserted again under other ids, updated without change, and one row is
# deleted.  Every change RECORD must equal egress_preview_record() of its
# row and the initial-sync RECORD of the row with the same values - the
# exact JSON text of every value, keys in column order - and the SCHEMAs of
# both paths must agree.  The workers run in a time zone far from UTC.

use strict;
use warnings;
use utf8;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('cdc_types', cdc => 1);
my $out = new_outdir($node, 'cdc');
my $log_start = -s $node->logfile;

my @columns = every_type_table($node);
my @nonid = @columns[ 1 .. $#columns ];

# Exact JSON text of some values (from the contract, as in 002): [id, column, regex].
my @raw_checks = (
	[ 1, 'c_int8', qr/^-9223372036854775808$/ ],
	[ 1, 'c_num', qr/^1234567890\.12$/ ],
	[ 1, 'c_numu', qr/^12345678901234\.56789012345678901234567890$/ ],
	[ 1, 'c_real', qr/^1\.1$/ ],
	[ 1, 'c_dbl', qr/^0\.30000000000000004$/ ],
	[ 1, 'c_tstz', qr/^"2024-01-15T11:45:30\.500000\+00:00"$/ ],
	[ 1, 'c_timetz', qr/^"11:45:30\.654321"$/ ],
	[ 1, 'c_bytea', qr/^"\\\\x0102ff"$/ ],
	[ 1, 'c_hstore', qr/^\{/ ],
	[ 1, 'c_json', qr/^\{/ ],
	[ 2, 'c_int8', qr/^9223372036854775807$/ ],
	[ 2, 'c_num', qr/^null$/ ],
	[ 2, 'c_numu', qr/^null$/ ],
	[ 2, 'c_real', qr/^null$/ ],
	[ 2, 'c_dbl', qr/^null$/ ],
	[ 2, 'c_date', qr/^"9999-12-31T23:59:59\.999\+00:00"$/ ],
	[ 2, 'c_ts', qr/^"0001-01-01T00:00:00\+00:00"$/ ],
	[ 2, 'c_intv', qr/^"PT2H30M"$/ ],
	[ 3, 'c_num', qr/^-0\.50$/ ],
	[ 3, 'c_json', qr/^42$/ ],
	[ 4, 'c_numu', qr/^-0\.000001000$/ ],
	[ 4, 'c_real', qr/^-1\.5[eE]-10$/ ],
	[ 4, 'c_dbl', qr/^1[eE]\+?300$/ ],
);

add_destination($node, 'cdc', $out);
$node->safe_psql('postgres',
	q{SELECT egress_add_stream('types', 't', method => 'LOG_BASED', destination => 'cdc')});
wait_stream_state($node, 'types', 'streaming');

# The same values again, under ids 101..106, as changes; then an UPDATE
# that changes nothing (a second RECORD of each) and a DELETE.
my $collist = join(', ', @nonid);
$node->safe_psql('postgres', "INSERT INTO t (id, $collist) SELECT id + 100, $collist FROM t ORDER BY id");
my %preview;
foreach my $line (
	split /\n/,
	$node->safe_psql('postgres',
		'SELECT egress_preview_record(x)::text FROM t x WHERE id > 100 ORDER BY id'))
{
	my ($id) = map { $_->[1] } grep { $_->[0] eq 'id' } raw_pairs($line);
	$preview{$id} = $line;
}
is_deeply([ sort keys %preview ], [ 101 .. 106 ], 'preview of the six new rows');
$node->safe_psql('postgres', 'UPDATE t SET c_nn = c_nn WHERE id > 100');
$node->safe_psql('postgres', 'DELETE FROM t WHERE id = 106');
wait_caught_up($node, 'types');

# raw lines of the RECORDs of public-t, by path
my (@snap, @cdc);
foreach my $b (sync_batches($out))
{
	push @snap, grep { /"type"\s*:\s*"RECORD"/ } @{ $b->{lines} };
}
my @cdc_batches = cdc_batches($out);
foreach my $b (@cdc_batches)
{
	push @cdc, grep { /"type"\s*:\s*"RECORD"/ } @{ $b->{lines} };
}
is(scalar(@snap), 6, 'initial sync: 6 RECORDs');
is(scalar(@cdc), 13, 'changes: 6 inserts, 6 updates, 1 delete');

# record pairs of a RECORD line: [[key, raw value], ...]
sub rec_pairs
{
	my ($line) = @_;
	my ($rec) = grep { $_->[0] eq 'record' } raw_pairs($line);
	return raw_pairs($rec->[1]);
}

my %snap_by_id;
foreach my $line (@snap)
{
	my @p = rec_pairs($line);
	$snap_by_id{ $p[0][1] } = \@p;
}
is_deeply([ sort { $a <=> $b } keys %snap_by_id ], [ 1 .. 6 ], 'initial sync: ids 1..6');

my $n = 0;
foreach my $line (@cdc)
{
	$n++;
	my @p = rec_pairs($line);
	my %h = map { ($_->[0] => $_->[1]) } @p;
	my $id = $h{id};
	my $msg = json_decode($line, "change RECORD $n");
	is($msg->{stream}, 'public-t', "change $n (id $id): stream public-t");
	if (($h{_sdc_deleted_at} // 'null') ne 'null')
	{
		is_deeply([ map { $_->[0] } @p ], [ 'id', '_sdc_deleted_at' ], "change $n: a delete of id $id: id and _sdc_deleted_at");
		is($id, '106', "change $n: the deleted row is 106");
		next;
	}
	my @cols = grep { $_->[0] !~ /^_sdc_/ } @p;
	is_deeply([ map { $_->[0] } @cols ], \@columns, "change $n (id $id): keys in column order");
	is_deeply([ map { $_->[0] } @p[ scalar(@cols) .. $#p ] ], ['_sdc_deleted_at'],
		"change $n (id $id): _sdc_deleted_at after the columns");
	is($h{_sdc_deleted_at}, 'null', "change $n (id $id): _sdc_deleted_at null");

	# exactly the preview's text, value by value
	my %pv = map { ($_->[0] => $_->[1]) } raw_pairs($preview{$id} // '{}');
	my @diff = grep { !defined $pv{$_->[0]} || $pv{$_->[0]} ne $_->[1] } @cols;
	is_deeply([ map { $_->[0] } @diff ], [], "change $n (id $id): every value's JSON text equals egress_preview_record")
	  or diag join("\n", map { "$_->[0]: change $_->[1] preview " . ($pv{ $_->[0] } // 'missing') } @diff);

	# exactly the initial-sync text of the row with the same values
	my $orig = $snap_by_id{ $id - 100 } // [];
	my %sv = map { ($_->[0] => $_->[1]) } @$orig;
	@diff = grep { $_->[0] ne 'id' && (!defined $sv{ $_->[0] } || $sv{ $_->[0] } ne $_->[1]) } @cols;
	is_deeply([ map { $_->[0] } @diff ], [],
		"change $n (id $id): every value's JSON text equals the initial-sync RECORD of id " . ($id - 100))
	  or diag join("\n", map { "$_->[0]: change $_->[1] initial sync " . ($sv{ $_->[0] } // 'missing') } @diff);
	is_deeply([ map { $_->[0] } grep { $_->[0] !~ /^_sdc_/ } @$orig ], \@columns,
		"change $n (id $id): the initial-sync RECORD has the same keys in the same order");

	foreach my $rc (grep { $_->[0] == $id - 100 } @raw_checks)
	{
		like($h{ $rc->[1] }, $rc->[2], "change $n (id $id): $rc->[1] exact JSON text");
	}
}

# SCHEMA: the same from both paths, and egress_preview_schema plus _sdc_deleted_at
my @schemas = messages_of_type('SCHEMA', sync_batches($out), @cdc_batches);
ok(scalar(@schemas) >= 2, 'SCHEMA messages in both paths');
my $first = canon($schemas[0]);
my $same = grep { !same_value(canon($_), $first) } @schemas;
is($same, 0, 'every SCHEMA of public-t (snapshot and changes) is the same');
my $pschema = json_decode($node->safe_psql('postgres', q{SELECT egress_preview_schema('t')}), 'preview schema');
my %props = %{ $schemas[0]{schema}{properties} };
ok(delete $props{_sdc_deleted_at}, 'SCHEMA declares _sdc_deleted_at');
ok(same_value(\%props, $pschema->{properties}),
	'SCHEMA properties without _sdc_* equal egress_preview_schema');

no_crash_since($node, $log_start, 'no server process crashed');

$node->stop;
done_testing();
