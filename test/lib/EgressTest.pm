
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
use IPC::Run ();
use JSON::PP;
use Math::BigFloat;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

our @EXPORT = qw(
  wakeups cpu_ticks
  create_node new_outdir file_url list_dir tmp_files
  read_batches records_of messages_of_type json_decode
  canon num TRUE FALSE raw_pairs raw_record_value
  poll_until wait_stream_where wait_stream_state stream_row
  backend_pids query_as sql_quote check_batch_file
  lsn_int add_destination cdc_batches sync_batches mirror table_state
  same_value compare_states wait_caught_up cdc_worker_pids slot_row
  write_file start_pgbench finish_pgbench sqlstate_of utc_commit_time
  count_records_raw check_cdc_batch is_lsn_number cdc_name_lsns is_cdc_name
  caught_up server_up stream_row_wait no_crash_since
  every_type_table record_text record_text_without_sdc publication_tables
  publication_row
);

# Client encoding of every psql the tests start: the data is UTF-8.
$ENV{PGCLIENTENCODING} = 'UTF8';

my $DEFAULT_TIMEOUT = 180;

# ---------------------------------------------------------------------------
# Nodes and directories
# ---------------------------------------------------------------------------

# Settings of clusters that run LOG_BASED streams (create_node(..., cdc => 1)).
our $CDC_CONF = q{
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
output_plugin_libraries = 'pgoutput, test_decoding, wal2json'
pg_egress.flush_interval = '200ms'
pg_egress.naptime = '1s'
track_commit_timestamp = on
};

# create_node($name, conf => "extra postgresql.conf lines", extension => 0,
#             cdc => 1, default_plugins => 1)
# Returns a started node with pg_egress created in database postgres.  With
# cdc => 1 the node gets $CDC_CONF (before conf, which can override it).
# With default_plugins => 1 no output_plugin_libraries line is written, so
# the setting stays at its built-in default ('pgoutput, test_decoding': no
# wal2json).
sub create_node
{
	my ($name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(
		allows_streaming => 'logical',
		extra => [ '--encoding=UTF8', '--locale=C' ]);
	my $base = qq{
shared_preload_libraries = 'pg_egress'
wal_level = logical
max_worker_processes = 16
max_connections = 20
shared_buffers = 16MB
restart_after_crash = on
pg_egress.database = 'postgres'
pg_egress.naptime = '1s'
output_plugin_libraries = 'pgoutput, test_decoding, wal2json'
# the test receivers listen on 127.0.0.1; streams of non-superusers send there
pg_egress.allowed_destination_hosts = '*, 127.0.0.1'
};
	my $cdc_conf = $CDC_CONF;
	if ($opts{default_plugins})
	{
		$base =~ s/^output_plugin_libraries\b.*\n//mg;
		$cdc_conf =~ s/^output_plugin_libraries\b.*\n//mg;
	}
	$node->append_conf('postgresql.conf', $base);
	$node->append_conf('postgresql.conf', $cdc_conf) if $opts{cdc};
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

# Hidden temporary files (.<batch prefix>-<pid>-<n>-<8 random hex>.jsonl.tmp) in a directory.
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

# The raw text of the "record" object of a RECORD line, byte for byte.
sub record_text
{
	my ($line) = @_;
	my ($rec) = grep { $_->[0] eq 'record' } raw_pairs($line);
	die "no record in $line\n" unless $rec;
	return $rec->[1];
}

# The raw text of the "record" object with its "_sdc_*" members (and their
# separating commas) cut out, every other byte as written.  A raw `"_sdc_`
# right after `{` or `,` can only be a key: inside a JSON string a quote is
# escaped.
sub record_text_without_sdc
{
	my ($line) = @_;
	my $t = record_text($line);
	my $val = qr/(?:null|true|false|"(?:[^"\\]|\\.)*"|-?[0-9][0-9.eE+-]*)/;
	$t =~ s/,"_sdc_[A-Za-z0-9_]*":$val//g;
	$t =~ s/^\{"_sdc_[A-Za-z0-9_]*":$val,?/{/ while $t =~ /^\{"_sdc_/;
	return $t;
}

# publication_tables($node, $publication) -> sorted schema.table names (quoted
# as identifiers where needed: "a.b"."c.d") of
# pg_publication_tables (partitions, not their partitioned table, when
# publish_via_partition_root is off); () when the publication does not
# exist or the server does not answer.
sub publication_tables
{
	my ($node, $pub) = @_;
	my ($ret, $out) = $node->psql('postgres',
		q{SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_publication_tables WHERE pubname = }
		  . sql_quote($pub) . ' ORDER BY 1');
	return () if $ret != 0 || $out eq '';
	return split /\n/, $out;
}

# The pg_publication row of a publication as a hash (undef when absent).
sub publication_row
{
	my ($node, $pub) = @_;
	my ($ret, $out) = $node->psql('postgres',
		'SELECT row_to_json(p) FROM pg_publication p WHERE pubname = ' . sql_quote($pub));
	return undef if $ret != 0 || $out eq '';
	return json_decode($out, 'pg_publication row');
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

# ---------------------------------------------------------------------------
# LOG_BASED (change data capture) helpers
# ---------------------------------------------------------------------------

# An LSN as an integer: accepts pg_lsn text ("0/16B3748"), exactly 16 hex
# digits (as in CDC file names; 16 decimal digits are read as hex too), or a
# decimal integer or decimal string.
sub lsn_int
{
	my ($v) = @_;
	return undef unless defined $v;
	$v = "$v";
	no warnings 'portable';
	return hex($1) * 4294967296 + hex($2) if $v =~ /^([0-9A-Fa-f]+)\/([0-9A-Fa-f]+)$/;
	return hex($v) if $v =~ /^[0-9A-Fa-f]{16}$/;    # 16 digits: as in file names
	return 0 + $v if $v =~ /^\d+$/;
	die "lsn_int: not an LSN: $v\n";
}

# add_destination($node, $name, $dir [, $options_json])
sub add_destination
{
	my ($node, $name, $dir, $options) = @_;
	$node->safe_psql('postgres',
		'SELECT egress_add_destination('
		  . sql_quote($name) . ', '
		  . sql_quote(file_url($dir))
		  . (defined $options ? ', ' . sql_quote($options) . '::jsonb' : '')
		  . ')');
	return;
}

# Change batch files: <destination>-<16 hex>-<16 hex>[-<NNNNNN>].jsonl (first
# and last commit LSN, and the position of the batch's first record within
# its transaction), in delivery order: by first LSN, last LSN, then the
# number (compared as numbers, not as text).  Optionally of one destination.
our $CDC_NAME_RE = qr/^([a-z][a-z0-9_]*)-([0-9A-Fa-f]{16})-([0-9A-Fa-f]{16})(?:-(\d+))?\.jsonl$/;

sub cdc_batches
{
	my ($dir, $dest) = @_;
	my @b = grep {
		$_->{name} =~ $CDC_NAME_RE && (!defined $dest || $1 eq $dest)
	} read_batches($dir, $CDC_NAME_RE);
	my @sorted = sort { _cdc_cmp($a->{name}, $b->{name}) } @b;
	return @sorted;    # a count in scalar context
}

sub _cdc_cmp
{
	my ($x, $y) = @_;
	my @x = $x =~ $CDC_NAME_RE;
	my @y = $y =~ $CDC_NAME_RE;
	return lc($x[1]) cmp lc($y[1]) || lc($x[2]) cmp lc($y[2]) || ($x[3] // 0) <=> ($y[3] // 0) || $x cmp $y;
}

# (first, last) commit LSN of a change file name, as integers.
sub cdc_name_lsns
{
	my ($name) = @_;
	my @p = $name =~ $CDC_NAME_RE or return ();
	return (lsn_int($p[1]), lsn_int($p[2]));
}

# Snapshot (initial sync / FULL_TABLE) files <stream>-<version>-<NNNNNN>.jsonl,
# ordered by stream, version, number.  Optionally of one stream name only.
sub sync_batches
{
	my ($dir, $stream) = @_;
	my $re =
	  defined $stream
	  ? qr/^\Q$stream\E-\d+-\d{6}\.jsonl$/
	  : qr/^[a-z][a-z0-9_]*-\d+-\d{6}\.jsonl$/;
	my @b = read_batches($dir, $re);
	my $k = sub { $_[0]{name} =~ /^(.*)-(\d+)-(\d{6})\.jsonl$/; return ($1, $2, $3); };
	my @sorted = sort {
		my @x = $k->($a);
		my @y = $k->($b);
		$x[0] cmp $y[0] || $x[1] <=> $y[1] || $x[2] <=> $y[2]
	} @b;
	return @sorted;    # a count in scalar context
}

sub _pk_key
{
	my ($rec, $pk) = @_;
	return join("\x1f", map { defined $rec->{$_} ? "$rec->{$_}" : "\x00NULL" } @$pk);
}

# mirror($dir, $stream_id, \@pk_columns [, \%info]) -> { key => record }
#
# What a Singer target that honours versions would hold after loading every
# complete file of the directory: the initial-sync files of the newest
# version holding $stream_id (ordered by NNNNNN), then the change files
# ordered by name.  RECORDs with "_sdc_deleted_at" null are upserts (stored
# without their _sdc_* keys), others delete the key; an ACTIVATE_VERSION
# drops the entries of older versions.  Keys are the PK values joined by
# \x1f.  A resync of a LOG_BASED stream after change files is not modelled.
# %info receives counts: records, deletes, cdc_records, sync_records,
# activate_versions, sync_version.
sub mirror
{
	my ($dir, $sid, $pk, $info) = @_;
	$info = {} unless $info;
	my %groups;
	foreach my $b (sync_batches($dir))
	{
		$b->{name} =~ /^(.*)-(\d+)-(\d{6})\.jsonl$/;
		push @{ $groups{"$1\0$2"} }, $b;
	}
	my ($best, $bestv);
	foreach my $g (keys %groups)
	{
		my ($name, $v) = split /\0/, $g;
		next
		  unless grep { ref $_ eq 'HASH' && ($_->{stream} // '') eq $sid }
		  map { @{ $_->{messages} } } @{ $groups{$g} };
		($best, $bestv) = ($g, $v) if !defined $bestv || $v > $bestv;
	}
	my @sync = defined $best ? @{ $groups{$best} } : ();
	my @cdc = cdc_batches($dir);
	$info->{sync_version} = $bestv;
	$info->{$_} = 0 foreach qw(records deletes cdc_records sync_records activate_versions);

	my %m;
	foreach my $part ([ sync => \@sync ], [ cdc => \@cdc ])
	{
		my ($kind, $files) = @$part;
		foreach my $b (@$files)
		{
			foreach my $msg (@{ $b->{messages} })
			{
				next unless ref $msg eq 'HASH' && ($msg->{stream} // '') eq $sid;
				my $type = $msg->{type} // '';
				if ($type eq 'RECORD')
				{
					my $r = $msg->{record};
					my $key = _pk_key($r, $pk);
					$info->{records}++;
					$info->{"${kind}_records"}++;
					if (defined $r->{_sdc_deleted_at})
					{
						$info->{deletes}++;
						delete $m{$key};
					}
					else
					{
						my %c = map { ($_ => $r->{$_}) } grep { !/^_sdc_/ } keys %$r;
						$m{$key} = { version => $msg->{version} // 0, record => \%c };
					}
				}
				elsif ($type eq 'ACTIVATE_VERSION')
				{
					$info->{activate_versions}++;
					my $v = $msg->{version} // 0;
					foreach my $k (keys %m)
					{
						delete $m{$k} if $m{$k}{version} < $v;
					}
				}
			}
		}
	}
	return { map { ($_ => $m{$_}{record}) } keys %m };
}

# table_state($node, $table, \@pk) -> { key => record } of the table's rows
# as egress_preview_record renders them (the same keys as mirror()).
sub table_state
{
	my ($node, $table, $pk) = @_;
	my $out = $node->safe_psql('postgres',
		"SELECT egress_preview_record(egress_tap_row)::text FROM $table egress_tap_row");
	my %h;
	foreach my $line (split /\n/, $out)
	{
		next if $line eq '';
		my $r = json_decode($line, "egress_preview_record of $table");
		my %c = map { ($_ => $r->{$_}) } grep { !/^_sdc_/ } keys %$r;
		$h{ _pk_key(\%c, $pk) } = \%c;
	}
	return \%h;
}

# Deep equality of decoded JSON values: numbers by value (1.50 == 1.5),
# booleans by truth, strings exactly.
sub same_value
{
	my ($x, $y) = @_;
	return 1 if !defined $x && !defined $y;
	return 0 if !defined $x || !defined $y;
	my ($rx, $ry) = (ref $x, ref $y);
	my $isnum = sub {
		my ($v, $r) = @_;
		return $r eq 'Math::BigFloat' || $r eq 'Math::BigInt' || ($r eq '' && _is_number($v));
	};
	if ($isnum->($x, $rx) || $isnum->($y, $ry))
	{
		return 0 unless $isnum->($x, $rx) && $isnum->($y, $ry);
		return 1 if "$x" eq "$y";
		return Math::BigFloat->new("$x")->bcmp(Math::BigFloat->new("$y")) == 0;
	}
	if ($rx eq 'JSON::PP::Boolean' || $ry eq 'JSON::PP::Boolean')
	{
		return 0 unless $rx eq $ry;
		return (!!$x) == (!!$y);
	}
	return 0 unless $rx eq $ry;
	return $x eq $y if $rx eq '';
	if ($rx eq 'ARRAY')
	{
		return 0 unless @$x == @$y;
		for my $i (0 .. $#$x) { return 0 unless same_value($x->[$i], $y->[$i]); }
		return 1;
	}
	if ($rx eq 'HASH')
	{
		return 0 unless keys %$x == keys %$y;
		foreach my $k (keys %$x)
		{
			return 0 unless exists $y->{$k} && same_value($x->{$k}, $y->{$k});
		}
		return 1;
	}
	die "same_value: unexpected reference $rx";
}

my $DIAG_JSON = JSON::PP->new->canonical->allow_nonref->allow_bignum->allow_blessed->convert_blessed;

sub _short
{
	my ($v) = @_;
	my $s = eval { $DIAG_JSON->encode(canon($v)) } // "$v";
	$s = substr($s, 0, 300) . '...' if length $s > 300;
	return $s;
}

# compare_states($mirror, $table, $label, lenient => 1): one test; true when
# the mirror holds exactly the table's keys with the same values.  With
# lenient, a key missing from a mirror record counts as null and keys the
# table row does not have are ignored (columns added or dropped after the
# row was last sent).  Shows the first differences.
sub compare_states
{
	my ($mirror, $table, $label, %opt) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my (@missing, @extra, @diff);
	foreach my $k (sort keys %$table)
	{
		if (!exists $mirror->{$k}) { push @missing, $k; next; }
		my ($m, $t) = ($mirror->{$k}, $table->{$k});
		if ($opt{lenient})
		{
			$m = { map { ($_ => $m->{$_}) } keys %$t };
		}
		push @diff, $k unless same_value($m, $t);
	}
	@extra = grep { !exists $table->{$_} } sort keys %$mirror;
	my $ok = ok(!@missing && !@extra && !@diff,
		"$label: mirror == table ("
		  . scalar(keys %$table)
		  . ' rows in the table, '
		  . scalar(keys %$mirror)
		  . ' in the mirror)');
	if (!$ok)
	{
		my $show = sub { my $k = shift; $k =~ s/\x1f/,/g; $k =~ s/\x00NULL/NULL/g; return $k; };
		diag sprintf('%d keys missing from the mirror, %d extra in the mirror, %d with other values',
			scalar @missing, scalar @extra, scalar @diff);
		diag 'missing: ' . join(' ', map { $show->($_) } @missing[ 0 .. ($#missing < 9 ? $#missing : 9) ])
		  if @missing;
		diag 'extra: ' . join(' ', map { $show->($_) } @extra[ 0 .. ($#extra < 9 ? $#extra : 9) ])
		  if @extra;
		foreach my $k (@diff[ 0 .. ($#diff < 4 ? $#diff : 4) ])
		{
			diag 'key ' . $show->($k) . "\n  mirror: " . _short($mirror->{$k}) . "\n  table:  " . _short($table->{$k});
		}
	}
	return $ok;
}

# wait_caught_up($node, $stream [, $timeout]): waits until the stream is
# 'streaming' and has delivered everything up to the pg_current_wal_lsn()
# taken when the wait started: its confirmed_lsn reached it, or the
# confirmed_flush_lsn of its slot (egress_streams.slot_name) did (the slot
# never passes an unacknowledged change of any of its streams; a stream
# without changes of its own may keep an older confirmed_lsn).  One test.
# Counts in %EgressTest::caught_up_via how each wait ended.
our %caught_up_via;

# caught_up($node, $stream, $target_lsn_int) -> ('confirmed_lsn' | 'slot' |
# undef, the egress_streams row): the test of wait_caught_up, once.
sub caught_up
{
	my ($node, $stream, $target) = @_;
	my $row = stream_row($node, $stream);
	return (undef, $row) unless $row && ($row->{state} // '') eq 'streaming';
	return ('confirmed_lsn', $row)
	  if defined $row->{confirmed_lsn} && lsn_int($row->{confirmed_lsn}) >= $target;
	return (undef, $row) unless defined $row->{slot_name};
	my $slot = slot_row($node, $row->{slot_name});
	return ('slot', $row)
	  if $slot && defined $slot->{confirmed_flush_lsn} && lsn_int($slot->{confirmed_flush_lsn}) >= $target;
	return (undef, $row);
}

sub wait_caught_up
{
	my ($node, $stream, $timeout) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	$timeout = $DEFAULT_TIMEOUT unless defined $timeout;
	my $target_text;
	poll_until(
		'the server to answer', $timeout,
		sub {
			my ($ret, $out) = $node->psql('postgres', 'SELECT pg_current_wal_lsn()');
			$target_text = $out if $ret == 0;
			return $ret == 0;
		});
	my $target = lsn_int($target_text);
	my ($last, $via);
	my $ok = poll_until(
		"stream $stream streaming and delivered up to $target_text",
		$timeout,
		sub {
			($via, my $row) = caught_up($node, $stream, $target);
			$last = $row if $row;
			return defined $via;
		});
	if (!$ok)
	{
		diag "last egress_streams row of $stream: " . (defined $last ? _short_row($last) : '(none)');
		my ($ret, $out) = $node->psql('postgres',
			q{SELECT string_agg(slot_name || ' ' || coalesce(plugin, '-') || ' active_pid=' || coalesce(active_pid::text, '-') || ' restart=' || coalesce(restart_lsn::text, '-') || ' confirmed_flush=' || coalesce(confirmed_flush_lsn::text, '-'), '; ') FROM pg_replication_slots});
		diag "slots: $out" if $ret == 0;
	}
	else
	{
		$caught_up_via{$via}++;
		note "stream $stream caught up via $via";
	}
	ok($ok, "stream $stream caught up to $target_text");
	return $ok;
}

sub _short_row
{
	my ($row) = @_;
	my $s = eval { $DIAG_JSON->encode($row) } // "$row";
	return $s;
}

sub is_cdc_name { return $_[0] =~ $CDC_NAME_RE; }

# pids of the CDC workers ('pg_egress cdc'), sorted.
sub cdc_worker_pids
{
	my ($node) = @_;
	return backend_pids($node, 'pg_egress cdc');
}

# The pg_replication_slots row of a slot as a hash (undef when absent or
# when the server does not answer).
sub slot_row
{
	my ($node, $slot) = @_;
	my ($ret, $out) = $node->psql('postgres',
		'SELECT row_to_json(s) FROM pg_replication_slots s WHERE slot_name = ' . sql_quote($slot));
	return undef if $ret != 0 || $out eq '';
	return json_decode($out, 'pg_replication_slots row');
}

sub write_file
{
	my ($path, $text) = @_;
	open(my $fh, '>', $path) or die "could not write \"$path\": $!";
	print $fh $text;
	close $fh or die "could not close \"$path\": $!";
	return $path;
}

# start_pgbench($node, $name, $script_text, @pgbench_args) -> handle; runs
# pgbench -n -f <script> @args <connstr> in the background.
sub start_pgbench
{
	my ($node, $name, $script, @args) = @_;
	my $file = write_file($node->basedir . "/$name.pgbench", $script);
	my ($out, $err) = ('', '');
	# application_name pgbench (the TAP modules set PGAPPNAME to the script)
	my @cmd = ($node->installed_command('pgbench'), '-n', '-f', $file, @args,
		$node->connstr('postgres') . ' application_name=pgbench');
	my $h = IPC::Run::start(\@cmd, '>', \$out, '2>', \$err);
	return { h => $h, out => \$out, err => \$err, cmd => "@cmd" };
}

# finish_pgbench($handle) -> true when pgbench exited with 0 (diag otherwise).
sub finish_pgbench
{
	my ($pb) = @_;
	eval { $pb->{h}->finish; };
	my $rc = $@ ? -1 : $pb->{h}->result(0);
	if ($rc != 0)
	{
		diag "pgbench failed ($rc): ${ $pb->{err} }";
	}
	return $rc == 0;
}

# sqlstate_of($node, $sql) -> ($sqlstate or '' on success, stderr)
sub sqlstate_of
{
	my ($node, $sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql");
	return ('', $err) if $ret == 0;
	return ($err =~ /ERROR:\s+([0-9A-Z]{5}):/ ? $1 : 'unknown', $err);
}

# The commit time of the transaction that wrote a row, in UTC, as the
# contract renders timestamps: ('YYYY-MM-DDTHH:MI:SS.ffffff+00:00',
# the same without a fraction when it is 0).  $where selects one row.
sub utc_commit_time
{
	my ($node, $table, $where) = @_;
	my $t = $node->safe_psql('postgres',
		q{SELECT to_char(pg_xact_commit_timestamp(xmin) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')}
		  . " FROM $table WHERE $where");
	my $short = $t;
	$short =~ s/\.000000\+00:00$/+00:00/;
	return ($t, $short);
}

# count_records_raw($dir, $stream_id [, $re_files]) -> (records, files,
# max records in a file, \%per_file): counts RECORD lines of a stream in the
# change files without decoding JSON (a regex on the raw line).
sub count_records_raw
{
	my ($dir, $sid, $files_re) = @_;
	$files_re = $CDC_NAME_RE unless $files_re;
	my ($n, $files, $max, %per) = (0, 0, 0);
	my $rec = qr/"type"\s*:\s*"RECORD"/;
	my $st = qr/"stream"\s*:\s*"\Q$sid\E"/;
	foreach my $name (list_dir($dir))
	{
		next unless $name =~ $files_re;
		open(my $fh, '<:raw', "$dir/$name") or die "could not open $dir/$name: $!";
		my $c = 0;
		while (my $line = <$fh>)
		{
			$c++ if $line =~ $rec && $line =~ $st;
		}
		close $fh;
		$files++;
		$n += $c;
		$per{$name} = $c;
		$max = $c if $c > $max;
	}
	return ($n, $files, $max, \%per);
}

# A JSON number holding a non-negative integer (an LSN in a bookmark).
sub is_lsn_number
{
	my ($v) = @_;
	return 0 unless defined $v;
	my $r = ref $v;
	return "$v" =~ /^\d+$/ if $r eq 'Math::BigInt';
	return $r eq '' && _is_number($v) && "$v" =~ /^\d+$/;
}

# Problems of one change batch file as strings (empty when fine):
# check_batch_file(), plus: a SCHEMA of a stream precedes its first RECORD
# in the file; an upsert RECORD has exactly the properties of the latest
# SCHEMA of its stream (as a set; _sdc_* included); a delete RECORD
# (_sdc_deleted_at not null) only properties of it; "_sdc_deleted_at" is
# declared and present in every RECORD; exactly one STATE (the last line).
sub check_cdc_batch
{
	my ($batch) = @_;
	my @problems = check_batch_file($batch);
	my %schema;
	my $i = 0;
	my $states = 0;
	foreach my $m (@{ $batch->{messages} })
	{
		$i++;
		next unless ref $m eq 'HASH';
		my $t = $m->{type} // '';
		my $where = "$batch->{name}:$i";
		if ($t eq 'SCHEMA')
		{
			my $props = $m->{schema}{properties} // {};
			$schema{ $m->{stream} } = $props;
			push @problems, "$where: SCHEMA of $m->{stream} does not declare _sdc_deleted_at"
			  unless $props->{_sdc_deleted_at};
		}
		elsif ($t eq 'RECORD')
		{
			my $props = $schema{ $m->{stream} // '' };
			if (!$props)
			{
				push @problems, "$where: RECORD of $m->{stream} before any SCHEMA of it in the file";
				next;
			}
			my $r = $m->{record};
			if (!exists $r->{_sdc_deleted_at})
			{
				push @problems, "$where: RECORD without _sdc_deleted_at";
				next;
			}
			my @rk = sort keys %$r;
			my @pk = sort keys %$props;
			if (defined $r->{_sdc_deleted_at})
			{
				my @unknown = grep { !exists $props->{$_} } @rk;
				push @problems, "$where: delete RECORD keys not in the SCHEMA: @unknown" if @unknown;
			}
			elsif ("@rk" ne "@pk")
			{
				push @problems, "$where: RECORD keys (@rk) differ from the latest SCHEMA's properties (@pk)";
			}
		}
		elsif ($t eq 'STATE')
		{
			$states++;
		}
	}
	push @problems, "$batch->{name}: $states STATE messages (want 1)" unless $states == 1;
	return @problems;
}

# server_up($node [, $timeout]): waits until the server answers (after a
# crash it is in recovery for a moment).  True when it does.
sub server_up
{
	my ($node, $timeout) = @_;
	return poll_until('the server to answer', $timeout // 60,
		sub { ($node->psql('postgres', 'SELECT 1'))[0] == 0 });
}

# stream_row_wait($node, $stream): the egress_streams row as a hash, after
# waiting for the server to answer; {} when the stream does not exist.
sub stream_row_wait
{
	my ($node, $stream) = @_;
	server_up($node);
	return stream_row($node, $stream) // {};
}

# no_crash_since($node, $log_offset, $label): one test: no server process
# died of a signal since the offset (shows the postmaster's lines).
sub no_crash_since
{
	my ($node, $offset, $label) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $log = slurp_file($node->logfile, $offset);
	my @lines = grep { /terminated by signal|Failed process was running/ } split /\n/, $log;
	ok(!@lines, $label // 'no server process crashed') or diag join("\n", @lines);
	return !@lines;
}


# The every-type table of 002 and 008: a value for every row of singer-format.md,
# created with a session time zone far from UTC (values must come out in UTC).
# Returns its column names in order.
sub every_type_table
{
	my ($node) = @_;

	$node->safe_psql('postgres', q{ALTER DATABASE postgres SET TimeZone = 'Pacific/Chatham'});
	# a heredoc: no Perl escape processing inside the SQL
	$node->safe_psql('postgres', <<'SQL');
CREATE EXTENSION hstore;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TABLE t (
	id			integer PRIMARY KEY,
	c_int2		smallint,
	c_int4		integer,
	c_int8		bigint,
	c_num		numeric(12,2),
	c_numu		numeric,
	c_real		real,
	c_dbl		double precision,
	c_bool		boolean,
	c_bit		bit(1),
	c_text		text,
	c_vc		varchar(10),
	c_ch		char(5),
	c_uuid		uuid,
	c_inet		inet,
	c_enum		mood,
	c_date		date,
	c_ts		timestamp,
	c_tstz		timestamptz,
	c_time		time,
	c_timetz	timetz,
	c_json		json,
	c_jsonb		jsonb,
	c_hstore	hstore,
	c_intarr	integer[],
	c_txtarr	text[],
	c_intv		interval,
	c_bytea		bytea,
	c_point		point,
	c_dom		posint,
	c_nn		text NOT NULL
);
INSERT INTO t VALUES
(1, -32768, 2147483647, -9223372036854775808,
 1234567890.12, 12345678901234.56789012345678901234567890, 1.1, 0.30000000000000004,
 true, B'1', E'caf\u00e9 "q" \\ back\nnew\ttab \U0001F600 /', 'abc', 'ab',
 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '192.168.0.1/24', 'happy',
 '2024-01-15', '2024-01-15 13:45:30.123456', '2024-01-15 13:45:30.5+02',
 '13:45:30.123456', '13:45:30.654321+02',
 '{"a": [1, 2.50, "x"], "b": null}', '{"k": {"n": 12345678901234567890.5}, "t": true}',
 'a=>1, b=>NULL, "c d"=>"x\"y"', '{1,NULL,3}', '{{a,b},{"c,d",NULL}}',
 '1 year 2 months 3 days 04:05:06.5', '\x0102ff', '(1.5,-2)', 42, 'required'),
(2, 32767, -2147483648, 9223372036854775807,
 'NaN', 'Infinity', 'NaN', 'Infinity',
 false, B'0', '', 'ten chars!', 'abcde',
 '00000000-0000-0000-0000-000000000000', '::1', 'sad',
 'infinity', '-infinity', 'infinity',
 '08:00:00', '23:30:00-03',
 '"just a string"', '[1, "two", null]',
 '', '{}', '{}',
 '2 hours 30 minutes', '\x', '(0,0)', 1, 'x'),
(3, 0, 0, 0,
 -0.50, '-Infinity', '-Infinity', 'NaN',
 true, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL,
 '0044-03-15 BC', 'infinity', '-infinity',
 NULL, NULL,
 '42', '"s"',
 NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, 'three'),
(4, NULL, NULL, NULL,
 NULL, -0.000001000, -1.5e-10, 1e300,
 NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL,
 '-infinity', '0001-06-01 12:00:00 BC', '0010-01-01 00:00:00+00 BC',
 NULL, NULL,
 NULL, NULL,
 NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, 'four'),
(5, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL,
 '12345-06-07', '10000-01-01 00:00:00', '9999-12-31 23:00:00-05',
 NULL, NULL,
 NULL, NULL,
 NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, 'five'),
(6, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, 'only');
SQL
	return qw(id c_int2 c_int4 c_int8 c_num c_numu c_real c_dbl c_bool c_bit
	  c_text c_vc c_ch c_uuid c_inet c_enum c_date c_ts c_tstz c_time c_timetz
	  c_json c_jsonb c_hstore c_intarr c_txtarr c_intv c_bytea c_point c_dom c_nn);
}


# voluntary context switches of a process so far: how often it woke up
sub wakeups
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/status") or return undef;
	my ($n) = map { /^voluntary_ctxt_switches:\s+(\d+)/ ? $1 : () } <$fh>;
	close $fh;
	return $n;
}

# user + system CPU ticks of a process so far
sub cpu_ticks
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/stat") or return undef;
	my $stat = <$fh>;
	close $fh;
	$stat =~ s/^.*\)\s+//;
	my @f = split /\s+/, $stat;
	return $f[11] + $f[12];    # utime, stime (fields 14 and 15)
}


# ---------------------------------------------------------------------------
# Replaying large destinations in SQL (wave 3: backfill tests 101, 102)
# ---------------------------------------------------------------------------
#
# mirror() decodes every line with JSON::PP: minutes for millions of
# records.  replay_sql() loads the batch files into the node itself (COPY of
# each line as text, in delivery order) and builds the same Singer target
# there with jsonb: the last RECORD of each key wins, a RECORD with
# "_sdc_deleted_at" set deletes it, an ACTIVATE_VERSION drops what older
# versions wrote before it.  The files are read by the server: they must be
# readable by its user (the node's own output directories are).

push @EXPORT, qw(replay_files replay_sql replay_check);

# replay_files($dir, $stream_name) -> paths in delivery order: the stream's
# snapshot files <stream>-<version>-<NNNNNN>.jsonl (by version, number)
# first, then every change file of the directory (cdc_batches order).  Names
# only: nothing is decoded.
sub replay_files
{
	my ($dir, $stream) = @_;
	my (@sync, @cdc);
	foreach my $name (list_dir($dir))
	{
		if (defined $stream && $name =~ /^\Q$stream\E-(\d+)-(\d{6})\.jsonl$/)
		{
			push @sync, [ $name, $1, $2 ];
		}
		elsif ($name =~ $CDC_NAME_RE)
		{
			push @cdc, $name;
		}
	}
	@sync = sort { $a->[1] <=> $b->[1] || $a->[2] <=> $b->[2] } @sync;
	@cdc = sort { _cdc_cmp($a, $b) } @cdc;
	return map { "$dir/$_" } ((map { $_->[0] } @sync), @cdc);
}

# replay_sql($node, prefix => 'rp', files => [paths in order], sid =>
# 'public-t', relation => 't', key => ['id']) -> hash of results; or, for
# several streams over one load of the files, streams => { name => { sid,
# relation, key } } -> { name => hash of results }.  render => 'to_jsonb'
# (per stream) builds the table's side with to_jsonb() instead of
# egress_preview_record(), several times faster on millions of rows: for
# tables of integer and text columns only, which both render alike.  Leaves these tables for
# further queries (replaced by the next call with the same prefix; <s> is
# <prefix> for one stream, <prefix>_<name> for several):
#   <prefix>_files (f, name, mtime)         the files, f = their order
#   <s>_rec (f, ord, v, r, del, initial, k) the stream's RECORDs (ord: position
#                                           in delivery order, comparable
#                                           between streams); initial:
#                                           "_sdc_lsn" present and null (an
#                                           initial-sync row, with debug_lsn)
#   <s>_act (f, ord, v)                     the stream's ACTIVATE_VERSIONs
#   <s>_mirror (k, r), <s>_table (k, r)     target state / table rows,
#                                           r without "_sdc_*" members
# Results: table_rows mirror_rows missing extra diff (counts), examples
# (up to 5 strings), records initial deletes, dup_initial (initial RECORDs
# of a key beyond its first), dup_keys, dup_max (most initial RECORDs of one
# key), versions (distinct RECORD versions, sorted), activations (versions of
# the ACTIVATE_VERSIONs in order), files, messages, bad_files (files whose
# first message is not SCHEMA or last not STATE).
sub replay_sql
{
	my ($node, %o) = @_;
	my $p = $o{prefix} // 'rp';
	my @files = @{ $o{files} };
	my %streams =
	  $o{streams}
	  ? map { ($_ => { %{ $o{streams}{$_} }, t => "${p}_$_" }) } keys %{ $o{streams} }
	  : ('' => { sid => $o{sid}, relation => $o{relation}, key => $o{key}, render => $o{render}, t => $p });
	my @names = sort keys %streams;
	my $keyexpr = sub {
		my ($x, $key) = @_;
		return 'concat_ws(E\'\\x1f\', ' . join(', ', map { "$x->>" . sql_quote($_) } @$key) . ')';
	};
	# the _sdc_* members the contract defines (singer-format.md)
	my $strip = sub { return "($_[0] - '{_sdc_deleted_at,_sdc_lsn}'::text[])"; };
	my $drop = join(', ', "${p}_files", "${p}_lines", "${p}_count", "${p}_rec", "${p}_act",
		map { my $t = $streams{$_}{t}; ("${t}_mirror", "${t}_table") } @names);
	my $drop_views = join(', ', map { my $t = $streams{$_}{t}; ("${t}_rec", "${t}_act") } grep { $_ ne '' } @names);
	my $sql = qq{
SET client_min_messages = warning;
SET work_mem = '256MB';
@{[ $drop_views ? "DROP VIEW IF EXISTS $drop_views;" : '' ]}
DROP TABLE IF EXISTS $drop CASCADE;
CREATE UNLOGGED TABLE ${p}_files (f int PRIMARY KEY, name text, mtime float8);
CREATE UNLOGGED TABLE ${p}_lines (f int, ord bigserial, line text);
};
	my $i = 0;
	foreach my $path (@files)
	{
		$i++;
		my @st = Time::HiRes::stat($path) or die "could not stat \"$path\": $!";
		my ($name) = $path =~ m{([^/]+)$};
		$sql .= "INSERT INTO ${p}_files VALUES ($i, " . sql_quote($name) . ", $st[9]);\n";
		$sql .= "ALTER TABLE ${p}_lines ALTER f SET DEFAULT $i;\n";
		# every byte of a line as text: delimiter and quote are bytes JSON text never holds raw
		$sql .= "COPY ${p}_lines (line) FROM " . sql_quote($path)
		  . " WITH (FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02');\n";
	}
	my $sids = join(', ', map { sql_quote($streams{$_}{sid}) } @names);
	$sql .= qq{
-- every line parsed once (OFFSET 0: a subquery pulled up would parse it
-- again for every reference to j); the streams' RECORDs kept, with their key
CREATE UNLOGGED TABLE ${p}_rec AS
  SELECT f, ord, sid, (j->>'version')::numeric AS v, j->'record' AS r,
         j->'record'->>'_sdc_deleted_at' IS NOT NULL AS del,
         coalesce(j->'record' ? '_sdc_lsn' AND jsonb_typeof(j->'record'->'_sdc_lsn') = 'null', false) AS initial,
         CASE sid @{[ join(' ', map { 'WHEN ' . sql_quote($streams{$_}{sid}) . ' THEN ' . $keyexpr->("j->'record'", $streams{$_}{key}) } @names) ]} END AS k
    FROM (SELECT f, ord, j, j->>'stream' AS sid
            FROM (SELECT f, ord, line::jsonb AS j FROM ${p}_lines OFFSET 0) s0 OFFSET 0) s
   WHERE sid IN ($sids) AND j->>'type' = 'RECORD';
-- ACTIVATE_VERSIONs are few: found as text first
CREATE UNLOGGED TABLE ${p}_act AS
  SELECT f, ord, sid, v FROM (SELECT f, ord, j->>'stream' AS sid, j->>'type' AS type, (j->>'version')::numeric AS v
                                FROM (SELECT f, ord, line::jsonb AS j FROM ${p}_lines WHERE line LIKE '%ACTIVATE_VERSION%' OFFSET 0) s1) s2
   WHERE sid IN ($sids) AND type = 'ACTIVATE_VERSION';
CREATE UNLOGGED TABLE ${p}_count AS SELECT last_value AS n FROM ${p}_lines_ord_seq;
DROP TABLE ${p}_lines;
};
	foreach my $n (@names)
	{
		my ($t, $sid, $key) = ($streams{$n}{t}, sql_quote($streams{$n}{sid}), $streams{$n}{key});
		my $kt = $keyexpr->('x', $key);
		# the table's rows as pg_egress renders them, or (render => 'to_jsonb',
		# ten times faster) as to_jsonb does: the same for integers and text
		my $render =
		  ($streams{$n}{render} // '') eq 'to_jsonb'
		  ? 'to_jsonb(egress_tap_row)'
		  : 'egress_preview_record(egress_tap_row)::jsonb';
		$sql .= ($n eq '' ? '' : qq{
CREATE VIEW ${t}_rec AS SELECT f, ord, v, r, del, initial, k FROM ${p}_rec WHERE sid = $sid;
CREATE VIEW ${t}_act AS SELECT f, ord, v FROM ${p}_act WHERE sid = $sid;
}) . qq{
-- the last RECORD of each key (hashed, not sorted)
CREATE UNLOGGED TABLE ${t}_mirror AS
  SELECT l.k, @{[ $strip->('l.r') ]} AS r
    FROM (SELECT max(ord) AS ord FROM ${t}_rec GROUP BY k) x JOIN ${t}_rec l ON l.ord = x.ord
   WHERE NOT l.del AND NOT EXISTS (SELECT 1 FROM ${t}_act a WHERE a.ord > l.ord AND a.v > l.v);
CREATE UNLOGGED TABLE ${t}_table AS
  SELECT $kt AS k, @{[ $strip->('x') ]} AS r
    FROM (SELECT $render AS x FROM $streams{$n}{relation} egress_tap_row OFFSET 0) s;
};
	}
	# EGRESS_REPLAY_TIMING=1: the time of each statement (other than COPY), noted
	if ($ENV{EGRESS_REPLAY_TIMING})
	{
		my $t = $node->safe_psql('postgres', "\\timing on\n$sql", timeout => 900);
		my @stmts = map { s/^(\s|--[^\n]*\n)+//r } grep { /\S/ } split /;\n/, $sql;
		my @times = $t =~ /^Time: ([0-9.]+) ms/mg;
		my $load_ms = 0;
		for my $i (0 .. $#stmts)
		{
			my $ms = $times[$i] // 0;
			if ($stmts[$i] =~ /^(COPY|INSERT|ALTER|SET)/) { $load_ms += $ms; next; }
			note sprintf('replay_sql: %7.1f s  %s', $ms / 1000, substr($stmts[$i] =~ s/\s+/ /gr, 0, 100));
		}
		note sprintf('replay_sql: %7.1f s  COPY of %d files', $load_ms / 1000, scalar @files);
	}
	else
	{
		$node->safe_psql('postgres', $sql, timeout => 900);
	}

	my $row = sub {
		my ($q) = @_;
		return split /\|/, $node->safe_psql('postgres', $q, timeout => 600), -1;
	};
	my ($nfiles, $nmsg) = $row->("SELECT (SELECT count(*) FROM ${p}_files), (SELECT n FROM ${p}_count)");
	# first and last line of each file, read here: SCHEMA ... STATE
	my @bad;
	foreach my $path (@files)
	{
		open(my $fh, '<:raw', $path) or die "could not open \"$path\": $!";
		my $first = <$fh> // '';
		my $size = -s $fh;
		seek($fh, $size > 65536 ? $size - 65536 : 0, 0);
		local $/;
		my @tail = split /\n/, <$fh> // '';
		close $fh;
		my $last = @tail ? $tail[-1] : '';
		push @bad, ($path =~ m{([^/]+)$})[0]
		  unless $first =~ /^\{"type":"SCHEMA"/ && $last =~ /^\{"type":"STATE"/;
	}
	my %res;
	foreach my $n (@names)
	{
		my $t = $streams{$n}{t};
		my %r = (files => $nfiles, messages => $nmsg, bad_files => [@bad]);
		@r{qw(table_rows mirror_rows missing extra diff)} = $row->(qq{
SELECT (SELECT count(*) FROM ${t}_table), (SELECT count(*) FROM ${t}_mirror),
       count(*) FILTER (WHERE m.k IS NULL), count(*) FILTER (WHERE t.k IS NULL),
       count(*) FILTER (WHERE m.r <> t.r)
  FROM ${t}_table t FULL JOIN ${t}_mirror m ON m.k = t.k});
		my $ex = $r{missing} + $r{extra} + $r{diff} == 0 ? '' : $node->safe_psql('postgres', qq{
SELECT CASE WHEN m.k IS NULL THEN 'missing from the destination: ' || t.k || ' ' || t.r::text
            WHEN t.k IS NULL THEN 'extra at the destination: ' || m.k || ' ' || m.r::text
            ELSE 'key ' || t.k || E'\\n   destination: ' || m.r::text || E'\\n   table:       ' || t.r::text END
  FROM ${t}_table t FULL JOIN ${t}_mirror m ON m.k = t.k
 WHERE m.k IS NULL OR t.k IS NULL OR m.r <> t.r
 ORDER BY coalesce(t.k, m.k) LIMIT 5}, timeout => 600);
		$r{examples} = [ grep { $_ ne '' } split /\n(?!   )/, $ex ];
		my $versions;
		(@r{qw(records initial deletes)}, $versions) = $row->(
			"SELECT count(*), count(*) FILTER (WHERE initial), count(*) FILTER (WHERE del), string_agg(DISTINCT v::text, ',') FROM ${t}_rec");
		$r{versions} = [ sort { $a <=> $b } grep { $_ ne '' } split /,/, $versions // '' ];
		@r{qw(dup_initial dup_keys dup_max)} = $row->(qq{
SELECT coalesce(sum(n - 1), 0), count(*), coalesce(max(n), 0)
  FROM (SELECT k, count(*) AS n FROM ${t}_rec WHERE initial GROUP BY k HAVING count(*) > 1) d});
		$r{activations} = [ grep { $_ ne '' } split /\n/,
			$node->safe_psql('postgres', "SELECT v FROM ${t}_act ORDER BY ord") ];
		$res{$n} = \%r;
	}
	return $o{streams} ? \%res : $res{''};
}

# replay_check($label, $result of replay_sql): one test, true when the
# destination's state equals the table row for row; shows the first
# differences.
sub replay_check
{
	my ($label, $r) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $ok = ok($r->{missing} == 0 && $r->{extra} == 0 && $r->{diff} == 0,
		"$label: destination == table ($r->{table_rows} rows in the table, $r->{mirror_rows} at the destination)");
	if (!$ok)
	{
		diag "$r->{missing} rows missing from the destination, $r->{extra} extra there, $r->{diff} with other values";
		diag $_ foreach @{ $r->{examples} };
	}
	return $ok;
}

# ---------------------------------------------------------------------------
# postgres:// destinations (issue 15): a target cluster and its tables
# ---------------------------------------------------------------------------

push @EXPORT, qw(create_target_node target_access pg_destination_url
  add_pg_destination target_rows target_values target_columns target_psql);

our $TARGET_USER = 'loader';
our $TARGET_PASSWORD = 'l0ad-me s3cret';
our $TARGET_DB = 'analytics';

# target_access($node, user => 'loader', password => ..., dbname =>
# 'analytics', owner => 1): on a node (a target cluster, or the source
# cluster itself for a same-cluster load) creates the LOGIN role with a
# password (scram-sha-256, the PostgreSQL 15 default) and the database,
# owned by that role (so it may CREATE there and, PostgreSQL 15, in its
# schema public), and puts `host all all 127.0.0.1/32 scram-sha-256` FIRST
# in pg_hba.conf (initdb -A trust wrote trust lines for 127.0.0.1 after it;
# the tests' own psql keep the Unix socket, still trust), then reloads.
# The node must listen on 127.0.0.1 (listen_addresses) for the URL to work.
# Returns (url, options JSON text with the password).  Idempotent per
# role/database name: a second call for another database adds it only.
sub target_access
{
	my ($node, %o) = @_;
	my $user = $o{user} // $TARGET_USER;
	my $password = $o{password} // $TARGET_PASSWORD;
	my $db = $o{dbname} // $TARGET_DB;
	my $hba = $node->data_dir . '/pg_hba.conf';
	my $line = "host all all 127.0.0.1/32 scram-sha-256\n";
	open(my $fh, '<', $hba) or die "could not open \"$hba\": $!";
	my $old = do { local $/; <$fh> };
	close $fh;
	write_file($hba, "# postgres:// destinations of the tests: a password over TCP\n$line$old")
	  unless $old =~ /\A# postgres:\/\/ destinations of the tests/;
	my $exists = $node->safe_psql('postgres',
		'SELECT count(*) FROM pg_roles WHERE rolname = ' . sql_quote($user));
	$node->safe_psql('postgres',
		  "SET password_encryption = 'scram-sha-256';\n"
		. ($exists eq '0' ? "CREATE ROLE \"$user\" LOGIN;\n" : '')
		. "ALTER ROLE \"$user\" PASSWORD " . sql_quote($password) . ";\n");
	my $dbexists = $node->safe_psql('postgres',
		'SELECT count(*) FROM pg_database WHERE datname = ' . sql_quote($db));
	$node->safe_psql('postgres', "CREATE DATABASE \"$db\" OWNER \"$user\" TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C'")
	  if $dbexists eq '0';
	$node->reload;
	return (pg_destination_url($node, user => $user, dbname => $db),
		JSON::PP->new->canonical->encode({ password => $password }));
}

# postgres://<user>@127.0.0.1:<port>/<dbname> of a node.
sub pg_destination_url
{
	my ($node, %o) = @_;
	return sprintf('postgres://%s@127.0.0.1:%d/%s',
		$o{user} // $TARGET_USER, $node->port, $o{dbname} // $TARGET_DB);
}

# create_target_node($name, conf => "extra postgresql.conf lines", user =>,
# password =>, dbname =>) -> ($node, $url, $options_json): a second cluster
# of the same binaries (no pg_egress in it), listening on 127.0.0.1 as well
# as on its Unix socket, with target_access() done: role "loader" with a
# password, database "analytics" it owns, scram-sha-256 over TCP.  The
# options JSON holds only {"password": ...}: merge more with
# add_pg_destination.
sub create_target_node
{
	my ($name, %o) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
	$node->append_conf('postgresql.conf', qq{
listen_addresses = '127.0.0.1'
max_connections = 40
shared_buffers = 16MB
password_encryption = 'scram-sha-256'
});
	$node->append_conf('postgresql.conf', $o{conf}) if defined $o{conf};
	$node->start;
	my ($url, $json) = target_access($node, %o);
	return ($node, $url, $json);
}

# add_pg_destination($source_node, $name, $url, $options) with $options a
# hash reference (merged into {"password": TARGET_PASSWORD} unless it has its
# own password; undef values drop a key) or a JSON text taken as is.
sub add_pg_destination
{
	my ($node, $name, $url, $options) = @_;
	my $json = $options;
	if (!defined $options || ref $options eq 'HASH')
	{
		my %o = (password => $TARGET_PASSWORD, %{ $options // {} });
		delete $o{$_} foreach grep { !defined $o{$_} } keys %o;
		$json = JSON::PP->new->canonical->encode(\%o);
	}
	$node->safe_psql('postgres',
		'SELECT egress_add_destination(' . sql_quote($name) . ', ' . sql_quote($url)
		  . ', ' . sql_quote($json) . '::jsonb)');
	return;
}

# target_psql($node, $sql, dbname => 'analytics') -> ($ret, $stdout,
# $stderr) in UTC with ISO dates (the default DateStyle), so that
# timestamps read the same whatever the node's TimeZone.
sub target_psql
{
	my ($node, $sql, %o) = @_;
	return $node->psql($o{dbname} // $TARGET_DB,
		"SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 1;\n$sql");
}

# target_rows($node, $relation, columns => [names] | '*', dbname =>
# 'analytics', where => 'SQL condition') -> the rows of a target table as
# text, one line per row, sorted (by Perl, bytewise): each row as COPY's
# text format writes it with delimiter '|' (so '\n', '\t', '\\' and '\|'
# inside values are escaped and a row is always one line), NULL as
# '<null>'; '' when the table is empty, undef when the query fails (no such
# table yet).  $relation is SQL as written (quote it: '"public"."t"').
# columns '*' is every column; by default every column whose name does not
# start with _sdc_ (their values are times of the load).  Times in UTC.
sub target_rows
{
	my ($node, $relation, %o) = @_;
	my $list = _target_column_list($node, $relation, %o);
	return undef unless defined $list;
	my ($ret, $out, $err) = target_psql($node,
		"COPY (SELECT $list FROM $relation"
		  . (defined $o{where} ? " WHERE $o{where}" : '')
		  . q{) TO STDOUT WITH (DELIMITER '|', NULL '<null>')}, %o);
	return undef if $ret != 0;
	return join("\n", sort split /\n/, $out);
}

# target_values($node, $relation, key => 'id', columns => ..., dbname =>,
# where =>) -> { <key text> => { column => text output (UTC) or undef } }
# of a target table, every value as the server's text output of the column
# (col::text), read through JSON (exact, any characters); undef when the
# query fails.  Columns as target_rows (the key column must be among them).
sub target_values
{
	my ($node, $relation, %o) = @_;
	my $key = $o{key} // 'id';
	my $list = _target_column_list($node, $relation, %o, names => 1);
	return undef unless defined $list;
	my $obj = join(', ', map { sql_quote($_) . ', (x.' . _qi($_) . ')::text' } @$list);
	my ($ret, $out, $err) = target_psql($node,
		"SELECT coalesce(json_agg(json_build_object($obj)), '[]') FROM $relation x"
		  . (defined $o{where} ? " WHERE $o{where}" : ''), %o);
	return undef if $ret != 0;
	my %rows;
	foreach my $r (@{ json_decode($out, "rows of $relation") })
	{
		$rows{ $r->{$key} // '<null>' } = $r;
	}
	return \%rows;
}

sub _qi { return '"' . ($_[0] =~ s/"/""/gr) . '"'; }

# the SELECT list of target_rows / target_values (names => 1: the names)
sub _target_column_list
{
	my ($node, $relation, %o) = @_;
	my $cols = $o{columns};
	my @names;
	if (defined $cols && ref $cols eq 'ARRAY')
	{
		@names = @$cols;
	}
	else
	{
		my $all = defined $cols && $cols eq '*';
		my ($ret, $out) = target_psql($node, qq{
SELECT attname FROM pg_attribute
 WHERE attrelid = '$relation'::regclass AND attnum > 0 AND NOT attisdropped
   @{[ $all ? '' : q{AND attname NOT LIKE '\\_sdc\\_%'} ]} ORDER BY attnum}, %o);
		return undef if $ret != 0 || $out eq '';
		@names = split /\n/, $out;
	}
	return \@names if $o{names};
	return join(', ', map { _qi($_) } @names);
}

# target_columns($node, $schema, $table, dbname => 'analytics') -> ordered
# list of "name type" (format_type, e.g. "c_num numeric", "c_ts timestamp
# with time zone") of the table's live columns; () when it does not exist.
sub target_columns
{
	my ($node, $schema, $table, %o) = @_;
	my ($ret, $out) = target_psql($node, q{
SELECT a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = } . sql_quote($schema) . ' AND c.relname = ' . sql_quote($table) . q{
   AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum}, %o);
	return () if $ret != 0 || $out eq '';
	return split /\n/, $out;
}

1;
