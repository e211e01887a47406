
# LOG_BASED initial sync under concurrent writes, and the hand-over to the
# change stream: a table of 20,000 rows written by pgbench (inserts,
# updates, deletes on random keys) while the stream is added; then a
# second LOG_BASED stream added to the same destination while the first
# streams and both tables are written.  What a Singer target would hold
# (mirror: initial-sync files, then change files in LSN order) must equal
# the tables.  Also the Singer shapes of LOG_BASED: SCHEMA
# (bookmark_properties ["lsn"], _sdc_deleted_at and _sdc_lsn declared),
# initial-sync RECORDs with "_sdc_deleted_at": null, STATE bookmarks.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use B ();
use JSON::PP;
use EgressTest;

my $node = create_node('cdc_initial', cdc => 1);
my $out = new_outdir($node, 'cdc');
my $log_start = -s $node->logfile;

$node->safe_psql(
	'postgres', q{
CREATE TABLE t (id integer PRIMARY KEY, v text NOT NULL, n integer NOT NULL DEFAULT 0);
INSERT INTO t SELECT i, md5(i::text), 0 FROM generate_series(1, 20000) i;
CREATE TABLE t2 (id integer PRIMARY KEY, w integer NOT NULL, ts timestamptz);
INSERT INTO t2 SELECT i, 0, '2024-01-01 00:00:00+00' FROM generate_series(1, 3000) i;
});
add_destination($node, 'cdc', $out);

# One pgbench transaction = 3 autocommit statements on t and one
# 3-statement transaction on t2 (row locks always taken in an order that
# cannot deadlock between two clients).
my $script = <<'PGB';
\set a random(1, 30000)
\set b random(1, 20000)
\set c random(1, 20000)
\set d random(1, 3000)
INSERT INTO t (id, v, n) VALUES (:a, md5(random()::text), 1) ON CONFLICT (id) DO UPDATE SET v = excluded.v, n = t.n + 1;
UPDATE t SET v = md5(random()::text), n = n + 1 WHERE id = :b;
DELETE FROM t WHERE id = :c;
BEGIN;
UPDATE t2 SET w = w + 1, ts = clock_timestamp() WHERE id = :d;
INSERT INTO t2 (id, w, ts) VALUES (:d + 3000, 1, clock_timestamp()) ON CONFLICT (id) DO UPDATE SET w = t2.w + 1;
DELETE FROM t2 WHERE id = :d + 1;
COMMIT;
PGB

sub writers_running
{
	my ($ret, $out) = $node->psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench'});
	return $ret == 0 ? $out : 0;
}

# ---------------------------------------------------------------------------
# Phase 1: add stream s1 (table t) while pgbench writes
# ---------------------------------------------------------------------------
my $pb = start_pgbench($node, 'writer1', $script, '-c', '2', '-t', '1500', '-R', '250');
ok( poll_until(
		'the writer to have changed t', 60,
		sub { $node->safe_psql('postgres', 'SELECT count(*) FROM t WHERE n > 0') > 0 }),
	'phase 1: the writer is writing');
$node->safe_psql('postgres',
	q{SELECT egress_add_stream('s1', 't', method => 'LOG_BASED', destination => 'cdc', options => '{"debug_lsn": true}')}
);
my $added_while = writers_running();
wait_stream_state($node, 's1', 'streaming');
my $running_at_streaming = writers_running();
diag "phase 1: pgbench clients running when s1 was added: $added_while, when it reached streaming: $running_at_streaming";
ok(finish_pgbench($pb), 'phase 1: pgbench completed');
wait_caught_up($node, 's1');

my $row = stream_row($node, 's1');
is($row->{method}, 'LOG_BASED', 'egress_streams.method');
like("$row->{version}", qr/^\d{13}$/, 'egress_streams.version is epoch ms');
my $v1 = "$row->{version}";
is($row->{slot_name}, 'pg_egress_cdc', 'egress_streams.slot_name is the default slot');

my %info1;
compare_states(mirror($out, 'public-t', ['id'], \%info1), table_state($node, 't', ['id']),
	'phase 1, s1');
diag "phase 1 mirror of public-t: " . join(', ', map { "$_=" . ($info1{$_} // 'undef') } sort keys %info1);
is("$info1{sync_version}", $v1, 'phase 1: the initial sync files carry egress_streams.version');

# The hand-over happened under writes: the snapshot saw some of the
# writer's changes and the change stream carried later ones.
my @s1_sync = sync_batches($out, 's1');
my @snap = records_of(@s1_sync);
my $snap_changed = grep { $_->{record}{n} > 0 } @snap;
ok($snap_changed > 0, "phase 1: the initial snapshot holds rows the writer changed ($snap_changed)");
cmp_ok($info1{cdc_records}, '>', 0, "phase 1: the change stream carried changes of t ($info1{cdc_records} records)");

# ---------------------------------------------------------------------------
# Phase 2: add stream s2 (table t2) while s1 streams and both are written
# ---------------------------------------------------------------------------
my $w0 = $node->safe_psql('postgres', 'SELECT sum(w) FROM t2');
my $files_before = scalar(cdc_batches($out));
$pb = start_pgbench($node, 'writer2', $script, '-c', '2', '-t', '1500', '-R', '250');
ok( poll_until(
		'the writer to have changed t2', 60,
		sub { $node->safe_psql('postgres', 'SELECT sum(w) FROM t2') > $w0 }),
	'phase 2: the writer is writing');
ok( poll_until(
		'a new change file of s1 while the writer runs', 60,
		sub { scalar(cdc_batches($out)) > $files_before }),
	'phase 2: s1 is streaming the writer\'s changes');
$node->safe_psql('postgres',
	q{SELECT egress_add_stream('s2', 't2', method => 'LOG_BASED', destination => 'cdc', options => '{"debug_lsn": true}')}
);
$added_while = writers_running();
wait_stream_state($node, 's2', 'streaming');
$running_at_streaming = writers_running();
diag "phase 2: pgbench clients running when s2 was added: $added_while, when it reached streaming: $running_at_streaming";
ok(finish_pgbench($pb), 'phase 2: pgbench completed');
wait_caught_up($node, 's1');
wait_caught_up($node, 's2');

my (%i1, %i2);
compare_states(mirror($out, 'public-t', ['id'], \%i1), table_state($node, 't', ['id']), 'phase 2, s1');
compare_states(mirror($out, 'public-t2', ['id'], \%i2), table_state($node, 't2', ['id']), 'phase 2, s2');
diag "phase 2 mirror of public-t2: " . join(', ', map { "$_=" . ($i2{$_} // 'undef') } sort keys %i2);
cmp_ok($i2{cdc_records}, '>', 0, "phase 2: the change stream carried changes of t2 ($i2{cdc_records} records)");
my $v2 = "" . (stream_row_wait($node, 's2')->{version} // '');

# ---------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------
my @cdc = cdc_batches($out);
my @all = (sync_batches($out), @cdc);
is_deeply([ tmp_files($out) ], [], 'no temporary files left');
is_deeply([ grep { $_->{name} !~ /^(s1|s2)-\d+-\d{6}\.jsonl$/ } sync_batches($out) ], [],
	'initial-sync files are named <stream>-<version>-<NNNNNN>.jsonl');
is_deeply([ grep { !/^\./ && !/^(s1|s2)-\d+-\d{6}\.jsonl$/ && !(is_cdc_name($_) && /^cdc-/) } list_dir($out) ],
	[], 'every other file is a change file cdc-<16 hex>-<16 hex>[-NNNNNN].jsonl');

# SCHEMA of both streams, wherever it appears
my @schema_problems;
foreach my $m (messages_of_type('SCHEMA', @all))
{
	my $sid = $m->{stream};
	push @schema_problems, "$sid: bookmark_properties " . _j($m->{bookmark_properties})
	  unless ref $m->{bookmark_properties} eq 'ARRAY' && "@{ $m->{bookmark_properties} }" eq 'lsn';
	push @schema_problems, "$sid: key_properties " . _j($m->{key_properties})
	  unless ref $m->{key_properties} eq 'ARRAY' && "@{ $m->{key_properties} }" eq 'id';
	foreach my $sdc (qw(_sdc_deleted_at _sdc_lsn))
	{
		my $p = $m->{schema}{properties}{$sdc};
		my $types = $p && ref $p->{type} eq 'ARRAY' ? join(',', sort @{ $p->{type} }) : '';
		push @schema_problems, "$sid: $sdc declared as " . _j($p)
		  unless $types eq 'null,string' && ($sdc eq '_sdc_lsn' || ($p->{format} // '') eq 'date-time');
	}
}
is_deeply(\@schema_problems, [], 'every SCHEMA: bookmark_properties ["lsn"], key_properties ["id"], _sdc_deleted_at and _sdc_lsn declared');

sub _j
{
	my $s = eval { JSON::PP->new->canonical->allow_nonref->encode($_[0]) };
	return defined $s ? $s : 'undef';
}

# Initial-sync files of each stream
foreach my $s ([ 's1', 'public-t', $v1 ], [ 's2', 'public-t2', $v2 ])
{
	my ($name, $sid, $v) = @$s;
	my @files = grep { $_->{name} =~ /^\Q$name\E-\Q$v\E-/ } sync_batches($out, $name);
	ok(scalar(@files) >= 1, "$name: initial-sync files of version $v");
	next unless @files;
	is_deeply([ map { check_batch_file($_) } @files ], [], "$name: initial-sync files well formed");
	my @types = map { $_->{type} } map { @{ $_->{messages} } } @files;
	is_deeply([ @types[ 0, 1 ] ], [ 'SCHEMA', 'ACTIVATE_VERSION' ], "$name: starts with SCHEMA, ACTIVATE_VERSION");
	is_deeply([ @types[ -2, -1 ] ], [ 'ACTIVATE_VERSION', 'STATE' ], "$name: ends with ACTIVATE_VERSION, STATE");
	my @recs = records_of(@files);
	my @bad = grep { !exists $_->{record}{_sdc_deleted_at} || defined $_->{record}{_sdc_deleted_at} } @recs;
	is(scalar(@bad), 0, "$name: every initial-sync RECORD has \"_sdc_deleted_at\": null ("
		  . scalar(@recs) . ' records)');
	@bad = grep { !exists $_->{record}{_sdc_lsn} || defined $_->{record}{_sdc_lsn} } @recs;
	is(scalar(@bad), 0, "$name: every initial-sync RECORD has \"_sdc_lsn\": null (debug_lsn)");
	my %ids;
	my $dups = grep { $ids{ $_->{record}{id} }++ } @recs;
	is($dups, 0, "$name: no id twice in the snapshot");
	is(scalar(grep { "$_->{version}" ne $v } @recs), 0, "$name: snapshot RECORDs carry version $v");
	my $state = $files[-1]{messages}[-1];
	is($state->{value}{currently_syncing}, undef, "$name: last STATE has currently_syncing null");
	my $bm = $state->{value}{bookmarks}{$sid};
	is_deeply([ sort keys %{ $bm // {} } ], [qw(last_replication_method lsn version xmin)],
		"$name: initial-sync bookmark keys") or diag _j($bm);
	is($bm->{last_replication_method}, 'LOG_BASED', "$name: initial-sync bookmark is LOG_BASED");
	ok(is_lsn_number($bm->{lsn}), "$name: initial-sync bookmark lsn is a JSON integer") or diag _j($bm);
	is("$bm->{version}", $v, "$name: initial-sync bookmark version");
	ok(exists $bm->{xmin} && !defined $bm->{xmin}, "$name: initial-sync bookmark xmin null");

	# every change of the stream committed at or after the consistent point
	my $cp = $bm->{lsn};
	my @early = grep { $_->{stream} eq $sid && defined $_->{record}{_sdc_lsn} && $_->{record}{_sdc_lsn} < $cp }
	  records_of(@cdc);
	is(scalar(@early), 0, "$name: no change record committed before the snapshot's consistent point $cp");
}

# Change files
my @problems = map { check_cdc_batch($_) } @cdc;
is_deeply([ @problems[ 0 .. ($#problems < 19 ? $#problems : 19) ] ], [], 'change files: well formed ('
	  . scalar(@cdc) . ' files)');

my (@state_problems, %last_lsn, @rec_problems);
my $s2_seen = 0;
foreach my $b (@cdc)
{
	my @m = @{ $b->{messages} };
	my $state = $m[-1];
	next unless ref $state eq 'HASH' && ($state->{type} // '') eq 'STATE';
	my $bms = $state->{value}{bookmarks} // {};
	push @state_problems, "$b->{name}: currently_syncing not null" if defined $state->{value}{currently_syncing};
	my %max_lsn;
	foreach my $r (grep { ($_->{type} // '') eq 'RECORD' } @m)
	{
		my $sid = $r->{stream};
		my $lsn = $r->{record}{_sdc_lsn};
		push @rec_problems, "$b->{name}: $sid RECORD without a decimal _sdc_lsn"
		  unless defined $lsn && !ref $lsn && $lsn =~ /^\d+$/ && !_num($lsn);
		push @rec_problems, "$b->{name}: $sid RECORD version $r->{version}"
		  unless "$r->{version}" eq ($sid eq 'public-t' ? $v1 : $v2);
		push @rec_problems, "$b->{name}: time_extracted $r->{time_extracted}"
		  unless ($r->{time_extracted} // '') =~ /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/;
		my $d = $r->{record}{_sdc_deleted_at};
		if (defined $d)
		{
			push @rec_problems, "$b->{name}: _sdc_deleted_at $d"
			  unless $d =~ /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$/;
			my @k = sort grep { !/^_sdc_/ } keys %{ $r->{record} };
			push @rec_problems, "$b->{name}: delete RECORD with columns @k" unless "@k" eq 'id';
		}
		$max_lsn{$sid} = $lsn if defined $lsn && $lsn =~ /^\d+$/ && (!defined $max_lsn{$sid} || $lsn > $max_lsn{$sid});
	}
	$s2_seen = 1 if $max_lsn{'public-t2'};
	foreach my $sid ('public-t', ($s2_seen ? 'public-t2' : ()))
	{
		my $bm = $bms->{$sid};
		if (!$bm)
		{
			push @state_problems, "$b->{name}: no bookmark of $sid";
			next;
		}
		push @state_problems, "$b->{name}: $sid bookmark " . _j($bm)
		  unless join(',', sort keys %$bm) eq 'last_replication_method,lsn,version,xmin'
		  && $bm->{last_replication_method} eq 'LOG_BASED'
		  && is_lsn_number($bm->{lsn})
		  && "$bm->{version}" eq ($sid eq 'public-t' ? $v1 : $v2)
		  && !defined $bm->{xmin};
		next unless is_lsn_number($bm->{lsn});
		push @state_problems, "$b->{name}: $sid bookmark lsn $bm->{lsn} went back from $last_lsn{$sid}"
		  if defined $last_lsn{$sid} && $bm->{lsn} < $last_lsn{$sid};
		$last_lsn{$sid} = $bm->{lsn};
		push @state_problems, "$b->{name}: $sid bookmark lsn $bm->{lsn} < last commit LSN $max_lsn{$sid} in the file"
		  if defined $max_lsn{$sid} && $bm->{lsn} < $max_lsn{$sid};
	}
	# file name: first and last commit LSN of its records
	if (%max_lsn)
	{
		my @l = map { $_->{record}{_sdc_lsn} } grep { ($_->{type} // '') eq 'RECORD' } @m;
		my ($min, $max) = (undef, undef);
		foreach (@l) { next unless defined && /^\d+$/; $min = $_ if !defined $min || $_ < $min; $max = $_ if !defined $max || $_ > $max; }
		my ($first, $last) = cdc_name_lsns($b->{name});
		push @state_problems, "$b->{name}: records' commit LSNs are $min..$max"
		  unless defined $min && $first == $min && $last == $max;
	}
}
is_deeply([ @state_problems[ 0 .. ($#state_problems < 19 ? $#state_problems : 19) ] ], [],
	'change files: STATE bookmarks LOG_BASED {lsn (integer, never going back, >= the last commit LSN), version, xmin null}; file names give the first and last commit LSN');
is_deeply([ @rec_problems[ 0 .. ($#rec_problems < 19 ? $#rec_problems : 19) ] ], [],
	'change RECORDs: _sdc_lsn decimal string, version, time_extracted, deletes carry id + _sdc_deleted_at');

sub _num
{
	my ($v) = @_;
	my $flags = B::svref_2object(\$v)->FLAGS;
	return ($flags & (B::SVf_IOK | B::SVf_NOK)) && !($flags & B::SVf_POK);
}

diag 'wait_caught_up ended by: ' . join(', ', map { "$_ $EgressTest::caught_up_via{$_}" } sort keys %EgressTest::caught_up_via);

no_crash_since($node, $log_start, 'no server process crashed');

$node->stop;
done_testing();
