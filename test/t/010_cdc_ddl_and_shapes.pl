
# Shapes of LOG_BASED change records: ALTER TABLE (add, drop, alter type;
# also inside a transaction between two inserts) -> a new SCHEMA before the
# next RECORD, and records with the new columns; an UPDATE of the primary
# key -> a delete of the old key, then the new row; DELETE -> the key and
# _sdc_deleted_at = the commit time; REPLICA IDENTITY FULL -> deletes carry
# every column (also without a primary key); TRUNCATE -> ACTIVATE_VERSION
# with a newer version carried by later records; partitions -> the
# partitioned table's stream; unchanged TOASTed values -> sent in full
# (REPLICA IDENTITY DEFAULT and FULL).  Finally what a Singer target would
# hold equals every table.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Digest::MD5 qw(md5_hex);
use EgressTest;

my $node = create_node('cdc_shapes', cdc => 1);
my $out = new_outdir($node, 'cdc');
my $log_start = -s $node->logfile;

my $big = q{(SELECT string_agg(md5(i::text || 'x' || random()::text), '') FROM generate_series(1, 3125) i)};
$node->safe_psql(
	'postgres', qq{
CREATE TABLE marker (tag text PRIMARY KEY);
CREATE TABLE ddl_t (id integer PRIMARY KEY, a text);
CREATE TABLE pk_t (id integer PRIMARY KEY, v text);
INSERT INTO pk_t SELECT i, 'v' || i FROM generate_series(1, 10) i;
CREATE TABLE full_t (id integer PRIMARY KEY, a text, b integer);
ALTER TABLE full_t REPLICA IDENTITY FULL;
INSERT INTO full_t VALUES (1, 'x', 10), (2, 'y', 20), (3, 'z', 30);
CREATE TABLE nopk_t (a text, b integer);
ALTER TABLE nopk_t REPLICA IDENTITY FULL;
INSERT INTO nopk_t VALUES ('p', 1), ('q', 2);
CREATE TABLE tr_t (id integer PRIMARY KEY, v text);
INSERT INTO tr_t SELECT i, 'v' || i FROM generate_series(1, 5) i;
CREATE TABLE p (id integer, k integer, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (MINVALUE) TO (100);
CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (100) TO (MAXVALUE);
INSERT INTO p VALUES (1, 1, 'a'), (2, 150, 'b');
CREATE TABLE toast_d (id integer PRIMARY KEY, big text, small integer);
ALTER TABLE toast_d ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE toast_f (id integer PRIMARY KEY, big text, small integer);
ALTER TABLE toast_f ALTER COLUMN big SET STORAGE EXTERNAL;
ALTER TABLE toast_f REPLICA IDENTITY FULL;
INSERT INTO toast_d VALUES (1, $big, 1);
INSERT INTO toast_f VALUES (1, $big, 1);
});
add_destination($node, 'cdc', $out);

my %streams = (
	s_ddl => 'ddl_t',
	s_pk => 'pk_t',
	s_full => 'full_t',
	s_nopk => 'nopk_t',
	s_tr => 'tr_t',
	s_p => 'p',
	s_toast_d => 'toast_d',
	s_toast_f => 'toast_f');
foreach my $s (sort keys %streams)
{
	$node->safe_psql('postgres',
		"SELECT egress_add_stream('$s', '$streams{$s}', method => 'LOG_BASED', destination => 'cdc')");
}
wait_stream_state($node, $_, 'streaming') foreach sort keys %streams;
my $tr_v1 = "" . stream_row($node, 's_tr')->{version};

# ---------------------------------------------------------------------------
# the changes
# ---------------------------------------------------------------------------
# (waits for the server first: if a worker crashes, the server is in crash
# recovery for a moment, and the later checks still say what arrived)
my $sql = sub { server_up($node); $node->safe_psql('postgres', $_[0]) };
# DDL
$sql->(q{INSERT INTO ddl_t VALUES (1, 'a1')});
$sql->(q{ALTER TABLE ddl_t ADD COLUMN c integer; INSERT INTO ddl_t VALUES (2, 'a2', 20)});
$sql->(q{BEGIN; INSERT INTO ddl_t VALUES (3, 'a3', 30); ALTER TABLE ddl_t ADD COLUMN d text; INSERT INTO ddl_t VALUES (4, 'a4', 40, 'd4'); COMMIT});
$sql->(q{ALTER TABLE ddl_t DROP COLUMN a; INSERT INTO ddl_t VALUES (5, 50, 'd5')});
$sql->(q{ALTER TABLE ddl_t ALTER COLUMN c TYPE numeric(10,2); INSERT INTO ddl_t VALUES (6, 60.5, 'd6'); UPDATE ddl_t SET d = 'u' WHERE id = 2});
# primary key changes and deletes
$sql->(q{BEGIN; UPDATE pk_t SET id = 100 WHERE id = 5; INSERT INTO marker VALUES ('pk5'); COMMIT});
$sql->(q{BEGIN; DELETE FROM pk_t WHERE id = 7; INSERT INTO marker VALUES ('del7'); COMMIT});
$sql->(q{UPDATE pk_t SET id = id + 1000 WHERE id IN (8, 9)});
# REPLICA IDENTITY FULL
$sql->(q{BEGIN; DELETE FROM full_t WHERE id = 1; INSERT INTO marker VALUES ('delfull'); COMMIT});
$sql->(q{UPDATE full_t SET b = 21 WHERE id = 2});
$sql->(q{BEGIN; DELETE FROM nopk_t WHERE a = 'p'; INSERT INTO marker VALUES ('delnopk'); COMMIT});
$sql->(q{INSERT INTO nopk_t VALUES ('r', 3)});
# TRUNCATE
$sql->(q{INSERT INTO tr_t VALUES (6, 'six')});
$sql->(q{TRUNCATE tr_t});
$sql->(q{INSERT INTO tr_t VALUES (7, 'seven'), (8, 'eight')});
# partitions
$sql->(q{INSERT INTO p VALUES (3, 5, 'c'), (4, 200, 'd')});
$sql->(q{INSERT INTO p2 VALUES (5, 300, 'direct')});
$sql->(q{UPDATE p SET v = 'u' WHERE id = 1});
$sql->(q{DELETE FROM p WHERE id = 2});
$sql->(q{UPDATE p SET k = 250 WHERE id = 3});
# TOAST: a new row, then updates of the small column only
$sql->(qq{INSERT INTO toast_d VALUES (2, $big, 1)});
$sql->(qq{INSERT INTO toast_f VALUES (2, $big, 1)});
$sql->(q{UPDATE toast_d SET small = small + 1});
$sql->(q{UPDATE toast_f SET small = small + 1});
is($sql->(q{SELECT count(*) FROM toast_d WHERE pg_column_size(big) >= 100000}), '2',
	'toast_d: the large values are stored uncompressed (EXTERNAL), hence out of line');

wait_caught_up($node, $_) foreach sort keys %streams;

# ---------------------------------------------------------------------------
# the change files, per stream: RECORDs (with the latest SCHEMA of their
# stream in their file and their raw line) and ACTIVATE_VERSIONs
# ---------------------------------------------------------------------------
my @cdc = cdc_batches($out);
my @problems = map { check_cdc_batch($_) } @cdc;
is_deeply(\@problems, [], 'every change file well formed (' . scalar(@cdc) . ' files)');

my (%ev, @all_streams);
foreach my $b (@cdc)
{
	my %schema;
	for my $i (0 .. $#{ $b->{messages} })
	{
		my $m = $b->{messages}[$i];
		my $t = $m->{type};
		push @all_streams, $m->{stream} if defined $m->{stream};
		if ($t eq 'SCHEMA') { $schema{ $m->{stream} } = $m; next; }
		next unless $t eq 'RECORD' || $t eq 'ACTIVATE_VERSION';
		push @{ $ev{ $m->{stream} } },
		  { type => $t, msg => $m, rec => $m->{record}, schema => $schema{ $m->{stream} }, line => $b->{lines}[$i], file => $b->{name} };
	}
}
my %known = map { ("public-$_" => 1) } values %streams;
is_deeply([ sort grep { !$known{$_} } keys %{ { map { ($_ => 1) } @all_streams } } ], [],
	'no messages of other stream ids (partitions appear as public-p)');

sub recs { return grep { $_->{type} eq 'RECORD' } @{ $ev{"public-$_[0]"} // [] }; }
sub cols { return [ grep { !/^_sdc_/ } map { $_->[0] } rec_pairs($_[0]{line}) ]; }

sub rec_pairs
{
	my ($line) = @_;
	my ($rec) = grep { $_->[0] eq 'record' } raw_pairs($line);
	return raw_pairs($rec->[1]);
}

sub raw_of
{
	my ($e, $col) = @_;
	my ($p) = grep { $_->[0] eq $col } rec_pairs($e->{line});
	return $p ? $p->[1] : undef;
}

sub is_delete { return defined $_[0]{rec}{_sdc_deleted_at}; }

sub show { return join(' ', map { (is_delete($_) ? 'D' : 'U') . ($_->{rec}{id} // $_->{rec}{a} // '?') } @_); }

# _sdc_deleted_at equals the commit time of the transaction that wrote the
# marker row $tag
sub deleted_at_is
{
	my ($e, $tag, $label) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($full, $short) = utc_commit_time($node, 'marker', "tag = '$tag'");
	my $got = $e->{rec}{_sdc_deleted_at} // 'null';
	ok($got eq $full || $got eq $short, "$label: _sdc_deleted_at $got = the commit time $full");
}

# ---------------------------------------------------------------------------
# DDL
# ---------------------------------------------------------------------------
my @d = recs('ddl_t');
is(show(@d), 'U1 U2 U3 U4 U5 U6 U2', 'ddl_t: the seven changes in commit order');
my @want_cols = ([qw(id a)], [qw(id a c)], [qw(id a c)], [qw(id a c d)], [qw(id c d)], [qw(id c d)], [qw(id c d)]);
for my $i (0 .. $#d)
{
	my $e = $d[$i];
	my $id = $e->{rec}{id};
	is_deeply(cols($e), $want_cols[$i], "ddl_t change " . ($i + 1) . " (id $id): columns @{ $want_cols[$i] } in order");
	my $props = $e->{schema} ? $e->{schema}{schema}{properties} : {};
	is_deeply([ sort grep { !/^_sdc_/ } keys %$props ], [ sort @{ $want_cols[$i] } ],
		"ddl_t change " . ($i + 1) . " (id $id): the SCHEMA before it has these columns");
}
if (@d == 7)
{
	is(raw_of($d[1], 'c'), '20', 'ddl_t: the added column c has its value (20)');
	is($d[3]{rec}{d}, 'd4', 'ddl_t: the column added inside the transaction has its value (d4)');
	my $c_schema = $d[5]{schema}{schema}{properties}{c};
	my $types = join(',', sort(ref $c_schema->{type} ? @{ $c_schema->{type} } : ($c_schema->{type} // '')));
	is($types, 'null,number', 'ddl_t: after ALTER COLUMN TYPE numeric(10,2) c is a number');
	ok(same_value(canon($c_schema->{multipleOf}), canon(num('0.01'))), 'ddl_t: ... with multipleOf 0.01');
	is(raw_of($d[5], 'c'), '60.50', 'ddl_t: c rendered as numeric(10,2) (60.50)');
	is(raw_of($d[6], 'c'), '20.00', 'ddl_t: the updated old row carries c as numeric(10,2) (20.00)');
	is($d[6]{rec}{d}, 'u', 'ddl_t: the updated row carries d');
	my $c_before = $d[1]{schema}{schema}{properties}{c};
	$types = join(',', sort(ref $c_before->{type} ? @{ $c_before->{type} } : ($c_before->{type} // '')));
	is($types, 'integer,null', 'ddl_t: before the ALTER COLUMN TYPE c was an integer');
}

# ---------------------------------------------------------------------------
# primary key changes, deletes
# ---------------------------------------------------------------------------
my @k = recs('pk_t');
my $seq = show(@k);
ok($seq eq 'D5 U100 D7 D8 U1008 D9 U1009' || $seq eq 'D5 U100 D7 D9 U1009 D8 U1008',
	"pk_t: delete of the old key then the new row for each key change; the delete ($seq)");
if (@k == 7)
{
	is_deeply([ sort keys %{ $k[0]{rec} } ], [qw(_sdc_deleted_at id)], 'pk_t: the old key\'s delete has only id and _sdc_deleted_at');
	deleted_at_is($k[0], 'pk5', 'pk_t: the old key\'s delete');
	is_deeply([ @{ $k[1]{rec} }{qw(id v)} ], [ 100, 'v5' ], 'pk_t: the new row in full');
	ok(exists $k[1]{rec}{_sdc_deleted_at} && !defined $k[1]{rec}{_sdc_deleted_at}, 'pk_t: the new row has _sdc_deleted_at null');
	is_deeply([ map { $_->[0] } rec_pairs($k[2]{line}) ], [qw(id _sdc_deleted_at)], 'pk_t: DELETE: id and _sdc_deleted_at only');
	deleted_at_is($k[2], 'del7', 'pk_t: DELETE');
	like($k[2]{rec}{_sdc_deleted_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$/, 'pk_t: _sdc_deleted_at format');
}

# ---------------------------------------------------------------------------
# REPLICA IDENTITY FULL
# ---------------------------------------------------------------------------
my @f = recs('full_t');
is(show(@f), 'D1 U2', 'full_t: a delete and an update');
if (@f == 2)
{
	is_deeply([ map { $_->[0] } rec_pairs($f[0]{line}) ], [qw(id a b _sdc_deleted_at)],
		'full_t: the DELETE carries every column');
	is_deeply([ @{ $f[0]{rec} }{qw(id a b)} ], [ 1, 'x', 10 ], 'full_t: ... with the old values');
	deleted_at_is($f[0], 'delfull', 'full_t: DELETE');
}
my @n = recs('nopk_t');
is(scalar(@n), 2, 'nopk_t: a delete and an insert');
if (@n == 2)
{
	is_deeply([ map { $_->[0] } rec_pairs($n[0]{line}) ], [qw(a b _sdc_deleted_at)], 'nopk_t: the DELETE carries every column');
	is_deeply([ @{ $n[0]{rec} }{qw(a b)} ], [ 'p', 1 ], 'nopk_t: ... with the old values');
	deleted_at_is($n[0], 'delnopk', 'nopk_t: DELETE');
	is_deeply($n[0]{schema}{key_properties}, [], 'nopk_t: key_properties []');
	is_deeply([ @{ $n[1]{rec} }{qw(a b)} ], [ 'r', 3 ], 'nopk_t: the insert');
}

# ---------------------------------------------------------------------------
# TRUNCATE
# ---------------------------------------------------------------------------
my @tr = @{ $ev{'public-tr_t'} // [] };
my $tseq = join(' ', map { $_->{type} eq 'RECORD' ? 'R' . $_->{rec}{id} . '@' . $_->{msg}{version} : 'AV@' . $_->{msg}{version} } @tr);
ok(scalar(@tr) == 4 && $tr[0]{type} eq 'RECORD' && $tr[1]{type} eq 'ACTIVATE_VERSION' && $tr[2]{type} eq 'RECORD' && $tr[3]{type} eq 'RECORD',
	"tr_t: RECORD, ACTIVATE_VERSION, RECORD, RECORD ($tseq)");
if (@tr == 4)
{
	is("$tr[0]{msg}{version}", $tr_v1, 'tr_t: the record before the TRUNCATE carries the old version');
	my $v2 = "$tr[1]{msg}{version}";
	cmp_ok($v2, '>', $tr_v1, 'tr_t: the ACTIVATE_VERSION has a newer version');
	is_deeply([ map { "$_->{msg}{version}" } @tr[ 2, 3 ] ], [ $v2, $v2 ], 'tr_t: later records carry it');
	wait_stream_where($node, 's_tr', "version = $v2", 60, 'tr_t: egress_streams.version is the new version');
	my $last_state = $cdc[-1]{messages}[-1];
	is("" . ($last_state->{value}{bookmarks}{'public-tr_t'}{version} // ''), $v2, 'tr_t: the last STATE bookmark has the new version');
}

# ---------------------------------------------------------------------------
# partitions
# ---------------------------------------------------------------------------
my @p = recs('p');
my $pseq = join(' ', map { (is_delete($_) ? 'D' : 'U') . "$_->{rec}{id}/$_->{rec}{k}" } @p);
is($pseq, 'U3/5 U4/200 U5/300 U1/1 D2/150 D3/5 U3/250',
	'p: changes of both partitions (also a direct insert into p2, a row moving between partitions) under public-p');
my $pcols = @p ? cols($p[0]) : [];
is_deeply($pcols, [qw(id k v)], 'p: records have the partitioned table\'s columns');

# ---------------------------------------------------------------------------
# unchanged TOAST
# ---------------------------------------------------------------------------
foreach my $t (qw(toast_d toast_f))
{
	my %md5 = map { split /\|/ } split /\n/, $sql->("SELECT id, md5(big) FROM $t");
	my @r = recs($t);
	is(show(@r), 'U2 U1 U2', "$t: the insert and the two updates") or next;
	foreach my $e (@r[ 1, 2 ])
	{
		my $id = $e->{rec}{id};
		my $v = $e->{rec}{big};
		ok(defined $v && length($v) == 100000, "$t: update of id $id (small column only) carries big (" . (defined $v ? length($v) : 'null') . ' characters)');
		is(defined $v ? md5_hex($v) : 'null', $md5{$id}, "$t: ... the value in full");
		is($e->{rec}{small}, 2, "$t: ... and the new small value");
	}
}

# ---------------------------------------------------------------------------
# mirrors
# ---------------------------------------------------------------------------
compare_states(mirror($out, 'public-ddl_t', ['id']), table_state($node, 'ddl_t', ['id']), 'ddl_t', lenient => 1);
compare_states(mirror($out, 'public-pk_t', ['id']), table_state($node, 'pk_t', ['id']), 'pk_t');
compare_states(mirror($out, 'public-full_t', ['id']), table_state($node, 'full_t', ['id']), 'full_t');
compare_states(mirror($out, 'public-nopk_t', [qw(a b)]), table_state($node, 'nopk_t', [qw(a b)]), 'nopk_t');
compare_states(mirror($out, 'public-tr_t', ['id']), table_state($node, 'tr_t', ['id']), 'tr_t');
compare_states(mirror($out, 'public-p', [qw(id k)]), table_state($node, 'p', [qw(id k)]), 'p');
compare_states(mirror($out, 'public-toast_d', ['id']), table_state($node, 'toast_d', ['id']), 'toast_d');
compare_states(mirror($out, 'public-toast_f', ['id']), table_state($node, 'toast_f', ['id']), 'toast_f');

no_crash_since($node, $log_start, 'no server process crashed');

$node->stop;
done_testing();
