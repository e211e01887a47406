
# Shared helpers for the pg_egress TAP suites (test/t/*.pl).
#
# Every wait here is a poll with a deadline; nothing sleeps and hopes.

package EgressTest;

use strict;
use warnings;

use B ();
use Exporter 'import';
use File::Temp ();
use File::Spec;
use JSON::PP;
use Math::BigFloat;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

our @EXPORT = qw(
  create_node new_outdir file_url list_dir tmp_files
  read_batches records_of messages_of_type json_decode
  canon num TRUE FALSE raw_pairs raw_record_value
  poll_until wait_stream_where wait_stream_state stream_row
  backend_pids query_as sql_quote check_batch_file
);

# Client encoding of every psql the tests start: the data is UTF-8.
$ENV{PGCLIENTENCODING} = 'UTF8';

my $DEFAULT_TIMEOUT = 180;

# ---------------------------------------------------------------------------
# Nodes and directories
# ---------------------------------------------------------------------------

# create_node($name, conf => "extra postgresql.conf lines", extension => 0)
# Returns a started node with pg_egress created in database postgres.
sub create_node
{
	my ($name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(
		allows_streaming => 'logical',
		extra => [ '--encoding=UTF8', '--locale=C' ]);
	$node->append_conf(
		'postgresql.conf', qq{
shared_preload_libraries = 'pg_egress'
wal_level = logical
max_worker_processes = 16
max_connections = 20
shared_buffers = 16MB
restart_after_crash = on
pg_egress.database = 'postgres'
pg_egress.naptime = '1s'
output_plugin_libraries = 'pgoutput, test_decoding, wal2json'
});
	$node->append_conf('postgresql.conf', $opts{conf}) if defined $opts{conf};
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION pg_egress')
	  unless defined $opts{extension} && !$opts{extension};
	return $node;
}

# A fresh, empty, absolute directory under the node's basedir.
sub new_outdir
{
	my ($node, $prefix) = @_;
	$prefix = 'out' unless defined $prefix;
	my $dir = File::Temp::tempdir(
		"${prefix}_XXXX",
		DIR => $node->basedir,
		CLEANUP => 0);
	return File::Spec->rel2abs($dir);
}

sub file_url { return 'file://' . $_[0]; }

# Names in a directory (no . and ..), sorted.
sub list_dir
{
	my ($dir) = @_;
	opendir(my $dh, $dir) or die "could not open directory \"$dir\": $!";
	my @names = sort grep { $_ ne '.' && $_ ne '..' } readdir $dh;
	closedir $dh;
	return @names;
}

# Hidden temporary files (.<stream>-<version>-<NNNNNN>.jsonl.tmp) in a directory.
sub tmp_files
{
	my ($dir) = @_;
	return grep { /\.tmp$/ } list_dir($dir);
}

# SQL string literal.
sub sql_quote
{
	my ($s) = @_;
	$s =~ s/'/''/g;
	return "'$s'";
}

# ---------------------------------------------------------------------------
# Reading batch files
# ---------------------------------------------------------------------------

my $JSON = JSON::PP->new->utf8->allow_bignum->allow_nonref;

sub json_decode
{
	my ($text, $where) = @_;
	my $v = eval { $JSON->decode($text) };
	die "invalid JSON at $where: $@" . "line: $text\n" if $@;
	return $v;
}

# Parsed files, by path; a complete file never changes once it is renamed
# into place, but the cache is keyed on size and mtime too, to be sure.
my %file_cache;

# read_batches($dir [, qr/name filter/]) -> list of
#   { name, path, lines => [raw text], messages => [decoded] }
# for every complete *.jsonl file (hidden temporary files are skipped),
# sorted by name.  Dies with file:line on a line that is not valid JSON.
sub read_batches
{
	my ($dir, $filter) = @_;
	my @out;
	foreach my $name (list_dir($dir))
	{
		next if $name =~ /^\./ || $name !~ /\.jsonl$/;
		next if defined $filter && $name !~ $filter;
		my $path = "$dir/$name";
		my @st = stat($path) or die "could not stat \"$path\": $!";
		my $key = "$st[7]:$st[9]";
		if (!$file_cache{$path} || $file_cache{$path}{key} ne $key)
		{
			open(my $fh, '<:raw', $path) or die "could not open \"$path\": $!";
			my (@lines, @messages);
			my $newline_end = 1;
			while (my $line = <$fh>)
			{
				$newline_end = chomp($line) ? 1 : 0;
				push @lines, $line;
				push @messages, json_decode($line, "$path:$.");
			}
			close $fh;
			$file_cache{$path} = {
				key => $key,
				batch => {
					name => $name,
					path => $path,
					size => $st[7],
					newline_end => $newline_end,
					lines => \@lines,
					messages => \@messages
				}
			};
		}
		push @out, $file_cache{$path}{batch};
	}
	return @out;
}

# All messages of a type, over one or more batches, in order.
sub messages_of_type
{
	my ($type, @batches) = @_;
	return grep { $_->{type} eq $type } map { @{ $_->{messages} } } @batches;
}

sub records_of { return messages_of_type('RECORD', @_); }

# Problems with one batch file as a list of strings (empty when fine):
# SCHEMA first, STATE last, nothing unknown in between, every line an object
# with a known type, the last line ended by a newline (NDJSON).
sub check_batch_file
{
	my ($batch) = @_;
	my @m = @{ $batch->{messages} };
	my @problems;
	push @problems, "$batch->{name}: empty" unless @m;
	return @problems unless @m;
	push @problems, "$batch->{name}: first message is not SCHEMA"
	  unless ref $m[0] eq 'HASH' && ($m[0]{type} // '') eq 'SCHEMA';
	push @problems, "$batch->{name}: last message is not STATE"
	  unless ref $m[-1] eq 'HASH' && ($m[-1]{type} // '') eq 'STATE';
	push @problems, "$batch->{name}: the last line has no newline"
	  unless $batch->{newline_end};
	for my $i (0 .. $#m)
	{
		my $t = ref $m[$i] eq 'HASH' ? ($m[$i]{type} // '') : '';
		push @problems, "$batch->{name}:" . ($i + 1) . ": unexpected message type '$t'"
		  unless $t =~ /^(SCHEMA|RECORD|STATE|ACTIVATE_VERSION)$/;
	}
	return @problems;
}

# ---------------------------------------------------------------------------
# Comparing decoded JSON exactly
# ---------------------------------------------------------------------------
#
# Test::More cannot tell the number 5 from the string "5", nor true from 1.
# canon() turns every JSON number into { num => <canonical decimal> } and
# every JSON boolean into { bool => 'true'|'false' }; strings stay strings.
# Build expectations with num('12.50'), TRUE and FALSE.  Numbers compare by
# value (1.50 == 1.5); use raw_pairs() where the exact text matters.

sub num { return +{ num => Math::BigFloat->new("$_[0]")->bstr }; }
sub TRUE  { return +{ bool => 'true' }; }
sub FALSE { return +{ bool => 'false' }; }

sub _is_number
{
	my ($sv) = @_;
	my $flags = B::svref_2object(\$sv)->FLAGS;
	return ($flags & (B::SVf_IOK | B::SVf_NOK)) && !($flags & B::SVf_POK);
}

sub canon
{
	my ($v) = @_;
	return undef unless defined $v;
	my $r = ref $v;
	if ($r eq '')
	{
		return _is_number($v) ? num($v) : $v;
	}
	return +{ bool => ($v ? 'true' : 'false') } if $r eq 'JSON::PP::Boolean';
	return num("$v") if $r eq 'Math::BigFloat' || $r eq 'Math::BigInt';
	return [ map { canon($_) } @$v ] if $r eq 'ARRAY';
	return +{ map { ($_ => canon($v->{$_})) } keys %$v } if $r eq 'HASH';
	die "canon: unexpected reference $r";
}

# raw_pairs($json_object_text) -> list of [key, raw value text] in the order
# they appear; for checking key order and the exact text of numbers.
sub raw_pairs
{
	my ($text) = @_;
	my $n = length $text;
	my $i = 0;
	my $ws = sub { $i++ while $i < $n && substr($text, $i, 1) =~ /\s/; };
	my $string_end = sub {
		my ($j) = @_;    # at the opening quote
		$j++;
		while ($j < $n)
		{
			my $c = substr($text, $j, 1);
			if ($c eq '\\') { $j += 2; next; }
			return $j + 1 if $c eq '"';
			$j++;
		}
		die "raw_pairs: unterminated string in $text\n";
	};
	my $value_end = sub {
		my ($j) = @_;
		my $c = substr($text, $j, 1);
		return $string_end->($j) if $c eq '"';
		if ($c eq '{' || $c eq '[')
		{
			my $depth = 0;
			while ($j < $n)
			{
				$c = substr($text, $j, 1);
				if ($c eq '"') { $j = $string_end->($j); next; }
				$depth++ if $c eq '{' || $c eq '[';
				$depth-- if $c eq '}' || $c eq ']';
				$j++;
				return $j if $depth == 0;
			}
			die "raw_pairs: unbalanced value in $text\n";
		}
		$j++ while $j < $n && substr($text, $j, 1) !~ /[,\}\]\s]/;
		return $j;
	};

	my @pairs;
	$ws->();
	die "raw_pairs: not an object: $text\n" unless substr($text, $i, 1) eq '{';
	$i++;
	$ws->();
	return () if substr($text, $i, 1) eq '}';
	while (1)
	{
		$ws->();
		my $kend = $string_end->($i);
		my $key = json_decode(substr($text, $i, $kend - $i), 'raw_pairs key');
		$i = $kend;
		$ws->();
		die "raw_pairs: expected ':' in $text\n" unless substr($text, $i++, 1) eq ':';
		$ws->();
		my $vend = $value_end->($i);
		push @pairs, [ $key, substr($text, $i, $vend - $i) ];
		$i = $vend;
		$ws->();
		my $c = substr($text, $i++, 1);
		last if $c eq '}';
		die "raw_pairs: expected ',' in $text\n" unless $c eq ',';
	}
	return @pairs;
}

# The raw text of one column of a RECORD line.
sub raw_record_value
{
	my ($line, $column) = @_;
	my ($rec) = grep { $_->[0] eq 'record' } raw_pairs($line);
	die "no record in $line\n" unless $rec;
	my ($col) = grep { $_->[0] eq $column } raw_pairs($rec->[1]);
	return $col ? $col->[1] : undef;
}

# ---------------------------------------------------------------------------
# Waiting
# ---------------------------------------------------------------------------

# poll_until($description, $timeout, sub { ... true when done ... })
sub poll_until
{
	my ($desc, $timeout, $cond) = @_;
	$timeout = $DEFAULT_TIMEOUT unless defined $timeout;
	my $deadline = time + $timeout;
	while (1)
	{
		return 1 if $cond->();
		if (time > $deadline)
		{
			diag "timed out after ${timeout}s waiting for: $desc";
			return 0;
		}
		usleep(100_000);
	}
}

# The egress_streams row of a stream as a hash (undef when absent or when
# the server does not answer, e.g. during crash recovery).
sub stream_row
{
	my ($node, $stream) = @_;
	my ($ret, $out, $err) = $node->psql('postgres',
		'SELECT row_to_json(s) FROM egress_streams s WHERE name = '
		  . sql_quote($stream));
	return undef if $ret != 0 || $out eq '';
	return json_decode($out, 'egress_streams row');
}

# Waits until the stream's egress_streams row satisfies an SQL condition
# over the view's columns; on timeout, fails showing the last row.
sub wait_stream_where
{
	my ($node, $stream, $cond, $timeout, $desc) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	$desc = "stream $stream: $cond" unless defined $desc;
	my $sql =
	    'SELECT count(*) FROM egress_streams WHERE name = '
	  . sql_quote($stream)
	  . " AND ($cond)";
	my $ok = poll_until(
		$desc, $timeout,
		sub {
			my ($ret, $out) = $node->psql('postgres', $sql);
			return $ret == 0 && $out eq '1';
		});
	if (!$ok)
	{
		my ($ret, $out, $err) = $node->psql('postgres',
			'SELECT row_to_json(s) FROM egress_streams s WHERE name = '
			  . sql_quote($stream));
		diag "last egress_streams row of $stream: "
		  . ($out ne '' ? $out : '(none)')
		  . ($err ne '' ? " ($err)" : '');
	}
	ok($ok, $desc);
	return $ok;
}

sub wait_stream_state
{
	my ($node, $stream, $state, $timeout) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	return wait_stream_where($node, $stream, 'state = ' . sql_quote($state),
		$timeout, "stream $stream reaches state $state");
}

# ---------------------------------------------------------------------------
# Sessions and processes
# ---------------------------------------------------------------------------

# pids of the backends of a backend_type, sorted (empty when the server does
# not answer).
sub backend_pids
{
	my ($node, $type, $dbname) = @_;
	my ($ret, $out) = $node->psql($dbname // 'postgres',
		'SELECT pid FROM pg_stat_activity WHERE backend_type = '
		  . sql_quote($type)
		  . ' ORDER BY pid');
	return () if $ret != 0;
	return split /\n/, $out;
}

# query_as($node, $role, $sql) -> ($ret, $stdout, $stderr); connects as
# $role, with VERBOSITY verbose so that errors carry their SQLSTATE
# ("ERROR:  42501: ...").
sub query_as
{
	my ($node, $role, $sql) = @_;
	my ($ret, $out, $err) = $node->psql(
		'postgres',
		"\\set VERBOSITY verbose\n$sql",
		connstr => $node->connstr('postgres') . " user=$role");
	return ($ret, $out, $err);
}

1;
