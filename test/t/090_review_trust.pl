
# Trust review of issues 11 and 12 (publications, columns/filter, pgoutput,
# Kinesis): an unprivileged role tries to run code through a filter, to
# read what it may not, and to damage the streams of other roles.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('review_trust', cdc => 1);
my $out = new_outdir($node, 'shared');
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE ROLE grp NOLOGIN;
GRANT pg_write_server_files TO grp;
CREATE ROLE mallory LOGIN IN ROLE grp;
CREATE ROLE alice LOGIN IN ROLE grp;
GRANT EXECUTE ON FUNCTION egress_add_destination(text, text, jsonb),
	egress_add_stream(text, regclass, text, text, text, jsonb), egress_remove_stream(text) TO grp;
GRANT SELECT ON egress_streams TO grp;
CREATE SCHEMA m AUTHORIZATION mallory;
CREATE SCHEMA a AUTHORIZATION alice;
CREATE TABLE secret (id int PRIMARY KEY, name text, ssn text);
INSERT INTO secret VALUES (1, 'one', 'SSN-SECRET-1');
GRANT SELECT (id, name) ON secret TO mallory;
});

sub as
{
	my ($role, $q) = @_;
	my ($ret, $o, $err) = query_as($node, $role, $q);
	return ($ret, $o, $err);
}

sub ok_as
{
	my ($role, $q, $what) = @_;
	my ($ret, $o, $err) = as($role, $q);
	is($ret, 0, $what // "as $role: $q") or diag $err;
	return $o;
}

ok_as('mallory', q{SET ROLE grp; SELECT egress_add_destination('shared', } . sql_quote(file_url($out)) . ')');
ok_as('mallory', q{
CREATE TABLE m.t (id int PRIMARY KEY, v text);
INSERT INTO m.t VALUES (1, 'x');
});
ok_as('alice', q{
CREATE TABLE a.t (id int PRIMARY KEY, v text);
INSERT INTO a.t VALUES (1, 'y');
});

# ---------------------------------------------------------------------------
# 1. A filter runs no code: every attempt is refused at add time.
# ---------------------------------------------------------------------------
ok_as('mallory', q{
CREATE FUNCTION m.f(int) RETURNS bool LANGUAGE sql IMMUTABLE AS 'SELECT true';
CREATE DOMAIN m.d AS int CHECK (VALUE > 0);
CREATE FUNCTION m.eq(int, int) RETURNS bool LANGUAGE sql IMMUTABLE AS 'SELECT $1 = $2';
CREATE OPERATOR m.=== (LEFTARG = int, RIGHTARG = int, FUNCTION = m.eq);
CREATE COLLATION m.c (provider = libc, locale = 'C');
CREATE SEQUENCE m.s;
});
my @bad = (
	q{pg_catalog.pg_read_file('/etc/passwd') IS NOT NULL},
	q{pg_catalog.set_config('work_mem', '1MB', false) IS NOT NULL},
	q{pg_catalog.pg_sleep(0) IS NULL},
	q{pg_catalog.lo_import('/etc/passwd') > 0},
	q{pg_catalog.current_setting('data_directory') IS NOT NULL},
	q{m.f(id)},
	q{id OPERATOR(m.===) 1},
	q{id::m.d > 0},
	q{v COLLATE m.c > 'a'},
	q{t IS NOT NULL},
	q{ctid IS NOT NULL},
	q{(SELECT true)},
	q{EXISTS (SELECT 1 FROM public.secret)},
	q{id = 1) OR (true},
	q{true); SELECT pg_catalog.pg_sleep(1); SELECT (true},
	q{pg_catalog.nextval('m.s') > 0},
	q{pg_catalog.txid_current() > 0},
	q{pg_catalog.query_to_xml('select 1', true, true, '') IS NOT NULL},
	q{pg_catalog.to_regclass('secret') IS NOT NULL},
	q{('(1)'::pg_catalog.record) IS NOT NULL},
);
for my $f (@bad)
{
	my $opts = sql_quote(qq({"filter": ) . '"' . ($f =~ s/\\/\\\\/gr =~ s/"/\\"/gr) . '"}');
	my ($ret, $o, $err) = as('mallory',
		qq{SELECT egress_add_stream('bad', 'm.t', 'FULL_TABLE', 'shared', options => $opts)});
	isnt($ret, 0, "filter refused: $f") or diag $o;
	note "refused with: " . (($err =~ /(ERROR:.*)/) ? $1 : $err);
}
is(sql(q{SELECT count(*) FROM egress_streams WHERE name = 'bad'}), 0, 'no refused stream was added');

# ---------------------------------------------------------------------------
# 2. One role's LOG_BASED stream cannot block the destination for the others.
#    Mallory's stream filters on a column of her own table, then she renames
#    that column: the stored filter text no longer parses, and every later
#    publication sync of the destination (anyone's egress_add_stream,
#    egress_remove_stream, the CDC worker's sync before it creates its slot)
#    failed with it.
# ---------------------------------------------------------------------------
ok_as('mallory', q{SELECT egress_add_stream('m_lb', 'm.t', 'LOG_BASED', 'shared', options => '{"filter": "id > 0"}')});
ok_as('mallory', q{ALTER TABLE m.t RENAME COLUMN id TO ident});
my ($ret, $o, $err) = as('alice',
	q{SELECT egress_add_stream('a_lb', 'a.t', 'LOG_BASED', 'shared')});
is($ret, 0, "another role's broken filter does not block adding a stream to the destination")
  or diag $err;
like(sql(q{SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY schemaname)
		   FROM pg_publication_tables WHERE pubname = 'pg_egress_shared'}),
	qr/a\.t/, 'the other role\'s table is in the publication');
($ret, $o, $err) = as('alice', q{SELECT egress_remove_stream('a_lb')});
is($ret, 0, "another role's broken filter does not block removing a stream") or diag $err;

# The same through the table itself: mallory turns her (empty) LOG_BASED
# table into a view (PostgreSQL 15 still converts a table with an ON SELECT
# rule); a publication cannot hold a view, and the destination's sync failed.
ok_as('mallory', q{SET ROLE grp; SELECT egress_add_destination('shared3', } . sql_quote(file_url(new_outdir($node, 'shared3'))) . ')');
ok_as('mallory', q{
CREATE TABLE m.v (id int);
ALTER TABLE m.v REPLICA IDENTITY FULL;
SELECT egress_add_stream('m_v', 'm.v', 'LOG_BASED', 'shared3');
});
($ret, $o, $err) = as('mallory', q{CREATE RULE "_RETURN" AS ON SELECT TO m.v DO INSTEAD SELECT 1 AS id});
SKIP:
{
	skip "table to view conversion refused: $err", 1 if $ret != 0;
	($ret, $o, $err) = as('alice', q{SELECT egress_add_stream('a_lb2', 'a.t', 'LOG_BASED', 'shared3')});
	is($ret, 0, "another role's table turned into a view does not block the destination") or diag $err;
}

# ---------------------------------------------------------------------------
# 3. A column list whose columns were all renamed does not turn into "all
#    columns": the publication never sends a column its stream left out.
#    A column list in a publication needs the table owner's privileges
#    (section 4), so mallory, who may read only id and name, cannot add the
#    stream; the table's owner (here the superuser) adds it to m2 for her.
# ---------------------------------------------------------------------------
my $m2dir = new_outdir($node, 'm2');
ok_as('mallory', q{SET ROLE grp; SELECT egress_add_destination('m2', } . sql_quote(file_url($m2dir)) . ')');
($ret, $o, $err) = as('mallory', q{SELECT egress_add_stream('m_sec', 'secret', 'LOG_BASED', 'm2', options => '{"columns": ["id", "name"]}')});
like($err, qr/permission denied to use stream options "columns" or "filter"/,
	'a reader cannot put a column list of a table she does not own into a publication');
sql(q{SELECT egress_add_stream('m_sec', 'secret', 'LOG_BASED', 'm2', options => '{"columns": ["id", "name"]}')});
is(sql(q{SELECT attnames::text FROM pg_publication_tables WHERE pubname = 'pg_egress_m2'}),
	'{id,name}', 'the publication of m2 holds the column list');
sql(q{ALTER TABLE secret RENAME COLUMN id TO key; ALTER TABLE secret RENAME COLUMN name TO label});
# a sync of m2 (here: adding another stream to it)
ok_as('mallory', q{SELECT egress_add_stream('m_t2', 'm.t', 'LOG_BASED', 'm2')});
unlike(sql(q{SELECT coalesce(attnames::text, '') FROM pg_publication_tables
			  WHERE pubname = 'pg_egress_m2' AND tablename = 'secret'}),
	qr/ssn/, 'the publication never sends column ssn, which the stream left out');
# and no file of m2 ever holds it: a row of secret, then a marker row of m.t
# committed after it (same destination: once the marker is out, so is secret's)
wait_stream_state($node, 'm_t2', 'streaming');
sql(q{INSERT INTO secret VALUES (2, 'two', 'SSN-SECRET-2')});
ok_as('mallory', q{INSERT INTO m.t VALUES (77, 'marker-77')});
ok(poll_until('the marker row reaches m2', 60, sub {
	my $all = join('', map { slurp_file($_) } glob("$m2dir/*.jsonl"));
	return $all =~ /marker-77/;
}), 'the marker row reaches m2');
my $all = join('', map { slurp_file($_) } glob("$m2dir/*.jsonl"));
unlike($all, qr/SSN-SECRET/, 'no file of m2 holds an ssn value');

# ---------------------------------------------------------------------------
# 4. A role that may only SELECT another role's table binds that owner's
#    writes through pg_egress's publication: with a row filter on the primary
#    key, the owner can no longer change the replica identity to another
#    index without every UPDATE of the table failing, nor drop the filtered
#    column.  Under wal2json a reader's stream constrained nothing.
#    Decided as PostgreSQL does for publications: "columns"/"filter" on a
#    LOG_BASED stream of a pgoutput destination need the privileges of the
#    table's owner (42501); a plain LOG_BASED stream needs only SELECT.
# ---------------------------------------------------------------------------
ok_as('alice', q{
CREATE TABLE a.acct (id int PRIMARY KEY, code int NOT NULL, v text);
CREATE UNIQUE INDEX acct_code ON a.acct (code, id);
INSERT INTO a.acct VALUES (1, 1, 'x');
GRANT USAGE ON SCHEMA a TO mallory;
GRANT SELECT ON a.acct TO mallory;
});
($ret, $o, $err) = as('mallory', q{SELECT egress_add_stream('m_acct', 'a.acct', 'LOG_BASED', 'm2', options => '{"filter": "id > 0"}')});
isnt($ret, 0, "a reader cannot put a row filter of another role's table into a publication");
like($err, qr/ERROR:  42501|permission denied to use stream options "columns" or "filter"/,
	'... refused for lack of the table owner\'s privileges') or diag $err;
like($err, qr/HINT:  Ask the table's owner to add the stream/, '... with a hint to ask the owner') or diag $err;
# a plain LOG_BASED stream (no columns, no filter) needs only SELECT
ok_as('mallory', q{SELECT egress_add_stream('m_acct', 'a.acct', 'LOG_BASED', 'm2')});
ok_as('alice', q{ALTER TABLE a.acct REPLICA IDENTITY USING INDEX acct_code});
($ret, $o, $err) = as('alice', q{UPDATE a.acct SET v = 'y' WHERE id = 1});
is($ret, 0, "a reader's stream does not make the table owner's UPDATE fail") or diag $err;
# the owner herself may filter her table
ok_as('mallory', q{SELECT egress_remove_stream('m_acct')});
ok_as('alice', q{SELECT egress_add_stream('a_acct', 'a.acct', 'LOG_BASED', 'm2', options => '{"filter": "code > 0"}')});
# the owner drops the table's replica identity: the next sync of m2 (here
# mallory's) leaves the table out, so that alice's UPDATEs work, and its
# WARNING names neither alice's stream nor her table to mallory
ok_as('alice', q{ALTER TABLE a.acct REPLICA IDENTITY NOTHING});
($ret, $o, $err) = as('mallory', q{SELECT egress_add_stream('m_t3', 'm.t', 'LOG_BASED', 'm2')});
is($ret, 0, 'a table of another role without a replica identity does not block the destination') or diag $err;
like($err, qr/WARNING:  55000: the table of a stream of another role has no replica identity/,
	'... the sync warns that it left another role\'s table out') or diag $err;
unlike($err, qr/acct/, '... without naming that role\'s stream or table');
($ret, $o, $err) = as('alice', q{UPDATE a.acct SET v = 'z' WHERE id = 1});
is($ret, 0, "the table owner's UPDATE works once the table is out of the publication") or diag $err;

# ---------------------------------------------------------------------------
# 5. The deparsed filter is parsed again by the bootstrap superuser (ALTER
#    PUBLICATION ... WHERE, in the caller's session).  egress_filter_sql()
#    deparses with standard_conforming_strings on; a caller who turns it off
#    in her session made the backslash in '\' escape the closing quote, and
#    the rest of a string literal of the filter ran as SQL of the superuser.
# ---------------------------------------------------------------------------
ok_as('mallory', q{CREATE TABLE m.inj (v text PRIMARY KEY)});
my $filter = q{v = '\\' OR v = ') OR true)); ALTER ROLE mallory SUPERUSER; --'};
my $json = '{"filter": "' . ($filter =~ s/\\/\\\\/gr =~ s/"/\\"/gr) . '"}';
($ret, $o, $err) = as('mallory',
	qq{SET standard_conforming_strings = off;
	   SELECT egress_add_stream('m_inj', 'm.inj', 'LOG_BASED', 'm2', options => \$j\$} . $json . '$j$)');
is(sql(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}), 'f',
	'a filter cannot make its role a superuser through standard_conforming_strings')
  or diag "ret $ret: $err";
sql(q{ALTER ROLE mallory NOSUPERUSER});
is($ret, 0, 'the filter with a backslash is a filter like any other') or diag $err;
is(sql(q{SELECT rowfilter FROM pg_publication_tables WHERE pubname = 'pg_egress_m2' AND tablename = 'inj'}),
	q{((v = '\\'::text) OR (v = ') OR true)); ALTER ROLE mallory SUPERUSER; --'::text))},
	'the publication holds the filter with its constants as given');

# ---------------------------------------------------------------------------
# 6. A filter's constants mean the same to the publication (made in the
#    caller's session) and to the reads (in a worker, TimeZone UTC, DateStyle
#    ISO): a caller's TimeZone or DateStyle does not make the two differ.
# ---------------------------------------------------------------------------
ok_as('mallory', q{CREATE TABLE m.tz (id int PRIMARY KEY, t timestamptz, d date); ALTER TABLE m.tz REPLICA IDENTITY FULL});
ok_as('mallory', q{SET TimeZone = 'Asia/Tokyo'; SET DateStyle = 'SQL, DMY';
	SELECT egress_add_stream('m_tz', 'm.tz', 'LOG_BASED', 'm2',
		options => '{"filter": "t >= ''2020-01-01 00:00'' AND d < ''02/01/2021''"}')});
is(sql(q{SET TimeZone = 'UTC'; SELECT rowfilter FROM pg_publication_tables WHERE pubname = 'pg_egress_m2' AND tablename = 'tz'}),
	q{((t >= '2020-01-01 00:00:00+00'::timestamp with time zone) AND (d < '2021-02-01'::date))},
	'the filter\'s constants are read as the workers read them');

done_testing();
