
# LOG_BASED on pgoutput (issue 11), the acceptance checks that need one
# cluster each:
#
# 1. The every-type table: with the database's output settings changed
#    (DateStyle, IntervalStyle, extra_float_digits, bytea_output, a time
#    zone far from UTC), the CDC RECORD of each row (an UPDATE that changes
#    nothing) is byte for byte the FULL_TABLE RECORD of the same row once
#    the "_sdc_*" members are cut out; so is the LOG_BASED initial sync's.
#    The destination decodes with pgoutput (the default) through its own
#    publication pg_egress_<destination>.
# 2. Dotted and quoted names: "a.b"."c.d", a."b.c.d" and "We""ird"."Ta Ble"
#    are three streams; "a.b.c".d, not streamed, sends nothing.
# 3. REPLICA IDENTITY FULL / DEFAULT / USING INDEX stream (deletes carry
#    the key), NOTHING is refused at add time (SQLSTATE 55000) and the table
#    is not put into the publication (the application's UPDATEs of it keep
#    working).
# 4. The publication follows the destination's LOG_BASED streams:
#    egress_add_stream, egress_add_streams, follow_new_tables,
#    egress_remove_stream, a rolled back add, a refused add, FULL_TABLE
#    streams (not in it), egress_remove_destination (drops it); a
#    publication of that name made by someone else is never taken over; a
#    wal2json destination has none.
# 5. A cluster whose output_plugin_libraries is at its default
#    ('pgoutput, test_decoding') runs a LOG_BASED stream with no extra
#    setting (and refuses a wal2json destination's stream with a hint).
# 6. RENAME of the table and of a column mid-stream: every change file
#    stays well formed (a SCHEMA before the RECORDs of its stream id).
# 7. The destination's publication dropped by hand: the stream shows it,
#    and egress_resume_stream brings it back (as for a dropped slot).

use strict;
use warnings;
use utf8;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use EgressTest;

my $node = create_node('cdc_pgoutput', cdc => 1);
my $log_start = -s $node->logfile;
my $fulldir = new_outdir($node, 'full');
my $cdcdir = new_outdir($node, 'cdc');

# (waits for the server first: after a crash the later checks still run)
sub sql { server_up($node); return $node->safe_psql('postgres', $_[0]); }

my @columns = every_type_table($node);

# Output settings that move the server's text output; every later session
# (the workers' included) starts with them.
sql(q{
ALTER DATABASE postgres SET DateStyle = 'SQL, DMY';
ALTER DATABASE postgres SET IntervalStyle = 'sql_standard';
ALTER DATABASE postgres SET extra_float_digits = 0;
ALTER DATABASE postgres SET bytea_output = 'escape';
});

sql(q{
CREATE SCHEMA "a.b";
CREATE TABLE "a.b"."c.d" (id integer PRIMARY KEY, v text);
CREATE SCHEMA a;
CREATE TABLE a."b.c.d" (id integer PRIMARY KEY, v text);
CREATE SCHEMA "a.b.c";
CREATE TABLE "a.b.c".d (id integer PRIMARY KEY, v text);
CREATE SCHEMA "We""ird";
CREATE TABLE "We""ird"."Ta Ble" (id integer PRIMARY KEY, v text);

CREATE TABLE ri_full (id integer PRIMARY KEY, a text, b integer);
ALTER TABLE ri_full REPLICA IDENTITY FULL;
CREATE TABLE ri_default (id integer PRIMARY KEY, v text);
CREATE TABLE ri_index (u integer NOT NULL, v text);
CREATE UNIQUE INDEX ri_index_u ON ri_index (u);
ALTER TABLE ri_index REPLICA IDENTITY USING INDEX ri_index_u;
CREATE TABLE ri_index_pk (id integer PRIMARY KEY, u integer NOT NULL, v text);
CREATE UNIQUE INDEX ri_index_pk_u ON ri_index_pk (u);
ALTER TABLE ri_index_pk REPLICA IDENTITY USING INDEX ri_index_pk_u;
CREATE TABLE ri_nothing (id integer PRIMARY KEY, v text);
ALTER TABLE ri_nothing REPLICA IDENTITY NOTHING;
INSERT INTO ri_full VALUES (1, 'x', 10), (2, 'y', 20), (3, 'z', 30);
INSERT INTO ri_default SELECT i, 'v' || i FROM generate_series(1, 5) i;
INSERT INTO ri_index SELECT i, 'v' || i FROM generate_series(1, 5) i;
INSERT INTO ri_index_pk SELECT i, i * 10, 'v' || i FROM generate_series(1, 5) i;
INSERT INTO ri_nothing SELECT i, 'v' || i FROM generate_series(1, 5) i;
});

add_destination($node, 'full', $fulldir);
add_destination($node, 'cdc', $cdcdir);

# ---------------------------------------------------------------------------
# 1. the every-type table: CDC RECORD == FULL_TABLE RECORD, byte for byte
# ---------------------------------------------------------------------------
sql(q{SELECT egress_add_stream('ft', 't', 'FULL_TABLE', 'full')});
wait_stream_state($node, 'ft', 'synced');
sql(q{SELECT egress_add_stream('lb', 't', method => 'LOG_BASED', destination => 'cdc', options => '{"debug_lsn": true}')});
wait_stream_state($node, 'lb', 'streaming');

my $lb = stream_row_wait($node, 'lb');
is($lb->{slot_name}, 'pg_egress_cdc', 'the LOG_BASED stream uses the default slot pg_egress_cdc');
my $slot = slot_row($node, $lb->{slot_name} // 'pg_egress_cdc');
is($slot ? $slot->{plugin} : undef, 'pgoutput', 'a new destination decodes with pgoutput (slot plugin)');
ok(publication_row($node, 'pg_egress_cdc'), 'the destination has its publication pg_egress_cdc');
ok((grep { $_ eq 'public.t' } publication_tables($node, 'pg_egress_cdc')), '... which holds public.t');

sql('UPDATE t SET c_nn = c_nn');
wait_caught_up($node, 'lb');

# id (raw text) -> RECORD line
sub lines_by_id
{
	my ($stream, @batches) = @_;
	my %h;
	foreach my $b (@batches)
	{
		for my $i (0 .. $#{ $b->{messages} })
		{
			my $m = $b->{messages}[$i];
			next unless ($m->{type} // '') eq 'RECORD' && $m->{stream} eq $stream;
			next if defined $m->{record}{_sdc_deleted_at};
			my $id = raw_record_value($b->{lines}[$i], 'id');
			push @{ $h{$id} }, $b->{lines}[$i];
		}
	}
	return \%h;
}

my $ft = lines_by_id('public-t', read_batches($fulldir, qr/^ft-\d+-\d{6}\.jsonl$/));
my $sync = lines_by_id('public-t', sync_batches($cdcdir, 'lb'));
my $chg = lines_by_id('public-t', cdc_batches($cdcdir));
is_deeply([ sort { $a <=> $b } keys %$ft ], [ 1 .. 6 ], 'FULL_TABLE: ids 1..6');
is_deeply([ sort { $a <=> $b } keys %$sync ], [ 1 .. 6 ], 'LOG_BASED initial sync: ids 1..6');
is_deeply([ sort { $a <=> $b } keys %$chg ], [ 1 .. 6 ], 'changes: ids 1..6');
foreach my $id (1 .. 6)
{
	my $want = $ft->{$id} ? record_text_without_sdc($ft->{$id}[0]) : 'missing';
	is_deeply([ map { $_->[0] } raw_pairs($want eq 'missing' ? '{}' : $want) ], \@columns,
		"FULL_TABLE RECORD of id $id: every column in order");
	foreach my $part ([ 'initial sync', $sync ], [ 'change (UPDATE)', $chg ])
	{
		my ($what, $h) = @$part;
		my @got = map { record_text_without_sdc($_) } @{ $h->{$id} // [] };
		is(scalar(@got), 1, "$what: one RECORD of id $id");
		is($got[0] // 'missing', $want, "$what RECORD of id $id is byte for byte the FULL_TABLE RECORD (without _sdc_*)");
	}
}
my @cdc_schema = grep { $_->{stream} eq 'public-t' } messages_of_type('SCHEMA', cdc_batches($cdcdir));
my ($ft_schema) = messages_of_type('SCHEMA', read_batches($fulldir, qr/^ft-/));
ok(@cdc_schema && $ft_schema, 'SCHEMA messages of both');
if (@cdc_schema && $ft_schema)
{
	my %p = %{ $cdc_schema[-1]{schema}{properties} };
	delete $p{$_} foreach grep { /^_sdc_/ } keys %p;
	ok(same_value(\%p, $ft_schema->{schema}{properties}),
		'the change SCHEMA\'s properties without _sdc_* are the FULL_TABLE SCHEMA\'s');
	is_deeply($cdc_schema[-1]{key_properties}, $ft_schema->{key_properties}, 'same key_properties');
}

# More types rendered through their own output functions (whose text may
# depend on the session: reg* names on the search path, ranges of
# timestamps on DateStyle and TimeZone, money on lc_monetary): the same
# byte for byte identity.
sql(q{
CREATE SCHEMA xs;
CREATE TABLE xs.other (id integer);
CREATE TABLE xt (
	id integer PRIMARY KEY,
	c_regclass regclass, c_regclass2 regclass, c_regtype regtype, c_regproc regprocedure,
	c_regns regnamespace, c_money money, c_xml xml, c_tsv tsvector, c_macaddr macaddr,
	c_cidr cidr, c_i4r int4range, c_tsr tsrange, c_tstzr tstzrange, c_dr daterange,
	c_box box, c_path path, c_jsonpath jsonpath, c_lsn pg_lsn, c_oid oid, c_varbit varbit,
	c_ts_arr timestamptz[], c_num_arr numeric[], c_float_arr float8[]);
INSERT INTO xt VALUES (1, 't', 'xs.other', 'timestamp with time zone', 'pg_catalog.lower(text)',
	'xs', 12.34, '<a b="c">d &amp; e</a>', 'the quick brown fox', '08:00:2b:01:02:03',
	'10.1.0.0/16', '[1,10)', '[2024-01-15 13:45:30.5,2024-02-01)', '[2024-01-15 13:45:30.5+02,infinity)',
	'[2024-01-15,2024-02-01)', '(1,2),(3,4)', '[(0,0),(1,1.5)]', '$.a[*] ? (@ > 1)', '16/B374D848', 4000000000,
	B'10110', '{"2024-01-15 13:45:30.5+02","-infinity"}', '{1.50,NaN,-0.000001}', '{0.1,1e300,-Infinity}'),
	(2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
	NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
});
sql(q{SELECT egress_add_stream('ftx', 'xt', 'FULL_TABLE', 'full')});
wait_stream_state($node, 'ftx', 'synced');
sql(q{SELECT egress_add_stream('lbx', 'xt', method => 'LOG_BASED', destination => 'cdc')});
wait_stream_state($node, 'lbx', 'streaming');
sql('UPDATE xt SET id = id');
wait_caught_up($node, 'lbx');
{
	my $fx = lines_by_id('public-xt', read_batches($fulldir, qr/^ftx-\d+-\d{6}\.jsonl$/));
	my $sx = lines_by_id('public-xt', sync_batches($cdcdir, 'lbx'));
	my $cx = lines_by_id('public-xt', cdc_batches($cdcdir));
	foreach my $id (1, 2)
	{
		my $want = $fx->{$id} ? record_text_without_sdc($fx->{$id}[0]) : 'missing';
		is(($sx->{$id} ? record_text_without_sdc($sx->{$id}[0]) : 'missing'), $want,
			"more types, id $id: the initial-sync RECORD is byte for byte the FULL_TABLE RECORD");
		is(($cx->{$id} ? record_text_without_sdc($cx->{$id}[0]) : 'missing'), $want,
			"more types, id $id: the change RECORD is byte for byte the FULL_TABLE RECORD");
	}
	diag 'FULL_TABLE RECORD of the more types: ' . ($fx->{1} ? record_text($fx->{1}[0]) : 'missing');
}

# ---------------------------------------------------------------------------
# 2. dotted and quoted names
# ---------------------------------------------------------------------------
my %dot = (
	dot1 => [ '"a.b"."c.d"', 'a.b-c.d' ],
	dot2 => [ 'a."b.c.d"', 'a-b.c.d' ],
	dot3 => [ '"We""ird"."Ta Ble"', 'We"ird-Ta Ble' ]);
foreach my $s (sort keys %dot)
{
	sql("SELECT egress_add_stream('$s', " . sql_quote($dot{$s}[0]) . ", method => 'LOG_BASED', destination => 'cdc')");
}
wait_stream_state($node, $_, 'streaming') foreach sort keys %dot;
is_deeply([ publication_tables($node, 'pg_egress_cdc') ],
	[ sort('"We""ird"."Ta Ble"', '"a.b"."c.d"', 'a."b.c.d"', 'public.t', 'public.xt') ],
	'the publication holds the three tables by their own names (not "a.b.c".d)');
my @all_dotted = ('"a.b"."c.d"', 'a."b.c.d"', '"a.b.c".d', '"We""ird"."Ta Ble"');
sql('BEGIN; ' . join(' ', map { "INSERT INTO $_ SELECT i, " . sql_quote($_) . " || i FROM generate_series(1, 4) i;" } @all_dotted) . ' COMMIT');
foreach my $t (@all_dotted)
{
	sql("UPDATE $t SET v = 'updated ' || " . sql_quote($t) . ' WHERE id = 2');
	sql("DELETE FROM $t WHERE id = 3");
}
sql(q{UPDATE a."b.c.d" SET id = 40 WHERE id = 4});
wait_caught_up($node, $_) foreach sort keys %dot;
foreach my $s (sort keys %dot)
{
	my ($table, $sid) = @{ $dot{$s} };
	compare_states(mirror($cdcdir, $sid, ['id']), table_state($node, $table, ['id']), "$s ($table -> stream id $sid)");
	my @recs = grep { $_->{stream} eq $sid } records_of(cdc_batches($cdcdir));
	my @foreign = grep { !defined $_->{record}{_sdc_deleted_at} && ($_->{record}{v} // '') !~ /^(updated )?\Q$table\E/ } @recs;
	is(scalar(@foreign), 0, "$s: no row of another table under stream id $sid (" . scalar(@recs) . ' records)');
}
my @decoy = grep { ($_->{stream} // '') =~ /^a\.b\.c-/ } map { @{ $_->{messages} } } cdc_batches($cdcdir);
is(scalar(@decoy), 0, 'nothing of the table "a.b.c".d, which has no stream');

# ---------------------------------------------------------------------------
# 3. replica identity
# ---------------------------------------------------------------------------
my ($state, $err) = sqlstate_of($node,
	q{SELECT egress_add_stream('ri_n', 'ri_nothing', method => 'LOG_BASED', destination => 'cdc')});
is($state, '55000', 'REPLICA IDENTITY NOTHING: refused at add time with SQLSTATE 55000') or diag $err;
like($err, qr/ri_nothing/, '... the message names the table') or diag $err;
like($err, qr/HINT:/, '... with a hint') or diag $err;
is(sql(q{SELECT count(*) FROM egress.stream WHERE name = 'ri_n'}), '0', '... no stream created');
ok(!(grep { /ri_nothing/ } publication_tables($node, 'pg_egress_cdc')), '... the table is not in the publication');
($state, $err) = sqlstate_of($node, q{UPDATE ri_nothing SET v = 'app update' WHERE id = 1; DELETE FROM ri_nothing WHERE id = 2});
is($state, '', 'the application\'s UPDATE and DELETE of the refused table still work') or diag $err;

# an UNLOGGED table writes no WAL: its changes could never be decoded
sql(q{CREATE UNLOGGED TABLE unl (id integer PRIMARY KEY, v text)});
($state, $err) = sqlstate_of($node,
	q{SELECT egress_add_stream('unl_s', 'unl', method => 'LOG_BASED', destination => 'cdc')});
isnt($state, '', 'an UNLOGGED table is refused for LOG_BASED') or diag 'accepted';
is(sql(q{SELECT count(*) FROM egress.stream WHERE name = 'unl_s'}), '0', '... no stream created');
sql(q{SELECT egress_remove_stream('unl_s')}) if $state eq '';

sql(q{SELECT egress_add_stream('ri_f', 'ri_full', method => 'LOG_BASED', destination => 'cdc')});
sql(q{SELECT egress_add_stream('ri_d', 'ri_default', method => 'LOG_BASED', destination => 'cdc')});
sql(q{SELECT egress_add_stream('ri_i', 'ri_index', method => 'LOG_BASED', destination => 'cdc')});
($state, $err) = sqlstate_of($node,
	q{SELECT egress_add_stream('ri_ip', 'ri_index_pk', method => 'LOG_BASED', destination => 'cdc')});
my $ip_added = $state eq '';
ok($ip_added || $state eq '55000',
	'a primary key plus REPLICA IDENTITY USING another index: added, or refused with 55000 ('
	  . ($state || 'added') . ')') or diag $err;
my @ri = ('ri_f', 'ri_d', 'ri_i', ($ip_added ? 'ri_ip' : ()));
wait_stream_state($node, $_, 'streaming') foreach @ri;

sql(q{INSERT INTO ri_full VALUES (4, 'w', 40); UPDATE ri_full SET b = 21 WHERE id = 2; UPDATE ri_full SET id = 30 WHERE id = 3; DELETE FROM ri_full WHERE id = 1});
sql(q{INSERT INTO ri_default VALUES (6, 'v6'); UPDATE ri_default SET v = 'u' WHERE id = 2; UPDATE ri_default SET id = 30 WHERE id = 3; DELETE FROM ri_default WHERE id = 1});
sql(q{INSERT INTO ri_index VALUES (6, 'v6'); UPDATE ri_index SET v = 'u' WHERE u = 2; UPDATE ri_index SET u = 30 WHERE u = 3; DELETE FROM ri_index WHERE u = 1});
sql(q{INSERT INTO ri_index_pk VALUES (6, 60, 'v6'); UPDATE ri_index_pk SET v = 'u' WHERE id = 2; UPDATE ri_index_pk SET u = 300 WHERE id = 3; UPDATE ri_index_pk SET id = 40 WHERE id = 4; DELETE FROM ri_index_pk WHERE id = 1});
wait_caught_up($node, $_) foreach @ri;

my %ri_key = (ri_full => ['id'], ri_default => ['id'], ri_index => ['u'], ri_index_pk => ['id']);
my %ri_stream = (ri_full => 'ri_f', ri_default => 'ri_d', ri_index => 'ri_i', ri_index_pk => 'ri_ip');
foreach my $t (qw(ri_full ri_default ri_index ri_index_pk))
{
	next if $t eq 'ri_index_pk' && !$ip_added;
	my $sid = "public-$t";
	my @msgs = grep { ($_->{stream} // '') eq $sid } map { @{ $_->{messages} } } cdc_batches($cdcdir);
	my @dels = grep { $_->{type} eq 'RECORD' && defined $_->{record}{_sdc_deleted_at} } @msgs;
	my ($schema) = grep { $_->{type} eq 'SCHEMA' } @msgs;
	ok($schema, "$t: a SCHEMA in the change files") or next;
	my @kp = @{ $schema->{key_properties} };
	ok(scalar(@dels) >= 1, "$t: delete RECORDs (" . scalar(@dels) . ')');
	my @keyless = grep {
		my $r = $_->{record};
		!@kp || grep { !defined $r->{$_} } @kp
	} @dels;
	is(scalar(@keyless), 0, "$t: SCHEMA key_properties [@kp] is not empty and every delete RECORD carries it")
	  or diag 'delete records: ' . join(' ', map { JSON::PP->new->canonical->allow_bignum->allow_nonref->encode($_->{record}) } @dels);
	if ($t eq 'ri_full')
	{
		my ($d1) = grep { ($_->{record}{id} // 0) == 1 } @dels;
		is_deeply($d1 ? [ @{ $d1->{record} }{qw(id a b)} ] : [], [ 1, 'x', 10 ], 'ri_full: the delete carries the whole old row');
	}
	compare_states(mirror($cdcdir, $sid, $ri_key{$t}), table_state($node, $t, $ri_key{$t}),
		"$t ($ri_stream{$t}): keyed by @{ $ri_key{$t} }");
}

# ---------------------------------------------------------------------------
# 4. the publication follows the destination's LOG_BASED streams
# ---------------------------------------------------------------------------
my $pubdir = new_outdir($node, 'pubd');
sql(q{
CREATE SCHEMA pubs;
CREATE TABLE pubs.pa (id integer PRIMARY KEY, v text);
CREATE TABLE pubs.pb (id integer PRIMARY KEY, v text);
CREATE TABLE pubs.pc (id integer PRIMARY KEY, v text);
CREATE TABLE pubs.q1 (id integer PRIMARY KEY, v text);
CREATE TABLE pubs.q2 (id integer PRIMARY KEY, v text);
CREATE TABLE pubs.nothing (id integer PRIMARY KEY, v text);
ALTER TABLE pubs.nothing REPLICA IDENTITY NOTHING;
CREATE TABLE pubs.pp (id integer, k integer, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
CREATE TABLE pubs.pp1 PARTITION OF pubs.pp FOR VALUES FROM (MINVALUE) TO (100);
CREATE TABLE pubs.pp2 PARTITION OF pubs.pp FOR VALUES FROM (100) TO (MAXVALUE);
});
add_destination($node, 'pubd', $pubdir);
my $pub = 'pg_egress_pubd';
my $prow = publication_row($node, $pub);
ok($prow, 'egress_add_destination creates the publication pg_egress_pubd');
if ($prow)
{
	is_deeply([ map { $prow->{$_} ? 1 : 0 } qw(puballtables pubinsert pubupdate pubdelete pubtruncate pubviaroot) ],
		[ 0, 1, 1, 1, 1, 0 ],
		'... not FOR ALL TABLES; publishes insert, update, delete, truncate; publish_via_partition_root off');
}
is_deeply([ publication_tables($node, $pub) ], [], '... with no tables');

sub pub_is
{
	my ($want, $label) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	is_deeply([ publication_tables($node, $pub) ], [ sort @$want ], "publication: $label");
}

sql(q{SELECT egress_add_stream('pa', 'pubs.pa', method => 'LOG_BASED', destination => 'pubd')});
pub_is([qw(pubs.pa)], 'egress_add_stream adds the table');
sql(q{SELECT egress_add_stream('pb', 'pubs.pb', 'FULL_TABLE', 'pubd')});
pub_is([qw(pubs.pa)], 'a FULL_TABLE stream of the destination is not in it');
sql(q{BEGIN; SELECT egress_add_stream('pc', 'pubs.pc', method => 'LOG_BASED', destination => 'pubd'); ROLLBACK});
pub_is([qw(pubs.pa)], 'a rolled back egress_add_stream leaves it as it was');
($state, $err) = sqlstate_of($node, q{SELECT egress_add_stream('pn', 'pubs.nothing', method => 'LOG_BASED', destination => 'pubd')});
is($state, '55000', 'REPLICA IDENTITY NOTHING refused (55000)') or diag $err;
pub_is([qw(pubs.pa)], 'a refused egress_add_stream leaves it as it was');
my $added = sql(q{SELECT egress_add_streams('pubs.q*', method => 'LOG_BASED', destination => 'pubd')});
like($added, qr/pubs_q1.*pubs_q2/, "egress_add_streams added two streams ($added)");
pub_is([qw(pubs.pa pubs.q1 pubs.q2)], 'egress_add_streams adds every table');
sql(q{SELECT egress_add_stream('pp', 'pubs.pp', method => 'LOG_BASED', destination => 'pubd')});
pub_is([qw(pubs.pa pubs.q1 pubs.q2 pubs.pp1 pubs.pp2)], 'a partitioned table: its partitions');
sql(q{SELECT egress_add_streams('pubs.f*', method => 'LOG_BASED', destination => 'pubd', options => '{"follow_new_tables": true}')});
sql(q{CREATE TABLE pubs.f1 (id integer PRIMARY KEY, v text)});
pub_is([qw(pubs.pa pubs.q1 pubs.q2 pubs.pp1 pubs.pp2 pubs.f1)], 'follow_new_tables: a new matching table is added');
sql(q{ALTER TABLE pubs.pp DETACH PARTITION pubs.pp2});
sql(q{CREATE TABLE pubs.pp3 PARTITION OF pubs.pp FOR VALUES FROM (1000) TO (2000)});
pub_is([qw(pubs.pa pubs.q1 pubs.q2 pubs.pp1 pubs.pp3 pubs.f1)], 'a partition created later is in it, a detached one is not');
sql(q{SELECT egress_pause_stream('pubs_q1')});
pub_is([qw(pubs.pa pubs.q1 pubs.q2 pubs.pp1 pubs.pp3 pubs.f1)], 'a paused stream stays in it');
wait_stream_state($node, 'pubs_q2', 'streaming');
sql(q{INSERT INTO pubs.q2 VALUES (1, 'one'), (2, 'two'); INSERT INTO pubs.f1 VALUES (1, 'f')});
wait_caught_up($node, 'pubs_q2');
compare_states(mirror($pubdir, 'pubs-q2', ['id']), table_state($node, 'pubs.q2', ['id']), 'a table added to the publication later streams');
my ($f1_stream) = split /\n/, sql(q{SELECT name FROM egress.stream WHERE name LIKE '%f1%'});
if (defined $f1_stream)
{
	wait_caught_up($node, $f1_stream);
	compare_states(mirror($pubdir, 'pubs-f1', ['id']), table_state($node, 'pubs.f1', ['id']), 'a followed new table streams');
}
else
{
	fail('a stream for the followed table pubs.f1');
}
sql(q{SELECT egress_remove_stream('pa')});
pub_is([qw(pubs.q1 pubs.q2 pubs.pp1 pubs.pp3 pubs.f1)], 'egress_remove_stream removes the table');
sql(q{BEGIN; SELECT egress_remove_stream('pubs_q2'); ROLLBACK});
pub_is([qw(pubs.q1 pubs.q2 pubs.pp1 pubs.pp3 pubs.f1)], 'a rolled back egress_remove_stream leaves it as it was');
sql(q{SELECT egress_remove_destination('pubd', true)});
ok(!publication_row($node, $pub), 'egress_remove_destination drops the publication');

# someone else's publication under the name is never taken over
sql(q{CREATE PUBLICATION pg_egress_taken FOR TABLE pubs.pc});
($state, $err) = sqlstate_of($node,
	'SELECT egress_add_destination(' . sql_quote('taken') . ', ' . sql_quote(file_url($pubdir)) . ')');
isnt($state, '', 'a destination whose publication name is taken is refused') or diag $err;
like($err, qr/pg_egress_taken/, '... the error names the publication') or diag $err;
is(sql(q{SELECT count(*) FROM egress.destination WHERE name = 'taken'}), '0', '... nothing created');
is_deeply([ publication_tables($node, 'pg_egress_taken') ], ['pubs.pc'], '... the publication is untouched');

# a wal2json destination has no publication and a wal2json slot
my $wdir = new_outdir($node, 'w2j');
add_destination($node, 'w2j', $wdir, '{"decoder": "wal2json"}');
ok(!publication_row($node, 'pg_egress_w2j'), 'a wal2json destination has no publication');
sql(q{SELECT egress_add_stream('w1', 'pubs.pc', method => 'LOG_BASED', destination => 'w2j')});
wait_stream_state($node, 'w1', 'streaming');
$slot = slot_row($node, stream_row_wait($node, 'w1')->{slot_name} // 'pg_egress_w2j');
is($slot ? $slot->{plugin} : undef, 'wal2json', 'the wal2json destination\'s slot is a wal2json slot');
ok(!publication_row($node, 'pg_egress_w2j'), '... and still no publication once it streams');

# ---------------------------------------------------------------------------
# 6. RENAME of the table (and of a column) mid-stream: relations come by
#    OID, so the changes keep coming; whatever stream id they carry, every
#    RECORD of a file follows a SCHEMA of its stream id in that file
# ---------------------------------------------------------------------------
my $rendir = new_outdir($node, 'ren');
add_destination($node, 'ren', $rendir);
sql(q{CREATE TABLE ren_t (id integer PRIMARY KEY, v text); INSERT INTO ren_t VALUES (1, 'a')});
sql(q{SELECT egress_add_stream('ren_s', 'ren_t', method => 'LOG_BASED', destination => 'ren')});
wait_stream_state($node, 'ren_s', 'streaming');
sql(q{INSERT INTO ren_t VALUES (2, 'b'); ALTER TABLE ren_t RENAME TO ren_t2; INSERT INTO ren_t2 VALUES (3, 'c'); UPDATE ren_t2 SET v = 'u' WHERE id = 1});
sql(q{ALTER TABLE ren_t2 RENAME COLUMN v TO w; INSERT INTO ren_t2 VALUES (4, 'd'); DELETE FROM ren_t2 WHERE id = 2});
wait_caught_up($node, 'ren_s');
my @ren = cdc_batches($rendir);
my @ren_problems = map { check_cdc_batch($_) } @ren;
is_deeply(\@ren_problems, [], 'RENAME mid-stream: every change file well formed (a SCHEMA of a stream id before its RECORDs)');
my %ren_ids = map { ($_->{stream} => 1) } records_of(@ren);
diag 'RENAME mid-stream: stream ids of the records: ' . join(', ', sort keys %ren_ids);
is(scalar(records_of(@ren)), 5, 'RENAME mid-stream: the five changes arrive');

# ---------------------------------------------------------------------------
# 7. the destination's publication dropped by hand: the documented remedy,
#    egress_resume_stream (a new initial sync), brings the stream back
# ---------------------------------------------------------------------------
my $drpdir = new_outdir($node, 'drp');
add_destination($node, 'drp', $drpdir);
sql(q{CREATE TABLE drp_t (id integer PRIMARY KEY, v text); INSERT INTO drp_t VALUES (1, 'a')});
sql(q{SELECT egress_add_stream('drp_s', 'drp_t', method => 'LOG_BASED', destination => 'drp')});
wait_stream_state($node, 'drp_s', 'streaming');
sql(q{INSERT INTO drp_t VALUES (2, 'b')});
wait_caught_up($node, 'drp_s');
sql(q{DROP PUBLICATION pg_egress_drp; INSERT INTO drp_t VALUES (3, 'after the drop')});
my $noticed = poll_until('the stream shows the missing publication', 30, sub {
		my $r = stream_row($node, 'drp_s');
		$r && (($r->{state} // '') eq 'error' || ($r->{last_error} // '') =~ /publication/);
	});
my $r = stream_row_wait($node, 'drp_s');
diag "dropped publication: state $r->{state}, last_error " . ($r->{last_error} // 'null');
ok($noticed, 'a dropped publication shows in egress_streams (state error or last_error)');
sql(q{SELECT egress_resume_stream('drp_s')});
sql(q{INSERT INTO drp_t VALUES (4, 'after the resume')});
my $back = poll_until('the stream delivers again', 30, sub {
		my $row = stream_row($node, 'drp_s');
		return 0 unless $row && ($row->{state} // '') eq 'streaming';
		my $m = mirror($drpdir, 'public-drp_t', ['id']);
		return scalar(keys %$m) == 4;
	});
$r = stream_row_wait($node, 'drp_s');
diag "after the resume: state $r->{state}, last_error " . ($r->{last_error} // 'null');
ok($back, 'after egress_resume_stream the stream delivers again');
compare_states(mirror($drpdir, 'public-drp_t', ['id']), table_state($node, 'drp_t', ['id']), 'dropped publication, resumed');
ok(publication_row($node, 'pg_egress_drp'), 'the publication exists again');

no_crash_since($node, $log_start, 'no server process crashed');
$node->stop;

# ---------------------------------------------------------------------------
# 5. output_plugin_libraries at its default
# ---------------------------------------------------------------------------
my $plain = create_node('cdc_default_plugins', cdc => 1, default_plugins => 1);
$log_start = -s $plain->logfile;
is($plain->safe_psql('postgres',
		q{SELECT source || ' ' || setting FROM pg_settings WHERE name = 'output_plugin_libraries'}),
	'default pgoutput, test_decoding', 'output_plugin_libraries is at its default');
my $pdir = new_outdir($plain, 'plain');
$plain->safe_psql('postgres', q{
CREATE TABLE t (id integer PRIMARY KEY, v text);
INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 100) i;
});
add_destination($plain, 'plain', $pdir);
($state, $err) = sqlstate_of($plain,
	q{SELECT egress_add_stream('s', 't', method => 'LOG_BASED', destination => 'plain')});
is($state, '', 'a LOG_BASED stream is added with no extra setting') or diag $err;
wait_stream_state($plain, 's', 'streaming');
$plain->safe_psql('postgres', q{INSERT INTO t VALUES (101, 'new'); UPDATE t SET v = 'u' WHERE id = 1; DELETE FROM t WHERE id = 2; UPDATE t SET id = 200 WHERE id = 3});
wait_caught_up($plain, 's');
compare_states(mirror($pdir, 'public-t', ['id']), table_state($plain, 't', ['id']), 'default output_plugin_libraries: streamed');
is(stream_row_wait($plain, 's')->{state}, 'streaming', 'the stream is streaming');
ok(scalar(cdc_batches($pdir)) >= 1, 'change files written');

my $w = new_outdir($plain, 'w');
($state, $err) = sqlstate_of($plain,
	'SELECT egress_add_destination(' . sql_quote('w') . ', ' . sql_quote(file_url($w)) . q{, '{"decoder": "wal2json"}'); }
	  . q{SELECT egress_add_stream('sw', 't', method => 'LOG_BASED', destination => 'w')});
is($state, '55000', 'a wal2json destination there: refused with 55000') or diag $err;
like($err, qr/HINT:.*output_plugin_libraries/, '... the hint names output_plugin_libraries') or diag $err;
is($plain->safe_psql('postgres', q{SELECT count(*) FROM egress.stream WHERE name = 'sw'}), '0', '... no stream created');
no_crash_since($plain, $log_start, 'no server process crashed (default plugins)');
$plain->stop;

done_testing();
