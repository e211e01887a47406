
# Operator review of issue 13 (chunked LOG_BASED backfills): what a careless
# operator does to a stream while its chunked backfill runs, and whether
# rows are lost, the stream gets stuck or half-done work looks complete.
#
# (A) the primary key moves to another column of the same arity while a
#     backfill is mid-way, then the session restarts (here: the file
#     destination is unwritable for a while, then back).  The resumed
#     backfill reads "key > backfill_after" with the NEW key column but the
#     OLD key's text: rows are skipped.  (cdc_backfill_begin checks only
#     bf_nafter == nkey, not which columns the progress belongs to.)
# (B) egress_pause_stream + egress_resume_stream in one transaction, and a
#     pause, then a resume, mid-backfill, with writes: the final state at
#     the destination equals the table.  (regression guard)
# (C) chunk_bytes smaller than one row: every chunk still holds a row and
#     the progress advances.  (regression guard)
# (D) egress_resync_stream twice in a row mid-backfill, then TRUNCATE and
#     new rows mid-backfill: the final state equals the table.  (guard)

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('review3_operator', cdc => 1);
sub sql { return $node->safe_psql('postgres', $_[0]); }

sub chunks_of
{
	my ($name) = @_;
	my $r = stream_row($node, $name);
	return $r ? ($r->{backfill_chunks} // 0) : 0;
}

# Wait until the stream's backfill has acknowledged at least $n chunks
# while still syncing (the point where the operator strikes).
sub wait_mid_backfill
{
	my ($name, $n) = @_;
	return poll_until("$name mid-backfill ($n chunks)", 120, sub {
		my $r = stream_row($node, $name);
		return $r && ($r->{backfill_chunks} // 0) >= $n;
	});
}

# ---- (A) primary key moved to another column mid-backfill ---------------------
my $out_a = new_outdir($node, 'a');
add_destination($node, 'da', $out_a);
sql(q{
CREATE TABLE pkc (id int PRIMARY KEY, code text NOT NULL UNIQUE, v text);
INSERT INTO pkc SELECT i, md5(i::text), 'v' || i FROM generate_series(1, 20000) i;
});
sql(q{SELECT egress_add_stream('pkc', 'pkc', 'LOG_BASED', 'da', NULL, '{"chunk_rows": 10}')});
ok(wait_mid_backfill('pkc', 5), 'A: backfill of pkc is mid-way');
chmod(0500, $out_a) or die "chmod: $!";
my $mid = stream_row($node, 'pkc');
note("A: frozen at chunk $mid->{backfill_chunks}, state $mid->{state}");
# the operator moves the primary key to the natural key
sql(q{
BEGIN;
ALTER TABLE pkc DROP CONSTRAINT pkc_pkey;
ALTER TABLE pkc ADD PRIMARY KEY (code);
COMMIT;
});
# the worker's session fails on the unwritable directory and starts again
poll_until('A: the session failed on the unwritable destination', 60, sub {
	my $r = stream_row($node, 'pkc');
	return $r && defined $r->{last_error};
});
chmod(0700, $out_a) or die "chmod: $!";
wait_stream_state($node, 'pkc', 'streaming', 300);
compare_states(mirror($out_a, 'public-pkc', ['id']), table_state($node, 'pkc', ['id']),
	'A: primary key moved to another column mid-backfill: nothing lost');

# ---- (B) pause / resume mid-backfill -------------------------------------------
my $out_b = new_outdir($node, 'b');
add_destination($node, 'db', $out_b);
sql(q{
CREATE TABLE pr (id int PRIMARY KEY, v text);
INSERT INTO pr SELECT i, 'v' || i FROM generate_series(1, 20000) i;
});
sql(q{SELECT egress_add_stream('pr', 'pr', 'LOG_BASED', 'db', NULL, '{"chunk_rows": 10}')});
wait_mid_backfill('pr', 5);
sql(q{BEGIN; SELECT egress_pause_stream('pr'); SELECT egress_resume_stream('pr'); COMMIT;});
sql(q{UPDATE pr SET v = 'u1' WHERE id % 97 = 0});
sql(q{DELETE FROM pr WHERE id % 89 = 0});
sql(q{INSERT INTO pr SELECT i, 'new' FROM generate_series(20001, 20100) i});
wait_mid_backfill('pr', (chunks_of('pr') || 0) + 3);
sql(q{SELECT egress_pause_stream('pr')});
sql(q{UPDATE pr SET v = 'u2' WHERE id % 83 = 0});
sql(q{SELECT egress_resume_stream('pr')});
sql(q{UPDATE pr SET v = 'u3' WHERE id % 79 = 0});
wait_stream_state($node, 'pr', 'streaming', 300);
wait_caught_up($node, 'pr');
compare_states(mirror($out_b, 'public-pr', ['id']), table_state($node, 'pr', ['id']),
	'B: pause+resume (one transaction, then apart) mid-backfill: final state equal');

# ---- (C) chunk_bytes smaller than one row ---------------------------------------
sql(q{
CREATE TABLE fat (id int PRIMARY KEY, v text);
ALTER TABLE fat ALTER COLUMN v SET STORAGE PLAIN;
INSERT INTO fat SELECT i, repeat(md5(i::text), 100) FROM generate_series(1, 60) i;
ANALYZE fat;
});
sql(q{SELECT egress_add_stream('fat', 'fat', 'LOG_BASED', 'db', NULL,
	'{"chunk_rows": 1000, "chunk_bytes": 1024}')});
wait_stream_state($node, 'fat', 'streaming', 120);
my $fr = stream_row($node, 'fat');
is($fr->{backfill_rows}, 60, 'C: chunk_bytes below one row: all 60 rows backfilled');
cmp_ok($fr->{backfill_chunks}, '>=', 60, "C: one row per chunk ($fr->{backfill_chunks} chunks)");
compare_states(mirror($out_b, 'public-fat', ['id']), table_state($node, 'fat', ['id']),
	'C: chunk_bytes below one row: final state equal');

# ---- (D) resync twice mid-backfill, TRUNCATE mid-backfill --------------------
my $out_d = new_outdir($node, 'd');
add_destination($node, 'dd', $out_d);
sql(q{
CREATE TABLE rs (id int PRIMARY KEY, v text);
INSERT INTO rs SELECT i, 'v' || i FROM generate_series(1, 20000) i;
});
sql(q{SELECT egress_add_stream('rs', 'rs', 'LOG_BASED', 'dd', NULL, '{"chunk_rows": 10}')});
wait_mid_backfill('rs', 5);
sql(q{SELECT egress_resync_stream('rs')});
sql(q{SELECT egress_resync_stream('rs')});
sql(q{UPDATE rs SET v = 'r1' WHERE id % 101 = 0});
wait_mid_backfill('rs', 3);
sql(q{TRUNCATE rs});
sql(q{INSERT INTO rs SELECT i, 't' || i FROM generate_series(1, 3000) i});
wait_stream_state($node, 'rs', 'streaming', 300);
wait_caught_up($node, 'rs');
compare_states(mirror($out_d, 'public-rs', ['id']), table_state($node, 'rs', ['id']),
	'D: resync twice + TRUNCATE mid-backfill: final state equal');

done_testing();
