
# Operator review of issue 11 (pgoutput, publications, CDC worker split):
# what a careless operator or application does to the tables and
# publications pg_egress uses, and whether pg_egress loses data silently,
# breaks the application, or leaves objects behind.
#
# (A) ALTER PUBLICATION pg_egress_<dest> DROP TABLE by hand: pgoutput stops
#     sending the table's changes; the stream must not go on "streaming"
#     while its changes are lost.
# (B) ALTER TABLE ... DROP COLUMN ... CASCADE of a column in a stream's
#     "columns" list: PostgreSQL drops the table from the publication (the
#     publication's column list depends on the column); same silent loss.
# (C) ALTER TABLE ... DROP CONSTRAINT <pkey> of a streamed table (REPLICA
#     IDENTITY DEFAULT): the table is in a publication that publishes
#     updates, so the application's next UPDATE fails, long after the DDL
#     was accepted (with the wal2json decoder it does not), until the
#     publication is brought in step, which leaves the table out.
# (D) hand DROP PUBLICATION: the stream recovers (a new slot, a resync) and
#     says why in last_error.
# (D2) DROP PUBLICATION by hand while the worker does not decode, then
#     egress_add_stream() makes it again: the stream must not be stuck.
# (F) a file destination unwritable while the pgoutput slot passes
#     pg_egress.max_slot_wal, then back: every row arrives.
# (G) wal2json -> pgoutput by remove + add under the same name in one
#     transaction: the new destination decodes with pgoutput.
# (E) DROP EXTENSION pg_egress: no publication or replication slot of
#     pg_egress is left behind; CREATE EXTENSION and the same destination
#     again work.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('review_operator', cdc => 1);
my $sql = sub { return $node->safe_psql('postgres', $_[0]); };

$sql->(q{
CREATE TABLE ta (id integer PRIMARY KEY, v text);
CREATE TABLE tb (id integer PRIMARY KEY, a text, pii text);
CREATE TABLE tc (id integer PRIMARY KEY, v text);
CREATE TABLE marker (id integer PRIMARY KEY);
});

# ids of the RECORDs (not deletions) of a stream in a destination's change files
sub change_ids
{
	my ($dir, $stream) = @_;
	my @ids = sort { $a <=> $b } map { $_->{record}{id} }
	  grep { $_->{stream} eq $stream && !defined $_->{record}{_sdc_deleted_at} }
	  records_of(cdc_batches($dir));
	return @ids;
}

# ids of the RECORDs of a stream in every file of the destination: changes
# and (re)syncs
sub all_ids
{
	my ($dir, $stream) = @_;
	my %ids = map { $_->{record}{id} => 1 }
	  grep { $_->{stream} eq $stream && !defined $_->{record}{_sdc_deleted_at} }
	  records_of(read_batches($dir));
	return sort { $a <=> $b } keys %ids;
}

my $dir = new_outdir($node, 'p');
add_destination($node, 'p', $dir);
$sql->(q{SELECT egress_add_stream('sa', 'ta', method => 'LOG_BASED', destination => 'p')});
$sql->(q{SELECT egress_add_stream('sb', 'tb', method => 'LOG_BASED', destination => 'p',
	options => '{"columns": ["id", "a"]}')});
$sql->(q{SELECT egress_add_stream('sc', 'tc', method => 'LOG_BASED', destination => 'p')});
$sql->(q{SELECT egress_add_stream('sm', 'marker', method => 'LOG_BASED', destination => 'p')});
wait_stream_state($node, $_, 'streaming', 60) for qw(sa sb sc sm);

my $mark = 0;
# a marker row committed after everything before it, delivered: the worker
# decoded past every earlier change
sub sync_marker
{
	$mark++;
	$sql->("INSERT INTO marker VALUES ($mark)");
	return poll_until("marker $mark delivered", 60,
		sub { grep { $_ == $mark } change_ids($dir, 'public-marker') });
}

$sql->(q{INSERT INTO ta VALUES (1, 'x'), (2, 'x');
INSERT INTO tb VALUES (1, 'a', 'secret'), (2, 'a', 'secret');
INSERT INTO tc VALUES (1, 'x'), (2, 'x')});
ok(sync_marker(), 'setup: changes flow');
is(scalar(change_ids($dir, 'public-ta')), 2, 'setup: ta rows delivered');

# ---------------------------------------------------------------------------
# A. the table dropped from the destination's publication by hand
# ---------------------------------------------------------------------------
$sql->(q{ALTER PUBLICATION pg_egress_p DROP TABLE ta});
$sql->(q{INSERT INTO ta VALUES (3, 'lost?'), (4, 'lost?')});
ok(sync_marker(), 'A: the worker decoded past the inserts');
# Fixed in cdc.c (stop_dropped_streams): the relcache invalidation of the
# table flags the stream; at the end of the round the worker sees the table
# is no longer in pg_egress_<dest>, puts it back (egress_publication_sync)
# and syncs the stream again, with a WARNING saying why.
ok(poll_until('A: rows 3-4 delivered (by a resync)', 30, sub {
	return scalar(grep { $_ == 3 || $_ == 4 } all_ids($dir, 'public-ta')) == 2;
}), 'A: a table dropped from the publication by hand does not lose its changes: the stream is synced again');
ok(poll_until('A: the reason is logged', 15, sub {
	slurp_file($node->logfile) =~ /pg_egress stream "sa": table public\.ta had left publication "pg_egress_p"/;
}), 'A: the server log says the table had left the publication');
is($sql->(q{SELECT count(*) FROM pg_publication_tables WHERE pubname = 'pg_egress_p' AND tablename = 'ta'}),
	'1', 'A: the table is back in the publication');
wait_stream_state($node, 'sa', 'streaming', 60);
$sql->(q{INSERT INTO ta VALUES (5, 'later')});
ok(poll_until('A: row 5 delivered as a change', 30, sub { grep { $_ == 5 } change_ids($dir, 'public-ta') }),
	'A: changes of the table flow again');

# ---------------------------------------------------------------------------
# B. DROP COLUMN ... CASCADE of a column in a stream's column list
# ---------------------------------------------------------------------------
my ($ret, $out, $err) = $node->psql('postgres', q{ALTER TABLE tb DROP COLUMN a});
isnt($ret, 0, 'B: DROP COLUMN of a listed column is refused by the publication');
like($err, qr/publication/, 'B: ... and the error names the publication');
$sql->(q{ALTER TABLE tb DROP COLUMN a CASCADE});
# the worker may already have put it back (as in A): then it says so
ok($sql->(q{SELECT count(*) FROM pg_publication_tables WHERE pubname = 'pg_egress_p' AND tablename = 'tb'}) eq '0'
	  || poll_until('B: the worker says it put the table back', 30, sub {
		  slurp_file($node->logfile) =~ /pg_egress stream "sb": table public\.tb had left publication "pg_egress_p"/ }),
	'B: with CASCADE the table left the publication');
$sql->(q{INSERT INTO tb VALUES (3, 'lost?'), (4, 'lost?')});
ok(sync_marker(), 'B: the worker decoded past the inserts');
# Fixed as A: the DROP COLUMN invalidates the table's relcache entry.
ok(poll_until('B: rows 3-4 delivered (by a resync)', 30, sub {
	return scalar(grep { $_ == 3 || $_ == 4 } all_ids($dir, 'public-tb')) == 2;
}), 'B: DROP COLUMN CASCADE of a listed column does not lose the changes: the stream is synced again');
is($sql->(q{SELECT count(*) FROM pg_publication_tables WHERE pubname = 'pg_egress_p' AND tablename = 'tb'}),
	'1', 'B: the table is back in the publication');
wait_stream_state($node, 'sb', 'streaming', 60);

# ---------------------------------------------------------------------------
# C. the primary key of a streamed table dropped: the application's UPDATE
# ---------------------------------------------------------------------------
# PostgreSQL accepts the DDL; until the publication is brought in step, the
# application's UPDATE fails ("cannot update table ... does not have a
# replica identity and publishes updates": the documented window).  What is
# guaranteed: egress_publication_sync never puts or keeps a table without a
# replica identity in the publication (WARNING naming the stream), and the
# CDC worker, once it sees the DDL, puts the stream into state error and
# syncs the publication, so that the application's UPDATE works again.
($ret, $out, $err) = $node->psql('postgres', q{ALTER TABLE tc DROP CONSTRAINT tc_pkey});
is($ret, 0, 'C: PostgreSQL accepts dropping the key of a streamed table');
# Fixed in cdc.c (stop_dropped_streams): the CDC worker reacts to the
# relcache invalidation of tc: egress_table_has_replica_identity(relid)
# false -> the stream goes to state error with a last_error naming the
# replica identity, and egress_publication_sync() runs in its catalog
# transaction, which takes tc out of pg_egress_p.
my $reacted = poll_until('C: the worker reacts to the lost replica identity', 20, sub {
	my $r = stream_row($node, 'sc');
	return defined $r && $r->{state} eq 'error' && ($r->{last_error} // '') =~ /replica identity/;
});
ok($reacted, 'C: the stream is in state error, and last_error says the table lost its replica identity')
  or diag explain stream_row($node, 'sc');
ok(poll_until('C: the application\'s UPDATE works again', 20, sub {
	my ($r) = $node->psql('postgres', q{UPDATE tc SET v = 'y' WHERE id = 1});
	return $r == 0;
}), 'C: after the worker reacted, the application\'s UPDATE works') if $reacted;
# any sync of the publication (here: a stream added to and removed from the
# destination) leaves tc out, with a WARNING naming the stream
$sql->(q{CREATE TABLE tcx (id integer PRIMARY KEY)});
($ret, $out, $err) = $node->psql('postgres',
	q{SELECT egress_add_stream('scx', 'tcx', method => 'LOG_BASED', destination => 'p');
	  SELECT egress_remove_stream('scx')});
is($ret, 0, 'C: streams of the destination can still be added and removed');
like($err, qr/WARNING:  table public\.tc of stream "sc" has no replica identity/,
	'C: the sync warns that the table of stream sc has no replica identity');
is($sql->(q{SELECT count(*) FROM pg_publication_tables WHERE pubname = 'pg_egress_p' AND tablename = 'tc'}),
	'0', 'C: the publication no longer holds the table without a replica identity');
($ret, $out, $err) = $node->psql('postgres', q{UPDATE tc SET v = 'y' WHERE id = 1});
is($ret, 0, 'C: the application\'s UPDATE works') or diag $err;
# the repair: a primary key again, and a resync of the stream, which puts
# the table back into the publication
$sql->(q{ALTER TABLE tc ADD PRIMARY KEY (id)});
$sql->(q{SELECT egress_resync_stream('sc')});
is($sql->(q{SELECT count(*) FROM pg_publication_tables WHERE pubname = 'pg_egress_p' AND tablename = 'tc'}),
	'1', 'C: egress_resync_stream puts the table back into the publication');
wait_stream_state($node, 'sc', 'streaming', 60);

# C, partitioned: a leaf partition that had no change decoded yet loses its
# replica identity (REPLICA IDENTITY NOTHING); the parent keeps its key.
# The worker checks every leaf of a streamed partitioned table after DDL of
# a relation it does not know (cdc_relmap.c cdc_relcache_callback).
$sql->(q{CREATE TABLE tp (id integer PRIMARY KEY, v text) PARTITION BY RANGE (id);
CREATE TABLE tp1 PARTITION OF tp FOR VALUES FROM (0) TO (100);
CREATE TABLE tp2 PARTITION OF tp FOR VALUES FROM (100) TO (200);
INSERT INTO tp VALUES (1, 'x'), (101, 'x')});
$sql->(q{SELECT egress_add_stream('sp', 'tp', method => 'LOG_BASED', destination => 'p')});
wait_stream_state($node, 'sp', 'streaming', 60);
$sql->(q{ALTER TABLE tp2 REPLICA IDENTITY NOTHING});
ok(poll_until('C: the worker reacts to the leaf without a replica identity', 20, sub {
	my $r = stream_row($node, 'sp');
	return defined $r && $r->{state} eq 'error' && ($r->{last_error} // '') =~ /replica identity/;
}), 'C: a partitioned table with a leaf without a replica identity: the stream is in state error')
  or diag explain stream_row($node, 'sp');
ok(poll_until('C: the application\'s UPDATE of the leaf works again', 20, sub {
	my ($r) = $node->psql('postgres', q{UPDATE tp SET v = 'y' WHERE id = 101});
	return $r == 0;
}), 'C: after the worker reacted, the application\'s UPDATE of the leaf works');
$sql->(q{SELECT egress_remove_stream('sp')});

# ---------------------------------------------------------------------------
# D. DROP PUBLICATION by hand: a new slot, a resync, a reason
# ---------------------------------------------------------------------------
$sql->(q{DROP PUBLICATION pg_egress_p});
$sql->(q{INSERT INTO tc VALUES (5, 'after drop')});
wait_stream_where($node, 'sc', q{last_error LIKE '%publication%' OR last_error LIKE '%created anew%'}, 30,
	'D: the stream says its publication was dropped');
wait_stream_state($node, 'sc', 'streaming', 60);
$sql->(q{INSERT INTO tc VALUES (6, 'later')});
ok(poll_until('D: row 6 delivered', 60, sub { grep { $_ == 6 } change_ids($dir, 'public-tc') }),
	'D: changes flow again after the publication was dropped by hand');
is($sql->(q{SELECT count(*) FROM pg_publication WHERE pubname = 'pg_egress_p'}), '1',
	'D: the publication exists again');

# ---------------------------------------------------------------------------
# D2. DROP PUBLICATION by hand while the CDC worker does not decode (here:
# its streams paused; as well: its destination down, the worker in
# back-off), a change, then an egress_add_stream() to the destination,
# which creates the publication anew (egress_publication_sync).  pgoutput
# reads the change with the catalog as of the change, where the
# publication did not exist, so the slot can never be decoded past it,
# whatever exists now; the same happens when a superuser makes the
# publication again by hand.
# ---------------------------------------------------------------------------
$sql->(q{CREATE TABLE te (id integer PRIMARY KEY)});
$sql->(q{SELECT egress_pause_stream(n) FROM unnest(ARRAY['sa', 'sb', 'sc', 'sm']) n});
ok(poll_until('D2: no CDC worker', 30, sub { !cdc_worker_pids($node) }), 'D2: the CDC worker exits while paused');
$sql->(q{DROP PUBLICATION pg_egress_p});
$sql->(q{INSERT INTO tc VALUES (7, 'between')});
$sql->(q{SELECT egress_add_stream('se', 'te', method => 'LOG_BASED', destination => 'p')});
is($sql->(q{SELECT count(*) FROM pg_publication WHERE pubname = 'pg_egress_p'}), '1',
	'D2: egress_add_stream made the publication again');
$sql->(q{SELECT egress_resume_stream(n) FROM unnest(ARRAY['sa', 'sb', 'sc', 'sm']) n});
$sql->(q{INSERT INTO tc VALUES (8, 'after repair')});
# Fixed in cdc.c (after_error): pgoutput's "publication "pg_egress_<dest>"
# does not exist" (or "cache lookup failed for publication N", which
# follows it in a later session) gives the slot up whether or not the
# publication exists now: pgoutput raises it with the historic catalog of
# the change, so it never goes away.  The new slot comes with a resync,
# which delivers row 8 (by the sync or as a change).
ok(poll_until('D2: row 8 delivered', 40, sub { grep { $_ == 8 } all_ids($dir, 'public-tc') }),
	'D2: a publication dropped by hand and made again does not leave the stream stuck')
  or diag explain stream_row($node, 'sc');
ok(poll_until('D2: the slot was given up, saying why', 15, sub {
	slurp_file($node->logfile) =~ /dropped replication slot "pg_egress_p" of destination "p": publication "pg_egress_p" of destination "p" was dropped while/;
}), 'D2: the server log says why the slot was given up');
wait_stream_state($node, 'sc', 'streaming', 60);
$sql->(q{INSERT INTO tc VALUES (9, 'after recovery')});
ok(poll_until('D2: row 9 delivered as a change', 30, sub { grep { $_ == 9 } change_ids($dir, 'public-tc') }),
	'D2: changes flow again after the recovery');

# ---------------------------------------------------------------------------
# F. a file destination made unwritable while changes pile up past
# pg_egress.max_slot_wal on its pgoutput slot, then writable again: the
# slot is given up, a new one made (publication in step), the stream synced
# again; every row arrives.
# ---------------------------------------------------------------------------
my $dirf = new_outdir($node, 'f');
add_destination($node, 'f', $dirf);
$sql->(q{CREATE TABLE tf (id integer PRIMARY KEY, v text)});
$sql->(q{SELECT egress_add_stream('sf', 'tf', method => 'LOG_BASED', destination => 'f')});
wait_stream_state($node, 'sf', 'streaming', 60);
chmod 0500, $dirf;
$sql->(q{ALTER SYSTEM SET pg_egress.max_slot_wal = '2MB'; SELECT pg_reload_conf()});
poll_until('max_slot_wal reloaded', 30, sub { $sql->('SHOW pg_egress.max_slot_wal') eq '2MB' });
$sql->(q{INSERT INTO tf SELECT i, repeat(md5(i::text), 2) FROM generate_series(1, 30000) i});
wait_stream_where($node, 'sf', q{last_error LIKE '%max_slot_wal%'}, 180,
	'F: the stream says its slot held too much WAL');
chmod 0700, $dirf;
$sql->(q{ALTER SYSTEM RESET pg_egress.max_slot_wal; SELECT pg_reload_conf()});
wait_stream_state($node, 'sf', 'streaming', 60);
$sql->(q{INSERT INTO tf VALUES (30001, 'after')});
ok(poll_until('F: every row delivered', 60, sub {
	my %ids = map { $_->{record}{id} => 1 }
	  grep { ($_->{type} // '') eq 'RECORD' && ($_->{stream} // '') eq 'public-tf' }
	  map { @{ $_->{messages} } } read_batches($dirf, qr/\.jsonl$/);
	return scalar(keys %ids) == 30001;
}), 'F: after the destination is back, every row arrived (new slot, new sync)');

# ---------------------------------------------------------------------------
# G. a destination switched from wal2json to pgoutput by removing it and
# adding it again under its name in one transaction: the new destination
# asked for pgoutput (the default; it got its publication), so its slot
# must decode with pgoutput and a stream with a row filter be accepted.
# ---------------------------------------------------------------------------
my $dirw = new_outdir($node, 'w');
$sql->(q{CREATE TABLE tw (id integer PRIMARY KEY); CREATE TABLE tx (id integer PRIMARY KEY)});
add_destination($node, 'w', $dirw, '{"decoder": "wal2json"}');
$sql->(q{SELECT egress_add_stream('sw', 'tw', method => 'LOG_BASED', destination => 'w')});
wait_stream_state($node, 'sw', 'streaming', 60);
# the catalog part (src/catalog/sqlfuncs.c): in the transaction that
# removes and adds the destination again, the old wal2json slot is in
# egress.dropped_slot and does not make egress_add_stream take the new
# destination for a wal2json one (rolled back: the worker never sees it)
($ret, $out, $err) = $node->psql('postgres', q{BEGIN; SELECT egress_remove_destination('w', true);
SELECT egress_add_destination('w', } . sql_quote(file_url(new_outdir($node, 'w1'))) . q{);
SELECT egress_add_stream('sy', 'tx', method => 'LOG_BASED', destination => 'w', options => '{"filter": "id > 1"}');
\\echo added
ROLLBACK}, on_error_stop => 1);
like($out, qr/added/, 'G: a filter is accepted for the re-added destination while its old wal2json slot awaits dropping')
  or diag $err;
$sql->(q{BEGIN; SELECT egress_remove_destination('w', true);
SELECT egress_add_destination('w', } . sql_quote(file_url(new_outdir($node, 'w2'))) . q{);
SELECT egress_add_stream('sw2', 'tw', method => 'LOG_BASED', destination => 'w'); COMMIT});
wait_stream_state($node, 'sw2', 'streaming', 60);
# Fixed in cdc_config.c (adoption_allowed) and sqlfuncs.c: a slot listed in
# egress.dropped_slot is adopted only when its plugin is the destination's
# decoder (option "decoder", pgoutput by default), else dropped and made
# anew with the right plugin; egress_add_stream does not take the plugin of
# a listed slot for the destination's.
is($sql->(q{SELECT plugin FROM pg_replication_slots WHERE slot_name = 'pg_egress_w'}), 'pgoutput',
	'G: the destination added again with decoder pgoutput decodes with pgoutput');
($ret, $out, $err) = $node->psql('postgres',
	q{SELECT egress_add_stream('sx', 'tx', method => 'LOG_BASED', destination => 'w', options => '{"filter": "id > 1"}')});
is($ret, 0, 'G: ... and takes a stream with a row filter') or diag $err;

# ---------------------------------------------------------------------------
# E. DROP EXTENSION: what is left
# ---------------------------------------------------------------------------
$sql->(q{DROP EXTENSION pg_egress});
ok(poll_until('E: no CDC worker left', 30, sub { !cdc_worker_pids($node) }), 'E: the CDC worker exits');
# Fixed in dbworker.c (track_extension_objects / drop_extension_leftovers):
# the publications pg_egress_<dest> are not extension members (made by
# egress_add_destination after CREATE EXTENSION) and slots are no objects
# at all, so nothing dropped them with the extension: a left slot held WAL
# forever, a left publication kept its tables published and made the
# destination's name unusable after CREATE EXTENSION.  The database worker
# now remembers them and drops them once the extension is gone.
ok(poll_until('E: publications gone', 15, sub {
	$sql->(q{SELECT count(*) FROM pg_publication WHERE pubname LIKE 'pg\_egress\_%'}) eq '0' }),
	'E: no publication of pg_egress is left after DROP EXTENSION');
ok(poll_until('E: slots gone', 15, sub {
	$sql->(q{SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pg\_egress\_%'}) eq '0' }),
	'E: no replication slot of pg_egress is left after DROP EXTENSION');
$sql->(q{CREATE EXTENSION pg_egress});
($ret, $out, $err) = $node->psql('postgres',
	'SELECT egress_add_destination(\'p\', ' . sql_quote(file_url(new_outdir($node, 'p2'))) . ')');
is($ret, 0, 'E: after CREATE EXTENSION the destination can be added again under its name')
  or diag $err;

$node->stop;
done_testing();
