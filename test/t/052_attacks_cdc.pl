
# Attacks on the CDC worker (LOG_BASED), issue 10:
#  A. user code in rendering and in the TOAST re-read runs as the stream's
#     owner under SECURITY_RESTRICTED_OPERATION, never as the bootstrap
#     superuser (a domain CHECK that tries ALTER ROLE ... SUPERUSER);
#  B. privileges are re-checked while streaming: REVOKE SELECT, a new
#     column without a column grant, REVOKE USAGE on the schema, row-level
#     security enabled later: the stream goes to state error and no row
#     committed after the change is delivered; the other streams go on;
#  C. tables whose qualified names collide once joined with a dot
#     ("a.b"."c" and "a"."b.c") each get their own rows;
#  D. a partition's TRUNCATE resyncs the partitioned table's stream (the
#     other partition's rows stay); a TRUNCATE's ACTIVATE_VERSION is a
#     function of the WAL (its commit time), not of the clock.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

# one CDC worker per destination: six destinations
my $node = create_node('attacks_cdc', cdc => 1, conf => "pg_egress.max_workers = 8\nmax_worker_processes = 20\n");
my $bootstrap = $node->safe_psql('postgres', 'SELECT current_user');

# records of a stream id in the change files, as hashes
sub cdc_records
{
	my ($dir, $sid) = @_;
	return map { $_->{record} }
	  grep { ($_->{type} // '') eq 'RECORD' && ($_->{stream} // '') eq $sid }
	  map { @{ $_->{messages} } } cdc_batches($dir);
}

sub cdc_ids
{
	my ($dir, $sid) = @_;
	return join(',', sort { $a <=> $b } map { "$_->{id}" } grep { !defined $_->{_sdc_deleted_at} } cdc_records($dir, $sid));
}

my @grants = q{GRANT EXECUTE ON FUNCTION
	egress_add_destination(text, text, jsonb),
	egress_add_stream(text, regclass, text, text, text, jsonb),
	egress_remove_stream(text),
	egress_pause_stream(text),
	egress_resume_stream(text),
	egress_resync_stream(text)
TO %s;
GRANT SELECT ON egress_streams TO %s;
GRANT pg_write_server_files TO %s;};

sub grant_egress
{
	my ($role) = @_;
	$node->safe_psql('postgres', sprintf($grants[0], $role, $role, $role));
}

# ---------------------------------------------------------------------------
# A. a domain CHECK that wants to be superuser
# ---------------------------------------------------------------------------
my $out_a = new_outdir($node, 'a');
my $out_a2 = new_outdir($node, 'a2');
$node->safe_psql('postgres', q{
CREATE ROLE mallory LOGIN;
CREATE SCHEMA mal AUTHORIZATION mallory;
});
grant_egress('mallory');
my $big = q{(SELECT string_agg(md5(i::text || 'x'), '') FROM generate_series(1, 3125) i)};
# mal.ta: its key is of a domain whose CHECK records who runs it and tries
# to make mallory superuser; an UPDATE that leaves the TOASTed column alone
# makes the worker read the row again by that key.  mal.tarr: arrays of the
# domain (whose CHECK needs SQL, which cannot run during decoding) and of a
# composite with a field of a domain whose CHECK shows who runs it: it
# takes a session advisory lock keyed by current_user, in the worker.  Two
# destinations: on the old code the first change of mal.tarr failed for
# good and would have hidden the re-read of mal.ta.
my ($ret, $o, $err) = query_as($node, 'mallory', qq{
CREATE TABLE mal.side (who text, su boolean);
CREATE FUNCTION mal.chk(integer) RETURNS boolean LANGUAGE plpgsql AS \$\$
BEGIN
	BEGIN
		INSERT INTO mal.side SELECT current_user, rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user;
	EXCEPTION WHEN others THEN NULL;
	END;
	BEGIN
		ALTER ROLE mallory SUPERUSER;
	EXCEPTION WHEN others THEN NULL;
	END;
	RETURN true;
END \$\$;
CREATE DOMAIN mal.md AS integer CHECK (mal.chk(VALUE));
CREATE DOMAIN mal.md2 AS integer
	CHECK (pg_catalog.pg_try_advisory_lock_shared(4242, pg_catalog.hashtext(current_user::pg_catalog.text)) IS NOT NULL);
CREATE TYPE mal.pair AS (x mal.md2, y text);
CREATE TABLE mal.ta (id mal.md PRIMARY KEY, big text, small integer);
ALTER TABLE mal.ta ALTER COLUMN big SET STORAGE EXTERNAL;
INSERT INTO mal.ta VALUES (1, $big, 1);
CREATE TABLE mal.tarr (id integer PRIMARY KEY, arr mal.md[], prs mal.pair[]);
SELECT egress_add_destination('dm', 'file://$out_a');
SELECT egress_add_stream('s_mal', 'mal.ta', method => 'LOG_BASED', destination => 'dm');
SELECT egress_add_destination('dm2', 'file://$out_a2');
SELECT egress_add_stream('s_arr', 'mal.tarr', method => 'LOG_BASED', destination => 'dm2');
});
is($ret, 0, 'mallory sets up tables with domains whose CHECKs want superuser powers, and streams') or diag $err;
wait_stream_state($node, $_, 'streaming') foreach qw(s_mal s_arr);
($ret, $o, $err) = query_as($node, 'mallory', qq{
UPDATE mal.ta SET small = small + 10;
INSERT INTO mal.tarr VALUES (1, '{3,4}', ARRAY[ROW(5, 'five')::mal.pair]);
});
is($ret, 0, 'mallory changes her tables') or diag $err;
poll_until('the changes of mal.ta and mal.tarr arrive', 60, sub {
	return (grep { "$_->{id}" eq '1' && "$_->{small}" eq '11' } cdc_records($out_a, 'mal-ta'))
	  && (grep { "$_->{id}" eq '1' } cdc_records($out_a2, 'mal-tarr'));
});
is($node->safe_psql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}),
	'f', 'A: mallory is not superuser');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM mal.side WHERE who <> 'mallory' OR su"),
	'0', 'A: the CHECK never ran as another role (nor as a superuser)');
my @recs_a = cdc_records($out_a, 'mal-ta');
ok((grep { "$_->{id}" eq '1' && "$_->{small}" eq '11' && defined $_->{big} && length($_->{big}) > 1000 } @recs_a),
	'A: the update re-read for its TOASTed value arrived, big value included');
ok((grep { "$_->{id}" eq '1' && ref $_->{arr} eq 'ARRAY' && ref $_->{prs} eq 'ARRAY' } cdc_records($out_a2, 'mal-tarr')),
	'A: the insert with arrays of the domains arrived');
is(stream_row($node, $_)->{state}, 'streaming', "A: $_ is streaming") foreach qw(s_mal s_arr);
is($node->safe_psql('postgres', q{
SELECT string_agg(DISTINCT CASE WHEN l.objid = pg_catalog.hashtext('mallory')::oid THEN 'mallory' ELSE 'another role' END, ',')
FROM pg_locks l JOIN pg_stat_activity a USING (pid)
WHERE l.locktype = 'advisory' AND l.classid = 4242 AND a.backend_type = 'pg_egress cdc'}),
	'mallory', 'A: in the CDC worker, the CHECK of the composite\'s domain field ran as mallory');

# User code that fails in the worker (here: a CHECK that holds in sessions
# with an application_name only) stops its own stream, not the others of
# the destination.
($ret, $o, $err) = query_as($node, 'mallory', q{
CREATE DOMAIN mal.md3 AS integer CHECK (pg_catalog.current_setting('application_name') <> '');
CREATE TYPE mal.pair3 AS (x mal.md3);
CREATE TABLE mal.tbad (id integer PRIMARY KEY, prs mal.pair3[]);
SELECT egress_add_stream('s_bad', 'mal.tbad', method => 'LOG_BASED', destination => 'dm2');
});
is($ret, 0, 'mallory adds a stream whose CHECK fails in the worker') or diag $err;
wait_stream_state($node, 's_bad', 'streaming');
($ret, $o, $err) = query_as($node, 'mallory', q{INSERT INTO mal.tbad VALUES (1, ARRAY[ROW(1)::mal.pair3])});
is($ret, 0, 'mallory inserts a row that passes the CHECK in her session') or diag $err;
wait_stream_state($node, 's_bad', 'error', 60);
like(stream_row($node, 's_bad')->{last_error} // '', qr/could not be rendered as role "mallory".*md3/,
	'A: last_error says the change could not be rendered as the owner');
($ret, $o, $err) = query_as($node, 'mallory', q{INSERT INTO mal.tarr VALUES (2, '{7}', NULL)});
poll_until('the next change of mal.tarr arrives', 60, sub {
	return grep { "$_->{id}" eq '2' } cdc_records($out_a2, 'mal-tarr');
});
is(stream_row($node, 's_arr')->{state}, 'streaming', 'A: the other stream of the destination goes on');
is(cdc_ids($out_a2, 'mal-tarr'), '1,2', 'A: and delivers its rows');

# ---------------------------------------------------------------------------
# B. privileges change while streaming
# ---------------------------------------------------------------------------
my $out_b = new_outdir($node, 'b');
$node->safe_psql('postgres', q{
CREATE ROLE etl LOGIN;
CREATE SCHEMA ps;
CREATE SCHEMA ps2;
GRANT USAGE ON SCHEMA ps, ps2 TO etl;
CREATE TABLE ps.p_rev (id integer PRIMARY KEY, v text);
CREATE TABLE ps.p_col (id integer PRIMARY KEY, v text);
CREATE TABLE ps2.p_usage (id integer PRIMARY KEY, v text);
CREATE TABLE ps.p_rls (id integer PRIMARY KEY, tenant text, v text);
CREATE TABLE ps.p_ok (id integer PRIMARY KEY, v text);
GRANT SELECT ON ps.p_rev, ps2.p_usage, ps.p_rls, ps.p_ok TO etl;
GRANT SELECT (id, v) ON ps.p_col TO etl;
});
grant_egress('etl');
my %b = (s_rev => 'ps.p_rev', s_col => 'ps.p_col', s_usage => 'ps2.p_usage', s_rls => 'ps.p_rls', s_ok => 'ps.p_ok');
($ret, $o, $err) = query_as($node, 'etl',
	"SELECT egress_add_destination('de', 'file://$out_b');\n"
	  . join('', map { "SELECT egress_add_stream('$_', '$b{$_}', method => 'LOG_BASED', destination => 'de');\n" } sort keys %b));
is($ret, 0, 'etl adds five streams') or diag $err;
wait_stream_state($node, $_, 'streaming') foreach sort keys %b;

$node->safe_psql('postgres', q{
INSERT INTO ps.p_rev VALUES (1, 'before');
INSERT INTO ps.p_col VALUES (1, 'before');
INSERT INTO ps2.p_usage VALUES (1, 'before');
INSERT INTO ps.p_rls VALUES (1, 'etl', 'before');
INSERT INTO ps.p_ok VALUES (1, 'before');
});
wait_caught_up($node, $_) foreach sort keys %b;

$node->safe_psql('postgres', q{
REVOKE SELECT ON ps.p_rev FROM etl;
INSERT INTO ps.p_rev VALUES (2, 'after');
ALTER TABLE ps.p_col ADD COLUMN secret text;
INSERT INTO ps.p_col VALUES (2, 'after', 'secret');
REVOKE USAGE ON SCHEMA ps2 FROM etl;
INSERT INTO ps2.p_usage VALUES (2, 'after');
CREATE POLICY own ON ps.p_rls USING (tenant = current_user);
ALTER TABLE ps.p_rls ENABLE ROW LEVEL SECURITY;
INSERT INTO ps.p_rls VALUES (2, 'other', 'after'), (3, 'etl', 'after');
INSERT INTO ps.p_ok VALUES (2, 'after');
});
my %why = (s_rev => qr/permission denied for table ps.p_rev: role "etl" may not read it/,
	s_col => qr/permission denied for table ps.p_col: role "etl" may not read all of its columns/,
	s_usage => qr/permission denied for schema/, s_rls => qr/row-level security/);
foreach my $s (sort keys %why)
{
	wait_stream_state($node, $s, 'error', 60);
	like(stream_row($node, $s)->{last_error} // '', $why{$s}, "B: $s: last_error names the privilege problem");
}
wait_caught_up($node, 's_ok');
$node->safe_psql('postgres', q{INSERT INTO ps.p_ok VALUES (3, 'later')});
wait_caught_up($node, 's_ok');
is(cdc_ids($out_b, 'ps-p_ok'), '1,2,3', 'B: the other stream of the destination goes on');
is(cdc_ids($out_b, 'ps-p_rev'), '1', 'B: REVOKE SELECT: no row after it');
is(cdc_ids($out_b, 'ps-p_col'), '1', 'B: new column without a grant: no row after it');
ok(!(grep { exists $_->{secret} } cdc_records($out_b, 'ps-p_col')), 'B: the secret column never sent');
is(cdc_ids($out_b, 'ps2-p_usage'), '1', 'B: REVOKE USAGE on the schema: no row after it');
is(cdc_ids($out_b, 'ps-p_rls'), '1', 'B: row-level security enabled: no row after it');

# coming back: the slot moved on for s_ok meanwhile, so resuming must not
# continue after the gap: a new sync (a new version) with every row
my $rev_v = '' . stream_row($node, 's_rev')->{version};
$node->safe_psql('postgres', 'GRANT SELECT ON ps.p_rev TO etl');
($ret, $o, $err) = query_as($node, 'etl', "SELECT egress_resume_stream('s_rev')");
is($ret, 0, 'B: etl resumes s_rev after the GRANT') or diag $err;
wait_stream_where($node, 's_rev', "state = 'streaming' AND version > $rev_v", 60,
	'B: the resumed stream is synchronized again (a new version)');
my $rev_now = '' . stream_row($node, 's_rev')->{version};
is(join(",", sort map { "$_->{record}{id}" } grep { "$_->{version}" eq $rev_now } records_of(sync_batches($out_b, 's_rev'))),
	'1,2', 'B: the new version carries every row, also the one committed while the stream was stopped');

# ---------------------------------------------------------------------------
# C. names with dots
# ---------------------------------------------------------------------------
my $out_c = new_outdir($node, 'c');
$node->safe_psql('postgres', q{
CREATE SCHEMA "a.b";
CREATE SCHEMA a;
CREATE TABLE "a.b".c (id integer PRIMARY KEY, v text);
CREATE TABLE a."b.c" (id integer PRIMARY KEY, v text);
});
add_destination($node, 'dd', $out_c);
$node->safe_psql('postgres', q{
SELECT egress_add_stream('s_abc1', '"a.b".c', method => 'LOG_BASED', destination => 'dd');
SELECT egress_add_stream('s_abc2', 'a."b.c"', method => 'LOG_BASED', destination => 'dd');
});
wait_stream_state($node, $_, 'streaming') foreach qw(s_abc1 s_abc2);
$node->safe_psql('postgres', q{
INSERT INTO "a.b".c VALUES (1, 'schema a.b');
INSERT INTO a."b.c" VALUES (2, 'schema a');
INSERT INTO "a.b".c VALUES (3, 'schema a.b');
});
wait_caught_up($node, $_) foreach qw(s_abc1 s_abc2);
is(cdc_ids($out_c, 'a.b-c'), '1,3', 'C: "a.b".c gets its own rows');
is(cdc_ids($out_c, 'a-b.c'), '2', 'C: a."b.c" gets its own rows');

# ---------------------------------------------------------------------------
# D. TRUNCATE: a partition's, and deterministic versions
# ---------------------------------------------------------------------------
my $out_d = new_outdir($node, 'd');
$node->safe_psql('postgres', q{
CREATE TABLE pt (id integer, k integer, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
CREATE TABLE pt1 PARTITION OF pt FOR VALUES FROM (MINVALUE) TO (100);
CREATE TABLE pt2 PARTITION OF pt FOR VALUES FROM (100) TO (MAXVALUE);
INSERT INTO pt VALUES (1, 1, 'a'), (2, 2, 'b'), (3, 150, 'c'), (4, 160, 'd');
CREATE TABLE tt (id integer PRIMARY KEY, v text);
INSERT INTO tt VALUES (1, 'a');
});
add_destination($node, 'dt', $out_d, '{"flush_interval": "2s"}');
$node->safe_psql('postgres', q{
SELECT egress_add_stream('s_pt', 'pt', method => 'LOG_BASED', destination => 'dt');
SELECT egress_add_stream('s_tt', 'tt', method => 'LOG_BASED', destination => 'dt');
});
wait_stream_state($node, $_, 'streaming') foreach qw(s_pt s_tt);
my $pt_v1 = '' . stream_row($node, 's_pt')->{version};
my $tt_v1 = '' . stream_row($node, 's_tt')->{version};

$node->safe_psql('postgres', 'TRUNCATE pt1');
wait_stream_where($node, 's_pt', "state = 'streaming' AND version > $pt_v1", 60,
	'D: the partition TRUNCATE resyncs the partitioned table\'s stream (new version)');
$node->safe_psql('postgres', q{INSERT INTO pt VALUES (5, 170, 'e'), (6, 6, 'f')});
wait_caught_up($node, 's_pt');
compare_states(mirror($out_d, 'public-pt', [ 'id', 'k' ]), table_state($node, 'pt', [ 'id', 'k' ]),
	'D: pt: what a target holds equals the table (the other partition\'s rows stay)');

my $xid = $node->safe_psql('postgres', q{BEGIN; TRUNCATE tt; SELECT pg_current_xact_id(); COMMIT;});
$node->safe_psql('postgres', q{INSERT INTO tt VALUES (2, 'b')});
wait_caught_up($node, 's_tt');
my $commit_ms = $node->safe_psql('postgres',
	"SELECT floor(extract(epoch FROM pg_xact_commit_timestamp('$xid'::xid)) * 1000)::bigint");
my @av = grep { ($_->{type} // '') eq 'ACTIVATE_VERSION' && ($_->{stream} // '') eq 'public-tt' }
  map { @{ $_->{messages} } } cdc_batches($out_d);
is(scalar(@av), 1, 'D: one ACTIVATE_VERSION for the TRUNCATE of tt');
my $want = $commit_ms > $tt_v1 ? $commit_ms : $tt_v1 + 1;
is(@av ? '' . $av[0]{version} : '', "$want",
	'D: the TRUNCATE\'s version is max(previous + 1, its commit time in ms): the same when replayed');
compare_states(mirror($out_d, 'public-tt', ['id']), table_state($node, 'tt', ['id']), 'D: tt');

# ---------------------------------------------------------------------------
# E. keys that cannot be read again without user code
# ---------------------------------------------------------------------------
# A row re-read for its unchanged TOAST values is looked up by its primary
# key, parsed from the change's text.  A composite with a domain field
# cannot be parsed without the domain's CHECK (mallory's code): such a key
# is refused when the stream is added (unless the table logs whole old
# rows), and a key changed to it later stops the stream with a clear error.
($ret, $o, $err) = query_as($node, 'mallory', q{
CREATE TABLE mal.tcomp (id mal.pair PRIMARY KEY, big text);
SELECT egress_add_stream('s_comp', 'mal.tcomp', method => 'LOG_BASED', destination => 'dm2');
});
isnt($ret, 0, 'E: a LOG_BASED stream keyed by a composite with a domain field is refused');
like($err, qr/primary key values cannot be read back safely.*\n.*column "id" has type mal\.pair/,
	'E: the refusal names the column and its type');
($ret, $o, $err) = query_as($node, 'mallory', q{
ALTER TABLE mal.tcomp REPLICA IDENTITY FULL;
SELECT egress_add_stream('s_comp', 'mal.tcomp', method => 'LOG_BASED', destination => 'dm2');
SELECT egress_remove_stream('s_comp');
});
is($ret, 0, 'E: with REPLICA IDENTITY FULL (no re-read) it is accepted') or diag $err;
($ret, $o, $err) = query_as($node, 'mallory', qq{
CREATE TABLE mal.tlate (id integer PRIMARY KEY, big text, small integer);
ALTER TABLE mal.tlate ALTER COLUMN big SET STORAGE EXTERNAL;
INSERT INTO mal.tlate VALUES (1, $big, 1);
SELECT egress_add_stream('s_late', 'mal.tlate', method => 'LOG_BASED', destination => 'dm2');
});
is($ret, 0, 'E: mallory streams a table keyed by an integer') or diag $err;
wait_stream_state($node, 's_late', 'streaming');
($ret, $o, $err) = query_as($node, 'mallory', q{
ALTER TABLE mal.tlate ALTER COLUMN id TYPE mal.pair USING ROW(id, 'x')::mal.pair;
UPDATE mal.tlate SET small = small + 10;
});
is($ret, 0, 'E: mallory makes the key a composite with a domain field, then updates') or diag $err;
wait_stream_state($node, 's_late', 'error', 60);
like(stream_row($node, 's_late')->{last_error} // '', qr/cannot read a row of mal\.tlate again by its primary key column "id"/,
	'E: last_error says the row cannot be read again by that key');
is(stream_row($node, 's_arr')->{state}, 'streaming', 'E: the other stream of the destination goes on');

# no crash on the way
no_crash_since($node, 0, 'no server process crashed');

done_testing();
