
# The pg_kinesis format against pg_kinesis' own pipeline: the same changes
# decoded by test_decoding (what pg_kinesis reads) and turned into JSON the
# way pg_kinesis does (its test_decoding parser, then Go's encoding/json:
# map keys in byte order, <>& and U+2028/9 escaped), re-implemented below,
# must be byte-identical to what encode/pg_kinesis.c renders from the
# output functions' text of the same rows (through the test hook
# egress_pg_kinesis_preview), "time" aside (pg_kinesis has its host's
# clock, pg_egress the commit time).  Every type class test_decoding treats
# apart: integers, numeric, floats (NaN), boolean, bit strings, quoted
# values with quotes, newlines, <>&, U+2028, arrays, jsonb; quoted and
# keyword column names; nulls; REPLICA IDENTITY FULL (old values of
# changed columns) and DEFAULT (old key only when it changes; DELETE).

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use EgressTest;

my $JSON = JSON::PP->new->utf8;

my $node = create_node('pg_kinesis_format', cdc => 1);
$node->safe_psql('postgres', q{
CREATE FUNCTION egress_pg_kinesis_preview(regclass, text, text[], text[], pg_lsn, timestamptz)
  RETURNS text AS 'pg_egress', 'egress_pg_kinesis_preview' LANGUAGE C;
CREATE TABLE full_t (id int PRIMARY KEY, "Mixed Case" text, "select" boolean, n numeric(12,3),
  f float8, bits bit(4), vb varbit, j jsonb, arr text[], ts timestamptz, note varchar(20),
  big bigint, u uuid, by bytea);
ALTER TABLE full_t REPLICA IDENTITY FULL;
CREATE TABLE def_t (id int PRIMARY KEY, v text, w int);
SELECT pg_create_logical_replication_slot('td', 'test_decoding');
});

# the columns of a table, in order
sub columns_of
{
	my ($table) = @_;
	return split /\n/, $node->safe_psql('postgres', qq{
SELECT quote_ident(attname) FROM pg_attribute
 WHERE attrelid = '$table'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum});
}

# a row's values as its output functions print them (JSON array; null when no row)
sub row_text
{
	my ($table, $id) = @_;
	my @cols = columns_of($table);
	my $list = join(', ', map { "CASE WHEN $_ IS NULL THEN NULL ELSE format('%s', $_) END" } @cols);
	my $out = $node->safe_psql('postgres',
		"SELECT coalesce((SELECT json_build_array($list)::text FROM $table WHERE id = $id), 'null')");
	return $out;
}

my @steps = (
	[ 'full_t', 1, 'INSERT', q{INSERT INTO full_t VALUES (1, 'it''s <b>&amp;</b>', true, 12.5, 'NaN', B'1010', B'1',
		'{"a": "x\"y", "b": [1, 2]}', ARRAY['p q', 'r"s', NULL], '2024-01-02 03:04:05.678+00', 'short', 9007199254740993,
		'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\x00ff')} ],
	[ 'full_t', 2, 'INSERT', qq{INSERT INTO full_t (id, "Mixed Case", note) VALUES (2, E'line1\\nline2\\ttab \\u2028 sep', NULL)} ],
	[ 'full_t', 1, 'UPDATE', q{UPDATE full_t SET "Mixed Case" = 'changed', f = -1.5e-10, "select" = false WHERE id = 1} ],
	[ 'full_t', 2, 'UPDATE', q{UPDATE full_t SET note = 'now set' WHERE id = 2} ],
	[ 'full_t', 2, 'DELETE', q{DELETE FROM full_t WHERE id = 2} ],
	[ 'def_t', 10, 'INSERT', q{INSERT INTO def_t VALUES (10, 'ten', NULL)} ],
	[ 'def_t', 10, 'UPDATE', q{UPDATE def_t SET v = 'TEN', w = 1 WHERE id = 10} ],
	[ 'def_t', 11, 'UPDATE', q{UPDATE def_t SET id = 11 WHERE id = 10}, 10 ],
	[ 'def_t', 11, 'DELETE', q{DELETE FROM def_t WHERE id = 11} ],
);

my @calls;
foreach my $s (@steps)
{
	my ($table, $id, $op, $sql, $old_id) = @$s;
	my $before = row_text($table, $old_id // $id);
	$node->safe_psql('postgres', $sql);
	my $after = row_text($table, $id);
	my ($new, $old) = ('null', 'null');
	$new = $after if $op ne 'DELETE';
	if ($op ne 'INSERT')
	{
		if ($table eq 'full_t')
		{
			$old = $before;
		}
		elsif ($op eq 'DELETE' || defined $old_id)
		{
			# REPLICA IDENTITY DEFAULT: the key only, and for an UPDATE only
			# when it changes
			my $b = $JSON->decode($before);
			$old = $JSON->encode([ $b->[0], map { undef } 1 .. $#$b ]);
		}
	}
	push @calls, [ $table, $op, $new, $old ];
}

my $changes = $JSON->decode($node->safe_psql('postgres', q{
SELECT json_agg(json_build_array(lsn::text, data) ORDER BY ordinality)
  FROM pg_logical_slot_get_changes('td', NULL, NULL) WITH ORDINALITY
 WHERE data LIKE 'table %'}));
is(scalar @$changes, scalar @steps, 'one test_decoding change per step');

# ---- pg_kinesis' pipeline, re-implemented --------------------------------

# test_decoding's text of one change -> (relation, operation, columns, old columns)
sub parse_td
{
	my ($msg) = @_;
	my ($rel, $op, %cols, %old);
	my $oldkey = 0;
	my $state = 'rel';
	my $prev = '';
	my $start = 6;
	my ($cname, $ctype);
	my $len = length $msg;
	for (my $i = $start; $i <= $len; $i++)
	{
		my $c = $i < $len ? substr($msg, $i, 1) : "\0";
		my $n = $i + 1 < $len ? substr($msg, $i + 1, 1) : "\0";
		if ($state eq 'rel')
		{
			if ($c eq ':') { $rel = substr($msg, $start, $i - $start); $start = $i + 2; $i++; $state = 'op'; }
			elsif ($c eq '"') { $prev = $state; $state = 'ident'; }
		}
		elsif ($state eq 'op')
		{
			if ($c eq ':') { $op = substr($msg, $start, $i - $start); $start = $i + 2; $i++; $state = 'name'; }
		}
		elsif ($state eq 'name')
		{
			if ($c eq '[') { $cname = substr($msg, $start, $i - $start); $start = $i + 1; $state = 'type'; }
			elsif ($c eq ':')
			{
				my $w = substr($msg, $start, $i - $start);
				$oldkey = 1 if $w eq 'old-key';
				$oldkey = 0 if $w eq 'new-tuple';
				$start = $i + 2;
				$i++;
			}
			elsif ($c eq '(') { last; }
			elsif ($c eq '"') { $prev = $state; $state = 'ident'; }
		}
		elsif ($state eq 'type')
		{
			if ($c eq ']') { $ctype = substr($msg, $start, $i - $start); $start = $i + 2; $i++; $state = 'value'; $prev = ''; }
			elsif ($c eq '"') { $prev = $state; $state = 'ident'; }
			elsif ($c eq '[') { $prev = $state; $state = 'bracket'; }
		}
		elsif ($state eq 'value')
		{
			if ($c eq "\0" || $c eq ' ')
			{
				my $q = $prev eq 'qvalue';
				my ($s, $e) = ($start, $i);
				if ($q) { $s++; $e--; }
				my $v = { v => substr($msg, $s, $e - $s), t => $ctype, q => $q ? 'true' : 'false' };
				if ($oldkey) { $old{$cname} = $v; } else { $cols{$cname} = $v; }
				last if $c eq "\0";
				$start = $i + 1;
				$prev = $state;
				$state = 'name';
			}
			elsif ($c eq "'") { $prev = $state; $state = 'qvalue'; }
		}
		elsif ($state eq 'bracket')
		{
			if ($c eq ']') { $state = $prev; $prev = ''; }
		}
		elsif ($state eq 'ident')
		{
			if ($c eq '"') { if ($n eq '"') { $i++; } else { $state = $prev; $prev = ''; } }
		}
		elsif ($state eq 'qvalue')
		{
			if ($c eq "'")
			{
				if ($n eq "'") { $i++; }
				else { my $p = $prev; $prev = $state; $state = $p; }
			}
		}
	}
	return ($rel, $op, \%cols, \%old);
}

# a string as Go's encoding/json writes it (bytes in, bytes out)
sub go_string
{
	my ($s) = @_;
	$s =~ s/\\/\\\\/g;
	$s =~ s/"/\\"/g;
	$s =~ s/\n/\\n/g;
	$s =~ s/\r/\\r/g;
	$s =~ s/\t/\\t/g;
	$s =~ s/([\x00-\x1f<>&])/sprintf('\\u%04x', ord($1))/ge;
	$s =~ s/\xe2\x80\xa8/\\u2028/g;
	$s =~ s/\xe2\x80\xa9/\\u2029/g;
	return qq{"$s"};
}

sub go_value
{
	my ($v) = @_;
	return '{' . join(',', map { go_string($_) . ':' . go_string($v->{$_}) } sort keys %$v) . '}';
}

sub pg_kinesis_json
{
	my ($lsn, $msg) = @_;
	my ($rel, $op, $cols, $old) = parse_td($msg);
	my %out;
	foreach my $k (keys %$cols)
	{
		if ($op eq 'DELETE') { $out{$k} = { old => $cols->{$k} }; }
		elsif (exists $old->{$k} && $old->{$k}{v} ne $cols->{$k}{v})
		{
			$out{$k} = { new => $cols->{$k}, old => $old->{$k} };
		}
		else { $out{$k} = { new => $cols->{$k} }; }
	}
	my $columns = '{' . join(',', map {
		my $k = $_;
		go_string($k) . ':{' . join(',', map { go_string($_) . ':' . go_value($out{$k}{$_}) } sort keys %{ $out{$k} }) . '}'
	} sort keys %out) . '}';
	return '{"lsn":' . go_string($lsn) . ',"time":"2020-01-02T02:06:47Z","table":' . go_string($rel)
	  . ',"operation":' . go_string($op) . ',"columns":' . $columns . '}';
}

# ---- compare -----------------------------------------------------------
for my $i (0 .. $#steps)
{
	my ($lsn, $data) = @{ $changes->[$i] };
	utf8::encode($data);
	my ($table, $op, $new, $old) = @{ $calls[$i] };
	my $sql = sprintf(q{SELECT egress_pg_kinesis_preview('%s', '%s', %s, %s, '%s', '2020-01-02 02:06:47+00')},
		$table, $op,
		$new eq 'null' ? 'NULL' : 'ARRAY(SELECT json_array_elements_text(' . sql_quote($new) . '))',
		$old eq 'null' ? 'NULL' : 'ARRAY(SELECT json_array_elements_text(' . sql_quote($old) . '))',
		$lsn);
	my $got = $node->safe_psql('postgres', $sql);
	my $want = pg_kinesis_json($lsn, $data);
	note "step $i: $got";
	is($got, $want, "step $i ($table $op): byte-identical to pg_kinesis")
	  or diag "test_decoding: $data";
}

$node->stop;
done_testing();
