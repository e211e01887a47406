
# Differential test of the two decoders: one change script, two
# destinations with the same LOG_BASED streams, "dw" decoding with wal2json
# ({"decoder": "wal2json"}) and "dp" with pgoutput (the default).  Every
# message both write must be the same.
#
# The script: the every-type table (inserts of every value, updates, a key
# change, deletes), UPDATEs that change the primary key, DELETEs, REPLICA
# IDENTITY FULL with and without a primary key, REPLICA IDENTITY USING
# INDEX, TRUNCATE (of one table, and of two in one statement), a
# partitioned table (both partitions, a direct insert into a partition, a
# row moving between partitions, a partition created mid-stream),
# unchanged TOASTed values under REPLICA IDENTITY DEFAULT and FULL, DDL
# mid-stream (ADD COLUMN, DROP COLUMN, ALTER COLUMN TYPE, also inside a
# transaction between two changes; a REPLICA IDENTITY FULL delete of a row
# written before an ADD COLUMN ... DEFAULT), a transaction over several
# tables with a logical decoding message, a rolled back transaction and a
# rolled back subtransaction, two-phase commit (COMMIT PREPARED, ROLLBACK
# PREPARED), generated columns (STORED and IDENTITY), names that need
# quoting, types printed by their own output functions (reg*, money, xml,
# ranges, arrays of timestamps, ...).  (No change of a REPLICA IDENTITY DEFAULT row follows its
# TOAST-only update: the re-read of the unchanged value would see it or
# not depending on when each worker reads.)
#
# What is compared: the change files of each destination, read in delivery
# (name) order, as one sequence of messages, after these normalisations and
# nothing else:
#  - RECORD "time_extracted" is removed: the wall-clock time the batch was
#    started, different for two workers.
#  - "version" (RECORD, ACTIVATE_VERSION, STATE bookmarks) is replaced by
#    its ordinal per stream (v0 = the version of the initial sync, v1 = the
#    next one, ...): each destination's stream has its own initial version
#    (the time its initial sync started); the order of versions must match.
#  - STATE messages are left out of the sequence: where a batch ends (and
#    so where a STATE stands and which LSN its bookmarks hold) depends on
#    when each worker's flush interval ran out.  They are checked on their
#    own per destination: every file ends with one, with a bookmark of
#    every stream that had a record in it or an earlier file (the worker
#    leaves out streams it has not rendered yet in its session), LSNs
#    never going back, the last one at or after the last change of the
#    stream, and the version ordinal of the last record.
#  - A SCHEMA equal (byte for byte) to the previous SCHEMA of its stream
#    is left out: each file repeats the SCHEMA of every stream it holds, so
#    their number depends on the batch boundaries too.
#  - The file names and the split of the sequence into files (batch
#    boundaries).
# Everything else must be identical, byte for byte: the "record" object of
# every RECORD (values, key order, "_sdc_deleted_at" = commit time,
# "_sdc_lsn" = commit LSN: debug_lsn is on), "stream", the order of all
# messages across streams, every SCHEMA change and where it happens.  The
# initial-sync RECORDs and SCHEMAs of each stream are compared the same way.
# Each destination is also checked against the tables on its own (what a
# Singer target would hold), so that a defect common to both shows too.

use strict;
use warnings;
use utf8;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('cdc_diff', cdc => 1, conf => "max_prepared_transactions = 2\n");
my $log_start = -s $node->logfile;
my %dir = (dw => new_outdir($node, 'dw'), dp => new_outdir($node, 'dp'));

sub sql { server_up($node); return $node->safe_psql('postgres', $_[0]); }

my @columns = every_type_table($node);
my @nonid = @columns[ 1 .. $#columns ];

my $big = q{(SELECT string_agg(md5(i::text || 'x' || random()::text), '') FROM generate_series(1, 3125) i)};
sql(qq{
CREATE TABLE ddl_t (id integer PRIMARY KEY, a text);
INSERT INTO ddl_t VALUES (0, 'zero');
CREATE TABLE pk_t (id integer PRIMARY KEY, v text);
INSERT INTO pk_t SELECT i, 'v' || i FROM generate_series(1, 10) i;
CREATE TABLE full_t (id integer PRIMARY KEY, a text, b integer);
ALTER TABLE full_t REPLICA IDENTITY FULL;
INSERT INTO full_t VALUES (1, 'x', 10), (2, 'y', 20), (3, 'z', 30);
CREATE TABLE nopk_t (a text, b integer);
ALTER TABLE nopk_t REPLICA IDENTITY FULL;
INSERT INTO nopk_t VALUES ('p', 1), ('q', 2);
CREATE TABLE idx_t (u integer NOT NULL, v text);
CREATE UNIQUE INDEX idx_t_u ON idx_t (u);
ALTER TABLE idx_t REPLICA IDENTITY USING INDEX idx_t_u;
INSERT INTO idx_t SELECT i, 'v' || i FROM generate_series(1, 5) i;
CREATE TABLE tr_t (id integer PRIMARY KEY, v text);
INSERT INTO tr_t SELECT i, 'v' || i FROM generate_series(1, 5) i;
CREATE TABLE tr2_t (id integer PRIMARY KEY, v text);
INSERT INTO tr2_t SELECT i, 'w' || i FROM generate_series(1, 3) i;
CREATE TABLE xt (
	id integer PRIMARY KEY,
	c_regclass regclass, c_regtype regtype, c_regproc regprocedure, c_money money, c_xml xml,
	c_tsv tsvector, c_macaddr macaddr, c_cidr cidr, c_i4r int4range, c_tstzr tstzrange,
	c_box box, c_jsonpath jsonpath, c_lsn pg_lsn, c_varbit varbit, c_ts_arr timestamptz[],
	c_num_arr numeric[], c_float_arr float8[]);
INSERT INTO xt VALUES (1, 'pk_t', 'timestamp with time zone', 'pg_catalog.lower(text)', 12.34,
	'<a b="c">d &amp; e</a>', 'the quick brown fox', '08:00:2b:01:02:03', '10.1.0.0/16', '[1,10)',
	'[2024-01-15 13:45:30.5+02,infinity)', '(1,2),(3,4)', '\$.a[*] ? (\@ > 1)', '16/B374D848', B'10110',
	'{"2024-01-15 13:45:30.5+02","-infinity"}', '{1.50,NaN,-0.000001}', '{0.1,1e300,-Infinity}'),
	(2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
CREATE TABLE gen_t (id integer PRIMARY KEY, a integer, g integer GENERATED ALWAYS AS (a * 2) STORED, ident bigint GENERATED ALWAYS AS IDENTITY);
INSERT INTO gen_t (id, a) VALUES (1, 1), (2, 2);
CREATE TABLE "Weird ""Cols""" ("Id" integer PRIMARY KEY, "a b" text, "q""x" integer, "é" text, "UPPER" text);
INSERT INTO "Weird ""Cols""" VALUES (1, 'one', 1, 'é1', 'U1');
CREATE TABLE p (id integer, k integer, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (MINVALUE) TO (100);
CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (100) TO (1000);
INSERT INTO p VALUES (1, 1, 'a'), (2, 150, 'b');
CREATE TABLE toast_d (id integer PRIMARY KEY, big text, small integer);
ALTER TABLE toast_d ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE toast_f (id integer PRIMARY KEY, big text, small integer);
ALTER TABLE toast_f ALTER COLUMN big SET STORAGE EXTERNAL;
ALTER TABLE toast_f REPLICA IDENTITY FULL;
INSERT INTO toast_d VALUES (1, $big, 1);
INSERT INTO toast_f VALUES (1, $big, 1);
});

# table -> key columns for the mirror check (undef: not checked that way)
my %tables = (
	t => ['id'],
	ddl_t => ['id'],
	pk_t => ['id'],
	full_t => ['id'],
	nopk_t => undef,
	idx_t => undef,    # (key_properties of USING INDEX: see 070)
	tr_t => ['id'],
	tr2_t => ['id'],
	gen_t => ['id'],
	xt => undef,    # (reg* values print by the search path: see 070)
	weird => ['Id'],
	p => [qw(id k)],
	toast_d => ['id'],
	toast_f => ['id']);
my @tables = sort keys %tables;
# short name -> relation (SQL) and Singer stream id
my %relname = (weird => '"Weird ""Cols"""');
sub rel { return $relname{ $_[0] } // $_[0]; }
my %stream_id = (weird => 'public-Weird "Cols"');
sub sid { return $stream_id{ $_[0] } // "public-$_[0]"; }

add_destination($node, 'dw', $dir{dw}, '{"decoder": "wal2json"}');
add_destination($node, 'dp', $dir{dp});
foreach my $d (qw(dw dp))
{
	foreach my $t (@tables)
	{
		sql("SELECT egress_add_stream('${d}_$t', " . sql_quote(rel($t)) . ", method => 'LOG_BASED', destination => '$d', options => '{\"debug_lsn\": true}')");
	}
}
foreach my $d (qw(dw dp))
{
	wait_stream_state($node, "${d}_$_", 'streaming') foreach @tables;
}
my %plugin;
foreach my $d (qw(dw dp))
{
	my $slot = slot_row($node, stream_row_wait($node, "${d}_t")->{slot_name} // "pg_egress_$d");
	$plugin{$d} = $slot ? $slot->{plugin} : 'none';
}
is($plugin{dw}, 'wal2json', 'dw decodes with wal2json (slot plugin)');
is($plugin{dp}, 'pgoutput', 'dp decodes with pgoutput (slot plugin)');

# the initial version of every stream: ordinal v0
my %initial_version;
foreach my $d (qw(dw dp))
{
	foreach my $t (@tables)
	{
		$initial_version{$d}{ sid($t) } = '' . (stream_row_wait($node, "${d}_$t")->{version} // '');
	}
}

# ---------------------------------------------------------------------------
# the change script
# ---------------------------------------------------------------------------
my $collist = join(', ', @nonid);
my @script = (
	# every type
	"INSERT INTO t (id, $collist) SELECT id + 100, $collist FROM t ORDER BY id",
	q{UPDATE t SET c_nn = c_nn || '!' WHERE id > 100},
	q{UPDATE t SET c_text = coalesce(c_text, '') || 'x', c_int2 = 7 WHERE id IN (1, 2, 3)},
	q{UPDATE t SET id = 1105 WHERE id = 105},
	q{DELETE FROM t WHERE id IN (6, 106)},
	# DDL mid-stream
	q{INSERT INTO ddl_t VALUES (1, 'a1')},
	q{ALTER TABLE ddl_t ADD COLUMN c integer; INSERT INTO ddl_t VALUES (2, 'a2', 20)},
	q{BEGIN; INSERT INTO ddl_t VALUES (3, 'a3', 30); ALTER TABLE ddl_t ADD COLUMN d text; INSERT INTO ddl_t VALUES (4, 'a4', 40, 'd4'); COMMIT},
	q{ALTER TABLE ddl_t DROP COLUMN a; INSERT INTO ddl_t VALUES (5, 50, 'd5')},
	q{ALTER TABLE ddl_t ALTER COLUMN c TYPE numeric(10,2); INSERT INTO ddl_t VALUES (6, 60.5, 'd6'); UPDATE ddl_t SET d = 'u' WHERE id = 2},
	q{BEGIN; UPDATE ddl_t SET d = 'before' WHERE id = 0; ALTER TABLE ddl_t ALTER COLUMN c TYPE text; UPDATE ddl_t SET d = 'after' WHERE id = 1; COMMIT},
	q{UPDATE ddl_t SET d = d},
	# primary key changes, deletes
	q{UPDATE pk_t SET id = 100 WHERE id = 5},
	q{DELETE FROM pk_t WHERE id = 7},
	q{UPDATE pk_t SET id = id + 1000 WHERE id IN (8, 9)},
	q{BEGIN; UPDATE pk_t SET v = 'w' WHERE id = 1; UPDATE pk_t SET id = 11 WHERE id = 1; DELETE FROM pk_t WHERE id = 11; COMMIT},
	# REPLICA IDENTITY FULL, USING INDEX
	q{DELETE FROM full_t WHERE id = 1},
	q{UPDATE full_t SET b = 21 WHERE id = 2},
	q{UPDATE full_t SET id = 33 WHERE id = 3},
	q{ALTER TABLE full_t ADD COLUMN e integer DEFAULT 7},
	q{DELETE FROM full_t WHERE id = 2},
	q{ALTER TABLE full_t ALTER COLUMN b TYPE bigint; UPDATE full_t SET b = b + 1},
	q{DELETE FROM nopk_t WHERE a = 'p'},
	q{INSERT INTO nopk_t VALUES ('r', 3)},
	q{UPDATE idx_t SET v = 'u' WHERE u = 2},
	q{UPDATE idx_t SET u = 30 WHERE u = 3},
	q{DELETE FROM idx_t WHERE u = 1},
	# TRUNCATE
	q{INSERT INTO tr_t VALUES (6, 'six')},
	q{TRUNCATE tr_t},
	q{INSERT INTO tr_t VALUES (7, 'seven'), (8, 'eight')},
	q{TRUNCATE tr2_t, tr_t},
	q{INSERT INTO tr_t VALUES (9, 'nine'); INSERT INTO tr2_t VALUES (9, 'nine')},
	# partitions
	q{INSERT INTO p VALUES (3, 5, 'c'), (4, 200, 'd')},
	q{INSERT INTO p2 VALUES (5, 300, 'direct')},
	q{UPDATE p SET v = 'u' WHERE id = 1},
	q{DELETE FROM p WHERE id = 2},
	q{UPDATE p SET k = 250 WHERE id = 3},
	q{CREATE TABLE p3 PARTITION OF p FOR VALUES FROM (1000) TO (MAXVALUE); INSERT INTO p VALUES (6, 5000, 'new partition')},
	q{UPDATE p SET k = 1500 WHERE id = 4},
	# unchanged TOAST
	qq{INSERT INTO toast_d VALUES (2, $big, 1)},
	qq{INSERT INTO toast_f VALUES (2, $big, 1)},
	q{UPDATE toast_d SET small = small + 1},
	q{UPDATE toast_f SET small = small + 1},
	# (no later change of toast_d: an UPDATE whose unchanged TOASTed value
	# is re-read finds its row changed or gone depending on when the
	# worker reads it, which two workers need not do alike)
	q{UPDATE toast_f SET id = 3 WHERE id = 2},
	q{DELETE FROM toast_f WHERE id = 1},
	# types printed by their own output functions
	q{INSERT INTO xt SELECT id + 10, c_regclass, c_regtype, c_regproc, c_money, c_xml, c_tsv, c_macaddr, c_cidr, c_i4r, c_tstzr, c_box, c_jsonpath, c_lsn, c_varbit, c_ts_arr, c_num_arr, c_float_arr FROM xt},
	q{UPDATE xt SET id = id + 100 WHERE id = 1},
	q{DELETE FROM xt WHERE id = 2},
	# generated columns (stored, identity)
	q{INSERT INTO gen_t (id, a) VALUES (3, 3)},
	q{UPDATE gen_t SET a = 20 WHERE id = 2},
	q{DELETE FROM gen_t WHERE id = 1},
	# column names that need quoting
	q{INSERT INTO "Weird ""Cols""" VALUES (2, 'two', 2, 'é2', 'U2')},
	q{UPDATE "Weird ""Cols""" SET "a b" = 'uno', "q""x" = 11 WHERE "Id" = 1},
	q{UPDATE "Weird ""Cols""" SET "Id" = 20 WHERE "Id" = 2},
	q{DELETE FROM "Weird ""Cols""" WHERE "Id" = 1},
	# two-phase commit: decoded at COMMIT PREPARED; a rolled back one sends nothing
	q{BEGIN; INSERT INTO pk_t VALUES (70, 'prepared'); DELETE FROM pk_t WHERE id = 2; PREPARE TRANSACTION 'egress_2pc'},
	q{COMMIT PREPARED 'egress_2pc'},
	q{BEGIN; INSERT INTO pk_t VALUES (71, 'prepared, rolled back'); PREPARE TRANSACTION 'egress_2pc_rb'},
	q{ROLLBACK PREPARED 'egress_2pc_rb'},
	# several tables, a message, rollbacks
	q{BEGIN; INSERT INTO pk_t VALUES (50, 'multi'); SELECT pg_logical_emit_message(true, 'egress-test', 'in a transaction'); INSERT INTO full_t VALUES (50, 'multi', 50); UPDATE tr_t SET v = 'multi' WHERE id = 7; COMMIT},
	q{SELECT pg_logical_emit_message(false, 'egress-test', 'not transactional')},
	q{BEGIN; INSERT INTO pk_t VALUES (60, 'rolled back'); ROLLBACK},
	q{BEGIN; INSERT INTO pk_t VALUES (61, 'kept'); SAVEPOINT s; INSERT INTO pk_t VALUES (62, 'rolled back'); UPDATE pk_t SET v = 'gone' WHERE id = 61; ROLLBACK TO SAVEPOINT s; INSERT INTO pk_t VALUES (63, 'kept too'); COMMIT},
);
sql($_) foreach @script;
is(sql(q{SELECT count(*) FROM toast_d WHERE pg_column_size(big) >= 100000}), '2',
	'toast_d: the large values are stored out of line');

foreach my $d (qw(dw dp))
{
	wait_caught_up($node, "${d}_$_") foreach @tables;
}

# ---------------------------------------------------------------------------
# each destination on its own
# ---------------------------------------------------------------------------
foreach my $d (qw(dw dp))
{
	my @cdc = cdc_batches($dir{$d});
	my @problems = map { check_cdc_batch($_) } @cdc;
	is_deeply([ @problems[ 0 .. ($#problems < 9 ? $#problems : 9) ] ], [],
		"$d: every change file well formed (" . scalar(@cdc) . ' files)');
	isnt(stream_row_wait($node, "${d}_$_")->{state}, 'error', "$d: stream ${d}_$_ not in error")
	  foreach @tables;
	foreach my $t (grep { defined $tables{$_} } @tables)
	{
		compare_states(mirror($dir{$d}, sid($t), $tables{$t}), table_state($node, rel($t), $tables{$t}),
			"$d ($plugin{$d}): $t", lenient => ($t eq 'ddl_t'));
	}
}

# ---------------------------------------------------------------------------
# normalised sequences
# ---------------------------------------------------------------------------
my %vord;    # dest -> stream id -> version -> ordinal

sub vnorm
{
	my ($d, $sid, $v) = @_;
	return 'null' unless defined $v;
	my $m = $vord{$d}{$sid} //= {};
	if (!%$m && defined $initial_version{$d}{$sid} && $initial_version{$d}{$sid} ne '')
	{
		$m->{ $initial_version{$d}{$sid} } = 'v0';
	}
	$m->{"$v"} //= 'v' . scalar(keys %$m);
	return $m->{"$v"};
}

# A message line, normalised: [stream id, text]
sub norm_line
{
	my ($d, $line, $msg) = @_;
	my $sid = $msg->{stream} // '';
	my @out;
	foreach my $p (raw_pairs($line))
	{
		my ($k, $v) = @$p;
		next if $k eq 'time_extracted';
		$v = '"' . vnorm($d, $sid, $msg->{version}) . '"' if $k eq 'version';
		push @out, "\"$k\":$v";
	}
	return [ $sid, '{' . join(',', @out) . '}' ];
}

# (\@sequence, \%per_stream, \@state_problems, \%counts)
sub sequence
{
	my ($d) = @_;
	my (@seq, %per, %last_schema, @sp, %count, %last_bm, %max_lsn, %last_rec_version, %seen);
	my @cdc = cdc_batches($dir{$d});
	foreach my $b (@cdc)
	{
		for my $i (0 .. $#{ $b->{messages} })
		{
			my $m = $b->{messages}[$i];
			my $line = $b->{lines}[$i];
			my $type = $m->{type} // '';
			my $sid = $m->{stream} // '';
			if ($type eq 'STATE')
			{
				my $bms = $m->{value}{bookmarks} // {};
				foreach my $t (@tables)
				{
					my $s = sid($t);
					my $bm = $bms->{$s};
					next unless $bm || $seen{$s};
					if (!$bm || !is_lsn_number($bm->{lsn}))
					{
						push @sp, "$b->{name}: no bookmark with an integer lsn for $s";
						next;
					}
					push @sp, "$b->{name}: $s bookmark lsn $bm->{lsn} went back from $last_bm{$s}"
					  if defined $last_bm{$s} && $bm->{lsn} < $last_bm{$s};
					$last_bm{$s} = $bm->{lsn};
					$count{final_bm_version}{$s} = vnorm($d, $s, $bm->{version});
				}
				next;
			}
			if ($type eq 'SCHEMA')
			{
				next if defined $last_schema{$sid} && $last_schema{$sid} eq $line;
				$last_schema{$sid} = $line;
			}
			if ($type eq 'RECORD')
			{
				$count{records}++;
				$seen{$sid} = 1;
				my $lsn = $m->{record}{_sdc_lsn};
				$max_lsn{$sid} = $lsn if defined $lsn && (!defined $max_lsn{$sid} || $lsn > $max_lsn{$sid});
				$last_rec_version{$sid} = vnorm($d, $sid, $m->{version});
			}
			my $n = norm_line($d, $line, $m);
			push @seq, "$type $n->[1]";
			push @{ $per{$sid} }, "$type $n->[1]";
		}
	}
	foreach my $s (sort keys %max_lsn)
	{
		push @sp, "last bookmark of $s ($last_bm{$s}) before its last change ($max_lsn{$s})"
		  if defined $last_bm{$s} && $last_bm{$s} < $max_lsn{$s};
		push @sp, "last bookmark of $s has version $count{final_bm_version}{$s}, its last record $last_rec_version{$s}"
		  if ($count{final_bm_version}{$s} // '') ne $last_rec_version{$s};
	}
	$count{files} = scalar(@cdc);
	return (\@seq, \%per, \@sp, \%count);
}

sub short
{
	my ($s) = @_;
	return length($s) > 600 ? substr($s, 0, 600) . '...(' . length($s) . ' bytes)' : $s;
}

# one test: two lists of lines equal; shows the first difference
sub same_lines
{
	my ($w, $p, $label) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $n = @$w > @$p ? scalar(@$w) : scalar(@$p);
	my ($first, $ndiff) = (undef, 0);
	for my $i (0 .. $n - 1)
	{
		my ($x, $y) = ($w->[$i] // '(none)', $p->[$i] // '(none)');
		next if $x eq $y;
		$ndiff++;
		$first //= $i;
	}
	my $ok = ok(!$ndiff, "$label: " . scalar(@$w) . ' messages (wal2json), ' . scalar(@$p) . ' (pgoutput), identical');
	if (!$ok)
	{
		diag "$ndiff positions differ; the first at message $first:";
		for my $i ($first .. ($first + 2 < $n ? $first + 2 : $n - 1))
		{
			diag "  [$i] wal2json: " . short($w->[$i] // '(none)');
			diag "  [$i] pgoutput: " . short($p->[$i] // '(none)');
		}
	}
	return $ok;
}

my ($wseq, $wper, $wsp, $wcount) = sequence('dw');
my ($pseq, $pper, $psp, $pcount) = sequence('dp');
diag "dw: $wcount->{files} change files, " . ($wcount->{records} // 0) . " records; dp: $pcount->{files} change files, " . ($pcount->{records} // 0) . ' records';
cmp_ok($pcount->{records} // 0, '>=', 60, 'pgoutput: the change records are there');
is_deeply($wsp, [], 'dw (wal2json): STATE bookmarks: in every file, never going back, final one covers the last change');
is_deeply($psp, [], 'dp (pgoutput): STATE bookmarks: in every file, never going back, final one covers the last change');

foreach my $t (@tables)
{
	my $sid = sid($t);
	same_lines($wper->{$sid} // [], $pper->{$sid} // [], "changes of $sid");
}
same_lines($wseq, $pseq, 'all changes, in delivery order across streams');

# initial syncs: SCHEMA, RECORD, ACTIVATE_VERSION of each stream
foreach my $t (@tables)
{
	my %s;
	foreach my $d (qw(dw dp))
	{
		my @lines;
		foreach my $b (sync_batches($dir{$d}, "${d}_$t"))
		{
			for my $i (0 .. $#{ $b->{messages} })
			{
				my $m = $b->{messages}[$i];
				next if ($m->{type} // '') eq 'STATE';
				push @lines, ($m->{type} // '') . ' ' . norm_line($d, $b->{lines}[$i], $m)->[1];
			}
		}
		$s{$d} = \@lines;
	}
	ok(scalar(@{ $s{dp} }) >= 3, "initial sync of $t through dp: files present");
	same_lines($s{dw}, $s{dp}, "initial sync of " . sid($t));
}

no_crash_since($node, $log_start, 'no server process crashed');

$node->stop;
done_testing();
